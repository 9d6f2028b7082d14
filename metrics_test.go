package cache

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// Pins: skipping the untouched global blackhole is decided per metric, not
// once: a global sink installed after New receives the cache's metrics.
func TestMetrics_globalSinkInstalledAfterNew(t *testing.T) {
	c := TestCache(t)
	typ := TestType(t)
	typ.Static(FetchResult{Value: 1, Index: 1}, nil)
	c.RegisterType("late", typ, nil)
	_, _, err := c.Get("late", TestRequest(t, RequestInfo{Key: "k"}))
	require.NoError(t, err)

	sink := installSink(t) // global metrics: not parallel
	_, meta, err := c.Get("late", TestRequest(t, RequestInfo{Key: "k"}))
	require.NoError(t, err)
	require.True(t, meta.Hit)
	require.Equal(t, 1, sinkCounter(sink, "consul.cache.late.hit"))
}

// ---------------------------------------------------------------------------
// Metric names.

// Pins the go-metrics names: per-type hit, miss_new, miss_block,
// fetch_success and fetch_error, the global fetch_success, fetch_error and
// evict_expired counters, and the entries_count gauge.
func TestCacheGet_metrics(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{}, errors.New("e")).Once()
		log.on(typ, nil, FetchResult{Value: "v6", Index: 6}, nil).Times(2)
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("metrics_t", typ, &RegisterOptions{LastGetTTL: time.Hour})

		requireGet(t, c, "metrics_t", RequestInfo{Key: "k1"})                                // miss_new, fetch_success
		requireGet(t, c, "metrics_t", RequestInfo{Key: "k1"})                                // hit
		_, _, err := c.Get("metrics_t", TestRequest(t, RequestInfo{Key: "k1", MinIndex: 5})) // miss_block, fetch_error
		require.Error(t, err)
		requireGet(t, c, "metrics_t", RequestInfo{Key: "k1", MinIndex: 5}) // miss_block, fetch_success
		require.Equal(t, float32(1), sinkGauge(t, sink, "consul.cache.entries_count"))
		requireGet(t, c, "metrics_t", RequestInfo{Key: "k2"}) // miss_new, fetch_success
		require.Equal(t, float32(2), sinkGauge(t, sink, "consul.cache.entries_count"))
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
			require.Equal(t, want, sinkCounter(sink, name), name)
		}
		require.Equal(t, float32(0), sinkGauge(t, sink, "consul.cache.entries_count"))
	})
}

// ---------------------------------------------------------------------------
// Metrics prefix and instance.

// Pins: Options.MetricsPrefix replaces "consul.cache" in every metric name (global sink: not parallel).
func TestEmbedding_MetricsPrefix(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, &Options{MetricsPrefix: []string{"myapp", "kv"}})
		c.RegisterType("pt", BlockingFetchFunc(func(o FetchOptions, _ Request) (FetchResult, error) {
			return FetchResult{Value: o.MinIndex + 1, Index: o.MinIndex + 1}, nil
		}), &RegisterOptions{LastGetTTL: time.Hour})
		c.RegisterType("pe", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{}, errors.New("down")
		}), &RegisterOptions{LastGetTTL: time.Hour})
		c.RegisterType("pp", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			panic("boom")
		}), &RegisterOptions{LastGetTTL: time.Hour})

		requireGet(t, c, "pt", RequestInfo{Key: "k"})              // miss_new
		requireGet(t, c, "pt", RequestInfo{Key: "k"})              // hit
		requireGet(t, c, "pt", RequestInfo{Key: "k", MinIndex: 1}) // miss_block
		requireGet(t, c, "pt", RequestInfo{})                      // bypass
		for _, typ := range []string{"pe", "pp"} {
			_, _, err := c.Get(typ, RequestInfo{Key: "k"})
			require.Error(t, err)
		}
		require.Equal(t, float32(3), sinkGauge(t, sink, "myapp.kv.entries_count"))
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
			require.Equal(t, want, sinkCounter(sink, name), name)
		}
		require.Equal(t, float32(0), sinkGauge(t, sink, "myapp.kv.entries_count"))
		for _, n := range metricNames(sink) {
			require.False(t, strings.HasPrefix(n, "consul."), "metric %s has the default prefix", n)
		}
	})
}

// Pins: Options.Metrics gets the default-named metrics and the global sink none (global sink: not parallel).
func TestEmbedding_MetricsInstance(t *testing.T) {
	global := installSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		m, own := newMetrics(t)
		c, _ := newCache(t, &Options{Metrics: m})
		c.RegisterType("inst_t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{Value: "v", Index: 1}, nil
		}), &RegisterOptions{LastGetTTL: time.Hour})
		c.RegisterType("inst_p", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			panic("boom")
		}), &RegisterOptions{LastGetTTL: time.Hour})

		requireGet(t, c, "inst_t", RequestInfo{Key: "k"}) // miss_new
		requireGet(t, c, "inst_t", RequestInfo{Key: "k"}) // hit
		requireGet(t, c, "inst_t", RequestInfo{})         // bypass
		_, _, err := c.Get("inst_p", RequestInfo{Key: "k"})
		require.Error(t, err)
		require.Equal(t, float32(2), sinkGauge(t, own, "consul.cache.entries_count"))
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
			require.Equal(t, want, sinkCounter(own, name), name)
		}
		require.Equal(t, float32(0), sinkGauge(t, own, "consul.cache.entries_count"))
	})
	require.Empty(t, metricNames(global), "the global go-metrics sink got the instance's metrics")
}
