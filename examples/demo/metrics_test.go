package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/examples/etcdcache"
	metrics "github.com/armon/go-metrics"
	"github.com/prometheus/common/expfmt"
)

// summaryRow matches a row of the summary: its name, then, after two
// spaces or more, a count.
var summaryRow = regexp.MustCompile(`^\s*(\S.*?)\s{2,}([0-9][0-9,]*)(?:\s|$)`)

// summaryCounts returns the counts of the summary's rows, by name.
func summaryCounts(t *testing.T, summary string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for line := range strings.Lines(summary) {
		m := summaryRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(strings.ReplaceAll(m[2], ",", ""), 64)
		if err != nil {
			t.Fatalf("row %q: %v", line, err)
		}
		out[m[1]] = v
	}
	return out
}

// scrape returns the counters and gauges that url serves in Prometheus's
// text format.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	var p expfmt.TextParser
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				out[name] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[name] += m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// TestMetricsEndpoint runs a short demo with -metrics-addr as run sets it
// up, against an embedded etcd, and checks that /metrics serves the
// cache's hit, miss and fetch counters with the counts the summary
// prints, and /debug/cache/entries the cache's entries.
func TestMetricsEndpoint(t *testing.T) {
	b, err := openBackend("")
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	prom, err := newPromMetrics("127.0.0.1:0", "kv", "prefix")
	if err != nil {
		t.Fatal(err)
	}
	inmem := metrics.NewInmemSink(time.Second, time.Minute)
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	if _, err := metrics.NewGlobal(cfg, prom.sinks(inmem)); err != nil {
		t.Fatal(err)
	}
	defer metrics.NewGlobal(cfg, &metrics.BlackholeSink{})

	c := cache.New(nil)
	reg := &cache.RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute}
	c.RegisterType("kv", &etcdcache.KV{Client: b.cli}, reg)
	c.RegisterType("prefix", &etcdcache.Prefix{Client: b.cli}, reg)
	o := options{readers: 8, keys: 10, writesPerSec: 50, think: time.Millisecond, prefix: "/agentcache-demo-metrics-test/"}
	w := &workload{caches: []*cache.Cache{c}, cli: b.cli, prefix: o.prefix, readers: o.readers, think: o.think, writesPerSec: o.writesPerSec}
	defer w.cleanup()
	defer c.Close()
	var announced bytes.Buffer
	addr, stop, err := prom.serve(c, &announced)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if !strings.Contains(announced.String(), "http://"+addr+"/metrics") {
		t.Errorf("serve said %q", announced.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.seed(ctx, o.keys); err != nil {
		t.Fatal(err)
	}
	runCtx, cancelRun := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancelRun()
	r := &reporter{tally: newTally(inmem), w: w, started: time.Now()}
	wait, err := w.start(runCtx)
	if err != nil {
		t.Fatal(err)
	}
	wait()

	requireSummaryScraped(t, r, o, "http://"+addr+"/metrics")
	requireEntriesServed(t, "http://"+addr+"/debug/cache/entries?type=kv", o.keys)
}

// requireSummaryScraped fails unless, once the fetches still in flight
// have ended, the counts of r's summary are what url serves.
func requireSummaryScraped(t *testing.T, r *reporter, o options, url string) {
	t.Helper()
	rows := map[string][]string{
		"client Gets (kv)":            {"consul_cache_kv_hit", "consul_cache_kv_miss_new", "consul_cache_kv_miss_block"},
		"cache hits":                  {"consul_cache_kv_hit"},
		"misses, new entry":           {"consul_cache_kv_miss_new"},
		"misses, blocking":            {"consul_cache_kv_miss_block"},
		"backend fetches (all types)": {"consul_cache_fetch_success", "consul_cache_fetch_error"},
		"kv":                          {"consul_cache_kv_fetch_success", "consul_cache_kv_fetch_error"},
		"prefix":                      {"consul_cache_prefix_fetch_success", "consul_cache_prefix_fetch_error"},
		"failed":                      {"consul_cache_fetch_error"},
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var summary bytes.Buffer
		r.out = &summary
		r.summary(o, "test")
		printed, scraped := summaryCounts(t, summary.String()), scrape(t, url)
		var diffs []string
		for row, names := range rows {
			sum := 0.0
			for _, n := range names {
				sum += scraped[n]
			}
			if p, ok := printed[row]; !ok || p != sum {
				diffs = append(diffs, fmt.Sprintf("%q: summary %v (printed: %t), /metrics %v", row, p, ok, sum))
			}
		}
		if len(diffs) == 0 {
			if printed["cache hits"] == 0 || printed["backend fetches (all types)"] == 0 {
				t.Fatalf("nothing was counted:\n%s", summary.String())
			}
			t.Logf("summary:\n%s", summary.String())
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the summary and /metrics differ:\n%s\n%s", strings.Join(diffs, "\n"), summary.String())
		}
		time.Sleep(20 * time.Millisecond) // a fetch in flight may still count
	}
}

// requireEntriesServed fails unless url serves, in JSON, n entries of type
// kv, each with a value that a refresh keeps current.
func requireEntriesServed(t *testing.T, url string, n int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	var page struct {
		Matched int
		Entries []struct {
			Type       string
			Key        string
			HasValue   bool `json:"has_value"`
			Refreshing bool
		}
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
	if page.Matched != n || len(page.Entries) != n {
		t.Fatalf("%d entries matched, %d shown, want %d: %s", page.Matched, len(page.Entries), n, body)
	}
	for _, e := range page.Entries {
		if e.Type != "kv" || !e.HasValue || !e.Refreshing {
			t.Errorf("entry %+v", e)
		}
	}
}
