// Package etcdcache provides cache types that read etcd through
// go.etcd.io/etcd/client/v3, so that many readers of the same keys share
// one etcd read and one watch per key.
//
// KV caches one key and Prefix caches every key under a prefix. Both
// support blocking queries: a fetch with a MinIndex watches etcd from the
// revision after it and returns as soon as the data changes, so a type
// registered with RegisterOptions.Refresh keeps its entries current at the
// cost of one watch per entry.
//
// # Indexes
//
// The cache blocks a Get with MinIndex until an entry's index is greater,
// and refreshes an entry by fetching with the entry's index as MinIndex.
// An index must therefore move when, and only when, the data changes. The
// store's current revision does not qualify: it grows with writes to any
// key, so a fetch that answered with it would return at once every time
// and the refresh would spin. The index of a result is instead:
//
//   - for KV, the key's ModRevision: the revision that last wrote it, or,
//     for a deletion seen by the watch, the revision of the delete;
//   - for Prefix after a change seen by the watch, the revision of the
//     last change applied;
//   - for a KV read that finds the key missing, and for every Prefix
//     read, the revision the read was served at (its response header).
//
// A watch event always carries a revision greater than MinIndex, and
// within a blocking fetch a read replaces the value only when it differs
// from the last one, so the index grows exactly once per change seen.
//
// Besides the index, each result keeps as its State the revision up to
// which the value is known to be current. The next blocking fetch watches
// from the revision after it, not from the index, so a key that has not
// changed for a long time is not watched from a revision that a compaction
// has already removed. If the watch start was compacted anyway, the fetch
// reads the data again: it returns the read if the data changed and
// otherwise goes on watching from the read's revision.
//
// # Failures and cancellation
//
// A blocking fetch fails when the client's connection has not been ready
// for LostContactAfter, so that the cache sees the outage (and reports a
// growing ResultMeta.Age) instead of a watch that silently waits for etcd
// to return. Reads are bounded by ReadTimeout. Every request is made under
// the client's context, so closing the client ends all fetches in flight.
package etcdcache
