package cache

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// A loop makes its context only when a fetch or a wait needs it (see
// entryLoop.ctx): these tests pin that eviction still ends what the
// context would have ended.

// TestMiss_evictionEndsRefreshWait pins that the eviction of an entry of
// a refreshing type without FetchContext ends its loop's RefreshTimer
// wait at once: the wait made the loop's context, which eviction cancels.
func TestMiss_evictionEndsRefreshWait(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, &Options{MaxEntries: 1})
		c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{Value: "v", Index: 1}, nil
		}), &RegisterOptions{Refresh: true, RefreshTimer: time.Hour})

		requireGet(t, c, "t", RequestInfo{Key: "a"})
		synctest.Wait() // a's loop waits out RefreshTimer
		a := c.lookupKey("t", "", "", "a")
		require.NotNil(t, a)
		time.Sleep(time.Second)
		requireGet(t, c, "t", RequestInfo{Key: "b"}) // evicts a, the older
		synctest.Wait()
		require.Nil(t, c.lookupKey("t", "", "", "a"), "a not evicted")

		a.mu.Lock()
		fetching := a.fetching
		a.mu.Unlock()
		require.False(t, fetching, "the evicted entry's loop still waits")
	})
}

// TestMiss_contextOfEvictedLoop pins that a context made for the loop of
// an entry evicted before it had one is born cancelled: eviction, which
// found nothing to cancel, must still end the loop's waits.
func TestMiss_contextOfEvictedLoop(t *testing.T) {
	e := newEntry([]byte("k"))
	lp := &entryLoop{}
	e.mu.Lock()
	e.evicted = true
	lp.makeCtx(e)
	e.mu.Unlock()
	require.Error(t, lp.ctx.Err())

	live := &entryLoop{}
	e.evicted = false
	live.makeCtx(e)
	require.NoError(t, live.ctx.Err())
	ctx := live.ctx
	live.makeCtx(e)
	require.Same(t, ctx, live.ctx, "made again")
	live.cancel()
}

// TestMiss_plainTypeHasNoContext pins that a miss of a type without
// FetchContext makes no context, and that a ContextType's fetch gets
// one, which eviction then cancels.
func TestMiss_plainTypeHasNoContext(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := newCache(t, nil)
		var plain *entryLoop
		c.RegisterType("plain", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			plain = c.lookupKey("plain", "", "", "k").loop.Load()
			return FetchResult{Value: "v", Index: 1}, nil
		}), nil)
		requireGet(t, c, "plain", RequestInfo{Key: "k"})
		require.NotNil(t, plain)
		require.Nil(t, plain.ctx, "a plain type's loop made a context")

		got := make(chan error, 1)
		c.RegisterType("ctx", contextType{fetch: func(ctx context.Context, _ FetchOptions, _ Request) (FetchResult, error) {
			select {
			case <-ctx.Done():
				got <- ctx.Err()
			case <-release:
				got <- nil
			}
			return FetchResult{}, ctx.Err()
		}}, nil)
		ch := goGet(c, "ctx", RequestInfo{Key: "k", Timeout: time.Second})
		synctest.Wait()
		e := c.lookupKey("ctx", "", "", "k")
		var ev evictions
		c.expiryMu.Lock()
		c.evict(e, &ev)
		c.expiryMu.Unlock()
		c.finishEvictions(&ev, c.metrics.evictExpired)
		require.Error(t, <-got, "eviction did not cancel the fetch's context")
		requireReturned(t, ch)
	})
}

// TestMiss_oneClockRead pins that a new entry's expiry counts from the
// time its result was fetched: the two share one clock read.
func TestMiss_oneClockRead(t *testing.T) {
	c := TestCache(t)
	c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: "v", Index: 1}, nil
	}), &RegisterOptions{LastGetTTL: time.Hour})
	for _, k := range []string{"a", "b", "c"} {
		_, _, err := c.Get("t", RequestInfo{Key: k})
		require.NoError(t, err)
		e := c.lookupKey("t", "", "", k)
		c.expiryMu.Lock()
		expires := e.expires
		c.expiryMu.Unlock()
		require.Equal(t, e.result().fetchedAt+int64(time.Hour), expires, k)
	}
}
