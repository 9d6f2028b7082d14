package cache

import (
	"errors"
	"fmt"
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

	closed  atomic.Bool
	closing chan struct{} // closed by Close

	// watches are the live Notify watches, which Close ends.
	watches watchSet
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
		epoch:   time.Now().Add(-time.Nanosecond),
		closing: make(chan struct{}),
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

// typeOf returns the type of e, if not nil, else the type registered as t:
// an entry's type needs no lookup by name.
func (c *Cache) typeOf(e *entry, t string) *typeEntry {
	if e != nil {
		return e.typ.te.Load()
	}
	return c.typeEntry(t)
}

func unknownType(t string) error {
	return fmt.Errorf("unknown type in cache: %s", t)
}

// now returns the time since c.epoch: a monotonic clock that is never 0.
func (c *Cache) now() int64 {
	return int64(time.Since(c.epoch))
}

// Close stops the cache's background work and returns once no new fetch
// can start: background refreshes end, waits for back-off, RefreshTimer or
// the fetch rate limiter end at once, Notify watches end, and entries no
// longer expire.
//
// Fetches in flight run to completion, and the Gets already waiting for a
// value they do not have (a first fetch, a retry after an error, a
// revalidation) get their result: Close does not cancel their context,
// though the Gets' own Timeout and context still apply. Fetches that no
// such Get waits on (background refreshes, Notify's, blocking queries
// waiting for a change) have their context cancelled (see ContextType),
// and the Gets waiting on them for a change return at once with the value
// they have and ErrClosed. Results that arrive after Close are stored but
// start nothing.
//
// Values already cached stay available to Get. Where Get or Notify would
// need a new fetch on a closed cache, they return ErrClosed at once. Close
// is meant for shutdown and may be called more than once; it always
// returns nil.
func (c *Cache) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(c.closing)
	// A loop started before closed was set is in a shard's table by now, and
	// one that was not yet started sees closed under its entry's lock.
	var states []retired
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.tab.Load().each(func(e *entry) {
			e.mu.Lock()
			e.closeLoop()
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
