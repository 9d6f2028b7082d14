package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
)

// Pins that Notify on an unregistered type returns an error.
func TestNotify_UnknownType(t *testing.T) {
	c := TestCache(t)
	ch := make(chan UpdateEvent, 1)
	err := c.Notify(context.Background(), "nope", TestRequest(t, RequestInfo{Key: "k"}), "id", ch)
	require.Error(t, err)
	require.Contains(t, err.Error(), "unknown type")
	require.Empty(t, ch)
}

// Pins that a non-blocking type needs MaxAge > 0, and nothing is fetched
// when it is missing.
func TestNotify_NonBlockingRequiresMaxAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		typ := TestTypeNonBlocking(t)
		typ.Static(FetchResult{Value: "v", Index: 1}, nil)
		c := TestCache(t)
		c.RegisterType("t", typ, nil)
		ch := make(chan UpdateEvent, 1)

		err := c.Notify(t.Context(), "t", TestRequest(t, RequestInfo{Key: "k"}), "id", ch)
		require.Error(t, err)
		time.Sleep(time.Minute)
		requireNoEvent(t, ch)
		typ.AssertNotCalled(t, "Fetch", mock.Anything, mock.Anything)

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k", MaxAge: time.Second}), "id", ch))
		TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: "v", Meta: ResultMeta{Index: 1}})
		cancel()
	})
}

// Pins the blocking loop: the first result is delivered, then one event per
// index growth, with each Get blocking at the last delivered index.
func TestNotify_BlockingDeliversFirstAndIndexGrowth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		b := newBlockingBackend(t, "v1", 5)
		c.RegisterType("t", b, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)

		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k"}), "id", ch))
		TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: "v1", Meta: ResultMeta{Index: 5}})
		requireNoEvent(t, ch)

		b.set("v2", 6)
		TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: "v2", Meta: ResultMeta{Index: 6}})
		b.set("v3", 9)
		TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: "v3", Meta: ResultMeta{Index: 9}})
		requireNoEvent(t, ch)

		require.Equal(t, []uint64{0, 5, 6, 9}, b.minIndexes(), "each fetch blocks at the last index")
		cancel()
	})
}

// Pins that the first event carries a cached value as a hit (index 0 Get).
func TestNotify_BlockingFirstEventFromCache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		b := newBlockingBackend(t, "v1", 5)
		c.RegisterType("t", b, nil)
		req := TestRequest(t, RequestInfo{Key: "k"})
		_, _, err := c.Get("t", req)
		require.NoError(t, err)

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		require.NoError(t, c.Notify(ctx, "t", req, "id", ch))
		TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: "v1", Meta: ResultMeta{Hit: true, Index: 5}})
		cancel()
	})
}

// Pins that a refetch returning the same index (a blocking query timing out)
// delivers nothing, even over many refetches.
func TestNotify_BlockingUnchangedIndexNoEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		b := newBlockingBackend(t, "v1", 5)
		c.RegisterType("t", b, &RegisterOptions{RefreshTimeout: 10 * time.Second})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)

		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k"}), "id", ch))
		TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: "v1", Meta: ResultMeta{Index: 5}})

		time.Sleep(10*time.Minute + 5*time.Second)
		requireNoEvent(t, ch)
		require.Equal(t, int64(1+61), b.fetches.Load(), "the first fetch, then one per 10s timeout")

		b.set("v2", 6)
		TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: "v2", Meta: ResultMeta{Index: 6}})
		cancel()
	})
}

// Pins the error back-off: 3 immediate retries, then waits of 2s, 4s, ...
// (each plus a stagger below itself), capped at 1m (+ stagger). Until a
// first value arrives, every error is delivered.
func TestNotify_BlockingErrorBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		typ, times := timedType(t, true, func(FetchOptions) (FetchResult, error) {
			return FetchResult{}, boom
		})
		c := TestCache(t)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		start := time.Now()

		var events int
		go func() {
			for range ch {
				events++
			}
		}()
		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k"}), "id", ch))
		time.Sleep(15 * time.Minute)
		cancel()
		synctest.Wait()
		close(ch)
		synctest.Wait()

		ts := times()
		require.Greater(t, len(ts), 12)
		require.Equal(t, len(ts), events, "one event per failed fetch")
		for i := 0; i < 4; i++ {
			require.Zero(t, ts[i].Sub(start), "fetch %d is immediate", i)
		}
		for i := 4; i < len(ts); i++ {
			gap := ts[i].Sub(ts[i-1])
			base := CacheRefreshMaxWait
			if shift := i - CacheRefreshBackoffMin; shift < 6 {
				base = time.Duration(1<<shift) * time.Second
			}
			require.GreaterOrEqual(t, gap, base, "gap before fetch %d", i)
			require.Less(t, gap, 2*base, "gap before fetch %d", i)
		}
	})
}

// Pins that after a first good result, errors are not delivered (the index
// does not grow) and the next good result with a higher index is.
func TestNotify_BlockingLaterErrorsNotDelivered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		var calls int
		typ, times := timedType(t, true, func(o FetchOptions) (FetchResult, error) {
			calls++
			switch {
			case calls == 1:
				return FetchResult{Value: "v1", Index: 5}, nil
			case calls <= 3:
				return FetchResult{}, errors.New("transient")
			case calls == 4:
				return FetchResult{Value: "v2", Index: 6}, nil
			default:
				<-release // block until the test ends
				return FetchResult{}, nil
			}
		})
		c := TestCache(t)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)

		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k"}), "id", ch))
		TestCacheNotifyChResult(t, ch,
			UpdateEvent{CorrelationID: "id", Result: "v1", Meta: ResultMeta{Index: 5}},
			UpdateEvent{CorrelationID: "id", Result: "v2", Meta: ResultMeta{Index: 6}})
		requireNoEvent(t, ch)
		require.Len(t, times(), 5, "two errors retried at once (below the back-off minimum)")
		cancel()
	})
}

// Pins that results without an index (a Get timing out before any value,
// Meta.Index 0) are backed off like errors instead of looping hot.
func TestNotify_BlockingZeroIndexBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		typ, times := timedType(t, true, func(FetchOptions) (FetchResult, error) {
			time.Sleep(2 * time.Second) // a blocking query that ends without data
			return FetchResult{}, nil
		})
		c := TestCache(t)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		req := TestRequest(t, RequestInfo{Key: "k", Timeout: 2300 * time.Millisecond})

		require.NoError(t, c.Notify(ctx, "t", req, "id", ch))
		// The first Get times out (2.3s) with nothing: delivered as the first result.
		require.Equal(t, UpdateEvent{CorrelationID: "id"}, recvEvent(t, ch, 5*time.Second))
		time.Sleep(10 * time.Minute)
		requireNoEvent(t, ch)
		cancel()
		time.Sleep(5 * time.Second) // let a fetch in flight finish inside the bubble
		synctest.Wait()

		// Without back-off the Gets would keep a fetch running all the time:
		// ~300 fetches in 10 minutes.
		ts := times()
		require.Less(t, len(ts), 50)
		var maxGap time.Duration
		for i := 1; i < len(ts); i++ {
			maxGap = max(maxGap, ts[i].Sub(ts[i-1]))
		}
		require.GreaterOrEqual(t, maxGap, CacheRefreshMaxWait, "back-off reached its cap")
		require.Less(t, maxGap, 2*CacheRefreshMaxWait+5*time.Second, "back-off is capped")
	})
}

// Pins the poll cadence of a non-blocking type: one fetch per MaxAge plus a
// jitter below MaxAge/16, and no event while the value is unchanged.
func TestNotify_PollingCadence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxAge = 10 * time.Second
		typ, times := timedType(t, false, func(FetchOptions) (FetchResult, error) {
			return FetchResult{Value: "v", Index: 1}, nil
		})
		c := TestCache(t)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)

		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k", MaxAge: maxAge}), "id", ch))
		TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: "v", Meta: ResultMeta{Index: 1}})

		const n = 32
		time.Sleep(n * maxAge)
		requireNoEvent(t, ch)
		cancel()

		ts := times()
		// n*MaxAge holds between n/(1+1/16) and n poll intervals.
		require.GreaterOrEqual(t, len(ts), 1+n*16/17)
		require.LessOrEqual(t, len(ts), 1+n)
		for i := 1; i < len(ts); i++ {
			gap := ts[i].Sub(ts[i-1])
			require.GreaterOrEqual(t, gap, maxAge, "poll %d", i)
			require.Less(t, gap, maxAge+maxAge/16, "poll %d", i)
		}
	})
}

// Pins what a poll delivers: a changed value (same index), a grown index
// (same value), and nothing when both are unchanged.
func TestNotify_PollingDeliversOnValueOrIndexChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxAge = 10 * time.Second
		var mu sync.Mutex
		cur := FetchResult{Value: []string{"a"}, Index: 1}
		setCur := func(r FetchResult) {
			mu.Lock()
			defer mu.Unlock()
			cur = r
		}
		typ, times := timedType(t, false, func(FetchOptions) (FetchResult, error) {
			mu.Lock()
			defer mu.Unlock()
			// A fresh copy each time, so only DeepEqual can tell it unchanged.
			return FetchResult{Value: append([]string(nil), cur.Value.([]string)...), Index: cur.Index}, nil
		})
		c := TestCache(t)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k", MaxAge: maxAge}), "id", ch))

		ev := recvEvent(t, ch, time.Second)
		require.Equal(t, []string{"a"}, ev.Result)
		require.Equal(t, uint64(1), ev.Meta.Index)

		// Unchanged: several polls, no event.
		before := len(times())
		time.Sleep(3 * maxAge)
		requireNoEvent(t, ch)
		require.GreaterOrEqual(t, len(times())-before, 2)

		// Value changed, index not.
		setCur(FetchResult{Value: []string{"a", "b"}, Index: 1})
		ev = recvEvent(t, ch, 2*maxAge)
		require.Equal(t, []string{"a", "b"}, ev.Result)
		require.Equal(t, "id", ev.CorrelationID)
		require.Equal(t, uint64(1), ev.Meta.Index)
		requireNoEvent(t, ch)

		// Index grown, value not.
		setCur(FetchResult{Value: []string{"a", "b"}, Index: 2})
		ev = recvEvent(t, ch, 2*maxAge)
		require.Equal(t, []string{"a", "b"}, ev.Result)
		require.Equal(t, uint64(2), ev.Meta.Index)

		time.Sleep(3 * maxAge)
		requireNoEvent(t, ch)
		cancel()
	})
}

// Pins that polling errors are retried with back-off, each delivered while
// there is no value yet, and that a later good value is delivered.
func TestNotify_PollingErrorThenValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxAge = 10 * time.Second
		var calls int
		typ, times := timedType(t, false, func(FetchOptions) (FetchResult, error) {
			calls++
			if calls <= 5 {
				return FetchResult{}, errors.New("down")
			}
			return FetchResult{Value: "v", Index: 3}, nil
		})
		c := TestCache(t)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		start := time.Now()
		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k", MaxAge: maxAge}), "id", ch))

		for i := 0; i < 5; i++ {
			ev := recvEvent(t, ch, time.Minute)
			require.EqualError(t, ev.Err, "down", "event %d", i)
			require.Nil(t, ev.Result)
		}
		ev := recvEvent(t, ch, time.Minute)
		require.Equal(t, UpdateEvent{CorrelationID: "id", Result: "v", Meta: ResultMeta{Index: 3}}, ev, "then the value")
		ts := times()
		require.Len(t, ts, 6)
		// Failures 1-3 retry at once, 4 waits [2s,4s), 5 waits [4s,8s).
		require.Zero(t, ts[3].Sub(start))
		require.GreaterOrEqual(t, ts[5].Sub(start), 6*time.Second)
		require.Less(t, ts[5].Sub(start), 12*time.Second)
		cancel()
	})
}

// Pins that cancelling ctx stops Notify: no more fetches or events, and its
// goroutine exits (a leak would deadlock the bubble at the end).
func TestNotify_CancelStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		b := newBlockingBackend(t, "v1", 5)
		c.RegisterType("t", b, &RegisterOptions{RefreshTimeout: 10 * time.Second})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)

		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k"}), "id", ch))
		TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: "v1", Meta: ResultMeta{Index: 5}})
		time.Sleep(25 * time.Second)
		cancel()
		synctest.Wait()
		n := b.fetches.Load() // includes the fetch still in flight

		b.set("v2", 6)
		time.Sleep(time.Hour)
		requireNoEvent(t, ch)
		require.Equal(t, n, b.fetches.Load(), "no fetch after cancel")
	})
}

// Pins that cancelling ctx during the error back-off ends the watch.
func TestNotify_CancelDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		typ, times := timedType(t, true, func(FetchOptions) (FetchResult, error) {
			return FetchResult{}, errors.New("boom")
		})
		c := TestCache(t)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k"}), "id", ch))
		time.Sleep(time.Second) // in the first back-off wait (2s..4s)
		cancel()
		synctest.Wait()
		n := len(times())
		require.Equal(t, 4, n)
		time.Sleep(time.Hour)
		synctest.Wait()
		require.Len(t, times(), n)
	})
}

// Pins that a watcher blocked sending to an unread channel exits on cancel.
func TestNotify_CancelWhileSendPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		typ := TestType(t)
		typ.Static(FetchResult{Value: "v", Index: 1}, nil)
		c := TestCache(t)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent) // never read

		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k"}), "id", ch))
		synctest.Wait()
		cancel()
		synctest.Wait()
		typ.AssertNumberOfCalls(t, "Fetch", 1)
	})
}

// Pins that several watchers (distinct CorrelationIDs on one channel) and a
// blocking Get on the same entry share its fetches.
func TestNotify_WatchersShareFetches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		b := newBlockingBackend(t, "v1", 5)
		c.RegisterType("t", b, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		info := RequestInfo{Key: "k"}

		for _, id := range []string{"a", "b", "c"} {
			require.NoError(t, c.Notify(ctx, "t", TestRequest(t, info), id, ch))
		}
		// Whichever watcher comes after the first fetch sees a hit: ignore Hit.
		var got []UpdateEvent
		for i := 0; i < 3; i++ {
			ev := recvEvent(t, ch, time.Second)
			ev.Meta.Hit = false
			got = append(got, ev)
		}
		require.ElementsMatch(t, []UpdateEvent{
			{CorrelationID: "a", Result: "v1", Meta: ResultMeta{Index: 5}},
			{CorrelationID: "b", Result: "v1", Meta: ResultMeta{Index: 5}},
			{CorrelationID: "c", Result: "v1", Meta: ResultMeta{Index: 5}},
		}, got)

		blockingInfo := info
		blockingInfo.MinIndex = 5
		getCh := TestCacheGetCh(t, c, "t", TestRequest(t, blockingInfo))
		synctest.Wait()
		require.Empty(t, getCh, "the Get blocks at index 5")
		require.Equal(t, int64(2), b.fetches.Load(), "one initial fetch, one blocking fetch for everyone")

		b.set("v2", 6)
		TestCacheGetChResult(t, getCh, "v2")
		TestCacheNotifyChResult(t, ch,
			UpdateEvent{CorrelationID: "c", Result: "v2", Meta: ResultMeta{Index: 6}},
			UpdateEvent{CorrelationID: "a", Result: "v2", Meta: ResultMeta{Index: 6}},
			UpdateEvent{CorrelationID: "b", Result: "v2", Meta: ResultMeta{Index: 6}})
		synctest.Wait()
		require.Equal(t, int64(3), b.fetches.Load(), "and one fetch blocking at index 6")
		cancel()
	})
}

// Pins that Notify follows a background-refreshed entry: events come from
// the refresh loop's fetches, without a fetch of its own.
func TestNotify_RefreshTypeSharesRefreshLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		b := newBlockingBackend(t, "v1", 5)
		c.RegisterType("t", b, &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)

		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k"}), "id", ch))
		TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: "v1", Meta: ResultMeta{Index: 5}})
		for i := uint64(6); i <= 8; i++ {
			synctest.Wait() // the watch waits in its next Get, so the change is not a hit
			b.set(i, i)
			TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: i, Meta: ResultMeta{Index: i}})
		}
		synctest.Wait()
		require.Equal(t, int64(5), b.fetches.Load(), "only the refresh loop fetches")
		cancel()
	})
}

// Pins that a poll waits until the cached value would exceed MaxAge (plus
// jitter), counting the age the value already had when Notify started.
func TestNotify_PollingWaitCountsCachedAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxAge = 10 * time.Second
		typ, times := timedType(t, false, func(FetchOptions) (FetchResult, error) {
			return FetchResult{Value: "v", Index: 1}, nil
		})
		c := TestCache(t)
		c.RegisterType("t", typ, nil)
		req := TestRequest(t, RequestInfo{Key: "k", MaxAge: maxAge})
		start := time.Now()
		_, _, err := c.Get("t", req)
		require.NoError(t, err)

		time.Sleep(4 * time.Second)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		require.NoError(t, c.Notify(ctx, "t", req, "id", ch))
		ev := recvEvent(t, ch, time.Second)
		require.True(t, ev.Meta.Hit, "the first poll is served from the cache")
		require.Equal(t, 4*time.Second, ev.Meta.Age)

		time.Sleep(maxAge)
		requireNoEvent(t, ch)
		cancel()
		ts := times()
		require.Len(t, ts, 2)
		require.GreaterOrEqual(t, ts[1].Sub(start), maxAge)
		require.Less(t, ts[1].Sub(start), maxAge+maxAge/16)
	})
}

// Pins that cancelling a polling watch ends it both during a slow poll and
// while its event is waiting to be sent: no more fetches afterwards.
func TestNotify_PollingCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		typ := TestTypeNonBlocking(t)
		var fetches atomic.Int64
		typ.On("Fetch", mock.Anything, mock.Anything).Return(
			func(_ FetchOptions, r Request) FetchResult {
				fetches.Add(1)
				if r.CacheInfo().Key == "slow" {
					<-release
				}
				return FetchResult{Value: "v", Index: 1}
			}, nil)
		c := TestCache(t)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()

		unread := make(chan UpdateEvent)
		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "fast", MaxAge: time.Second}), "fast", unread))
		slowCh := make(chan UpdateEvent, 1)
		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "slow", MaxAge: time.Second}), "slow", slowCh))
		time.Sleep(time.Minute)
		synctest.Wait()
		require.Equal(t, int64(2), fetches.Load(), "one poll each: one is stuck sending, one fetching")

		cancel()
		time.Sleep(time.Hour)
		requireNoEvent(t, slowCh)
		require.Equal(t, int64(2), fetches.Load())
	})
}

// Pins that the blocking loop starts at index 0 whatever the request's own
// MinIndex: the current value is delivered at once.
func TestNotify_BlockingIgnoresRequestMinIndex(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		b := newBlockingBackend(t, "v1", 5)
		c.RegisterType("t", b, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)

		require.NoError(t, c.Notify(ctx, "t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 100}), "id", ch))
		TestCacheNotifyChResult(t, ch, UpdateEvent{CorrelationID: "id", Result: "v1", Meta: ResultMeta{Index: 5}})
		require.Equal(t, uint64(0), b.minIndexes()[0])
		cancel()
	})
}

// Pins: the internal context ends a waiting watch Get with the last value
// and ctx.Err() (Notify relies on it).
func TestCacheGetWithIndex_contextCancel(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, nil)
		requireGet(t, c, "t", RequestInfo{Key: "k"})

		ctx, cancel := context.WithCancel(context.Background())
		info := RequestInfo{Key: "k"}
		ch := make(chan getResult, 1)
		go func() {
			w := &watch{c: c, ctx: ctx, t: "t", r: TestRequest(t, info), info: info}
			v, meta, err := w.get(5, 0)
			ch <- getResult{v, meta, err}
		}()
		requireBlocked(t, ch)
		cancel()
		r := requireReturned(t, ch)
		require.ErrorIs(t, r.Err, context.Canceled)
		require.Equal(t, "v5", r.Value)
		require.Equal(t, ResultMeta{Index: 5}, r.Meta)
	})
}

// ---------------------------------------------------------------------------
// NotifyCallback.

// Pins: NotifyCallback rejects unknown type, nil cb, polling without MaxAge; Notify a nil chan; no watch starts.
func TestNotifyCallback_Errors(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, nil)
		var calls fetchLog
		c.RegisterType("blocking", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			calls.add(o, r)
			return FetchResult{Value: "v", Index: 1}, nil
		}), nil)
		c.RegisterType("polling", FetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			calls.add(o, r)
			return FetchResult{Value: "v", Index: 1}, nil
		}), nil)
		ctx := t.Context()
		req := RequestInfo{Key: "k"}
		called := false
		cb := func(context.Context, UpdateEvent) { called = true }

		err := c.NotifyCallback(ctx, "nope", req, "id", cb)
		require.ErrorContains(t, err, "nope")
		require.Error(t, c.NotifyCallback(ctx, "blocking", req, "id", nil))
		require.Error(t, c.NotifyCallback(ctx, "polling", req, "id", cb))
		require.Error(t, c.Notify(ctx, "blocking", req, "id", nil))

		time.Sleep(time.Minute)
		synctest.Wait()
		require.Zero(t, calls.count(), "no watch was started")
		require.False(t, called)
	})
}

// Pins: cb gets each change in order, one call at a time, with correlation ID, result, meta and the live ctx.
func TestNotifyCallback_EventsInOrder(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, nil)
		b := newBlockingBackend(t, "v1", 5)
		c.RegisterType("t", b, &RegisterOptions{RefreshTimeout: 10 * time.Minute})
		ctx, cancel := context.WithCancel(context.WithValue(t.Context(), ctxKey{}, "mine"))
		defer cancel()

		var got eventLog
		var inCb, overlaps atomic.Int32
		var ctxOK atomic.Bool
		ctxOK.Store(true)
		require.NoError(t, c.NotifyCallback(ctx, "t", RequestInfo{Key: "k"}, "id", func(cctx context.Context, e UpdateEvent) {
			if inCb.Add(1) > 1 {
				overlaps.Add(1)
			}
			defer inCb.Add(-1)
			if cctx.Value(ctxKey{}) != "mine" || cctx.Err() != nil {
				ctxOK.Store(false)
			}
			time.Sleep(time.Second) // a slow callback holds the watch back
			got.add(e)
		}))
		synctest.Wait()
		b.set("v2", 6)
		synctest.Wait()
		time.Sleep(2 * time.Second)
		b.set("v3", 7)
		time.Sleep(2 * time.Second)
		synctest.Wait()

		require.Equal(t, []UpdateEvent{
			{CorrelationID: "id", Result: "v1", Meta: ResultMeta{Index: 5}},
			{CorrelationID: "id", Result: "v2", Meta: ResultMeta{Index: 6}},
			{CorrelationID: "id", Result: "v3", Meta: ResultMeta{Index: 7}},
		}, got.get())
		require.Zero(t, overlaps.Load(), "callbacks overlapped")
		require.True(t, ctxOK.Load(), "the callback did not get the watch's live ctx")
		cancel()
	})
}

// Pins: after ctx ends (in cb or while waiting) cb is never called, fetching stops and the watch goroutine ends.
func TestNotifyCallback_NotCalledAfterCancel(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, nil)
		ba, bb := newBlockingBackend(t, "a1", 5), newBlockingBackend(t, "b1", 5)
		c.RegisterType("a", ba, &RegisterOptions{RefreshTimeout: 10 * time.Minute})
		c.RegisterType("b", bb, &RegisterOptions{RefreshTimeout: 10 * time.Minute})

		// Watch a: its callback cancels the watch on the first event.
		ctxA, cancelA := context.WithCancel(t.Context())
		defer cancelA()
		var late atomic.Int32 // callbacks run with ctx already done
		var gotA eventLog
		require.NoError(t, c.NotifyCallback(ctxA, "a", RequestInfo{Key: "k"}, "a", func(cctx context.Context, e UpdateEvent) {
			if cctx.Err() != nil {
				late.Add(1)
			}
			gotA.add(e)
			cancelA()
		}))
		// Watch b: cancelled from outside while it waits for a change.
		ctxB, cancelB := context.WithCancel(t.Context())
		defer cancelB()
		var gotB eventLog
		require.NoError(t, c.NotifyCallback(ctxB, "b", RequestInfo{Key: "k"}, "b", func(cctx context.Context, e UpdateEvent) {
			if cctx.Err() != nil {
				late.Add(1)
			}
			gotB.add(e)
		}))
		synctest.Wait()
		require.Len(t, gotA.get(), 1)
		require.Len(t, gotB.get(), 1)
		require.Equal(t, int64(2), bb.fetches.Load(), "watch b waits in a blocking fetch")
		cancelB()
		synctest.Wait()
		fetchesA := ba.fetches.Load()

		for i := uint64(6); i < 9; i++ {
			ba.set(fmt.Sprint("a", i), i)
			bb.set(fmt.Sprint("b", i), i)
			time.Sleep(time.Hour)
		}
		synctest.Wait()
		require.Len(t, gotA.get(), 1, "callback a called after cancel")
		require.Len(t, gotB.get(), 1, "callback b called after cancel")
		require.Equal(t, fetchesA, ba.fetches.Load(), "watch a fetched after cancel")
		require.Equal(t, int64(2), bb.fetches.Load(), "watch b fetched after cancel")
		require.Zero(t, late.Load(), "a callback ran with its ctx done")
	})
}

type ctxKey struct{}
