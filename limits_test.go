package cache

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// limitsBubble is cacheBubble with Options: inside a synctest bubble, a
// cache closed when the test ends, and a channel closed right after that.
func limitsBubble(t *testing.T, opts *Options) (*Cache, <-chan struct{}) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs after Close (cleanups are LIFO)
	c := New(opts)
	t.Cleanup(func() { c.Close() })
	return c, release
}

// limitsChangingType returns a blocking MockType whose data changes all the
// time: every Fetch (recorded in log) takes d (cut short once release is
// closed, so that the bubble can end), then answers with
// Value = Index = MinIndex+1.
func limitsChangingType(t *testing.T, log *cacheFetchLog, d time.Duration, release <-chan struct{}) *MockType {
	typ := TestType(t)
	typ.On("Fetch", mock.Anything, mock.Anything).Run(func(args mock.Arguments) {
		log.record(args)
		if d > 0 {
			timer := time.NewTimer(d)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-release:
			}
		}
	}).Return(
		func(o FetchOptions, _ Request) FetchResult {
			return FetchResult{Value: o.MinIndex + 1, Index: o.MinIndex + 1}
		}, nil)
	return typ
}

// limitsUntilEither waits until a or b is closed.
func limitsUntilEither(a, b <-chan struct{}) {
	select {
	case <-a:
	case <-b:
	}
}

// limitsCached reports whether the cache holds key k of type typ.
func limitsCached(c *Cache, typ, k string) bool {
	return expiryCached(c, typ, RequestInfo{Key: k})
}

// ---------------------------------------------------------------------------
// EntryFetchRate / EntryFetchMaxBurst.

// Pins: a Refresh loop on constantly-changing blocking data is held to
// EntryFetchRate (rate 1/s, burst 2: at most 2+60 fetches in 60 s, but not
// much fewer); without the option it runs as fast as the fetches return.
func TestCacheEntryFetchRate_refreshLoop(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		opts     *Options
		min, max int
	}{
		"limited":   {&Options{EntryFetchRate: 1, EntryFetchMaxBurst: 2}, 60, 62},
		"unlimited": {nil, 500, 601}, // control: one fetch per 100ms
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c, release := limitsBubble(t, tc.opts)
				var log cacheFetchLog
				c.RegisterType("t", limitsChangingType(t, &log, 100*time.Millisecond, release), &RegisterOptions{
					Refresh: true, RefreshTimeout: time.Minute,
				})
				start := time.Now()
				cacheGet(t, c, "t", RequestInfo{Key: "k"})
				time.Sleep(60*time.Second - time.Since(start))
				synctest.Wait()
				n := log.count()
				t.Logf("%d fetches in 60s", n)
				require.GreaterOrEqual(t, n, tc.min)
				require.LessOrEqual(t, n, tc.max)

				v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
				require.True(t, meta.Hit)
				require.GreaterOrEqual(t, v, uint64(n-1), "served the latest value")
			})
		})
	}
}

// Pins: the limit is on the entry's fetches, whoever drives them: a Notify
// loop of blocking Gets on a non-refresh type is held to the rate too.
func TestCacheEntryFetchRate_notifyLoop(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		opts     *Options
		min, max int
	}{
		"limited":   {&Options{EntryFetchRate: 1, EntryFetchMaxBurst: 2}, 60, 62},
		"unlimited": {nil, 500, 601}, // control
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c, release := limitsBubble(t, tc.opts)
				var log cacheFetchLog
				c.RegisterType("t", limitsChangingType(t, &log, 100*time.Millisecond, release), nil)
				ctx, cancel := context.WithCancel(context.Background())
				t.Cleanup(cancel)
				var events atomic.Int64
				require.NoError(t, c.NotifyCallback(ctx, "t", TestRequest(t, RequestInfo{Key: "k"}), "id",
					func(context.Context, UpdateEvent) { events.Add(1) }))
				time.Sleep(60 * time.Second)
				synctest.Wait()
				n := log.count()
				t.Logf("%d fetches in 60s", n)
				require.GreaterOrEqual(t, n, tc.min)
				require.LessOrEqual(t, n, tc.max)
				require.LessOrEqual(t, int(events.Load()), n)
			})
		})
	}
}

// Pins: EntryFetchMaxBurst fetches may go at once; a burst below 1 means 2;
// after the burst, one more per 1/rate.
func TestCacheEntryFetchRate_burst(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ burst, want int }{{1, 1}, {0, 2}, {-3, 2}, {5, 5}} {
		t.Run(fmt.Sprint(tc.burst), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c, release := limitsBubble(t, &Options{EntryFetchRate: 1, EntryFetchMaxBurst: tc.burst})
				var log cacheFetchLog
				c.RegisterType("t", limitsChangingType(t, &log, time.Millisecond, release), &RegisterOptions{Refresh: true})
				cacheGet(t, c, "t", RequestInfo{Key: "k"})
				time.Sleep(500 * time.Millisecond)
				require.Equal(t, tc.want, log.count(), "the burst")
				time.Sleep(time.Second)
				require.Equal(t, tc.want+1, log.count(), "then one per second")
				time.Sleep(2 * time.Second)
				require.Equal(t, tc.want+3, log.count())
			})
		})
	}
}

// Pins: each entry has its own limiter: a blocking Get on a throttled entry
// waits for the rate, while another entry fetches at once.
func TestCacheEntryFetchRate_perEntry(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := limitsBubble(t, &Options{EntryFetchRate: rate.Every(time.Minute), EntryFetchMaxBurst: 1})
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), nil)
		start := time.Now()
		cacheGet(t, c, "t", RequestInfo{Key: "a"})
		cacheGet(t, c, "t", RequestInfo{Key: "b"})
		require.Equal(t, start, time.Now(), "first fetch of each entry at once")

		v, _ := cacheGet(t, c, "t", RequestInfo{Key: "a", MinIndex: 1})
		require.Equal(t, uint64(2), v)
		require.Equal(t, time.Minute, time.Since(start), "a's second fetch waits for a's limiter")

		time.Sleep(30 * time.Second)
		mid := time.Now()
		v, _ = cacheGet(t, c, "t", RequestInfo{Key: "b", MinIndex: 1})
		require.Equal(t, uint64(2), v)
		require.Equal(t, mid, time.Now(), "b's limiter refilled; a's use does not count against it")
		require.Equal(t, 4, log.count())
	})
}

// Pins: a refresh loop waiting on the limiter ends when its entry is evicted:
// no fetch follows when the wait would have ended; a later Get makes a new
// entry with a fresh limiter.
func TestCacheEntryFetchRate_evictionEndsLimiterWait(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := limitsBubble(t, &Options{EntryFetchRate: rate.Every(time.Hour), EntryFetchMaxBurst: 1})
		var log cacheFetchLog
		c.RegisterType("t", limitsChangingType(t, &log, time.Minute, release), &RegisterOptions{
			Refresh: true, LastGetTTL: 10 * time.Minute,
		})
		cacheGet(t, c, "t", RequestInfo{Key: "k"}) // fetched 0-1m, expires at 11m
		time.Sleep(9 * time.Minute)
		require.Equal(t, 1, log.count(), "the refresh waits for the limiter (until 1h)")
		require.True(t, limitsCached(c, "t", "k"))
		time.Sleep(2 * time.Minute)
		require.False(t, limitsCached(c, "t", "k"), "evicted at 11m")

		time.Sleep(3 * time.Hour)
		require.Equal(t, 1, log.count(), "the loop ended at eviction, no fetch at 1h")

		start := time.Now()
		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.False(t, meta.Hit)
		require.Equal(t, uint64(1), v, "a new entry")
		require.Equal(t, time.Minute, time.Since(start), "fetched at once")
	})
}

// Pins: Close ends a limiter wait at once, without the fetch it waited
// for: a Get waiting on that loop gets the cached value and ErrClosed.
func TestCacheEntryFetchRate_closeEndsLimiterWait(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := limitsBubble(t, &Options{EntryFetchRate: rate.Every(time.Hour), EntryFetchMaxBurst: 1})
		var log cacheFetchLog
		c.RegisterType("t", limitsChangingType(t, &log, time.Second, release), &RegisterOptions{Refresh: true})
		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(10 * time.Minute)
		require.Equal(t, 1, log.count(), "the refresh waits for the limiter (until 1h)")

		ch := cacheGoGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 1}))
		cacheRequireBlocked(t, ch)
		require.NoError(t, c.Close())
		r := cacheRequireReturned(t, ch)
		require.ErrorIs(t, r.Err, ErrClosed)
		require.Equal(t, uint64(1), r.Value, "the cached value comes with the error")
		time.Sleep(3 * time.Hour)
		require.Equal(t, 1, log.count(), "no fetch after Close")
	})
}

// ---------------------------------------------------------------------------
// MaxEntries.

// Pins: past MaxEntries the least recently hit entry is evicted first; hits,
// which only stamp the entry, re-order the eviction lazily.
func TestCacheMaxEntries_leastRecentlyHitFirst(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := limitsBubble(t, &Options{MaxEntries: 3})
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), nil)
		get := func(k string) ResultMeta {
			_, meta := cacheGet(t, c, "t", RequestInfo{Key: k})
			time.Sleep(time.Second)
			return meta
		}
		present := func(want ...string) {
			t.Helper()
			for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
				require.Equal(t, limitsContains(want, k), limitsCached(c, "t", k), "entry %s", k)
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

func limitsContains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// Pins: entries are evicted by expiry time, not by last use alone: an entry
// of a short-TTL type goes before an older one of a long-TTL type.
func TestCacheMaxEntries_closestToExpiryFirst(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := limitsBubble(t, &Options{MaxEntries: 2})
		var logL, logS cacheFetchLog
		c.RegisterType("long", cacheIndexType(t, &logL), &RegisterOptions{LastGetTTL: time.Hour})
		c.RegisterType("short", cacheIndexType(t, &logS), &RegisterOptions{LastGetTTL: time.Minute})
		cacheGet(t, c, "long", RequestInfo{Key: "l1"}) // expires at 1h
		time.Sleep(10 * time.Second)
		cacheGet(t, c, "short", RequestInfo{Key: "s"}) // expires at 1m10s
		time.Sleep(10 * time.Second)
		cacheGet(t, c, "long", RequestInfo{Key: "l2"})
		require.True(t, limitsCached(c, "long", "l1"))
		require.False(t, limitsCached(c, "short", "s"))
		require.True(t, limitsCached(c, "long", "l2"))
	})
}

// Pins: with MaxEntries the count never stays above the bound, and each
// eviction is counted as consul.cache.evict_size (not evict_expired);
// MaxEntries 0 or less is unbounded.
func TestCacheMaxEntries_boundAndMetric(t *testing.T) {
	sink := cacheInstallSink(t) // metrics: not parallel
	for _, tc := range []struct {
		max, bound, evicted int
	}{{3, 3, 7}, {0, 10, 0}, {-1, 10, 0}} {
		t.Run(fmt.Sprint(tc.max), func(t *testing.T) {
			before := cacheCounter(sink, "consul.cache.evict_size")
			synctest.Test(t, func(t *testing.T) {
				c, _ := limitsBubble(t, &Options{MaxEntries: tc.max})
				var log cacheFetchLog
				c.RegisterType("t", cacheIndexType(t, &log), nil)
				for i := 0; i < 10; i++ {
					cacheGet(t, c, "t", RequestInfo{Key: fmt.Sprint(i)})
					require.LessOrEqual(t, c.count.Load(), int64(tc.bound), "after Get %d", i)
					require.LessOrEqual(t, cacheGauge(t, sink, "consul.cache.entries_count"), float32(tc.bound))
					time.Sleep(time.Second)
				}
				require.Equal(t, int64(tc.bound), c.count.Load())
				require.Equal(t, float32(tc.bound), cacheGauge(t, sink, "consul.cache.entries_count"))
			})
			require.Equal(t, tc.evicted, cacheCounter(sink, "consul.cache.evict_size")-before)
		})
	}
	require.Equal(t, 0, cacheCounter(sink, "consul.cache.evict_expired"))
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
				c, release := limitsBubble(t, &Options{MaxEntries: 1})
				var logA, logB cacheFetchLog
				c.RegisterType("a", limitsChangingType(t, &logA, ro.RefreshTimeout, release), ro)
				c.RegisterType("b", limitsChangingType(t, &logB, ro.RefreshTimeout, release), ro)
				cacheGet(t, c, "a", RequestInfo{Key: "k"})
				time.Sleep(30 * time.Second)
				cacheGet(t, c, "b", RequestInfo{Key: "k"})
				require.False(t, limitsCached(c, "a", "k"), "a evicted for size")
				n := logA.count()
				time.Sleep(3 * time.Hour)
				require.Equal(t, n, logA.count(), "a's refresh stopped")
				require.Greater(t, logB.count(), 10, "b refreshes")
				require.True(t, limitsCached(c, "b", "k"))
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
		c, release := limitsBubble(t, &Options{MaxEntries: 2})
		gate := make(chan struct{})
		slow := TestType(t)
		var logSlow, logFast cacheFetchLog
		logSlow.on(slow, func() { limitsUntilEither(gate, release) }, FetchResult{Value: "slow", Index: 4}, nil)
		c.RegisterType("slow", slow, nil)
		c.RegisterType("fast", cacheIndexType(t, &logFast), nil)

		ch := cacheGoGet(c, "slow", TestRequest(t, RequestInfo{Key: "a"}))
		cacheRequireBlocked(t, ch)
		time.Sleep(time.Second)
		cacheGet(t, c, "fast", RequestInfo{Key: "x"})
		time.Sleep(time.Second)
		cacheGet(t, c, "fast", RequestInfo{Key: "y"}) // 3 > 2: x goes, not a
		require.True(t, limitsCached(c, "slow", "a"), "in flight: not evicted")
		require.False(t, limitsCached(c, "fast", "x"))
		require.True(t, limitsCached(c, "fast", "y"))

		cacheGet(t, c, "fast", RequestInfo{Key: "z"}) // nothing but y is evictable
		require.True(t, limitsCached(c, "slow", "a"))
		require.False(t, limitsCached(c, "fast", "y"))

		close(gate)
		r := cacheRequireReturned(t, ch)
		require.NoError(t, r.Err)
		require.Equal(t, "slow", r.Value)
		_, meta := cacheGet(t, c, "slow", RequestInfo{Key: "a"})
		require.True(t, meta.Hit, "still cached once fetched")
		require.Equal(t, 1, logSlow.count())
	})
}

// Pins: once the first fetches that held entries out of reach finish, the
// count goes back to MaxEntries (it does not stay above the bound).
func TestCacheMaxEntries_boundRestoredAfterInFlightFetch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := limitsBubble(t, &Options{MaxEntries: 1})
		gate := make(chan struct{})
		slow := TestType(t)
		var logSlow, logFast cacheFetchLog
		logSlow.on(slow, func() { limitsUntilEither(gate, release) }, FetchResult{Value: "slow", Index: 4}, nil)
		c.RegisterType("slow", slow, nil)
		c.RegisterType("fast", cacheIndexType(t, &logFast), nil)

		ch := cacheGoGet(c, "slow", TestRequest(t, RequestInfo{Key: "a"}))
		cacheRequireBlocked(t, ch)
		cacheGet(t, c, "fast", RequestInfo{Key: "b"}) // 2 > 1, but a is not evictable yet

		close(gate)
		r := cacheRequireReturned(t, ch)
		require.Equal(t, "slow", r.Value)
		time.Sleep(time.Minute)
		require.LessOrEqual(t, c.count.Load(), int64(1), "back within MaxEntries once the fetch finished")
	})
}
