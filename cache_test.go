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

	metrics "github.com/armon/go-metrics"
	uuid "github.com/hashicorp/go-uuid"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
)

// cacheGetResult is what one Get returned.
type cacheGetResult struct {
	Value any
	Meta  ResultMeta
	Err   error
}

// cacheGoGet runs Get in a goroutine; its result arrives on the channel.
func cacheGoGet(c *Cache, typ string, r Request) <-chan cacheGetResult {
	ch := make(chan cacheGetResult, 1)
	go func() {
		v, meta, err := c.Get(typ, r)
		ch <- cacheGetResult{v, meta, err}
	}()
	return ch
}

// cacheRequireBlocked (in a bubble) fails if the Get has returned once every
// goroutine of the bubble is idle.
func cacheRequireBlocked(t *testing.T, ch <-chan cacheGetResult) {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		t.Fatalf("Get returned while it should wait: %+v", r)
	default:
	}
}

// cacheRequireReturned (in a bubble) returns the Get's result, failing if it
// is still waiting once every goroutine of the bubble is idle.
func cacheRequireReturned(t *testing.T, ch <-chan cacheGetResult) cacheGetResult {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatalf("Get still waiting")
		return cacheGetResult{}
	}
}

// cacheGet is a synchronous Get that fails the test on error.
func cacheGet(t *testing.T, c *Cache, typ string, info RequestInfo) (any, ResultMeta) {
	t.Helper()
	v, meta, err := c.Get(typ, TestRequest(t, info))
	require.NoError(t, err)
	return v, meta
}

// cacheFetchLog records the options and (possibly fake) start time of every
// Fetch of a MockType.
type cacheFetchLog struct {
	mu    sync.Mutex
	opts  []FetchOptions
	times []time.Time
}

func (l *cacheFetchLog) record(args mock.Arguments) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opts = append(l.opts, args.Get(0).(FetchOptions))
	l.times = append(l.times, time.Now())
}

func (l *cacheFetchLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.opts)
}

func (l *cacheFetchLog) opt(i int) FetchOptions {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opts[i]
}

func (l *cacheFetchLog) startTimes() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.times...)
}

// on adds a Fetch expectation on typ that records the call, runs wait (if
// not nil) and returns res and err. Chain .Once()/.Times(n) to sequence.
func (l *cacheFetchLog) on(typ *MockType, wait func(), res FetchResult, err error) *mock.Call {
	return typ.On("Fetch", mock.Anything, mock.Anything).Run(func(args mock.Arguments) {
		l.record(args)
		if wait != nil {
			wait()
		}
	}).Return(res, err)
}

// cacheSleep returns a wait func for cacheFetchLog.on that sleeps d.
func cacheSleep(d time.Duration) func() { return func() { time.Sleep(d) } }

// cacheUntil returns a wait func for cacheFetchLog.on that waits for ch.
func cacheUntil(ch <-chan struct{}) func() { return func() { <-ch } }

// cacheIndexType returns a blocking MockType whose every Fetch (recorded in
// log) answers at once with Value = Index = MinIndex+1.
func cacheIndexType(t *testing.T, log *cacheFetchLog) *MockType {
	typ := TestType(t)
	typ.On("Fetch", mock.Anything, mock.Anything).Run(log.record).Return(
		func(o FetchOptions, _ Request) FetchResult {
			return FetchResult{Value: o.MinIndex + 1, Index: o.MinIndex + 1}
		}, nil)
	return typ
}

// cacheBubble returns, inside a synctest bubble, a cache that is closed when
// the test ends, and a channel closed right after that, which releases
// fetches left blocked on it so that the bubble's goroutines can exit.
func cacheBubble(t *testing.T) (*Cache, <-chan struct{}) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs after Close (cleanups are LIFO)
	return TestCache(t), release
}

// cacheInstallSink routes go-metrics to a fresh InmemSink until the test
// ends, then to a blackhole. The interval is huge so that everything lands
// in one interval, whether it is emitted at fake (bubble) or real time: no
// interval is ever rotated, so no bubble channel is touched from outside.
func cacheInstallSink(t *testing.T) *metrics.InmemSink {
	t.Helper()
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	sink := metrics.NewInmemSink(1<<62, 1<<62)
	_, err := metrics.NewGlobal(cfg, sink)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = metrics.NewGlobal(cfg, &metrics.BlackholeSink{})
	})
	return sink
}

// cacheCounter sums a counter over the sink's intervals.
func cacheCounter(sink *metrics.InmemSink, name string) int {
	n := 0
	for _, iv := range sink.Data() {
		if v, ok := iv.Counters[name]; ok {
			n += v.Count
		}
	}
	return n
}

// cacheGauge returns the latest value of a gauge.
func cacheGauge(t *testing.T, sink *metrics.InmemSink, name string) float32 {
	t.Helper()
	var val float32
	found := false
	for _, iv := range sink.Data() {
		if g, ok := iv.Gauges[name]; ok {
			val, found = g.Value, true
		}
	}
	require.True(t, found, "gauge %s not set", name)
	return val
}

// ---------------------------------------------------------------------------
// Bypass, types and partitions.

// Pins: an empty Key bypasses the cache: each Get calls Fetch with only the
// request's MinIndex, nothing is stored, bypass is counted, errors pass through.
func TestCacheGet_bypassEmptyKey(t *testing.T) {
	sink := cacheInstallSink(t) // metrics: not parallel
	c := TestCache(t)
	typ := TestType(t)
	var log cacheFetchLog
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
	require.Equal(t, 3, cacheCounter(sink, "consul.cache.bypass"))
	require.Equal(t, 0, cacheCounter(sink, "consul.cache.bypass_t.miss_new"))
	require.Equal(t, 0, cacheCounter(sink, "consul.cache.bypass_t.fetch_success"))
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

// cachePartition is the value the partition test's types return: the
// partition that was fetched.
type cachePartition struct{ Type, DC, Token, Key string }

// Pins: entries are partitioned exactly by type, datacenter, token and key;
// a "/" inside a field never makes two partitions share an entry.
func TestCacheGet_partitions(t *testing.T) {
	t.Parallel()
	c := TestCache(t)
	var fetches atomic.Int32
	types := []string{"t1", "t2", "a", "a/b"}
	for _, name := range types {
		typ := TestType(t)
		typ.On("Fetch", mock.Anything, mock.Anything).Return(
			func(_ FetchOptions, r Request) FetchResult {
				fetches.Add(1)
				i := r.CacheInfo()
				return FetchResult{Value: cachePartition{name, i.Datacenter, i.Token, i.Key}, Index: 1}
			}, nil)
		c.RegisterType(name, typ, nil)
	}
	tok1, err := uuid.GenerateUUID()
	require.NoError(t, err)
	tok2, err := uuid.GenerateUUID()
	require.NoError(t, err)

	var parts []cachePartition
	for _, typ := range []string{"t1", "t2"} {
		for _, dc := range []string{"dc1", "dc2"} {
			for _, tok := range []string{tok1, tok2} {
				for _, key := range []string{"k1", "k2"} {
					parts = append(parts, cachePartition{typ, dc, tok, key})
				}
			}
		}
	}
	// Pairs that a "type/dc/token/key" string would merge.
	parts = append(parts,
		cachePartition{"t1", "a/b", "c", "k"}, cachePartition{"t1", "a", "b/c", "k"},
		cachePartition{"t1", "dc", "x/y", "z"}, cachePartition{"t1", "dc", "x", "y/z"},
		cachePartition{"a/b", "c", "tok", "k"}, cachePartition{"a", "b/c", "tok", "k"},
		cachePartition{"t1", "a/b", "", "k"}, cachePartition{"t1", "a", "b", "k"},
	)

	for round := 0; round < 2; round++ {
		for _, p := range parts {
			v, meta := cacheGet(t, c, p.Type, RequestInfo{Datacenter: p.DC, Token: p.Token, Key: p.Key})
			require.Equal(t, p, v, "round %d", round)
			require.Equal(t, round == 1, meta.Hit, "round %d %+v", round, p)
		}
	}
	require.Equal(t, int32(len(parts)), fetches.Load(), "one Fetch per partition")
}

// ---------------------------------------------------------------------------
// Coalescing, blocking, timeouts and errors.

// Pins: concurrent Gets of a missing entry share one Fetch and all get its value.
func TestCacheGet_coalesce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		gate := make(chan time.Time)
		var fetches atomic.Int32
		typ := TestType(t)
		typ.Static(FetchResult{Value: "v", Index: 3}, nil).WaitUntil(gate).Run(func(mock.Arguments) { fetches.Add(1) })
		c.RegisterType("t", typ, nil)
		req := TestRequest(t, RequestInfo{Key: "k"})

		var chs []<-chan cacheGetResult
		for i := 0; i < 10; i++ {
			chs = append(chs, cacheGoGet(c, "t", req))
		}
		for _, ch := range chs {
			cacheRequireBlocked(t, ch)
		}
		close(gate)
		for _, ch := range chs {
			r := cacheRequireReturned(t, ch)
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
		c, _ := cacheBubble(t)
		gate := make(chan time.Time)
		var fetches atomic.Int32
		typ := TestType(t)
		typ.Static(FetchResult{}, errors.New("down")).WaitUntil(gate).Run(func(mock.Arguments) { fetches.Add(1) })
		c.RegisterType("t", typ, nil)
		req := TestRequest(t, RequestInfo{Key: "k"})

		var chs []<-chan cacheGetResult
		for i := 0; i < 5; i++ {
			chs = append(chs, cacheGoGet(c, "t", req))
		}
		synctest.Wait()
		close(gate)
		for _, ch := range chs {
			r := cacheRequireReturned(t, ch)
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
		c, release := cacheBubble(t)
		gate := make(chan struct{})
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, cacheUntil(gate), FetchResult{Value: "v5", Index: 5}, nil).Once() // blocking query timed out
		log.on(typ, nil, FetchResult{Value: "v9", Index: 9}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v11", Index: 11}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v13", Index: 13}, nil).Once()
		log.on(typ, cacheUntil(release), FetchResult{}, nil)
		c.RegisterType("t", typ, nil)

		v, _ := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v5", v)
		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 4})
		require.Equal(t, "v5", v)
		require.Equal(t, ResultMeta{Hit: true, Index: 5}, meta)

		ch := cacheGoGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 5}))
		cacheRequireBlocked(t, ch)
		require.Equal(t, 2, log.count())
		require.Equal(t, uint64(5), log.opt(1).MinIndex)
		close(gate)
		r := cacheRequireReturned(t, ch)
		require.NoError(t, r.Err)
		require.Equal(t, "v9", r.Value)
		require.Equal(t, ResultMeta{Index: 9}, r.Meta)
		require.Equal(t, 3, log.count(), "the unchanged index made it fetch again")
		require.Equal(t, uint64(5), log.opt(2).MinIndex)

		// MinIndex above anything fetched so far: wait past 11 for 13.
		v, meta = cacheGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 12})
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
		c, _ := cacheBubble(t)
		typ := TestTypeNonBlocking(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v", Index: 5}, nil)
		c.RegisterType("t", typ, &RegisterOptions{RefreshTimeout: time.Minute})

		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 10})
		require.Equal(t, "v", v)
		require.Equal(t, ResultMeta{Index: 5}, meta)
		require.Equal(t, FetchOptions{}, log.opt(0))
		for _, min := range []uint64{5, 100} {
			v, meta = cacheGet(t, c, "t", RequestInfo{Key: "k", MinIndex: min})
			require.Equal(t, "v", v)
			require.True(t, meta.Hit)
		}
		require.Equal(t, 1, log.count())
	})
}

// Pins: blocking types get MinIndex = cached index and Timeout =
// RefreshTimeout; non-blocking ones get neither; LastResult holds the last
// valid result (nil before there is one).
func TestCacheGet_fetchOptions(t *testing.T) {
	t.Parallel()
	for _, blocking := range []bool{true, false} {
		c := TestCache(t)
		typ := TestTypeNonBlocking(t)
		if blocking {
			typ = TestType(t)
		}
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "a", State: "sa", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "b", State: "sb", Index: 6}, nil)
		c.RegisterType("t", typ, &RegisterOptions{RefreshTimeout: 7 * time.Minute})

		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		// MinIndex forces a fetch for the blocking type, MustRevalidate for both.
		v, _ := cacheGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 5, MustRevalidate: true})
		require.Equal(t, "b", v)

		last := &FetchResult{Value: "a", State: "sa", Index: 5}
		if blocking {
			require.Equal(t, FetchOptions{Timeout: 7 * time.Minute}, log.opt(0))
			require.Equal(t, FetchOptions{MinIndex: 5, Timeout: 7 * time.Minute, LastResult: last}, log.opt(1))
		} else {
			require.Equal(t, FetchOptions{}, log.opt(0))
			require.Equal(t, FetchOptions{LastResult: last}, log.opt(1))
		}
	}
}

// Pins: when a Get's Timeout passes it returns the last value and index with
// no error; the fetch goes on and a later Get joins it.
func TestCacheGet_timeoutReturnsLastValue(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, cacheUntil(release), FetchResult{}, nil)
		c.RegisterType("t", typ, nil)
		cacheGet(t, c, "t", RequestInfo{Key: "k"})

		start := time.Now()
		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 5, Timeout: 3 * time.Second})
		require.Equal(t, 3*time.Second, time.Since(start))
		require.Equal(t, "v5", v)
		require.Equal(t, ResultMeta{Index: 5}, meta)

		v, meta = cacheGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 5, Timeout: time.Second})
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
		c, _ := cacheBubble(t)
		gate := make(chan struct{})
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, cacheUntil(gate), FetchResult{Value: "v", Index: 5}, nil)
		c.RegisterType("t", typ, nil)

		start := time.Now()
		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k", Timeout: 2 * time.Second})
		require.Equal(t, 2*time.Second, time.Since(start))
		require.Nil(t, v)
		require.Equal(t, ResultMeta{}, meta)

		close(gate)
		synctest.Wait()
		v, meta = cacheGet(t, c, "t", RequestInfo{Key: "k"})
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
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
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
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("e")).Once()
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once() // timed out, no change
		log.on(typ, nil, FetchResult{Value: "v6", Index: 6}, nil)
		c.RegisterType("t", typ, nil)

		cacheGet(t, c, "t", RequestInfo{Key: "k"})
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
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v6", Index: 6}, errors.New("partial")).Once()
		log.on(typ, nil, FetchResult{Value: "v6", Index: 6}, errors.New("partial"))
		c.RegisterType("t", typ, nil)

		cacheGet(t, c, "t", RequestInfo{Key: "k"})
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
		c, release := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("refresh failed")).Once()
		log.on(typ, cacheUntil(release), FetchResult{}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})

		cacheGet(t, c, "t", RequestInfo{Key: "k"})
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
// MaxAge, MustRevalidate and ResultMeta.

// Pins: for a non-refresh type a value older than MaxAge is refetched (one
// exactly MaxAge old is still a hit); if that refetch fails the Get gets
// the error with the stale value.
func TestCacheGet_maxAge(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v1", Index: 1}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v2", Index: 2}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("down"))
		c.RegisterType("t", typ, nil)
		maxAge := RequestInfo{Key: "k", MaxAge: time.Minute}

		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(time.Minute)
		v, meta := cacheGet(t, c, "t", maxAge)
		require.Equal(t, "v1", v)
		require.Equal(t, ResultMeta{Hit: true, Age: time.Minute, Index: 1}, meta)

		time.Sleep(time.Second)
		v, meta = cacheGet(t, c, "t", maxAge)
		require.Equal(t, "v2", v)
		require.Equal(t, ResultMeta{Index: 2}, meta, "refetched, age 0")
		require.Equal(t, 2, log.count())

		time.Sleep(2 * time.Minute)
		v, meta, err := c.Get("t", TestRequest(t, maxAge))
		require.EqualError(t, err, "down")
		require.Equal(t, "v2", v)
		require.Equal(t, ResultMeta{Age: 2 * time.Minute, Index: 2}, meta, "the older value with its age")

		v, meta = cacheGet(t, c, "t", RequestInfo{Key: "k"})
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
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v1", Index: 1}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v2", Index: 2}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("down"))
		c.RegisterType("t", typ, nil)
		reval := RequestInfo{Key: "k", MustRevalidate: true}

		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		v, meta := cacheGet(t, c, "t", reval)
		require.Equal(t, "v2", v)
		require.Equal(t, ResultMeta{Index: 2}, meta)
		require.Equal(t, 2, log.count())

		v, meta, err := c.Get("t", TestRequest(t, reval))
		require.NoError(t, err, "a failed revalidation serves the cached value")
		require.Equal(t, "v2", v)
		require.False(t, meta.Hit)
		require.Equal(t, uint64(2), meta.Index)
		require.Equal(t, 3, log.count())

		v, meta = cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v2", v)
		require.True(t, meta.Hit)
	})
}

// Pins: refresh types ignore MaxAge and MustRevalidate: the cached value is
// a hit with Age 0 (connected) and no Fetch is made.
func TestCacheGet_refreshIgnoresMaxAgeAndMustRevalidate(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), &RegisterOptions{Refresh: true, RefreshTimer: time.Hour})
		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(2 * time.Minute)
		for _, info := range []RequestInfo{
			{Key: "k", MaxAge: time.Minute},
			{Key: "k", MustRevalidate: true},
		} {
			v, meta := cacheGet(t, c, "t", info)
			require.Equal(t, uint64(1), v)
			require.Equal(t, ResultMeta{Hit: true, Index: 1}, meta)
		}
		require.Equal(t, 1, log.count())
	})
}

// Pins ResultMeta for non-refresh types: Hit only when served without
// waiting, Age = time since the value was fetched, Index of the value.
func TestCacheGet_metaNonRefresh(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), nil)

		time.Sleep(time.Second)
		_, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, ResultMeta{Index: 1}, meta)
		time.Sleep(5 * time.Second)
		_, meta = cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, ResultMeta{Hit: true, Age: 5 * time.Second, Index: 1}, meta)
		time.Sleep(5 * time.Second)
		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 1})
		require.Equal(t, uint64(2), v)
		require.Equal(t, ResultMeta{Index: 2}, meta, "waited for a fetch: no hit, age 0")
	})
}

// Pins ResultMeta.Age for refresh types: 0 while refreshes succeed; while
// they fail, the time since the first failure; back to 0 on success.
func TestCacheGet_metaRefreshAge(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()                        // t0
		log.on(typ, cacheSleep(10*time.Second), FetchResult{}, errors.New("e")).Once()          // fails at 10s
		log.on(typ, cacheSleep(10*time.Second), FetchResult{}, errors.New("e")).Once()          // fails at 20s
		log.on(typ, cacheSleep(20*time.Second), FetchResult{Value: "v6", Index: 6}, nil).Once() // ok at 40s
		log.on(typ, cacheUntil(release), FetchResult{}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		start := time.Now()
		at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }

		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		for _, step := range []struct {
			at  time.Duration
			val string
			age time.Duration
		}{
			{5 * time.Second, "v5", 0},
			{15 * time.Second, "v5", 5 * time.Second},
			{25 * time.Second, "v5", 15 * time.Second}, // still from the first failure
			{45 * time.Second, "v6", 0},
		} {
			at(step.at)
			v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, step.val, v, "at %s", step.at)
			require.True(t, meta.Hit)
			require.Equal(t, step.age, meta.Age, "at %s", step.at)
		}
	})
}

// Pins the 31 s connected timer: with RefreshTimeout > 31s a refresh that
// blocks 31 s clears the lost-contact Age; a later failure restarts it; with
// RefreshTimeout <= 31s nothing is cleared until a success.
func TestCacheGet_metaRefreshConnectedTimer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		timeout time.Duration
		cleared bool
	}{
		{10 * time.Minute, true},
		{31 * time.Second, false},
	} {
		synctest.Test(t, func(t *testing.T) {
			c, release := cacheBubble(t)
			typ := TestType(t)
			var log cacheFetchLog
			log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
			log.on(typ, cacheSleep(10*time.Second), FetchResult{}, errors.New("e")).Once() // lost at 10s
			log.on(typ, cacheSleep(5*time.Minute), FetchResult{}, errors.New("e")).Once()  // blocks 10s..5m10s
			log.on(typ, cacheUntil(release), FetchResult{}, nil)
			c.RegisterType("t", typ, &RegisterOptions{Refresh: true, RefreshTimeout: tc.timeout})
			start := time.Now()
			age := func(at time.Duration) time.Duration {
				time.Sleep(time.Until(start.Add(at)))
				_, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
				return meta.Age
			}

			cacheGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, 30500*time.Millisecond, age(40500*time.Millisecond), "blocked 30.5s")
			if tc.cleared {
				require.Equal(t, time.Duration(0), age(41500*time.Millisecond), "blocked 31.5s: connected")
				require.Equal(t, 10*time.Second, age(5*time.Minute+20*time.Second), "failed again at 5m10s")
			} else {
				require.Equal(t, 31500*time.Millisecond, age(41500*time.Millisecond))
				require.Equal(t, 5*time.Minute+10*time.Second, age(5*time.Minute+20*time.Second))
			}
		})
	}
}

// Pins: a value fetched with index 0 is stored with index 1, and the next
// blocking fetch is asked for MinIndex 1.
func TestCacheGet_zeroIndexCoercedToOne(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v0", Index: 0}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v3", Index: 3}, nil)
		c.RegisterType("t", typ, nil)

		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v0", v)
		require.Equal(t, ResultMeta{Index: 1}, meta)
		v, meta = cacheGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 1})
		require.Equal(t, "v3", v)
		require.Equal(t, ResultMeta{Index: 3}, meta)
		require.Equal(t, uint64(1), log.opt(1).MinIndex)
		require.Equal(t, &FetchResult{Value: "v0", Index: 1}, log.opt(1).LastResult)
	})
}

// Pins: State is kept and handed back in LastResult; a nil-Value result with
// State and no error updates it, one with an error does not; LastResult is
// nil until there is a valid value.
func TestCacheGet_fetchState(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{State: "s0"}, nil).Once() // rate limited, no value yet
		log.on(typ, nil, FetchResult{Value: "v1", State: "s1", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{State: "s2"}, nil).Once()
		log.on(typ, nil, FetchResult{State: "s3"}, errors.New("e")).Once()
		log.on(typ, nil, FetchResult{}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v2", State: "s4", Index: 6}, nil)
		c.RegisterType("t", typ, nil)

		v, _ := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v1", v)
		_, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 5}))
		require.EqualError(t, err, "e")
		v, _ = cacheGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 5})
		require.Equal(t, "v2", v)

		require.Equal(t, 6, log.count())
		want := []*FetchResult{
			nil,
			nil, // State "s0" is kept, but there is no valid value yet
			{Value: "v1", State: "s1", Index: 5},
			{Value: "v1", State: "s2", Index: 5},
			{Value: "v1", State: "s2", Index: 5}, // "s3" came with an error
			{Value: "v1", State: "s2", Index: 5}, // a nil State changes nothing
		}
		for i, w := range want {
			require.Equal(t, w, log.opt(i).LastResult, "fetch %d", i)
		}
	})
}

// ---------------------------------------------------------------------------
// Background refresh and back-off.

// Pins: a refresh type fetches again RefreshTimer after each fetch, with the
// cached index as MinIndex and RefreshTimeout as Timeout; Gets meanwhile are
// hits with the latest value.
func TestCacheGet_refreshTimer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), &RegisterOptions{
			Refresh: true, RefreshTimer: 30 * time.Second, RefreshTimeout: 5 * time.Minute,
		})
		start := time.Now()
		v, _ := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, uint64(1), v)

		time.Sleep(95 * time.Second)
		times := log.startTimes()
		require.Len(t, times, 4)
		for i, at := range times {
			require.Equal(t, time.Duration(i)*30*time.Second, at.Sub(start), "fetch %d", i)
			require.Equal(t, FetchOptions{MinIndex: uint64(i), Timeout: 5 * time.Minute}, FetchOptions{
				MinIndex: log.opt(i).MinIndex, Timeout: log.opt(i).Timeout,
			})
		}
		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, uint64(4), v)
		require.Equal(t, ResultMeta{Hit: true, Index: 4}, meta)
	})
}

// Pins: without RefreshTimer a refresh type re-issues its blocking query as
// soon as the previous one returns.
func TestCacheGet_refreshBlocking(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		typ.On("Fetch", mock.Anything, mock.Anything).Run(func(args mock.Arguments) {
			log.record(args)
			if args.Get(0).(FetchOptions).MinIndex > 0 {
				select { // blocks until the next change, 10s later
				case <-time.After(10 * time.Second):
				case <-release:
				}
			}
		}).Return(func(o FetchOptions, _ Request) FetchResult {
			return FetchResult{Value: o.MinIndex + 1, Index: o.MinIndex + 1}
		}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute})
		start := time.Now()
		cacheGet(t, c, "t", RequestInfo{Key: "k"})

		time.Sleep(25 * time.Second)
		var offsets []time.Duration
		for _, at := range log.startTimes() {
			offsets = append(offsets, at.Sub(start))
		}
		require.Equal(t, []time.Duration{0, 0, 10 * time.Second, 20 * time.Second}, offsets)
		v, _ := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, uint64(3), v)
	})
}

// Pins: a Get that needs newer data while the refresh loop waits out
// RefreshTimer joins the loop's next fetch rather than starting its own.
func TestCacheGet_refreshJoinsLoopDuringTimer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), &RegisterOptions{Refresh: true, RefreshTimer: time.Minute})
		start := time.Now()
		cacheGet(t, c, "t", RequestInfo{Key: "k"})

		time.Sleep(10 * time.Second)
		ch := cacheGoGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 1}))
		cacheRequireBlocked(t, ch)
		require.Equal(t, 1, log.count(), "no fetch of its own")
		time.Sleep(50 * time.Second)
		r := cacheRequireReturned(t, ch)
		require.NoError(t, r.Err)
		require.Equal(t, uint64(2), r.Value)
		require.Equal(t, ResultMeta{Index: 2}, r.Meta)
		require.Equal(t, time.Minute, time.Since(start))
		require.Equal(t, 2, log.count())
	})
}

// Pins: a Get for an entry whose refresh loop is backing off joins the loop's
// next fetch rather than starting its own.
func TestCacheGet_refreshJoinsLoopDuringBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{}, errors.New("down")).Times(4)
		log.on(typ, nil, FetchResult{Value: "v", Index: 5}, nil).Once()
		log.on(typ, cacheUntil(release), FetchResult{}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		req := TestRequest(t, RequestInfo{Key: "k"})

		_, _, err := c.Get("t", req)
		require.EqualError(t, err, "down")
		synctest.Wait()
		require.Equal(t, 4, log.count())
		ch := cacheGoGet(c, "t", req)
		cacheRequireBlocked(t, ch)
		require.Equal(t, 4, log.count(), "no fetch of its own")
		time.Sleep(4 * time.Second) // back-off after 4 failures: 2s..4s
		r := cacheRequireReturned(t, ch)
		require.NoError(t, r.Err)
		require.Equal(t, "v", r.Value)
	})
}

// Pins: backOffWait is 0 for up to 3 failures, then 2^(n-3) s plus a stagger
// of up to as much again, capped at 1 min (+ up to 1 min).
func TestCacheBackOffWait(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		failures uint
		min      time.Duration
	}{
		{0, 0}, {1, 0}, {2, 0}, {3, 0},
		{4, 2 * time.Second}, {5, 4 * time.Second}, {6, 8 * time.Second},
		{7, 16 * time.Second}, {8, 32 * time.Second},
		{9, time.Minute}, {10, time.Minute}, {33, time.Minute}, {34, time.Minute},
		{100, time.Minute}, {^uint(0), time.Minute},
	} {
		seen := map[time.Duration]bool{}
		for i := 0; i < 200; i++ {
			w := backOffWait(tc.failures)
			if tc.min == 0 {
				require.Equal(t, time.Duration(0), w, "failures %d", tc.failures)
				continue
			}
			require.GreaterOrEqual(t, w, tc.min, "failures %d", tc.failures)
			require.Less(t, w, 2*tc.min, "failures %d", tc.failures)
			seen[w] = true
		}
		if tc.min > 0 {
			require.Greater(t, len(seen), 1, "failures %d: staggered", tc.failures)
		}
	}
	require.Equal(t, time.Duration(0), randomStagger(0))
	require.Equal(t, time.Duration(0), randomStagger(-time.Second))
}

// cacheRequireGaps checks the gaps between consecutive fetch start times:
// gap i (between fetch i and i+1) must be in [lo[i], hi[i]).
func cacheRequireGaps(t *testing.T, times []time.Time, lo, hi []time.Duration) {
	t.Helper()
	require.GreaterOrEqual(t, len(times), len(lo)+1)
	for i := range lo {
		gap := times[i+1].Sub(times[i])
		require.GreaterOrEqual(t, gap, lo[i], "gap after fetch %d", i+1)
		if hi[i] == lo[i] {
			require.Equal(t, lo[i], gap, "gap after fetch %d", i+1)
		} else {
			require.Less(t, gap, hi[i], "gap after fetch %d", i+1)
		}
	}
}

// Pins the refresh cadence of a failing type: three failures are retried at
// once, then waits of 2s..4s, 4s..8s, … doubling up to 1 min (+ stagger).
func TestCacheGet_refreshBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{}, errors.New("down"))
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		_, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k"}))
		require.EqualError(t, err, "down")

		time.Sleep(10 * time.Minute)
		s := time.Second
		cacheRequireGaps(t, log.startTimes(),
			[]time.Duration{0, 0, 0, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s, 60 * s},
			[]time.Duration{0, 0, 0, 4 * s, 8 * s, 16 * s, 32 * s, 64 * s, 120 * s, 120 * s})
	})
}

// Pins: back-off adds to RefreshTimer (the timer applies between every fetch).
func TestCacheGet_refreshBackoffWithTimer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{}, errors.New("down"))
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true, RefreshTimer: 5 * time.Second})
		_, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k"}))
		require.Error(t, err)

		time.Sleep(time.Minute)
		s := time.Second
		cacheRequireGaps(t, log.startTimes(),
			[]time.Duration{5 * s, 5 * s, 5 * s, 7 * s, 9 * s},
			[]time.Duration{5 * s, 5 * s, 5 * s, 9 * s, 13 * s})
	})
}

// Pins: results with index 0 count as failed attempts, so a type that always
// answers index 0 backs off instead of spinning.
func TestCacheGet_refreshZeroIndexBacksOff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v", Index: 0}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})
		_, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, uint64(1), meta.Index)

		time.Sleep(10 * time.Second)
		s := time.Second
		cacheRequireGaps(t, log.startTimes(),
			[]time.Duration{0, 0, 0, 2 * s},
			[]time.Duration{0, 0, 0, 4 * s})
		require.Equal(t, uint64(1), log.opt(1).MinIndex)
	})
}

// Pins: a success with index > 0 resets the back-off, so the next failures
// are again retried at once.
func TestCacheGet_refreshSuccessResetsBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{}, errors.New("down")).Times(4)
		log.on(typ, nil, FetchResult{Value: "v", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("down"))
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		_, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k"}))
		require.Error(t, err)

		time.Sleep(time.Minute)
		s := time.Second
		cacheRequireGaps(t, log.startTimes(),
			[]time.Duration{0, 0, 0, 2 * s, 0, 0, 0, 0, 2 * s},
			[]time.Duration{0, 0, 0, 4 * s, 0, 0, 0, 0, 4 * s})
	})
}

// ---------------------------------------------------------------------------
// Expiry (LastGetTTL).

// Pins: an entry is evicted LastGetTTL after its last hit; each hit pushes
// the expiry back.
func TestCacheGet_lastGetTTL(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), &RegisterOptions{LastGetTTL: 10 * time.Minute})
		info := RequestInfo{Key: "k"}
		cacheGet(t, c, "t", info)
		for i := 0; i < 3; i++ {
			time.Sleep(9 * time.Minute)
			_, meta := cacheGet(t, c, "t", info)
			require.True(t, meta.Hit, "hit %d", i)
		}
		require.Equal(t, 1, log.count())
		time.Sleep(10*time.Minute + time.Second)
		_, meta := cacheGet(t, c, "t", info)
		require.False(t, meta.Hit, "evicted 10m after the last hit")
		require.Equal(t, 2, log.count())
	})
}

// Pins: the default LastGetTTL is 72 hours.
func TestCacheGet_lastGetTTLDefault(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), nil)
		info := RequestInfo{Key: "k"}
		cacheGet(t, c, "t", info)
		time.Sleep(72*time.Hour - time.Second)
		_, meta := cacheGet(t, c, "t", info)
		require.True(t, meta.Hit)
		time.Sleep(72*time.Hour + time.Second)
		_, meta = cacheGet(t, c, "t", info)
		require.False(t, meta.Hit)
		require.Equal(t, 2, log.count())
	})
}

// Pins: eviction ends the background refresh of an entry; a later Get starts
// afresh.
func TestCacheGet_expiryStopsRefresh(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), &RegisterOptions{
			Refresh: true, RefreshTimer: 3 * time.Minute, LastGetTTL: 10 * time.Minute,
		})
		info := RequestInfo{Key: "k"}
		cacheGet(t, c, "t", info)
		time.Sleep(time.Hour)
		require.Equal(t, 4, log.count(), "fetches at 0, 3m, 6m, 9m; evicted at 10m")
		v, meta := cacheGet(t, c, "t", info)
		require.Equal(t, uint64(1), v, "a new entry")
		require.False(t, meta.Hit)
		require.Equal(t, 5, log.count())
	})
}

// Pins: many entries due at once are all evicted (more than one eviction batch).
func TestCacheGet_massExpiry(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), &RegisterOptions{LastGetTTL: time.Minute})
		const n = evictBatch + 50
		for i := 0; i < n; i++ {
			cacheGet(t, c, "t", RequestInfo{Key: fmt.Sprint(i)})
		}
		require.Equal(t, int64(n), c.count.Load())
		time.Sleep(2 * time.Minute)
		require.Equal(t, int64(0), c.count.Load())
		for i := 0; i < n; i++ {
			_, meta := cacheGet(t, c, "t", RequestInfo{Key: fmt.Sprint(i)})
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
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, cacheSleep(10*time.Second), FetchResult{Value: "v", Index: 5}, nil)
		c.RegisterType("t", typ, &RegisterOptions{LastGetTTL: time.Hour})
		time.Sleep(2 * time.Hour) // the cache is older than the TTL

		v, _ := cacheGet(t, c, "t", RequestInfo{Key: "k", Timeout: time.Second})
		require.Nil(t, v, "timed out before the fetch returned")
		time.Sleep(time.Minute) // the fetch stored "v" 50s ago
		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
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
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, cacheSleep(90*time.Minute), FetchResult{Value: "v6", Index: 6}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v7", Index: 7}, nil)
		c.RegisterType("t", typ, &RegisterOptions{LastGetTTL: time.Hour})

		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		// The blocking Get gives up at 10m; the entry expires at 1h10m,
		// with its fetch still in flight until 1h30m.
		v, _ := cacheGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 5, Timeout: 10 * time.Minute})
		require.Equal(t, "v5", v)
		time.Sleep(81 * time.Minute)
		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.False(t, meta.Hit, "the evicted entry is not back")
		require.Equal(t, "v7", v)
		require.Equal(t, 3, log.count())
	})
}

// Pins: entries_count stays equal to the number of entries when an entry is
// evicted while a fetch for it is in flight.
func TestCacheGet_entriesCountAfterEvictionDuringFetch(t *testing.T) {
	sink := cacheInstallSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, cacheSleep(90*time.Minute), FetchResult{Value: "v6", Index: 6}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v7", Index: 7}, nil).Once()
		log.on(typ, cacheUntil(release), FetchResult{}, nil)
		c.RegisterType("count_t", typ, &RegisterOptions{LastGetTTL: time.Hour})

		cacheGet(t, c, "count_t", RequestInfo{Key: "k"})
		cacheGet(t, c, "count_t", RequestInfo{Key: "k", MinIndex: 5}) // evicted at 1h, returns at 1h30m
		time.Sleep(3 * time.Hour)                                     // whatever the late value did, it has expired by now
		none := cacheGauge(t, sink, "consul.cache.entries_count")
		cacheGet(t, c, "count_t", RequestInfo{Key: "k2"})
		one := cacheGauge(t, sink, "consul.cache.entries_count")
		require.Equal(t, float32(0), none, "no entry")
		require.Equal(t, float32(1), one, "one entry")
	})
}

// Pins: a refresh entry evicted while its blocking refresh fetch is in flight
// does not break the cache (the fetch returns, the cache keeps serving).
func TestCacheGet_refreshEvictedDuringFetch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, cacheSleep(10*time.Minute), FetchResult{Value: "v6", Index: 6}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v7", Index: 7}, nil).Once()
		log.on(typ, cacheUntil(release), FetchResult{}, nil)
		c.RegisterType("t", typ, &RegisterOptions{
			Refresh: true, RefreshTimeout: 10 * time.Minute, LastGetTTL: 5 * time.Minute,
		})
		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(time.Hour) // evicted at 5m, the refresh returns at 10m
		require.Equal(t, 2, log.count(), "the loop ended with the late fetch")
		v, _ := cacheGet(t, c, "t", RequestInfo{Key: "k2"})
		require.Equal(t, "v7", v)
	})
}

// ---------------------------------------------------------------------------
// Close and RegisterType.

// Pins: Close is idempotent and returns nil; it ends a refresh loop waiting on
// RefreshTimer; cached values stay readable; a Get after Close still fetches
// but no refresh follows.
func TestCacheClose_stopsRefresh(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), &RegisterOptions{Refresh: true, RefreshTimer: time.Minute})
		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.NoError(t, c.Close())
		require.NoError(t, c.Close())
		time.Sleep(time.Hour)
		require.Equal(t, 1, log.count(), "no refresh after Close")

		_, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.True(t, meta.Hit, "cached values are still served")
		v, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k2"}))
		require.ErrorIs(t, err, ErrClosed, "a Get that needs a fetch")
		require.Nil(t, v)
		time.Sleep(time.Hour)
		require.Equal(t, 1, log.count())
	})
}

// Pins: Close ends a refresh loop in its back-off wait at once; a Get that
// was waiting on it returns ErrClosed at once; no fetch follows.
func TestCacheClose_duringBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{}, errors.New("down")).Times(4)
		log.on(typ, nil, FetchResult{Value: "v", Index: 5}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		req := TestRequest(t, RequestInfo{Key: "k"})
		_, _, err := c.Get("t", req)
		require.Error(t, err)
		synctest.Wait()
		require.Equal(t, 4, log.count())

		ch := cacheGoGet(c, "t", req)
		cacheRequireBlocked(t, ch)
		start := time.Now()
		require.NoError(t, c.Close())
		r := cacheRequireReturned(t, ch)
		require.Equal(t, start, time.Now(), "not after the back-off")
		require.ErrorIs(t, r.Err, ErrClosed)
		require.Nil(t, r.Value)
		time.Sleep(time.Hour)
		require.Equal(t, 4, log.count(), "no fetch after Close")
	})
}

// Pins: a refresh fetch in flight at Close finishes and its value is stored,
// but no refresh follows.
func TestCacheClose_duringFetch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		gate := make(chan struct{})
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v1", Index: 1}, nil).Once()
		log.on(typ, cacheUntil(gate), FetchResult{Value: "v2", Index: 2}, nil).Once()
		log.on(typ, cacheUntil(release), FetchResult{}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		synctest.Wait()
		require.Equal(t, 2, log.count())

		require.NoError(t, c.Close())
		close(gate)
		time.Sleep(time.Hour)
		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v2", v)
		require.True(t, meta.Hit)
		require.Equal(t, 2, log.count())
	})
}

// Pins: after Close entries no longer expire.
func TestCacheClose_stopsExpiry(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), &RegisterOptions{LastGetTTL: time.Minute})
		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.NoError(t, c.Close())
		time.Sleep(time.Hour)
		_, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.True(t, meta.Hit)
		require.Equal(t, 1, log.count())
	})
}

// Pins: RegisterType copies the options: the caller's struct is not modified
// (no TTL default written into it) and later changes to it have no effect.
func TestCacheRegisterType_copiesOptions(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		var log cacheFetchLog
		opts := &RegisterOptions{}
		c.RegisterType("t", cacheIndexType(t, &log), opts)
		require.Equal(t, RegisterOptions{}, *opts)

		opts.Refresh, opts.RefreshTimer, opts.LastGetTTL = true, time.Second, time.Minute
		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(time.Hour)
		_, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.True(t, meta.Hit, "still the 72h default TTL")
		require.Equal(t, 1, log.count(), "still no refresh")
	})
}

// Pins: registering a type again under the same name replaces it: later
// fetches, including those of a running refresh loop, use the new type.
func TestCacheRegisterType_replace(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := cacheBubble(t)
		opts := &RegisterOptions{Refresh: true, RefreshTimer: time.Minute}
		a := TestType(t)
		a.Static(FetchResult{Value: "a", Index: 1}, nil)
		b := TestType(t)
		b.Static(FetchResult{Value: "b", Index: 2}, nil)

		c.RegisterType("t", a, opts)
		v, _ := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "a", v)
		c.RegisterType("t", b, opts)
		time.Sleep(61 * time.Second)
		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "b", v)
		require.Equal(t, ResultMeta{Hit: true, Index: 2}, meta)
		a.AssertNumberOfCalls(t, "Fetch", 1)
	})
}

// ---------------------------------------------------------------------------
// Metrics, internals and concurrency.

// Pins the go-metrics names: per-type hit, miss_new, miss_block,
// fetch_success and fetch_error, the global fetch_success, fetch_error and
// evict_expired counters, and the entries_count gauge.
func TestCacheGet_metrics(t *testing.T) {
	sink := cacheInstallSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("e")).Once()
		log.on(typ, nil, FetchResult{Value: "v6", Index: 6}, nil).Times(2)
		log.on(typ, cacheUntil(release), FetchResult{}, nil)
		c.RegisterType("metrics_t", typ, &RegisterOptions{LastGetTTL: time.Hour})

		cacheGet(t, c, "metrics_t", RequestInfo{Key: "k1"})                                  // miss_new, fetch_success
		cacheGet(t, c, "metrics_t", RequestInfo{Key: "k1"})                                  // hit
		_, _, err := c.Get("metrics_t", TestRequest(t, RequestInfo{Key: "k1", MinIndex: 5})) // miss_block, fetch_error
		require.Error(t, err)
		cacheGet(t, c, "metrics_t", RequestInfo{Key: "k1", MinIndex: 5}) // miss_block, fetch_success
		require.Equal(t, float32(1), cacheGauge(t, sink, "consul.cache.entries_count"))
		cacheGet(t, c, "metrics_t", RequestInfo{Key: "k2"}) // miss_new, fetch_success
		require.Equal(t, float32(2), cacheGauge(t, sink, "consul.cache.entries_count"))
		time.Sleep(2 * time.Hour)

		for name, want := range map[string]int{
			"consul.cache.metrics_t.hit":           1,
			"consul.cache.metrics_t.miss_new":      2,
			"consul.cache.metrics_t.miss_block":    2,
			"consul.cache.metrics_t.fetch_success": 3,
			"consul.cache.metrics_t.fetch_error":   1,
			"consul.cache.fetch_success":           3,
			"consul.cache.fetch_error":             1,
			"consul.cache.evict_expired":           2,
		} {
			require.Equal(t, want, cacheCounter(sink, name), name)
		}
		require.Equal(t, float32(0), cacheGauge(t, sink, "consul.cache.entries_count"))
	})
}

// Pins: a Get that examined an older result than the one just published is
// told to look again at once (closed channel) and starts no fetch; with the
// current result it does start one.
func TestCacheFetch_racedResult(t *testing.T) {
	t.Parallel()
	c := TestCache(t)
	var log cacheFetchLog
	c.RegisterType("t", cacheIndexType(t, &log), nil)
	req := TestRequest(t, RequestInfo{Key: "k"})
	cacheGet(t, c, "t", RequestInfo{Key: "k"})

	te := c.typeEntry("t")
	key := c.makeKey(nil, "t", "", "", "k")
	e, ch := c.join(joinRequest{te: te, key: key, r: req, seen: noResult})
	require.Same(t, c.lookup(&key), e)
	select {
	case <-ch:
	default:
		t.Fatal("a stale view must not wait")
	}
	require.Equal(t, 1, log.count())

	_, ch = c.join(joinRequest{te: te, key: key, r: req, seen: e.res.Load()})
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("fetch did not finish")
	}
	require.Equal(t, 2, log.count())
	require.Equal(t, uint64(2), e.res.Load().index)
}

// Pins: the internal context ends a waiting watch Get with the last value
// and ctx.Err() (Notify relies on it).
func TestCacheGetWithIndex_contextCancel(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, cacheUntil(release), FetchResult{}, nil)
		c.RegisterType("t", typ, nil)
		cacheGet(t, c, "t", RequestInfo{Key: "k"})

		ctx, cancel := context.WithCancel(context.Background())
		info := RequestInfo{Key: "k"}
		ch := make(chan cacheGetResult, 1)
		go func() {
			w := &watch{c: c, ctx: ctx, t: "t", r: TestRequest(t, info), info: info}
			v, meta, err := w.get(5, 0)
			ch <- cacheGetResult{v, meta, err}
		}()
		cacheRequireBlocked(t, ch)
		cancel()
		r := cacheRequireReturned(t, ch)
		require.ErrorIs(t, r.Err, context.Canceled)
		require.Equal(t, "v5", r.Value)
		require.Equal(t, ResultMeta{Index: 5}, r.Meta)
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

// Pins: at Close, a Get waiting for a revalidation fetch that runs beside a
// blocking query gets that fetch's result, which Close does not cancel,
// while the Get waiting for a change returns ErrClosed at once.
func TestCacheClose_revalidationWaitersGetTheirResult(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		gate := make(chan struct{})
		typ := TestType(t)
		var log cacheFetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		// The blocking query hangs until the test ends, whatever its
		// context says; the revalidation until gate.
		log.on(typ, cacheUntil(release), FetchResult{Value: "v6", Index: 6}, nil).Once()
		log.on(typ, cacheUntil(gate), FetchResult{Value: "v5", Index: 5}, nil).Once()
		c.RegisterType("t", typ, nil)

		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		blocked := cacheGoGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 5}))
		cacheRequireBlocked(t, blocked)
		revalidating := cacheGoGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MustRevalidate: true}))
		cacheRequireBlocked(t, revalidating)
		require.Equal(t, 3, log.count(), "the revalidation runs beside the blocking query")

		require.NoError(t, c.Close())
		r := cacheRequireReturned(t, blocked)
		require.ErrorIs(t, r.Err, ErrClosed)
		require.Equal(t, "v5", r.Value)
		cacheRequireBlocked(t, revalidating)
		close(gate)
		r = cacheRequireReturned(t, revalidating)
		require.NoError(t, r.Err)
		require.Equal(t, "v5", r.Value)
	})
}
