package cache

import (
	"math/rand/v2"
	"time"

	"golang.org/x/time/rate"
)

// joinRequest is what a Get that joins an entry's fetch brings, but the
// type, entry and Request that the loop keeps: apart from them, the Get's
// locals it points to do not escape. Pointers keep it small on the stack
// of a waiting Get (see getSlow).
type joinRequest struct {
	key *keyRef
	// seen is what the Get examined; how says what it waits for.
	seen *sight
	how  waitFlags
}

// join makes sure the entry for jr.key, of type te, is being fetched and
// returns it with a channel that is closed when there is something new to
// look at, or nil if the cache is closed; e is that entry if the Get just
// found it in its shard, else nil. If a newer result than jr.seen's was
// published since, the channel is already closed, so a Get racing with a
// finishing fetch never waits for (or starts) another one.
func (c *Cache) join(te *typeEntry, e *entry, jr *joinRequest, r Request) (*entry, <-chan struct{}) {
	if e == nil {
		e = c.lookupOrCreate(jr.key, te)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.evicted || !sameResult(e, e.version(), jr.seen.e, jr.seen.res.ver):
		return e, lookAgain
	case c.closed.Load():
		return e, nil
	case !e.fetching:
		c.startLoop(e, te, r)
	case jr.seen.res.valid() && jr.how&wantsChange == 0 && e.loop.Load().blocking:
		// The caller wants the current value, not a change, and the loop
		// is in a blocking query that may not answer for minutes.
		return e, c.sideFetch(e, te, r)
	}
	return e, c.waitCh(e, jr.how&needsResult != 0)
}

// startLoop starts the entry's fetch loop. e.mu must be held and the loop
// not running.
func (c *Cache) startLoop(e *entry, te *typeEntry, r Request) {
	e.fetching = true
	lp := c.loopState(e)
	if te.opts.Refresh {
		e.refreshing.Store(true)
	}
	// The loop is built on its goroutine's stack: one allocation (the
	// goroutine's closure) rather than two.
	go func() {
		l := fetchLoop{c: c, e: e, lp: lp, r: r, te: te}
		l.run()
	}()
}

// startRefresh starts the background refresh of an entry of a refreshing
// type that none keeps current, with the request of a hit: the entry was
// prepopulated, its type was registered again with Refresh, or its loop
// ended (Close, a panic, runtime.Goexit).
func (c *Cache) startRefresh(e *entry, te *typeEntry, r Request) {
	if c.closed.Load() {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.fetching && !e.evicted && !c.closed.Load() {
		c.startLoop(e, te, r)
	}
}

// fetchLoop is one run of an entry's fetch loop, and what its steps share,
// as x/sync/singleflight's call carries a call. It belongs to the loop's
// goroutine, started by Cache.startLoop; only te and attempt change.
type fetchLoop struct {
	c  *Cache
	e  *entry
	lp *entryLoop
	r  Request // the request of the Get that started the loop
	k  entryKey

	// te is the latest registration of the entry's type, picked up
	// before each fetch.
	te *typeEntry
	// attempt counts the failed attempts in a row, for back-off.
	attempt uint
}

// run is the entry's fetch goroutine; join starts it when a Get needs data
// and no loop runs. For a type without Refresh it fetches once and ends.
// For a refreshing type it goes on fetching, with the back-off and
// RefreshTimer waits between fetches, until the entry is evicted, the cache
// is closed or an error stops the refresh. Callers that need data
// meanwhile wait for its next result, so an entry never has two loop
// fetches in flight. A loop started after fetches that brought nothing
// (see emptyFetch) counts them as its own failed attempts, so that a Get
// waiting on such a type backs off rather than spins.
func (l *fetchLoop) run() {
	l.k = decodeKey(l.e.key)
	// A Fetch that calls runtime.Goexit (t.FailNow in a mock, say), or a
	// panic outside Fetch (in SupportsBlocking, a metrics sink, a log
	// handler), ends this goroutine without a result: still release the
	// waiters, and end the loop, so that the next Get starts another. The
	// two are told apart as singleflight does: recover returns nil for
	// runtime.Goexit.
	done := false
	defer func() {
		if !done {
			l.exited(recover())
		}
	}()

	more := l.resume()
	for more {
		l.te = l.e.typ.te.Load() // the latest registration
		more = l.limitWait() && l.fetchOnce() && l.pause()
	}
	done = true
}

// exited publishes the end of a loop whose goroutine is unwinding: v is
// what it panicked with, nil for runtime.Goexit.
func (l *fetchLoop) exited(v any) {
	err := errExited(l.te.name, l.k.key)
	if v != nil {
		err = l.c.panicked(l.te, &l.k, v, "cache: fetch loop panicked")
	}
	l.publish(nil, outcome{err: err}, l.c.now(), false)
	l.c.addExpiry(l.e)
}

// resume waits out the back-off that fetches before the loop called for
// (see emptyFetch) and reports whether the loop goes on. A loop whose Gets
// all gave up meanwhile ends: its fetch would be for nobody.
func (l *fetchLoop) resume() bool {
	var wait time.Duration
	// The clock only for a result that may call for a back-off.
	if res := l.e.result(); res.extra != nil {
		l.attempt, wait = res.emptyRun(l.c.now())
	}
	if !l.wait(wait) {
		return false
	}
	if wait > 0 && !l.te.opts.Refresh && l.e.watchers.Load() == 0 {
		l.c.endLoop(l.e)
		return false
	}
	return true
}

// pause waits between two fetches of a refreshing loop: the back-off for
// its failed attempts, then RefreshTimer. It reports whether the loop goes
// on.
func (l *fetchLoop) pause() bool {
	wait := backOffWait(l.attempt)
	if wait > 0 {
		l.c.logger().Debug("cache: backing off", logAttrs(&l.k, "wait", wait, "failures", l.attempt)...)
	}
	return l.wait(wait + l.te.opts.RefreshTimer)
}

// endLoop is entry.endLoopLocked for a loop that holds no lock.
func (c *Cache) endLoop(e *entry) {
	e.mu.Lock()
	e.endLoopLocked()
	e.mu.Unlock()
}

// begin reports whether the loop may start a fetch, which it may not once
// the entry is evicted or the cache closed; then the loop is over. It
// records that the fetch is in flight, and whether it is a blocking query.
func (l *fetchLoop) begin(blocking bool) bool {
	e := l.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.evicted || l.c.closed.Load() {
		e.endLoopLocked()
		return false
	}
	l.lp.inFetch, l.lp.blocking = true, blocking
	if _, ok := l.te.typ.(ContextType); ok {
		l.lp.makeCtx(e)
	}
	if l.te.opts.Refresh {
		e.refreshing.Store(true)
	}
	return true
}

// fetchOptions returns the options for a fetch that follows the result
// prev.
func fetchOptions(te *typeEntry, prev *result) FetchOptions {
	var opts FetchOptions
	if te.typ.SupportsBlocking() {
		opts.MinIndex = prev.fetchIndex()
		opts.Timeout = te.opts.RefreshTimeout
	}
	if prev.valid() {
		opts.LastResult = &FetchResult{Value: prev.value, State: prev.state(), Index: prev.fetchIndex()}
	}
	return opts
}

// fetchOnce runs one Fetch for the entry and publishes its outcome. It
// reports whether the loop should go on refreshing.
func (l *fetchLoop) fetchOnce() bool {
	te, lp := l.te, l.lp
	prev := l.e.result()
	opts := fetchOptions(te, &prev)
	if !l.begin(opts.MinIndex > 0) {
		return false
	}

	// A refresh that is failing marks the value stale until it reconnects.
	// A blocking refresh that lasts past the RPC keepalive (30 s) proves the
	// connection is up, so it clears the mark without waiting up to the
	// whole RefreshTimeout for the answer.
	var connected *time.Timer
	if te.opts.Refresh && prev.index > 0 && te.opts.RefreshTimeout > 31*time.Second {
		connected = time.AfterFunc(31*time.Second, func() { lp.lostContact.Store(0) })
	}
	var o outcome
	o.fr, o.err = l.c.callFetch(lp.ctx, &fetchCall{te, l.k, opts, l.r})
	if connected != nil {
		connected.Stop()
	}
	l.account(&prev, &o)
	lp.failures.Store(uint32(min(l.attempt, maxEmptyRun)))

	// Into the expiry heap first: the callers this wakes then find the
	// entry accounted for, and a burst of misses is held back by the
	// expiry lock rather than piling up fetch goroutines behind it. One
	// clock read for both: on some machines it costs more than the heap.
	now := l.c.now()
	l.c.addExpiryAt(l.e, now)
	return l.publish(&prev, o, now, te.opts.Refresh)
}

// account counts the outcome o of a fetch that followed prev, moves the
// attempt count and the refresh's contact time, and decides whether o's
// error ends the refresh.
func (l *fetchLoop) account(prev *result, o *outcome) {
	refresh := l.te.opts.Refresh
	if o.err != nil {
		l.attempt++
		l.countError(o.err)
		o.endsRefresh = l.endsRefresh(o.err)
		if refresh {
			l.lp.lostContact.CompareAndSwap(0, l.c.now())
		}
		return
	}
	l.c.countSuccess(l.te, o.fr)
	if emptyFetch(o.fr, prev) {
		// A misbehaving type, not an error to report, but without
		// back-off it would refresh in a hot loop.
		l.attempt++
	} else {
		l.attempt = 0
	}
	if refresh {
		l.lp.lostContact.Store(0)
	}
}

// endsRefresh reports whether err, the latest of l.attempt failures in a
// row, ends the background refresh of a refreshing type: it was wrapped by
// StopRefresh, or the failures reached RefreshMaxFailures.
func (l *fetchLoop) endsRefresh(err error) bool {
	o := l.te.opts
	if !o.Refresh {
		return false
	}
	if !isStopRefresh(err) && (o.RefreshMaxFailures <= 0 || l.attempt < uint(o.RefreshMaxFailures)) {
		return false
	}
	l.c.logger().Warn("cache: background refresh stopped until the next Get", logAttrs(&l.k, "error", err.Error(), "failures", l.attempt)...)
	return true
}

// countSuccess counts a successful fetch of type te that returned fr.
func (c *Cache) countSuccess(te *typeEntry, fr FetchResult) {
	c.metrics.incr(c.metrics.fetchSuccess)
	c.metrics.incr(te.keys.fetchSuccess)
	if fr.NotModified {
		c.metrics.incr(te.keys.fetchNotModified)
	}
}

// countError counts and logs a failed fetch of the loop.
func (l *fetchLoop) countError(err error) {
	l.c.countError(l.te, &l.k, err, l.attempt)
}

// countError counts and logs a failed fetch of type te for the entry k,
// the latest of failures in a row.
func (c *Cache) countError(te *typeEntry, k *entryKey, err error, failures uint) {
	c.metrics.incr(c.metrics.fetchError)
	c.metrics.incr(te.keys.fetchError)
	if isStopRefresh(err) {
		c.metrics.incr(te.keys.fetchErrorTerminal)
	}
	c.logger().Warn("cache: fetch failed", logAttrs(k, "error", err.Error(), "failures", failures)...)
}

// publish applies the outcome o of a fetch that started from prev (nil if
// unknown), and ended at now, to the entry's result and wakes its
// waiters. refresh tells a refreshing loop. It reports whether the loop
// should go on refreshing; if not, the loop is over as of this call, so
// the next Get that needs data starts a new one.
func (l *fetchLoop) publish(prev *result, o outcome, now int64, refresh bool) bool {
	e := l.e
	e.mu.Lock()
	// An evicted entry still takes the result, for the callers that waited
	// on it, but it is no longer in the cache: nothing brings it back.
	cur := e.result()
	closeSt := e.store(cur.follow(prev, o, now))
	more := l.c.loopAfterPublish(e, refresh && !o.endsRefresh)
	e.mu.Unlock()
	l.c.closeState(e, closeSt)
	return more
}

// loopAfterPublish wakes the entry's waiters after a loop published, and
// reports whether the loop goes on: only for a refresh that goes on, of an
// entry still cached. e.mu must be held.
func (c *Cache) loopAfterPublish(e *entry, refresh bool) bool {
	lp := e.loop.Load()
	if lp != nil {
		lp.inFetch, lp.blocking = false, false
	}
	if !refresh || e.evicted || c.closed.Load() {
		e.endLoopLocked()
		// Nothing of the loop is needed until the next one: free it,
		// unless it holds the limiter (which must outlive the loop so that
		// restarts cannot bypass it), a refreshing type's lostContact or a
		// revalidation in flight.
		if lp != nil && lp.limiter.Load() == nil && lp.side == nil && !e.typ.te.Load().opts.Refresh {
			if lp.cancel != nil {
				lp.cancel()
			}
			e.loop.Store(nil)
		}
		return false
	}
	e.wake()
	return true
}

// limitWait waits for the entry's fetch rate limiter, if it has one. It
// returns false if the entry was evicted or the cache closed meanwhile;
// then the loop is over.
func (l *fetchLoop) limitWait() bool {
	for {
		reloaded := *l.c.reloaded.Load()
		lim := l.lp.limiter.Load()
		if lim == nil {
			return true
		}
		rv := lim.Reserve()
		d := rv.Delay()
		if d == 0 {
			return true
		}
		switch l.limiterSleep(d, reloaded) {
		case limitPassed:
			return true
		case limitStopped:
			rv.Cancel()
			l.c.endLoop(l.e)
			return false
		}
		rv.Cancel() // the limit changed: reserve again under the new one
	}
}

// Outcomes of fetchLoop.limiterSleep.
const (
	limitPassed   = iota // the wait is over
	limitStopped         // the entry was evicted or the cache closed
	limitReloaded        // ReloadOptions changed the limits
)

// limiterSleep waits d for the rate limiter, unless the entry is evicted,
// the cache closed or reloaded closed first.
func (l *fetchLoop) limiterSleep(d time.Duration, reloaded <-chan struct{}) int {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return limitPassed
	case <-l.done():
		return limitStopped
	case <-l.c.closing:
		return limitStopped
	case <-reloaded:
		return limitReloaded
	}
}

// done returns the channel that closes when the loop's context ends, on
// eviction, for the loop's waits. It gives the loop a context if it has
// none yet.
func (l *fetchLoop) done() <-chan struct{} {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	l.lp.makeCtx(l.e)
	return l.lp.ctx.Done()
}

// wait pauses the loop for d. It returns false if the entry was evicted or
// the cache closed, in which case the loop is over.
func (l *fetchLoop) wait(d time.Duration) bool {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-l.done():
		case <-l.c.closing:
		}
	}
	// A loop without a context has not waited: its eviction is noticed by
	// begin.
	if (l.lp.ctx != nil && l.lp.ctx.Err() != nil) || l.c.closed.Load() {
		l.c.endLoop(l.e)
		return false
	}
	return true
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

// setLimit applies the fetch rate limit of s to the loop.
func (lp *entryLoop) setLimit(s *settings) {
	lim := lp.limiter.Load()
	switch {
	case s.fetchRate == rate.Inf:
		lp.limiter.Store(nil)
	case lim == nil:
		lp.limiter.Store(rate.NewLimiter(s.fetchRate, s.fetchBurst))
	default:
		lim.SetLimit(s.fetchRate)
		lim.SetBurst(s.fetchBurst)
	}
}
