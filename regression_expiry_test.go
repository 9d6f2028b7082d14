package cache

import (
	"container/heap"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	metrics "github.com/armon/go-metrics"
	"github.com/stretchr/testify/require"
)

// rexpFillHeap prepopulates n entries of a type "t" with LastGetTTL ttl,
// waits for the expiry loop to settle, and returns them in the order of
// their keys. It runs in a bubble: the loop then sleeps until time moves,
// which the test does not let it do, so the test alone works the heap.
func rexpFillHeap(t *testing.T, c *Cache, n int, ttl time.Duration) []*entry {
	t.Helper()
	c.RegisterType("t", TestType(t), &RegisterOptions{LastGetTTL: ttl})
	es := make([]*entry, n)
	for i := range es {
		k := fmt.Sprint("k", i)
		require.NoError(t, c.Prepopulate("t", FetchResult{Value: i, Index: 1}, "", "", k))
		es[i] = c.lookupKey("t", "", "", k)
	}
	synctest.Wait()
	return es
}

// rexpHeapOps returns what was done to the heap since snap, a copy of the
// entries' expiry times: the entries evicted and those re-heaped (each
// entry, in the tests, is re-heaped at most once). c.expiryMu must be held.
func rexpHeapOps(snap map[*entry]int64) (ops int) {
	for e, exp := range snap {
		if e.heapIndex < 0 || e.expires != exp {
			ops++
		}
	}
	return ops
}

// rexpSnapshot returns the expiry time of every entry in the heap.
// c.expiryMu must be held.
func rexpSnapshot(c *Cache) map[*entry]int64 {
	snap := make(map[*entry]int64, len(c.expiry))
	for _, e := range c.expiry {
		snap[e] = e.expires
	}
	return snap
}

// TestRegression_ExpiryHeadBounded pins that no hold of expiryMu does more
// than evictBatch heap fixes and evictions together, however many entries
// come due at once after being hit: a hit only records its time, so each
// of them must be re-heaped when it comes due, and inserts (which take
// expiryMu) waited behind all of those re-heaps at once. Repeated batches
// still finish the job, with the seed's semantics: a hit entry stays, an
// idle one goes, and MaxEntries evicts the truly soonest first.
func TestRegression_ExpiryHeadBounded(t *testing.T) {
	const n, ttl = 8 * evictBatch, time.Hour
	t.Run("expiry", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) { rexpExpiryBounded(t, n, ttl) })
	})
	t.Run("overflow", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) { rexpOverflowBounded(t, n, ttl) })
	})
}

// rexpExpiryBounded: n entries all due, the even ones hit since they were
// queued (and on top), the odd ones idle.
func rexpExpiryBounded(t *testing.T, n int, ttl time.Duration) {
	c := TestCache(t)
	es := rexpFillHeap(t, c, n, ttl)
	c.expiryMu.Lock()
	now := c.now()
	for i, e := range es {
		if i%2 == 0 {
			e.expires = now - 2
			e.lastAccess.Store(now)
		} else {
			e.expires = now - 1
			e.lastAccess.Store(now - int64(ttl) - 1)
		}
	}
	heap.Init(&c.expiry)
	c.expiryMu.Unlock()

	calls := 0
	for {
		calls++
		require.LessOrEqual(t, calls, 2*n/evictBatch, "the batches finish")
		c.expiryMu.Lock()
		snap := rexpSnapshot(c)
		c.expiryMu.Unlock()
		wait, ok := c.expireDue()
		c.expiryMu.Lock()
		ops := rexpHeapOps(snap)
		c.expiryMu.Unlock()
		require.LessOrEqual(t, ops, evictBatch, "heap fixes and evictions in batch %d", calls)
		if !ok || wait > 0 {
			require.True(t, ok)
			require.Equal(t, ttl, wait, "next due: the hit entries, a TTL after their hit")
			break
		}
	}
	require.Equal(t, n/evictBatch, calls, "full batches")
	require.Equal(t, int64(n/2), c.count.Load())
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	expiryCheckHeap(t, c.expiry)
	for i, e := range es {
		if i%2 == 0 {
			require.Equal(t, now+int64(ttl), e.expires, "hit entry %d re-heaped at its true expiry", i)
		} else {
			require.True(t, e.evicted, "idle entry %d evicted", i)
		}
	}
}

// rexpOverflowBounded: n entries, all stale in the heap, entry i truly
// expiring at now+i, and a bound of n/4: the first 3n/4 must go.
func rexpOverflowBounded(t *testing.T, n int, ttl time.Duration) {
	c := TestCache(t)
	es := rexpFillHeap(t, c, n, ttl)
	rexpStale(c, es, ttl)
	s := *c.settings.Load()
	s.maxEntries = n / 4
	c.settings.Store(&s)

	var ev evictions
	for calls, more := 1, true; more; calls++ {
		require.LessOrEqual(t, calls, 2*n/evictBatch, "the batches finish")
		c.expiryMu.Lock()
		snap := rexpSnapshot(c)
		c.expiryMu.Unlock()
		more = c.overflowBatch(c.now(), &ev)
		c.finishEvictions(&ev, c.metrics.evictSize)
		c.expiryMu.Lock()
		ops := rexpHeapOps(snap)
		c.expiryMu.Unlock()
		require.LessOrEqual(t, ops, evictBatch, "heap fixes and evictions in batch %d", calls)
	}
	require.Equal(t, int64(n/4), c.count.Load())
	rexpRequireSoonestEvicted(t, c, es, 3*n/4)

	// evictOverflow itself, in batches, ends with the bound respected.
	rexpStale(c, es, ttl)
	s.maxEntries = n / 8
	c.settings.Store(&s)
	c.evictOverflow()
	require.Equal(t, int64(n/8), c.count.Load())
	rexpRequireSoonestEvicted(t, c, es, 7*n/8)
}

// rexpStale makes the expiry times in the heap stale: entry i of es truly
// expires at now+i, but is queued as expiring a TTL before now.
func rexpStale(c *Cache, es []*entry, ttl time.Duration) {
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	now := c.now()
	for i, e := range es {
		e.expires = now - int64(ttl)
		e.lastAccess.Store(now - int64(ttl) + int64(i))
	}
	heap.Init(&c.expiry)
}

// rexpRequireSoonestEvicted fails unless exactly the first k of es, the
// soonest to expire, were evicted, and the heap is sound.
func rexpRequireSoonestEvicted(t *testing.T, c *Cache, es []*entry, k int) {
	t.Helper()
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	expiryCheckHeap(t, c.expiry)
	for i, e := range es {
		require.Equal(t, i < k, e.evicted, "entry %d evicted", i)
	}
}

// rexpReentrantSink is a go-metrics sink that calls into the cache from
// within a metric update, once: on the first increment of the counter
// named on, or, for on "entries_count", on the first fall of that gauge
// (an eviction). It sums the counters and keeps the gauge's last value.
type rexpReentrantSink struct {
	metrics.BlackholeSink
	on   string
	call func()
	done chan struct{} // closed once call returned

	fired    atomic.Bool
	mu       sync.Mutex
	counters map[string]float32
	gauge    float32
}

func (s *rexpReentrantSink) IncrCounterWithLabels(key []string, val float32, _ []metrics.Label) {
	name := key[len(key)-1]
	s.mu.Lock()
	s.counters[name] += val
	s.mu.Unlock()
	if name == s.on {
		s.fire()
	}
}

func (s *rexpReentrantSink) SetGaugeWithLabels(key []string, val float32, _ []metrics.Label) {
	if key[len(key)-1] != "entries_count" {
		return
	}
	s.mu.Lock()
	fell := val < s.gauge
	s.gauge = val
	s.mu.Unlock()
	if fell && s.on == "entries_count" {
		s.fire()
	}
}

func (s *rexpReentrantSink) fire() {
	if s.fired.CompareAndSwap(false, true) {
		s.call()
		close(s.done)
	}
}

// evicted returns the sum of the eviction counters, and the gauge.
func (s *rexpReentrantSink) evicted() (n, gauge float32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters["evict_expired"] + s.counters["evict_size"], s.gauge
}

// TestRegression_MetricsOutsideExpiryLock pins that evictions emit their
// metrics once expiryMu is released: a sink is the embedder's code, and one
// that calls back into the cache (Prepopulate, a Get of a new key: both
// take expiryMu) deadlocked the expiry loop or the Get that evicted to
// honour MaxEntries. The counters stay exact: one per evicted entry.
//
// Not in a bubble: a goroutine blocked on a mutex does not count as
// blocked there, so the bubble would hang rather than report the deadlock;
// a generous deadline catches it instead.
func TestRegression_MetricsOutsideExpiryLock(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		on     string
		bySize bool
	}{
		{"evict_expired", false},
		{"evict_size", true},
		{"entries_count", false},
		{"entries_count", true},
	} {
		for _, call := range []string{"prepopulate", "get"} {
			t.Run(fmt.Sprintf("%s/size=%v/%s", tc.on, tc.bySize, call), func(t *testing.T) {
				t.Parallel()
				rexpMetricsReentrant(t, tc.on, call, tc.bySize)
			})
		}
	}
}

// rexpMetricsReentrant runs one case: the sink's callback makes call on
// the metric on; entries are evicted by size (MaxEntries 1) if bySize,
// else by expiry (a TTL of a millisecond).
func rexpMetricsReentrant(t *testing.T, on, call string, bySize bool) {
	sink := &rexpReentrantSink{on: on, done: make(chan struct{}), counters: map[string]float32{}}
	cfg := metrics.DefaultConfig("x")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	m, err := metrics.New(cfg, sink)
	require.NoError(t, err)
	o := &Options{Metrics: m}
	ttl := time.Millisecond
	if bySize {
		o.MaxEntries, ttl = 1, time.Hour
	}
	c := New(o)
	t.Cleanup(func() { c.Close() })
	c.RegisterType("t", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{Value: r.CacheInfo().Key, Index: 1}, nil
	}), &RegisterOptions{LastGetTTL: ttl})

	var callErr error
	sink.call = func() {
		if call == "prepopulate" {
			callErr = c.Prepopulate("t", FetchResult{Value: 1, Index: 1}, "", "", "inner")
		} else {
			_, _, callErr = c.Get("t", RequestInfo{Key: "inner"})
		}
	}
	// Fed from a goroutine of its own: evicting by size, the Prepopulate
	// that evicts is the one that would deadlock.
	const created = 3 // the two keys fed, and the sink's
	fed := make(chan error, 1)
	go func() {
		var err error
		for i := range created - 1 {
			err = errors.Join(err, c.Prepopulate("t", FetchResult{Value: i, Index: 1}, "", "", fmt.Sprint("k", i)))
		}
		fed <- err
	}()
	rexpWait(t, sink.done, "the sink's "+call+" from within "+on)
	require.NoError(t, callErr)
	require.NoError(t, rexpWait(t, fed, "feeding the cache"))

	// Every entry created is either still cached or counted once as evicted.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, gauge := sink.evicted()
		left := c.count.Load()
		if int(n)+int(left) == created && gauge == float32(left) && (bySize || left == 0) {
			break
		}
		require.True(t, time.Now().Before(deadline), "evicted %v, gauge %v, %d cached, of %d created", n, gauge, left, created)
		time.Sleep(time.Millisecond)
	}
}

// rexpWait returns what ch gives, failing unless it does within a deadline
// far beyond what the work takes: a deadlock, here, is a call that never
// returns.
func rexpWait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("%s never returned: metrics were emitted under expiryMu", what)
		var zero T
		return zero
	}
}
