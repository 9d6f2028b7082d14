package cache

import (
	"sync"
	"sync/atomic"
)

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

// lookup returns the entry for key, or nil.
func (c *Cache) lookup(key *keyRef) *entry {
	return c.shards[key.shard()].tab.Load().get(key)
}

// lookupLong is lookup for a partition given by its fields, which it
// neither encodes nor copies: the hit path's lookup of long keys.
func (c *Cache) lookupLong(k *entryKey) *entry {
	h := c.hashSeed.sum(k.typ, k.dc, k.token, k.key)
	return c.shards[keyRef{hash: h}.shard()].tab.Load().find(h, k)
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

// unlink takes e out of its shard's table.
func (c *Cache) unlink(e *entry) {
	s := &c.shards[e.shard]
	s.mu.Lock()
	t := s.tab.Load()
	if nt, _ := t.remove(c.hashOf(e), e); nt != t {
		s.tab.Store(nt)
	}
	s.mu.Unlock()
}
