package cache

import (
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-uuid"
	"github.com/stretchr/testify/mock"
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

// Pins: entries are partitioned exactly by type, datacenter, token and key;
// a "/" inside a field never makes two partitions share an entry.
func TestCacheGet_partitions(t *testing.T) {
	t.Parallel()
	c := TestCache(t)
	var fetches atomic.Int32
	types := []string{"t1", "t2", "a", "a/b"}
	for _, name := range types {
		typ := TestType(t)
		typ.On("Fetch", mock.Anything, mock.Anything).Return(
			func(_ FetchOptions, r Request) FetchResult {
				fetches.Add(1)
				i := r.CacheInfo()
				return FetchResult{Value: fetchedPartition{name, i.Datacenter, i.Token, i.Key}, Index: 1}
			}, nil)
		c.RegisterType(name, typ, nil)
	}
	tok1, err := uuid.GenerateUUID()
	require.NoError(t, err)
	tok2, err := uuid.GenerateUUID()
	require.NoError(t, err)

	var parts []fetchedPartition
	for _, typ := range []string{"t1", "t2"} {
		for _, dc := range []string{"dc1", "dc2"} {
			for _, tok := range []string{tok1, tok2} {
				for _, key := range []string{"k1", "k2"} {
					parts = append(parts, fetchedPartition{typ, dc, tok, key})
				}
			}
		}
	}
	// Pairs that a "type/dc/token/key" string would merge.
	parts = append(parts,
		fetchedPartition{"t1", "a/b", "c", "k"}, fetchedPartition{"t1", "a", "b/c", "k"},
		fetchedPartition{"t1", "dc", "x/y", "z"}, fetchedPartition{"t1", "dc", "x", "y/z"},
		fetchedPartition{"a/b", "c", "tok", "k"}, fetchedPartition{"a", "b/c", "tok", "k"},
		fetchedPartition{"t1", "a/b", "", "k"}, fetchedPartition{"t1", "a", "b", "k"},
	)

	for round := 0; round < 2; round++ {
		for _, p := range parts {
			v, meta := requireGet(t, c, p.Type, RequestInfo{Datacenter: p.DC, Token: p.Token, Key: p.Key})
			require.Equal(t, p, v, "round %d", round)
			require.Equal(t, round == 1, meta.Hit, "round %d %+v", round, p)
		}
	}
	require.Equal(t, int32(len(parts)), fetches.Load(), "one Fetch per partition")
}

// Pins: partitions that differ in one field, or only in where their
// fields split, hash differently, so they do not share probe sequences;
// each cache hashes with its own seed; an entry's key rehashes to the
// hash it was looked up with.
func TestKeyHash_fields(t *testing.T) {
	t.Parallel()
	keys := []entryKey{
		{"t", "dc1", "tok", "k"},
		{"t", "dc1", "tok", "k2"},
		{"t", "dc1", "tok2", "k"},
		{"t", "dc2", "tok", "k"},
		{"t2", "dc1", "tok", "k"},
		{"t", "dc1", "to", "kk"},
		{"t", "dc1tok", "", "k"},
		{"", "", "", ""},
		{"", "", "", "a"},
		{"", "", "a", ""},
		{strings.Repeat("x", 40), "dc1", "tok", "k"},
		{strings.Repeat("x", 41), "dc1", "tok", "k"},
		{"t", "dc1", "tok", strings.Repeat("y", 17)},
		{"t", "dc1", "tok", strings.Repeat("y", 16) + "z"},
	}
	c1, c2 := New(nil), New(nil)
	defer c1.Close()
	defer c2.Close()
	seen := map[uint64]entryKey{}
	for _, k := range keys {
		ref := c1.makeKey(nil, k.typ, k.dc, k.token, k.key)
		prev, dup := seen[ref.hash]
		require.False(t, dup, "%+v and %+v hash alike", prev, k)
		seen[ref.hash] = k
		require.Equal(t, ref.hash, c1.hashOf(newEntry(ref.b)), "hashOf(%+v)", k)
		require.NotEqual(t, ref.hash, c2.makeKey(nil, k.typ, k.dc, k.token, k.key).hash,
			"the seed changes the hash")
	}
}
