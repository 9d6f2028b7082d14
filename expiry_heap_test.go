package cache

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
)

// countingType returns a blocking MockType whose Fetch returns value
// (index 1) or err, counting its calls in n.
func countingType(t *testing.T, n *atomic.Int64, value any, err error) *MockType {
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
		requireHeap(t, h)
		require.Equal(t, e, h[e.heapIndex], "pushed entry found at its heapIndex")
	}

	// Fix after moving entries both earlier and later.
	for i := 0; i < 50; i++ {
		e := all[r.IntN(len(all))]
		e.expires = r.Int64N(2000) - 500
		heap.Fix(&h, int(e.heapIndex))
		requireHeap(t, h)
	}

	// Remove a few from the middle.
	for i := 0; i < 10; i++ {
		e := h[len(h)/2]
		got := heap.Remove(&h, int(e.heapIndex)).(*entry)
		require.Same(t, e, got)
		require.Equal(t, int32(-1), got.heapIndex)
		requireHeap(t, h)
	}

	// Pop yields ascending expiry and sets heapIndex to -1.
	prev := int64(-1 << 62)
	for h.Len() > 0 {
		e := heap.Pop(&h).(*entry)
		require.Equal(t, int32(-1), e.heapIndex)
		require.GreaterOrEqual(t, e.expires, prev)
		prev = e.expires
		requireHeap(t, h)
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
		c.RegisterType("t", countingType(t, &fetches, "v", nil), &RegisterOptions{LastGetTTL: 10 * time.Minute})
		info := RequestInfo{Key: "k"}
		req := TestRequest(t, info)

		_, meta, err := c.Get("t", req)
		require.NoError(t, err)
		require.False(t, meta.Hit)

		time.Sleep(10*time.Minute - time.Second)
		synctest.Wait()
		require.True(t, isCached(c, "t", info), "still cached just before the TTL")

		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.False(t, isCached(c, "t", info), "evicted just after the TTL")
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
		c.RegisterType("t", countingType(t, &fetches, "v", nil), &RegisterOptions{LastGetTTL: 10 * time.Minute})
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
		require.True(t, isCached(c, "t", info), "the hit at 8m keeps it until 18m")

		time.Sleep(2*time.Minute + time.Second)
		synctest.Wait()
		require.False(t, isCached(c, "t", info), "evicted 10m after the last hit")
		require.Equal(t, int64(1), fetches.Load())
	})
}

// Pins how exactly a hit resets the TTL: a hit within a 1024th of the TTL
// (at most a second) of the last Get recorded leaves the expiry where it
// was; a later one moves it.
func TestExpiry_HitResetsTTLToItsGrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		const ttl = 1024 * time.Second // a grain of 1 s
		c.RegisterType("t", countingType(t, &fetches, "v", nil), &RegisterOptions{LastGetTTL: ttl})
		info := RequestInfo{Key: "k"}
		req := TestRequest(t, info)
		get := func() {
			t.Helper()
			_, _, err := c.Get("t", req)
			require.NoError(t, err)
		}

		get() // the fetch, at 0
		time.Sleep(500 * time.Millisecond)
		get() // within the grain: not recorded
		time.Sleep(ttl - 500*time.Millisecond - time.Millisecond)
		synctest.Wait()
		require.True(t, isCached(c, "t", info), "cached until the TTL from the fetch")
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		require.False(t, isCached(c, "t", info), "the hit within the grain did not move the expiry")

		get() // a new fetch, at ttl+1ms
		time.Sleep(1500 * time.Millisecond)
		get() // past the grain: recorded
		time.Sleep(ttl - time.Millisecond)
		synctest.Wait()
		require.True(t, isCached(c, "t", info), "the hit past the grain moved the expiry")
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		require.False(t, isCached(c, "t", info), "evicted a TTL after the hit")
		require.Equal(t, int64(2), fetches.Load())
	})
}

// Pins that entries of types with different TTLs expire in TTL order.
func TestExpiry_DifferentTTLsExpireInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		ttls := map[string]time.Duration{"a": 30 * time.Minute, "b": 10 * time.Minute, "c": 20 * time.Minute}
		for name, ttl := range ttls {
			c.RegisterType(name, countingType(t, &fetches, name, nil), &RegisterOptions{LastGetTTL: ttl})
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
				if isCached(c, name, info) {
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
		c.RegisterType("t", countingType(t, &fetches, nil, errors.New("boom")), &RegisterOptions{LastGetTTL: 10 * time.Minute})
		info := RequestInfo{Key: "k"}

		_, _, err := c.Get("t", TestRequest(t, info))
		require.EqualError(t, err, "boom")
		synctest.Wait()
		require.True(t, isCached(c, "t", info), "an errored entry is stored")

		time.Sleep(10*time.Minute - time.Second)
		synctest.Wait()
		require.True(t, isCached(c, "t", info))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.False(t, isCached(c, "t", info))
	})
}

// Pins the seed's TTL origin for an errored entry: the fetch stores it with
// expiry = now + LastGetTTL (cacheEntryExpiry.Reset on heap.Push), even when
// the cache is older than the TTL.
func TestExpiry_ErroredEntryTTLCountsFromFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		c.RegisterType("t", countingType(t, &fetches, nil, errors.New("boom")), &RegisterOptions{
			LastGetTTL: 10 * time.Minute,
		})
		time.Sleep(time.Hour) // the cache is now older than the TTL

		info := RequestInfo{Key: "k"}
		_, _, err := c.Get("t", TestRequest(t, info))
		require.EqualError(t, err, "boom")
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		require.True(t, isCached(c, "t", info), "kept LastGetTTL after the fetch, not after the cache epoch")
		time.Sleep(5*time.Minute + time.Second)
		synctest.Wait()
		require.False(t, isCached(c, "t", info))
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
			c.RegisterType("t", countingType(t, &fetches, "v", nil), &RegisterOptions{LastGetTTL: 10 * time.Minute})
			time.Sleep(time.Hour)

			info := RequestInfo{Key: "k"}
			_, _, err := c.Get("t", TestRequest(t, info))
			require.NoError(t, err)
			time.Sleep(10*time.Minute - time.Second)
			synctest.Wait()
			require.True(t, isCached(c, "t", info), "kept for the TTL after its first fetch")
			time.Sleep(2 * time.Second)
			synctest.Wait()
			require.False(t, isCached(c, "t", info))
		})
	}
}

// Pins that an entry expiring sooner than the current heap head wakes the
// expiry loop (type A TTL 1h, then type B TTL 1m: B goes at ~1m).
func TestExpiry_SoonerEntryWakesLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		c.RegisterType("a", countingType(t, &fetches, "a", nil), &RegisterOptions{LastGetTTL: time.Hour})
		info := RequestInfo{Key: "k"}
		_, _, err := c.Get("a", TestRequest(t, info))
		require.NoError(t, err)

		// Let the expiry loop go to sleep on A's 1h expiry.
		time.Sleep(5 * time.Second)
		synctest.Wait()

		c.RegisterType("b", countingType(t, &fetches, "b", nil), &RegisterOptions{LastGetTTL: time.Minute})
		_, _, err = c.Get("b", TestRequest(t, info))
		require.NoError(t, err)

		time.Sleep(time.Minute - time.Second)
		synctest.Wait()
		require.True(t, isCached(c, "b", info))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.False(t, isCached(c, "b", info), "B evicted ~1m after its Get")
		require.True(t, isCached(c, "a", info), "A still cached")
	})
}

// Pins that more than evictBatch entries due at once are all evicted.
func TestExpiry_BatchedEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		c.RegisterType("t", countingType(t, &fetches, "v", nil), &RegisterOptions{LastGetTTL: time.Minute})
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
			require.False(t, isCached(c, "t", RequestInfo{Key: fmt.Sprint("k", i)}))
		}
	})
}

// Pins that eviction ends the entry's background refresh: no Fetch after it.
func TestExpiry_EvictionStopsRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		c := TestCache(t)
		c.RegisterType("t", countingType(t, &fetches, "v", nil), &RegisterOptions{
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
		require.True(t, isCached(c, "t", info))

		time.Sleep(time.Minute)
		synctest.Wait()
		require.False(t, isCached(c, "t", info))
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
		c.RegisterType("t", countingType(t, &fetches, "v", nil), &RegisterOptions{LastGetTTL: time.Minute})
		info := RequestInfo{Key: "k"}
		_, _, err := c.Get("t", TestRequest(t, info))
		require.NoError(t, err)

		require.NoError(t, c.Close())
		time.Sleep(time.Hour)
		synctest.Wait()
		require.True(t, isCached(c, "t", info), "no eviction after Close")
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
		require.False(t, isCached(c, "t", info), "evicted at 10m")
		require.Equal(t, int64(5), fetches.Load())

		time.Sleep(time.Hour)
		synctest.Wait()
		require.Equal(t, int64(5), fetches.Load(), "the in-flight fetch ends the loop")
		require.False(t, isCached(c, "t", info), "the late result does not re-insert the entry")
		c.expiryMu.Lock()
		require.Equal(t, 0, c.expiry.Len())
		c.expiryMu.Unlock()
	})
}

// ---------------------------------------------------------------------------
// Expiry (LastGetTTL).

// Pins: an entry is evicted LastGetTTL after its last hit; each hit pushes
// the expiry back.
func TestCacheGet_lastGetTTL(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), &RegisterOptions{LastGetTTL: 10 * time.Minute})
		info := RequestInfo{Key: "k"}
		requireGet(t, c, "t", info)
		for i := 0; i < 3; i++ {
			time.Sleep(9 * time.Minute)
			_, meta := requireGet(t, c, "t", info)
			require.True(t, meta.Hit, "hit %d", i)
		}
		require.Equal(t, 1, log.count())
		time.Sleep(10*time.Minute + time.Second)
		_, meta := requireGet(t, c, "t", info)
		require.False(t, meta.Hit, "evicted 10m after the last hit")
		require.Equal(t, 2, log.count())
	})
}

// Pins: the default LastGetTTL is 72 hours.
func TestCacheGet_lastGetTTLDefault(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), nil)
		info := RequestInfo{Key: "k"}
		requireGet(t, c, "t", info)
		time.Sleep(72*time.Hour - time.Second)
		_, meta := requireGet(t, c, "t", info)
		require.True(t, meta.Hit)
		time.Sleep(72*time.Hour + time.Second)
		_, meta = requireGet(t, c, "t", info)
		require.False(t, meta.Hit)
		require.Equal(t, 2, log.count())
	})
}

// Pins: eviction ends the background refresh of an entry; a later Get starts
// afresh.
func TestCacheGet_expiryStopsRefresh(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), &RegisterOptions{
			Refresh: true, RefreshTimer: 3 * time.Minute, LastGetTTL: 10 * time.Minute,
		})
		info := RequestInfo{Key: "k"}
		requireGet(t, c, "t", info)
		time.Sleep(time.Hour)
		require.Equal(t, 4, log.count(), "fetches at 0, 3m, 6m, 9m; evicted at 10m")
		v, meta := requireGet(t, c, "t", info)
		require.Equal(t, uint64(1), v, "a new entry")
		require.False(t, meta.Hit)
		require.Equal(t, 5, log.count())
	})
}

// Pins: many entries due at once are all evicted (more than one eviction batch).
func TestCacheGet_massExpiry(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), &RegisterOptions{LastGetTTL: time.Minute})
		const n = evictBatch + 50
		for i := 0; i < n; i++ {
			requireGet(t, c, "t", RequestInfo{Key: fmt.Sprint(i)})
		}
		require.Equal(t, int64(n), c.count.Load())
		time.Sleep(2 * time.Minute)
		require.Equal(t, int64(0), c.count.Load())
		for i := 0; i < n; i++ {
			_, meta := requireGet(t, c, "t", RequestInfo{Key: fmt.Sprint(i)})
			require.False(t, meta.Hit)
		}
		require.Equal(t, 2*n, log.count())
	})
}

// Pins (seed): an entry that was stored but never hit (its Get timed out)
// stays LastGetTTL after it was stored, even in a cache older than the TTL.
func TestCacheGet_neverHitEntryKeptForTTL(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, sleeping(10*time.Second, nil), FetchResult{Value: "v", Index: 5}, nil)
		c.RegisterType("t", typ, &RegisterOptions{LastGetTTL: time.Hour})
		time.Sleep(2 * time.Hour) // the cache is older than the TTL

		v, _ := requireGet(t, c, "t", RequestInfo{Key: "k", Timeout: time.Second})
		require.Nil(t, v, "timed out before the fetch returned")
		time.Sleep(time.Minute) // the fetch stored "v" 50s ago
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.True(t, meta.Hit, "not evicted at once")
		require.Equal(t, "v", v)
		require.Equal(t, 1, log.count())
	})
}

// Pins: a fetch that finishes after its entry was evicted hands its value to
// the Get that waited for it but does not put the entry back (the seed
// re-inserted it, with a fresh TTL, and kept refreshing it for ever): the
// next Get is a miss that fetches anew.
func TestCacheGet_fetchAfterEvictionNotReinserted(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, sleeping(90*time.Minute, nil), FetchResult{Value: "v6", Index: 6}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v7", Index: 7}, nil)
		c.RegisterType("t", typ, &RegisterOptions{LastGetTTL: time.Hour})

		requireGet(t, c, "t", RequestInfo{Key: "k"})
		// The blocking Get gives up at 10m; the entry expires at 1h10m,
		// with its fetch still in flight until 1h30m.
		v, _ := requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 5, Timeout: 10 * time.Minute})
		require.Equal(t, "v5", v)
		time.Sleep(81 * time.Minute)
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.False(t, meta.Hit, "the evicted entry is not back")
		require.Equal(t, "v7", v)
		require.Equal(t, 3, log.count())
	})
}

// Pins: entries_count stays equal to the number of entries when an entry is
// evicted while a fetch for it is in flight.
func TestCacheGet_entriesCountAfterEvictionDuringFetch(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, sleeping(90*time.Minute, nil), FetchResult{Value: "v6", Index: 6}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v7", Index: 7}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("count_t", typ, &RegisterOptions{LastGetTTL: time.Hour})

		requireGet(t, c, "count_t", RequestInfo{Key: "k"})
		requireGet(t, c, "count_t", RequestInfo{Key: "k", MinIndex: 5}) // evicted at 1h, returns at 1h30m
		time.Sleep(3 * time.Hour)                                       // whatever the late value did, it has expired by now
		none := sinkGauge(t, sink, "consul.cache.entries_count")
		requireGet(t, c, "count_t", RequestInfo{Key: "k2"})
		one := sinkGauge(t, sink, "consul.cache.entries_count")
		require.Equal(t, float32(0), none, "no entry")
		require.Equal(t, float32(1), one, "one entry")
	})
}

// Pins: a refresh entry evicted while its blocking refresh fetch is in flight
// does not break the cache (the fetch returns, the cache keeps serving).
func TestCacheGet_refreshEvictedDuringFetch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, sleeping(10*time.Minute, nil), FetchResult{Value: "v6", Index: 6}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v7", Index: 7}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, &RegisterOptions{
			Refresh: true, RefreshTimeout: 10 * time.Minute, LastGetTTL: 5 * time.Minute,
		})
		requireGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(time.Hour) // evicted at 5m, the refresh returns at 10m
		require.Equal(t, 2, log.count(), "the loop ended with the late fetch")
		v, _ := requireGet(t, c, "t", RequestInfo{Key: "k2"})
		require.Equal(t, "v7", v)
	})
}

// ---------------------------------------------------------------------------
// MaxEntries.

// Pins: past MaxEntries the least recently hit entry is evicted first; hits,
// which only stamp the entry, re-order the eviction lazily.
func TestCacheMaxEntries_leastRecentlyHitFirst(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, &Options{MaxEntries: 3})
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), nil)
		get := func(k string) ResultMeta {
			_, meta := requireGet(t, c, "t", RequestInfo{Key: k})
			time.Sleep(time.Second)
			return meta
		}
		present := func(want ...string) {
			t.Helper()
			for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
				require.Equal(t, slices.Contains(want, k), isCachedKey(c, "t", k), "entry %s", k)
			}
		}
		get("a")
		get("b")
		get("c")
		present("a", "b", "c")
		require.True(t, get("a").Hit)
		get("d") // a was hit after b and c
		present("a", "c", "d")
		require.True(t, get("c").Hit)
		get("e")
		present("c", "d", "e")
		get("f")
		present("c", "e", "f")
		require.Equal(t, 6, log.count())
	})
}

// Pins: entries are evicted by expiry time, not by last use alone: an entry
// of a short-TTL type goes before an older one of a long-TTL type.
func TestCacheMaxEntries_closestToExpiryFirst(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, &Options{MaxEntries: 2})
		var logL, logS fetchLog
		c.RegisterType("long", indexType(t, &logL), &RegisterOptions{LastGetTTL: time.Hour})
		c.RegisterType("short", indexType(t, &logS), &RegisterOptions{LastGetTTL: time.Minute})
		requireGet(t, c, "long", RequestInfo{Key: "l1"}) // expires at 1h
		time.Sleep(10 * time.Second)
		requireGet(t, c, "short", RequestInfo{Key: "s"}) // expires at 1m10s
		time.Sleep(10 * time.Second)
		requireGet(t, c, "long", RequestInfo{Key: "l2"})
		require.True(t, isCachedKey(c, "long", "l1"))
		require.False(t, isCachedKey(c, "short", "s"))
		require.True(t, isCachedKey(c, "long", "l2"))
	})
}

// Pins: with MaxEntries the count never stays above the bound, and each
// eviction is counted as consul.cache.evict_size (not evict_expired);
// MaxEntries 0 or less is unbounded.
func TestCacheMaxEntries_boundAndMetric(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	for _, tc := range []struct {
		max, bound, evicted int
	}{{3, 3, 7}, {0, 10, 0}, {-1, 10, 0}} {
		t.Run(fmt.Sprint(tc.max), func(t *testing.T) {
			before := sinkCounter(sink, "consul.cache.evict_size")
			synctest.Test(t, func(t *testing.T) {
				c, _ := newCache(t, &Options{MaxEntries: tc.max})
				var log fetchLog
				c.RegisterType("t", indexType(t, &log), nil)
				for i := 0; i < 10; i++ {
					requireGet(t, c, "t", RequestInfo{Key: fmt.Sprint(i)})
					require.LessOrEqual(t, c.count.Load(), int64(tc.bound), "after Get %d", i)
					require.LessOrEqual(t, sinkGauge(t, sink, "consul.cache.entries_count"), float32(tc.bound))
					time.Sleep(time.Second)
				}
				require.Equal(t, int64(tc.bound), c.count.Load())
				require.Equal(t, float32(tc.bound), sinkGauge(t, sink, "consul.cache.entries_count"))
			})
			require.Equal(t, tc.evicted, sinkCounter(sink, "consul.cache.evict_size")-before)
		})
	}
	require.Equal(t, 0, sinkCounter(sink, "consul.cache.evict_expired"))
}

// Pins: an entry evicted for size stops refreshing, whether its loop was
// waiting on RefreshTimer or blocked in a refresh fetch.
func TestCacheMaxEntries_evictedRefreshStops(t *testing.T) {
	t.Parallel()
	for name, ro := range map[string]*RegisterOptions{
		"timer":    {Refresh: true, RefreshTimer: time.Minute},
		"blocking": {Refresh: true, RefreshTimeout: 10 * time.Minute},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c, release := newCache(t, &Options{MaxEntries: 1})
				var logA, logB fetchLog
				c.RegisterType("a", changingType(t, &logA, ro.RefreshTimeout, release), ro)
				c.RegisterType("b", changingType(t, &logB, ro.RefreshTimeout, release), ro)
				requireGet(t, c, "a", RequestInfo{Key: "k"})
				time.Sleep(30 * time.Second)
				requireGet(t, c, "b", RequestInfo{Key: "k"})
				require.False(t, isCachedKey(c, "a", "k"), "a evicted for size")
				n := logA.count()
				time.Sleep(3 * time.Hour)
				require.Equal(t, n, logA.count(), "a's refresh stopped")
				require.Greater(t, logB.count(), 10, "b refreshes")
				require.True(t, isCachedKey(c, "b", "k"))
			})
		})
	}
}

// Pins: an entry whose first fetch is still in flight is not evicted for
// size, even when it is the oldest: the next evictable entry goes instead,
// and the waiting Get gets its value.
func TestCacheMaxEntries_inFlightNotEvicted(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := newCache(t, &Options{MaxEntries: 2})
		gate := make(chan struct{})
		slow := TestType(t)
		var logSlow, logFast fetchLog
		logSlow.on(slow, func() { waitEither(gate, release) }, FetchResult{Value: "slow", Index: 4}, nil)
		c.RegisterType("slow", slow, nil)
		c.RegisterType("fast", indexType(t, &logFast), nil)

		ch := goGet(c, "slow", TestRequest(t, RequestInfo{Key: "a"}))
		requireBlocked(t, ch)
		time.Sleep(time.Second)
		requireGet(t, c, "fast", RequestInfo{Key: "x"})
		time.Sleep(time.Second)
		requireGet(t, c, "fast", RequestInfo{Key: "y"}) // 3 > 2: x goes, not a
		require.True(t, isCachedKey(c, "slow", "a"), "in flight: not evicted")
		require.False(t, isCachedKey(c, "fast", "x"))
		require.True(t, isCachedKey(c, "fast", "y"))

		requireGet(t, c, "fast", RequestInfo{Key: "z"}) // nothing but y is evictable
		require.True(t, isCachedKey(c, "slow", "a"))
		require.False(t, isCachedKey(c, "fast", "y"))

		close(gate)
		r := requireReturned(t, ch)
		require.NoError(t, r.Err)
		require.Equal(t, "slow", r.Value)
		_, meta := requireGet(t, c, "slow", RequestInfo{Key: "a"})
		require.True(t, meta.Hit, "still cached once fetched")
		require.Equal(t, 1, logSlow.count())
	})
}

// Pins: once the first fetches that held entries out of reach finish, the
// count goes back to MaxEntries (it does not stay above the bound).
func TestCacheMaxEntries_boundRestoredAfterInFlightFetch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := newCache(t, &Options{MaxEntries: 1})
		gate := make(chan struct{})
		slow := TestType(t)
		var logSlow, logFast fetchLog
		logSlow.on(slow, func() { waitEither(gate, release) }, FetchResult{Value: "slow", Index: 4}, nil)
		c.RegisterType("slow", slow, nil)
		c.RegisterType("fast", indexType(t, &logFast), nil)

		ch := goGet(c, "slow", TestRequest(t, RequestInfo{Key: "a"}))
		requireBlocked(t, ch)
		requireGet(t, c, "fast", RequestInfo{Key: "b"}) // 2 > 1, but a is not evictable yet

		close(gate)
		r := requireReturned(t, ch)
		require.Equal(t, "slow", r.Value)
		time.Sleep(time.Minute)
		require.LessOrEqual(t, c.count.Load(), int64(1), "back within MaxEntries once the fetch finished")
	})
}
