package cache

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/time/rate"
)

// result is one published outcome of a fetch, as a snapshot read from
// its entry: the value the entry serves and the error of the latest
// attempt. The entry holds the fields inline, under a sequence lock (see
// entry.seq), so that a hit reads them from the entry's own memory, and a
// fetch publishes without allocating.
//
// It holds only what a hit reads; the type's state and the latest error,
// which most results lack, sit in a separate resultExtra.
type result struct {
	// value is the latest value a fetch returned; nil until one did. Only
	// non-nil values are stored, so a non-nil value is a valid result.
	value any
	index uint64

	// fetchedAt is when value was fetched, as an offset from Cache.epoch;
	// 0 while value is nil.
	fetchedAt int64

	// extra is nil when all its fields are zero.
	extra *resultExtra

	// ver counts the results the entry published up to this one: 0 for
	// none yet. With the entry, it tells results apart.
	ver uint64
}

// resultExtra is the part of a result that is usually absent.
type resultExtra struct {
	state any

	// err is the error of the latest fetch. When both value and err are
	// set, err is newer than value: a successful fetch always clears it.
	err error

	// fetchIndex, when not 0, is the index to block on next instead of
	// index: a NotModified fetch moved it without changing the value.
	fetchIndex uint64

	// stopped is set when err ended the background refresh (StopRefresh,
	// RefreshMaxFailures): the next Get fetches again.
	stopped bool

	// empty counts the fetches in a row, up to this result, that succeeded
	// with nothing to serve (see emptyFetch), and retryAt is when the
	// back-off they call for ends, as an offset from Cache.epoch. A loop
	// started after them waits for it and counts them as failed attempts,
	// so that Gets looping on such a type back off instead of spinning.
	// The end is fixed once, so that loops restarted meanwhile do not
	// draw a new random stagger each.
	empty   uint32
	retryAt int64
}

// valid reports whether a fetch has ever returned a value.
func (r *result) valid() bool { return r.value != nil }

// state returns the type's opaque per-entry state.
func (r *result) state() any {
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

// fetchIndex returns the index the next blocking fetch waits on.
func (r *result) fetchIndex() uint64 {
	if r.extra != nil && r.extra.fetchIndex != 0 {
		return r.extra.fetchIndex
	}
	return r.index
}

// stopped reports whether the result's error ended the background refresh.
func (r *result) refreshStopped() bool { return r.extra != nil && r.extra.stopped }

// emptyRun returns how many fetches in a row, up to r, brought nothing to
// serve, and how much is left at now of the back-off they call for: it
// counts from the last of them, so that a caller who waited already (a
// Notify watch backing off) is not made to wait twice.
func (r *result) emptyRun(now int64) (attempts uint, wait time.Duration) {
	if r.extra == nil || r.extra.empty == 0 {
		return 0, 0
	}
	return uint(r.extra.empty), time.Duration(r.extra.retryAt - now)
}

// emptyFetch reports whether a successful fetch that returned fr, after the
// result prev, brought nothing to serve: no index, or no value where a Get
// would need one. Such a fetch counts as a failed attempt for back-off: a
// misbehaving type must not make a loop, or a Get waiting for a value,
// fetch again at once, forever.
func emptyFetch(fr FetchResult, prev *result) bool {
	return fr.Index == 0 || (fr.Value == nil && !(fr.NotModified && prev.valid()))
}

// newResult returns a result, with an extra only if one of its fields is
// set.
func newResult(value any, index uint64, fetchedAt int64, x resultExtra) result {
	r := result{value: value, index: index, fetchedAt: fetchedAt}
	// Not x != resultExtra{}: that panics for a state of an incomparable
	// type.
	if x.state != nil || x.err != nil || x.fetchIndex != 0 || x.stopped || x.empty != 0 {
		// A copy, so that only a result that has an extra allocates one.
		extra := x
		r.extra = &extra
	}
	return r
}

// newEntry returns an entry whose key is the encoding k. Where k is short
// enough, its bytes share the entry's allocation (in its size class, at no
// cost in memory), so that a hit, which compares keys, touches one object
// fewer.
func newEntry(k []byte) *entry {
	switch n := len(k); {
	case n <= 16:
		return entryWithKey[[16]byte](k)
	case n <= 32:
		return entryWithKey[[32]byte](k)
	case n <= 48:
		return entryWithKey[[48]byte](k)
	case n <= 64:
		return entryWithKey[[64]byte](k)
	case n <= 96:
		return entryWithKey[[96]byte](k)
	}
	return &entry{key: string(k)}
}

// entryWithKey returns an entry allocated with room B for its key k,
// placed before it: a lookup reads the key, then the entry's first fields.
func entryWithKey[B any](k []byte) *entry {
	x := new(struct {
		b B
		e entry
	})
	b := unsafe.Slice((*byte)(unsafe.Pointer(&x.b)), unsafe.Sizeof(x.b))
	// The bytes are never written again, so the string is immutable.
	x.e.key = unsafe.String(&b[0], copy(b, k))
	return &x.e
}

// entry is one cached item and the single goroutine that fetches it.
//
// Lock order: Cache.expiryMu, then shard.mu, then entry.mu. The hit path
// takes none of them: it finds the entry in its shard's table without a
// lock, loads the result, typ (and, for a refreshing type, loop's
// lostContact) and stores lastAccess.
//
// The entry keeps only what every cached item needs; what fetching needs
// lives in an entryLoop, created when a fetch starts or a caller waits.
//
// Its 128 bytes, on amd64: 16 the key's string header (its bytes, up to
// 96, share the entry's allocation, see newEntry); 48 the result (8 seq,
// 16 the value, 8 index, 8 fetchedAt, 8 extra); 8 typ; 8 the flags and
// shard; 8 lastAccess; 8 loop; 8 ttl; 8 heapIndex and watchers; 8
// expires; 8 mu. Beside it, an entry costs its table slot (16 bytes, at
// most three quarters of them used) and its place in the expiry heap (8).
type entry struct {
	// key is the entry's partition, encoded by appendKey: what a lookup
	// in its shard's table compares. decodeKey gives the fields back.
	key string

	// seq, val, index, fetchedAt and extra are the latest published
	// result (see result and entry.result), under a sequence lock: seq
	// counts the stores twice, and is odd while one is under way. Stores
	// hold mu. A reader retries when seq was odd or changed while it read.
	// The value's two words are stored apart, as sync/atomic.Value stores
	// its own: no interface fits one atomic word.
	seq       atomic.Uint64
	val       [2]atomic.Pointer[byte]
	index     atomic.Uint64
	fetchedAt atomic.Int64
	extra     atomic.Pointer[resultExtra]

	// typ is the entry's type, whose latest registration a hit uses.
	typ *typeSlot

	// refreshing is set while a background refresh loop runs for the
	// entry. A hit on an entry of a refreshing type without one (it was
	// prepopulated, its type was re-registered with Refresh, or its loop
	// ended) starts one, and its Age is the value's. What a hit reads of
	// the entry (key, result, typ, refreshing) sits together.
	refreshing atomic.Bool

	// fetching is set while the entry's fetch loop runs. At most one loop
	// runs per entry; callers that need new data join it through
	// loop.waiter. Guarded by mu.
	fetching bool
	// evicted is set once the entry left the cache; its loop then stops.
	// It is written with both Cache.expiryMu and mu held, so either lock
	// is enough to read it.
	evicted bool
	// stateClosed is set once the entry's state was closed (see
	// closeState), on eviction or Close; any state stored later is closed
	// as it comes. Guarded by mu.
	stateClosed bool

	// shard is the index of the shard whose table holds the entry. It never
	// changes.
	shard uint8

	// lastAccess, which a hit only writes, is when a Get last hit the
	// entry, as an offset from Cache.epoch. The expiry loop reads it
	// lazily, so a hit never touches the heap.
	lastAccess atomic.Int64

	// loop is what the fetch loop and its waiters use, nil until a fetch
	// starts or a caller waits. It is set under mu, and read without a lock
	// only by the hit path, for lostContact. It is dropped (set to nil,
	// under mu) when the loop of a type without Refresh ends with nobody
	// waiting and no limiter to keep; otherwise it stays for the entry's
	// life, so that a limiter outlives restarts of the loop.
	loop atomic.Pointer[entryLoop]

	// ttl is the type's LastGetTTL when the entry was first stored.
	ttl time.Duration

	// heapIndex and expires are guarded by Cache.expiryMu. heapIndex is -1
	// while the entry is not in the expiry heap; expires is an offset from
	// Cache.epoch, refreshed from lastAccess when it comes due.
	heapIndex int32
	// watchers counts the Gets waiting on the entry for a fetch (blocking
	// queries, Notify). The expiry loop treats a watched entry as in use,
	// so it never expires under its watchers.
	watchers atomic.Int32
	expires  int64

	// mu guards fetching, evicted, stateClosed and the channels in loop.
	mu sync.Mutex
}

// touch records a Get of the entry at now. Within a 1024th of the entry's
// TTL (a second at most) of the last Get recorded it records nothing: the
// store is a locked instruction, and on a hot entry it makes the cores
// that share the entry's memory fight over it. The entry may so expire
// that much early.
func (e *entry) touch(now int64) {
	if now-e.lastAccess.Load() > min(int64(e.ttl)>>10, int64(time.Second)) {
		e.lastAccess.Store(now)
	}
}

// outcome is what one fetch brought.
type outcome struct {
	fr  FetchResult
	err error
	// endsRefresh tells that err ended the background refresh.
	endsRefresh bool
}

// apply returns the result that follows r after a fetch that brought o at
// time now (an offset from Cache.epoch).
func (r *result) apply(o outcome, now int64) result {
	fr, err := o.fr, o.err
	value, index, fetchedAt := r.value, r.index, r.fetchedAt
	// err replaces the older error; a success clears it.
	x := resultExtra{state: r.state(), err: err, stopped: o.endsRefresh}
	if r.extra != nil {
		x.fetchIndex = r.extra.fetchIndex
	}
	if err == nil && emptyFetch(fr, r) {
		n, _ := r.emptyRun(now)
		x.empty = uint32(min(n+1, maxEmptyRun))
		x.retryAt = now + int64(backOffWait(uint(x.empty)))
	}
	if fr.NotModified {
		// Its Value is ignored: without a cached value (or with an error)
		// it is no value.
		fr.Value = nil
	}
	switch {
	case fr.NotModified && err == nil && r.valid():
		// The value stands: only its freshness, state and the index to
		// block on move on. Callers and watchers see no change.
		fetchedAt, x.state = now, fr.State
		if fr.Index > index {
			x.fetchIndex = fr.Index
		}
	case fr.Value != nil:
		value, x.state, index, x.fetchIndex = fr.Value, fr.State, fr.Index, 0
		fetchedAt = now
		// Index 0 would make the next blocking fetch return at once, and so
		// a hot loop. No real data has index 1 (Raft bootstraps there), so 1
		// is a safe floor.
		if index < 1 {
			index = 1
		}
	case fr.State != nil && err == nil:
		// No value yet (a masked timeout or rate limit, say), but the type's
		// retry state must be kept for the next attempt.
		x.state = fr.State
	}
	return newResult(value, index, fetchedAt, x)
}

// follow returns the result that follows cur, the entry's current result,
// after a fetch that started from prev (nil if unknown) and brought o at
// time now.
//
// The outcome is applied to cur, not prev: a Prepopulate or a revalidation
// may have stored a newer value meanwhile. A value with a lower index than
// such a newer one is an answer to an older question, not a reset, so it
// is dropped; a lower index than the one the fetch asked about is a reset
// and is kept.
func (cur *result) follow(prev *result, o outcome, now int64) result {
	if prev != nil && cur.ver != prev.ver && o.fr.Value != nil && o.fr.Index < cur.index {
		o.fr = FetchResult{}
	}
	return cur.apply(o, now)
}

// maxEmptyRun caps resultExtra.empty, far above where back-off stops
// growing.
const maxEmptyRun = 1 << 16

// store publishes next as the entry's result. If the entry's state was
// closed already, it returns a new state in next, which the caller must
// close once it has released e.mu (see Cache.closeState). e.mu must be
// held.
func (e *entry) store(next result) (closeSt any) {
	old := e.extra.Load()
	e.publish(&next)
	if st := next.state(); e.stateClosed && st != nil && (old == nil || !sameState(st, old.state)) {
		return st
	}
	return nil
}

// eface is the layout of an interface value with no methods, as the
// runtime and sync/atomic.Value know it: a type word and a data word,
// both pointers (or nil).
type eface struct {
	typ, data unsafe.Pointer
}

// publish stores r as the entry's result, under the sequence lock. e.mu
// must be held: there is one writer at a time.
func (e *entry) publish(r *result) {
	v := (*eface)(unsafe.Pointer(&r.value))
	seq := e.seq.Add(1) // odd: readers retry
	e.val[0].Store((*byte)(v.typ))
	e.val[1].Store((*byte)(v.data))
	e.index.Store(r.index)
	e.fetchedAt.Store(r.fetchedAt)
	e.extra.Store(r.extra)
	e.seq.Store(seq + 1)
}

// result returns a snapshot of the entry's latest result; its ver is 0 if
// none was published yet.
func (e *entry) result() (r result) {
	e.load(&r)
	return r
}

// load reads the entry's latest result into r. It takes no lock: it reads
// the fields between two loads of seq, again until no store ran meanwhile.
// A store is a few atomic writes, so a reader waits for one only if its
// writer was descheduled halfway, and then yields.
func (e *entry) load(r *result) {
	for spins := 0; ; spins++ {
		seq := e.seq.Load()
		v := (*eface)(unsafe.Pointer(&r.value))
		v.typ, v.data = unsafe.Pointer(e.val[0].Load()), unsafe.Pointer(e.val[1].Load())
		r.index, r.fetchedAt = e.index.Load(), e.fetchedAt.Load()
		r.extra, r.ver = e.extra.Load(), seq>>1
		if seq&1 == 0 && e.seq.Load() == seq {
			return
		}
		if spins >= 16 {
			runtime.Gosched()
		}
	}
}

// version returns the ver of the entry's latest result, as result would.
// e.mu must be held, so that no store is under way.
func (e *entry) version() uint64 {
	return e.seq.Load() >> 1
}

// retire marks the entry's state closed and returns it, for the caller to
// close once it has released its locks; nil if it was closed already. It
// is called on eviction and Close. e.mu must be held.
func (e *entry) retire() (closeSt any) {
	if e.stateClosed {
		return nil
	}
	e.stateClosed = true
	if x := e.extra.Load(); x != nil {
		return x.state
	}
	return nil
}

// retired is the state of an entry that left the cache, to be closed.
type retired struct {
	e  *entry
	st any
}

// closeStates closes the states in rs; see closeState.
func (c *Cache) closeStates(rs []retired) {
	for _, r := range rs {
		c.closeState(r.e, r.st)
	}
}

// sameState reports whether a and b are the same state. States of types
// that == cannot compare (it would panic) are taken as different.
func sameState(a, b any) bool {
	t := reflect.TypeOf(a)
	return t == reflect.TypeOf(b) && t.Comparable() && a == b
}

// closeState closes st, a state the entry e held, if it is an io.Closer.
// It must be called without any of the cache's locks held: Close is the
// Type's code. A panic or error is logged, not propagated: it happens on
// the cache's goroutines.
func (c *Cache) closeState(e *entry, st any) {
	cl, ok := st.(io.Closer)
	if !ok {
		return
	}
	k := decodeKey(e.key)
	defer func() {
		if v := recover(); v != nil {
			c.logger().Error("cache: closing an entry's state panicked", logAttrs(&k, "panic", redact(k.token, fmt.Sprint(v)))...)
		}
	}()
	if err := cl.Close(); err != nil {
		c.logger().Warn("cache: closing an entry's state failed", logAttrs(&k, "error", redact(k.token, err.Error()))...)
	}
}

// stop cancels the contexts of the entry's fetches, which ends its loop's
// waits, on eviction. e.mu must be held.
func (e *entry) cancelFetches() {
	if lp := e.loop.Load(); lp != nil {
		if lp.cancel != nil {
			lp.cancel()
		}
		if lp.sideCancel != nil {
			lp.sideCancel()
		}
	}
}

// entryLoop is the part of an entry that only fetching uses.
//
// Its goroutine: fetchLoop.run, started by Cache.startLoop with e.mu held
// when a Get needs data (or a prepopulated refreshing entry is first hit)
// and no loop runs; it ends after one fetch for a type without Refresh, and
// otherwise when the entry is evicted or the cache closed.
type entryLoop struct {
	// waiter is closed when the running loop publishes its next result. It
	// is created only when somebody waits. Guarded by entry.mu.
	waiter chan struct{}
	// watches lists the Notify watches parked on waiter, which hold no
	// goroutine while they wait: closing waiter wakes them (wake).
	// Guarded by entry.mu; see watch.
	watches *watch
	// needers counts the Gets waiting on waiter for a value they do not
	// have yet (a first fetch, a retry, a revalidation), as opposed to a
	// change of the value they have: Close lets a fetch they wait on run
	// to its end. Reset when waiter is closed. Guarded by entry.mu.
	needers int

	// ctx is the context of the loop's fetches (see ContextType) and
	// waits, created by makeCtx when the first of them needs it: most
	// loops, which fetch once from a type without a context, never do.
	// cancel ends it: on eviction, and on Close unless Gets need the fetch
	// in flight. The loop's waits end with it or with Close. Guarded by
	// entry.mu; the loop's goroutine, which alone sets it while it runs,
	// reads it without the lock.
	ctx    context.Context
	cancel context.CancelFunc

	// inFetch is set while the loop's Fetch runs, and blocking while that
	// fetch is a blocking query (MinIndex above 0), which may take as long
	// as the type's timeout. Guarded by entry.mu.
	inFetch, blocking bool

	// side is closed when the revalidation fetch running beside a blocking
	// one ends; nil when none runs. sideCancel ends that fetch's context,
	// on eviction. See Cache.sideFetch. Guarded by entry.mu.
	side       chan struct{}
	sideCancel context.CancelFunc

	// limiter bounds the entry's fetch rate; nil when Options set no limit.
	// It is set at creation and by ReloadOptions (under entry.mu), and
	// read by the entry's fetch loop.
	limiter atomic.Pointer[rate.Limiter]

	// lostContact is when background refresh first failed, as an offset
	// from Cache.epoch; 0 while it is connected.
	lostContact atomic.Int64

	// failures is the loop's count of failed attempts in a row after its
	// latest fetch, for Cache.Entries.
	failures atomic.Uint32
}

// loopState returns the entry's entryLoop, creating it if needed.
// e.mu must be held.
func (c *Cache) loopState(e *entry) *entryLoop {
	lp := e.loop.Load()
	if lp == nil {
		lp = &entryLoop{}
		lp.setLimit(c.settings.Load())
		e.loop.Store(lp)
	}
	return lp
}

// makeCtx gives the loop its context if it has none yet; it is born
// cancelled for an evicted entry. e.mu must be held.
func (lp *entryLoop) makeCtx(e *entry) {
	if lp.ctx != nil {
		return
	}
	lp.ctx, lp.cancel = context.WithCancel(context.Background())
	if e.evicted {
		lp.cancel()
	}
}

// waitCh returns the channel to wait on for the loop's next result; need
// counts the caller in the loop's needers. e.mu must be held.
func (c *Cache) waitCh(e *entry, need bool) chan struct{} {
	lp := c.loopState(e)
	if lp.waiter == nil {
		lp.waiter = make(chan struct{})
	}
	if need {
		lp.needers++
	}
	return lp.waiter
}

// wake releases every caller waiting for the next result, and starts a
// round of each watch parked on it. e.mu must be held.
func (e *entry) wake() {
	if lp := e.loop.Load(); lp != nil && lp.waiter != nil {
		close(lp.waiter)
		lp.waiter, lp.needers = nil, 0
		lp.wakeWatches()
	}
}

// addWatch parks w among the loop's watches, to be woken with waiter.
// entry.mu must be held.
func (lp *entryLoop) addWatch(w *watch) {
	w.prev, w.next = nil, lp.watches
	if lp.watches != nil {
		lp.watches.prev = w
	}
	lp.watches = w
	w.listed.Store(true)
}

// removeWatch takes w, which is listed, out of the loop's watches.
// entry.mu must be held.
func (lp *entryLoop) removeWatch(w *watch) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		lp.watches = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	}
	w.prev, w.next = nil, nil
	w.listed.Store(false)
}

// wakeWatches empties the loop's watches and wakes each of them: each
// then runs a round on a goroutine of its own. entry.mu must be held.
func (lp *entryLoop) wakeWatches() {
	for w := lp.watches; w != nil; {
		next := w.next
		w.prev, w.next = nil, nil
		w.listed.Store(false)
		w.wake()
		w = next
	}
	lp.watches = nil
}

// leave is called by a Get that stops waiting on ch, the waiter of e,
// before it was closed (its Timeout passed or its context ended); need
// tells that it was counted in needers. After Close, the last of them to
// leave cancels the fetch, which nobody needs any more.
func (c *Cache) leave(e *entry, ch <-chan struct{}, need bool) {
	if !need {
		return
	}
	e.mu.Lock()
	if lp := e.loop.Load(); lp != nil && lp.waiter != nil && lp.waiter == ch {
		lp.needers--
		if c.closed.Load() {
			e.closeLoop()
		}
	}
	e.mu.Unlock()
}

// closeLoop ends what Close may end of the entry's loop: the fetch in
// flight is cancelled and the Gets waiting on it released, unless some of
// them need its result, which they then get. A revalidation fetch runs on:
// every Get waiting on it needs it. The loop's waits end by themselves, on
// Cache.closing. e.mu must be held.
func (e *entry) closeLoop() {
	lp := e.loop.Load()
	if lp == nil || (lp.inFetch && lp.needers > 0) {
		return
	}
	if lp.cancel != nil {
		lp.cancel()
	}
	e.wake()
}

// lookAgain is a closed channel, returned to callers that should look again
// at once instead of waiting.
var lookAgain = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// endLoopLocked marks the entry's loop ended and wakes its waiters, who
// look again: they get ErrClosed after Close, and otherwise start a fetch
// of their own if they still need one. e.mu must be held.
func (e *entry) endLoopLocked() {
	e.fetching = false
	e.refreshing.Store(false)
	e.wake()
}
