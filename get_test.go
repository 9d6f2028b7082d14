package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
)

// ---------------------------------------------------------------------------
// Bypass and unknown types.

// Pins: an empty Key bypasses the cache: each Get calls Fetch with only the
// request's MinIndex, nothing is stored, bypass is counted, errors pass through.
func TestCacheGet_bypassEmptyKey(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	c := TestCache(t)
	typ := TestType(t)
	var log fetchLog
	log.on(typ, nil, FetchResult{Value: 42, State: "s", Index: 7}, nil).Twice()
	log.on(typ, nil, FetchResult{Value: 43, Index: 8}, errors.New("boom")).Once()
	c.RegisterType("bypass_t", typ, &RegisterOptions{Refresh: true, RefreshTimeout: 5 * time.Minute})
	req := TestRequest(t, RequestInfo{Datacenter: "dc1", Token: "tok", MinIndex: 3, Timeout: time.Second})

	for i := 0; i < 2; i++ {
		v, meta, err := c.Get("bypass_t", req)
		require.NoError(t, err)
		require.Equal(t, 42, v)
		require.Equal(t, ResultMeta{}, meta)
	}
	v, meta, err := c.Get("bypass_t", req)
	require.EqualError(t, err, "boom")
	require.Nil(t, v)
	require.Equal(t, ResultMeta{}, meta)

	require.Equal(t, 3, log.count(), "every bypass Get is its own Fetch")
	for i := 0; i < 3; i++ {
		require.Equal(t, FetchOptions{MinIndex: 3}, log.opt(i))
	}
	require.Equal(t, int64(0), c.count.Load(), "nothing is stored")
	require.Equal(t, 3, sinkCounter(sink, "consul.cache.bypass"))
	require.Equal(t, 0, sinkCounter(sink, "consul.cache.bypass_t.miss_new"))
	require.Equal(t, 0, sinkCounter(sink, "consul.cache.bypass_t.fetch_success"))
	typ.AssertExpectations(t)
}

// Pins: Get of an unregistered type fails with "unknown type in cache: <t>",
// with or without a Key.
func TestCacheGet_unknownType(t *testing.T) {
	t.Parallel()
	c := New(&Options{})
	defer c.Close()
	c.RegisterType("known", TestType(t), nil)
	for _, key := range []string{"k", ""} {
		v, meta, err := c.Get("unknown", TestRequest(t, RequestInfo{Key: key}))
		require.EqualError(t, err, "unknown type in cache: unknown")
		require.Nil(t, v)
		require.Equal(t, ResultMeta{}, meta)
	}
}

// ---------------------------------------------------------------------------
// Coalescing, blocking, timeouts and errors.

// Pins: concurrent Gets of a missing entry share one Fetch and all get its value.
func TestCacheGet_coalesce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		gate := make(chan time.Time)
		var fetches atomic.Int32
		typ := TestType(t)
		typ.Static(FetchResult{Value: "v", Index: 3}, nil).WaitUntil(gate).Run(func(mock.Arguments) { fetches.Add(1) })
		c.RegisterType("t", typ, nil)
		req := TestRequest(t, RequestInfo{Key: "k"})

		var chs []<-chan getResult
		for i := 0; i < 10; i++ {
			chs = append(chs, goGet(c, "t", req))
		}
		for _, ch := range chs {
			requireBlocked(t, ch)
		}
		close(gate)
		for _, ch := range chs {
			r := requireReturned(t, ch)
			require.NoError(t, r.Err)
			require.Equal(t, "v", r.Value)
			require.Equal(t, ResultMeta{Index: 3}, r.Meta, "waited: not a hit")
		}
		require.Equal(t, int32(1), fetches.Load())
	})
}

// Pins: concurrent Gets that share a failing Fetch all get its error.
func TestCacheGet_coalesceError(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		gate := make(chan time.Time)
		var fetches atomic.Int32
		typ := TestType(t)
		typ.Static(FetchResult{}, errors.New("down")).WaitUntil(gate).Run(func(mock.Arguments) { fetches.Add(1) })
		c.RegisterType("t", typ, nil)
		req := TestRequest(t, RequestInfo{Key: "k"})

		var chs []<-chan getResult
		for i := 0; i < 5; i++ {
			chs = append(chs, goGet(c, "t", req))
		}
		synctest.Wait()
		close(gate)
		for _, ch := range chs {
			r := requireReturned(t, ch)
			require.EqualError(t, r.Err, "down")
			require.Nil(t, r.Value)
		}
		require.Equal(t, int32(1), fetches.Load())
	})
}

// Pins: for a blocking type a Get with MinIndex >= the cached index waits for
// a greater index (an unchanged index keeps it waiting); a lower MinIndex hits.
func TestCacheGet_blockingMinIndex(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		gate := make(chan struct{})
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, waitingFor(gate), FetchResult{Value: "v5", Index: 5}, nil).Once() // blocking query timed out
		log.on(typ, nil, FetchResult{Value: "v9", Index: 9}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v11", Index: 11}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v13", Index: 13}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, nil)

		v, _ := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v5", v)
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 4})
		require.Equal(t, "v5", v)
		require.Equal(t, ResultMeta{Hit: true, Index: 5}, meta)

		ch := goGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 5}))
		requireBlocked(t, ch)
		require.Equal(t, 2, log.count())
		require.Equal(t, uint64(5), log.opt(1).MinIndex)
		close(gate)
		r := requireReturned(t, ch)
		require.NoError(t, r.Err)
		require.Equal(t, "v9", r.Value)
		require.Equal(t, ResultMeta{Index: 9}, r.Meta)
		require.Equal(t, 3, log.count(), "the unchanged index made it fetch again")
		require.Equal(t, uint64(5), log.opt(2).MinIndex)

		// MinIndex above anything fetched so far: wait past 11 for 13.
		v, meta = requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 12})
		require.Equal(t, "v13", v)
		require.Equal(t, ResultMeta{Index: 13}, meta)
		require.Equal(t, uint64(9), log.opt(3).MinIndex)
		require.Equal(t, uint64(11), log.opt(4).MinIndex)
		require.Equal(t, 5, log.count())
	})
}

// Pins: non-blocking types ignore MinIndex: a cached value is a hit whatever
// the MinIndex, and their Fetch gets neither MinIndex nor Timeout.
func TestCacheGet_nonBlockingIgnoresMinIndex(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestTypeNonBlocking(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v", Index: 5}, nil)
		c.RegisterType("t", typ, &RegisterOptions{RefreshTimeout: time.Minute})

		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 10})
		require.Equal(t, "v", v)
		require.Equal(t, ResultMeta{Index: 5}, meta)
		require.Equal(t, FetchOptions{}, log.opt(0))
		for _, min := range []uint64{5, 100} {
			v, meta = requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: min})
			require.Equal(t, "v", v)
			require.True(t, meta.Hit)
		}
		require.Equal(t, 1, log.count())
	})
}

// Pins: when a Get's Timeout passes it returns the last value and index with
// no error; the fetch goes on and a later Get joins it.
func TestCacheGet_timeoutReturnsLastValue(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, nil)
		requireGet(t, c, "t", RequestInfo{Key: "k"})

		start := time.Now()
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 5, Timeout: 3 * time.Second})
		require.Equal(t, 3*time.Second, time.Since(start))
		require.Equal(t, "v5", v)
		require.Equal(t, ResultMeta{Index: 5}, meta)

		v, meta = requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 5, Timeout: time.Second})
		require.Equal(t, "v5", v)
		require.Equal(t, ResultMeta{Index: 5}, meta)
		require.Equal(t, 2, log.count(), "the second Get joined the running fetch")
	})
}

// Pins: a Get of a brand-new entry whose fetch hangs returns nil, a zero
// ResultMeta and no error at its Timeout; the value lands in the cache later.
func TestCacheGet_timeoutNewEntryReturnsNil(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		gate := make(chan struct{})
		typ := TestType(t)
		var log fetchLog
		log.on(typ, waitingFor(gate), FetchResult{Value: "v", Index: 5}, nil)
		c.RegisterType("t", typ, nil)

		start := time.Now()
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k", Timeout: 2 * time.Second})
		require.Equal(t, 2*time.Second, time.Since(start))
		require.Nil(t, v)
		require.Equal(t, ResultMeta{}, meta)

		close(gate)
		synctest.Wait()
		v, meta = requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v", v)
		require.Equal(t, ResultMeta{Hit: true, Index: 5}, meta)
		require.Equal(t, 1, log.count())
	})
}

// Pins: a fetch error reaches the Gets that waited for that fetch (with the
// older value beside it); a Get that can be served from the cache gets the
// value and no error.
func TestCacheGet_errorOnlyToWaiters(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{}, errors.New("e1")).Once()
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("e2")).Once()
		log.on(typ, nil, FetchResult{Value: "v6", Index: 6}, nil)
		c.RegisterType("t", typ, nil)
		req := func(min uint64) Request { return TestRequest(t, RequestInfo{Key: "k", MinIndex: min}) }

		v, meta, err := c.Get("t", req(0))
		require.EqualError(t, err, "e1")
		require.Nil(t, v)
		require.Equal(t, ResultMeta{}, meta)

		v, meta, err = c.Get("t", req(0))
		require.NoError(t, err, "a new fetch replaced the error")
		require.Equal(t, "v5", v)
		require.Equal(t, ResultMeta{Index: 5}, meta)

		v, meta, err = c.Get("t", req(5))
		require.EqualError(t, err, "e2")
		require.Equal(t, "v5", v)
		require.Equal(t, ResultMeta{Index: 5}, meta)

		for _, min := range []uint64{0, 4} {
			v, meta, err = c.Get("t", req(min))
			require.NoError(t, err, "no waiting, no error")
			require.Equal(t, "v5", v)
			require.Equal(t, ResultMeta{Hit: true, Index: 5}, meta)
		}
		require.Equal(t, 3, log.count())
	})
}

// Pins Consul #4480: a successful fetch clears an earlier error, so a
// blocking Get that sees the index unchanged keeps waiting instead of
// returning that stale error.
func TestCacheGet_errorDoesNotStick(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("e")).Once()
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once() // timed out, no change
		log.on(typ, nil, FetchResult{Value: "v6", Index: 6}, nil)
		c.RegisterType("t", typ, nil)

		requireGet(t, c, "t", RequestInfo{Key: "k"})
		_, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 5}))
		require.EqualError(t, err, "e")
		v, meta, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 5}))
		require.NoError(t, err)
		require.Equal(t, "v6", v)
		require.Equal(t, ResultMeta{Index: 6}, meta)
		require.Equal(t, 4, log.count())
	})
}

// Pins: a fetch that returns a value and an error stores the value; a Get
// for which that value is new gets it without the error, one for which it
// is not gets the error.
func TestCacheGet_valueWithError(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v6", Index: 6}, errors.New("partial")).Once()
		log.on(typ, nil, FetchResult{Value: "v6", Index: 6}, errors.New("partial"))
		c.RegisterType("t", typ, nil)

		requireGet(t, c, "t", RequestInfo{Key: "k"})
		v, meta, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 5}))
		require.NoError(t, err)
		require.Equal(t, "v6", v)
		require.Equal(t, ResultMeta{Index: 6}, meta)

		v, meta, err = c.Get("t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 6}))
		require.EqualError(t, err, "partial")
		require.Equal(t, "v6", v)
		require.Equal(t, ResultMeta{Index: 6}, meta)
	})
}

// Pins: with a refresh type, a Get without MinIndex on a valid entry whose
// last refresh failed returns the value, a hit, and no error.
func TestCacheGet_refreshFailureServesValue(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("refresh failed")).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})

		requireGet(t, c, "t", RequestInfo{Key: "k"})
		synctest.Wait()
		require.Equal(t, 3, log.count(), "the failed refresh was retried at once")
		v, meta, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k"}))
		require.NoError(t, err)
		require.Equal(t, "v5", v)
		require.True(t, meta.Hit)
		require.Equal(t, uint64(5), meta.Index)
	})
}

// ---------------------------------------------------------------------------
// MaxAge and MustRevalidate.

// Pins: for a non-refresh type a value older than MaxAge is refetched (one
// exactly MaxAge old is still a hit); if that refetch fails the Get gets
// the error with the stale value.
func TestCacheGet_maxAge(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v1", Index: 1}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v2", Index: 2}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("down"))
		c.RegisterType("t", typ, nil)
		maxAge := RequestInfo{Key: "k", MaxAge: time.Minute}

		requireGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(time.Minute)
		v, meta := requireGet(t, c, "t", maxAge)
		require.Equal(t, "v1", v)
		require.Equal(t, ResultMeta{Hit: true, Age: time.Minute, Index: 1}, meta)

		time.Sleep(time.Second)
		v, meta = requireGet(t, c, "t", maxAge)
		require.Equal(t, "v2", v)
		require.Equal(t, ResultMeta{Index: 2}, meta, "refetched, age 0")
		require.Equal(t, 2, log.count())

		time.Sleep(2 * time.Minute)
		v, meta, err := c.Get("t", TestRequest(t, maxAge))
		require.EqualError(t, err, "down")
		require.Equal(t, "v2", v)
		require.Equal(t, ResultMeta{Age: 2 * time.Minute, Index: 2}, meta, "the older value with its age")

		v, meta = requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v2", v)
		require.Equal(t, ResultMeta{Hit: true, Age: 2 * time.Minute, Index: 2}, meta)
		require.Equal(t, 3, log.count())
	})
}

// Pins: MustRevalidate makes the first round a miss for a non-refresh type;
// if the revalidating fetch fails the cached value comes back with no error.
func TestCacheGet_mustRevalidate(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v1", Index: 1}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v2", Index: 2}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("down"))
		c.RegisterType("t", typ, nil)
		reval := RequestInfo{Key: "k", MustRevalidate: true}

		requireGet(t, c, "t", RequestInfo{Key: "k"})
		v, meta := requireGet(t, c, "t", reval)
		require.Equal(t, "v2", v)
		require.Equal(t, ResultMeta{Index: 2}, meta)
		require.Equal(t, 2, log.count())

		v, meta, err := c.Get("t", TestRequest(t, reval))
		require.NoError(t, err, "a failed revalidation serves the cached value")
		require.Equal(t, "v2", v)
		require.False(t, meta.Hit)
		require.Equal(t, uint64(2), meta.Index)
		require.Equal(t, 3, log.count())

		v, meta = requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v2", v)
		require.True(t, meta.Hit)
	})
}

// Pins: refresh types ignore MaxAge and MustRevalidate: the cached value is
// a hit with Age 0 (connected) and no Fetch is made.
func TestCacheGet_refreshIgnoresMaxAgeAndMustRevalidate(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), &RegisterOptions{Refresh: true, RefreshTimer: time.Hour})
		requireGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(2 * time.Minute)
		for _, info := range []RequestInfo{
			{Key: "k", MaxAge: time.Minute},
			{Key: "k", MustRevalidate: true},
		} {
			v, meta := requireGet(t, c, "t", info)
			require.Equal(t, uint64(1), v)
			require.Equal(t, ResultMeta{Hit: true, Index: 1}, meta)
		}
		require.Equal(t, 1, log.count())
	})
}

// Pins: concurrent Gets of many keys, refreshing and not, are race-free and
// each gets its own key's value.
func TestCacheGet_concurrent(t *testing.T) {
	t.Parallel()
	c := TestCache(t)
	for _, name := range []string{"plain", "refresh"} {
		typ := TestType(t)
		typ.On("Fetch", mock.Anything, mock.Anything).Return(
			func(o FetchOptions, r Request) FetchResult {
				return FetchResult{Value: r.CacheInfo().Key, Index: o.MinIndex + 1}
			}, nil)
		c.RegisterType(name, typ, &RegisterOptions{Refresh: name == "refresh", RefreshTimer: 5 * time.Millisecond})
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				info := RequestInfo{Key: fmt.Sprint(rand.IntN(16)), MinIndex: uint64(rand.IntN(3))}
				name := []string{"plain", "refresh"}[rand.IntN(2)]
				v, _, err := c.Get(name, TestRequest(t, info))
				if err != nil || v != info.Key {
					t.Errorf("Get(%s, %s) = %v, %v", name, info.Key, v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// asItem and asOther are value types for GetAs.
type asItem struct{ Name string }

func (i *asItem) String() string { return "item " + i.Name }

type asOther struct{ N int }

// ---------------------------------------------------------------------------
// GetAs.

// Pins: GetAs returns the value as a V (pointer, struct or interface type) with Get's meta.
func TestGetAs_TypedValue(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t, nil)
	item := &asItem{Name: "web"}
	c.RegisterType("ptr", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: item, Index: 7}, nil
	}), nil)
	c.RegisterType("val", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: asOther{N: 3}, Index: 8}, nil
	}), nil)
	ctx := t.Context()
	req := RequestInfo{Key: "k"}

	p, meta, err := GetAs[*asItem](ctx, c, "ptr", req)
	require.NoError(t, err)
	require.Same(t, item, p)
	require.Equal(t, uint64(7), meta.Index)
	require.False(t, meta.Hit)

	s, meta, err := GetAs[fmt.Stringer](ctx, c, "ptr", req)
	require.NoError(t, err)
	require.Equal(t, "item web", s.String())
	require.True(t, meta.Hit)

	o, meta, err := GetAs[asOther](ctx, c, "val", req)
	require.NoError(t, err)
	require.Equal(t, asOther{N: 3}, o)
	require.Equal(t, uint64(8), meta.Index)
}

// Pins: a value that is not a V gives the zero V and an error naming both the value's type and V.
func TestGetAs_WrongType(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t, nil)
	c.RegisterType("ptr", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: &asItem{Name: "web"}, Index: 7}, nil
	}), nil)
	c.RegisterType("str", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: "text", Index: 7}, nil
	}), nil)
	ctx := t.Context()
	req := RequestInfo{Key: "k"}

	o, _, err := GetAs[asOther](ctx, c, "ptr", req)
	require.Error(t, err)
	require.Zero(t, o)
	require.Contains(t, err.Error(), "*cache.asItem")
	require.Contains(t, err.Error(), "cache.asOther")

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
		c, release := newCache(t, nil)
		c.RegisterType("t", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			<-release
			return FetchResult{}, errors.New("released")
		}), nil)
		req := RequestInfo{Key: "k", Timeout: time.Second}
		start := time.Now()

		s := goCall(func() (string, ResultMeta, error) { return GetAs[string](t.Context(), c, "t", req) })
		p := goCall(func() (*asItem, ResultMeta, error) { return GetAs[*asItem](t.Context(), c, "t", req) })
		time.Sleep(time.Second)
		rs, rp := requireReturned(t, s), requireReturned(t, p)
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
		c, release := newCache(t, nil)
		c.RegisterType("slow", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			<-release
			return FetchResult{}, errors.New("released")
		}), nil)
		c.RegisterType("fail", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{}, errors.New("down")
		}), nil)
		req := RequestInfo{Key: "k"}

		ctx, cancel := context.WithCancel(t.Context())
		ch := goCall(func() (string, ResultMeta, error) { return GetAs[string](ctx, c, "slow", req) })
		requireBlocked(t, ch)
		cancel()
		r := requireReturned(t, ch)
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
		c, _ := newCache(t, nil)
		gate := make(chan struct{})
		var calls fetchLog
		c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			calls.add(o, r)
			<-gate
			return FetchResult{Value: "v", Index: 4}, nil
		}), nil)
		req := RequestInfo{Key: "k"}

		ctx, cancel := context.WithCancel(t.Context())
		withCtx := goCall(func() (any, ResultMeta, error) { return c.GetContext(ctx, "t", req) })
		plain := goGet(c, "t", req)
		requireBlocked(t, withCtx)
		requireBlocked(t, plain)

		cancel()
		r := requireReturned(t, withCtx)
		require.ErrorIs(t, r.Err, context.Canceled)
		require.Nil(t, r.Value)
		requireBlocked(t, plain)

		close(gate)
		p := requireReturned(t, plain)
		require.NoError(t, p.Err)
		require.Equal(t, "v", p.Value)
		require.Equal(t, 1, calls.count(), "the cancelled Get's fetch served the other")
	})
}

// Pins: ctx deadline first gives last value + ctx.Err(); RequestInfo.Timeout first gives last value, no error.
func TestGetContext_DeadlineAndTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, nil)
		b := newBlockingBackend(t, "v5", 5)
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
