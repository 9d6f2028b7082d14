// Package bench compares the agent cache (github.com/agentcache/cache) with
// other Go caches on the same workloads, and with a floor: a plain map under
// a sync.RWMutex. See README.md for how to run it and what each workload
// measures.
package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentcache/cache"
	"github.com/jellydator/ttlcache/v3"
	"github.com/maypok86/otter/v2"
	"github.com/viccon/sturdyc"
	"golang.org/x/sync/singleflight"
)

// Workload sizes. They are small enough that every benchmark also runs
// quickly with -benchtime=1x.
const (
	hitKeys     = 10_000 // warm keys of the Hit workloads
	missCallers = 256    // concurrent Gets per MissCoalesced op
	missLatency = 1 * time.Millisecond
	memEntries  = 100_000 // entries per Memory op

	typeName = "bench" // the agent cache type name, also part of every key
	dc       = "dc1"
	token    = "tok"

	// ttl is the idle/expiry time every implementation is given; it is the
	// agent cache's default LastGetTTL, so nothing expires during a run.
	ttl = 72 * time.Hour
)

// Value is what every cache stores: 8 bytes, held by pointer so that no
// implementation copies or boxes it.
type Value [8]byte

// floorKey partitions entries as the agent cache does: by type,
// datacenter, ACL token and request key.
type floorKey struct{ typ, dc, token, key string }

// benchKey is one key of a workload in every form an implementation takes,
// built before the timer starts so that no implementation is charged for
// building its key.
type benchKey struct {
	fk   floorKey      // comparable struct: otter, ttlcache, singleflight map, floor
	full string        // the four parts joined: sturdyc and singleflight keys
	req  cache.Request // a cache.RequestInfo, boxed once: the agent cache
	val  *Value        // the value the loader returns for this key
}

func makeKeys(prefix string, n int) []benchKey {
	vals := make([]Value, n)
	keys := make([]benchKey, n)
	for i := range keys {
		k := fmt.Sprintf("%s-%06d", prefix, i)
		vals[i] = Value{byte(i), byte(i >> 8), byte(i >> 16)}
		keys[i] = benchKey{
			fk:   floorKey{typeName, dc, token, k},
			full: typeName + "\x00" + dc + "\x00" + token + "\x00" + k,
			req:  cache.RequestInfo{Datacenter: dc, Token: token, Key: k},
			val:  &vals[i],
		}
	}
	return keys
}

// loader is the backend behind every cache: it returns the value of a
// request key.
type loader func(key string) *Value

// tableLoader serves keys' values from a map built in advance.
func tableLoader(keys []benchKey) loader {
	m := make(map[string]*Value, len(keys))
	for i := range keys {
		m[keys[i].fk.key] = keys[i].val
	}
	return func(key string) *Value { return m[key] }
}

// getter is one cache instance, filled through its loader on a miss.
type getter interface {
	get(k *benchKey) (*Value, error)
	close()
}

type impl struct {
	name string
	new  func(load loader, capacity int) getter
}

// impls are the implementations every workload runs, in table order; the
// floor comes last.
var impls = []impl{
	{"agentcache", newAgentCache},
	{"otter", newOtter},
	{"ttlcache", newTTLCache},
	{"sturdyc", newSturdyc},
	{"singleflight", newSingleflightMap},
	{"floor", newFloor},
}

// --- agent cache ------------------------------------------------------------

type agentCache struct {
	c *cache.Cache
	// newReq builds the RequestInfo at each Get instead of using k.req, as
	// a caller that builds its request per call does.
	newReq bool
}

func newAgentCache(load loader, _ int) getter {
	c := cache.New(nil)
	c.RegisterType(typeName, cache.FetchFunc(func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		return cache.FetchResult{Value: load(r.CacheInfo().Key), Index: 1}, nil
	}), nil)
	return &agentCache{c: c}
}

func newAgentCacheNewReq(load loader, capacity int) getter {
	a := newAgentCache(load, capacity).(*agentCache)
	a.newReq = true
	return a
}

func (a *agentCache) get(k *benchKey) (*Value, error) {
	r := k.req
	if a.newReq {
		r = cache.RequestInfo{Datacenter: k.fk.dc, Token: k.fk.token, Key: k.fk.key}
	}
	v, _, err := a.c.Get(typeName, r)
	p, _ := v.(*Value)
	return p, err
}

func (a *agentCache) close() { a.c.Close() }

// --- otter v2 ---------------------------------------------------------------

type otterCache struct {
	c      *otter.Cache[floorKey, *Value]
	loader otter.Loader[floorKey, *Value]
}

func newOtter(load loader, _ int) getter {
	return &otterCache{
		// Unbounded, with expiry after last access like LastGetTTL.
		c: otter.Must(&otter.Options[floorKey, *Value]{
			ExpiryCalculator: otter.ExpiryAccessing[floorKey, *Value](ttl),
		}),
		loader: otter.LoaderFunc[floorKey, *Value](func(_ context.Context, k floorKey) (*Value, error) {
			return load(k.key), nil
		}),
	}
}

func (o *otterCache) get(k *benchKey) (*Value, error) {
	return o.c.Get(context.Background(), k.fk, o.loader)
}

func (o *otterCache) close() { o.c.StopAllGoroutines() }

// --- ttlcache v3 ------------------------------------------------------------

type ttlCache struct {
	c *ttlcache.Cache[floorKey, *Value]
}

func newTTLCache(load loader, _ int) getter {
	// The library's own loader with duplicate suppression (singleflight),
	// and its default touch on hit (each Get extends the TTL).
	l := ttlcache.NewSuppressedLoader[floorKey, *Value](
		ttlcache.LoaderFunc[floorKey, *Value](func(c *ttlcache.Cache[floorKey, *Value], k floorKey) *ttlcache.Item[floorKey, *Value] {
			return c.Set(k, load(k.key), ttlcache.DefaultTTL)
		}), nil)
	return &ttlCache{c: ttlcache.New(
		ttlcache.WithTTL[floorKey, *Value](ttl),
		ttlcache.WithLoader[floorKey, *Value](l),
	)}
}

func (t *ttlCache) get(k *benchKey) (*Value, error) {
	it := t.c.Get(k.fk)
	if it == nil {
		return nil, nil
	}
	return it.Value(), nil
}

func (t *ttlCache) close() { t.c.Stop() }

// --- sturdyc ------------------------------------------------------------------

type sturdyCache struct {
	c    *sturdyc.Client[*Value]
	load loader
}

func newSturdyc(load loader, capacity int) getter {
	// sturdyc bounds each of its shards to capacity/shards; 4x the entries
	// keeps every shard below its bound, so nothing is evicted.
	c := sturdyc.New[*Value](4*capacity+1024, 64, ttl, 10, sturdyc.WithNoContinuousEvictions())
	return &sturdyCache{c: c, load: load}
}

func (s *sturdyCache) get(k *benchKey) (*Value, error) {
	return s.c.GetOrFetch(context.Background(), k.full, func(context.Context) (*Value, error) {
		return s.load(k.fk.key), nil
	})
}

func (s *sturdyCache) close() {}

// --- singleflight over a map ------------------------------------------------

type singleflightMap struct {
	mu   sync.RWMutex
	m    map[floorKey]*Value
	g    singleflight.Group
	load loader
}

func newSingleflightMap(load loader, _ int) getter {
	return &singleflightMap{m: make(map[floorKey]*Value), load: load}
}

func (s *singleflightMap) get(k *benchKey) (*Value, error) {
	s.mu.RLock()
	v := s.m[k.fk]
	s.mu.RUnlock()
	if v != nil {
		return v, nil
	}
	r, err, _ := s.g.Do(k.full, func() (any, error) {
		// A flight that finished between our look and Do has stored
		// the value: serve it rather than fetch again.
		s.mu.RLock()
		v := s.m[k.fk]
		s.mu.RUnlock()
		if v != nil {
			return v, nil
		}
		v = s.load(k.fk.key)
		s.mu.Lock()
		s.m[k.fk] = v
		s.mu.Unlock()
		return v, nil
	})
	p, _ := r.(*Value)
	return p, err
}

func (s *singleflightMap) close() {}

// --- floor: a map under an RWMutex ------------------------------------------

type floor struct {
	mu   sync.RWMutex
	m    map[floorKey]*Value
	load loader
}

func newFloor(load loader, _ int) getter {
	return &floor{m: make(map[floorKey]*Value), load: load}
}

// get returns the stored value. On a miss it loads and stores without any
// coalescing, so concurrent misses of one key each call the loader.
func (f *floor) get(k *benchKey) (*Value, error) {
	f.mu.RLock()
	v := f.m[k.fk]
	f.mu.RUnlock()
	if v != nil {
		return v, nil
	}
	v = f.load(k.fk.key)
	f.mu.Lock()
	f.m[k.fk] = v
	f.mu.Unlock()
	return v, nil
}

func (f *floor) close() {}

// --- workloads --------------------------------------------------------------

// warm returns a new instance of im holding every key of keys.
func warm(tb testing.TB, im impl, keys []benchKey) getter {
	tb.Helper()
	g := im.new(tableLoader(keys), len(keys))
	for i := range keys {
		v, err := g.get(&keys[i])
		if err != nil || v != keys[i].val {
			g.close()
			tb.Fatalf("%s: warm-up Get of %q = %v, %v; want %v", im.name, keys[i].fk.key, v, err, keys[i].val)
		}
	}
	return g
}

// hitImpls are the implementations of the single-goroutine Hit workload:
// the usual ones and the agent cache with a request built at each Get.
func hitImpls() []impl {
	out := append([]impl(nil), impls[:1]...)
	out = append(out, impl{"agentcache-newreq", newAgentCacheNewReq})
	return append(out, impls[1:]...)
}

// runHits Gets keys[order[i % n]] for i in [0, b.N), one goroutine.
func runHits(b *testing.B, im impl, keys []benchKey, order []int) {
	g := warm(b, im, keys)
	defer g.close()
	b.ReportAllocs()
	b.ResetTimer()
	j := 0
	for range b.N {
		k := &keys[order[j]]
		if v, err := g.get(k); v != k.val || err != nil {
			b.Fatalf("Get(%q) = %v, %v; want %v", k.fk.key, v, err, k.val)
		}
		if j++; j == len(order) {
			j = 0
		}
	}
}

// BenchmarkHit: one goroutine, 10,000 warm keys visited in order.
func BenchmarkHit(b *testing.B) {
	keys := makeKeys("hit", hitKeys)
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	for _, im := range hitImpls() {
		b.Run(im.name, func(b *testing.B) { runHits(b, im, keys, order) })
	}
}

// BenchmarkHitRandom: as Hit, in a fixed random order of the keys.
func BenchmarkHitRandom(b *testing.B) {
	keys := makeKeys("hit", hitKeys)
	order := rand.New(rand.NewPCG(1, 2)).Perm(len(keys))
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) { runHits(b, im, keys, order) })
	}
}

// BenchmarkHitParallel: GOMAXPROCS goroutines (b.RunParallel) Get the warm
// keys, each walking them in order from its own offset.
func BenchmarkHitParallel(b *testing.B) {
	keys := makeKeys("hit", hitKeys)
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) {
			g := warm(b, im, keys)
			defer g.close()
			var next, bad atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				j := int(next.Add(1)-1) * 2503 % len(keys) // 2503 is prime: distinct offsets
				for pb.Next() {
					k := &keys[j]
					if v, err := g.get(k); v != k.val || err != nil {
						bad.Add(1)
					}
					if j++; j == len(keys) {
						j = 0
					}
				}
			})
			if n := bad.Load(); n > 0 {
				b.Fatalf("%d Gets returned a wrong value", n)
			}
		})
	}
}

// missOp is one op of MissCoalesced: its key and the results its loader
// calls produced.
type missOp struct {
	key     string
	mu      sync.Mutex
	results []*Value
}

func (op *missOp) produced(v *Value) bool {
	op.mu.Lock()
	defer op.mu.Unlock()
	for _, r := range op.results {
		if r == v {
			return true
		}
	}
	return false
}

// BenchmarkMissCoalesced: per op, a fresh key that 256 goroutines Get at
// once (behind a start barrier); the loader takes 1 ms. fetches/op counts
// loader calls; wrong/op counts callers that got an error or anything but
// a value that a loader call for that op's key returned.
func BenchmarkMissCoalesced(b *testing.B) {
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) {
			var cur atomic.Pointer[missOp]
			var fetches, foreign atomic.Int64
			load := func(key string) *Value {
				fetches.Add(1)
				time.Sleep(missLatency)
				v := new(Value)
				op := cur.Load()
				if op == nil || op.key != key {
					foreign.Add(1)
					return v
				}
				op.mu.Lock()
				op.results = append(op.results, v)
				op.mu.Unlock()
				return v
			}
			g := im.new(load, 1024)
			defer g.close()

			var wrong int64
			type got struct {
				v   *Value
				err error
			}
			res := make([]got, missCallers)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				k := makeKeys(fmt.Sprintf("miss%d", i), 1)[0]
				op := &missOp{key: k.fk.key}
				cur.Store(op)
				var ready, done sync.WaitGroup
				start := make(chan struct{})
				ready.Add(missCallers)
				done.Add(missCallers)
				for c := range missCallers {
					go func() {
						defer done.Done()
						ready.Done()
						<-start
						v, err := g.get(&k)
						res[c] = got{v, err}
					}()
				}
				ready.Wait()
				b.StartTimer()

				close(start)
				done.Wait()

				b.StopTimer()
				for _, r := range res {
					if r.err != nil || r.v == nil || !op.produced(r.v) {
						wrong++
					}
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(fetches.Load())/float64(b.N), "fetches/op")
			b.ReportMetric(float64(wrong)/float64(b.N), "wrong/op")
			if n := foreign.Load(); n > 0 {
				b.Errorf("%d loader calls for a key of no current op", n)
			}
		})
	}
}

// BenchmarkMemory: per op, a new instance filled with 100,000 entries of
// 8-byte values through its loader (keys and values allocated beforehand);
// B/entry is the growth of the live heap (HeapAlloc after runtime.GC) per
// entry, averaged over the ops. ns/op is the time to fill.
func BenchmarkMemory(b *testing.B) {
	keys := makeKeys("mem", memEntries)
	load := tableLoader(keys)
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) {
			var total uint64
			var ms runtime.MemStats
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&ms)
				before := ms.HeapAlloc
				b.StartTimer()

				g := im.new(load, len(keys))
				for i := range keys {
					if v, err := g.get(&keys[i]); v != keys[i].val || err != nil {
						b.Fatalf("Get(%q) = %v, %v; want %v", keys[i].fk.key, v, err, keys[i].val)
					}
				}

				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > before {
					total += ms.HeapAlloc - before
				}
				runtime.KeepAlive(g)
				g.close()
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(total)/float64(b.N)/float64(len(keys)), "B/entry")
		})
	}
}

// TestImpls checks that every implementation serves each key's value, from
// its loader and then from memory, so that `go test` in this module tests
// something without running the benchmarks.
func TestImpls(t *testing.T) {
	keys := makeKeys("test", 100)
	for _, im := range hitImpls() {
		t.Run(im.name, func(t *testing.T) {
			g := warm(t, im, keys)
			defer g.close()
			for i := range keys {
				if v, err := g.get(&keys[i]); v != keys[i].val || err != nil {
					t.Fatalf("Get(%q) = %v, %v; want %v", keys[i].fk.key, v, err, keys[i].val)
				}
			}
		})
	}
}
