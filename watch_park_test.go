package cache

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// Tests of the watches' parking: an idle watch is a registration on its
// entry, not a goroutine.

// watchedBackend returns, in a bubble, a cache with the type "t" of a
// blockingBackend that holds "v1" at index.
func watchedBackend(t *testing.T, index uint64) (*Cache, *blockingBackend) {
	c := TestCache(t)
	b := newBlockingBackend(t, "v1", index)
	c.RegisterType("t", b, &RegisterOptions{RefreshTimeout: 10 * time.Minute})
	return c, b
}

// eventIndexes returns the indexes of the events in l.
func eventIndexes(l *eventLog) []uint64 {
	var idx []uint64
	for _, ev := range l.get() {
		idx = append(idx, ev.Meta.Index)
	}
	return idx
}

// Pins that idle watches hold no goroutine: 1,000 watches over 10 keys
// leave, once they have their first event, and again after a change, only
// the keys' fetch loops running. Not parallel: it counts the process's
// goroutines.
func TestNotify_IdleWatchesHoldNoGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, keys = 1000, 10
		c, b := watchedBackend(t, 5)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var events atomic.Int64
		cb := func(context.Context, UpdateEvent) { events.Add(1) }

		base := runtime.NumGoroutine()
		for i := range n {
			req := RequestInfo{Key: "k" + strconv.Itoa(i%keys)}
			require.NoError(t, c.NotifyCallback(ctx, "t", req, "", cb))
		}
		synctest.Wait()
		require.Equal(t, int64(n), events.Load())
		// One fetch loop per key, blocked in its query, the cache's
		// watchSet, and some slack for goroutines outside the bubble.
		const most = keys + 1 + 10
		require.LessOrEqual(t, runtime.NumGoroutine()-base, most)
		require.Equal(t, n, liveWatches(t, c))

		b.set("v2", 6)
		synctest.Wait()
		require.Equal(t, int64(2*n), events.Load())
		require.LessOrEqual(t, runtime.NumGoroutine()-base, most)
		// Per key: the first value, the change, and the query now waiting.
		require.Equal(t, int64(3*keys), b.fetches.Load(), "one fetch per change per key")

		cancel()
		synctest.Wait()
		require.Zero(t, liveWatches(t, c))
	})
}

// Pins that a watch whose consumer blocks does not delay another watch of
// the same key, and that it catches up, in order, once its consumer
// returns.
func TestNotify_SlowConsumerDoesNotDelayOthers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, b := watchedBackend(t, 1)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		gate := make(chan struct{})
		var slow, fast eventLog
		req := RequestInfo{Key: "k"}
		require.NoError(t, c.NotifyCallback(ctx, "t", req, "slow", func(ctx context.Context, ev UpdateEvent) {
			slow.add(ev)
			if ev.Meta.Index == 2 {
				select {
				case <-gate:
				case <-ctx.Done():
				}
			}
		}))
		require.NoError(t, c.NotifyCallback(ctx, "t", req, "fast", func(_ context.Context, ev UpdateEvent) { fast.add(ev) }))
		synctest.Wait()

		b.set("v2", 2)
		synctest.Wait()
		b.set("v3", 3)
		synctest.Wait()
		require.Equal(t, []uint64{1, 2, 3}, eventIndexes(&fast))
		require.Equal(t, []uint64{1, 2}, eventIndexes(&slow), "blocked in its callback")

		close(gate)
		synctest.Wait()
		require.Equal(t, []uint64{1, 2, 3}, eventIndexes(&slow))
		require.Equal(t, int64(4), b.fetches.Load(), "the watches share the fetches")
	})
}

// parkedWatches returns the number of watches parked on the entry of key
// k of type t, and its count of watchers.
func parkedWatches(t *testing.T, c *Cache, typ, k string) (parked int, watchers int32) {
	t.Helper()
	e := c.lookupKey(typ, "", "", k)
	require.NotNil(t, e)
	e.mu.Lock()
	defer e.mu.Unlock()
	if lp := e.loop.Load(); lp != nil {
		for w := lp.watches; w != nil; w = w.next {
			parked++
		}
	}
	return parked, e.watchers.Load()
}

// Pins that ending the context of an idle watch takes it off its entry at
// once: nothing stays parked or counted as a watcher, and a change sends
// nothing.
func TestNotify_CancelIdleLeavesNothing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, b := watchedBackend(t, 5)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 4)
		require.NoError(t, c.Notify(ctx, "t", RequestInfo{Key: "k"}, "id", ch))
		require.Equal(t, "v1", recvEvent(t, ch, time.Second).Result)
		synctest.Wait()
		parked, watchers := parkedWatches(t, c, "t", "k")
		require.Equal(t, 1, parked)
		require.Equal(t, int32(1), watchers)

		cancel()
		synctest.Wait()
		parked, watchers = parkedWatches(t, c, "t", "k")
		require.Zero(t, parked)
		require.Zero(t, watchers)
		require.Zero(t, liveWatches(t, c))
		b.set("v2", 6)
		requireNoEvent(t, ch)
	})
}

// Pins that Close ends idle watches of every kind: parked on their entry,
// between two polls, and in an error back-off. None sends an event or
// fetches again, and none is left.
func TestNotify_CloseEndsIdleWatches(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, b := watchedBackend(t, 5)
		polls := TestTypeNonBlocking(t)
		polls.Static(FetchResult{Value: "p", Index: 1}, nil)
		c.RegisterType("polling", polls, nil)
		var fails atomic.Int64
		c.RegisterType("failing", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			fails.Add(1)
			return FetchResult{}, errors.New("boom")
		}), nil)

		ctx := context.Background() // only Close can end the watches
		ch := make(chan UpdateEvent, 200)
		for i := range 100 {
			require.NoError(t, c.Notify(ctx, "t", RequestInfo{Key: "k" + strconv.Itoa(i%10)}, "b", ch))
		}
		require.NoError(t, c.Notify(ctx, "polling", RequestInfo{Key: "k", MaxAge: time.Hour}, "p", ch))
		require.NoError(t, c.Notify(ctx, "failing", RequestInfo{Key: "k"}, "f", ch))
		time.Sleep(time.Second) // the failing watch in its back-off
		synctest.Wait()
		// The failing watch sent the errors of its first four tries.
		require.Len(t, ch, 105)
		for len(ch) > 0 {
			<-ch
		}
		require.Equal(t, 102, liveWatches(t, c))
		fetched, failed := b.fetches.Load(), fails.Load()

		require.NoError(t, c.Close())
		synctest.Wait()
		require.Zero(t, liveWatches(t, c))
		time.Sleep(2 * time.Hour)
		requireNoEvent(t, ch)
		require.Equal(t, fetched, b.fetches.Load())
		require.Equal(t, failed, fails.Load())
		polls.AssertNumberOfCalls(t, "Fetch", 1)
	})
}

// Pins the request's Timeout in a watch: a first Get that times out before
// any value sends an empty event, later Gets that time out send nothing
// and start no fetch, and the watch holds no goroutine meanwhile.
func TestNotify_RequestTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, sleeping(90*time.Second, release), FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, nil)
		var events eventLog
		req := RequestInfo{Key: "k", Timeout: time.Minute}
		require.NoError(t, c.NotifyCallback(t.Context(), "t", req, "id", func(_ context.Context, ev UpdateEvent) { events.add(ev) }))

		time.Sleep(61 * time.Second)
		synctest.Wait()
		require.Equal(t, []UpdateEvent{{CorrelationID: "id"}}, events.get(), "the first Get timed out")
		time.Sleep(30 * time.Second)
		synctest.Wait()
		require.Equal(t, []uint64{0, 5}, eventIndexes(&events))
		require.Equal(t, "v5", events.get()[1].Result)

		time.Sleep(10 * time.Minute) // ten Gets time out
		synctest.Wait()
		require.Len(t, events.get(), 2)
		require.Equal(t, 2, log.count(), "a Get that timed out leaves the fetch to the next one")
		parked, _ := parkedWatches(t, c, "t", "k")
		require.Equal(t, 1, parked)
	})
}

// Pins that a watch whose request wants a fresher value than the entry's
// (MaxAge), while the entry's loop is in a blocking query, gets it from a
// revalidation at once, and then follows the blocking query's changes.
func TestNotify_RevalidatesBesideBlockingQuery(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, b := watchedBackend(t, 5)
		requireGet(t, c, "t", RequestInfo{Key: "k"})
		blocked := goGet(c, "t", RequestInfo{Key: "k", MinIndex: 5})
		requireBlocked(t, blocked)
		time.Sleep(2 * time.Minute)

		ch := make(chan UpdateEvent, 4)
		start := time.Now()
		require.NoError(t, c.Notify(t.Context(), "t", RequestInfo{Key: "k", MaxAge: time.Minute}, "id", ch))
		ev := recvEvent(t, ch, time.Second)
		require.Zero(t, time.Since(start))
		require.Equal(t, "v1", ev.Result)
		require.Equal(t, int64(3), b.fetches.Load(), "a revalidation beside the blocking query")

		b.set("v2", 6)
		ev = recvEvent(t, ch, time.Second)
		require.Equal(t, "v2", ev.Result)
		require.Equal(t, "v2", requireReturned(t, blocked).Value)
	})
}
