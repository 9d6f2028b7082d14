package cache

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// entryKey identifies an entry. Comparing the four fields, rather than a
// string joined from them, keeps partitions exact: no datacenter, token or
// key can contain a separator that makes two requests collide.
type entryKey struct {
	typ, dc, token, key string
}

// result is one published outcome of a fetch: the value the entry serves and
// the error of the latest attempt. A result is immutable once published, so
// readers load it without a lock.
//
// It holds only what a hit reads; the type's state and the latest error,
// which most results lack, sit in a separate resultExtra.
type result struct {
	// value is the latest value a fetch returned; nil until one did. Only
	// non-nil values are stored, so a non-nil value is a valid result.
	value interface{}
	index uint64

	// fetchedAt is when value was fetched, as an offset from Cache.epoch;
	// 0 while value is nil.
	fetchedAt int64

	// extra is nil when both its fields are.
	extra *resultExtra
}

// resultExtra is the part of a result that is usually absent.
type resultExtra struct {
	state interface{}

	// err is the error of the latest fetch. When both value and err are
	// set, err is newer than value: a successful fetch always clears it.
	err error
}

// valid reports whether a fetch has ever returned a value.
func (r *result) valid() bool { return r.value != nil }

// state returns the type's opaque per-entry state.
func (r *result) state() interface{} {
	if r.extra == nil {
		return nil
	}
	return r.extra.state
}

// err returns the error of the latest fetch, nil if it succeeded.
func (r *result) err() error {
	if r.extra == nil {
		return nil
	}
	return r.extra.err
}

// newResult returns a result, with an extra only if state or err is set.
func newResult(value interface{}, index uint64, fetchedAt int64, state interface{}, err error) *result {
	r := &result{value: value, index: index, fetchedAt: fetchedAt}
	if state != nil || err != nil {
		r.extra = &resultExtra{state: state, err: err}
	}
	return r
}

// entry is one cached item and the single goroutine that fetches it.
//
// Lock order: Cache.expiryMu, then shard.mu, then entry.mu. The hit path
// takes none of them for writing: it loads res and stores lastAccess.
type entry struct {
	key entryKey

	// res is the latest published result, nil until the first fetch ends.
	res atomic.Pointer[result]

	// lastAccess is when a Get last hit the entry, as an offset from
	// Cache.epoch. The expiry loop reads it lazily, so a hit never touches
	// the heap.
	lastAccess atomic.Int64

	// lostContact is when background refresh first failed, as Unix
	// nanoseconds; 0 while it is connected.
	lostContact atomic.Int64

	// ttl is the type's LastGetTTL when the entry was first stored.
	ttl time.Duration

	// limiter bounds the entry's fetch rate; nil when Options set no limit.
	// Only the entry's fetch loop uses it.
	limiter *rate.Limiter

	// refreshPending is set for a prepopulated entry of a refreshing type:
	// its first hit starts the background refresh.
	refreshPending atomic.Bool

	// mu guards the fields below.
	mu sync.Mutex
	// fetching is set while the entry's fetch loop runs. At most one loop
	// runs per entry; callers that need new data join it through waiter.
	fetching bool
	// waiter is closed when the running loop publishes its next result. It
	// is created only when somebody waits.
	waiter chan struct{}
	// evicted is set once the entry left the cache; its loop then stops.
	// It is written with both Cache.expiryMu and mu held, so either lock
	// is enough to read it.
	evicted bool
	// stop is closed on eviction, to end the loop's refresh waits. It is
	// created by the loop when it first has to wait.
	stop chan struct{}

	// heapIndex and expires are guarded by Cache.expiryMu. heapIndex is -1
	// while the entry is not in the expiry heap; expires is an offset from
	// Cache.epoch, refreshed from lastAccess when it comes due.
	heapIndex int
	expires   int64
}

// apply returns the result that follows r after a fetch that returned fr
// and err at time now (an offset from Cache.epoch).
func (r *result) apply(fr FetchResult, err error, now int64) *result {
	value, index, fetchedAt, state := r.value, r.index, r.fetchedAt, r.state()
	// err replaces the older error; a success clears it.
	if fr.Value != nil {
		value, state, index = fr.Value, fr.State, fr.Index
		fetchedAt = now
		// Index 0 would make the next blocking fetch return at once, and so
		// a hot loop. No real data has index 1 (Raft bootstraps there), so 1
		// is a safe floor.
		if index < 1 {
			index = 1
		}
	} else if fr.State != nil && err == nil {
		// No value yet (a masked timeout or rate limit, say), but the type's
		// retry state must be kept for the next attempt.
		state = fr.State
	}
	return newResult(value, index, fetchedAt, state, err)
}

// closedCh is a closed channel, returned to callers that should look again
// at once instead of waiting.
var closedCh = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// waitCh returns the channel to wait on for the loop's next result.
// e.mu must be held.
func (e *entry) waitCh() chan struct{} {
	if e.waiter == nil {
		e.waiter = make(chan struct{})
	}
	return e.waiter
}

// wake releases every caller waiting for the next result. e.mu must be held.
func (e *entry) wake() {
	if e.waiter != nil {
		close(e.waiter)
		e.waiter = nil
	}
}

// stopCh returns the channel closed when the entry is evicted.
// e.mu must be held.
func (e *entry) stopCh() chan struct{} {
	if e.stop == nil {
		e.stop = make(chan struct{})
		if e.evicted {
			close(e.stop)
		}
	}
	return e.stop
}

// runFetchLoop is the entry's fetch goroutine; fetch starts it when a Get
// needs data and no loop runs. For a type without Refresh it fetches once
// and ends. For a refreshing type it goes on fetching, with the back-off and
// RefreshTimer waits between fetches, until the entry is evicted or the
// cache is closed. Callers that need data meanwhile wait for its next
// result, so an entry never has two fetches in flight.
func (c *Cache) runFetchLoop(e *entry, te *typeEntry, r Request) {
	// A Fetch that calls runtime.Goexit (t.FailNow in a mock, say) ends
	// this goroutine without a result: still release the waiters.
	done := false
	defer func() {
		if !done {
			c.publish(e, FetchResult{}, fmt.Errorf("cache: fetch of type %q, key %q exited without a result",
				te.name, e.key.key), false)
			c.addExpiry(e)
		}
	}()

	var attempt uint
	for {
		// Pick up a re-registered type.
		if cur := c.typeEntry(e.key.typ); cur != nil {
			te = cur
		}
		if !c.limitWait(e) {
			done = true
			c.stopLoop(e)
			return
		}
		var more bool
		attempt, more = c.fetchOnce(e, te, r, attempt)
		if !more {
			done = true
			return
		}
		wait := backOffWait(attempt)
		if wait > 0 {
			c.log.Debug("cache: backing off", logAttrs(&e.key, "wait", wait, "failures", attempt)...)
		}
		if !c.refreshWait(e, wait+te.opts.RefreshTimer) {
			done = true
			c.stopLoop(e)
			return
		}
	}
}

// stopLoop marks the loop ended without a result and wakes the waiters, who
// look again and start a fetch of their own if they still need one.
func (c *Cache) stopLoop(e *entry) {
	e.mu.Lock()
	e.fetching = false
	e.wake()
	e.mu.Unlock()
}

// fetchOnce runs one Fetch for the entry and publishes its outcome. It
// returns the failed-attempt count for back-off and whether the loop should
// go on refreshing.
func (c *Cache) fetchOnce(e *entry, te *typeEntry, r Request, attempt uint) (uint, bool) {
	prev := e.res.Load()
	if prev == nil {
		prev = noResult
	}
	var opts FetchOptions
	if te.typ.SupportsBlocking() {
		opts.MinIndex = prev.index
		opts.Timeout = te.opts.RefreshTimeout
	}
	if prev.valid() {
		opts.LastResult = &FetchResult{Value: prev.value, State: prev.state(), Index: prev.index}
	}

	// A refresh that is failing marks the value stale until it reconnects.
	// A blocking refresh that lasts past the RPC keepalive (30 s) proves the
	// connection is up, so it clears the mark without waiting up to the
	// whole RefreshTimeout for the answer.
	var connected *time.Timer
	if te.opts.Refresh && prev.index > 0 && te.opts.RefreshTimeout > 31*time.Second {
		connected = time.AfterFunc(31*time.Second, func() { e.lostContact.Store(0) })
	}

	fr, err := c.callFetch(te, &e.key, opts, r)
	if connected != nil {
		connected.Stop()
	}

	if err == nil {
		c.metrics.incr(c.metrics.fetchSuccess)
		c.metrics.incr(te.keys.fetchSuccess)
		if fr.Index > 0 {
			attempt = 0
		} else {
			// Index 0 is a misbehaving type, not an error to report, but
			// without back-off it would refresh in a hot loop.
			attempt++
		}
		if te.opts.Refresh {
			e.lostContact.Store(0)
		}
	} else {
		c.metrics.incr(c.metrics.fetchError)
		c.metrics.incr(te.keys.fetchError)
		attempt++
		if te.opts.Refresh {
			e.lostContact.CompareAndSwap(0, c.now())
		}
		c.log.Warn("cache: fetch failed", logAttrs(&e.key, "error", err.Error(), "failures", attempt)...)
	}

	more := c.publish(e, fr, err, te.opts.Refresh)
	c.addExpiry(e)
	return attempt, more
}

// publish applies a fetch's outcome to the entry's result and wakes its
// waiters. It reports whether the loop should go on refreshing; if not, the
// loop is over as of this call, so the next Get that needs data starts a
// new one.
func (c *Cache) publish(e *entry, fr FetchResult, err error, refresh bool) bool {
	now := c.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	// Apply to the current result, not the one the fetch started from: a
	// Prepopulate may have stored a newer value meanwhile.
	cur := e.res.Load()
	if cur == nil {
		cur = noResult
	}
	// An evicted entry still takes the result, for the callers that waited
	// on it, but it is no longer in the cache: nothing brings it back.
	e.res.Store(cur.apply(fr, err, now))
	e.wake()
	more := refresh && !e.evicted && !c.closed.Load()
	if !more {
		e.fetching = false
	}
	return more
}

// limitWait waits for the entry's fetch rate limiter, if it has one. It
// returns false if the entry was evicted meanwhile. After Close it does not
// wait: the fetch that follows is the loop's last.
func (c *Cache) limitWait(e *entry) bool {
	if e.limiter == nil {
		return true
	}
	rv := e.limiter.Reserve()
	d := rv.Delay()
	if d == 0 {
		return true
	}
	e.mu.Lock()
	stop := e.stopCh()
	e.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.stopCh:
		rv.Cancel()
		return true
	case <-stop:
		rv.Cancel()
		return false
	}
}

// refreshWait pauses the fetch loop for d. It returns false if the entry was
// evicted or the cache closed, in which case the loop must end.
func (c *Cache) refreshWait(e *entry, d time.Duration) bool {
	e.mu.Lock()
	stop := e.stopCh()
	e.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-stop:
		case <-c.stopCh:
		}
	}
	select {
	case <-stop:
		return false
	case <-c.stopCh:
		return false
	default:
		return true
	}
}

// backOffWait returns how long to wait after the given number of
// consecutive failures: nothing for the first CacheRefreshBackoffMin, then
// doubling from 2 s up to CacheRefreshMaxWait, plus a random stagger of up
// to as much again so that entries failing together spread out. A refresh
// that keeps failing thus retries about every one to two minutes, until
// its entry expires.
func backOffWait(failures uint) time.Duration {
	if failures <= CacheRefreshBackoffMin {
		return 0
	}
	shift := failures - CacheRefreshBackoffMin
	wait := CacheRefreshMaxWait
	if shift < 31 {
		wait = (1 << shift) * time.Second
	}
	if wait > CacheRefreshMaxWait {
		wait = CacheRefreshMaxWait
	}
	return wait + randomStagger(wait)
}

// randomStagger returns a random duration in [0, d).
func randomStagger(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}
