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

	"github.com/stretchr/testify/require"
)

// ergoRes is what one GetContext or GetAs call returned, and when.
type ergoRes[V any] struct {
	Value V
	Meta  ResultMeta
	Err   error
	At    time.Time
}

// ergoGo runs f in a goroutine; its result arrives on the channel.
func ergoGo[V any](f func() (V, ResultMeta, error)) <-chan ergoRes[V] {
	ch := make(chan ergoRes[V], 1)
	go func() {
		v, meta, err := f()
		ch <- ergoRes[V]{v, meta, err, time.Now()}
	}()
	return ch
}

// ergoBlocked (in a bubble) fails if the call has returned once the bubble
// is idle.
func ergoBlocked[V any](t *testing.T, ch <-chan ergoRes[V]) {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		t.Fatalf("returned while it should wait: %+v", r)
	default:
	}
}

// ergoReturned (in a bubble) returns the call's result, failing if it is
// still waiting once the bubble is idle.
func ergoReturned[V any](t *testing.T, ch <-chan ergoRes[V]) ergoRes[V] {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatalf("still waiting")
		return ergoRes[V]{}
	}
}

// ergoEvents records the events a NotifyCallback watch delivers.
type ergoEvents struct {
	mu     sync.Mutex
	events []UpdateEvent
}

func (e *ergoEvents) add(ev UpdateEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ev.Meta.Age = 0
	e.events = append(e.events, ev)
}

func (e *ergoEvents) get() []UpdateEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]UpdateEvent(nil), e.events...)
}

// ergoItem and ergoOther are value types for GetAs.
type ergoItem struct{ Name string }

func (i *ergoItem) String() string { return "item " + i.Name }

type ergoOther struct{ N int }

type ergoCtxKey struct{}

// ---------------------------------------------------------------------------
// NotifyCallback.

// Pins: NotifyCallback rejects unknown type, nil cb, polling without MaxAge; Notify a nil chan; no watch starts.
func TestNotifyCallback_Errors(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := embNew(t, nil)
		var calls embCalls
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
		c, _ := embNew(t, nil)
		b := newNotifyBackend(t, "v1", 5)
		c.RegisterType("t", b, &RegisterOptions{RefreshTimeout: 10 * time.Minute})
		ctx, cancel := context.WithCancel(context.WithValue(t.Context(), ergoCtxKey{}, "mine"))
		defer cancel()

		var got ergoEvents
		var inCb, overlaps atomic.Int32
		var ctxOK atomic.Bool
		ctxOK.Store(true)
		require.NoError(t, c.NotifyCallback(ctx, "t", RequestInfo{Key: "k"}, "id", func(cctx context.Context, e UpdateEvent) {
			if inCb.Add(1) > 1 {
				overlaps.Add(1)
			}
			defer inCb.Add(-1)
			if cctx.Value(ergoCtxKey{}) != "mine" || cctx.Err() != nil {
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
		c, _ := embNew(t, nil)
		ba, bb := newNotifyBackend(t, "a1", 5), newNotifyBackend(t, "b1", 5)
		c.RegisterType("a", ba, &RegisterOptions{RefreshTimeout: 10 * time.Minute})
		c.RegisterType("b", bb, &RegisterOptions{RefreshTimeout: 10 * time.Minute})

		// Watch a: its callback cancels the watch on the first event.
		ctxA, cancelA := context.WithCancel(t.Context())
		defer cancelA()
		var late atomic.Int32 // callbacks run with ctx already done
		var gotA ergoEvents
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
		var gotB ergoEvents
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

// ---------------------------------------------------------------------------
// FetchFunc and BlockingFetchFunc.

// Pins: FetchFunc is non-blocking: gets the request, never MinIndex/Timeout, and a Get's MinIndex does not block.
func TestFetchFunc_IsNonBlockingType(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var calls embCalls
		f := FetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			n := calls.add(o, r)
			return FetchResult{Value: n, Index: uint64(10 * n)}, nil
		})
		var typ Type = f
		require.False(t, typ.SupportsBlocking())

		c, _ := embNew(t, nil)
		c.RegisterType("t", f, &RegisterOptions{Refresh: true, RefreshTimer: 10 * time.Second, RefreshTimeout: time.Minute})
		req := RequestInfo{Key: "k", Datacenter: "dc1", MinIndex: 50}
		ch := ergoGo(func() (any, ResultMeta, error) { return c.Get("t", req) })
		r := ergoReturned(t, ch)
		require.NoError(t, r.Err)
		require.Equal(t, 1, r.Value, "MinIndex 50 > index 10 did not block")
		require.Equal(t, 1, calls.count())
		require.Equal(t, req, calls.req(0))

		time.Sleep(15 * time.Second) // one refresh
		require.Equal(t, 2, calls.count())
		for i := range 2 {
			require.Zero(t, calls.opt(i).MinIndex)
			require.Zero(t, calls.opt(i).Timeout)
		}
		require.Equal(t, &FetchResult{Value: 1, Index: 10}, calls.opt(1).LastResult)
	})
}

// Pins: NotifyCallback polls a FetchFunc type (MaxAge required) and reports each change of value.
func TestFetchFunc_NotifyCallbackPolls(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var val atomic.Value
		val.Store("v1")
		c, _ := embNew(t, nil)
		c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{Value: val.Load(), Index: 1}, nil
		}), nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var got ergoEvents
		cb := func(_ context.Context, e UpdateEvent) { got.add(e) }
		require.Error(t, c.NotifyCallback(ctx, "t", RequestInfo{Key: "k"}, "id", cb), "MaxAge is required")
		require.NoError(t, c.NotifyCallback(ctx, "t", RequestInfo{Key: "k", MaxAge: 10 * time.Second}, "id", cb))

		synctest.Wait()
		val.Store("v2")
		time.Sleep(12 * time.Second) // MaxAge plus at most MaxAge/16 of jitter
		synctest.Wait()
		require.Equal(t, []UpdateEvent{
			{CorrelationID: "id", Result: "v1", Meta: ResultMeta{Index: 1}},
			{CorrelationID: "id", Result: "v2", Meta: ResultMeta{Index: 1}},
		}, got.get())
		cancel()
	})
}

// Pins: BlockingFetchFunc is blocking: gets MinIndex and RefreshTimeout, and a Get with MinIndex waits.
func TestBlockingFetchFunc_IsBlockingType(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := newNotifyBackend(t, "v1", 5)
		var calls embCalls
		f := BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			calls.add(o, r)
			return b.Fetch(o, r)
		})
		var typ Type = f
		require.True(t, typ.SupportsBlocking())

		c, _ := embNew(t, nil)
		c.RegisterType("t", f, &RegisterOptions{RefreshTimeout: 10 * time.Minute})
		v, meta, err := c.Get("t", RequestInfo{Key: "k"})
		require.NoError(t, err)
		require.Equal(t, "v1", v)
		require.Equal(t, uint64(5), meta.Index)

		ch := ergoGo(func() (any, ResultMeta, error) {
			return c.Get("t", RequestInfo{Key: "k", MinIndex: 5})
		})
		ergoBlocked(t, ch)
		require.Equal(t, 2, calls.count())
		require.Equal(t, uint64(0), calls.opt(0).MinIndex)
		require.Equal(t, uint64(5), calls.opt(1).MinIndex)
		require.Equal(t, 10*time.Minute, calls.opt(1).Timeout)

		b.set("v2", 6)
		r := ergoReturned(t, ch)
		require.NoError(t, r.Err)
		require.Equal(t, "v2", r.Value)
		require.Equal(t, uint64(6), r.Meta.Index)
	})
}

// ---------------------------------------------------------------------------
// RequestInfo as a Request.

// Pins: a bare RequestInfo is a Request (CacheInfo is itself) that Get, Notify and Fetch take, partitioned by it.
func TestRequestInfo_IsRequest(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		info := RequestInfo{Token: "tok", Key: "k", Datacenter: "dc1", MaxAge: time.Hour}
		var r Request = info
		require.Equal(t, info, r.CacheInfo())

		var calls embCalls
		c, _ := embNew(t, nil)
		c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			n := calls.add(o, r)
			return FetchResult{Value: r.CacheInfo().Token, Index: uint64(n)}, nil
		}), nil)

		v, _, err := c.Get("t", info)
		require.NoError(t, err)
		require.Equal(t, "tok", v)
		require.Equal(t, info, calls.req(0), "Fetch gets the RequestInfo itself")

		other := info
		other.Token = "tok2"
		v, _, err = c.Get("t", other)
		require.NoError(t, err)
		require.Equal(t, "tok2", v)
		v, meta, err := c.Get("t", info)
		require.NoError(t, err)
		require.Equal(t, "tok", v)
		require.True(t, meta.Hit)
		require.Equal(t, 2, calls.count())

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 1)
		require.NoError(t, c.Notify(ctx, "t", info, "id", ch))
		ev := notifyRecv(t, ch, time.Second)
		require.Equal(t, "tok", ev.Result)
		cancel()
	})
}

// ---------------------------------------------------------------------------
// GetAs.

// Pins: GetAs returns the value as a V (pointer, struct or interface type) with Get's meta.
func TestGetAs_TypedValue(t *testing.T) {
	t.Parallel()
	c, _ := embNew(t, nil)
	item := &ergoItem{Name: "web"}
	c.RegisterType("ptr", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: item, Index: 7}, nil
	}), nil)
	c.RegisterType("val", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: ergoOther{N: 3}, Index: 8}, nil
	}), nil)
	ctx := t.Context()
	req := RequestInfo{Key: "k"}

	p, meta, err := GetAs[*ergoItem](ctx, c, "ptr", req)
	require.NoError(t, err)
	require.Same(t, item, p)
	require.Equal(t, uint64(7), meta.Index)
	require.False(t, meta.Hit)

	s, meta, err := GetAs[fmt.Stringer](ctx, c, "ptr", req)
	require.NoError(t, err)
	require.Equal(t, "item web", s.String())
	require.True(t, meta.Hit)

	o, meta, err := GetAs[ergoOther](ctx, c, "val", req)
	require.NoError(t, err)
	require.Equal(t, ergoOther{N: 3}, o)
	require.Equal(t, uint64(8), meta.Index)
}

// Pins: a value that is not a V gives the zero V and an error naming both the value's type and V.
func TestGetAs_WrongType(t *testing.T) {
	t.Parallel()
	c, _ := embNew(t, nil)
	c.RegisterType("ptr", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: &ergoItem{Name: "web"}, Index: 7}, nil
	}), nil)
	c.RegisterType("str", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: "text", Index: 7}, nil
	}), nil)
	ctx := t.Context()
	req := RequestInfo{Key: "k"}

	o, _, err := GetAs[ergoOther](ctx, c, "ptr", req)
	require.Error(t, err)
	require.Zero(t, o)
	require.Contains(t, err.Error(), "*cache.ergoItem")
	require.Contains(t, err.Error(), "cache.ergoOther")

	n, _, err := GetAs[int](ctx, c, "str", req)
	require.Error(t, err)
	require.Zero(t, n)
	require.Contains(t, err.Error(), "string")
	require.Contains(t, err.Error(), "int")

	s, _, err := GetAs[fmt.Stringer](ctx, c, "str", req)
	require.Error(t, err)
	require.Nil(t, s)
	require.Contains(t, err.Error(), "string")
	require.Contains(t, err.Error(), "fmt.Stringer")
}

// Pins: with no value yet (RequestInfo.Timeout before the first fetch ends) GetAs returns the zero V, no error.
func TestGetAs_NoValueYet(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := embNew(t, nil)
		c.RegisterType("t", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			<-release
			return FetchResult{}, errors.New("released")
		}), nil)
		req := RequestInfo{Key: "k", Timeout: time.Second}
		start := time.Now()

		s := ergoGo(func() (string, ResultMeta, error) { return GetAs[string](t.Context(), c, "t", req) })
		p := ergoGo(func() (*ergoItem, ResultMeta, error) { return GetAs[*ergoItem](t.Context(), c, "t", req) })
		time.Sleep(time.Second)
		rs, rp := ergoReturned(t, s), ergoReturned(t, p)
		require.NoError(t, rs.Err)
		require.Equal(t, "", rs.Value)
		require.NoError(t, rp.Err)
		require.Nil(t, rp.Value)
		require.Equal(t, time.Second, rs.At.Sub(start))
	})
}

// Pins: GetAs returns ctx.Err() (zero V) when ctx ends while waiting, and a fetch error as is.
func TestGetAs_ContextAndFetchErrors(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := embNew(t, nil)
		c.RegisterType("slow", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			<-release
			return FetchResult{}, errors.New("released")
		}), nil)
		c.RegisterType("fail", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{}, errors.New("down")
		}), nil)
		req := RequestInfo{Key: "k"}

		ctx, cancel := context.WithCancel(t.Context())
		ch := ergoGo(func() (string, ResultMeta, error) { return GetAs[string](ctx, c, "slow", req) })
		ergoBlocked(t, ch)
		cancel()
		r := ergoReturned(t, ch)
		require.ErrorIs(t, r.Err, context.Canceled)
		require.Equal(t, "", r.Value)

		dctx, dcancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer dcancel()
		start := time.Now()
		v, _, err := GetAs[string](dctx, c, "slow", req)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, "", v)
		require.Equal(t, 3*time.Second, time.Since(start))

		v, _, err = GetAs[string](t.Context(), c, "fail", req)
		require.EqualError(t, err, "down")
		require.Equal(t, "", v)
	})
}

// ---------------------------------------------------------------------------
// GetContext.

// Pins: GetContext returns ctx.Err() on cancel while waiting; the fetch goes on and serves the other waiters.
func TestGetContext_CancelWhileWaiting(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := embNew(t, nil)
		gate := make(chan struct{})
		var calls embCalls
		c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			calls.add(o, r)
			<-gate
			return FetchResult{Value: "v", Index: 4}, nil
		}), nil)
		req := RequestInfo{Key: "k"}

		ctx, cancel := context.WithCancel(t.Context())
		withCtx := ergoGo(func() (any, ResultMeta, error) { return c.GetContext(ctx, "t", req) })
		plain := cacheGoGet(c, "t", req)
		ergoBlocked(t, withCtx)
		cacheRequireBlocked(t, plain)

		cancel()
		r := ergoReturned(t, withCtx)
		require.ErrorIs(t, r.Err, context.Canceled)
		require.Nil(t, r.Value)
		cacheRequireBlocked(t, plain)

		close(gate)
		p := cacheRequireReturned(t, plain)
		require.NoError(t, p.Err)
		require.Equal(t, "v", p.Value)
		require.Equal(t, 1, calls.count(), "the cancelled Get's fetch served the other")
	})
}

// Pins: ctx deadline first gives last value + ctx.Err(); RequestInfo.Timeout first gives last value, no error.
func TestGetContext_DeadlineAndTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := embNew(t, nil)
		b := newNotifyBackend(t, "v5", 5)
		c.RegisterType("t", b, &RegisterOptions{RefreshTimeout: 10 * time.Minute})
		v, _, err := c.Get("t", RequestInfo{Key: "k"})
		require.NoError(t, err)
		require.Equal(t, "v5", v)

		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		start := time.Now()
		v, meta, err := c.GetContext(ctx, "t", RequestInfo{Key: "k", MinIndex: 5, Timeout: time.Minute})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, "v5", v)
		require.Equal(t, uint64(5), meta.Index)
		require.Equal(t, 3*time.Second, time.Since(start))

		ctx, cancel = context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		start = time.Now()
		v, meta, err = c.GetContext(ctx, "t", RequestInfo{Key: "k", MinIndex: 5, Timeout: 2 * time.Second})
		require.NoError(t, err)
		require.Equal(t, "v5", v)
		require.Equal(t, uint64(5), meta.Index)
		require.Equal(t, 2*time.Second, time.Since(start))
	})
}
