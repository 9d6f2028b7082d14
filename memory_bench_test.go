package cache

import (
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// memEntries is the number of entries BenchmarkEntryMemory stores.
const memEntries = 1_000_000

// memFloorKey is the floor's map key: the four partitioning fields.
type memFloorKey struct{ t, dc, tok, key string }

// memFloor is the least a cache of these entries can cost: a plain map from
// the four fields to the value, under one lock.
type memFloor struct {
	mu sync.RWMutex
	m  map[memFloorKey]any
}

// memReq is a request that carries the index of its pre-boxed value.
type memReq struct {
	info RequestInfo
	i    int
}

func (r *memReq) CacheInfo() RequestInfo { return r.info }

// heapAlloc returns the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// memInputs returns the keys and boxed 8-byte values both contenders store,
// allocated before anything is measured.
func memInputs(n int) (keys []string, vals []any) {
	keys = make([]string, n)
	vals = make([]any, n)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
		vals[i] = any(uint64(i) | 1<<40) // large enough not to be a static box
	}
	return keys, vals
}

// Measures the heap bytes each entry costs: the cache filled by Gets (each
// entry fetched once by a non-blocking type), the cache filled by
// Prepopulate, and the floor map. Keys and values exist before measuring,
// so only the structures holding them are counted.
func BenchmarkEntryMemory(b *testing.B) {
	keys, vals := memInputs(memEntries)
	typ := FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{Value: vals[r.(*memReq).i], Index: 1}, nil
	})
	perEntry := func(before, after uint64) float64 {
		return float64(int64(after)-int64(before)) / memEntries
	}

	var floor, got, prepop float64
	for i := 0; i < b.N; i++ {
		before := heapAlloc()
		f := &memFloor{m: make(map[memFloorKey]any)}
		for i, k := range keys {
			f.mu.Lock()
			f.m[memFloorKey{"t", "dc1", "tok", k}] = vals[i]
			f.mu.Unlock()
		}
		floor = perEntry(before, heapAlloc())
		runtime.KeepAlive(f)
		f = nil

		before = heapAlloc()
		c := New(nil)
		c.RegisterType("t", typ, nil)
		for i, k := range keys {
			r := &memReq{info: RequestInfo{Datacenter: "dc1", Token: "tok", Key: k}, i: i}
			if _, _, err := c.Get("t", r); err != nil {
				b.Fatal(err)
			}
		}
		got = perEntry(before, heapAlloc())
		if n := c.count.Load(); n != memEntries {
			b.Fatalf("cache holds %d entries, want %d", n, memEntries)
		}
		c.Close()
		c = nil

		before = heapAlloc()
		c = New(nil)
		c.RegisterType("t", typ, nil)
		for i, k := range keys {
			if err := c.Prepopulate("t", FetchResult{Value: vals[i], Index: 1}, "dc1", "tok", k); err != nil {
				b.Fatal(err)
			}
		}
		prepop = perEntry(before, heapAlloc())
		c.Close()
	}
	b.ReportMetric(got, "B/entry")
	b.ReportMetric(prepop, "prepop-B/entry")
	b.ReportMetric(floor, "floor-B/entry")
	b.ReportMetric(got/floor, "x-floor")
}

// Measures a cache hit, 10,000 warm keys visited in order, against the
// floor map's lookup.
func BenchmarkLeanGetHit(b *testing.B) {
	const n = 10_000
	keys, vals := memInputs(n)

	b.Run("cache", func(b *testing.B) {
		c := New(nil)
		defer c.Close()
		c.RegisterType("t", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			return FetchResult{Value: vals[r.(*memReq).i], Index: 1}, nil
		}), nil)
		reqs := make([]Request, n)
		for i, k := range keys {
			reqs[i] = &memReq{info: RequestInfo{Datacenter: "dc1", Token: "tok", Key: k}, i: i}
			if _, _, err := c.Get("t", reqs[i]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			v, meta, err := c.Get("t", reqs[i%n])
			if err != nil || !meta.Hit || v == nil {
				b.Fatal("not a hit", err)
			}
		}
	})

	b.Run("floor", func(b *testing.B) {
		f := &memFloor{m: make(map[memFloorKey]any)}
		fk := make([]memFloorKey, n)
		for i, k := range keys {
			fk[i] = memFloorKey{"t", "dc1", "tok", k}
			f.m[fk[i]] = vals[i]
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			f.mu.RLock()
			v := f.m[fk[i%n]]
			f.mu.RUnlock()
			if v == nil {
				b.Fatal("not a hit")
			}
		}
	})
}
