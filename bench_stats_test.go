package cache

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// statsBenchN is the number of entries of the snapshot benchmarks.
const statsBenchN = 1_000_000

// statsBenchCache returns a cache of statsBenchN entries, each filled by a
// Get, with the requests of its first 10,000 entries, created together as
// BenchmarkGetHit's are, and of all, in random order. A fetch rate limit
// keeps every entry's loop state, so that a snapshot takes every entry's
// lock: its most expensive case.
func statsBenchCache(b *testing.B) (c *Cache, hot, all []Request) {
	b.Helper()
	c = New(&Options{EntryFetchRate: 1000})
	b.Cleanup(func() { c.Close() })
	c.RegisterType("t", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{Value: 1, Index: 1}, nil
	}), nil)
	all = benchRequests(statsBenchN)
	hot = slices.Clone(all[:10_000])
	var wg sync.WaitGroup
	var failed atomic.Bool
	for _, part := range [][]Request{hot, all[len(hot):]} {
		for w := range 2 {
			wg.Go(func() {
				for i := w; i < len(part); i += 2 {
					if _, _, err := c.Get("t", part[i]); err != nil {
						failed.Store(true)
					}
				}
			})
		}
		wg.Wait()
	}
	if failed.Load() || c.count.Load() != statsBenchN {
		b.Fatalf("filled %d entries; errors: %t", c.count.Load(), failed.Load())
	}
	for _, reqs := range [][]Request{hot, all} {
		rand.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
	}
	return c, hot, all
}

// BenchmarkEntries1M measures one snapshot of a million entries: all of
// them, and none (a filter that matches nothing, the cost of the walk).
func BenchmarkEntries1M(b *testing.B) {
	c, _, _ := statsBenchCache(b)
	for _, f := range []struct {
		name string
		f    EntryFilter
	}{{"all", EntryFilter{}}, {"none", EntryFilter{Type: "none"}}} {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				n = 0
				for range c.EntriesSeq(f.f) {
					n++
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/statsBenchN, "ns/entry")
			b.ReportMetric(float64(n), "entries")
		})
	}
}

// statsRounds is how many times BenchmarkGetHitDuringSnapshot measures
// each of its cases, in turn.
const statsRounds = 10

// BenchmarkGetHitDuringSnapshot measures a warm hit from one goroutine, at
// random on 10,000 keys (as BenchmarkGetHit/cache/random) or on all of a
// million, while another goroutine does nothing (bg=none), takes
// snapshots of the million entries back to back (bg=snapshot), or, for
// control, reads the same memory of every entry as a snapshot does, without
// its locks or formatting (bg=walk): what any work on the other CPU that
// reads a million entries costs a hit.
//
// A hit on a million entries is bound by memory latency, which the
// layout of a fresh cache and the load of the machine move by several
// times. So the cases share one cache and take turns, statsRounds times
// (each a sub-benchmark of its own /round): run it with -count 1 and a
// short -benchtime, and compare with benchstat -col /bg -ignore round.
func BenchmarkGetHitDuringSnapshot(b *testing.B) {
	c, hot, all := statsBenchCache(b)
	for round := range statsRounds {
		for _, keys := range []struct {
			name string
			reqs []Request
		}{{"10k", hot}, {"1M", all}} {
			for _, bg := range []string{"none", "walk", "snapshot"} {
				name := "keys=" + keys.name + "/bg=" + bg + "/round=" + strconv.Itoa(round)
				b.Run(name, func(b *testing.B) { statsHits(b, c, keys.reqs, bg) })
			}
		}
	}
}

// statsHits is one case of BenchmarkGetHitDuringSnapshot: hits on reqs,
// with the background work bg.
func statsHits(b *testing.B, c *Cache, reqs []Request, bg string) {
	stop := statsBackground(c, bg)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, _, err := c.Get("t", reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	elapsed := b.Elapsed()
	if n := stop(); bg != "none" {
		b.ReportMetric(float64(n)/elapsed.Seconds(), "passes/s")
	}
}

// statsBackground runs the background work bg of
// BenchmarkGetHitDuringSnapshot over every entry of c, pass after pass, on
// a goroutine of its own, until the returned function is called; that
// returns how many passes it finished.
func statsBackground(c *Cache, bg string) (stop func() int) {
	if bg == "none" {
		return func() int { return 0 }
	}
	var quit atomic.Bool
	done := make(chan int)
	go func() {
		n, sink := 0, 0
		for ; !quit.Load(); n++ {
			if bg == "walk" {
				sink += statsWalk(c, &quit)
				continue
			}
			for range c.EntriesSeq(EntryFilter{}) {
				if quit.Load() {
					break
				}
			}
		}
		_ = sink
		done <- n
	}()
	// Let the first pass start before the hits are timed.
	time.Sleep(time.Millisecond)
	return func() int {
		quit.Store(true)
		return <-done
	}
}

// statsWalk reads, of every entry of c, what a snapshot reads without a
// lock (the entry, its key, result and loop state), and nothing else.
func statsWalk(c *Cache, quit *atomic.Bool) (sum int) {
	for e := range c.tableEntries() {
		k := decodeKey(e.key)
		sum += len(k.key) + int(e.result().index) + int(e.watchers.Load()+int32(e.lastAccess.Load()))
		if lp := e.loop.Load(); lp != nil {
			sum += int(lp.lostContact.Load())
		}
		if quit.Load() {
			break
		}
	}
	return sum
}
