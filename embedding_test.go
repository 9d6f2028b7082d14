package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	metrics "github.com/armon/go-metrics"
	"github.com/stretchr/testify/require"
)

// embToken is an ACL token that must never leak out of the cache.
const embToken = "s3cr3t-acl-7f2e9c"

// embLogBuf is a goroutine-safe buffer for a slog text handler.
type embLogBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *embLogBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *embLogBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the lines whose message starts with "cache:" and contains
// msg.
func (b *embLogBuf) lines(msg string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, `msg="cache:`) && strings.Contains(l, msg) {
			out = append(out, l)
		}
	}
	return out
}

// embLogger returns a debug-level text logger writing to b.
func embLogger(b *embLogBuf) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// embNew returns a cache with the given options, closed when the test ends,
// and a channel closed right after that (as cacheBubble does).
func embNew(t *testing.T, o *Options) (*Cache, <-chan struct{}) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	c := New(o)
	t.Cleanup(func() { c.Close() })
	return c, release
}

// embMetrics returns a go-metrics instance (not the global one) reporting to
// a fresh InmemSink whose interval never rotates.
func embMetrics(t *testing.T) (*metrics.Metrics, *metrics.InmemSink) {
	t.Helper()
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	sink := metrics.NewInmemSink(1<<62, 1<<62)
	m, err := metrics.New(cfg, sink)
	require.NoError(t, err)
	return m, sink
}

// embMetricNames lists every counter, gauge and sample name in sink.
func embMetricNames(sink *metrics.InmemSink) []string {
	var names []string
	for _, iv := range sink.Data() {
		for k := range iv.Counters {
			names = append(names, k)
		}
		for k := range iv.Gauges {
			names = append(names, k)
		}
		for k := range iv.Samples {
			names = append(names, k)
		}
	}
	return names
}

// embCalls records the options and fake start time of every call of a
// function-typed Type.
type embCalls struct {
	mu    sync.Mutex
	opts  []FetchOptions
	reqs  []Request
	times []time.Time
}

func (c *embCalls) add(o FetchOptions, r Request) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opts = append(c.opts, o)
	c.reqs = append(c.reqs, r)
	c.times = append(c.times, time.Now())
	return len(c.opts)
}

func (c *embCalls) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.opts)
}

func (c *embCalls) opt(i int) FetchOptions {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opts[i]
}

func (c *embCalls) req(i int) Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reqs[i]
}

func (c *embCalls) startTimes() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.times...)
}

// embTokenErr is a Type error that quotes the request's token, as careless
// RPC layers do.
func embTokenErr(r Request) error {
	return fmt.Errorf("permission denied for token %s", r.CacheInfo().Token)
}

// ---------------------------------------------------------------------------
// Logger.

// Pins: a failed fetch logs a WARN on Options.Logger with type, datacenter, key, error and failure count.
func TestEmbedding_LoggerFetchError(t *testing.T) {
	t.Parallel()
	var buf embLogBuf
	c, _ := embNew(t, &Options{Logger: embLogger(&buf)})
	c.RegisterType("logt", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{}, errors.New("backend down")
	}), nil)

	_, _, err := c.Get("logt", RequestInfo{Key: "k1", Datacenter: "dc1"})
	require.EqualError(t, err, "backend down")

	lines := buf.lines("fetch failed")
	require.Len(t, lines, 1, buf.String())
	for _, want := range []string{"level=WARN", "type=logt", "datacenter=dc1", "key=k1", `error="backend down"`, "failures=1"} {
		require.Contains(t, lines[0], want)
	}
}

// Pins: each back-off wait of a refresh loop (4th failure on) logs a DEBUG line with the entry's attributes.
func TestEmbedding_LoggerBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var buf embLogBuf
		c, _ := embNew(t, &Options{Logger: embLogger(&buf)})
		var calls embCalls
		c.RegisterType("logt", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			calls.add(o, r)
			return FetchResult{}, errors.New("down")
		}), &RegisterOptions{Refresh: true})
		_, _, err := c.Get("logt", RequestInfo{Key: "k1", Datacenter: "dc2"})
		require.Error(t, err)

		time.Sleep(10 * time.Second) // failures 1-3 at once, then 2s..4s, 4s..8s
		synctest.Wait()
		require.GreaterOrEqual(t, calls.count(), 5)
		lines := buf.lines("backing off")
		require.Len(t, lines, calls.count()-3, buf.String())
		for _, want := range []string{"level=DEBUG", "type=logt", "datacenter=dc2", "key=k1", "failures=4", "wait="} {
			require.Contains(t, lines[0], want)
		}
		require.Len(t, buf.lines("fetch failed"), calls.count())
	})
}

// Pins: a panicking fetch logs an ERROR with the entry's attributes, the panic value and a stack trace.
func TestEmbedding_LoggerPanic(t *testing.T) {
	t.Parallel()
	var buf embLogBuf
	c, _ := embNew(t, &Options{Logger: embLogger(&buf)})
	c.RegisterType("logt", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		panic("nil map write")
	}), nil)

	_, _, err := c.Get("logt", RequestInfo{Key: "k1", Datacenter: "dc1"})
	require.Error(t, err)

	lines := buf.lines("fetch panicked")
	require.Len(t, lines, 1, buf.String())
	for _, want := range []string{"level=ERROR", "type=logt", "datacenter=dc1", "key=k1", `panic="nil map write"`, "stack=", "goroutine"} {
		require.Contains(t, lines[0], want)
	}
}

// Pins: a nil Options.Logger discards, not slog.Default (not parallel: swaps the default logger).
func TestEmbedding_NilLoggerDiscards(t *testing.T) {
	var buf embLogBuf
	oldSlog, oldOut, oldFlags := slog.Default(), log.Writer(), log.Flags()
	slog.SetDefault(embLogger(&buf))
	t.Cleanup(func() {
		slog.SetDefault(oldSlog)
		log.SetOutput(oldOut)
		log.SetFlags(oldFlags)
	})

	synctest.Test(t, func(t *testing.T) {
		c, _ := embNew(t, &Options{Logger: nil})
		var calls embCalls
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
// ACL token secrecy.

// Pins: the token is in no log line (errors, panics, back-off; Type messages redacted, rest kept) nor metric name.
func TestEmbedding_TokenNotLoggedNorInMetricNames(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var buf embLogBuf
		m, sink := embMetrics(t)
		c, _ := embNew(t, &Options{Logger: embLogger(&buf), Metrics: m})
		c.RegisterType("errt", BlockingFetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			return FetchResult{}, embTokenErr(r)
		}), &RegisterOptions{Refresh: true})
		c.RegisterType("panict", BlockingFetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			panic("bad token " + r.CacheInfo().Token)
		}), &RegisterOptions{Refresh: true})
		c.RegisterType("okt", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{Value: "v", Index: 1}, nil
		}), &RegisterOptions{LastGetTTL: time.Minute})

		req := RequestInfo{Token: embToken, Datacenter: "dc1", Key: "k"}
		for _, typ := range []string{"errt", "panict"} {
			_, _, err := c.Get(typ, req)
			require.Error(t, err)
		}
		for range 2 {
			v, _, err := c.Get("okt", req) // miss, then hit
			require.NoError(t, err)
			require.Equal(t, "v", v)
		}
		time.Sleep(5 * time.Minute) // back-off rounds and the expiry of okt
		synctest.Wait()

		logs := buf.String()
		require.NotContains(t, logs, embToken)
		require.NotEmpty(t, buf.lines("backing off"))
		require.Contains(t, logs, "permission denied for token", "the error is logged, redacted")
		require.Contains(t, logs, "bad token", "the panic value is logged, redacted")

		names := embMetricNames(sink)
		require.Contains(t, names, "consul.cache.okt.hit")
		require.Contains(t, names, "consul.cache.panict.fetch_panic")
		for _, n := range names {
			require.NotContains(t, n, embToken)
		}
	})
}

// Pins: a waiter's panic error has the token redacted from the panic value, the rest kept.
func TestEmbedding_TokenRedactedFromPanicError(t *testing.T) {
	t.Parallel()
	c, _ := embNew(t, nil)
	c.RegisterType("panict", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		panic(embTokenErr(r))
	}), nil)

	_, _, err := c.Get("panict", RequestInfo{Token: embToken, Key: "k"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), embToken)
	require.Contains(t, err.Error(), "permission denied for token")
}

// Pins: Get and Notify errors from a Type error quoting the token have it redacted, the rest kept.
func TestEmbedding_TokenRedactedFromFetchError(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := embNew(t, nil)
		c.RegisterType("errt", BlockingFetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			return FetchResult{}, embTokenErr(r)
		}), nil)
		req := RequestInfo{Token: embToken, Key: "k"}

		_, _, err := c.Get("errt", req)
		require.Error(t, err)
		require.NotContains(t, err.Error(), embToken)
		require.Contains(t, err.Error(), "permission denied for token")

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var evErr atomic.Pointer[error]
		require.NoError(t, c.NotifyCallback(ctx, "errt", req, "id", func(_ context.Context, e UpdateEvent) {
			evErr.CompareAndSwap(nil, &e.Err)
		}))
		synctest.Wait()
		require.NotNil(t, evErr.Load())
		require.Error(t, *evErr.Load())
		require.NotContains(t, (*evErr.Load()).Error(), embToken)
		cancel()
	})
}

// Pins: a bypass Get (empty Key) also gets the Type's error with the token redacted.
func TestEmbedding_TokenRedactedFromBypassError(t *testing.T) {
	t.Parallel()
	c, _ := embNew(t, nil)
	c.RegisterType("errt", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{}, embTokenErr(r)
	}), nil)

	_, _, err := c.Get("errt", RequestInfo{Token: embToken})
	require.Error(t, err)
	require.NotContains(t, err.Error(), embToken)
	require.Contains(t, err.Error(), "permission denied for token")
}

// ---------------------------------------------------------------------------
// Metrics prefix and instance.

// Pins: Options.MetricsPrefix replaces "consul.cache" in every metric name (global sink: not parallel).
func TestEmbedding_MetricsPrefix(t *testing.T) {
	sink := cacheInstallSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, _ := embNew(t, &Options{MetricsPrefix: []string{"myapp", "kv"}})
		c.RegisterType("pt", BlockingFetchFunc(func(o FetchOptions, _ Request) (FetchResult, error) {
			return FetchResult{Value: o.MinIndex + 1, Index: o.MinIndex + 1}, nil
		}), &RegisterOptions{LastGetTTL: time.Hour})
		c.RegisterType("pe", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{}, errors.New("down")
		}), &RegisterOptions{LastGetTTL: time.Hour})
		c.RegisterType("pp", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			panic("boom")
		}), &RegisterOptions{LastGetTTL: time.Hour})

		cacheGet(t, c, "pt", RequestInfo{Key: "k"})              // miss_new
		cacheGet(t, c, "pt", RequestInfo{Key: "k"})              // hit
		cacheGet(t, c, "pt", RequestInfo{Key: "k", MinIndex: 1}) // miss_block
		cacheGet(t, c, "pt", RequestInfo{})                      // bypass
		for _, typ := range []string{"pe", "pp"} {
			_, _, err := c.Get(typ, RequestInfo{Key: "k"})
			require.Error(t, err)
		}
		require.Equal(t, float32(3), cacheGauge(t, sink, "myapp.kv.entries_count"))
		time.Sleep(2 * time.Hour)

		for name, want := range map[string]int{
			"myapp.kv.bypass":           1,
			"myapp.kv.pt.hit":           1,
			"myapp.kv.pt.miss_new":      1,
			"myapp.kv.pt.miss_block":    1,
			"myapp.kv.pt.fetch_success": 2,
			"myapp.kv.fetch_success":    2,
			"myapp.kv.pe.fetch_error":   1,
			"myapp.kv.pp.fetch_error":   1,
			"myapp.kv.fetch_error":      2,
			"myapp.kv.pp.fetch_panic":   1,
			"myapp.kv.fetch_panic":      1,
			"myapp.kv.evict_expired":    3,
		} {
			require.Equal(t, want, cacheCounter(sink, name), name)
		}
		require.Equal(t, float32(0), cacheGauge(t, sink, "myapp.kv.entries_count"))
		for _, n := range embMetricNames(sink) {
			require.False(t, strings.HasPrefix(n, "consul."), "metric %s has the default prefix", n)
		}
	})
}

// Pins: Options.Metrics gets the default-named metrics and the global sink none (global sink: not parallel).
func TestEmbedding_MetricsInstance(t *testing.T) {
	global := cacheInstallSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		m, own := embMetrics(t)
		c, _ := embNew(t, &Options{Metrics: m})
		c.RegisterType("inst_t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{Value: "v", Index: 1}, nil
		}), &RegisterOptions{LastGetTTL: time.Hour})
		c.RegisterType("inst_p", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			panic("boom")
		}), &RegisterOptions{LastGetTTL: time.Hour})

		cacheGet(t, c, "inst_t", RequestInfo{Key: "k"}) // miss_new
		cacheGet(t, c, "inst_t", RequestInfo{Key: "k"}) // hit
		cacheGet(t, c, "inst_t", RequestInfo{})         // bypass
		_, _, err := c.Get("inst_p", RequestInfo{Key: "k"})
		require.Error(t, err)
		require.Equal(t, float32(2), cacheGauge(t, own, "consul.cache.entries_count"))
		time.Sleep(2 * time.Hour)

		for name, want := range map[string]int{
			"consul.cache.bypass":               1,
			"consul.cache.inst_t.hit":           1,
			"consul.cache.inst_t.miss_new":      1,
			"consul.cache.inst_t.fetch_success": 1,
			"consul.cache.fetch_success":        1,
			"consul.cache.inst_p.fetch_error":   1,
			"consul.cache.inst_p.fetch_panic":   1,
			"consul.cache.fetch_error":          1,
			"consul.cache.fetch_panic":          1,
			"consul.cache.evict_expired":        2,
		} {
			require.Equal(t, want, cacheCounter(own, name), name)
		}
		require.Equal(t, float32(0), cacheGauge(t, own, "consul.cache.entries_count"))
	})
	require.Empty(t, embMetricNames(global), "the global go-metrics sink got the instance's metrics")
}

// ---------------------------------------------------------------------------
// Panics.

// Pins: all waiters of a panicking fetch get an error naming the type and quoting the value; fetching goes on.
func TestEmbedding_PanicBecomesErrorForWaiters(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := embNew(t, nil)
		gate := make(chan struct{})
		var calls embCalls
		c.RegisterType("panic_t", FetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			if calls.add(o, r) == 1 {
				<-gate
				panic(fmt.Errorf("index out of range [%d]", 42))
			}
			return FetchResult{Value: "v", Index: 3}, nil
		}), nil)

		req := RequestInfo{Key: "k"}
		var chs []<-chan cacheGetResult
		for range 3 {
			chs = append(chs, cacheGoGet(c, "panic_t", req))
		}
		for _, ch := range chs {
			cacheRequireBlocked(t, ch)
		}
		close(gate)
		for _, ch := range chs {
			r := cacheRequireReturned(t, ch)
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
	sink := cacheInstallSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, _ := embNew(t, nil)
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
			require.Equal(t, want, cacheCounter(sink, name), name)
		}
	})
}

// Pins: a refresh loop whose Fetch keeps panicking backs off as usual (0,0,0, 2-4s, 4-8s, 8-16s).
func TestEmbedding_PanicRefreshBacksOff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := embNew(t, nil)
		var calls embCalls
		c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			calls.add(o, r)
			panic("boom")
		}), &RegisterOptions{Refresh: true})
		_, _, err := c.Get("t", RequestInfo{Key: "k"})
		require.ErrorContains(t, err, "boom")

		time.Sleep(time.Minute)
		s := time.Second
		cacheRequireGaps(t, calls.startTimes(),
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
				c, release := embNew(t, nil)
				gate := make(chan struct{})
				var calls embCalls
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
				ch1, ch2 := cacheGoGet(c, "exit_t", req), cacheGoGet(c, "exit_t", req)
				cacheRequireBlocked(t, ch1)
				cacheRequireBlocked(t, ch2)
				close(gate)
				for _, ch := range []<-chan cacheGetResult{ch1, ch2} {
					r := cacheRequireReturned(t, ch)
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
		c, _ := embNew(t, nil)
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
	c, _ := embNew(t, nil)
	c.RegisterType("panic_b", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		panic("boom")
	}), nil)

	var err error
	require.NotPanics(t, func() { _, _, err = c.Get("panic_b", RequestInfo{}) })
	require.Error(t, err)
	require.Contains(t, err.Error(), "panic_b")
	require.Contains(t, err.Error(), "boom")
}
