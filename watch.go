package cache

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
)

// UpdateEvent is a change delivered by Notify.
type UpdateEvent struct {
	// CorrelationID is the value given to Notify, so that one channel can
	// serve several watches.
	CorrelationID string
	// Result is the value, as Get would return it.
	Result any
	// Meta is the ResultMeta Get returned with it.
	Meta ResultMeta
	// Err is the error Get returned, if any.
	Err error
}

// Notify watches the request r of type t and sends an UpdateEvent to ch each
// time its result changes, until ctx is done or the cache is closed. It
// returns at once. The watch ends with ctx or Close, without a last
// event. While it waits for a change it holds no goroutine, only a place
// among its entry's waiters; each change runs one round of the watch on a
// goroutine of its own, which sends the event and ends. ch should be
// drained promptly: the watch waits for each send, though the other
// watches do not wait for it.
//
// For a type that supports blocking, the watch is a loop of blocking Gets:
// the first result is always sent, then one whenever the index changes.
// A lower index than the last one sent is a reset of the servers' index (a
// snapshot restore, say) and is sent as new data; later events count from
// it. Errors, and results with index 0, are retried with the same back-off
// as background refresh. Until a first value has been sent, every error is
// sent, and the watch does not block on an index: the first value is sent
// whatever its index.
//
// A type that does not support blocking is polled instead, which needs
// RequestInfo.MaxAge > 0 (Notify returns an error otherwise). An event is
// sent when the index or the value changes (reflect.DeepEqual), and for
// each failed poll until a first value arrives; the next poll comes when
// the value would be older than MaxAge, plus a small jitter so that it is
// stale by then and fetched anew, or after the back-off for an error.
//
// Notify returns an error if ctx, r or ch is nil, t is not registered, r
// has a negative Timeout or MaxAge, or the cache is closed (ErrClosed).
func (c *Cache) Notify(ctx context.Context, t string, r Request, correlationID string, ch chan<- UpdateEvent) error {
	// Five parameters, unlike the rest of the package: the seed's API.
	if ch == nil {
		return fmt.Errorf("cache: Notify of type %q: nil channel", t)
	}
	return c.NotifyCallback(ctx, t, r, correlationID, func(ctx context.Context, ev UpdateEvent) {
		select {
		case ch <- ev:
		case <-ctx.Done():
		case <-c.closing:
		}
	})
}

// NotifyCallback is Notify for callers that want a function called rather
// than a channel: cb receives each event, in order, together with ctx.
// Each call is made from a goroutine that runs one round of the watch;
// two calls for one watch never overlap. The watch waits for cb to return
// before it looks for the next change, so cb should be quick. It returns
// the errors Notify does, with a nil cb in place of a nil channel.
func (c *Cache) NotifyCallback(ctx context.Context, t string, r Request, correlationID string, cb func(ctx context.Context, e UpdateEvent)) error {
	// Five parameters, unlike the rest of the package: Notify's, with cb
	// for ch.
	if c.closed.Load() {
		return ErrClosed
	}
	te := c.typeEntry(t)
	if te == nil {
		return unknownType(t)
	}
	if cb == nil {
		return fmt.Errorf("cache: NotifyCallback of type %q: nil callback", t)
	}
	if r == nil || ctx == nil {
		return nilArg("Notify", t, r, ctx)
	}
	info := r.CacheInfo()
	if info.Timeout < 0 || info.MaxAge < 0 {
		return badRequestInfo("Notify", t, &info)
	}
	polls := !te.typ.SupportsBlocking()
	if polls && info.MaxAge == 0 {
		return errors.New("cannot use Notify for polling cache types without specifying the MaxAge")
	}
	w := &watch{c: c, ctx: ctx, t: t, r: r, info: info, id: correlationID, cb: cb, polls: polls}
	w.g.key = c.makeKey(nil, t, info.Datacenter, info.Token, info.Key)
	w.state.Store(watchRunning)
	if w.set = c.watchSet(); !w.set.add(w) {
		return ErrClosed
	}
	w.stopCtx = context.AfterFunc(ctx, w.wake)
	go w.run()
	return nil
}

// watchSet holds the live watches of a cache (Cache.watches), so that
// Close can end them all: one that waits out a back-off or polling
// interval is parked on no entry.
type watchSet struct {
	once   sync.Once // starts endWatches, with the first watch
	mu     sync.Mutex
	ws     map[*watch]struct{}
	closed bool // no watch may be added
}

// watchSet returns the cache's watchSet. With the cache's first watch it
// starts the goroutine endWatches, which lives, like the expiry loop,
// until the cache is closed.
func (c *Cache) watchSet() *watchSet {
	s := &c.watches
	s.once.Do(func() {
		s.ws = make(map[*watch]struct{})
		go s.endWatches(c.closing)
	})
	return s
}

// endWatches waits for closing, the cache's, and wakes every watch in s
// to end: no new one can be added after.
func (s *watchSet) endWatches(closing <-chan struct{}) {
	<-closing
	s.mu.Lock()
	s.closed = true
	ws := make([]*watch, 0, len(s.ws))
	for w := range s.ws {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	for _, w := range ws {
		w.wake()
	}
}

// add adds w to the set and reports whether it did: not once the cache
// closed.
func (s *watchSet) add(w *watch) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.ws[w] = struct{}{}
	return true
}

// remove takes w, which ended, out of the set.
func (s *watchSet) remove(w *watch) {
	s.mu.Lock()
	delete(s.ws, w)
	s.mu.Unlock()
}

// len returns the number of live watches in the set.
func (s *watchSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ws)
}

// watch is one Notify watch. It has no goroutine of its own: it is a state
// that rounds move along. A round runs on a goroutine that wake starts
// when something the watch waits for happens (its entry published a
// result, a back-off, polling interval or Timeout ended, ctx ended, the
// cache closed); it looks at the entry, delivers what is new, joins the
// entry's fetch again and parks the watch among the entry's waiters
// (entryLoop.watches), or arms a timer, and ends. state makes sure that
// one round at a time runs, so that events keep their order.
//
// Goroutines: NotifyCallback starts the first round; wake starts the
// others. A round ends when the watch parks or is over; a parked watch
// leaves nothing running but, at most, a timer and its context's
// AfterFunc, both stopped when the watch ends. Close ends every watch
// through its cache's watchSet, whose goroutine (endWatches) wakes them
// once the cache is closing.
//
// Lock order: a round takes entry.mu or watchSet.mu, never two at once;
// an entry wakes its watches with entry.mu held, and wake takes no lock.
type watch struct {
	c    *Cache
	ctx  context.Context
	t    string
	r    Request
	info RequestInfo // info.MinIndex is moved along by the Gets
	id   string      // the correlation ID
	cb   func(context.Context, UpdateEvent)
	// polls tells a type that does not support blocking.
	polls bool

	// What the rounds carry from one to the next. Only the running round
	// touches them.
	index    uint64      // of the last value sent, 0 before the first
	failures uint        // in a row, for back-off
	last     any         // polling: the last value sent
	phase    uint8       // what the watch waits for
	g        watchGet    // the Get in progress
	sleep    *time.Timer // for back-off and polling; fires slept
	stopCtx  func() bool // stops the context's AfterFunc
	set      *watchSet   // the cache's, which holds the watch until it ends

	// state is one of watchParked, watchRunning, watchPoked and watchDone.
	state atomic.Int32
	// slept is set when sleep fires; fired is the number of the Get whose
	// Timeout passed.
	slept atomic.Bool
	fired atomic.Uint64

	// prev and next link the watch into the watches of g.waited's loop,
	// guarded by that entry's mu. listed is set, under it, while the watch
	// is in that list; the round reads it without the lock, since only the
	// round puts the watch back.
	prev, next *watch
	listed     atomic.Bool
}

// watchGet is the Get a watch is in: what getSlow keeps in locals while it
// waits, kept here while the watch is parked instead.
type watchGet struct {
	key     keyRef // the watch's key, encoded once
	rd      round
	seen    result // the result the last round saw
	waited  *entry // the entry parked on
	counted bool   // the watch counts in waited.watchers
	n       uint64 // numbers the Gets, for watch.fired
	timeout *time.Timer
}

// Watch states.
const (
	watchParked  = iota // waiting, without a goroutine
	watchRunning        // a round runs
	watchPoked          // a round runs, and was woken meanwhile
	watchDone           // over: wakes are ignored
)

// Watch phases: what a parked watch waits for.
const (
	phaseNext  = iota // nothing: its next Get starts
	phaseGet          // the next result of the entry of its Get
	phaseSleep        // its sleep timer
)

// Outcomes of watch.getStep.
const (
	stepAnswered = iota // the Get returned
	stepParked          // the watch waits for the entry
	stepPoked           // woken while it tried to park: look again
)

// wake makes sure a round of the watch runs after this call: it starts
// one for a parked watch, and tells a running one to look again before it
// parks. It takes no lock, and may be called from anywhere, any number of
// times.
func (w *watch) wake() {
	for {
		switch s := w.state.Load(); s {
		case watchParked:
			if w.state.CompareAndSwap(s, watchRunning) {
				go w.run()
				return
			}
		case watchRunning:
			if w.state.CompareAndSwap(s, watchPoked) {
				return
			}
		default:
			return
		}
	}
}

// idle parks a running watch whose wait is set up, and reports whether
// it did: if it was woken meanwhile, it is left running, to look again.
// The round must not touch the watch after a true result.
func (w *watch) idle() bool {
	if w.state.CompareAndSwap(watchRunning, watchParked) {
		return true
	}
	w.state.Store(watchRunning)
	return false
}

// run is a round of the watch, on the goroutine wake (or NotifyCallback)
// started: it goes on from where the watch parked, delivering the events
// due, until the watch parks again or is over.
func (w *watch) run() {
	for {
		if w.ended() {
			w.finish()
			return
		}
		if w.phase == phaseSleep {
			if !w.slept.Load() {
				if w.idle() {
					return
				}
				continue
			}
			w.phase = phaseNext
		}
		ev, st := w.getStep()
		if st == stepParked {
			return
		}
		if st == stepPoked {
			continue
		}
		if w.ended() {
			w.finish()
			return
		}
		wait, more := w.after(ev)
		if !more {
			w.finish()
			return
		}
		if wait > 0 {
			w.sleepFor(wait)
			if w.idle() {
				return
			}
		}
	}
}

// after handles the answer of one Get of the watch, and returns how long
// to wait before the next one and whether the watch goes on.
func (w *watch) after(ev UpdateEvent) (time.Duration, bool) {
	if w.polls {
		return w.afterPoll(ev)
	}
	return w.afterBlocking(ev)
}

// afterBlocking is after for a type that supports blocking.
func (w *watch) afterBlocking(ev UpdateEvent) (time.Duration, bool) {
	// index stays 0 after errors, so that the Gets do not block and a
	// first value at index 1 (a new cluster) is not mistaken for an old
	// one (Consul #6521). The first result is always sent (index is 0
	// only until then), then each change.
	meta, err := ev.Meta, ev.Err
	reset := err == nil && meta.Index > 0 && meta.Index < w.index
	if w.index == 0 || w.index < meta.Index || reset {
		if !w.deliver(ev) {
			return 0, false
		}
		w.index = meta.Index
	}

	// A type that answers with index 0 would never block: back off as for
	// an error instead of spinning. For a cached entry its fetch loop does
	// that already (see emptyFetch), and the next Get joins it, so only
	// Gets that bypass the cache back off here: two back-offs would add
	// up.
	if err == nil && (meta.Index > 0 || w.info.Key != "") {
		w.failures = 0
	} else {
		w.failures++
	}
	// A result without an index (a misbehaving type, or a timeout before
	// any value) must not make the next Get return at once. After an
	// error, though, the next Get must not block: the first value may
	// well have index 1.
	if err == nil && w.index < 1 {
		w.index = 1
	}
	return backOffWait(w.failures), true
}

// afterPoll is after for a type that does not support blocking.
func (w *watch) afterPoll(ev UpdateEvent) (time.Duration, bool) {
	var send bool
	if ev.Err != nil {
		// Errors are news until there is a value to keep serving.
		send = w.last == nil
	} else {
		send = ev.Meta.Index != w.index || !reflect.DeepEqual(w.last, ev.Result)
	}
	if send {
		if !w.deliver(ev) {
			return 0, false
		}
		w.last, w.index = ev.Result, ev.Meta.Index
	}
	if ev.Err != nil {
		w.failures++
	} else {
		w.failures = 0
	}
	return w.pollWait(ev.Err, w.failures, ev.Meta.Age), true
}

// sleepFor arms the watch's sleep timer for d; the round then parks.
func (w *watch) sleepFor(d time.Duration) {
	w.phase = phaseSleep
	w.slept.Store(false)
	if w.sleep == nil {
		w.sleep = time.AfterFunc(d, func() {
			w.slept.Store(true)
			w.wake()
		})
		return
	}
	w.sleep.Reset(d)
}

// finish ends the watch: it leaves its entry and stops its timers and the
// context's AfterFunc. Wakes after it are ignored.
func (w *watch) finish() {
	w.unpark()
	w.stopTimeout()
	if w.sleep != nil {
		w.sleep.Stop()
	}
	w.stopCtx()
	w.set.remove(w)
	w.state.Store(watchDone)
}

// get is a Get of the watch that waits beyond minIndex, on the calling
// goroutine. A cached value with an index below floor (0 for none) is a
// reset, returned at once: the watch passes the index it delivered last,
// which came from this cache.
func (w *watch) get(minIndex, floor uint64) (any, ResultMeta, error) {
	w.info.MinIndex = minIndex
	if done, v, meta, err := w.c.getFast(w.ctx, w.t, w.r, &w.info); done {
		return v, meta, err
	}
	return w.c.getSlow(w.ctx, w.t, w.r, &w.info, floor, true)
}

// getStep goes on with the watch's Get as getSlow would: it starts the
// next one (phaseNext) or, woken in one (phaseGet), looks at its entry
// again. It returns the Get's answer (stepAnswered), or parks the watch
// until the entry's next result (stepParked), or finds the watch woken
// as it tried to park (stepPoked).
func (w *watch) getStep() (UpdateEvent, int) {
	g := &w.g
	if w.phase == phaseGet {
		w.unpark()
		if w.fired.Load() == g.n {
			// The request's Timeout passed: the last value seen, and no
			// error.
			v, meta, err := gaveUp(w.ctx, &g.seen, false)
			w.endGet()
			return UpdateEvent{w.id, v, meta, err}, stepAnswered
		}
		return w.look()
	}
	// A cached value with an index below the one delivered last is a
	// reset, which answers the Get: that index came from this cache.
	floor := w.index
	if w.polls {
		floor = 0
	}
	if w.info.Key == "" {
		// A Get that bypasses the cache is a fetch of its own, which
		// the round waits for.
		v, meta, err := w.get(w.index, floor)
		return UpdateEvent{w.id, v, meta, err}, stepAnswered
	}
	// getFast's hit, with the key the watch encoded once: a round's
	// goroutine then stays within its first stack.
	w.info.MinIndex = w.index
	now := w.c.now()
	if v, meta, ok := w.c.hitAt(w.c.lookup(&g.key), now, w.r, &w.info); ok {
		return UpdateEvent{w.id, v, meta, nil}, stepAnswered
	}
	w.phase = phaseGet
	g.rd, g.waited = round{first: true, floor: floor}, nil
	g.n++
	return w.look()
}

// look runs the rounds of getSlow's loop for the watch's Get until it is
// answered or the watch parks (see getStep). The wait of a round is
// replaced by parking the watch among the waiters of the entry's fetch.
func (w *watch) look() (UpdateEvent, int) {
	c, g := w.c, &w.g
	for {
		found := c.lookup(&g.key)
		te := c.typeOf(found, w.t)
		if te == nil {
			w.endGet()
			return UpdateEvent{CorrelationID: w.id, Err: unknownType(w.t)}, stepAnswered
		}
		var s sight
		c.look(&s, te, found, g.waited)
		if done, err := c.answer(&s, &w.info, &g.rd); done {
			w.endGet()
			v, meta, err := c.reply(&s, w.r, g.rd.first, err)
			return UpdateEvent{w.id, v, meta, err}, stepAnswered
		}
		if g.rd.first {
			w.startTimeout(te)
		}
		g.rd.next(&s, &w.info, true)
		g.seen = s.res
		var ch <-chan struct{}
		g.waited, ch = c.join(te, found, &joinRequest{&g.key, &s, g.rd.how}, w.r)
		if ch == nil {
			s.e = g.waited
			w.endGet()
			v, meta, err := c.reply(&s, w.r, false, ErrClosed)
			return UpdateEvent{w.id, v, meta, err}, stepAnswered
		}
		if st, ok := w.park(ch); ok {
			return UpdateEvent{}, st
		}
	}
}

// startTimeout counts the miss of the first round of the watch's Get, of
// type te, and starts the request's Timeout, which wakes the watch.
func (w *watch) startTimeout(te *typeEntry) {
	info := w.info
	info.Timeout = 0 // a timer that wakes, rather than one to wait on
	w.c.miss(te, &info, &w.g.rd)
	if w.info.Timeout > 0 {
		n := w.g.n
		w.g.timeout = time.AfterFunc(w.info.Timeout, func() {
			w.fired.Store(n)
			w.wake()
		})
	}
}

// stopTimeout stops the Timeout of the watch's Get.
func (w *watch) stopTimeout() {
	if g := &w.g; g.timeout != nil {
		g.timeout.Stop()
		g.timeout = nil
	}
}

// endGet ends the watch's Get, which was answered.
func (w *watch) endGet() {
	w.stopTimeout()
	w.phase = phaseNext
}

// park parks the watch until ch, the channel join gave its Get, is closed,
// and returns stepParked, or stepPoked if it was woken meanwhile. ok is
// false if ch is closed already: the Get looks again at once.
func (w *watch) park(ch <-chan struct{}) (st int, ok bool) {
	e := w.g.waited
	e.mu.Lock()
	lp := e.loop.Load()
	if lp == nil || lp.waiter != ch {
		e.mu.Unlock()
		select {
		case <-ch:
			return 0, false
		default:
		}
		// Not the loop's waiter: a revalidation's (see sideFetch), which
		// does not block. It is waited for on a goroutine that wakes the
		// watch.
		w.count(e)
		go func() {
			select {
			case <-ch:
			case <-w.ctx.Done():
			case <-w.c.closing:
			}
			w.wake()
		}()
	} else {
		// The entry wakes the watch when it closes ch (entry.wake); a
		// watched entry cannot expire.
		lp.addWatch(w)
		w.count(e)
		e.mu.Unlock()
	}
	if w.idle() {
		return stepParked, true
	}
	return stepPoked, true
}

// count counts the watch's Get among the watchers of e, which it waits on.
func (w *watch) count(e *entry) {
	e.watchers.Add(1)
	w.g.counted = true
}

// unpark takes the watch out of the waiters of its Get's entry, if the
// entry did not already, and ends its count among the entry's watchers.
func (w *watch) unpark() {
	g := &w.g
	if !g.counted {
		return
	}
	e := g.waited
	if w.listed.Load() {
		e.mu.Lock()
		if w.listed.Load() {
			e.loop.Load().removeWatch(w)
		}
		e.mu.Unlock()
	}
	// The end of a wait is a use.
	e.lastAccess.Store(w.c.now())
	e.watchers.Add(-1)
	g.counted = false
}

// pollWait returns how long a polling watch waits before its next poll,
// after one that returned err (the latest of failures in a row) or a value
// of the given age.
func (w *watch) pollWait(err error, failures uint, age time.Duration) time.Duration {
	if err != nil {
		return backOffWait(failures)
	}
	// Poll again when the value becomes older than MaxAge, at once if it
	// already is. The jitter makes sure it is stale by then, so that the
	// next Get fetches rather than hits.
	maxAge := w.info.MaxAge
	var wait time.Duration
	if age <= maxAge {
		wait = maxAge - age
	}
	return wait + randomStagger(maxAge/16)
}

// ended reports whether the watch is over: its context ended or the cache
// closed.
func (w *watch) ended() bool {
	return w.ctx.Err() != nil || w.c.closed.Load()
}

// deliver hands ev to the watch's callback and reports whether the watch
// goes on.
func (w *watch) deliver(ev UpdateEvent) bool {
	w.cb(w.ctx, ev)
	return !w.ended()
}
