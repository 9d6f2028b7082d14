package cache

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	"github.com/stretchr/testify/require"
)

// The defects of this file were found by trying the cache as a new user
// would, against Consul v1.4.5's documented behaviour. Each test fails
// without its fix.

// TestRegression_CloseLetsGetsInFlightFinish pins the seed's promise for
// Close: fetches in flight run to completion and the Gets waiting on them
// get their result. A Get waiting for a value it does not have (a first
// fetch, a retry after an error, a revalidation) gets the result of the
// fetch it waits on, whose context Close does not cancel; its own Timeout
// still applies. Fetches nobody needs (a background refresh, a Notify
// watch's) are cancelled, and nothing new starts.
//
// Close used to wake every waiting Get with ErrClosed and cancel every
// fetch, though the fetch then returned a value.
func TestRegression_CloseLetsGetsInFlightFinish(t *testing.T) {
	t.Parallel()
	// ctxType fetches "v" once gate is closed, or fails with its context.
	ctxType := func(gate <-chan struct{}, cancelled *atomic.Int32) regContextType {
		return regContextType{fetch: func(ctx context.Context, o FetchOptions, _ Request) (FetchResult, error) {
			select {
			case <-gate:
				return FetchResult{Value: "v", Index: o.MinIndex + 1}, nil
			case <-ctx.Done():
				cancelled.Add(1)
				return FetchResult{}, ctx.Err()
			}
		}}
	}

	t.Run("FirstFetch", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := cacheBubble(t)
			gate := make(chan struct{})
			var cancelled atomic.Int32
			c.RegisterType("t", ctxType(gate, &cancelled), nil)
			plain := cacheGoGet(c, "t", RequestInfo{Key: "k"})
			timed := cacheGoGet(c, "t", RequestInfo{Key: "k", Timeout: time.Minute})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			withCtx := regGoGetContext(ctx, c, "t", RequestInfo{Key: "k"})
			cacheRequireBlocked(t, plain)
			cacheRequireBlocked(t, timed)
			cacheRequireBlocked(t, withCtx)

			require.NoError(t, c.Close())
			cacheRequireBlocked(t, plain)
			cacheRequireBlocked(t, timed)
			cacheRequireBlocked(t, withCtx)
			v, _, err := c.Get("t", RequestInfo{Key: "other"})
			require.ErrorIs(t, err, ErrClosed, "nothing new starts")
			require.Nil(t, v)

			close(gate)
			for _, ch := range []<-chan cacheGetResult{plain, timed, withCtx} {
				r := cacheRequireReturned(t, ch)
				require.NoError(t, r.Err)
				require.Equal(t, "v", r.Value)
			}
			require.Zero(t, cancelled.Load(), "Close cancelled a fetch that Gets wait on")
			v, meta, err := c.Get("t", RequestInfo{Key: "k"})
			require.NoError(t, err, "values stay readable")
			require.Equal(t, "v", v)
			require.True(t, meta.Hit)
		})
	})

	t.Run("TimeoutStillApplies", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := cacheBubble(t)
			var cancelled atomic.Int32
			c.RegisterType("t", ctxType(release, &cancelled), nil)
			timed := cacheGoGet(c, "t", RequestInfo{Key: "k", Timeout: time.Minute})
			cacheRequireBlocked(t, timed)
			require.NoError(t, c.Close())
			start := time.Now()
			r := <-timed
			require.Equal(t, time.Minute, time.Since(start))
			require.NoError(t, r.Err, "a Get that times out returns no error")
			require.Nil(t, r.Value)
			synctest.Wait()
			require.Equal(t, int32(1), cancelled.Load(), "once nobody waits, the fetch is cancelled")
		})
	})

	t.Run("RetryAfterError", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := cacheBubble(t)
			gate := make(chan struct{})
			var calls atomic.Int32
			c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				if calls.Add(1) == 1 {
					return FetchResult{}, errors.New("down")
				}
				<-gate
				return FetchResult{Value: "v", Index: 2}, nil
			}), nil)
			_, _, err := c.Get("t", RequestInfo{Key: "k"})
			require.EqualError(t, err, "down")
			retry := cacheGoGet(c, "t", RequestInfo{Key: "k"})
			cacheRequireBlocked(t, retry)
			require.NoError(t, c.Close())
			cacheRequireBlocked(t, retry)
			close(gate)
			r := cacheRequireReturned(t, retry)
			require.NoError(t, r.Err)
			require.Equal(t, "v", r.Value)
		})
	})

	t.Run("Revalidation", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := cacheBubble(t)
			gate := make(chan struct{})
			var calls atomic.Int32
			c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				if calls.Add(1) > 1 {
					<-gate
				}
				return FetchResult{Value: calls.Load(), Index: uint64(calls.Load())}, nil
			}), nil)
			cacheGet(t, c, "t", RequestInfo{Key: "k"})
			time.Sleep(time.Minute)
			fresh := cacheGoGet(c, "t", RequestInfo{Key: "k", MaxAge: time.Second})
			cacheRequireBlocked(t, fresh)
			require.NoError(t, c.Close())
			cacheRequireBlocked(t, fresh)
			close(gate)
			r := cacheRequireReturned(t, fresh)
			require.NoError(t, r.Err)
			require.Equal(t, int32(2), r.Value)
		})
	})

	// A Get waiting for a change returns ErrClosed, whichever it sees
	// first: Close's wake-up or the error its cancelled fetch stored.
	t.Run("ChangeWaiterGetsErrClosed", func(t *testing.T) {
		for range 50 {
			synctest.Test(t, func(t *testing.T) {
				c, _ := cacheBubble(t)
				c.RegisterType("t", regContextType{blocking: true, fetch: func(ctx context.Context, o FetchOptions, _ Request) (FetchResult, error) {
					if o.MinIndex == 0 {
						return FetchResult{Value: "v", Index: 1}, nil
					}
					<-ctx.Done()
					return FetchResult{}, ctx.Err()
				}}, nil)
				cacheGet(t, c, "t", RequestInfo{Key: "k"})
				change := cacheGoGet(c, "t", RequestInfo{Key: "k", MinIndex: 1})
				cacheRequireBlocked(t, change)
				require.NoError(t, c.Close())
				r := cacheRequireReturned(t, change)
				require.ErrorIs(t, r.Err, ErrClosed)
				require.Equal(t, "v", r.Value)
			})
		}
	})

	t.Run("UnneededFetchesCancelled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := cacheBubble(t)
			var cancelled atomic.Int32
			refreshed := ctxType(release, &cancelled)
			first := true
			c.RegisterType("t", regContextType{blocking: true, fetch: func(ctx context.Context, o FetchOptions, r Request) (FetchResult, error) {
				if first {
					first = false
					return FetchResult{Value: "v", Index: 1}, nil
				}
				return refreshed.fetch(ctx, o, r)
			}}, &RegisterOptions{Refresh: true})
			cacheGet(t, c, "t", RequestInfo{Key: "k"})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch := make(chan UpdateEvent, 4)
			require.NoError(t, c.Notify(ctx, "t", RequestInfo{Key: "k"}, "id", ch))
			require.Equal(t, "v", notifyRecv(t, ch, time.Second).Result)
			synctest.Wait()
			require.Zero(t, cancelled.Load())

			require.NoError(t, c.Close())
			synctest.Wait()
			require.Equal(t, int32(1), cancelled.Load(), "the refresh (and the watch's wait on it) was cancelled")
			require.Zero(t, regWatches(t), "the watch ended")
		})
	})
}

// TestRegression_EmptyResultsBackOff pins that a Fetch returning
// FetchResult{} and no error (no value, no index) makes a waiting Get back
// off like a failing refresh, instead of fetching again at once: a handful
// of fetches before its Timeout, and, without a Timeout, a back-off that
// keeps growing rather than a core kept busy.
//
// Each new loop used to start its attempt count at 0: 215 fetches in
// 500 ms for a blocking Get on an existing value, 13,610 in 100 ms for a
// new key.
func TestRegression_EmptyResultsBackOff(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T, blocking bool) (*Cache, *atomic.Int32) {
		c, _ := cacheBubble(t)
		var calls atomic.Int32
		fetch := func(o FetchOptions, _ Request) (FetchResult, error) {
			time.Sleep(2 * time.Millisecond)
			if calls.Add(1) == 1 && blocking {
				return FetchResult{Value: "v", Index: 5}, nil
			}
			return FetchResult{}, nil
		}
		if blocking {
			c.RegisterType("t", BlockingFetchFunc(fetch), nil)
		} else {
			c.RegisterType("t", FetchFunc(fetch), nil)
		}
		return c, &calls
	}

	t.Run("BlockingGetOnValue", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, calls := setup(t, true)
			cacheGet(t, c, "t", RequestInfo{Key: "k"})
			v, meta, err := c.Get("t", RequestInfo{Key: "k", MinIndex: 5, Timeout: 500 * time.Millisecond})
			require.NoError(t, err)
			require.Equal(t, "v", v)
			require.Equal(t, uint64(5), meta.Index)
			require.LessOrEqual(t, calls.Load(), int32(1+CacheRefreshBackoffMin+1))
		})
	})

	t.Run("NewKey", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, calls := setup(t, false)
			v, _, err := c.Get("t", RequestInfo{Key: "k", Timeout: 100 * time.Millisecond})
			require.NoError(t, err)
			require.Nil(t, v)
			require.LessOrEqual(t, calls.Load(), int32(CacheRefreshBackoffMin+1))
		})
	})

	t.Run("NoTimeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, calls := setup(t, false)
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			v, _, err := c.GetContext(ctx, "t", RequestInfo{Key: "k"})
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Nil(t, v)
			// 3 at once, then waits of 2 s, 4 s, ... up to 1-2 minutes:
			// about 40 in an hour.
			require.Less(t, calls.Load(), int32(80))
		})
	})
}

// TestRegression_StoppedRefreshNoErrorToPlainGet pins the seed's rule for
// a Get without MinIndex that finds a valid value: it gets the value and
// no error, whatever the fetches that ended meanwhile returned, here a
// StopRefresh that ended the background refresh.
//
// A Get woken by the first fetch of a refreshing type returned the value
// and the terminal error when the loop had run ahead (a NotModified
// refresh, then StopRefresh) before it looked; and a Get that restarted a
// stopped refresh returned the value with the error of that fetch.
func TestRegression_StoppedRefreshNoErrorToPlainGet(t *testing.T) {
	t.Parallel()
	terminal := StopRefresh(errors.New("token deleted"))

	t.Run("LoopRanAhead", func(t *testing.T) {
		for range 50 {
			synctest.Test(t, func(t *testing.T) {
				c, _ := cacheBubble(t)
				var calls atomic.Int32
				c.RegisterType("t", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
					switch calls.Add(1) {
					case 1:
						return FetchResult{Value: "v", Index: 1}, nil
					case 2:
						return FetchResult{NotModified: true, Index: 1}, nil
					}
					return FetchResult{}, terminal
				}), &RegisterOptions{Refresh: true})
				v, _, err := c.Get("t", RequestInfo{Key: "k"})
				require.NoError(t, err)
				require.Equal(t, "v", v)
			})
		}
	})

	t.Run("Restart", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := cacheBubble(t)
			var calls atomic.Int32
			c.RegisterType("t", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				if calls.Add(1) == 1 {
					return FetchResult{Value: "v", Index: 1}, nil
				}
				return FetchResult{}, terminal
			}), &RegisterOptions{Refresh: true})
			cacheGet(t, c, "t", RequestInfo{Key: "k"})
			synctest.Wait()
			require.Equal(t, int32(2), calls.Load(), "the refresh stopped")

			v, meta, err := c.Get("t", RequestInfo{Key: "k"})
			require.NoError(t, err)
			require.Equal(t, "v", v)
			require.False(t, meta.Hit, "the Get fetched again")
			require.Equal(t, int32(3), calls.Load())
			_, _, err = c.Get("t", RequestInfo{Key: "k", MinIndex: 1})
			require.ErrorIs(t, err, terminal, "a Get waiting for something newer gets the error")
		})
	})
}

// TestRegression_RefreshWithoutLoop pins that an entry of a refreshing type
// that no background refresh keeps current is refreshed from its next Get
// on, with the age of its value meanwhile: a type registered again with
// Refresh, and an entry whose refresh loop ended in runtime.Goexit.
//
// Such entries were served as fresh forever: no loop was started, Age read
// 0 and every hit extended their TTL.
func TestRegression_RefreshWithoutLoop(t *testing.T) {
	t.Parallel()

	t.Run("ReRegistered", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := cacheBubble(t)
			var index atomic.Uint64
			index.Store(1)
			typ := BlockingFetchFunc(func(o FetchOptions, _ Request) (FetchResult, error) {
				if o.MinIndex >= index.Load() {
					select { // a blocking query with no change
					case <-time.After(time.Hour):
					case <-release:
					}
				}
				return FetchResult{Value: index.Load(), Index: index.Load()}, nil
			})
			c.RegisterType("t", typ, nil)
			cacheGet(t, c, "t", RequestInfo{Key: "k"})
			time.Sleep(time.Minute)
			c.RegisterType("t", typ, &RegisterOptions{Refresh: true, RefreshTimeout: time.Hour})

			_, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, ResultMeta{Hit: true, Index: 1, Age: time.Minute}, meta, "not refreshed: the value's age")
			synctest.Wait() // the refresh blocks on index 1
			index.Store(2)
			time.Sleep(2 * time.Hour)
			v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, uint64(2), v, "refreshed in the background since the last Get")
			require.Equal(t, ResultMeta{Hit: true, Index: 2}, meta)
		})
	})

	t.Run("LoopExited", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := cacheBubble(t)
			var calls atomic.Int32
			c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, _ Request) (FetchResult, error) {
				switch calls.Add(1) {
				case 1:
					return FetchResult{Value: "v1", Index: 1}, nil
				case 2:
					runtime.Goexit()
				}
				time.Sleep(time.Second)
				return FetchResult{Value: "v3", Index: 3}, nil
			}), &RegisterOptions{Refresh: true, RefreshTimer: time.Minute})
			cacheGet(t, c, "t", RequestInfo{Key: "k"})
			time.Sleep(2 * time.Minute)
			require.Equal(t, int32(2), calls.Load(), "the refresh exited")

			_, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
			require.True(t, meta.Hit)
			require.Equal(t, 2*time.Minute, meta.Age, "not refreshed: the value's age")
			time.Sleep(2 * time.Second)
			v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, "v3", v, "the hit restarted the refresh")
			require.Equal(t, ResultMeta{Hit: true, Index: 3}, meta)
		})
	})
}

// TestRegression_FirstValueReleased pins that an entry's first value is
// garbage once a refresh replaced it.
//
// The first result lived inside the entry's own allocation, so an entry
// held its first value (and State) as long as it lived, beside the current
// one.
func TestRegression_FirstValueReleased(t *testing.T) {
	c := TestCache(t)
	var calls atomic.Int32
	firstValue := make(chan weak.Pointer[[]byte], 1)
	c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, _ Request) (FetchResult, error) {
		n := calls.Add(1)
		if n > 4 {
			<-t.Context().Done() // no more refreshes
			return FetchResult{}, t.Context().Err()
		}
		v := make([]byte, 1<<20)
		if n == 1 {
			firstValue <- weak.Make(&v)
		}
		return FetchResult{Value: &v, State: &v, Index: uint64(n)}, nil
	}), &RegisterOptions{Refresh: true})
	cacheGet(t, c, "t", RequestInfo{Key: "k"})
	wp := <-firstValue
	require.Eventually(t, func() bool { return calls.Load() == 5 }, 10*time.Second, time.Millisecond)
	require.Eventually(t, func() bool {
		runtime.GC()
		return wp.Value() == nil
	}, 10*time.Second, 10*time.Millisecond, "the first value is still reachable after three refreshes")
}

// TestRegression_FetchContextIsReal pins that contexts a ContextType
// derives from its fetch's context cost no goroutine each.
//
// The fetch context was a type of the cache's own, which the context
// package can only watch from a goroutine per derived context: 100
// derived contexts, 100 goroutines.
func TestRegression_FetchContextIsReal(t *testing.T) {
	c := TestCache(t)
	during := make(chan int, 1)
	c.RegisterType("t", regContextType{fetch: func(ctx context.Context, _ FetchOptions, _ Request) (FetchResult, error) {
		before := runtime.NumGoroutine()
		var cancels []context.CancelFunc
		for range 100 {
			_, cancel := context.WithTimeout(ctx, time.Hour)
			cancels = append(cancels, cancel)
		}
		during <- runtime.NumGoroutine() - before
		for _, cancel := range cancels {
			cancel()
		}
		return FetchResult{Value: "v", Index: 1}, nil
	}}, nil)
	cacheGet(t, c, "t", RequestInfo{Key: "k"})
	require.LessOrEqual(t, <-during, 5, "goroutines started by 100 derived contexts")
}

// TestRegression_NilContext pins that the exported functions that take a
// context reject a nil one with an error, at once.
//
// GetContext panicked on a miss, and Notify returned nil, then crashed the
// process from the watch's goroutine.
func TestRegression_NilContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var calls atomic.Int32
		c.RegisterType("t", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			calls.Add(1)
			return FetchResult{Value: "v", Index: 1}, nil
		}), nil)
		var nilCtx context.Context
		_, _, err := c.GetContext(nilCtx, "t", RequestInfo{Key: "k"})
		require.ErrorContains(t, err, "nil context")
		_, _, err = GetAs[string](nilCtx, c, "t", RequestInfo{Key: "k"})
		require.ErrorContains(t, err, "nil context")
		ch := make(chan UpdateEvent, 1)
		require.ErrorContains(t, c.Notify(nilCtx, "t", RequestInfo{Key: "k"}, "id", ch), "nil context")
		require.ErrorContains(t, c.NotifyCallback(nilCtx, "t", RequestInfo{Key: "k"}, "id",
			func(context.Context, UpdateEvent) {}), "nil context")
		synctest.Wait()
		require.Zero(t, calls.Load(), "nothing was fetched")
		require.Zero(t, regWatches(t), "no watch started")
	})
}
