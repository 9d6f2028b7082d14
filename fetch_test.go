package cache

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// Pins: all waiters of a panicking fetch get an error naming the type and quoting the value; fetching goes on.
func TestEmbedding_PanicBecomesErrorForWaiters(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, nil)
		gate := make(chan struct{})
		var calls fetchLog
		c.RegisterType("panic_t", FetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			if calls.add(o, r) == 1 {
				<-gate
				panic(fmt.Errorf("index out of range [%d]", 42))
			}
			return FetchResult{Value: "v", Index: 3}, nil
		}), nil)

		req := RequestInfo{Key: "k"}
		var chs []<-chan getResult
		for range 3 {
			chs = append(chs, goGet(c, "panic_t", req))
		}
		for _, ch := range chs {
			requireBlocked(t, ch)
		}
		close(gate)
		for _, ch := range chs {
			r := requireReturned(t, ch)
			require.Error(t, r.Err)
			require.Nil(t, r.Value)
			require.Contains(t, r.Err.Error(), "panic_t")
			require.Contains(t, r.Err.Error(), "index out of range [42]")
		}
		require.Equal(t, 1, calls.count(), "the waiters shared the fetch")

		v, _, err := c.Get("panic_t", req)
		require.NoError(t, err)
		require.Equal(t, "v", v)
		require.Equal(t, 2, calls.count())
	})
}

// Pins: a panic counts fetch_error and fetch_panic, overall and per type; a plain error no fetch_panic (not parallel).
func TestEmbedding_PanicMetrics(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, nil)
		c.RegisterType("panic_m", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			panic(42)
		}), nil)
		c.RegisterType("error_m", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{}, errors.New("down")
		}), nil)
		for range 2 {
			_, _, err := c.Get("panic_m", RequestInfo{Key: "k"})
			require.ErrorContains(t, err, "42")
		}
		_, _, err := c.Get("error_m", RequestInfo{Key: "k"})
		require.EqualError(t, err, "down")

		for name, want := range map[string]int{
			"consul.cache.fetch_error":         3,
			"consul.cache.panic_m.fetch_error": 2,
			"consul.cache.error_m.fetch_error": 1,
			"consul.cache.fetch_panic":         2,
			"consul.cache.panic_m.fetch_panic": 2,
			"consul.cache.error_m.fetch_panic": 0,
			"consul.cache.fetch_success":       0,
		} {
			require.Equal(t, want, sinkCounter(sink, name), name)
		}
	})
}

// Pins: a refresh loop whose Fetch keeps panicking backs off as usual (0,0,0, 2-4s, 4-8s, 8-16s).
func TestEmbedding_PanicRefreshBacksOff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, nil)
		var calls fetchLog
		c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			calls.add(o, r)
			panic("boom")
		}), &RegisterOptions{Refresh: true})
		_, _, err := c.Get("t", RequestInfo{Key: "k"})
		require.ErrorContains(t, err, "boom")

		time.Sleep(time.Minute)
		s := time.Second
		requireGaps(t, calls.startTimes(),
			[]time.Duration{0, 0, 0, 2 * s, 4 * s, 8 * s},
			[]time.Duration{0, 0, 0, 4 * s, 8 * s, 16 * s})
	})
}

// Pins: a Fetch calling runtime.Goexit releases all waiters with an error naming the type; the next Get refetches.
func TestEmbedding_GoexitReleasesWaiters(t *testing.T) {
	t.Parallel()
	for _, refresh := range []bool{false, true} {
		t.Run(fmt.Sprint("refresh=", refresh), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c, release := newCache(t, nil)
				gate := make(chan struct{})
				var calls fetchLog
				c.RegisterType("exit_t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
					if calls.add(o, r) == 1 {
						<-gate
						runtime.Goexit()
					}
					if o.MinIndex > 0 {
						<-release // a blocking refresh: nothing new until the test ends
						return FetchResult{}, nil
					}
					return FetchResult{Value: "v", Index: 3}, nil
				}), &RegisterOptions{Refresh: refresh})

				req := RequestInfo{Key: "k"}
				ch1, ch2 := goGet(c, "exit_t", req), goGet(c, "exit_t", req)
				requireBlocked(t, ch1)
				requireBlocked(t, ch2)
				close(gate)
				for _, ch := range []<-chan getResult{ch1, ch2} {
					r := requireReturned(t, ch)
					require.Error(t, r.Err)
					require.Contains(t, r.Err.Error(), "exit_t")
				}
				require.Equal(t, 1, calls.count())

				v, _, err := c.Get("exit_t", req)
				require.NoError(t, err)
				require.Equal(t, "v", v)
			})
		})
	}
}

// Pins: an entry whose only fetch called runtime.Goexit still expires after LastGetTTL.
func TestEmbedding_GoexitEntryExpires(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, nil)
		c.RegisterType("exit_t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			runtime.Goexit()
			return FetchResult{}, nil
		}), &RegisterOptions{LastGetTTL: time.Minute})
		_, _, err := c.Get("exit_t", RequestInfo{Key: "k"})
		require.Error(t, err)
		require.Equal(t, int64(1), c.count.Load())

		time.Sleep(time.Hour)
		synctest.Wait()
		require.Nil(t, c.lookupKey("exit_t", "", "", "k"), "entry not evicted")
		require.Zero(t, c.count.Load())
	})
}

// Pins: a panic in a bypass Get's Fetch (empty Key) also becomes an error naming the type and the value.
func TestEmbedding_BypassPanicBecomesError(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t, nil)
	c.RegisterType("panic_b", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		panic("boom")
	}), nil)

	var err error
	require.NotPanics(t, func() { _, _, err = c.Get("panic_b", RequestInfo{}) })
	require.Error(t, err)
	require.Contains(t, err.Error(), "panic_b")
	require.Contains(t, err.Error(), "boom")
}
