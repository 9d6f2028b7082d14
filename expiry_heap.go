package cache

import (
	"container/heap"
	"runtime"
	"time"
)

// expiryHeap is a container/heap of entries ordered by expiry time, soonest
// first. It maintains each entry's heapIndex. It is guarded by
// Cache.expiryMu.
type expiryHeap []*entry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires < h[j].expires }

func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = int32(i)
	h[j].heapIndex = int32(j)
}

func (h *expiryHeap) Push(x any) {
	e := x.(*entry)
	e.heapIndex = int32(len(*h))
	*h = append(*h, e)
}

func (h *expiryHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	e.heapIndex = -1
	return e
}

// evictBatch bounds the heap work done under one hold of expiryMu: the
// entries re-heaped because they were hit since they were queued and the
// entries evicted, together. Gets creating entries then never wait behind
// a mass expiry, however many of the entries coming due were hit.
const evictBatch = 256

// addExpiry puts an entry whose first fetch just ended in the expiry heap,
// LastGetTTL from now, and wakes the expiry loop if it now expires first.
// Entries already in the heap, or evicted, are left alone.
func (c *Cache) addExpiry(e *entry) {
	c.addExpiryAt(e, c.now())
}

// addExpiryAt is addExpiry with the time now read by the caller, which
// uses it for the fetch's result too.
func (c *Cache) addExpiryAt(e *entry, now int64) {
	if max := c.settings.Load().maxEntries; c.pushExpiry(e, now) && max > 0 && c.count.Load() > int64(max) {
		// Entries are evictable only from here on, so the bound may have
		// been left exceeded when they were created.
		c.evictOverflow()
	}
}

// pushExpiry does addExpiry's heap work, with e last used at now, and
// reports whether e was added.
func (c *Cache) pushExpiry(e *entry, now int64) bool {
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	if e.heapIndex >= 0 || e.evicted {
		return false
	}
	e.lastAccess.Store(now)
	e.expires = now + int64(e.ttl)
	heap.Push(&c.expiry, e)
	if e.heapIndex == 0 {
		select {
		case c.expiryNotify <- struct{}{}:
		default:
		}
	}
	return true
}

// runExpiryLoop evicts entries that have not been hit for their TTL. It runs
// from New until Close.
//
// Hits only record their time on the entry; when an entry comes due here
// its real expiry is recomputed from that time and it is re-queued if it was
// used meanwhile. That keeps the seed's semantics (every hit extends the
// TTL) without a heap update per hit.
func (c *Cache) runExpiryLoop() {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		// With nothing to expire, only an insertion can give work: no
		// timer, so an idle cache holds no pending timer at all.
		wait, ok := c.expireDue()
		if ok && wait == 0 {
			// More is due at once. Yield first: an insert that the batch
			// held up would otherwise, on a busy machine, wait for this
			// goroutine's time slice to end, and find expiryMu taken again.
			runtime.Gosched()
		}
		if ok {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-c.closing:
			return
		case <-c.expiryNotify:
		case <-timer.C:
		}
	}
}

// expireDue does one batch of expiry (see expireBatch) and returns how
// long until the next entry is due: 0 if the batch left work to do; ok
// is false if the heap is empty.
func (c *Cache) expireDue() (wait time.Duration, ok bool) {
	var ev evictions
	wait, ok = c.expireBatch(&ev)
	c.finishEvictions(&ev, c.metrics.evictExpired)
	return wait, ok
}

// expireBatch is expireDue under expiryMu: it evicts due entries and
// re-heaps those that were hit since they were queued, at most evictBatch
// of both. The evicted entries are added to ev.
//
// Only a due top is brought up to date. Expiry times in the heap are never
// later than the true ones, so a top that is not due means nothing is; a
// top fixed at once would, for a watched entry, be stale again by the next
// batch.
func (c *Cache) expireBatch(ev *evictions) (wait time.Duration, ok bool) {
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	now := c.now()
	budget := evictBatch
	for len(c.expiry) > 0 {
		if e := c.expiry[0]; e.expires > now {
			return time.Duration(e.expires - now), true
		}
		e := c.head(now, &budget)
		switch {
		case e == nil:
			return 0, true // the budget went on re-heaping
		case e.expires > now:
			continue // hit since it was queued: it was re-heaped
		case budget == 0:
			return 0, true
		}
		budget--
		heap.Pop(&c.expiry)
		c.evict(e, ev)
		c.expiry.shrink()
	}
	return 0, false
}

// shrinkMin is the size below which the heap is not worth
// rebuilding to give memory back.
const shrinkMin = 64

// shrink gives back the memory of a heap that has fallen to a quarter of
// its capacity, so that a burst of entries does not hold memory after it
// expired. The cost is amortised over the evictions since it grew.
func (h *expiryHeap) shrink() {
	if n := len(*h); cap(*h) >= shrinkMin && n <= cap(*h)/4 {
		*h = append(make(expiryHeap, 0, 2*n), *h...)
	}
}

// evictOverflow evicts the entries closest to expiry until the cache holds
// at most MaxEntries, or nothing evictable is left (entries whose first
// fetch is still running are not in the heap yet). It works in batches of
// evictBatch heap fixes and evictions, releasing expiryMu between them so
// that inserts are not held up, and returns only once the bound is met:
// entries inserted meanwhile are evicted too, by this call or by their
// own insert's.
//
// The entries are ranked as of the call: a watched entry is in use at its
// start. A later time, batch by batch, would make the watched entries
// fixed in one batch stale in the next, and they could be re-heaped for
// ever.
func (c *Cache) evictOverflow() {
	var ev evictions
	now := c.now()
	for {
		more := c.overflowBatch(now, &ev)
		c.finishEvictions(&ev, c.metrics.evictSize)
		if !more {
			return
		}
		runtime.Gosched() // see runExpiryLoop
	}
}

// overflowBatch is one batch of evictOverflow, under expiryMu, with entries
// ranked at now. The evicted entries are added to ev. It reports whether
// the cache may still hold too many entries.
func (c *Cache) overflowBatch(now int64, ev *evictions) (more bool) {
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	budget := evictBatch
	for max := c.settings.Load().maxEntries; max > 0 && c.count.Load() > int64(max) && len(c.expiry) > 0; {
		e := c.head(now, &budget) // the true soonest is on top
		if e == nil || budget == 0 {
			return true
		}
		budget--
		heap.Pop(&c.expiry)
		c.evict(e, ev)
	}
	return false
}

// head returns the entry that truly expires first. Hits do not touch the
// heap, so expiry times in it may be stale (early, never late): the head
// is brought up to date from its last access, and re-heaped, until the one
// on top is current. Each re-heap takes one from *budget; once it is 0,
// head returns nil, the top still stale. An entry that Gets are waiting on
// is in use at now (Consul #9979). The heap must not be empty.
// c.expiryMu must be held.
func (c *Cache) head(now int64, budget *int) *entry {
	for {
		e := c.expiry[0]
		last := e.lastAccess.Load()
		if e.watchers.Load() > 0 {
			last = now
		}
		real := last + int64(e.ttl)
		if real <= e.expires {
			return e
		}
		if *budget == 0 {
			return nil
		}
		*budget--
		e.expires = real
		heap.Fix(&c.expiry, 0)
	}
}

// evictions is what a batch of evictions leaves to do once expiryMu is
// released: the states of the evicted entries to close, and the metrics
// to emit. A metrics sink is the embedder's code, and may call back into
// the cache.
type evictions struct {
	closing []retired
	n       int // entries evicted
}

// finishEvictions closes the states of the entries in ev, evicted for
// reason, counts them and resets ev. It must be called without any of the
// cache's locks held.
func (c *Cache) finishEvictions(ev *evictions, reason []string) {
	c.closeStates(ev.closing)
	if ev.n > 0 {
		// One increment per entry, as the seed counts them: a sink that
		// keeps the number of increments (InmemSink's Count) sees the
		// entries, not the batches.
		for range ev.n {
			c.metrics.incr(reason)
		}
		c.metrics.gauge(c.metrics.entriesCount, float32(c.count.Load()))
	}
	clear(ev.closing)
	*ev = evictions{closing: ev.closing[:0]}
}

// evict removes e from the cache and stops its fetch loop. Its state, if
// it has one to close, and the count for the metrics are added to ev, to
// be acted on once expiryMu is released. c.expiryMu must be held.
func (c *Cache) evict(e *entry, ev *evictions) {
	c.unlink(e)
	e.mu.Lock()
	e.evicted = true
	e.cancelFetches()
	if st := e.retire(); st != nil {
		ev.closing = append(ev.closing, retired{e, st})
	}
	e.mu.Unlock()

	c.count.Add(-1)
	ev.n++
}
