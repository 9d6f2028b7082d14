package cache

import "sync/atomic"

// table is one shard's index of entries by encoded key: an open-addressing
// hash table with linear probing whose readers take no lock. A hit is a
// lookup, so unlike a Go map under a read lock it writes no shared word
// that other cores would fight over.
//
// Every slot is read and written atomically. Writers hold the shard's
// mutex and change a published table only in ways a concurrent reader
// tolerates:
//
//   - an entry goes into a free slot hash first, entry second, so a reader
//     that sees the entry sees its hash;
//   - a removed entry's slot keeps a tombstone, so probes for the keys
//     behind it go on;
//   - a table that fills up (tombstones included) or empties is rebuilt
//     into a new one and swapped in whole, and is not written again.
//
// A reader that races with a writer may therefore miss an entry being
// added or find one being removed, as it could have before or after the
// write; the callers that must be exact (lookupOrCreate, evict) look again
// under the shard's mutex.
type table struct {
	slots []slot
	mask  uint64 // len(slots)-1; len(slots) is a power of two

	// live counts entries, used entries and tombstones. At least a quarter
	// of the slots stay empty, which ends every probe. Guarded by the
	// shard's mutex.
	live, used int
}

// slot is one place in a table. e is nil while the slot was never used,
// and tombstone once its entry was removed.
type slot struct {
	hash atomic.Uint64
	e    atomic.Pointer[entry]
}

// tombstone marks the slot of a removed entry. Its key matches none.
var tombstone = new(entry)

// emptyTable is every shard's table until its first entry. It has one
// empty slot, so lookups need no nil check, and is never written: an
// insertion first rebuilds it into a table of its own.
var emptyTable = &table{slots: make([]slot, 1)}

// minTableSlots is the size of a shard's first real table.
const minTableSlots = 16

// get returns the entry of k's partition, or nil. Equal hashes say
// nothing: only the whole encoded key tells partitions apart, so that no
// collision serves one type's, datacenter's or token's entry to another.
func (t *table) get(k *keyRef) *entry {
	for i := k.hash & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		e := s.e.Load()
		if e == nil {
			return nil
		}
		if s.hash.Load() == k.hash && e != tombstone && e.key == string(k.b) {
			return e
		}
	}
}

// find is get for a partition given by its fields, hashed to h: for keys
// too long to encode on the hit path's stack.
func (t *table) find(h uint64, k *entryKey) *entry {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		e := s.e.Load()
		if e == nil {
			return nil
		}
		if s.hash.Load() == h && e != tombstone && keyIs(e.key, k) {
			return e
		}
	}
}

// insert adds e, whose key hashes to h and is not in the table, and returns
// the table that now holds it: t, or a new one that the caller must
// publish. The shard's mutex must be held.
func (t *table) insert(h uint64, e *entry) *table {
	if (t.used+1)*4 > len(t.slots)*3 {
		t = t.rebuild(t.live + 1)
	}
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		old := s.e.Load()
		if old != nil && old != tombstone {
			continue
		}
		if old == nil {
			t.used++
		}
		t.live++
		s.hash.Store(h)
		s.e.Store(e)
		return t
	}
}

// remove takes e, whose key hashes to h, out of the table if it is there,
// and returns whether it was, with the table that now holds the rest: t,
// or a smaller one that the caller must publish. The shard's mutex must
// be held.
func (t *table) remove(h uint64, e *entry) (*table, bool) {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		switch s.e.Load() {
		case nil:
			return t, false
		case e:
			s.e.Store(tombstone)
			t.live--
			// Go maps keep the memory of their largest size; a table
			// gives it back once it is mostly empty, at a cost
			// amortised over the removals since it was built.
			if len(t.slots) > minTableSlots && t.live*8 <= len(t.slots) {
				t = t.rebuild(t.live)
			}
			return t, true
		}
	}
}

// rebuild returns a new table with t's entries and room for n of them
// before it fills up. The shard's mutex must be held.
func (t *table) rebuild(n int) *table {
	size := minTableSlots
	for size < 2*n {
		size *= 2
	}
	nt := &table{slots: make([]slot, size), mask: uint64(size - 1)}
	for i := range t.slots {
		s := &t.slots[i]
		if e := s.e.Load(); e != nil && e != tombstone {
			nt.insert(s.hash.Load(), e)
		}
	}
	return nt
}

// each calls f for every entry in the table. The shard's mutex must be
// held, for an exact view.
func (t *table) each(f func(*entry)) {
	for e := range t.all {
		f(e)
	}
}

// all yields the entries in the table. It needs no lock: like a lookup,
// without the shard's mutex it may miss an entry being added or yield one
// being removed.
func (t *table) all(yield func(*entry) bool) {
	for i := range t.slots {
		if e := t.slots[i].e.Load(); e != nil && e != tombstone && !yield(e) {
			return
		}
	}
}
