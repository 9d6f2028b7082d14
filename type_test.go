package cache

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// Pins: FetchFunc is non-blocking: gets the request, never MinIndex/Timeout, and a Get's MinIndex does not block.
func TestFetchFunc_IsNonBlockingType(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var calls fetchLog
		f := FetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			n := calls.add(o, r)
			return FetchResult{Value: n, Index: uint64(10 * n)}, nil
		})
		var typ Type = f
		require.False(t, typ.SupportsBlocking())

		c, _ := newCache(t, nil)
		c.RegisterType("t", f, &RegisterOptions{Refresh: true, RefreshTimer: 10 * time.Second, RefreshTimeout: time.Minute})
		req := RequestInfo{Key: "k", Datacenter: "dc1", MinIndex: 50}
		ch := goCall(func() (any, ResultMeta, error) { return c.Get("t", req) })
		r := requireReturned(t, ch)
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
		c, _ := newCache(t, nil)
		c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{Value: val.Load(), Index: 1}, nil
		}), nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var got eventLog
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
		b := newBlockingBackend(t, "v1", 5)
		var calls fetchLog
		f := BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			calls.add(o, r)
			return b.Fetch(o, r)
		})
		var typ Type = f
		require.True(t, typ.SupportsBlocking())

		c, _ := newCache(t, nil)
		c.RegisterType("t", f, &RegisterOptions{RefreshTimeout: 10 * time.Minute})
		v, meta, err := c.Get("t", RequestInfo{Key: "k"})
		require.NoError(t, err)
		require.Equal(t, "v1", v)
		require.Equal(t, uint64(5), meta.Index)

		ch := goCall(func() (any, ResultMeta, error) {
			return c.Get("t", RequestInfo{Key: "k", MinIndex: 5})
		})
		requireBlocked(t, ch)
		require.Equal(t, 2, calls.count())
		require.Equal(t, uint64(0), calls.opt(0).MinIndex)
		require.Equal(t, uint64(5), calls.opt(1).MinIndex)
		require.Equal(t, 10*time.Minute, calls.opt(1).Timeout)

		b.set("v2", 6)
		r := requireReturned(t, ch)
		require.NoError(t, r.Err)
		require.Equal(t, "v2", r.Value)
		require.Equal(t, uint64(6), r.Meta.Index)
	})
}
