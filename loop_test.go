package cache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

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
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "a", State: "sa", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "b", State: "sb", Index: 6}, nil)
		c.RegisterType("t", typ, &RegisterOptions{RefreshTimeout: 7 * time.Minute})

		requireGet(t, c, "t", RequestInfo{Key: "k"})
		// MinIndex forces a fetch for the blocking type, MustRevalidate for both.
		v, _ := requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 5, MustRevalidate: true})
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

// ---------------------------------------------------------------------------
// Background refresh and back-off.

// Pins: a refresh type fetches again RefreshTimer after each fetch, with the
// cached index as MinIndex and RefreshTimeout as Timeout; Gets meanwhile are
// hits with the latest value.
func TestCacheGet_refreshTimer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), &RegisterOptions{
			Refresh: true, RefreshTimer: 30 * time.Second, RefreshTimeout: 5 * time.Minute,
		})
		start := time.Now()
		v, _ := requireGet(t, c, "t", RequestInfo{Key: "k"})
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
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, uint64(4), v)
		require.Equal(t, ResultMeta{Hit: true, Index: 4}, meta)
	})
}

// Pins: without RefreshTimer a refresh type re-issues its blocking query as
// soon as the previous one returns.
func TestCacheGet_refreshBlocking(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
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
		requireGet(t, c, "t", RequestInfo{Key: "k"})

		time.Sleep(25 * time.Second)
		var offsets []time.Duration
		for _, at := range log.startTimes() {
			offsets = append(offsets, at.Sub(start))
		}
		require.Equal(t, []time.Duration{0, 0, 10 * time.Second, 20 * time.Second}, offsets)
		v, _ := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, uint64(3), v)
	})
}

// Pins: a Get that needs newer data while the refresh loop waits out
// RefreshTimer joins the loop's next fetch rather than starting its own.
func TestCacheGet_refreshJoinsLoopDuringTimer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), &RegisterOptions{Refresh: true, RefreshTimer: time.Minute})
		start := time.Now()
		requireGet(t, c, "t", RequestInfo{Key: "k"})

		time.Sleep(10 * time.Second)
		ch := goGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 1}))
		requireBlocked(t, ch)
		require.Equal(t, 1, log.count(), "no fetch of its own")
		time.Sleep(50 * time.Second)
		r := requireReturned(t, ch)
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
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{}, errors.New("down")).Times(4)
		log.on(typ, nil, FetchResult{Value: "v", Index: 5}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		req := TestRequest(t, RequestInfo{Key: "k"})

		_, _, err := c.Get("t", req)
		require.EqualError(t, err, "down")
		synctest.Wait()
		require.Equal(t, 4, log.count())
		ch := goGet(c, "t", req)
		requireBlocked(t, ch)
		require.Equal(t, 4, log.count(), "no fetch of its own")
		time.Sleep(4 * time.Second) // back-off after 4 failures: 2s..4s
		r := requireReturned(t, ch)
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

// Pins the refresh cadence of a failing type: three failures are retried at
// once, then waits of 2s..4s, 4s..8s, … doubling up to 1 min (+ stagger).
func TestCacheGet_refreshBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{}, errors.New("down"))
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		_, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k"}))
		require.EqualError(t, err, "down")

		time.Sleep(10 * time.Minute)
		s := time.Second
		requireGaps(t, log.startTimes(),
			[]time.Duration{0, 0, 0, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s, 60 * s},
			[]time.Duration{0, 0, 0, 4 * s, 8 * s, 16 * s, 32 * s, 64 * s, 120 * s, 120 * s})
	})
}

// Pins: back-off adds to RefreshTimer (the timer applies between every fetch).
func TestCacheGet_refreshBackoffWithTimer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{}, errors.New("down"))
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true, RefreshTimer: 5 * time.Second})
		_, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k"}))
		require.Error(t, err)

		time.Sleep(time.Minute)
		s := time.Second
		requireGaps(t, log.startTimes(),
			[]time.Duration{5 * s, 5 * s, 5 * s, 7 * s, 9 * s},
			[]time.Duration{5 * s, 5 * s, 5 * s, 9 * s, 13 * s})
	})
}

// Pins: results with index 0 count as failed attempts, so a type that always
// answers index 0 backs off instead of spinning.
func TestCacheGet_refreshZeroIndexBacksOff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v", Index: 0}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})
		_, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, uint64(1), meta.Index)

		time.Sleep(10 * time.Second)
		s := time.Second
		requireGaps(t, log.startTimes(),
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
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{}, errors.New("down")).Times(4)
		log.on(typ, nil, FetchResult{Value: "v", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("down"))
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		_, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k"}))
		require.Error(t, err)

		time.Sleep(time.Minute)
		s := time.Second
		requireGaps(t, log.startTimes(),
			[]time.Duration{0, 0, 0, 2 * s, 0, 0, 0, 0, 2 * s},
			[]time.Duration{0, 0, 0, 4 * s, 0, 0, 0, 0, 4 * s})
	})
}

// Pins: a Get that examined an older result than the one just published is
// told to look again at once (closed channel) and starts no fetch; with the
// current result it does start one.
func TestCacheFetch_racedResult(t *testing.T) {
	t.Parallel()
	c := TestCache(t)
	var log fetchLog
	c.RegisterType("t", indexType(t, &log), nil)
	req := TestRequest(t, RequestInfo{Key: "k"})
	requireGet(t, c, "t", RequestInfo{Key: "k"})

	te := c.typeEntry("t")
	key := c.makeKey(nil, "t", "", "", "k")
	e, ch := c.join(te, nil, &joinRequest{key: &key, seen: &sight{}}, req)
	require.Same(t, c.lookup(&key), e)
	select {
	case <-ch:
	default:
		t.Fatal("a stale view must not wait")
	}
	require.Equal(t, 1, log.count())

	_, ch = c.join(te, nil, &joinRequest{key: &key, seen: &sight{e: e, res: e.result()}}, req)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("fetch did not finish")
	}
	require.Equal(t, 2, log.count())
	require.Equal(t, uint64(2), e.result().index)
}

// ---------------------------------------------------------------------------
// StopRefresh.

// TestStopRefresh_wrapper pins StopRefresh's error: nil for nil, the same
// message, and errors.Is and errors.As see the wrapped error (and what it
// wraps) through it.
//
// Without StopRefresh's Unwrap, errors.Is and errors.As would not see the
// Type's error.
func TestStopRefresh_wrapper(t *testing.T) {
	t.Parallel()
	require.Nil(t, StopRefresh(nil))
	require.True(t, StopRefresh(nil) == nil, "an untyped nil, not a nil pointer in an interface")
	base := &msgErr{"token deleted"}
	wrapped := fmt.Errorf("rpc: %w", base)
	err := StopRefresh(wrapped)
	require.EqualError(t, err, "rpc: token deleted")
	require.ErrorIs(t, err, wrapped)
	require.ErrorIs(t, err, base)
	var le *msgErr
	require.ErrorAs(t, err, &le)
	require.Same(t, base, le)
	require.True(t, isStopRefresh(fmt.Errorf("more: %w", err)))
	require.False(t, isStopRefresh(wrapped))
}

// TestStopRefresh_stopsRefresh pins a refresh fetch that returns
// StopRefresh(errX): the blocking Get waiting for it gets the error, which
// errors.Is and errors.As see through, with the cached value;
// fetch_error_terminal is counted besides fetch_error; no fetch happens
// for hours; the value stays cached; the next Get is not a hit, fetches,
// and once that succeeds the refresh goes on.
//
// Without StopRefresh the refresh would retry the error at once.
func TestStopRefresh_stopsRefresh(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		s := newScriptType(true, release)
		c.RegisterType("stop", s, &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute, LastGetTTL: 24 * time.Hour})

		first := goGet(c, "stop", RequestInfo{Key: "k"})
		s.answer(t, FetchResult{Value: "v1", Index: 1}, nil)
		require.Equal(t, "v1", requireReturned(t, first).Value)
		require.Equal(t, 2, s.log.count(), "the refresh's blocking query")
		blocked := goGet(c, "stop", RequestInfo{Key: "k", MinIndex: 1, Timeout: time.Hour})
		requireBlocked(t, blocked)

		errX := &msgErr{"ACL not found"}
		s.answer(t, FetchResult{}, StopRefresh(errX))
		r := requireReturned(t, blocked)
		require.ErrorIs(t, r.Err, errX)
		var target *msgErr
		require.ErrorAs(t, r.Err, &target)
		require.Same(t, errX, target)
		require.EqualError(t, r.Err, "ACL not found")
		require.Equal(t, "v1", r.Value, "the cached value comes with the error")
		require.Equal(t, uint64(1), r.Meta.Index)
		require.Equal(t, 1, sinkCounter(sink, "consul.cache.stop.fetch_error_terminal"))
		require.Equal(t, 1, sinkCounter(sink, "consul.cache.stop.fetch_error"))
		require.Equal(t, 1, sinkCounter(sink, "consul.cache.fetch_error"))

		time.Sleep(5 * time.Hour)
		synctest.Wait()
		require.Equal(t, 2, s.log.count(), "no fetch after StopRefresh")
		require.True(t, isCachedKey(c, "stop", "k"), "the value stays until its TTL")

		next := goGet(c, "stop", RequestInfo{Key: "k"})
		requireBlocked(t, next)
		require.Equal(t, 3, s.log.count(), "the next Get fetches")
		require.Equal(t, uint64(1), s.log.opt(2).MinIndex)
		s.answer(t, FetchResult{Value: "v2", Index: 2}, nil)
		r = requireReturned(t, next)
		require.NoError(t, r.Err)
		require.Equal(t, "v2", r.Value)
		require.False(t, r.Meta.Hit)

		require.Equal(t, 4, s.log.count(), "the refresh resumed")
		require.Equal(t, uint64(2), s.log.opt(3).MinIndex)
		s.answer(t, FetchResult{Value: "v3", Index: 3}, nil)
		require.Equal(t, 5, s.log.count())
		v, meta := requireGet(t, c, "stop", RequestInfo{Key: "k"})
		require.Equal(t, "v3", v)
		require.True(t, meta.Hit)
		require.Equal(t, 1, sinkCounter(sink, "consul.cache.stop.fetch_error_terminal"))
	})
}

// TestStopRefresh_valueStaysUntilTTL pins that after StopRefresh, the value
// stays cached, without any fetch, until LastGetTTL after the last Get, and
// is then evicted.
//
// Without StopRefresh the refresh would go on fetching.
func TestStopRefresh_valueStaysUntilTTL(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		s := newScriptType(true, release)
		c.RegisterType("stop", s, &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute, LastGetTTL: 2 * time.Hour})
		first := goGet(c, "stop", RequestInfo{Key: "k"})
		s.answer(t, FetchResult{Value: "v1", Index: 1}, nil)
		require.Equal(t, "v1", requireReturned(t, first).Value)
		lastGet := time.Now()
		time.Sleep(time.Minute)
		s.answer(t, FetchResult{}, StopRefresh(errors.New("gone")))

		time.Sleep(time.Until(lastGet.Add(2*time.Hour)) - time.Second)
		require.True(t, isCachedKey(c, "stop", "k"))
		require.Equal(t, 2, s.log.count())
		time.Sleep(2 * time.Second)
		require.False(t, isCachedKey(c, "stop", "k"), "evicted at its TTL")
		time.Sleep(time.Hour)
		require.Equal(t, 2, s.log.count())
	})
}

// TestStopRefresh_withoutRefresh pins that for a type without Refresh,
// StopRefresh changes nothing but the metric: the same script of fetches,
// with a plain error or with StopRefresh, gives the same Get outcomes, and
// only StopRefresh counts fetch_error_terminal.
//
// Without StopRefresh there would be no terminal count; a cache that
// marked the result stopped for such types would make hits miss.
func TestStopRefresh_withoutRefresh(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	errX := &msgErr{"no such token"}
	type outcome struct {
		value any
		meta  ResultMeta
		isX   bool
	}
	run := func(typ string, wrap func(error) error) ([]outcome, int) {
		var outs []outcome
		var fetches int
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			steps := []scriptStep{
				{err: wrap(errX)},
				{fr: FetchResult{Value: "v1", Index: 1}},
				{err: wrap(errX)},
				{fr: FetchResult{Value: "v2", Index: 2}},
			}
			var n atomic.Int32
			c.RegisterType(typ, BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				i := int(n.Add(1)) - 1
				if i >= len(steps) {
					return FetchResult{}, errors.New("unexpected fetch")
				}
				return steps[i].fr, steps[i].err
			}), nil)
			for _, info := range []RequestInfo{
				{Key: "k"},              // error, no value
				{Key: "k"},              // v1
				{Key: "k"},              // hit
				{Key: "k", MinIndex: 1}, // error, with v1
				{Key: "k"},              // hit
				{Key: "k", MinIndex: 1}, // v2
				{Key: "k"},              // hit
			} {
				v, meta, err := c.Get(typ, info)
				if err != nil {
					require.ErrorIs(t, err, errX)
				}
				outs = append(outs, outcome{v, meta, err != nil})
			}
			fetches = int(n.Load())
		})
		return outs, fetches
	}
	plain, nPlain := run("plain", func(err error) error { return err })
	stopped, nStopped := run("stopped", StopRefresh)
	require.Equal(t, plain, stopped)
	require.Equal(t, nPlain, nStopped)
	require.Equal(t, 4, nStopped)
	require.Equal(t, []outcome{
		{nil, ResultMeta{}, true},
		{"v1", ResultMeta{Index: 1}, false},
		{"v1", ResultMeta{Hit: true, Index: 1}, false},
		{"v1", ResultMeta{Index: 1}, true},
		{"v1", ResultMeta{Hit: true, Index: 1}, false},
		{"v2", ResultMeta{Index: 2}, false},
		{"v2", ResultMeta{Hit: true, Index: 2}, false},
	}, stopped)
	require.Equal(t, 2, sinkCounter(sink, "consul.cache.stopped.fetch_error_terminal"))
	require.Equal(t, 2, sinkCounter(sink, "consul.cache.stopped.fetch_error"))
	require.Equal(t, 0, sinkCounter(sink, "consul.cache.plain.fetch_error_terminal"))
	require.Equal(t, 2, sinkCounter(sink, "consul.cache.plain.fetch_error"))
}

// TestStopRefresh_revalidationCounted pins that a StopRefresh error
// returned to a revalidation (a MaxAge Get served beside the loop's
// blocking query) reaches that Get unchanged and is counted as
// fetch_error_terminal besides fetch_error, as StopRefresh says it is for
// every type; the loop's blocking query goes on.
//
// Without StopRefresh there would be no terminal count.
func TestStopRefresh_revalidationCounted(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	var bug string         // reported once the bubble has ended
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		s, blocked, reval := sideScript(t, c, "stopside", release)
		errX := &msgErr{"ACL not found"}
		s.answerFetch(t, 2, FetchResult{}, StopRefresh(errX))
		r := requireReturned(t, reval)
		require.ErrorIs(t, r.Err, errX)
		require.Equal(t, "v1", r.Value)
		requireBlocked(t, blocked)
		require.Equal(t, 1, sinkCounter(sink, "consul.cache.stopside.fetch_error"))

		s.answerFetch(t, 1, FetchResult{Value: "v2", Index: 6}, nil)
		r = requireReturned(t, blocked)
		require.NoError(t, r.Err)
		require.Equal(t, "v2", r.Value)
		if n := sinkCounter(sink, "consul.cache.stopside.fetch_error_terminal"); n != 1 {
			bug = fmt.Sprintf("a StopRefresh error returned to a revalidation (revalidation.run) is not counted as "+
				"fetch_error_terminal (count %d, want 1), though StopRefresh says it is, besides fetch_error", n)
		}
	})
	if bug != "" {
		t.Fatal(bug)
	}
}

// ---------------------------------------------------------------------------
// RefreshMaxFailures.

// flakyType returns a blocking Type (recording its fetches in log)
// that answers its first fetch with index 1, fails while down is set, and
// otherwise answers, after a minute (a blocking query that sees a change
// a minute), with index MinIndex+1.
func flakyType(log *fetchLog, down *atomic.Bool, release <-chan struct{}) BlockingFetchFunc {
	return func(o FetchOptions, r Request) (FetchResult, error) {
		log.record(mock.Arguments{o, r})
		switch {
		case o.LastResult == nil:
			return FetchResult{Value: "v1", Index: 1}, nil
		case down.Load():
			return FetchResult{}, errors.New("server unavailable")
		}
		sleep(time.Minute, release)
		return FetchResult{Value: fmt.Sprint("v", o.MinIndex+1), Index: o.MinIndex + 1}, nil
	}
}

// TestRefreshMaxFailures_stopsAfterFailuresInARow pins RefreshMaxFailures:
// after a first success, the refresh fails that many times in a row, with
// the usual back-off between the attempts, and then stops: no fetch for
// hours. The next Get is not a hit and fetches; once that succeeds the
// refresh goes on.
//
// Without RefreshMaxFailures the refresh would retry every minute or two.
func TestRefreshMaxFailures_stopsAfterFailuresInARow(t *testing.T) {
	t.Parallel()
	for _, max := range []int{3, 6} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c, release := bubble(t)
				var log fetchLog
				var down atomic.Bool
				down.Store(true)
				c.RegisterType("t", flakyType(&log, &down, release), &RegisterOptions{
					Refresh: true, RefreshTimeout: 10 * time.Minute, RefreshMaxFailures: max,
				})
				// The Get waits for the first fetch, but the failures may
				// follow before it looks: then the last error comes with v1.
				v, _, _ := c.Get("t", RequestInfo{Key: "k"})
				require.Equal(t, "v1", v)
				time.Sleep(10 * time.Minute) // enough for the back-off of 6 failures
				synctest.Wait()
				require.Equal(t, 1+max, log.count(), "one success, then %d failures", max)
				requireBackOff(t, log.startTimes()[1:], 0)
				time.Sleep(5 * time.Hour)
				require.Equal(t, 1+max, log.count(), "stopped")

				down.Store(false)
				ch := goGet(c, "t", RequestInfo{Key: "k"})
				requireBlocked(t, ch)
				require.Equal(t, 2+max, log.count(), "the next Get fetches")
				time.Sleep(time.Minute)
				r := requireReturned(t, ch)
				require.NoError(t, r.Err)
				require.Equal(t, "v2", r.Value)
				require.False(t, r.Meta.Hit)
				time.Sleep(10*time.Minute - time.Second)
				require.Equal(t, 2+max+10, log.count(), "the refresh goes on: a fetch a minute")
			})
		})
	}
}

// TestRefreshMaxFailures_countsFailuresInARow pins that only failures in a
// row count: a success in between starts the count over.
//
// A cache that counted all failures would stop after the third.
func TestRefreshMaxFailures_countsFailuresInARow(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		s := newScriptType(true, release)
		c.RegisterType("t", s, &RegisterOptions{Refresh: true, RefreshTimeout: time.Minute, RefreshMaxFailures: 3})
		first := goGet(c, "t", RequestInfo{Key: "k"})
		s.answer(t, FetchResult{Value: "v1", Index: 1}, nil)
		require.Equal(t, "v1", requireReturned(t, first).Value)
		down := errors.New("down")
		for i := 0; i < 5; i++ {
			s.answer(t, FetchResult{}, down)
			s.answer(t, FetchResult{}, down)
			s.answer(t, FetchResult{Value: "v", Index: uint64(i + 2)}, nil)
		}
		require.Equal(t, 17, s.log.count(), "still refreshing")
		for i := 0; i < 3; i++ {
			s.answer(t, FetchResult{}, down)
		}
		time.Sleep(time.Hour)
		require.Equal(t, 19, s.log.count(), "stopped after the third failure in a row")
	})
}

// TestRefreshMaxFailures_zeroKeepsRetrying pins RefreshMaxFailures 0 (the
// default): a failing refresh goes on retrying with the seed's back-off.
//
// It is the control of the tests above: a cache that stopped every failing
// refresh would fail it.
func TestRefreshMaxFailures_zeroKeepsRetrying(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		var log fetchLog
		var down atomic.Bool
		down.Store(true)
		c.RegisterType("t", flakyType(&log, &down, release), &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute})
		v, _, _ := c.Get("t", RequestInfo{Key: "k"})
		require.Equal(t, "v1", v)
		time.Sleep(time.Hour)
		n := log.count()
		t.Logf("%d fetches in an hour", n)
		require.Greater(t, n, 30)
		requireBackOff(t, log.startTimes()[1:], 0)
		time.Sleep(time.Hour)
		require.GreaterOrEqual(t, log.count(), n+25, "still retrying")
	})
}

// TestRefreshMaxFailures_negativePanics pins that RegisterType panics on a
// negative RefreshMaxFailures, naming the option, and registers nothing.
//
// Without the check, the type would be registered.
func TestRefreshMaxFailures_negativePanics(t *testing.T) {
	t.Parallel()
	c := TestCache(t)
	v := func() (v any) {
		defer func() { v = recover() }()
		c.RegisterType("t", TestType(t), &RegisterOptions{Refresh: true, RefreshMaxFailures: -1})
		return nil
	}()
	require.NotNil(t, v, "RegisterType did not panic")
	require.Contains(t, fmt.Sprint(v), "RefreshMaxFailures -1")
	_, _, err := c.Get("t", RequestInfo{Key: "k"})
	require.EqualError(t, err, "unknown type in cache: t")
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
				c, release := newCache(t, tc.opts)
				var log fetchLog
				c.RegisterType("t", changingType(t, &log, 100*time.Millisecond, release), &RegisterOptions{
					Refresh: true, RefreshTimeout: time.Minute,
				})
				start := time.Now()
				requireGet(t, c, "t", RequestInfo{Key: "k"})
				time.Sleep(60*time.Second - time.Since(start))
				synctest.Wait()
				n := log.count()
				t.Logf("%d fetches in 60s", n)
				require.GreaterOrEqual(t, n, tc.min)
				require.LessOrEqual(t, n, tc.max)

				v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
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
				c, release := newCache(t, tc.opts)
				var log fetchLog
				c.RegisterType("t", changingType(t, &log, 100*time.Millisecond, release), nil)
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
				c, release := newCache(t, &Options{EntryFetchRate: 1, EntryFetchMaxBurst: tc.burst})
				var log fetchLog
				c.RegisterType("t", changingType(t, &log, time.Millisecond, release), &RegisterOptions{Refresh: true})
				requireGet(t, c, "t", RequestInfo{Key: "k"})
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
		c, _ := newCache(t, &Options{EntryFetchRate: rate.Every(time.Minute), EntryFetchMaxBurst: 1})
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), nil)
		start := time.Now()
		requireGet(t, c, "t", RequestInfo{Key: "a"})
		requireGet(t, c, "t", RequestInfo{Key: "b"})
		require.Equal(t, start, time.Now(), "first fetch of each entry at once")

		v, _ := requireGet(t, c, "t", RequestInfo{Key: "a", MinIndex: 1})
		require.Equal(t, uint64(2), v)
		require.Equal(t, time.Minute, time.Since(start), "a's second fetch waits for a's limiter")

		time.Sleep(30 * time.Second)
		mid := time.Now()
		v, _ = requireGet(t, c, "t", RequestInfo{Key: "b", MinIndex: 1})
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
		c, release := newCache(t, &Options{EntryFetchRate: rate.Every(time.Hour), EntryFetchMaxBurst: 1})
		var log fetchLog
		c.RegisterType("t", changingType(t, &log, time.Minute, release), &RegisterOptions{
			Refresh: true, LastGetTTL: 10 * time.Minute,
		})
		requireGet(t, c, "t", RequestInfo{Key: "k"}) // fetched 0-1m, expires at 11m
		time.Sleep(9 * time.Minute)
		require.Equal(t, 1, log.count(), "the refresh waits for the limiter (until 1h)")
		require.True(t, isCachedKey(c, "t", "k"))
		time.Sleep(2 * time.Minute)
		require.False(t, isCachedKey(c, "t", "k"), "evicted at 11m")

		time.Sleep(3 * time.Hour)
		require.Equal(t, 1, log.count(), "the loop ended at eviction, no fetch at 1h")

		start := time.Now()
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
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
		c, release := newCache(t, &Options{EntryFetchRate: rate.Every(time.Hour), EntryFetchMaxBurst: 1})
		var log fetchLog
		c.RegisterType("t", changingType(t, &log, time.Second, release), &RegisterOptions{Refresh: true})
		requireGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(10 * time.Minute)
		require.Equal(t, 1, log.count(), "the refresh waits for the limiter (until 1h)")

		ch := goGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 1}))
		requireBlocked(t, ch)
		require.NoError(t, c.Close())
		r := requireReturned(t, ch)
		require.ErrorIs(t, r.Err, ErrClosed)
		require.Equal(t, uint64(1), r.Value, "the cached value comes with the error")
		time.Sleep(3 * time.Hour)
		require.Equal(t, 1, log.count(), "no fetch after Close")
	})
}

// msgErr is an error type for errors.As.
type msgErr struct{ msg string }

func (e *msgErr) Error() string { return e.msg }
