package cache

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Pins: the encoded partition decodes to its fields, including fields long
// enough for a multi-byte length and fields holding what could look like a
// separator, and distinct partitions encode differently.
func TestEntryKey_encoding(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 300)
	keys := []entryKey{
		{},
		{typ: "t", dc: "dc1", token: "tok", key: "k"},
		{typ: "t", dc: "dc1/tok", token: "", key: "k"},
		{typ: "t", dc: "dc1", token: "tok/k", key: ""},
		{typ: "t", dc: "dc1", token: "tok", key: "/k"},
		{typ: long, dc: "\x80\x01", token: long + "y", key: long},
		{typ: "", dc: "", token: "", key: "\x03abc"},
	}
	seen := map[string]entryKey{}
	for _, k := range keys {
		enc := string(appendKey(nil, k.typ, k.dc, k.token, k.key))
		require.Equal(t, k, decodeKey(enc))
		prev, dup := seen[enc]
		require.False(t, dup, "%+v and %+v encode alike", prev, k)
		seen[enc] = k
	}
	require.Panics(t, func() { decodeKey("\x80") })
}
