// Package cache caches the results of RPC-like calls in front of an
// authoritative server. It is a port of the agent cache of HashiCorp Consul
// v1.4.5 (agent/cache).
//
// Unlike anti-entropy, where the local agent is the authority and pushes its
// view, here the server is the authority: the cache only balances freshness
// against load, in a way each type of data chooses.
//
// Each kind of data is a Type, registered under a name with RegisterType.
// Callers then Get a value with a Request, which is usually the RPC's own
// request struct: using the cache is mostly a drop-in change of the call
// site. Types that support blocking queries get blocking Gets (MinIndex and
// Timeout) and can be refreshed in the background; Notify streams changes of
// one request to a channel.
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

// Constants for the back-off of failing background refreshes and Notify
// loops. They only exist to limit load on the servers, so they are not
// configurable.
const (
	CacheRefreshBackoffMin = 3               // attempts before backing off
	CacheRefreshMaxWait    = 1 * time.Minute // maximum backoff wait
)

// ErrClosed is returned by Get when the request needs a fetch and the cache
// was closed, and by Notify after Close.
var ErrClosed = errors.New("cache: closed")

// Cache is a local cache of data owned by remote servers. Create one with
// New; the zero value is not usable.
//
// The types of data to cache are registered with RegisterType. Get then takes
// a type name and a Request, so that the cache can stand in for an existing
// RPC call with few changes.
//
// Entries are partitioned by type, datacenter, ACL token and request key, so
// multi-datacenter queries and ACL-filtered results are safe to cache
// without any knowledge of what the data means, at the price of some
// duplication.
//
// The cache reports its activity through go-metrics (see the package README
// for the names): hits, misses, fetches, errors, evictions and the number of
// entries.
type Cache struct {
	// types maps type names to their registrations. It is copied on
	// write under typesMu and read without a lock.
	typesMu sync.Mutex
	types   atomic.Pointer[map[string]*typeSlot]

	// shards hold the entries, spread by a hash of their key so that
	// writers of different keys do not share a lock.
	shards   [shardCount]shard
	hashSeed keyHash      // hashes keys with a seed of this cache
	count    atomic.Int64 // entries in all shards

	// expiryMu guards expiry and the heap fields of every entry. Lock
	// order: expiryMu, then shard.mu, then entry.mu.
	expiryMu     sync.Mutex
	expiry       expiryHeap
	expiryNotify chan struct{} // wakes the expiry loop; buffered 1

	// epoch is the origin of the monotonic offsets stored in entries.
	epoch time.Time

	// Settings from Options: see options.go. reloadMu serialises
	// ReloadOptions; settings is read without a lock.
	metrics  cacheMetrics
	settings atomic.Pointer[settings]
	reloadMu sync.Mutex
	// reloaded is closed, and replaced, when ReloadOptions changes the
	// fetch rate, so that limiter waits start over with the new one.
	reloaded atomic.Pointer[chan struct{}]

	closed atomic.Bool
	stopCh chan struct{} // closed by Close
}

// typeEntry is a registered type. It is immutable.
type typeEntry struct {
	name string
	typ  Type
	opts RegisterOptions
	keys typeKeys
	slot *typeSlot
}

// typeSlot holds the latest registration of a type name. Entries point to
// it, so that a hit finds its type without a lookup by name and still
// sees a re-registration.
type typeSlot struct {
	te atomic.Pointer[typeEntry]
}

const (
	shardBits  = 6
	shardCount = 1 << shardBits
)

// shard is one part of the entry map, padded to its own cache line.
// Lookups read tab without a lock; mu serialises the writers, which
// publish a new table whenever they build one.
type shard struct {
	mu  sync.Mutex
	tab atomic.Pointer[table]
	_   [48]byte
}

// ResultMeta is returned by Get with the value. It tells how the value was
// served, for debugging, tests and HTTP headers.
type ResultMeta struct {
	// Hit reports whether the value was served from the cache without
	// waiting for a fetch.
	Hit bool

	// Age says how stale the value may be, with the meaning of Consul's
	// agent caching API.
	//
	// For types with background refresh, Age is 0 while the refresh keeps up
	// with the servers. Once a refresh fails, it is the time since that first
	// failure, until a refresh succeeds again or (for RefreshTimeout above
	// 31 s) a refresh has blocked for 31 s, which shows the connection is
	// alive: the RPC layer's keepalives would have failed it after 30 s.
	//
	// For other types, Age is the time since the value was fetched.
	Age time.Duration

	// Index is the index of the value, so that generic code can tell
	// whether it changed.
	Index uint64
}

// New returns a ready cache. It starts the goroutine that expires entries,
// which runs until Close. opts may be nil; New keeps a copy.
func New(opts *Options) *Cache {
	var o Options
	if opts != nil {
		o = *opts
	}
	c := &Cache{
		hashSeed:     newKeyHash(),
		expiryNotify: make(chan struct{}, 1),
		// One nanosecond before now, so that no offset is 0: stored
		// offsets use 0 for "never".
		epoch:  time.Now().Add(-time.Nanosecond),
		stopCh: make(chan struct{}),
	}
	c.metrics.init(&o)
	c.settings.Store(newSettings(&o))
	reloaded := make(chan struct{})
	c.reloaded.Store(&reloaded)
	c.types.Store(&map[string]*typeSlot{})
	for i := range c.shards {
		c.shards[i].tab.Store(emptyTable)
	}
	go c.runExpiryLoop()
	return c
}

// RegisterOptions change how the cache treats one type.
type RegisterOptions struct {
	// LastGetTTL is how long an entry stays in the cache after the last
	// Get that was served from it. Then it is evicted and its background
	// refresh stops. Zero means 72 hours.
	LastGetTTL time.Duration

	// Refresh makes the cache refresh entries of this type in the
	// background, so that Gets are served from memory. Without it, data is
	// fetched only when a Get needs it.
	Refresh bool

	// RefreshTimer is the pause between background refreshes; zero
	// refreshes as soon as the previous fetch returns.
	//
	// RefreshTimeout is the longest a refresh may block; it is passed to the
	// Type as FetchOptions.Timeout and the Type must honour it.
	//
	// Together they give, for example, timer-based refresh (a long timer and
	// a short timeout: little load on the servers) or blocking-query refresh
	// (no timer and a long timeout: changes seen within moments).
	RefreshTimer   time.Duration
	RefreshTimeout time.Duration

	// RefreshMaxFailures stops the background refresh of an entry after
	// that many failed fetches in a row; the next Get of the entry fetches
	// again and so restarts it. Zero means no limit: as in the seed, a
	// failing refresh goes on, backing off up to CacheRefreshMaxWait (plus
	// a random stagger of as much again, so about every one to two
	// minutes), until nobody has read the entry for LastGetTTL. Failures
	// never extend the TTL. See also StopRefresh.
	RefreshMaxFailures int
}

// RegisterType registers a type under the name n. opts may be nil;
// RegisterType keeps a copy. It fetches nothing: entries are filled by Get.
//
// Registering a name again replaces its type and options. Entries already
// cached stay and are served as before, with the TTL they were created
// with; from their next fetch on they are fetched by the new type with the
// new options (a running background refresh switches at its next fetch).
//
// Like http.Handle, RegisterType panics on what can only be a programming
// error: an empty name, a nil typ or a negative duration in opts.
func (c *Cache) RegisterType(n string, typ Type, opts *RegisterOptions) {
	if n == "" {
		panic("cache: RegisterType with an empty type name")
	}
	if typ == nil {
		panic(fmt.Sprintf("cache: RegisterType of %q with a nil Type", n))
	}
	te := &typeEntry{name: n, typ: typ, keys: c.metrics.typeKeys(n)}
	if opts != nil {
		te.opts = *opts
	}
	if o := te.opts; o.LastGetTTL < 0 || o.RefreshTimer < 0 || o.RefreshTimeout < 0 || o.RefreshMaxFailures < 0 {
		panic(fmt.Sprintf("cache: RegisterType of %q with a negative option: LastGetTTL %v, RefreshTimer %v, RefreshTimeout %v, RefreshMaxFailures %d",
			n, o.LastGetTTL, o.RefreshTimer, o.RefreshTimeout, o.RefreshMaxFailures))
	}
	if te.opts.LastGetTTL == 0 {
		te.opts.LastGetTTL = 72 * time.Hour // days are a reasonable default
	}

	c.typesMu.Lock()
	defer c.typesMu.Unlock()
	old := *c.types.Load()
	if te.slot = old[n]; te.slot != nil {
		te.slot.te.Store(te)
		return
	}
	te.slot = new(typeSlot)
	te.slot.te.Store(te)
	types := make(map[string]*typeSlot, len(old)+1)
	for k, v := range old {
		types[k] = v
	}
	types[n] = te.slot
	c.types.Store(&types)
}

// typeEntry returns the type registered as t, or nil.
func (c *Cache) typeEntry(t string) *typeEntry {
	if ts := (*c.types.Load())[t]; ts != nil {
		return ts.te.Load()
	}
	return nil
}

func unknownType(t string) error {
	return fmt.Errorf("unknown type in cache: %s", t)
}

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
// would need a fetch it returns the value it has, if any, and ErrClosed.
// A nil r, or a negative Timeout or MaxAge, is an error.
func (c *Cache) Get(t string, r Request) (interface{}, ResultMeta, error) {
	return c.GetContext(context.Background(), t, r)
}

// GetContext is Get with a context: if ctx ends before a value is ready,
// GetContext returns the last known value, if any, with ctx.Err(). The
// fetch it waited for goes on for the other callers. The request's Timeout
// keeps its meaning: the last value and no error.
func (c *Cache) GetContext(ctx context.Context, t string, r Request) (interface{}, ResultMeta, error) {
	// The checks are spelt out here rather than in a function returning
	// the RequestInfo: that copy costs the hit path several nanoseconds.
	if r == nil {
		return nil, ResultMeta{}, nilRequest("Get", t)
	}
	info := r.CacheInfo()
	if info.Timeout < 0 || info.MaxAge < 0 {
		return nil, ResultMeta{}, badRequestInfo("Get", t, &info)
	}
	// getWithIndex, spelt out: one frame less for Gets that wait.
	if done, v, meta, err := c.getFast(ctx, t, r, &info, info.MinIndex); done {
		return v, meta, err
	}
	return c.getSlow(ctx, t, r, &info, info.MinIndex, 0)
}

// nilRequest is the error for a nil Request; op names the caller.
func nilRequest(op, t string) error {
	return fmt.Errorf("cache: %s of type %q: nil Request", op, t)
}

// badRequestInfo is the error for a RequestInfo with a negative duration;
// op names the caller.
func badRequestInfo(op, t string, info *RequestInfo) error {
	return fmt.Errorf("cache: %s of type %q, key %q: negative Timeout (%v) or MaxAge (%v)",
		op, t, info.Key, info.Timeout, info.MaxAge)
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

// getWithIndex is Get with the blocking index given apart from the request
// (Notify moves it along) and a context that ends the wait. A cached value
// with an index below resetBelow (0 for none) is a reset, returned at once:
// Notify passes the index it delivered last, which came from this cache.
func (c *Cache) getWithIndex(ctx context.Context, t string, r Request, info *RequestInfo, minIndex, resetBelow uint64) (interface{}, ResultMeta, error) {
	if done, v, meta, err := c.getFast(ctx, t, r, info, minIndex); done {
		return v, meta, err
	}
	return c.getSlow(ctx, t, r, info, minIndex, resetBelow)
}

// getFast serves what needs no wait on an entry: a bypassing Get, and
// the common case, a hit at first sight, with no loop, timer, defer or
// allocation (its key is encoded on the stack). done is false for
// anything else, which getSlow serves.
func (c *Cache) getFast(ctx context.Context, t string, r Request, info *RequestInfo, minIndex uint64) (done bool, v interface{}, meta ResultMeta, err error) {
	if info.Key == "" {
		c.metrics.incr(c.metrics.bypass)
		v, meta, err = c.fetchDirect(ctx, t, r, info, minIndex)
		return true, v, meta, err
	}
	// The clock first: on amd64 reading it waits for the loads before it
	// to complete, and a hit's cache misses are all still to come.
	now := c.now()
	var kbuf [128]byte
	key := c.makeKey(kbuf[:], t, info.Datacenter, info.Token, info.Key)
	e := c.lookup(&key)
	if e == nil {
		return false, nil, ResultMeta{}, nil
	}
	res := e.res.Load()
	if res == nil {
		return false, nil, ResultMeta{}, nil
	}
	// Entries exist only for registered types.
	te := e.typ.te.Load()
	if !c.isHit(te, info, minIndex, res, true, now) {
		return false, nil, ResultMeta{}, nil
	}
	v, meta, err = c.hit(te, e, res, r, true, now)
	return true, v, meta, err
}

// getSlow is getWithIndex for everything but a hit at first sight: it
// waits for fetches until the request is satisfied, fails, or times out.
func (c *Cache) getSlow(ctx context.Context, t string, r Request, info *RequestInfo, minIndex, floor uint64) (interface{}, ResultMeta, error) {
	// The key's bytes on the heap, not on the stack: the stack of a
	// waiting Get then stays shallow, so that goroutines that miss
	// together (a burst of callers of one new key) fit in their first
	// stack instead of each copying it to a larger one, which costs far
	// more than the allocation.
	key := c.makeKey(nil, t, info.Datacenter, info.Token, info.Key)
	first := true
	var timeout <-chan time.Time
	var waited *entry // the entry whose fetch we last waited for
	var seen *result  // the result we saw before that wait
	for {
		te := c.typeEntry(t)
		if te == nil {
			return nil, ResultMeta{}, unknownType(t)
		}
		found := c.lookup(&key)
		e := found
		if e == nil {
			// Evicted while we waited: its last result still answers us.
			e = waited
		}
		res := noResult
		if e != nil {
			res = e.result()
		}

		// floor is the index of the value seen before the wait: one below
		// it means the servers' index went backwards.
		now := c.now()
		// Woken by Close with nothing new: what we waited for will not
		// come, even where a second look would be a hit.
		if !first && res == seen && c.closed.Load() {
			return res.value, c.meta(te, e, res, now), ErrClosed
		}
		if c.isHit(te, info, minIndex, res, first, now) || (res.valid() && res.index < floor) {
			return c.hit(te, e, res, r, first, now)
		}

		// A fetch ended while we waited and failed: report it rather than
		// spin on the same error until the timeout. The value beside it, if
		// any, is older. An error we saw before waiting is not news: the
		// loop woke us without fetching (eviction), so fetch again.
		if err := res.err(); !first && err != nil && res != seen {
			return res.value, c.meta(te, e, res, now), err
		}
		if c.closed.Load() {
			return res.value, c.meta(te, e, res, now), ErrClosed
		}

		if first {
			if minIndex == 0 {
				c.metrics.incr(te.keys.missNew)
			} else {
				c.metrics.incr(te.keys.missBlock)
			}
			first = false
			if info.Timeout > 0 {
				timer := time.NewTimer(info.Timeout)
				defer timer.Stop()
				timeout = timer.C
			}
		}

		seen = res
		if res.valid() {
			floor = res.index
		}
		var ch <-chan struct{}
		waited, ch = c.fetch(te, found, &key, r, res, minIndex)
		if ch == nil {
			return res.value, c.meta(te, waited, res, now), ErrClosed
		}
		// While Gets wait on an entry it cannot expire (it is watched),
		// and the end of a wait is a use. The wait is here rather than in
		// a function of its own, and is a plain receive when nothing else
		// can end it, to keep the stack of a waiting Get within a new
		// goroutine's first stack: a burst of goroutines missing one key
		// then need not each copy a grown one. Close wakes the waiters of
		// every cached entry; those of an entry evicted under them wait
		// for its fetch, whose context the eviction cancelled.
		waited.watchers.Add(1)
		timedOut, cancelled := false, false
		if timeout == nil && ctx.Done() == nil {
			<-ch
		} else {
			select {
			case <-ch:
			case <-c.stopCh:
			case <-timeout:
				timedOut = true
			case <-ctx.Done():
				cancelled = true
			}
		}
		waited.lastAccess.Store(c.now())
		waited.watchers.Add(-1)
		switch {
		case timedOut:
			return res.value, ResultMeta{Index: res.index}, nil
		case cancelled:
			return res.value, ResultMeta{Index: res.index}, ctx.Err()
		}
	}
}

// hit returns the value of res, a hit on e at time now. first tells a hit
// at first sight, counted and flagged as such, from one after a wait.
func (c *Cache) hit(te *typeEntry, e *entry, res *result, r Request, first bool, now int64) (interface{}, ResultMeta, error) {
	meta := c.meta(te, e, res, now)
	if first {
		meta.Hit = true
		c.metrics.incr(te.keys.hit)
	}
	e.lastAccess.Store(now)
	if e.refreshPending.Load() {
		c.startRefresh(e, te, r)
	}
	return res.value, meta, nil
}

// meta returns the ResultMeta of res, the result of e, at time now. Age
// is 0 without a value.
func (c *Cache) meta(te *typeEntry, e *entry, res *result, now int64) ResultMeta {
	meta := ResultMeta{Index: res.index}
	switch {
	case !res.valid():
	case te.opts.Refresh:
		if lp := e.loop.Load(); lp != nil {
			if lost := lp.lostContact.Load(); lost != 0 {
				meta.Age = time.Duration(now - lost)
			}
		}
	default:
		meta.Age = time.Duration(now - res.fetchedAt)
	}
	return meta
}

// noResult stands for an entry that has no result yet.
var noResult = &result{}

// result returns the entry's latest result, or noResult.
func (e *entry) result() *result {
	if r := e.res.Load(); r != nil {
		return r
	}
	return noResult
}

// isHit reports whether res may answer the request without a fetch.
func (c *Cache) isHit(te *typeEntry, info *RequestInfo, minIndex uint64, res *result, first bool, now int64) bool {
	if !res.valid() {
		return false
	}
	// A blocking caller wants something newer than it has seen.
	if minIndex > 0 && minIndex >= res.index && te.typ.SupportsBlocking() {
		return false
	}
	if te.opts.Refresh {
		// Until a Get restarts a refresh that an error stopped.
		return !res.stopped()
	}
	if info.MaxAge > 0 && time.Duration(now-res.fetchedAt) > info.MaxAge {
		return false
	}
	// Revalidation makes only the first round a miss: once a fetch was
	// attempted, even a failed one, the cached value may be served.
	return !(info.MustRevalidate && first)
}

// fetch makes sure the entry for key is being fetched and returns it with a
// channel that is closed when there is something new to look at, or nil if
// the cache is closed. e is the entry for key if the caller just found it
// in the map, else nil. seen is the result the caller examined: if a newer
// one was published since, the channel is already closed, so a Get racing
// with a finishing fetch never waits for (or starts) another one.
func (c *Cache) fetch(te *typeEntry, e *entry, key *keyRef, r Request, seen *result, minIndex uint64) (*entry, <-chan struct{}) {
	if e == nil {
		e = c.lookupOrCreate(key, te)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.evicted || e.result() != seen:
		return e, closedCh
	case c.closed.Load():
		return e, nil
	case !e.fetching:
		c.startLoop(e, te, r)
	case seen.valid() && minIndex < seen.index && e.loop.Load().blocking:
		// The caller wants the current value, not a change, and the loop
		// is in a blocking query that may not answer for minutes.
		return e, c.sideFetch(e, te, r)
	}
	return e, c.waitCh(e)
}

// startLoop starts the entry's fetch loop. e.mu must be held and the loop
// not running.
func (c *Cache) startLoop(e *entry, te *typeEntry, r Request) {
	e.fetching = true
	e.refreshPending.Store(false)
	lp := c.loopState(e)
	c.entryStopCh(e)
	go c.runFetchLoop(e, lp, te, r)
}

// sideFetch returns a channel closed when the entry's revalidation fetch
// ends, starting one if none runs. It serves Gets that want the current
// value (MaxAge, MustRevalidate) while the loop's fetch is a blocking query
// that only answers on a change or after the type's timeout: they must not
// wait for a change they did not ask for (Consul #12048). Revalidations
// share one fetch, which does not block, so an entry has at most two
// fetches in flight: the loop's blocking query and one revalidation.
// e.mu must be held and the loop running.
func (c *Cache) sideFetch(e *entry, te *typeEntry, r Request) <-chan struct{} {
	lp := e.loop.Load()
	if lp.side == nil {
		lp.side = make(chan struct{})
		go c.runSideFetch(e, lp, te, r)
	}
	return lp.side
}

// runSideFetch is the goroutine of a revalidation fetch; it ends with it.
func (c *Cache) runSideFetch(e *entry, lp *entryLoop, te *typeEntry, r Request) {
	k := decodeKey(e.key)
	prev := e.result()
	opts := fetchOptions(te, prev)
	opts.MinIndex, opts.Timeout = 0, 0

	// Preset for a Fetch that calls runtime.Goexit.
	fr, err := FetchResult{}, errExited(te.name, k.key)
	defer func() { c.publishSide(e, lp, prev, fr, err) }()
	fr, err = c.callFetch(fetchContext{lp.stop}, te, &k, opts, r)
	if err == nil {
		c.countSuccess(te, fr)
	} else {
		c.countError(te, &k, err, 1)
	}
}

// publishSide publishes the outcome of a revalidation fetch. A new value
// also wakes the loop's waiters, since it may be the change they wait for;
// an error goes only to the revalidating callers.
func (c *Cache) publishSide(e *entry, lp *entryLoop, prev *result, fr FetchResult, err error) {
	now := c.now()
	e.mu.Lock()
	closeSt := e.store(e.result().follow(prev, fr, err, now, false))
	if err == nil && e.loop.Load() == lp {
		e.wake()
	}
	if lp.side != nil { // Close may have released its waiters already
		close(lp.side)
		lp.side = nil
	}
	e.mu.Unlock()
	c.closeState(e, closeSt)
}

// startRefresh starts the background refresh of a prepopulated entry, with
// the request of its first hit.
func (c *Cache) startRefresh(e *entry, te *typeEntry, r Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.refreshPending.Load() && !e.fetching && !e.evicted && !c.closed.Load() {
		c.startLoop(e, te, r)
	}
}

// fetchDirect calls the type's Fetch for a request that bypasses the cache.
// Nothing is shared or stored: every such Get is its own RPC. The fetch
// runs in its own goroutine so that the Get can return when its Timeout
// passes (with no value and no error, as any Get that times out before a
// first value), when ctx ends (with ctx.Err()) or when the cache closes
// (with ErrClosed). The fetch's context then ends, and the goroutine with
// the fetch.
func (c *Cache) fetchDirect(ctx context.Context, t string, r Request, info *RequestInfo, minIndex uint64) (interface{}, ResultMeta, error) {
	te := c.typeEntry(t)
	if te == nil {
		return nil, ResultMeta{}, unknownType(t)
	}
	if c.closed.Load() {
		return nil, ResultMeta{}, ErrClosed
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
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
		o.fr, o.err = c.callFetch(fctx, te, &k, FetchOptions{MinIndex: minIndex}, r)
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
	case <-c.stopCh:
		return nil, ResultMeta{}, ErrClosed
	}
}

// lookup returns the entry for key, or nil.
func (c *Cache) lookup(key *keyRef) *entry {
	return c.shards[key.shard()].tab.Load().get(key)
}

// lookupOrCreate returns the entry for key, creating an empty one if needed.
func (c *Cache) lookupOrCreate(key *keyRef, te *typeEntry) *entry {
	if e := c.lookup(key); e != nil {
		return e
	}

	s := &c.shards[key.shard()]
	s.mu.Lock()
	t := s.tab.Load()
	if e := t.get(key); e != nil {
		s.mu.Unlock()
		return e
	}
	e := newEntry(key.b)
	e.typ, e.ttl, e.heapIndex, e.shard = te.slot, te.opts.LastGetTTL, -1, key.shard()
	if nt := t.insert(key.hash, e); nt != t {
		s.tab.Store(nt)
	}
	n := c.count.Add(1)
	s.mu.Unlock()

	c.metrics.gauge(c.metrics.entriesCount, float32(n))
	if max := c.settings.Load().maxEntries; max > 0 && n > int64(max) {
		c.evictOverflow()
	}
	return e
}

// Prepopulate stores res, fetched elsewhere, as the value of type t for the
// given datacenter, token and key, as if the cache had fetched it: it
// replaces any cached value and wakes Gets waiting for one. The entry then
// expires like any other, and for a type with Refresh, its background
// refresh starts with the first Get that hits it (Prepopulate has no
// Request to fetch with). It returns an error for an unknown type, an empty
// key, a nil Value or a zero Index, and ErrClosed after Close.
func (c *Cache) Prepopulate(t string, res FetchResult, dc, token, key string) error {
	te := c.typeEntry(t)
	switch {
	case te == nil:
		return unknownType(t)
	case key == "":
		return fmt.Errorf("cache: prepopulate type %q: empty key", t)
	case res.Value == nil:
		return fmt.Errorf("cache: prepopulate type %q, key %q: nil value", t, key)
	case res.Index == 0:
		return fmt.Errorf("cache: prepopulate type %q, key %q: zero index", t, key)
	case c.closed.Load():
		return ErrClosed
	}
	var kbuf [128]byte
	k := c.makeKey(kbuf[:], t, dc, token, key)
	for {
		e := c.lookupOrCreate(&k, te)
		e.mu.Lock()
		if e.evicted {
			e.mu.Unlock()
			continue // evicted just now: store in a new entry
		}
		closeSt := e.store(newResult(res.Value, res.Index, c.now(), resultExtra{state: res.State}))
		e.wake()
		if te.opts.Refresh && !e.fetching {
			e.refreshPending.Store(true)
		}
		e.mu.Unlock()
		c.closeState(e, closeSt)
		c.addExpiry(e)
		return nil
	}
}

// now returns the time since c.epoch: a monotonic clock that is never 0.
func (c *Cache) now() int64 {
	return int64(time.Since(c.epoch))
}

// Close stops the cache's background work and returns once no new fetch
// can start: background refreshes end, waits for back-off, RefreshTimer or
// the fetch rate limiter end at once, the contexts of fetches in flight
// (FetchOptions.Context) are cancelled, Gets waiting for a fetch return
// ErrClosed, Notify watches end, and entries no longer expire. Fetches in
// flight may still finish; their results are stored but start nothing.
//
// Values already cached stay available to Get. Get and Notify never block
// on a closed cache: where they would need a fetch they return ErrClosed.
// Close is meant for shutdown and may be called more than once; it always
// returns nil.
func (c *Cache) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(c.stopCh)
	// A loop started before closed was set is in a shard's table by now, and
	// one that was not yet started sees closed under its entry's lock.
	var states []retired
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.tab.Load().each(func(e *entry) {
			e.mu.Lock()
			e.stop()
			e.wakeAll()
			if st := e.retire(); st != nil {
				states = append(states, retired{e, st})
			}
			e.mu.Unlock()
		})
		s.mu.Unlock()
	}
	c.closeStates(states)
	return nil
}
