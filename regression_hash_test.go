package cache

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRegression_HashFlooding: the key hash XORed the first eight bytes of
// each field with a public constant before multiplying, so a key of 8 to
// 16 bytes starting with that constant hashed to 0 whatever the cache's
// seed, type, datacenter or token. Anyone choosing keys (URL paths served
// through cachehttp, say) could put thousands of them in shard 0 on one
// probe sequence: every miss then scanned them all under the shard's lock
// and every hit scanned them without it. Keys crafted against the old hash,
// and keys sharing a long prefix, must now spread over shards and slots as
// random keys do.
func TestRegression_HashFlooding(t *testing.T) {
	t.Parallel()
	n := 20_000
	if testing.Short() {
		n = 5000
	}
	for _, kind := range adversarialKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			c := New(nil)
			defer c.Close()
			c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				return FetchResult{}, errors.New("prepopulated only")
			}), nil)
			keys := adversarialKeys(kind, n)

			// Shards first: with the old hash, the crafted keys fail here
			// at once, before their filling takes quadratic time.
			perShard := make([]int, shardCount)
			hashes := make(map[uint64]bool, n)
			for _, k := range keys {
				key := c.makeKey(nil, "t", "dc1", "tok", k)
				perShard[key.shard()]++
				hashes[key.hash] = true
			}
			require.LessOrEqual(t, slices.Max(perShard), 2*n/shardCount,
				"the largest shard holds more than twice its share")
			require.Greater(t, len(hashes), n-10, "keys share hashes")

			for _, k := range keys {
				require.NoError(t, c.Prepopulate("t", FetchResult{Value: k, Index: 1}, "dc1", "tok", k))
			}
			mean, longest := probeLengths(c)
			require.LessOrEqual(t, mean, 3.0, "mean probe length")
			require.LessOrEqual(t, longest, 256, "longest probe")
		})
	}
}

// probeLengths returns the mean and the largest number of slots a lookup
// reads to find an entry of c, over all its entries.
func probeLengths(c *Cache) (mean float64, longest int) {
	var sum, n int
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		t := s.tab.Load()
		for j := range t.slots {
			sl := &t.slots[j]
			if e := sl.e.Load(); e != nil && e != tombstone {
				probes := int((uint64(j)-sl.hash.Load())&t.mask) + 1
				sum += probes
				n++
				longest = max(longest, probes)
			}
		}
		s.mu.Unlock()
	}
	return float64(sum) / float64(n), longest
}

// newCollidingCache returns a cache in which every partition hashes to 0:
// all share shard 0 and one probe sequence, and only the comparison of
// whole keys tells them apart.
func newCollidingCache() *Cache {
	c := New(nil)
	c.hashSeed.mask = 0 // no entry yet, and no lookup: nothing has hashed
	return c
}

// collidingPartitions returns partitions that differ in every field and in
// where their fields split, each the value its type's fetch returns.
func collidingPartitions() []entryKey {
	var ps []entryKey
	for _, typ := range []string{"a", "b"} {
		for _, dc := range []string{"", "dc1", "dc2"} {
			for _, token := range []string{"", "tok1", "tok2"} {
				for _, key := range []string{"k", "k2"} {
					ps = append(ps, entryKey{typ, dc, token, key})
				}
			}
		}
	}
	return append(ps,
		entryKey{"a", "dc1tok1", "", "k"},
		entryKey{"a", "", "dc1tok1", "k"},
		entryKey{"a", "dc1", "", "tok1k"},
		entryKey{"a", "dc1", "tok1k", "2"},
		entryKey{"ab", "", "", "k"},
	)
}

// collidingTypes registers types "a", "b" and "ab" on c: each returns its
// partition as the value and counts its fetches per partition.
func collidingTypes(c *Cache, opts *RegisterOptions) *sync.Map {
	var fetches sync.Map // entryKey -> *atomic.Int64
	for _, typ := range []string{"a", "b", "ab"} {
		c.RegisterType(typ, FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			info := r.CacheInfo()
			p := entryKey{typ, info.Datacenter, info.Token, info.Key}
			n, _ := fetches.LoadOrStore(p, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			return FetchResult{Value: p, Index: 1}, nil
		}), opts)
	}
	return &fetches
}

// fetchCount returns how often p was fetched.
func fetchCount(fetches *sync.Map, p entryKey) int64 {
	n, ok := fetches.Load(p)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// getPartition gets p from c and checks that the value is p's own, and
// whether it was a hit when wantHit says which it must be (nil: either).
func getPartition(t *testing.T, c *Cache, p entryKey, wantHit *bool) {
	v, meta, err := c.Get(p.typ, RequestInfo{Datacenter: p.dc, Token: p.token, Key: p.key})
	if err != nil || v != p {
		t.Errorf("Get %+v: got %+v, %v", p, v, err)
	}
	if wantHit != nil && meta.Hit != *wantHit {
		t.Errorf("Get %+v: Hit %v, want %v", p, meta.Hit, *wantHit)
	}
}

// getAllConcurrently gets every partition from callers goroutines each.
func getAllConcurrently(t *testing.T, c *Cache, ps []entryKey, callers int, wantHit *bool) {
	var wg sync.WaitGroup
	for _, p := range ps {
		for range callers {
			wg.Go(func() { getPartition(t, c, p, wantHit) })
		}
	}
	wg.Wait()
}

// TestRegression_HashCollisionsKeptApart: no test kept apart two
// partitions with the same hash, so a lookup that trusted the hash alone,
// and served one type's, datacenter's or token's value to another, passed
// the whole suite. With every partition hashed to the same value, each
// caller must still get its own value: on concurrent fills and hits,
// after evictions and from Prepopulate.
func TestRegression_HashCollisionsKeptApart(t *testing.T) {
	t.Parallel()
	ps := collidingPartitions()
	hit := true

	t.Run("seam", func(t *testing.T) {
		c := newCollidingCache()
		defer c.Close()
		for _, p := range ps {
			k := c.makeKey(nil, p.typ, p.dc, p.token, p.key)
			require.Zero(t, k.hash)
			require.Zero(t, k.shard())
		}
	})

	t.Run("fills and hits", func(t *testing.T) {
		t.Parallel()
		c := newCollidingCache()
		defer c.Close()
		fetches := collidingTypes(c, nil)
		getAllConcurrently(t, c, ps, 4, nil)
		for _, p := range ps {
			require.EqualValues(t, 1, fetchCount(fetches, p), "fetches of %+v", p)
		}
		getAllConcurrently(t, c, ps, 4, &hit)
		require.Equal(t, len(ps), shardEntries(c, 0), "all entries in shard 0")
	})

	t.Run("expiry", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			testCollidingExpiry(t, ps)
		})
	})

	t.Run("prepopulate", func(t *testing.T) {
		t.Parallel()
		testCollidingPrepopulate(t, ps)
	})
}

// testCollidingPrepopulate prepopulates half the colliding partitions
// while the other half are fetched, then checks that each partition hits
// its own value and that only the second half was fetched.
func testCollidingPrepopulate(t *testing.T, ps []entryKey) {
	c := newCollidingCache()
	defer c.Close()
	fetches := collidingTypes(c, nil)
	half := len(ps) / 2
	var wg sync.WaitGroup
	for _, p := range ps[:half] {
		wg.Go(func() {
			if err := c.Prepopulate(p.typ, FetchResult{Value: p, Index: 1}, p.dc, p.token, p.key); err != nil {
				t.Error(err)
			}
		})
	}
	getAllConcurrently(t, c, ps[half:], 2, nil)
	wg.Wait()
	hit := true
	getAllConcurrently(t, c, ps, 4, &hit)
	for i, p := range ps {
		want := int64(0)
		if i >= half {
			want = 1
		}
		require.Equal(t, want, fetchCount(fetches, p), "fetches of %+v", p)
	}
}

// testCollidingExpiry fills colliding partitions, keeps every other one in
// use while the rest expire, and checks that the right ones were evicted
// and that each partition still gets its own value.
func testCollidingExpiry(t *testing.T, ps []entryKey) {
	const ttl = time.Minute
	c := newCollidingCache()
	defer c.Close()
	fetches := collidingTypes(c, &RegisterOptions{LastGetTTL: ttl})
	hit := true
	getAllConcurrently(t, c, ps, 2, nil)

	var kept, expired []entryKey
	for i, p := range ps {
		if i%2 == 0 {
			kept = append(kept, p)
		} else {
			expired = append(expired, p)
		}
	}
	time.Sleep(ttl * 2 / 3)
	getAllConcurrently(t, c, kept, 2, &hit)
	time.Sleep(ttl * 2 / 3)
	synctest.Wait() // the expiry loop has evicted what is due
	for _, p := range expired {
		require.Nil(t, c.lookupKey(p.typ, p.dc, p.token, p.key), "%+v not evicted", p)
	}
	require.Equal(t, len(kept), shardEntries(c, 0))
	getAllConcurrently(t, c, kept, 2, &hit)
	getAllConcurrently(t, c, expired, 2, nil)
	for i, p := range ps {
		require.EqualValues(t, 1+i%2, fetchCount(fetches, p), "fetches of %+v", p)
	}
}

// shardEntries returns the number of entries in shard i of c.
func shardEntries(c *Cache, i int) int {
	s := &c.shards[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	s.tab.Load().each(func(*entry) { n++ })
	return n
}
