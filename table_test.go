package cache

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// tableShard is a shard with its table, as the cache uses them, for tests.
type tableShard struct {
	c  *Cache
	mu sync.Mutex
	t  atomic.Pointer[table]
}

func newTableShard(t *testing.T) *tableShard {
	c := New(nil)
	t.Cleanup(func() { c.Close() })
	s := &tableShard{c: c}
	s.t.Store(emptyTable)
	return s
}

func (s *tableShard) key(k string) keyRef {
	return s.c.makeKey(nil, "t", "dc1", "tok", k)
}

func (s *tableShard) get(k string) *entry {
	key := s.key(k)
	return s.t.Load().get(&key)
}

func (s *tableShard) insert(k string) *entry {
	key := s.key(k)
	e := newEntry(key.b)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.t.Load()
	if t.get(&key) != nil {
		panic("duplicate " + k)
	}
	s.t.Store(t.insert(key.hash, e))
	return e
}

func (s *tableShard) remove(e *entry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	nt, ok := s.t.Load().remove(s.c.hashOf(e), e)
	s.t.Store(nt)
	return ok
}

func (s *tableShard) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	s.t.Load().each(func(*entry) { n++ })
	return n
}

// Pins: a table finds what was inserted and nothing else, reuses the slots
// of removed entries, grows as it fills and gives memory back once mostly
// empty.
func TestTable_insertGetRemove(t *testing.T) {
	t.Parallel()
	s := newTableShard(t)
	require.Nil(t, s.get("k0"), "the empty table finds nothing")
	require.False(t, s.remove(newEntry(s.key("absent").b)), "the empty table removes nothing")
	require.Same(t, emptyTable, s.t.Load(), "the shared empty table is never written")

	const n = 5000
	es := make([]*entry, n)
	for i := range es {
		es[i] = s.insert("k" + strconv.Itoa(i))
	}
	peak := len(s.t.Load().slots)
	require.GreaterOrEqual(t, peak, 2*n*3/4, "a table stays at most three quarters full")
	for i, e := range es {
		require.Same(t, e, s.get("k"+strconv.Itoa(i)))
	}
	require.Nil(t, s.get("k"+strconv.Itoa(n)))
	require.Equal(t, n, s.count())

	// Churn: remove and re-insert keys; tombstones are reused or rebuilt
	// away, so the table does not grow.
	for round := 0; round < 5; round++ {
		for i := 0; i < n; i += 2 {
			require.True(t, s.remove(es[i]))
			require.False(t, s.remove(es[i]), "removed twice")
			require.Nil(t, s.get("k"+strconv.Itoa(i)))
			es[i] = s.insert("k" + strconv.Itoa(i))
		}
	}
	require.LessOrEqual(t, len(s.t.Load().slots), 2*peak)
	for i, e := range es {
		require.Same(t, e, s.get("k"+strconv.Itoa(i)))
	}

	for i := 0; i < n-10; i++ {
		require.True(t, s.remove(es[i]))
	}
	require.Equal(t, 10, s.count())
	require.LessOrEqual(t, len(s.t.Load().slots), 8*minTableSlots, "a table shrinks once mostly empty")
	for i := n - 10; i < n; i++ {
		require.Same(t, es[i], s.get("k"+strconv.Itoa(i)))
	}
}

// Pins: a reader without a lock always finds an entry that stays in the
// table, while writers add and remove others around it, grow the table and
// shrink it. Run under -race, it also pins that readers and writers share
// nothing but atomics.
func TestTable_lockFreeReaders(t *testing.T) {
	t.Parallel()
	s := newTableShard(t)
	const stable = 64
	es := make([]*entry, stable)
	for i := range es {
		es[i] = s.insert("stable" + strconv.Itoa(i))
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		defer stop.Store(true)
		for round := 0; round < 20; round++ {
			var churn []*entry
			for i := 0; i < 500; i++ {
				churn = append(churn, s.insert("churn"+strconv.Itoa(round)+"-"+strconv.Itoa(i)))
			}
			for _, e := range churn {
				require.True(t, s.remove(e))
			}
		}
	})
	for r := 0; r < 2; r++ {
		wg.Go(func() {
			for !stop.Load() {
				for i, e := range es {
					if got := s.get("stable" + strconv.Itoa(i)); got != e {
						t.Errorf("stable%d: got %p, want %p", i, got, e)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, stable, s.count())
}
