package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"iter"
	"slices"
	"strings"
	"time"
)

// EntryFilter selects the entries that Entries and EntriesSeq describe.
// Each field that is not empty must match; the zero EntryFilter selects
// every entry.
type EntryFilter struct {
	// Type selects the entries of the type registered under that name.
	Type string

	// Datacenter selects the entries of that datacenter.
	Datacenter string

	// KeyPrefix selects the entries whose request key (RequestInfo.Key)
	// starts with it.
	KeyPrefix string
}

// EntryInfo describes one cache entry as a snapshot found it. Durations
// are measured back from the moment the entry was read.
//
// It never holds the entry's ACL token, in any form: TokenFingerprint
// tells entries of different tokens apart instead, and the token is
// redacted from every text field, even from a key that embeds it.
//
// Its strings share the entry's memory, so that a snapshot allocates next
// to nothing: an EntryInfo kept keeps the entry it describes in memory,
// evicted or not, until it is dropped.
type EntryInfo struct {
	// Type, Datacenter and Key are the entry's partition, without its
	// token.
	Type       string
	Datacenter string
	Key        string

	// TokenFingerprint is TokenFingerprint of the entry's token: empty
	// for requests without a token.
	TokenFingerprint string

	// HasValue reports whether the entry holds a value. It is false while
	// its first fetch runs, and after fetches that brought only errors.
	HasValue bool

	// Index is the index of the value; 0 without a value.
	Index uint64

	// Age is the ResultMeta.Age that a Get served from the entry would
	// get: for an entry that a background refresh keeps current, the time
	// since that refresh first failed (0 while it succeeds); otherwise
	// the time since the value was fetched. 0 without a value.
	Age time.Duration

	// SinceFetch is the time since the value was fetched, or confirmed
	// by a NotModified result; 0 without a value.
	SinceFetch time.Duration

	// Fetching reports whether a Fetch for the entry is in flight: its
	// fetch loop's, or a revalidation's. Blocking reports whether the
	// loop's fetch is a blocking query, which may wait for a change as
	// long as the type's RefreshTimeout: for an entry that a blocking
	// refresh keeps current, that is its usual state.
	Fetching bool
	Blocking bool

	// Refreshing reports whether a background refresh keeps the entry
	// current. RefreshStopped reports that an error ended it (see
	// StopRefresh and RegisterOptions.RefreshMaxFailures): the next Get
	// of the entry fetches again.
	Refreshing     bool
	RefreshStopped bool

	// LostContact is, for an entry of a refreshing type, the time since
	// its refresh first failed; 0 while the refresh succeeds.
	LostContact time.Duration

	// LastError is the message of the latest fetch's error, with the
	// token redacted; empty if that fetch succeeded.
	LastError string

	// Failures is the number of fetches in a row, up to the latest, that
	// failed: when the latest returned an error, the count of the fetch
	// loop that made it (errors and fetches with nothing to serve, as its
	// back-off counts them; at least 1); otherwise the number of fetches
	// in a row that succeeded with nothing to serve (no index, or no
	// value), which back off as failed attempts do. It is 0 when the
	// latest fetch brought a value, and before the first fetch ends.
	Failures int

	// Watchers is the number of Gets waiting on the entry for a fetch
	// (blocking queries, Notify). A watched entry does not expire.
	Watchers int

	// TTL is the time left before the entry expires unless it is read:
	// LastGetTTL from the last Get of it. A watched entry has its whole
	// LastGetTTL left, and so has an entry whose first fetch still runs,
	// since its TTL starts when that fetch ends. An entry whose TTL ran
	// out, and which the expiry loop has yet to evict, has 0.
	TTL time.Duration
}

// Entries returns a snapshot of the entries that f selects, in no
// particular order; see EntriesSeq.
func (c *Cache) Entries(f EntryFilter) []EntryInfo {
	return slices.Collect(c.EntriesSeq(f))
}

// EntriesSeq returns an iterator over the entries that f selects, each
// described as it is when the iterator reaches it, in no particular
// order. It is meant for debugging and monitoring (see the cachehttp
// package's EntriesHandler), and may run while the cache serves.
//
// It does not block Gets: it walks each shard's table without its lock,
// as lookups do, and reads most of an entry's state from atomics. Whether
// a fetch is in flight is read under the entry's own lock, held for a few
// loads; Gets served from the cache never take it, and it is never held
// while the iterator formats an entry or yields. No lock is held while
// yield runs, so the loop's body may take its time, or use the cache.
//
// Reading the entries does not count as using them: their TTL runs on.
// The snapshot is not atomic: an entry added while it runs may be missing
// from it, and one evicted meanwhile may be in it (as may, rarely, its
// successor, the entry created for the same key after it).
func (c *Cache) EntriesSeq(f EntryFilter) iter.Seq[EntryInfo] {
	return func(yield func(EntryInfo) bool) {
		var fps fingerprints
		for e := range c.tableEntries() {
			if info, ok := c.describe(e, &f, &fps); ok && !yield(info) {
				return
			}
		}
	}
}

// tableEntries returns an iterator over the entries in the shards' tables,
// which reads them without a lock, as lookups do: a table's slots are
// atomics, and a published table is only ever changed in ways a concurrent
// reader tolerates.
func (c *Cache) tableEntries() iter.Seq[*entry] {
	return func(yield func(*entry) bool) {
		for i := range c.shards {
			for e := range c.shards[i].tab.Load().all {
				if !yield(e) {
					return
				}
			}
		}
	}
}

// matches reports whether the entry whose partition is k passes f.
func (f *EntryFilter) matches(k *entryKey) bool {
	return (f.Type == "" || k.typ == f.Type) &&
		(f.Datacenter == "" || k.dc == f.Datacenter) &&
		strings.HasPrefix(k.key, f.KeyPrefix)
}

// loopView is what an entry's fetch loop is doing, as far as a snapshot
// tells it.
type loopView struct {
	lp                 *entryLoop // nil: no fetch runs or is waited for
	fetching, blocking bool
	evicted            bool
}

// viewLoop reads the state of e's fetch loop, which its lock guards. An
// entry without an entryLoop has no fetch in flight: one is created, under
// that lock, before any fetch starts, and dropped only after its fetch
// ended; such an entry is read without the lock, and may just have been
// evicted.
func viewLoop(e *entry) loopView {
	v := loopView{lp: e.loop.Load()}
	if v.lp == nil {
		return v
	}
	e.mu.Lock()
	v.lp = e.loop.Load()
	if v.lp != nil {
		v.fetching = v.lp.inFetch || v.lp.side != nil
		v.blocking = v.lp.inFetch && v.lp.blocking
	}
	v.evicted = e.evicted
	e.mu.Unlock()
	return v
}

// describe returns the EntryInfo of e, and whether f selects it; an entry
// found evicted is not selected. fps remembers the fingerprints of tokens
// seen before.
func (c *Cache) describe(e *entry, f *EntryFilter, fps *fingerprints) (EntryInfo, bool) {
	k := decodeKey(e.key)
	if !f.matches(&k) {
		return EntryInfo{}, false
	}
	lv := viewLoop(e)
	if lv.evicted {
		return EntryInfo{}, false
	}
	res := e.result()
	te := e.typ.te.Load()
	watchers := e.watchers.Load()
	last := e.lastAccess.Load()
	// After the loads: no time read above lies after it.
	now := c.now()

	info := EntryInfo{
		Type:             te.name,
		TokenFingerprint: fps.of(k.token),
		HasValue:         res.valid(),
		Index:            res.index,
		// meta reads the lost-contact time itself, and may find one
		// later than now: contact was lost just now.
		Age:            max(c.meta(&sight{te, e, res, now}).Age, 0),
		Fetching:       lv.fetching,
		Blocking:       lv.blocking,
		Refreshing:     e.refreshing.Load(),
		RefreshStopped: res.refreshStopped(),
		Watchers:       int(watchers),
		TTL:            ttlLeft(e, &res, watchers, last, now),
	}
	info.Datacenter, info.Key = redact(k.token, k.dc), redact(k.token, k.key)
	if info.HasValue {
		info.SinceFetch = time.Duration(now - res.fetchedAt)
	}
	if lv.lp != nil {
		if lost := lv.lp.lostContact.Load(); lost != 0 {
			info.LostContact = time.Duration(max(now-lost, 0))
		}
	}
	if err := res.err(); err != nil {
		// Errors were redacted when they were stored; this is for the
		// cases no fetch saw, such as a key that embeds the token.
		info.LastError = redact(k.token, err.Error())
		info.Failures = 1
		if lv.lp != nil {
			info.Failures = max(int(lv.lp.failures.Load()), 1)
		}
	} else if n, _ := res.emptyRun(now); n > 0 {
		info.Failures = int(n)
	}
	return info, true
}

// ttlLeft returns the time left at now before e expires, given its result,
// watchers and last access as the snapshot read them. They come as
// five parameters because the snapshot read each once, atomically, and the
// TTL must agree with the other fields it reports.
func ttlLeft(e *entry, res *result, watchers int32, last, now int64) time.Duration {
	if watchers > 0 || res.ver == 0 || last == 0 {
		// In use, or not in the expiry heap yet.
		return e.ttl
	}
	return time.Duration(max(last+int64(e.ttl)-now, 0))
}

// TokenFingerprint returns a short, stable fingerprint of an ACL token: the
// first 8 hexadecimal digits of its SHA-256 hash, or "" for the empty
// token. It tells the entries of different tokens apart in EntryInfo
// without revealing the token, and being stable across processes, lets an
// operator find the entries of a token they hold (for example with
// `printf %s "$TOKEN" | sha256sum | cut -c1-8`).
//
// 32 bits of a hash reveal nothing useful of a random token, such as
// Consul's UUIDs, but they do confirm a guess: a token that can be
// guessed ("root", say) can be recognised from its fingerprint.
func TokenFingerprint(token string) string {
	if token == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:4])
}

// maxFingerprints bounds the tokens a snapshot remembers the
// fingerprints of.
const maxFingerprints = 1024

// fingerprints remembers the fingerprints of the tokens a snapshot met,
// which are usually few: hashing each entry's token would cost more than
// describing the entry.
type fingerprints struct {
	m map[string]string
}

// of returns TokenFingerprint(token).
func (fps *fingerprints) of(token string) string {
	if token == "" {
		return ""
	}
	if fp, ok := fps.m[token]; ok {
		return fp
	}
	fp := TokenFingerprint(token)
	if fps.m == nil {
		fps.m = make(map[string]string)
	}
	if len(fps.m) < maxFingerprints {
		fps.m[token] = fp
	}
	return fp
}
