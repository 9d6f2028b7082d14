package cache

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	metrics "github.com/armon/go-metrics"
)

// What a soak run may leave, over the baseline taken before it, once every
// entry expired and a collection ran: no entry, no goroutine, and no more
// live heap than the emptied shard tables (64 of 16 slots) and the shrunk
// expiry heap keep, about 35 KiB, with room for the runtime's own. The
// 4,000 entries of the test run, left behind, hold about 800 KiB.
const (
	soakMaxEntries    = 0
	soakMaxGoroutines = 0
	soakMaxHeapBytes  = 256 << 10
)

// soakLeft is what a soak run left over its baseline.
type soakLeft struct {
	entries    int64
	goroutines int
	heapBytes  int64
}

// check returns an error naming every figure over its bound, or nil.
func (l soakLeft) check() error {
	var errs []error
	if l.entries > soakMaxEntries {
		errs = append(errs, fmt.Errorf("soak: %d entries left, want at most %d", l.entries, soakMaxEntries))
	}
	if l.goroutines > soakMaxGoroutines {
		errs = append(errs, fmt.Errorf("soak: %d goroutines left, want at most %d", l.goroutines, soakMaxGoroutines))
	}
	if l.heapBytes > soakMaxHeapBytes {
		errs = append(errs, fmt.Errorf("soak: %d heap bytes left, want at most %d", l.heapBytes, soakMaxHeapBytes))
	}
	return errors.Join(errs...)
}

// soakBase is the baseline of a soak run: the live heap and the goroutines
// once the cache and its types are set up.
type soakBase struct {
	heap       uint64
	goroutines int
}

func soakBaseline() soakBase {
	return soakBase{heap: heapAlloc(), goroutines: runtime.NumGoroutine()}
}

// left measures what c left over the baseline.
func (b soakBase) left(c *Cache) soakLeft {
	heap := int64(heapAlloc()) - int64(b.heap)
	return soakLeft{
		entries:    c.count.Load(),
		goroutines: runtime.NumGoroutine() - b.goroutines,
		heapBytes:  heap,
	}
}

// soakRequests returns n requests for distinct keys, whose Fetch value is
// their number.
func soakRequests(n int) []Request {
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = &memReq{info: RequestInfo{Key: "soak-" + strconv.Itoa(i)}, i: i}
	}
	return reqs
}

// soakCache returns a cache with no metrics sink, so that nothing of the
// run is kept outside the cache, and a type "t" whose entries live for ttl
// after their last Get. fetch, if not nil, runs in every Fetch.
func soakCache(ttl time.Duration, fetch func()) *Cache {
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false // no collector goroutine
	m, _ := metrics.New(cfg, &metrics.BlackholeSink{})
	c := New(&Options{Metrics: m})
	c.RegisterType("t", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		if fetch != nil {
			fetch()
		}
		return FetchResult{Value: r.(*memReq).i, Index: 1}, nil
	}), &RegisterOptions{LastGetTTL: ttl})
	return c
}

// Test run of the soak: keys, of which the first soakTestHot are hot,
// Gets, the entries' TTL, and the virtual time that passes every
// soakTestPause Gets. Every other Get is of a hot key, which stays cached
// and is hit; the others go round the rest, which expire between two
// rounds and are fetched again, all through the run.
const (
	soakTestKeys  = 4_000
	soakTestHot   = 100
	soakTestGets  = 20_000
	soakTestTTL   = 20 * time.Millisecond
	soakTestPause = 500
)

// soakTestRun churns soakTestGets Gets over soakTestKeys keys in a synctest
// bubble, lets settle pass and returns what is left. ttl and fetch are as
// for soakCache.
func soakTestRun(t *testing.T, ttl, settle time.Duration, fetch func()) soakLeft {
	reqs := soakRequests(soakTestKeys)
	c := soakCache(ttl, fetch)
	defer c.Close()
	base := soakBaseline()
	for i := range soakTestGets {
		k := soakTestHot + i/2%(soakTestKeys-soakTestHot)
		if i%2 == 0 {
			k = i / 2 % soakTestHot
		}
		if _, _, err := c.Get("t", reqs[k]); err != nil {
			t.Fatal(err)
		}
		if i%soakTestPause == soakTestPause-1 {
			time.Sleep(soakTestTTL / 4)
		}
	}
	time.Sleep(settle)
	synctest.Wait()
	left := base.left(c)
	runtime.KeepAlive(reqs) // part of the baseline
	return left
}

// TestSoak_NothingLeftAfterExpiry churns keys with a short TTL, with the
// expiry loop, fetches and Gets all running, and fails if anything is left
// over the bounds once every entry expired: entries, goroutines or live
// heap. Time is virtual, so the run is exact and quick.
func TestSoak_NothingLeftAfterExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		left := soakTestRun(t, soakTestTTL, 2*soakTestTTL, nil)
		t.Logf("left: %d entries, %d goroutines, %d heap bytes", left.entries, left.goroutines, left.heapBytes)
		if err := left.check(); err != nil {
			t.Fatal(err)
		}
	})
}

// Regression: BenchmarkSoak reported the entries, goroutines and heap left
// after its run but could not fail on them. Pins that the soak's check
// fails on each kind of leftover: entries that outlive the settle time
// (with their memory), and goroutines that Fetch leaves blocked.
func TestRegression_SoakCanFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		left := soakTestRun(t, time.Hour, 2*soakTestTTL, nil)
		err := left.check()
		t.Logf("left: %+v", left)
		if err == nil || left.entries != soakTestKeys || left.heapBytes <= soakMaxHeapBytes {
			t.Fatalf("entries kept for an hour: left %+v, check: %v", left, err)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		var fetches, stuck atomic.Int64
		left := soakTestRun(t, soakTestTTL, 2*soakTestTTL, func() {
			if fetches.Add(1)%1000 == 0 {
				stuck.Add(1)
				go func() { <-release }()
			}
		})
		err := left.check()
		t.Logf("left: %+v after %d fetches", left, fetches.Load())
		if err == nil || int64(left.goroutines) != stuck.Load() || left.entries != 0 {
			t.Fatalf("stuck goroutines: left %+v, check: %v", left, err)
		}
	})
}

// BenchmarkSoak churns 100,000 keys with a short TTL: each op is a Get of
// the next key in a ring, so entries are created, hit and expired all the
// time, with the expiry loop, fetch loops and Gets all running. After the
// run it lets every entry expire, reports what is left over the baseline
// taken before the churn, once a collection has run, and fails if that is
// over the bounds that TestSoak_NothingLeftAfterExpiry holds:
//
//   - goroutines-left: goroutines above the baseline (at most 0);
//   - heap-left-B: live heap bytes above the baseline (at most 256 KiB:
//     the shard tables and the expiry heap give back what the churn grew);
//   - entries-left: entries still cached (at most 0).
func BenchmarkSoak(b *testing.B) {
	const keys = 100_000
	const ttl = 20 * time.Millisecond
	reqs := soakRequests(keys)
	c := soakCache(ttl, nil)
	defer c.Close()

	base := soakBaseline()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := c.Get("t", reqs[i%keys]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()

	// Settle: everything expires one TTL after its last Get.
	deadline := time.Now().Add(30 * time.Second)
	for (c.count.Load() > 0 || runtime.NumGoroutine() > base.goroutines) && time.Now().Before(deadline) {
		time.Sleep(ttl)
	}
	left := base.left(c)
	runtime.KeepAlive(reqs) // part of the baseline
	b.ReportMetric(float64(left.goroutines), "goroutines-left")
	b.ReportMetric(float64(left.heapBytes), "heap-left-B")
	b.ReportMetric(float64(left.entries), "entries-left")
	if err := left.check(); err != nil {
		b.Fatal(err)
	}
}
