package cache

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
)

// expiryCheckHeap fails unless every entry's heapIndex is its position and
// the heap property (parent expires no later than child) holds.
func expiryCheckHeap(t *testing.T, h expiryHeap) {
	t.Helper()
	for i, e := range h {
		require.Equal(t, i, int(e.heapIndex), "heapIndex of element %d", i)
		if i > 0 {
			parent := (i - 1) / 2
			require.LessOrEqual(t, h[parent].expires, e.expires, "heap order at %d", i)
		}
	}
}

// expiryCached reports whether the cache holds an entry for typ and info.
func expiryCached(c *Cache, typ string, info RequestInfo) bool {
	return c.lookupKey(typ, info.Datacenter, info.Token, info.Key) != nil
}

// expiryCountingType returns a blocking MockType whose Fetch returns value
// (index 1) or err, counting its calls in n.
func expiryCountingType(t *testing.T, n *atomic.Int64, value any, err error) *MockType {
	typ := TestType(t)
	typ.On("Fetch", mock.Anything, mock.Anything).Return(
		func(FetchOptions, Request) FetchResult {
			n.Add(1)
			if err != nil {
				return FetchResult{}
			}
			return FetchResult{Value: value, Index: 1}
		},
		func(FetchOptions, Request) error { return err })
	return typ
}

// Pins the container/heap plumbing: Push, Pop, Fix and Remove keep heapIndex
// equal to the position, order by expires, and Pop marks the entry -1.
func TestExpiryHeap_IndexAndOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h expiryHeap
	heap.Init(&h)
	var all []*entry
	for i := 0; i < 100; i++ {
		e := &entry{expires: r.Int64N(1000), heapIndex: -1}
		all = append(all, e)
		heap.Push(&h, e)
		expiryCheckHeap(t, h)
		require.Equal(t, e, h[e.heapIndex], "pushed entry found at its heapIndex")
	}

	// Fix after moving entries both earlier and later.
	for i := 0; i < 50; i++ {
		e := all[r.IntN(len(all))]
		e.expires = r.Int64N(2000) - 500
		heap.Fix(&h, int(e.heapIndex))
		expiryCheckHeap(t, h)
	}

	// Remove a few from the middle.
	for i := 0; i < 10; i++ {
		e := h[len(h)/2]
		got := heap.Remove(&h, int(e.heapIndex)).(*entry)
		require.Same(t, e, got)
		require.Equal(t, int32(-1), got.heapIndex)
		expiryCheckHeap(t, h)
	}

	// Pop yields ascending expiry and sets heapIndex to -1.
	prev := int64(-1 << 62)
	for h.Len() > 0 {
		e := heap.Pop(&h).(*entry)
		require.Equal(t, int32(-1), e.heapIndex)
		require.GreaterOrEqual(t, e.expires, prev)
		prev = e.expires
		expiryCheckHeap(t, h)
	}
	for _, e := range all {
		require.Equal(t, int32(-1), e.heapIndex, "every entry left the heap")
	}
}

// Pins that an entry is evicted LastGetTTL after its last Get, not before.
func TestExpiry_EvictedAfterLastGetTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		c.RegisterType("t", expiryCountingType(t, &fetches, "v", nil), &RegisterOptions{LastGetTTL: 10 * time.Minute})
		info := RequestInfo{Key: "k"}
		req := TestRequest(t, info)

		_, meta, err := c.Get("t", req)
		require.NoError(t, err)
		require.False(t, meta.Hit)

		time.Sleep(10*time.Minute - time.Second)
		synctest.Wait()
		require.True(t, expiryCached(c, "t", info), "still cached just before the TTL")

		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.False(t, expiryCached(c, "t", info), "evicted just after the TTL")
		require.Equal(t, int64(0), c.count.Load())

		_, meta, err = c.Get("t", req)
		require.NoError(t, err)
		require.False(t, meta.Hit, "a Get after eviction is a miss")
		require.Equal(t, int64(2), fetches.Load())
	})
}

// Pins that a hit pushes the expiry back (the heap is fixed lazily when the
// old expiry comes due).
func TestExpiry_HitExtendsTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		c.RegisterType("t", expiryCountingType(t, &fetches, "v", nil), &RegisterOptions{LastGetTTL: 10 * time.Minute})
		info := RequestInfo{Key: "k"}
		req := TestRequest(t, info)

		_, _, err := c.Get("t", req)
		require.NoError(t, err)

		time.Sleep(8 * time.Minute)
		_, meta, err := c.Get("t", req)
		require.NoError(t, err)
		require.True(t, meta.Hit)

		// Past the original expiry (10m) but within 10m of the hit (18m).
		time.Sleep(8 * time.Minute)
		synctest.Wait()
		require.True(t, expiryCached(c, "t", info), "the hit at 8m keeps it until 18m")

		time.Sleep(2*time.Minute + time.Second)
		synctest.Wait()
		require.False(t, expiryCached(c, "t", info), "evicted 10m after the last hit")
		require.Equal(t, int64(1), fetches.Load())
	})
}

// Pins that entries of types with different TTLs expire in TTL order.
func TestExpiry_DifferentTTLsExpireInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		ttls := map[string]time.Duration{"a": 30 * time.Minute, "b": 10 * time.Minute, "c": 20 * time.Minute}
		for name, ttl := range ttls {
			c.RegisterType(name, expiryCountingType(t, &fetches, name, nil), &RegisterOptions{LastGetTTL: ttl})
		}
		info := RequestInfo{Key: "k"}
		for _, name := range []string{"a", "b", "c"} {
			v, _, err := c.Get(name, TestRequest(t, info))
			require.NoError(t, err)
			require.Equal(t, name, v)
		}

		present := func() string {
			s := ""
			for _, name := range []string{"a", "b", "c"} {
				if expiryCached(c, name, info) {
					s += name
				}
			}
			return s
		}
		synctest.Wait()
		require.Equal(t, "abc", present())
		time.Sleep(10*time.Minute + time.Second)
		synctest.Wait()
		require.Equal(t, "ac", present())
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		require.Equal(t, "a", present())
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		require.Equal(t, "", present())
	})
}

// Pins that an entry whose first fetch failed is in the cache and is evicted
// after its TTL like any other.
func TestExpiry_ErroredFirstFetchEvicted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		c.RegisterType("t", expiryCountingType(t, &fetches, nil, errors.New("boom")), &RegisterOptions{LastGetTTL: 10 * time.Minute})
		info := RequestInfo{Key: "k"}

		_, _, err := c.Get("t", TestRequest(t, info))
		require.EqualError(t, err, "boom")
		synctest.Wait()
		require.True(t, expiryCached(c, "t", info), "an errored entry is stored")

		time.Sleep(10*time.Minute - time.Second)
		synctest.Wait()
		require.True(t, expiryCached(c, "t", info))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.False(t, expiryCached(c, "t", info))
	})
}

// Pins the seed's TTL origin for an errored entry: the fetch stores it with
// expiry = now + LastGetTTL (cacheEntryExpiry.Reset on heap.Push), even when
// the cache is older than the TTL.
func TestExpiry_ErroredEntryTTLCountsFromFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		c.RegisterType("t", expiryCountingType(t, &fetches, nil, errors.New("boom")), &RegisterOptions{
			LastGetTTL: 10 * time.Minute,
		})
		time.Sleep(time.Hour) // the cache is now older than the TTL

		info := RequestInfo{Key: "k"}
		_, _, err := c.Get("t", TestRequest(t, info))
		require.EqualError(t, err, "boom")
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		require.True(t, expiryCached(c, "t", info), "kept LastGetTTL after the fetch, not after the cache epoch")
		time.Sleep(5*time.Minute + time.Second)
		synctest.Wait()
		require.False(t, expiryCached(c, "t", info))
	})
}

// Pins that a successful first fetch in a cache older than the TTL is kept
// for the TTL (the seed sets expiry = now + LastGetTTL on insertion); a few
// rounds, since a Get and the expiry loop race for the fresh entry.
func TestExpiry_NewEntryInOldCacheKeptForTTL(t *testing.T) {
	for i := 0; i < 20; i++ {
		synctest.Test(t, func(t *testing.T) {
			var fetches atomic.Int64
			c := TestCache(t)
			c.RegisterType("t", expiryCountingType(t, &fetches, "v", nil), &RegisterOptions{LastGetTTL: 10 * time.Minute})
			time.Sleep(time.Hour)

			info := RequestInfo{Key: "k"}
			_, _, err := c.Get("t", TestRequest(t, info))
			require.NoError(t, err)
			time.Sleep(10*time.Minute - time.Second)
			synctest.Wait()
			require.True(t, expiryCached(c, "t", info), "kept for the TTL after its first fetch")
			time.Sleep(2 * time.Second)
			synctest.Wait()
			require.False(t, expiryCached(c, "t", info))
		})
	}
}

// Pins that an entry expiring sooner than the current heap head wakes the
// expiry loop (type A TTL 1h, then type B TTL 1m: B goes at ~1m).
func TestExpiry_SoonerEntryWakesLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		c.RegisterType("a", expiryCountingType(t, &fetches, "a", nil), &RegisterOptions{LastGetTTL: time.Hour})
		info := RequestInfo{Key: "k"}
		_, _, err := c.Get("a", TestRequest(t, info))
		require.NoError(t, err)

		// Let the expiry loop go to sleep on A's 1h expiry.
		time.Sleep(5 * time.Second)
		synctest.Wait()

		c.RegisterType("b", expiryCountingType(t, &fetches, "b", nil), &RegisterOptions{LastGetTTL: time.Minute})
		_, _, err = c.Get("b", TestRequest(t, info))
		require.NoError(t, err)

		time.Sleep(time.Minute - time.Second)
		synctest.Wait()
		require.True(t, expiryCached(c, "b", info))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.False(t, expiryCached(c, "b", info), "B evicted ~1m after its Get")
		require.True(t, expiryCached(c, "a", info), "A still cached")
	})
}

// Pins that more than evictBatch entries due at once are all evicted.
func TestExpiry_BatchedEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		c.RegisterType("t", expiryCountingType(t, &fetches, "v", nil), &RegisterOptions{LastGetTTL: time.Minute})
		const n = 2*evictBatch + 88
		for i := 0; i < n; i++ {
			_, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: fmt.Sprint("k", i)}))
			require.NoError(t, err)
		}
		synctest.Wait()
		require.Equal(t, int64(n), c.count.Load())

		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		require.Equal(t, int64(0), c.count.Load(), "all entries evicted")
		c.expiryMu.Lock()
		require.Equal(t, 0, c.expiry.Len())
		c.expiryMu.Unlock()
		for i := 0; i < n; i++ {
			require.False(t, expiryCached(c, "t", RequestInfo{Key: fmt.Sprint("k", i)}))
		}
	})
}

// Pins that eviction ends the entry's background refresh: no Fetch after it.
func TestExpiry_EvictionStopsRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		c.RegisterType("t", expiryCountingType(t, &fetches, "v", nil), &RegisterOptions{
			LastGetTTL:   10*time.Minute + 30*time.Second,
			Refresh:      true,
			RefreshTimer: time.Minute,
		})
		info := RequestInfo{Key: "k"}
		_, _, err := c.Get("t", TestRequest(t, info))
		require.NoError(t, err)

		time.Sleep(10 * time.Minute)
		synctest.Wait()
		require.Equal(t, int64(11), fetches.Load(), "initial fetch plus one refresh a minute")
		require.True(t, expiryCached(c, "t", info))

		time.Sleep(time.Minute)
		synctest.Wait()
		require.False(t, expiryCached(c, "t", info))
		n := fetches.Load()
		require.Equal(t, int64(11), n, "no refresh after eviction at 10m30s")

		time.Sleep(time.Hour)
		synctest.Wait()
		require.Equal(t, n, fetches.Load(), "refresh loop stopped")
	})
}

// Pins that Close stops the expiry loop: entries no longer expire, and the
// loop goroutine exits (the bubble would deadlock on a leaked one).
func TestExpiry_CloseStopsLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := New(nil)
		c.RegisterType("t", expiryCountingType(t, &fetches, "v", nil), &RegisterOptions{LastGetTTL: time.Minute})
		info := RequestInfo{Key: "k"}
		_, _, err := c.Get("t", TestRequest(t, info))
		require.NoError(t, err)

		require.NoError(t, c.Close())
		time.Sleep(time.Hour)
		synctest.Wait()
		require.True(t, expiryCached(c, "t", info), "no eviction after Close")
		require.NoError(t, c.Close(), "Close is idempotent")
	})
}

// Pins that an entry evicted while a blocking refresh is in flight is not
// brought back when that fetch returns, and no further Fetch follows.
func TestExpiry_EvictionDuringInFlightRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		typ := TestType(t)
		typ.On("Fetch", mock.Anything, mock.Anything).Return(
			func(o FetchOptions, _ Request) FetchResult {
				fetches.Add(1)
				if o.MinIndex > 0 {
					time.Sleep(3 * time.Minute) // a blocking query that times out
				}
				return FetchResult{Value: "v", Index: o.MinIndex + 1}
			}, nil)
		c := TestCache(t)
		c.RegisterType("t", typ, &RegisterOptions{
			LastGetTTL:     10 * time.Minute,
			Refresh:        true,
			RefreshTimeout: 3 * time.Minute,
		})
		info := RequestInfo{Key: "k"}
		_, _, err := c.Get("t", TestRequest(t, info))
		require.NoError(t, err)

		// Fetches start at 0, 0, 3m, 6m and 9m; the last is in flight at 10m.
		time.Sleep(10*time.Minute + time.Second)
		synctest.Wait()
		require.False(t, expiryCached(c, "t", info), "evicted at 10m")
		require.Equal(t, int64(5), fetches.Load())

		time.Sleep(time.Hour)
		synctest.Wait()
		require.Equal(t, int64(5), fetches.Load(), "the in-flight fetch ends the loop")
		require.False(t, expiryCached(c, "t", info), "the late result does not re-insert the entry")
		c.expiryMu.Lock()
		require.Equal(t, 0, c.expiry.Len())
		c.expiryMu.Unlock()
	})
}
