package cache

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metrics "github.com/armon/go-metrics"
	"github.com/stretchr/testify/require"
)

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
