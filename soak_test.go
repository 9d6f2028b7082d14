package cache

import (
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkSoak churns 100,000 keys with a short TTL: each op is a Get of
// the next key in a ring, so entries are created, hit and expired all the
// time, with the expiry loop, fetch loops and Gets all running. After the
// run it lets every entry expire and reports what is left over the
// baseline taken before the churn, once a collection has run:
//
//   - goroutines-left: goroutines above the baseline (want 0);
//   - heap-left-B: live heap bytes above the baseline (want about 0: the
//     shard maps and the expiry heap give back what the churn grew);
//   - entries-left: entries still cached (want 0).
func BenchmarkSoak(b *testing.B) {
	const keys = 100_000
	const ttl = 20 * time.Millisecond
	reqs := make([]Request, keys)
	for i := range reqs {
		reqs[i] = &memReq{info: RequestInfo{Key: "soak-" + strconv.Itoa(i)}, i: i}
	}
	c := New(nil)
	defer c.Close()
	c.RegisterType("t", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{Value: r.(*memReq).i, Index: 1}, nil
	}), &RegisterOptions{LastGetTTL: ttl})

	baseHeap := heapAlloc()
	baseG := runtime.NumGoroutine()
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
	for (c.count.Load() > 0 || runtime.NumGoroutine() > baseG) && time.Now().Before(deadline) {
		time.Sleep(ttl)
	}
	heap := int64(heapAlloc()) - int64(baseHeap)
	runtime.KeepAlive(reqs) // part of the baseline
	b.ReportMetric(float64(runtime.NumGoroutine()-baseG), "goroutines-left")
	b.ReportMetric(float64(heap), "heap-left-B")
	b.ReportMetric(float64(c.count.Load()), "entries-left")
}
