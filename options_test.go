package cache

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// ---------------------------------------------------------------------------
// Logger.

// Pins: a failed fetch logs a WARN on Options.Logger with type, datacenter, key, error and failure count.
func TestEmbedding_LoggerFetchError(t *testing.T) {
	t.Parallel()
	var buf logBuf
	c, _ := newCache(t, &Options{Logger: buf.logger()})
	c.RegisterType("logt", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{}, errors.New("backend down")
	}), nil)

	_, _, err := c.Get("logt", RequestInfo{Key: "k1", Datacenter: "dc1"})
	require.EqualError(t, err, "backend down")

	lines := buf.messages("fetch failed")
	require.Len(t, lines, 1, buf.String())
	for _, want := range []string{"level=WARN", "type=logt", "datacenter=dc1", "key=k1", `error="backend down"`, "failures=1"} {
		require.Contains(t, lines[0], want)
	}
}

// Pins: each back-off wait of a refresh loop (4th failure on) logs a DEBUG line with the entry's attributes.
func TestEmbedding_LoggerBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var buf logBuf
		c, _ := newCache(t, &Options{Logger: buf.logger()})
		var calls fetchLog
		c.RegisterType("logt", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			calls.add(o, r)
			return FetchResult{}, errors.New("down")
		}), &RegisterOptions{Refresh: true})
		_, _, err := c.Get("logt", RequestInfo{Key: "k1", Datacenter: "dc2"})
		require.Error(t, err)

		time.Sleep(10 * time.Second) // failures 1-3 at once, then 2s..4s, 4s..8s
		synctest.Wait()
		require.GreaterOrEqual(t, calls.count(), 5)
		lines := buf.messages("backing off")
		require.Len(t, lines, calls.count()-3, buf.String())
		for _, want := range []string{"level=DEBUG", "type=logt", "datacenter=dc2", "key=k1", "failures=4", "wait="} {
			require.Contains(t, lines[0], want)
		}
		require.Len(t, buf.messages("fetch failed"), calls.count())
	})
}

// Pins: a panicking fetch logs an ERROR with the entry's attributes, the panic value and a stack trace.
func TestEmbedding_LoggerPanic(t *testing.T) {
	t.Parallel()
	var buf logBuf
	c, _ := newCache(t, &Options{Logger: buf.logger()})
	c.RegisterType("logt", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		panic("nil map write")
	}), nil)

	_, _, err := c.Get("logt", RequestInfo{Key: "k1", Datacenter: "dc1"})
	require.Error(t, err)

	lines := buf.messages("fetch panicked")
	require.Len(t, lines, 1, buf.String())
	for _, want := range []string{"level=ERROR", "type=logt", "datacenter=dc1", "key=k1", `panic="nil map write"`, "stack=", "goroutine"} {
		require.Contains(t, lines[0], want)
	}
}

// Pins: a nil Options.Logger discards, not slog.Default (not parallel: swaps the default logger).
func TestEmbedding_NilLoggerDiscards(t *testing.T) {
	var buf logBuf
	oldSlog, oldOut, oldFlags := slog.Default(), log.Writer(), log.Flags()
	slog.SetDefault(buf.logger())
	t.Cleanup(func() {
		slog.SetDefault(oldSlog)
		log.SetOutput(oldOut)
		log.SetFlags(oldFlags)
	})

	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, &Options{Logger: nil})
		var calls fetchLog
		c.RegisterType("err", FetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			calls.add(o, r)
			return FetchResult{}, errors.New("down")
		}), &RegisterOptions{Refresh: true})
		c.RegisterType("panic", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			panic("boom")
		}), nil)
		_, _, err := c.Get("err", RequestInfo{Key: "k"})
		require.Error(t, err)
		_, _, err = c.Get("panic", RequestInfo{Key: "k"})
		require.Error(t, err)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		require.GreaterOrEqual(t, calls.count(), 5, "the refresh loop backed off")
	})
	for _, s := range []string{"cache", "down", "boom"} {
		require.NotContains(t, buf.String(), s, "the default logger got the cache's lines")
	}
}

// ---------------------------------------------------------------------------
// ReloadOptions.

// TestReloadOptions_reportsChanges pins ReloadOptions' result: false for
// options New would have normalised to the same settings (including
// Options{} on a New(nil) cache), and for a different MetricsPrefix or
// Metrics only, which New fixes (ReloadOptions ignores them); true for a
// changed rate, burst, logger or MaxEntries. Once applied, the same options
// are no change.
//
// A ReloadOptions that compared the raw Options, or reported every call as
// a change, would fail it.
func TestReloadOptions_reportsChanges(t *testing.T) {
	t.Parallel()
	l1, l2 := slog.New(slog.DiscardHandler), slog.New(slog.DiscardHandler)
	m1, _ := newMetrics(t)
	m2, _ := newMetrics(t)
	base := Options{EntryFetchRate: 5, EntryFetchMaxBurst: 3, Logger: l1, Metrics: m1, MaxEntries: 10, MetricsPrefix: []string{"a"}}
	with := func(f func(*Options)) Options {
		o := base
		f(&o)
		return o
	}
	for _, tc := range []struct {
		name    string
		from    *Options
		to      Options
		changed bool
	}{
		{"nil and zero", nil, Options{}, false},
		{"same", &base, base, false},
		{"prefix only", &base, with(func(o *Options) { o.MetricsPrefix = []string{"b"} }), false},
		{"metrics only", &base, with(func(o *Options) { o.Metrics = m2 }), false},
		{"no metrics only", &base, with(func(o *Options) { o.Metrics = nil }), false},
		{"burst below 1 means 2", &Options{EntryFetchRate: 5}, Options{EntryFetchRate: 5, EntryFetchMaxBurst: 2}, false},
		{"burst without rate", &Options{}, Options{EntryFetchMaxBurst: 7}, false},
		{"negative rate", &Options{}, Options{EntryFetchRate: -1}, false},
		{"negative MaxEntries", &Options{}, Options{MaxEntries: -3}, false},
		{"rate", &base, with(func(o *Options) { o.EntryFetchRate = 6 }), true},
		{"no rate", &base, with(func(o *Options) { o.EntryFetchRate = 0 }), true},
		{"rate on nil", nil, Options{EntryFetchRate: 1}, true},
		{"burst", &base, with(func(o *Options) { o.EntryFetchMaxBurst = 4 }), true},
		{"logger", &base, with(func(o *Options) { o.Logger = l2 }), true},
		{"no logger", &base, with(func(o *Options) { o.Logger = nil }), true},
		{"logger on nil", nil, Options{Logger: l1}, true},
		{"MaxEntries", &base, with(func(o *Options) { o.MaxEntries = 11 }), true},
		{"no MaxEntries", &base, with(func(o *Options) { o.MaxEntries = 0 }), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(tc.from)
			defer c.Close()
			require.Equal(t, tc.changed, c.ReloadOptions(tc.to))
			require.False(t, c.ReloadOptions(tc.to), "applied: no change the second time")
		})
	}
}

// TestReloadOptions_metricsFixedByNew pins that ReloadOptions leaves the
// metrics instance and prefix New was given: metrics keep going there, under
// the same names, whatever Metrics and MetricsPrefix the reload carries.
//
// A ReloadOptions that swapped the instance or the names would fail it.
func TestReloadOptions_metricsFixedByNew(t *testing.T) {
	t.Parallel()
	m1, sink1 := newMetrics(t)
	m2, sink2 := newMetrics(t)
	c := New(&Options{Metrics: m1, MetricsPrefix: []string{"app"}})
	defer c.Close()
	c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: "v", Index: 1}, nil
	}), nil)
	require.True(t, c.ReloadOptions(Options{Metrics: m2, MetricsPrefix: []string{"other"}, MaxEntries: 5}))
	requireGet(t, c, "t", RequestInfo{Key: "k"})
	requireGet(t, c, "t", RequestInfo{Key: "k"})
	require.Equal(t, 1, sinkCounter(sink1, "app.t.fetch_success"))
	require.Equal(t, 1, sinkCounter(sink1, "app.t.hit"))
	require.Empty(t, sink2.Data()[0].Counters)
}

// TestReloadOptions_rateAppliesToWaitingFetch pins that a new
// EntryFetchRate applies at once to a loop waiting for its limiter: at one
// fetch an hour, the refresh of a blocking type whose data changes every
// 10 ms waits; ReloadOptions to 10/s (burst 1) makes the waiting fetch
// happen within 100 ms (its wait starts over under the new limit), and
// fetches then follow 100 ms apart; ReloadOptions to rate 0 lifts the limit
// (a fetch every 10 ms); a new rate then applies again.
//
// Without ReloadOptions reaching the waiting loop, the fetch would wait out
// the rest of the hour.
func TestReloadOptions_rateAppliesToWaitingFetch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := newCache(t, &Options{EntryFetchRate: rate.Every(time.Hour), EntryFetchMaxBurst: 1})
		var log fetchLog
		c.RegisterType("t", changingType(t, &log, 10*time.Millisecond, release), &RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})
		requireGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(10 * time.Minute)
		require.Equal(t, 1, log.count(), "waiting for the limiter")

		reload := time.Now()
		require.True(t, c.ReloadOptions(Options{EntryFetchRate: 10, EntryFetchMaxBurst: 1}))
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		require.Equal(t, 2, log.count(), "the waiting fetch went within 100 ms")
		time.Sleep(time.Until(reload.Add(time.Second)))
		times := log.startTimes()[1:]
		require.Len(t, times, 10, "10 fetches in the second after the reload")
		for i := 1; i < len(times); i++ {
			require.InDelta(t, float64(100*time.Millisecond), float64(times[i].Sub(times[i-1])), float64(time.Millisecond), "gap before fetch %d", i)
		}

		n := log.count()
		require.True(t, c.ReloadOptions(Options{}))
		time.Sleep(time.Second)
		synctest.Wait()
		unlimited := log.count() - n
		require.GreaterOrEqual(t, unlimited, 95, "no limit: a fetch every 10 ms")
		require.LessOrEqual(t, unlimited, 101)

		n = log.count()
		require.True(t, c.ReloadOptions(Options{EntryFetchRate: 10, EntryFetchMaxBurst: 1}))
		time.Sleep(time.Second)
		synctest.Wait()
		require.LessOrEqual(t, log.count()-n, 11, "limited again")
		require.GreaterOrEqual(t, log.count()-n, 9)
	})
}

// TestReloadOptions_limitsExistingEntries pins that ReloadOptions gives the
// existing entries of a cache started without a limit the new rate: their
// running refresh loops slow down.
//
// Without it, only entries created after the reload would be limited.
func TestReloadOptions_limitsExistingEntries(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := newCache(t, nil)
		var logA, logB fetchLog
		c.RegisterType("a", changingType(t, &logA, 10*time.Millisecond, release), &RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})
		c.RegisterType("b", changingType(t, &logB, 10*time.Millisecond, release), nil)
		requireGet(t, c, "a", RequestInfo{Key: "k"})
		requireGet(t, c, "b", RequestInfo{Key: "k"})
		time.Sleep(time.Second)
		require.Greater(t, logA.count(), 90, "unlimited")

		require.True(t, c.ReloadOptions(Options{EntryFetchRate: 1, EntryFetchMaxBurst: 1}))
		n := logA.count()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		require.LessOrEqual(t, logA.count()-n, 11, "the running refresh is limited")

		// An entry whose loop is not running (no Refresh) is limited too, from its next fetch.
		for i := 1; i <= 5; i++ {
			requireGet(t, c, "b", RequestInfo{Key: "k", MinIndex: uint64(i)})
		}
		require.Equal(t, 6, logB.count())
		b := logB.startTimes()
		require.GreaterOrEqual(t, b[5].Sub(b[1]), 3*time.Second, "one fetch a second")
	})
}

// TestReloadOptions_logger pins that a new Logger receives the fetch
// failures from the reload on, and the old one no more; Options{} then
// discards them.
//
// Without ReloadOptions applying the logger, A would keep them all.
func TestReloadOptions_logger(t *testing.T) {
	t.Parallel()
	var a, b logBuf
	c := New(&Options{Logger: a.logger()})
	defer c.Close()
	c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{}, errors.New("server unavailable")
	}), nil)
	get := func(k string) {
		_, _, err := c.Get("t", RequestInfo{Key: k})
		require.EqualError(t, err, "server unavailable")
	}
	get("k1")
	require.True(t, c.ReloadOptions(Options{Logger: b.logger()}))
	get("k2")
	require.True(t, c.ReloadOptions(Options{}))
	get("k3")

	failed := `msg="cache: fetch failed"`
	require.Len(t, a.lines(failed, "key=k1"), 1)
	require.Empty(t, a.lines(failed, "key=k2"))
	require.Len(t, b.lines(failed, "key=k2", `error="server unavailable"`), 1)
	require.Empty(t, b.lines(failed, "key=k1"))
	require.Empty(t, a.lines("key=k3"))
	require.Empty(t, b.lines("key=k3"))
}

// TestReloadOptions_maxEntriesEvictsAtOnce pins that ReloadOptions with a
// lower MaxEntries (or a first one) evicts down to the bound at once, the
// entries closest to expiry first, counted as evict_size, with the
// entries_count gauge following; a higher bound evicts nothing.
//
// Without it, the cache would stay over the bound until the next entry is
// created.
func TestReloadOptions_maxEntriesEvictsAtOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m, sink := newMetrics(t)
		c, _ := newCache(t, &Options{Metrics: m})
		// Metrics are New's: the reloads leave them out.
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), nil)
		keys := []string{"k1", "k2", "k3", "k4", "k5", "k6"}
		for _, k := range keys {
			requireGet(t, c, "t", RequestInfo{Key: k})
			time.Sleep(time.Second)
		}
		requireGet(t, c, "t", RequestInfo{Key: "k1"}) // now the most recently used
		present := func(want ...string) {
			t.Helper()
			for _, k := range keys {
				require.Equal(t, slices.Contains(want, k), isCachedKey(c, "t", k), "entry %s", k)
			}
			require.Equal(t, int64(len(want)), c.count.Load())
			require.Equal(t, float32(len(want)), sinkGauge(t, sink, "consul.cache.entries_count"))
		}

		require.True(t, c.ReloadOptions(Options{MaxEntries: 4}))
		present("k1", "k4", "k5", "k6")
		require.Equal(t, 2, sinkCounter(sink, "consul.cache.evict_size"))

		require.True(t, c.ReloadOptions(Options{MaxEntries: 5}))
		present("k1", "k4", "k5", "k6")

		require.True(t, c.ReloadOptions(Options{MaxEntries: 2}))
		present("k1", "k6")
		require.Equal(t, 4, sinkCounter(sink, "consul.cache.evict_size"))
		require.Equal(t, 0, sinkCounter(sink, "consul.cache.evict_expired"))
		_, meta := requireGet(t, c, "t", RequestInfo{Key: "k1"})
		require.True(t, meta.Hit)
		require.Equal(t, len(keys), log.count(), "no fetch for the reloads")
	})
}

// TestReloadOptions_concurrentWithGets (run it under -race) pins that
// ReloadOptions is safe with Gets, fetches and refresh loops in flight:
// while goroutines Get several keys of a type without refresh (each Get
// revalidates, so it fetches through the limiter) and of a refreshing
// type, another alternates two settings (rate limit, MaxEntries, logger)
// 200 times. Every Get succeeds. A context deadline bounds the
// test.
//
// Without the synchronisation of the settings, limiters and reload
// channel, the race detector would fail it.
func TestReloadOptions_concurrentWithGets(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var logs logBuf
	c := New(nil)
	defer c.Close()
	var fetches atomic.Int64
	c.RegisterType("poll", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{Value: r.CacheInfo().Key, Index: uint64(fetches.Add(1))}, nil
	}), nil)
	c.RegisterType("refresh", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
		fetches.Add(1)
		return FetchResult{Value: r.CacheInfo().Key, Index: o.MinIndex + 1}, nil
	}), &RegisterOptions{Refresh: true, RefreshTimer: 5 * time.Millisecond})

	settings := []Options{
		{EntryFetchRate: 2000, EntryFetchMaxBurst: 5, MaxEntries: 5, Logger: logs.logger()},
		{},
	}
	reloads := make(chan error, 1)
	started := make(chan struct{}) // closed once a first Get succeeded
	var once sync.Once
	go func() {
		select {
		case <-started:
		case <-ctx.Done():
		}
		for i := 0; i < 200; i++ {
			if !c.ReloadOptions(settings[i%2]) {
				reloads <- fmt.Errorf("reload %d: no change reported", i)
				return
			}
		}
		reloads <- nil
	}()

	keys := []string{"a", "b", "c", "d"}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	var done atomic.Bool
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50 || !done.Load(); i++ {
				typ, k := []string{"poll", "refresh"}[i%2], keys[(g+i)%len(keys)]
				v, _, err := c.GetContext(ctx, typ, RequestInfo{Key: k, MustRevalidate: true})
				if err == nil && v != k {
					err = fmt.Errorf("value %v", v)
				}
				if err != nil {
					errs <- fmt.Errorf("Get %d of %s %s: %w", i, typ, k, err)
					return
				}
				once.Do(func() { close(started) })
			}
		}()
	}
	select {
	case err := <-reloads:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("the reloads did not finish")
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.NoError(t, ctx.Err())
	t.Logf("%d fetches", fetches.Load())
}
