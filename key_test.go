package cache

import (
	"strconv"
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

// Pins: typical keys spread over the shards, so that writers of different
// keys rarely share a lock.
func TestMakeKey_spreadsShards(t *testing.T) {
	c := New(nil)
	defer c.Close()
	counts := make([]int, shardCount)
	const n = 10_000
	for i := range n {
		counts[c.makeKey(nil, "t", "dc1", "tok", "key-"+strconv.Itoa(i)).shard()]++
	}
	for s, got := range counts {
		require.Greater(t, got, n/shardCount/3, "shard %d gets too few keys", s)
		require.Less(t, got, n/shardCount*3, "shard %d gets too many keys", s)
	}
}

// lookupKey returns the entry of a partition, or nil.
func (c *Cache) lookupKey(typ, dc, token, key string) *entry {
	k := c.makeKey(nil, typ, dc, token, key)
	return c.lookup(&k)
}
