package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/cachehttp"
	metrics "github.com/armon/go-metrics"
	prommetrics "github.com/armon/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// promMetrics is what -metrics-addr turns on: a go-metrics sink that keeps
// the cache's metrics for Prometheus, and an HTTP server that serves them
// at /metrics, with the cache's entries at /debug/cache/entries. A nil
// *promMetrics is the flag's default: off.
type promMetrics struct {
	addr string
	reg  *prometheus.Registry
	sink *prommetrics.PrometheusSink
}

// newPromMetrics returns the endpoint to serve at addr, for a cache with
// the given types, or nil if addr is empty.
func newPromMetrics(addr string, types ...string) (*promMetrics, error) {
	if addr == "" {
		return nil, nil
	}
	reg := prometheus.NewRegistry()
	sink, err := prommetrics.NewPrometheusSinkFrom(prommetrics.PrometheusOpts{
		Registerer: reg,
		Name:       "agentcache_demo",
		// Declared metrics start at 0 and are never dropped; declaring
		// them also keeps the sink from losing increments to the race of
		// two goroutines creating one counter.
		CounterDefinitions: cacheCounterDefinitions(types),
		GaugeDefinitions: []prommetrics.GaugeDefinition{
			{Name: []string{"consul", "cache", "entries_count"}, Help: "Entries in the cache."},
		},
	})
	if err != nil {
		return nil, err
	}
	return &promMetrics{addr: addr, reg: reg, sink: sink}, nil
}

// cacheCounterDefinitions declares the cache's counters (see the README's
// table of metrics) for the given types.
func cacheCounterDefinitions(types []string) []prommetrics.CounterDefinition {
	var defs []prommetrics.CounterDefinition
	add := func(help string, parts ...string) {
		defs = append(defs, prommetrics.CounterDefinition{Name: append([]string{"consul", "cache"}, parts...), Help: help})
	}
	add("Gets with an empty Key, which bypass the cache.", "bypass")
	add("Fetches without error, all types.", "fetch_success")
	add("Fetches with an error, all types.", "fetch_error")
	add("Fetches whose Fetch panicked, all types.", "fetch_panic")
	add("Entries removed by TTL.", "evict_expired")
	add("Entries removed to stay within MaxEntries.", "evict_size")
	for _, t := range types {
		add("Gets served from the cache.", t, "hit")
		add("Misses with MinIndex 0.", t, "miss_new")
		add("Misses with MinIndex above 0 (blocking).", t, "miss_block")
		add("Fetches without error.", t, "fetch_success")
		add("Fetches with an error.", t, "fetch_error")
		add("Fetches whose Fetch panicked.", t, "fetch_panic")
		add("Fetches that returned NotModified.", t, "fetch_not_modified")
		add("Fetches whose error was wrapped by StopRefresh.", t, "fetch_error_terminal")
	}
	return defs
}

// sinks returns where the demo's metrics go: to inmem, which the status
// lines and the summary read, and to Prometheus too unless p is nil.
func (p *promMetrics) sinks(inmem metrics.MetricSink) metrics.MetricSink {
	if p == nil {
		return inmem
	}
	return metrics.FanoutSink{inmem, p.sink}
}

// serve starts serving p's endpoints for c, says where on out, and returns
// the address it listens on and a function that stops the server. For a
// nil p it does nothing.
func (p *promMetrics) serve(c *cache.Cache, out io.Writer) (addr string, stop func(), err error) {
	if p == nil {
		return "", func() {}, nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return "", nil, fmt.Errorf("-metrics-addr: %w", err)
	}
	srv := &http.Server{Handler: debugMux(c, p.reg), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // ends with Shutdown
	}()
	addr = ln.Addr().String()
	fmt.Fprintf(out, "metrics at http://%s/metrics, entries at http://%s/debug/cache/entries\n", addr, addr)
	return addr, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// debugMux returns the demo's debug endpoints: the metrics that g gathers
// at /metrics, in Prometheus's text format, and c's entries at
// /debug/cache/entries.
func debugMux(c *cache.Cache, g prometheus.Gatherer) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.Handle("/debug/cache/entries", cachehttp.EntriesHandler(c))
	return mux
}
