package cache

import (
	"container/heap"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
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
	m  map[benchFloorKey]any
}

func (f *benchFloor) get(t string, r Request) any {
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
	f := &benchFloor{m: make(map[benchFloorKey]any, len(reqs))}
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
		// The floor with the one clock read a hit needs for Age, MaxAge
		// and the TTL: what no cache with those can go below.
		b.Run("floorclock/"+order.name, func(b *testing.B) {
			b.ReportAllocs()
			var i int
			for b.Loop() {
				if f.get("t", order.reqs[i%len(order.reqs)]) == nil || c.now() == 0 {
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
		f := &benchFloor{m: make(map[benchFloorKey]any)}
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

// BenchmarkExpire1M measures 1,000,000 entries that come due within
// moments of each other while other goroutines use the cache, with the
// entries idle, or each hit once just after it was stored: a hit only
// records its time, so each such entry is re-heaped when it comes due, and
// evicted when that later expiry comes. It reports the time from the first
// eviction to the last (evict-ms) and from the entries coming due to the
// last eviction (due-ms), the 99th percentile of hits on other keys during
// the eviction, and the worst latency, meanwhile, of an insert from another
// goroutine (a Prepopulate or a Get of a new key, which both take the
// expiry lock): neither may wait behind the whole expiry.
func BenchmarkExpire1M(b *testing.B) {
	keys := make([]string, expireN)
	for i := range keys {
		keys[i] = "exp-" + strconv.Itoa(i)
	}
	warm := benchRequests(1000)
	for _, hit := range []bool{false, true} {
		name := "idle"
		if hit {
			name = "hit"
		}
		b.Run(name, func(b *testing.B) {
			var r expireRound
			for b.Loop() {
				r = expire1MRound(b, keys, warm, hit)
			}
			b.ReportMetric(float64(r.evict)/1e6, "evict-ms")
			b.ReportMetric(float64(r.due)/1e6, "due-ms")
			b.ReportMetric(float64(r.hitP99), "hit-p99-ns")
			b.ReportMetric(float64(r.worstInsert)/1e6, "worst-insert-ms")
		})
	}
}

// expireN and expireTTL are BenchmarkExpire1M's entries and their TTL.
const (
	expireN   = 1_000_000
	expireTTL = time.Hour
)

// expireRound is what one round of BenchmarkExpire1M measured.
type expireRound struct {
	evict, due, hitP99, worstInsert time.Duration
}

// expire1MRound fills a cache with the warm entries and one "short" entry
// per key, makes the short ones due at once (hit just after they were
// stored, if hit), and measures until they are gone.
func expire1MRound(b *testing.B, keys []string, warm []Request, hit bool) expireRound {
	c := expire1MFill(b, keys, warm, hit)
	defer c.Close()
	base := int64(len(warm))
	ins := startExpireInserter(c)
	select {
	case c.expiryNotify <- struct{}{}:
	default:
	}
	due := time.Now()

	// Hit other keys until the expired entries are gone.
	var lat []time.Duration
	var firstGone time.Time
	var r expireRound
	for i := 0; ; i++ {
		t0 := time.Now()
		if _, _, err := c.Get("t", warm[i%len(warm)]); err != nil {
			b.Fatal(err)
		}
		d := time.Since(t0)
		inserted := ins.inserted.Load() // before the count: never too many
		left := c.count.Load() - base - inserted
		if left < expireN && firstGone.IsZero() {
			firstGone = t0
		}
		if !firstGone.IsZero() {
			lat = append(lat, d)
		}
		if left <= 0 {
			r.evict, r.due = time.Since(firstGone), time.Since(due)
			break
		}
		if time.Since(due) > expireTTL {
			b.Fatalf("%d entries left a TTL after they came due", left)
		}
		if i%64 == 0 {
			runtime.Gosched()
		}
	}
	r.worstInsert = ins.stop(b)
	slices.Sort(lat)
	r.hitP99 = lat[len(lat)*99/100]
	return r
}

// expire1MFill returns a cache holding a value for every warm request and
// a "short" entry for every key, all of those due now: idle, or hit just
// after they were stored, their true expiry an instant later.
func expire1MFill(b *testing.B, keys []string, warm []Request, hit bool) *Cache {
	c := New(nil)
	c.RegisterType("short", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{}, errors.New("prepopulated only")
	}), &RegisterOptions{LastGetTTL: expireTTL})
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
	// Filling takes a while: make every short entry due now, so that they
	// all come due together.
	c.expiryMu.Lock()
	now := c.now()
	for _, e := range c.expiry {
		if decodeKey(e.key).typ == "short" {
			last := now - int64(expireTTL)
			if hit {
				last++
			}
			e.lastAccess.Store(last)
			e.expires = now
		}
	}
	heap.Init(&c.expiry)
	c.expiryMu.Unlock()
	return c
}

// expireInserter inserts new entries into a cache from a goroutine of its
// own, a few every millisecond, and keeps the worst latency of an insert.
type expireInserter struct {
	inserted atomic.Int64
	worst    time.Duration
	err      error
	quit     chan struct{}
	done     chan struct{}
}

func startExpireInserter(c *Cache) *expireInserter {
	ins := &expireInserter{quit: make(chan struct{}), done: make(chan struct{})}
	go ins.run(c)
	return ins
}

// run alternates a Prepopulate and a Get of a new key, which fetches.
func (ins *expireInserter) run(c *Cache) {
	defer close(ins.done)
	for i := 0; ; i++ {
		select {
		case <-ins.quit:
			return
		default:
		}
		k := "ins-" + strconv.Itoa(i)
		t0 := time.Now()
		var err error
		if i%2 == 0 {
			err = c.Prepopulate("t", FetchResult{Value: 1, Index: 1}, "", "", k)
		} else {
			_, _, err = c.Get("t", RequestInfo{Key: k})
		}
		ins.worst = max(ins.worst, time.Since(t0))
		ins.inserted.Add(1)
		if err != nil {
			ins.err = err
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// stop ends the inserts and returns the worst latency of one.
func (ins *expireInserter) stop(b *testing.B) time.Duration {
	close(ins.quit)
	<-ins.done
	if ins.err != nil {
		b.Fatal(ins.err)
	}
	return ins.worst
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
	const watchers = 10_000
	c, bb, keys, ctx := benchWatched(b, 100)
	var delivered atomic.Int64
	for i := range watchers {
		req := RequestInfo{Key: keys[i%len(keys)]}
		err := c.NotifyCallback(ctx, "t", req, "", func(context.Context, UpdateEvent) {
			delivered.Add(1)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	waitDelivered := func(want int64) { benchWaitDelivered(b, &delivered, want) }
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
	b.ReportMetric(float64(bb.answered.Load()-before)/float64(rounds*int64(len(keys))), "fetches/change")
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
