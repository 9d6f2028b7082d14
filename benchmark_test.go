package cache

import (
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The floor every hit benchmark is compared with: a map keyed by a
// comparable struct under a sync.RWMutex, returning a stored value.
type benchFloorKey struct{ typ, dc, token, key string }

type benchFloor struct {
	mu sync.RWMutex
	m  map[benchFloorKey]interface{}
}

func (f *benchFloor) get(t string, r Request) interface{} {
	info := r.CacheInfo()
	f.mu.RLock()
	v := f.m[benchFloorKey{t, info.Datacenter, info.Token, info.Key}]
	f.mu.RUnlock()
	return v
}

// benchRequests returns n requests of one partition, boxed once so that
// passing them to Get allocates nothing.
func benchRequests(n int) []Request {
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = RequestInfo{Datacenter: "dc1", Token: "tok", Key: "key-" + strconv.Itoa(i)}
	}
	return reqs
}

// benchWarm returns a cache and a floor that both hold a value for every
// request.
func benchWarm(b *testing.B, reqs []Request) (*Cache, *benchFloor) {
	b.Helper()
	c := New(nil)
	b.Cleanup(func() { c.Close() })
	c.RegisterType("t", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{Value: r.CacheInfo().Key, Index: 1}, nil
	}), nil)
	f := &benchFloor{m: make(map[benchFloorKey]interface{}, len(reqs))}
	for _, r := range reqs {
		v, _, err := c.Get("t", r)
		if err != nil {
			b.Fatal(err)
		}
		info := r.CacheInfo()
		f.m[benchFloorKey{"t", info.Datacenter, info.Token, info.Key}] = v
	}
	return c, f
}

// BenchmarkGetHit measures a warm hit from one goroutine, keys visited in
// order and at random, against the floor.
func BenchmarkGetHit(b *testing.B) {
	reqs := benchRequests(10_000)
	c, f := benchWarm(b, reqs)
	random := make([]Request, len(reqs))
	for i, j := range rand.Perm(len(reqs)) {
		random[i] = reqs[j]
	}
	for _, order := range []struct {
		name string
		reqs []Request
	}{{"order", reqs}, {"random", random}} {
		b.Run("cache/"+order.name, func(b *testing.B) {
			b.ReportAllocs()
			var i int
			for b.Loop() {
				if _, _, err := c.Get("t", order.reqs[i%len(order.reqs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run("floor/"+order.name, func(b *testing.B) {
			b.ReportAllocs()
			var i int
			for b.Loop() {
				if f.get("t", order.reqs[i%len(order.reqs)]) == nil {
					b.Fatal("miss")
				}
				i++
			}
		})
	}
}

// BenchmarkGetHitParallel measures warm hits from GOMAXPROCS goroutines,
// each walking the keys from its own offset; run it with -cpu 1,2,8.
func BenchmarkGetHitParallel(b *testing.B) {
	reqs := benchRequests(10_000)
	c, f := benchWarm(b, reqs)
	var offset atomic.Int64
	b.Run("cache", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int(offset.Add(1777))
			for pb.Next() {
				if _, _, err := c.Get("t", reqs[i%len(reqs)]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
	b.Run("floor", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int(offset.Add(1777))
			for pb.Next() {
				if f.get("t", reqs[i%len(reqs)]) == nil {
					b.Error("miss")
					return
				}
				i++
			}
		})
	})
}

// BenchmarkGetMissCoalesced measures 256 goroutines missing one new key at
// once while its fetch takes 1 ms. It reports the fetches per key
// (exactly 1 when Gets coalesce) and the callers served anything but that
// fetch's result (0). bench/ compares it with singleflight.
func BenchmarkGetMissCoalesced(b *testing.B) {
	const callers = 256
	var fetches atomic.Int64
	c := New(nil)
	b.Cleanup(func() { c.Close() })
	c.RegisterType("t", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		fetches.Add(1)
		time.Sleep(time.Millisecond)
		return FetchResult{Value: r.CacheInfo().Key, Index: 1}, nil
	}), nil)

	var wrong atomic.Int64
	var ops int
	b.ReportAllocs()
	for b.Loop() {
		key := "miss-" + strconv.Itoa(ops)
		req := Request(RequestInfo{Key: key})
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(callers)
		for range callers {
			go func() {
				defer wg.Done()
				<-start
				if v, _, err := c.Get("t", req); err != nil || v != key {
					wrong.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		ops++
	}
	b.ReportMetric(float64(fetches.Load())/float64(ops), "fetches/op")
	b.ReportMetric(float64(wrong.Load())/float64(ops), "wrong/op")
}

// memEntries is the number of entries BenchmarkEntryMemory stores.
const memEntries = 1_000_000

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

// BenchmarkEntryMemory measures the heap bytes each entry costs: the cache filled by Gets (each
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
		f := &benchFloor{m: make(map[benchFloorKey]interface{})}
		for i, k := range keys {
			f.mu.Lock()
			f.m[benchFloorKey{"t", "dc1", "tok", k}] = vals[i]
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

// BenchmarkExpire1M measures the eviction of 1,000,000 entries that expire
// within moments of each other, and the latency of hits on other keys
// meanwhile: no Get may wait behind the whole eviction.
func BenchmarkExpire1M(b *testing.B) {
	const n = 1_000_000
	const ttl = time.Hour
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "exp-" + strconv.Itoa(i)
	}
	warm := benchRequests(1000)

	var evictNs, p99Ns float64
	for b.Loop() {
		c := New(nil)
		c.RegisterType("short", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{}, errors.New("prepopulated only")
		}), &RegisterOptions{LastGetTTL: ttl})
		c.RegisterType("t", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			return FetchResult{Value: 1, Index: 1}, nil
		}), nil)
		for _, r := range warm {
			if _, _, err := c.Get("t", r); err != nil {
				b.Fatal(err)
			}
		}
		for _, k := range keys {
			if err := c.Prepopulate("short", FetchResult{Value: 1, Index: 1}, "dc1", "tok", k); err != nil {
				b.Fatal(err)
			}
		}
		// Filling takes a while: make every short entry due now, so that
		// they all expire together.
		c.expiryMu.Lock()
		now := c.now()
		for _, e := range c.expiry {
			if decodeKey(e.key).typ == "short" {
				e.lastAccess.Store(now - int64(ttl))
				e.expires = now
			}
		}
		heap.Init(&c.expiry)
		c.expiryMu.Unlock()
		select {
		case c.expiryNotify <- struct{}{}:
		default:
		}
		filled := time.Now()
		base := int64(len(warm))

		// Hit other keys until the expired entries are gone.
		var lat []time.Duration
		var firstGone time.Time
		for i := 0; ; i++ {
			t0 := time.Now()
			if _, _, err := c.Get("t", warm[i%len(warm)]); err != nil {
				b.Fatal(err)
			}
			d := time.Since(t0)
			left := c.count.Load() - base
			if left < n && firstGone.IsZero() {
				firstGone = t0
			}
			if !firstGone.IsZero() {
				lat = append(lat, d)
			}
			if left == 0 {
				evictNs = float64(time.Since(firstGone))
				break
			}
			if time.Since(filled) > ttl+time.Minute {
				b.Fatalf("%d entries left a minute after their TTL", left)
			}
			if i%64 == 0 {
				runtime.Gosched()
			}
		}
		slices.Sort(lat)
		p99Ns = float64(lat[len(lat)*99/100])
		c.Close()
	}
	b.ReportMetric(evictNs/1e6, "evict-ms")
	b.ReportMetric(p99Ns, "hit-p99-ns")
}

// benchBackend is a blocking Type over a set of keys whose index moves
// when bump is called.
type benchBackend struct {
	mu       sync.Mutex
	index    map[string]uint64
	changed  map[string]chan struct{}
	answered atomic.Int64 // fetches that returned a newer index
	done     chan struct{}
}

func newBenchBackend(keys []string) *benchBackend {
	bb := &benchBackend{
		index:   make(map[string]uint64),
		changed: make(map[string]chan struct{}),
		done:    make(chan struct{}),
	}
	for _, k := range keys {
		bb.index[k] = 1
		bb.changed[k] = make(chan struct{})
	}
	return bb
}

func (bb *benchBackend) SupportsBlocking() bool { return true }

func (bb *benchBackend) Fetch(o FetchOptions, r Request) (FetchResult, error) {
	k := r.CacheInfo().Key
	for {
		bb.mu.Lock()
		idx, ch := bb.index[k], bb.changed[k]
		bb.mu.Unlock()
		if idx > o.MinIndex {
			bb.answered.Add(1)
			return FetchResult{Value: idx, Index: idx}, nil
		}
		select {
		case <-ch:
		case <-bb.done:
			return FetchResult{}, errors.New("backend closed")
		}
	}
}

func (bb *benchBackend) bump(k string) {
	bb.mu.Lock()
	bb.index[k]++
	close(bb.changed[k])
	bb.changed[k] = make(chan struct{})
	bb.mu.Unlock()
}

// BenchmarkNotifyFanout measures 10,000 Notify watchers over 100 keys: per
// op every key changes once. It reports the backend fetches that answered
// each change (1 per key when watchers share fetches) and the time until
// all 10,000 events were delivered (ns/op).
func BenchmarkNotifyFanout(b *testing.B) {
	const nkeys, watchers = 100, 10_000
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = "fan-" + strconv.Itoa(i)
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

	var delivered atomic.Int64
	for i := range watchers {
		req := RequestInfo{Key: keys[i%nkeys]}
		err := c.NotifyCallback(ctx, "t", req, "", func(context.Context, UpdateEvent) {
			delivered.Add(1)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	waitDelivered := func(want int64) {
		deadline := time.Now().Add(time.Minute)
		for delivered.Load() < want {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d events delivered", delivered.Load(), want)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	waitDelivered(watchers) // the first result of each watch

	var rounds int64
	before := bb.answered.Load()
	b.ResetTimer()
	for b.Loop() {
		for _, k := range keys {
			bb.bump(k)
		}
		rounds++
		waitDelivered(watchers * (rounds + 1))
	}
	b.StopTimer()
	b.ReportMetric(float64(bb.answered.Load()-before)/float64(rounds*nkeys), "fetches/change")
}

// oldHashM1 is the constant the cache's hash once XORed the first eight
// bytes of a key with before multiplying: any key of 8 to 16 bytes that
// starts with it, little-endian, hashed to 0 whatever the seed.
const oldHashM1 = 0xa0761d6478bd642f

// adversarialKinds are the kinds of keys adversarialKeys makes.
var adversarialKinds = []string{"crafted", "longprefix", "random", "randomlong"}

// adversarialKeys returns n distinct keys of a kind: "crafted", 9 to 13
// bytes that start with oldHashM1; "longprefix", a common 200-byte prefix
// and a counter; and the baselines, "random", 12 random letters and
// digits, and "randomlong", 204 of them.
func adversarialKeys(kind string, n int) []string {
	keys := make([]string, 0, n)
	seen := make(map[string]bool, n)
	prefix := strings.Repeat("/v1/health/service/web?", 10)[:200]
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	for i := 0; len(keys) < n; i++ {
		var k string
		switch kind {
		case "crafted":
			k = string(binary.LittleEndian.AppendUint64(nil, oldHashM1)) + strconv.Itoa(i)
		case "longprefix":
			k = prefix + strconv.Itoa(i)
		case "random", "randomlong":
			b := make([]byte, 12)
			if kind == "randomlong" {
				b = make([]byte, 204)
			}
			for j := range b {
				b[j] = alphabet[rand.IntN(len(alphabet))]
			}
			k = string(b)
		default:
			panic("unknown kind " + kind)
		}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// BenchmarkAdversarialKeys measures misses and hits of 20,000 keys
// crafted to collide under the cache's former hash, and of keys sharing a
// long prefix, against random keys. A miss fills every key into a fresh
// cache through a trivial type; a hit gets every key once from a warm
// cache. Both report ns/key, which should not depend on the kind of key,
// only on its length.
func BenchmarkAdversarialKeys(b *testing.B) {
	const n = 20_000
	typ := FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: 1, Index: 1}, nil
	})
	getAll := func(b *testing.B, c *Cache, reqs []Request) {
		for _, r := range reqs {
			if _, _, err := c.Get("t", r); err != nil {
				b.Fatal(err)
			}
		}
	}
	perKey := func(b *testing.B, ops int) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(ops*n), "ns/key")
	}
	for _, kind := range adversarialKinds {
		reqs := make([]Request, n)
		for i, k := range adversarialKeys(kind, n) {
			reqs[i] = RequestInfo{Datacenter: "dc1", Token: "tok", Key: k}
		}
		b.Run("miss/"+kind, func(b *testing.B) {
			ops := 0
			for b.Loop() {
				c := New(nil)
				c.RegisterType("t", typ, nil)
				getAll(b, c, reqs)
				b.StopTimer()
				c.Close()
				b.StartTimer()
				ops++
			}
			perKey(b, ops)
		})
		b.Run("hit/"+kind, func(b *testing.B) {
			c := New(nil)
			defer c.Close()
			c.RegisterType("t", typ, nil)
			getAll(b, c, reqs)
			b.ReportAllocs()
			ops := 0
			for b.Loop() {
				getAll(b, c, reqs)
				ops++
			}
			perKey(b, ops)
		})
	}
}
