package cache

import (
	"log/slog"

	metrics "github.com/armon/go-metrics"
	"golang.org/x/time/rate"
)

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
	// {"consul", "cache"}, the seed's names. It is fixed by New: metric
	// names are built once, and ReloadOptions leaves them alone.
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

// settings are the Options a cache runs with, as New and ReloadOptions
// normalise them. Each value is immutable; Cache.settings points to the
// current one.
type settings struct {
	fetchRate  rate.Limit // rate.Inf: no limit
	fetchBurst int
	log        *slog.Logger // never nil
	maxEntries int          // 0: no bound
}

// discard is the logger of caches without one. It is shared so that
// settings stay comparable.
var discard = slog.New(slog.DiscardHandler)

func newSettings(o *Options) *settings {
	s := &settings{fetchRate: rate.Inf, log: o.Logger, maxEntries: max(o.MaxEntries, 0)}
	if s.log == nil {
		s.log = discard
	}
	if o.EntryFetchRate > 0 {
		s.fetchRate = o.EntryFetchRate
		s.fetchBurst = o.EntryFetchMaxBurst
		if s.fetchBurst < 1 {
			s.fetchBurst = 2
		}
	}
	return s
}

// logger returns the cache's current logger.
func (c *Cache) logger() *slog.Logger { return c.settings.Load().log }

// ReloadOptions applies o to a running cache, as New would have, and
// reports whether anything changed. It is safe to call at any time, with
// Gets, fetches and other calls in flight.
//
//   - EntryFetchRate and EntryFetchMaxBurst apply at once to every entry:
//     existing limiters take the new rate and burst (keeping the tokens
//     they hold), entries without one get one, and a rate of 0 lifts the
//     limit. A fetch waiting for its limiter waits again under the new
//     setting.
//   - Logger applies from the next line logged.
//   - MaxEntries applies from the next entry created; a lower bound
//     evicts the entries over it at once.
//   - MetricsPrefix and Metrics cannot change: the hit path sends to the
//     instance and names fixed by New without any synchronisation. They
//     are ignored, and do not count as a change.
func (c *Cache) ReloadOptions(o Options) bool {
	old, next, changed := c.reload(&o)
	// Outside reloadMu: evicting closes states, which runs the Type's code.
	if changed && next.maxEntries > 0 && (old.maxEntries == 0 || next.maxEntries < old.maxEntries) {
		c.evictOverflow()
	}
	return changed
}

// reload stores the settings of o and applies new limits, under reloadMu.
func (c *Cache) reload(o *Options) (old, next *settings, changed bool) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	old, next = c.settings.Load(), newSettings(o)
	if *old == *next {
		return old, next, false
	}
	c.settings.Store(next)
	if old.fetchRate != next.fetchRate || old.fetchBurst != next.fetchBurst {
		c.applyLimits(next)
	}
	return old, next, true
}

// applyLimits gives every entry's loop the fetch rate limit of s, then
// wakes the limiter waits so that they start over with it.
func (c *Cache) applyLimits(s *settings) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.tab.Load().each(func(e *entry) {
			e.mu.Lock()
			if lp := e.loop.Load(); lp != nil {
				lp.setLimit(s)
			}
			e.mu.Unlock()
		})
		sh.mu.Unlock()
	}
	ch := make(chan struct{})
	close(*c.reloaded.Swap(&ch))
}
