package cache

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkNotifyWatchers measures idle Notify watchers of a blocking type,
// 1,000, 10,000 and 100,000 of them over 100 keys. B/watcher is what each
// costs once all first events were delivered and every watch waits for a
// change: the growth of the live heap and of goroutine stacks, after a GC,
// divided by the number of watchers. ms/change (and ns/op) is the time to
// deliver one change of every key to all watchers.
func BenchmarkNotifyWatchers(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchNotifyWatchers(b, n) })
	}
}

// benchNotifyWatchers is BenchmarkNotifyWatchers for n watchers.
func benchNotifyWatchers(b *testing.B, n int) {
	c, bb, keys, ctx := benchWatched(b, 100)
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = RequestInfo{Key: keys[i%len(keys)]}
	}

	var delivered atomic.Int64
	cb := func(context.Context, UpdateEvent) { delivered.Add(1) }
	before := benchMemInUse()
	for _, r := range reqs {
		if err := c.NotifyCallback(ctx, "t", r, "", cb); err != nil {
			b.Fatal(err)
		}
	}
	benchWaitDelivered(b, &delivered, int64(n))
	benchWaitIdle(b, c, n)
	perWatcher := float64(benchMemInUse()-before) / float64(n)

	var rounds int64
	b.ResetTimer()
	for b.Loop() {
		for _, k := range keys {
			bb.bump(k)
		}
		rounds++
		benchWaitDelivered(b, &delivered, int64(n)*(rounds+1))
	}
	b.StopTimer()
	b.ReportMetric(perWatcher, "B/watcher")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e6/float64(rounds), "ms/change")
}

// benchWatched returns a cache with the type "t" of a benchBackend over
// nkeys keys, and a context for watches, all ended when b ends.
func benchWatched(b *testing.B, nkeys int) (*Cache, *benchBackend, []string, context.Context) {
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = "watch-" + strconv.Itoa(i)
	}
	bb := newBenchBackend(keys)
	c := New(nil)
	c.RegisterType("t", bb, &RegisterOptions{RefreshTimeout: 10 * time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() {
		cancel()
		close(bb.done)
		c.Close()
	})
	return c, bb, keys, ctx
}

// benchMemInUse returns the live heap and goroutine stacks, after a GC.
func benchMemInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}

// benchWaitDelivered waits until delivered reaches want.
func benchWaitDelivered(b *testing.B, delivered *atomic.Int64, want int64) {
	deadline := time.Now().Add(time.Minute)
	for delivered.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d events delivered", delivered.Load(), want)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// benchWaitIdle waits until the n watches of c all wait on their entries
// and the goroutine count has settled.
func benchWaitIdle(b *testing.B, c *Cache, n int) {
	deadline := time.Now().Add(time.Minute)
	for {
		waiting := 0
		for _, e := range c.Entries(EntryFilter{}) {
			waiting += e.Watchers
		}
		if waiting == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d watches wait", waiting, n)
		}
		time.Sleep(100 * time.Microsecond)
	}
	for last, still := runtime.NumGoroutine(), 0; still < 3; {
		time.Sleep(time.Millisecond)
		if g := runtime.NumGoroutine(); g != last {
			last, still = g, 0
			continue
		}
		still++
	}
}
