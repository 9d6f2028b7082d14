package cache

import (
	"context"
	"fmt"
	"reflect"
	"time"
)

// Get returns the value of type t for the request r.
//
// If the cache holds a value that satisfies the request's MinIndex, MaxAge
// and MustRevalidate, it is returned at once. Otherwise Get waits for a
// fetch; concurrent Gets of the same entry share one fetch.
//
// The request's Timeout bounds only this Get, not the fetch behind it. When
// it passes before a value newer than MinIndex arrives, Get returns the last
// known value (possibly nil) and no error, as a Consul blocking query does.
// A blocking Get also returns when a fetch brings a lower index than the
// one it waited on: the servers' index was reset (a snapshot restore, say),
// and the lower index is new data.
//
// An error is returned only to Gets that had to wait for a fetch, and only
// while no later fetch has succeeded: a caller without MinIndex keeps
// getting the last good value while refreshes fail. With the error comes
// that older value, if there is one, with its Index and Age.
//
// Once the cache is closed, Get still serves what it holds, but where it
// would need a new fetch it returns the value it has, if any, and
// ErrClosed. A Get already waiting at Close for a value it does not have
// gets the result of the fetch in flight; one waiting for a change
// (MinIndex) returns at once with the value it has and ErrClosed, since a
// change may take minutes. A nil r, or a negative Timeout or MaxAge, is an
// error.
func (c *Cache) Get(t string, r Request) (any, ResultMeta, error) {
	return c.GetContext(context.Background(), t, r)
}

// GetContext is Get with a context: if ctx ends before a value is ready,
// GetContext returns the last known value, if any, with ctx.Err(). The
// fetch it waited for goes on for the other callers. The request's Timeout
// keeps its meaning: the last value and no error.
func (c *Cache) GetContext(ctx context.Context, t string, r Request) (any, ResultMeta, error) {
	// The checks are spelt out here rather than in a function returning
	// the RequestInfo: that copy costs the hit path several nanoseconds.
	if r == nil || ctx == nil {
		return nil, ResultMeta{}, nilArg("Get", t, r, ctx)
	}
	info := r.CacheInfo()
	if info.Timeout < 0 || info.MaxAge < 0 {
		return nil, ResultMeta{}, badRequestInfo("Get", t, &info)
	}
	if done, v, meta, err := c.getFast(ctx, t, r, &info); done {
		return v, meta, err
	}
	return c.getSlow(ctx, t, r, &info, 0, false)
}

// GetAs is GetContext for a type whose values are all of type V. It returns
// the zero V, and no error, when there is no value yet (a Get that timed
// out before the first fetch), and an error naming both types when the
// value is not a V.
func GetAs[V any](ctx context.Context, c *Cache, t string, r Request) (V, ResultMeta, error) {
	var zero V
	v, meta, err := c.GetContext(ctx, t, r)
	if v == nil {
		return zero, meta, err
	}
	typed, ok := v.(V)
	if !ok {
		return zero, meta, fmt.Errorf("cache: value of type %q is a %T, not a %v", t, v, reflect.TypeFor[V]())
	}
	return typed, meta, err
}

// nilArg is the error for a nil Request or context given to op.
func nilArg(op, t string, r Request, ctx context.Context) error {
	what := "Request"
	if ctx == nil {
		what = "context"
	}
	if r == nil && ctx == nil {
		what = "Request and context"
	}
	return fmt.Errorf("cache: %s of type %q: nil %s", op, t, what)
}

// badRequestInfo is the error for a RequestInfo with a negative duration;
// op names the caller.
func badRequestInfo(op, t string, info *RequestInfo) error {
	return fmt.Errorf("cache: %s of type %q, key %q: negative Timeout (%v) or MaxAge (%v)",
		op, t, info.Key, info.Timeout, info.MaxAge)
}

// getFast serves what needs no wait on an entry: a bypassing Get, and the
// common case, a hit at first sight, with no loop, timer, defer or
// allocation (its key is encoded on the stack, or for long keys compared
// field by field). info.MinIndex is the index the Get waits beyond. done
// is false for anything else, which getSlow serves.
func (c *Cache) getFast(ctx context.Context, t string, r Request, info *RequestInfo) (done bool, v any, meta ResultMeta, err error) {
	if info.Key == "" {
		c.metrics.incr(c.metrics.bypass)
		v, meta, err = c.fetchDirect(ctx, t, r, info)
		return true, v, meta, err
	}
	// The clock first: on amd64 reading it waits for the loads before it
	// to complete, and a hit's cache misses are all still to come.
	now := c.now()
	var e *entry
	if len(t)+len(info.Datacenter)+len(info.Token)+len(info.Key) <= stackKeyMax {
		var kbuf [128]byte
		key := c.makeKey(kbuf[:], t, info.Datacenter, info.Token, info.Key)
		e = c.lookup(&key)
	} else {
		e = c.lookupLong(&entryKey{t, info.Datacenter, info.Token, info.Key})
	}
	v, meta, done = c.hitAt(e, now, r, info)
	return done, v, meta, nil
}

// hitAt serves a hit at first sight on e, the entry of r's partition (nil
// for none), seen at now, and reports whether it was one.
func (c *Cache) hitAt(e *entry, now int64, r Request, info *RequestInfo) (any, ResultMeta, bool) {
	if e == nil {
		return nil, ResultMeta{}, false
	}
	// Entries exist only for registered types.
	s := sight{te: e.typ.te.Load(), e: e, now: now}
	e.load(&s.res)
	if !c.isHit(&s, info, true) {
		return nil, ResultMeta{}, false
	}
	v, meta := c.hit(&s, r, true)
	return v, meta, true
}

// getSlow is GetContext for everything but a hit at first sight: it
// waits for fetches until the request is satisfied, fails, or times out.
// Each round looks at the entry, answers the Get if it can (see answer),
// and otherwise joins the entry's fetch and waits for its next result.
// floor is the index of a value seen before: a lower one means the
// servers' index went backwards, and answers the Get (0 for none). watch
// marks the Gets of a Notify watch, which wait for changes: Close ends
// them rather than let their fetches finish.
//
// It takes six parameters and keeps its state in locals rather than in a
// struct with methods: either costs a waiting Get stack, which a burst of
// new goroutines missing one key would each have to grow
// (BenchmarkGetMissCoalesced: 13 % slower with a struct).
func (c *Cache) getSlow(ctx context.Context, t string, r Request, info *RequestInfo, floor uint64, watch bool) (any, ResultMeta, error) {
	// The key's bytes on the heap, not on the stack: the stack of a
	// waiting Get then stays shallow.
	key := c.makeKey(nil, t, info.Datacenter, info.Token, info.Key)
	r0 := round{first: true, floor: floor}
	var timeout <-chan time.Time
	var waited *entry // the entry whose fetch we last waited for
	for {
		found := c.lookup(&key)
		te := c.typeOf(found, t)
		if te == nil {
			return nil, ResultMeta{}, unknownType(t)
		}
		var s sight
		c.look(&s, te, found, waited)
		if done, err := c.answer(&s, info, &r0); done {
			return c.reply(&s, r, r0.first, err)
		}
		if r0.first {
			if timer := c.miss(te, info, &r0); timer != nil {
				defer timer.Stop()
				timeout = timer.C
			}
		}
		r0.next(&s, info, watch)
		var ch <-chan struct{}
		waited, ch = c.join(te, found, &joinRequest{&key, &s, r0.how}, r)
		if ch == nil {
			s.e = waited
			return c.reply(&s, r, false, ErrClosed)
		}
		// A watched entry cannot expire, and the end of a wait is a use.
		// The wait is inline, and a plain receive when nothing else can end
		// it, to keep the stack shallow. Close wakes the Gets waiting for a
		// change; the others get their fetch's result (entry.closeLoop).
		waited.watchers.Add(1)
		timedOut, cancelled := false, false
		if timeout == nil && ctx.Done() == nil {
			<-ch
		} else {
			select {
			case <-ch:
			case <-timeout:
				timedOut = true
			case <-ctx.Done():
				cancelled = true
			}
		}
		waited.lastAccess.Store(c.now())
		waited.watchers.Add(-1)
		if timedOut || cancelled {
			c.leave(waited, ch, r0.how&needsResult != 0)
			return gaveUp(ctx, &s.res, cancelled)
		}
	}
}

// look sets s to what a Get sees of the entry for its key: found, the
// entry in the cache if any, or else waited, the one it waited on, which
// was evicted meanwhile but whose last result still answers it. It fills
// the caller's sight rather than return one: a copy would deepen the
// stack of every waiting Get (see getSlow).
func (c *Cache) look(s *sight, te *typeEntry, found, waited *entry) {
	*s = sight{te: te, e: found}
	if s.e == nil {
		s.e = waited
	}
	if s.e != nil {
		s.e.load(&s.res)
	}
	s.now = c.now()
}

// reply returns what a Get that saw s returns once it is answered with
// err: with nil, the hit s saw (first tells a hit at first sight); else
// that value, if any, and err.
func (c *Cache) reply(s *sight, r Request, first bool, err error) (any, ResultMeta, error) {
	if err != nil {
		return s.res.value, c.meta(s), err
	}
	v, meta := c.hit(s, r, first)
	return v, meta, nil
}

// gaveUp returns what a Get that had seen res returns when its Timeout
// passed (cancelled false) or ctx ended while it waited.
func gaveUp(ctx context.Context, res *result, cancelled bool) (any, ResultMeta, error) {
	if cancelled {
		return res.value, ResultMeta{Index: res.index}, ctx.Err()
	}
	return res.value, ResultMeta{Index: res.index}, nil
}

// round is what a waiting Get carries from one round to the next.
type round struct {
	first bool      // the first round: nothing waited for yet
	floor uint64    // see getSlow
	seenE *entry    // the entry seen before the last wait
	seen  uint64    // the ver of its result then
	how   waitFlags // what the Get waited for
}

// next records, before a wait, that the Get saw s and what it now waits
// for.
func (rd *round) next(s *sight, info *RequestInfo, watch bool) {
	rd.seenE, rd.seen = s.e, s.res.ver
	if s.res.valid() {
		rd.floor = s.res.index
	}
	rd.how = waitHow(s, info.MinIndex, watch)
}

// answer reports whether what a Get for info sees, s, in round rd answers
// it: with the value seen, a hit, if err is nil, else with that value and
// err. It changes nothing.
func (c *Cache) answer(s *sight, info *RequestInfo, rd *round) (done bool, err error) {
	res := &s.res
	closed := c.closed.Load()
	seen := sameResult(s.e, res.ver, rd.seenE, rd.seen)
	// Woken by Close with nothing new, or after waiting for a change,
	// which Close ended (its fetch was cancelled): what we waited for will
	// not come, even where a second look would be a hit. A Get that needed
	// a value gets its fetch's result below.
	if !rd.first && closed && (seen || rd.how&needsResult == 0) {
		return true, ErrClosed
	}
	if c.isHit(s, info, rd.first) || (res.valid() && res.index < rd.floor) {
		return true, nil
	}
	// A fetch ended while we waited and failed: report it rather than
	// spin on the same error until the timeout. The value beside it, if
	// any, is older. An error we saw before waiting is not news: the loop
	// woke us without fetching (eviction), so fetch again.
	if err := res.err(); !rd.first && err != nil && !seen {
		return true, err
	}
	if closed {
		return true, ErrClosed
	}
	return false, nil
}

// miss counts the first round's miss of type te, ends the first round rd
// and starts the Get's Timeout, whose timer it returns (nil for none).
func (c *Cache) miss(te *typeEntry, info *RequestInfo, rd *round) *time.Timer {
	rd.first = false
	if info.MinIndex == 0 {
		c.metrics.incr(te.keys.missNew)
	} else {
		c.metrics.incr(te.keys.missBlock)
	}
	if info.Timeout <= 0 {
		return nil
	}
	return time.NewTimer(info.Timeout)
}

// waitFlags say what a Get waits for when it joins an entry's fetch.
type waitFlags uint8

const (
	// wantsChange: a value with a newer index than the one it has.
	wantsChange waitFlags = 1 << iota
	// needsResult: a value it does not have yet (a first fetch, a retry
	// after an error, a revalidation), so that Close lets the fetch it
	// waits on finish for it.
	needsResult
)

// waitHow returns what a Get waiting beyond minIndex waits for, having
// seen s; watch tells a Notify watch's Get.
func waitHow(s *sight, minIndex uint64, watch bool) waitFlags {
	if s.res.valid() && s.blocksOn(minIndex) {
		return wantsChange
	}
	if watch {
		return 0
	}
	return needsResult
}

// sight is one look of a Get at an entry: its type (the latest
// registration), the entry, its result, and when the Get looked.
type sight struct {
	te  *typeEntry
	e   *entry
	res result
	now int64
}

// blocksOn reports whether a Get waiting beyond minIndex wants something
// newer than the value s saw: a blocking query whose index that value has
// not passed.
func (s *sight) blocksOn(minIndex uint64) bool {
	return minIndex > 0 && minIndex >= s.res.index && s.te.typ.SupportsBlocking()
}

// hit returns the value of what s saw, a hit. first tells a hit at first
// sight, counted and flagged as such, from one after a wait.
func (c *Cache) hit(s *sight, r Request, first bool) (any, ResultMeta) {
	te, e, res := s.te, s.e, &s.res
	meta := c.meta(s)
	if first {
		meta.Hit = true
		c.metrics.incr(te.keys.hit)
	}
	e.touch(s.now)
	if te.opts.Refresh && !e.refreshing.Load() && !res.refreshStopped() {
		c.startRefresh(e, te, r)
	}
	return res.value, meta
}

// meta returns the ResultMeta of what s saw. Age is 0 without a value. An
// entry of a refreshing type that no refresh keeps current (not started
// yet, or ended) has the age of its value.
func (c *Cache) meta(s *sight) ResultMeta {
	res := &s.res
	meta := ResultMeta{Index: res.index}
	switch {
	case !res.valid():
	case s.te.opts.Refresh && s.e.refreshing.Load():
		if lp := s.e.loop.Load(); lp != nil {
			if lost := lp.lostContact.Load(); lost != 0 {
				meta.Age = time.Duration(s.now - lost)
			}
		}
	default:
		meta.Age = time.Duration(s.now - res.fetchedAt)
	}
	return meta
}

// sameResult reports whether the result ver of the entry e is the one
// seenVer of seenE: results of different entries differ, but every entry
// starts with ver 0, no result.
func sameResult(e *entry, ver uint64, seenE *entry, seenVer uint64) bool {
	return ver == seenVer && (ver == 0 || e == seenE)
}

// isHit reports whether what s saw may answer the request without a
// fetch. first tells the first round of a Get from one after a wait.
func (c *Cache) isHit(s *sight, info *RequestInfo, first bool) bool {
	te, res := s.te, &s.res
	if !res.valid() {
		return false
	}
	// A blocking caller wants something newer than it has seen.
	if s.blocksOn(info.MinIndex) {
		return false
	}
	if te.opts.Refresh {
		// A refresh that an error stopped makes the first round a miss, so
		// that the Get fetches again. After that fetch the value answers
		// the Get, whatever the fetch brought: errors go to callers that
		// wait for something newer than the value they can have.
		return !(first && res.refreshStopped())
	}
	if info.MaxAge > 0 && time.Duration(s.now-res.fetchedAt) > info.MaxAge {
		return false
	}
	// Revalidation makes only the first round a miss: once a fetch was
	// attempted, even a failed one, the cached value may be served.
	return !(info.MustRevalidate && first)
}

// fetchDirect calls the type's Fetch for a request that bypasses the cache.
// Nothing is shared or stored: every such Get is its own RPC. The fetch
// runs in its own goroutine so that the Get can return when its Timeout
// passes (with no value and no error, as any Get that times out before a
// first value), when ctx ends (with ctx.Err()), or, for a blocking query
// (MinIndex above 0), which waits for a change, when the cache closes
// (with ErrClosed). The fetch's context then ends, and the goroutine with
// the fetch. Close lets other bypassing Gets have their fetch's result.
func (c *Cache) fetchDirect(ctx context.Context, t string, r Request, info *RequestInfo) (any, ResultMeta, error) {
	minIndex := info.MinIndex
	te := c.typeEntry(t)
	if te == nil {
		return nil, ResultMeta{}, unknownType(t)
	}
	if c.closed.Load() {
		return nil, ResultMeta{}, ErrClosed
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var closing <-chan struct{}
	if minIndex > 0 {
		closing = c.closing
	}
	var timeout <-chan time.Time
	if info.Timeout > 0 {
		timer := time.NewTimer(info.Timeout)
		defer timer.Stop()
		timeout = timer.C
	}

	type outcome struct {
		fr  FetchResult
		err error
	}
	done := make(chan outcome, 1)
	k := entryKey{typ: t, dc: info.Datacenter, token: info.Token} // info must not escape
	go func() {
		// Preset for a Fetch that calls runtime.Goexit.
		o := outcome{err: errExited(t, "")}
		defer func() { done <- o }()
		o.fr, o.err = c.callFetch(fctx, &fetchCall{te, k, FetchOptions{MinIndex: minIndex}, r})
	}()

	select {
	case o := <-done:
		if o.err != nil {
			return nil, ResultMeta{}, o.err
		}
		if o.fr.NotModified {
			return nil, ResultMeta{}, nil // no cached value to keep
		}
		return o.fr.Value, ResultMeta{}, nil
	case <-timeout:
		return nil, ResultMeta{}, nil
	case <-ctx.Done():
		return nil, ResultMeta{}, ctx.Err()
	case <-closing:
		return nil, ResultMeta{}, ErrClosed
	}
}
