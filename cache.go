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
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	metrics "github.com/armon/go-metrics"
	"golang.org/x/time/rate"
)

// Constants for the back-off of failing background refreshes and Notify
// loops. They only exist to limit load on the servers, so they are not
// configurable.
const (
	CacheRefreshBackoffMin = 3               // attempts before backing off
	CacheRefreshMaxWait    = 1 * time.Minute // maximum backoff wait
)

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
	// types maps type names to *typeEntry. It is copied on write under
	// typesMu and read without a lock.
	typesMu sync.Mutex
	types   atomic.Pointer[map[string]*typeEntry]

	// shards hold the entries, spread by a hash of their key so that
	// readers of different keys do not share a lock word.
	shards    [shardCount]shard
	shardSalt uint64       // varies shard choice between caches
	count     atomic.Int64 // entries in all shards

	// expiryMu guards expiry and the heap fields of every entry. Lock
	// order: expiryMu, then shard.mu, then entry.mu.
	expiryMu     sync.Mutex
	expiry       expiryHeap
	expiryNotify chan struct{} // wakes the expiry loop; buffered 1

	// epoch is the origin of the monotonic offsets stored in entries.
	epoch time.Time

	// Settings from Options, fixed by New.
	metrics    cacheMetrics
	log        *slog.Logger
	fetchRate  rate.Limit
	fetchBurst int
	maxEntries int

	closed atomic.Bool
	stopCh chan struct{} // closed by Close
}

// typeEntry is a registered type. It is immutable.
type typeEntry struct {
	name string
	typ  Type
	opts RegisterOptions
	keys typeKeys
}

const (
	shardBits  = 6
	shardCount = 1 << shardBits
)

// shard is one part of the entry map, padded to its own cache line.
type shard struct {
	mu sync.RWMutex
	m  map[string]*entry // by entry.key
	_  [32]byte
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

// Options are options for a Cache. The zero value gives the behaviour of
// Consul v1.4.5's cache.
type Options struct {
	// EntryFetchRate limits how often one entry may be fetched, in fetches
	// per second, so that a blocking type whose data changes all the time
	// cannot turn its refresh into a hot loop against the servers. Zero
	// (or less) means no limit, as in the seed. EntryFetchMaxBurst is the
	// number of fetches allowed at once; below 1 it is 2, Consul's default.
	//
	// A sound setting for blocking types is a rate of 1 (one fetch per
	// second per entry) with a burst of 2: an entry that changes rarely is
	// never slowed down, and one that changes constantly costs the servers
	// one query a second.
	EntryFetchRate     rate.Limit
	EntryFetchMaxBurst int

	// Logger receives fetch errors, panics and back-off waits, with the
	// type, datacenter and key of the entry. ACL tokens are never logged.
	// Nil discards everything.
	Logger *slog.Logger

	// MetricsPrefix is put before every metric name. Nil means
	// {"consul", "cache"}, the seed's names.
	MetricsPrefix []string

	// Metrics is the go-metrics instance to report to. Nil means the global
	// one, as in the seed.
	Metrics *metrics.Metrics

	// MaxEntries bounds the number of entries. When a new entry makes it
	// exceed the bound, the entries closest to expiry (the least recently
	// used, for one TTL) are evicted first and counted as evict_size. Zero
	// (or less) means no bound, as in the seed.
	MaxEntries int
}

// New returns a ready cache. It starts the goroutine that expires entries,
// which runs until Close. opts may be nil; New keeps a copy.
func New(opts *Options) *Cache {
	var o Options
	if opts != nil {
		o = *opts
	}
	c := &Cache{
		shardSalt:    rand.Uint64(),
		expiryNotify: make(chan struct{}, 1),
		// One nanosecond before now, so that no offset is 0: stored
		// offsets use 0 for "never".
		epoch:      time.Now().Add(-time.Nanosecond),
		stopCh:     make(chan struct{}),
		metrics:    newCacheMetrics(&o),
		log:        o.Logger,
		fetchRate:  rate.Inf,
		maxEntries: max(o.MaxEntries, 0),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if o.EntryFetchRate > 0 {
		c.fetchRate = o.EntryFetchRate
		c.fetchBurst = o.EntryFetchMaxBurst
		if c.fetchBurst < 1 {
			c.fetchBurst = 2
		}
	}
	c.types.Store(&map[string]*typeEntry{})
	for i := range c.shards {
		c.shards[i].m = make(map[string]*entry)
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
}

// RegisterType registers a type under the name n, replacing any type of
// that name. Entries already cached keep their TTL; their next fetch uses
// the new type. opts may be nil; RegisterType keeps a copy. It fetches
// nothing: entries are filled by Get.
func (c *Cache) RegisterType(n string, typ Type, opts *RegisterOptions) {
	te := &typeEntry{name: n, typ: typ, keys: c.metrics.typeKeys(n)}
	if opts != nil {
		te.opts = *opts
	}
	if te.opts.LastGetTTL == 0 {
		te.opts.LastGetTTL = 72 * time.Hour // days are a reasonable default
	}

	c.typesMu.Lock()
	defer c.typesMu.Unlock()
	old := *c.types.Load()
	types := make(map[string]*typeEntry, len(old)+1)
	for k, v := range old {
		types[k] = v
	}
	types[n] = te
	c.types.Store(&types)
}

// typeEntry returns the type registered as t, or nil.
func (c *Cache) typeEntry(t string) *typeEntry {
	return (*c.types.Load())[t]
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
//
// An error is returned only to Gets that had to wait for a fetch, and only
// while no later fetch has succeeded: a caller without MinIndex keeps
// getting the last good value while refreshes fail.
func (c *Cache) Get(t string, r Request) (interface{}, ResultMeta, error) {
	return c.GetContext(context.Background(), t, r)
}

// GetContext is Get with a context: if ctx ends before a value is ready,
// GetContext returns the last known value, if any, with ctx.Err(). The
// fetch it waited for goes on for the other callers. The request's Timeout
// keeps its meaning: the last value and no error.
func (c *Cache) GetContext(ctx context.Context, t string, r Request) (interface{}, ResultMeta, error) {
	info := r.CacheInfo()
	return c.getWithIndex(ctx, t, r, &info, info.MinIndex)
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
// (Notify moves it along) and a context that ends the wait.
func (c *Cache) getWithIndex(ctx context.Context, t string, r Request, info *RequestInfo, minIndex uint64) (interface{}, ResultMeta, error) {
	if info.Key == "" {
		c.metrics.incr(c.metrics.bypass)
		return c.fetchDirect(t, r, info, minIndex)
	}
	var kbuf [128]byte
	key := c.makeKey(kbuf[:], t, info.Datacenter, info.Token, info.Key)

	// The common case, a hit at first sight, takes this short path: no
	// loop, timer or defer.
	if te := c.typeEntry(t); te != nil {
		if e := c.lookup(key); e != nil {
			if res := e.res.Load(); res != nil {
				if now := c.now(); c.isHit(te, info, minIndex, res, true, now) {
					return c.hit(te, e, res, r, true, now)
				}
			}
		}
	}
	return c.getSlow(ctx, t, r, info, minIndex, key)
}

// getSlow is getWithIndex for everything but a hit at first sight: it
// waits for fetches until the request is satisfied, fails, or times out.
func (c *Cache) getSlow(ctx context.Context, t string, r Request, info *RequestInfo, minIndex uint64, key keyRef) (interface{}, ResultMeta, error) {
	first := true
	var timeout <-chan time.Time
	var waited *entry // the entry whose fetch we last waited for
	var seen *result  // the result we saw before that wait
	for {
		te := c.typeEntry(t)
		if te == nil {
			return nil, ResultMeta{}, unknownType(t)
		}
		e := c.lookup(key)
		if e == nil {
			// Evicted while we waited: its last result still answers us.
			e = waited
		}
		res := noResult
		if e != nil {
			res = e.result()
		}

		now := c.now()
		if c.isHit(te, info, minIndex, res, first, now) {
			return c.hit(te, e, res, r, first, now)
		}

		// A fetch ended while we waited and failed: report it rather than
		// spin on the same error until the timeout. The value beside it, if
		// any, is older. An error we saw before waiting is not news: the
		// loop woke us without fetching (Close, eviction), so fetch again.
		if err := res.err(); !first && err != nil && res != seen {
			return res.value, ResultMeta{Index: res.index}, err
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

		var ch <-chan struct{}
		seen = res
		waited, ch = c.fetch(te, key, r, res)
		select {
		case <-ch:
		case <-timeout:
			return res.value, ResultMeta{Index: res.index}, nil
		case <-ctx.Done():
			return res.value, ResultMeta{Index: res.index}, ctx.Err()
		}
	}
}

// hit returns the value of res, a hit on e at time now. first tells a hit
// at first sight, counted and flagged as such, from one after a wait.
func (c *Cache) hit(te *typeEntry, e *entry, res *result, r Request, first bool, now int64) (interface{}, ResultMeta, error) {
	meta := ResultMeta{Index: res.index, Hit: first}
	if first {
		c.metrics.incr(te.keys.hit)
	}
	if te.opts.Refresh {
		if lp := e.loop.Load(); lp != nil {
			if lost := lp.lostContact.Load(); lost != 0 {
				meta.Age = time.Duration(now - lost)
			}
		}
	} else {
		meta.Age = time.Duration(now - res.fetchedAt)
	}
	e.lastAccess.Store(now)
	if e.refreshPending.Load() {
		c.startRefresh(e, te, r)
	}
	return res.value, meta, nil
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
		return true
	}
	if info.MaxAge > 0 && time.Duration(now-res.fetchedAt) > info.MaxAge {
		return false
	}
	// Revalidation makes only the first round a miss: once a fetch was
	// attempted, even a failed one, the cached value may be served.
	return !(info.MustRevalidate && first)
}

// fetch makes sure the entry for key is being fetched and returns it with a
// channel that is closed when there is something new to look at. seen is
// the result the caller examined: if a newer one was published since, the
// channel is already closed, so a Get racing with a finishing fetch never
// waits for (or starts) another one.
func (c *Cache) fetch(te *typeEntry, key keyRef, r Request, seen *result) (*entry, <-chan struct{}) {
	e := c.lookupOrCreate(key, te)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.evicted || e.result() != seen {
		return e, closedCh
	}
	if !e.fetching {
		c.startLoop(e, te, r)
	}
	return e, c.waitCh(e)
}

// startLoop starts the entry's fetch loop. e.mu must be held and the loop
// not running.
func (c *Cache) startLoop(e *entry, te *typeEntry, r Request) {
	e.fetching = true
	e.refreshPending.Store(false)
	go c.runFetchLoop(e, c.loopState(e), te, r)
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
// Nothing is shared or stored: every such Get is its own RPC.
func (c *Cache) fetchDirect(t string, r Request, info *RequestInfo, minIndex uint64) (interface{}, ResultMeta, error) {
	te := c.typeEntry(t)
	if te == nil {
		return nil, ResultMeta{}, unknownType(t)
	}
	key := entryKey{typ: t, dc: info.Datacenter, token: info.Token}
	res, err := c.callFetch(te, &key, FetchOptions{MinIndex: minIndex}, r)
	if err != nil {
		return nil, ResultMeta{}, err
	}
	return res.Value, ResultMeta{}, nil
}

// lookup returns the entry for key, or nil.
func (c *Cache) lookup(key keyRef) *entry {
	s := &c.shards[key.shard]
	s.mu.RLock()
	e := s.m[string(key.b)]
	s.mu.RUnlock()
	return e
}

// lookupOrCreate returns the entry for key, creating an empty one if needed.
func (c *Cache) lookupOrCreate(key keyRef, te *typeEntry) *entry {
	if e := c.lookup(key); e != nil {
		return e
	}

	s := &c.shards[key.shard]
	s.mu.Lock()
	if e := s.m[string(key.b)]; e != nil {
		s.mu.Unlock()
		return e
	}
	e := &entry{key: string(key.b), ttl: te.opts.LastGetTTL, heapIndex: -1, shard: key.shard}
	s.m[e.key] = e
	n := c.count.Add(1)
	s.mu.Unlock()

	c.metrics.gauge(c.metrics.entriesCount, float32(n))
	if c.maxEntries > 0 && n > int64(c.maxEntries) {
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
// key, a nil Value or a zero Index.
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
	}
	var kbuf [128]byte
	k := c.makeKey(kbuf[:], t, dc, token, key)
	for {
		e := c.lookupOrCreate(k, te)
		e.mu.Lock()
		if e.evicted {
			e.mu.Unlock()
			continue // evicted just now: store in a new entry
		}
		e.res.Store(newResult(res.Value, res.Index, c.now(), res.State, nil))
		e.wake()
		if te.opts.Refresh && !e.fetching {
			e.refreshPending.Store(true)
		}
		e.mu.Unlock()
		c.addExpiry(e)
		return nil
	}
}

// now returns the time since c.epoch: a monotonic clock that is never 0.
func (c *Cache) now() int64 {
	return int64(time.Since(c.epoch))
}

// Close stops the cache's background work: background refreshes end
// (a fetch in flight may finish, but no refresh follows it) and entries no
// longer expire. Callers may still Get; values already cached stay
// available. Close is meant for shutdown and may be called more than once;
// it always returns nil.
func (c *Cache) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		close(c.stopCh)
	}
	return nil
}
