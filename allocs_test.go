package cache

import (
	"strconv"
	"strings"
	"testing"
)

// The hit path's performance depends on it allocating nothing; these
// tests guard that beside the benchmarks, which nobody may run.

// TestGetHit_allocatesNothing pins that a hit, in order or after a Get of
// another key, allocates nothing, also for partitions too long to encode on
// the stack.
func TestGetHit_allocatesNothing(t *testing.T) {
	c := TestCache(t)
	c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: "v", Index: 1}, nil
	}), nil)
	// Boxed once: a RequestInfo converted to a Request allocates.
	reqs := []Request{
		RequestInfo{Key: "a", Token: "tok", Datacenter: "dc1"},
		RequestInfo{Key: "b"},
		RequestInfo{Key: strings.Repeat("k", 300), Token: strings.Repeat("t", 200)},
	}
	for _, r := range reqs {
		if _, _, err := c.Get("t", r); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, r := range reqs {
			if _, _, err := c.Get("t", r); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("a hit allocates %v times", allocs/float64(len(reqs)))
	}
}

// TestGetMiss_allocations pins what a Get that waits for a fetch of a new
// entry allocates, 7 in all today: the key, the entry, the loop's state,
// goroutine and channel, and, on the test's side, the key string and the
// boxed request. A type without FetchContext makes no
// context, and a result without an extra allocates none.
func TestGetMiss_allocations(t *testing.T) {
	c := TestCache(t)
	c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: "v", Index: 1}, nil
	}), nil)
	n := 0
	allocs := testing.AllocsPerRun(1000, func() {
		n++
		if _, _, err := c.Get("t", RequestInfo{Key: strconv.Itoa(n)}); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("a miss allocates %v times", allocs)
	if allocs > 7 {
		t.Fatalf("a miss allocates %v times, want at most 7", allocs)
	}
}
