// Command demo shows the cache in front of etcd: many goroutines read a
// few keys through the cache while a writer changes them, and the demo
// reports how few backend fetches serve all those reads.
//
// It starts an embedded etcd server in a temporary directory unless
// -endpoints names an existing cluster. Run it from the repository root
// with:
//
//	go -C examples run ./demo
//
// With -instances N it runs N caches; adding -redis ADDR (or -redis local,
// which starts a redis-server from PATH) runs N more that share their
// fetches through redistier, and the summary compares the blocking etcd
// queries per write of the two fleets.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	metrics "github.com/armon/go-metrics"
)

// options are the command-line flags.
type options struct {
	endpoints      string
	readers        int
	keys           int
	writesPerSec   float64
	duration       time.Duration
	think          time.Duration
	refreshTimeout time.Duration
	prefix         string
	instances      int
	redis          string
	metricsAddr    string
}

func main() {
	o := parseFlags()
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// parseFlags parses and checks the command line.
func parseFlags() options {
	var o options
	flag.StringVar(&o.endpoints, "endpoints", "", "comma-separated `host:port` list of an existing etcd cluster; empty starts an embedded server in a temporary directory")
	flag.IntVar(&o.readers, "readers", 200, "number of goroutines that Get random keys through the cache")
	flag.IntVar(&o.keys, "keys", 50, "number of keys to read and write")
	flag.Float64Var(&o.writesPerSec, "writes-per-sec", 20, "rate at which the writer puts new values into random keys (0: no writer)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long the workload runs")
	flag.DurationVar(&o.think, "think", time.Millisecond, "pause between two Gets of one reader, as a client doing other work would (0: Get in a tight loop)")
	flag.DurationVar(&o.refreshTimeout, "refresh-timeout", 10*time.Minute, "longest blocking query (watch) of the background refresh")
	flag.StringVar(&o.prefix, "prefix", "/agentcache-demo/", "etcd key prefix for the demo's keys; they are deleted at the end")
	flag.IntVar(&o.instances, "instances", 1, "number of cache instances (each with its own cache.New) sharing the readers; above 1 the summary shows etcd fetches per write")
	flag.StringVar(&o.redis, "redis", "", "`host:port` of a Redis: run a second fleet of -instances caches that share their fetches through redistier, and compare; \"local\" starts a redis-server from PATH")
	flag.StringVar(&o.metricsAddr, "metrics-addr", "", "`host:port` to serve Prometheus metrics at /metrics and the cache's entries at /debug/cache/entries while the demo runs (empty: off)")
	flag.Usage = func() {
		out := flag.CommandLine.Output()
		fmt.Fprintf(out, "Usage: demo [flags]\n\n")
		fmt.Fprintf(out, "Reads etcd keys through the cache from many goroutines while a writer\n")
		fmt.Fprintf(out, "changes them, prints a status line every second and a summary at the end.\n")
		fmt.Fprintf(out, "Ctrl-C stops early and still prints the summary.\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 || o.readers < 1 || o.keys < 1 || o.writesPerSec < 0 || o.duration <= 0 || o.think < 0 || o.refreshTimeout <= 0 || o.prefix == "" || o.instances < 1 {
		flag.Usage()
		os.Exit(2)
	}
	return o
}

// run runs the demo, printing to out; every resource it acquires is
// released before it returns, also when it is interrupted.
func run(o options, out io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	sink := metrics.NewInmemSink(time.Second, time.Minute)
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	prom, err := newPromMetrics(o.metricsAddr, "kv", "prefix")
	if err != nil {
		return err
	}
	if _, err := metrics.NewGlobal(cfg, prom.sinks(sink)); err != nil {
		return err
	}

	b, err := openBackend(o.endpoints)
	if err != nil {
		return err
	}
	defer b.close()

	f, err := openFleets(o, b.cli)
	if err != nil {
		return err
	}

	w := &workload{caches: f.caches, cli: b.cli, prefix: o.prefix, readers: o.readers, think: o.think, writesPerSec: o.writesPerSec}
	defer w.cleanup() // after the caches are closed, before the client is
	defer f.close()
	// The entries view shows the first instance's cache.
	_, stopServing, err := prom.serve(f.caches[0], os.Stdout)
	if err != nil {
		return err
	}
	defer stopServing()
	seedCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = w.seed(seedCtx, o.keys)
	cancel()
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "%d readers, %d keys, %.4g writes/s for %s against %s (Ctrl-C stops)\n", o.readers, o.keys, o.writesPerSec, o.duration, b.describe())
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	r := &reporter{out: out, tally: newTally(sink), w: w, started: time.Now(), extra: f.report}
	wait, err := w.start(runCtx)
	if err != nil {
		return err
	}
	everySecond(runCtx, r.status)
	wait()
	if errors.Is(ctx.Err(), context.Canceled) {
		fmt.Fprintln(out, "interrupted")
	}
	r.summary(o, b.describe())
	return nil
}

// everySecond calls f just after each wall-clock second (when the metrics
// sink starts a new interval) until ctx is done.
func everySecond(ctx context.Context, f func()) {
	for {
		next := time.Now().Truncate(time.Second).Add(time.Second + 50*time.Millisecond)
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
			f()
		}
	}
}
