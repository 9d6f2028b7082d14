package cache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
)

// Pins: an entry's key is its encoded partition, whether its bytes share
// the entry's allocation (up to 96 bytes) or not.
func TestNewEntry_keys(t *testing.T) {
	t.Parallel()
	for n := 0; n <= 130; n++ {
		k := []byte(strings.Repeat("k", n))
		e := newEntry(k)
		require.Equal(t, string(k), e.key)
		if n > 0 {
			k[0] = 'x' // the entry keeps its own copy
			require.Equal(t, strings.Repeat("k", n), e.key)
		}
	}
}

// Pins: a value fetched with index 0 is stored with index 1, and the next
// blocking fetch is asked for MinIndex 1.
func TestCacheGet_zeroIndexCoercedToOne(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v0", Index: 0}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v3", Index: 3}, nil)
		c.RegisterType("t", typ, nil)

		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v0", v)
		require.Equal(t, ResultMeta{Index: 1}, meta)
		v, meta = requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 1})
		require.Equal(t, "v3", v)
		require.Equal(t, ResultMeta{Index: 3}, meta)
		require.Equal(t, uint64(1), log.opt(1).MinIndex)
		require.Equal(t, &FetchResult{Value: "v0", Index: 1}, log.opt(1).LastResult)
	})
}

// Pins: State is kept and handed back in LastResult; a nil-Value result with
// State and no error updates it, one with an error does not; LastResult is
// nil until there is a valid value.
func TestCacheGet_fetchState(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{State: "s0"}, nil).Once() // rate limited, no value yet
		log.on(typ, nil, FetchResult{Value: "v1", State: "s1", Index: 5}, nil).Once()
		log.on(typ, nil, FetchResult{State: "s2"}, nil).Once()
		log.on(typ, nil, FetchResult{State: "s3"}, errors.New("e")).Once()
		log.on(typ, nil, FetchResult{}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v2", State: "s4", Index: 6}, nil)
		c.RegisterType("t", typ, nil)

		v, _ := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v1", v)
		_, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 5}))
		require.EqualError(t, err, "e")
		v, _ = requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 5})
		require.Equal(t, "v2", v)

		require.Equal(t, 6, log.count())
		want := []*FetchResult{
			nil,
			nil, // State "s0" is kept, but there is no valid value yet
			{Value: "v1", State: "s1", Index: 5},
			{Value: "v1", State: "s2", Index: 5},
			{Value: "v1", State: "s2", Index: 5}, // "s3" came with an error
			{Value: "v1", State: "s2", Index: 5}, // a nil State changes nothing
		}
		for i, w := range want {
			require.Equal(t, w, log.opt(i).LastResult, "fetch %d", i)
		}
	})
}

// ---------------------------------------------------------------------------
// FetchResult.NotModified.

// TestNotModified_valueStaysIndexMoves pins a NotModified answer on a
// blocking type without Refresh, whose first value has index 5: the cached
// value and ResultMeta.Index (5) stay, and the Value sent along is
// ignored; a blocking Get with MinIndex 5 keeps waiting; the next fetch
// blocks on the NotModified's index if it is higher (7), else on 5, and
// gets its State (s2) in LastResult; the value's age restarts from the
// NotModified (a Get with a MaxAge shorter than the time since the first
// fetch is a hit); fetch_not_modified is counted besides fetch_success.
//
// Without NotModified, the Value sent along would replace the cached one
// and release the blocked Get; without the index move the next fetch would
// block on 5; without the freshness renewal the MaxAge Get would miss.
func TestNotModified_valueStaysIndexMoves(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	for _, tc := range []struct {
		index, next uint64 // the NotModified's index, and the next MinIndex
	}{{7, 7}, {5, 5}, {3, 5}} {
		typ := fmt.Sprintf("nm%d", tc.index)
		t.Run(typ, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, release := bubble(t)
				s := newScriptType(true, release)
				c.RegisterType(typ, s, nil)

				first := goGet(c, typ, RequestInfo{Key: "k"})
				s.answer(t, FetchResult{Value: "v1", Index: 5, State: "s1"}, nil)
				r := requireReturned(t, first)
				require.NoError(t, r.Err)
				require.Equal(t, "v1", r.Value)
				require.Equal(t, uint64(5), r.Meta.Index)

				blocked := goGet(c, typ, RequestInfo{Key: "k", MinIndex: 5, Timeout: time.Hour})
				requireBlocked(t, blocked)
				require.Equal(t, 2, s.log.count())
				require.Equal(t, FetchOptions{MinIndex: 5, LastResult: &FetchResult{Value: "v1", State: "s1", Index: 5}}, s.log.opt(1))

				time.Sleep(40 * time.Second)
				s.answer(t, FetchResult{NotModified: true, Value: "ignored", Index: tc.index, State: "s2"}, nil)
				requireBlocked(t, blocked)
				require.Equal(t, 3, s.log.count(), "the blocked Get fetches again")
				require.Equal(t, FetchOptions{MinIndex: tc.next, LastResult: &FetchResult{Value: "v1", State: "s2", Index: tc.next}}, s.log.opt(2))

				// 50 s after the first fetch, 10 s after the NotModified.
				time.Sleep(10 * time.Second)
				r = requireReturned(t, goGet(c, typ, RequestInfo{Key: "k", MaxAge: 30 * time.Second}))
				require.NoError(t, r.Err)
				require.Equal(t, "v1", r.Value)
				require.Equal(t, ResultMeta{Hit: true, Age: 10 * time.Second, Index: 5}, r.Meta)
				require.Equal(t, 3, s.log.count(), "a hit: no fetch")

				require.Equal(t, 1, sinkCounter(sink, "consul.cache."+typ+".fetch_not_modified"))
				require.Equal(t, 2, sinkCounter(sink, "consul.cache."+typ+".fetch_success"))

				s.answer(t, FetchResult{Value: "v2", Index: 8}, nil)
				r = requireReturned(t, blocked)
				require.NoError(t, r.Err)
				require.Equal(t, "v2", r.Value)
				require.Equal(t, uint64(8), r.Meta.Index)
				require.Equal(t, 1, sinkCounter(sink, "consul.cache."+typ+".fetch_not_modified"))
			})
		})
	}
}

// TestNotModified_notifySendsNothing pins that a Notify watch sends no
// event for a NotModified answer, even one carrying a Value (which is
// ignored), and goes on to send the next real change.
//
// Without NotModified, the Value sent along would be a new value at a new
// index, and the watch would send it.
func TestNotModified_notifySendsNothing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		s := newScriptType(true, release)
		c.RegisterType("nm", s, nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		require.NoError(t, c.Notify(ctx, "nm", RequestInfo{Key: "k"}, "id", ch))

		s.answer(t, FetchResult{Value: "v1", Index: 5}, nil)
		ev := recvEvent(t, ch, time.Second)
		require.NoError(t, ev.Err)
		require.Equal(t, "v1", ev.Result)
		require.Equal(t, uint64(5), ev.Meta.Index)

		s.answer(t, FetchResult{NotModified: true, Value: "ignored", Index: 7, State: "s2"}, nil)
		requireNoEvent(t, ch)
		require.Equal(t, 3, s.log.count())
		require.Equal(t, uint64(7), s.log.opt(2).MinIndex)

		s.answer(t, FetchResult{Value: "v2", Index: 8}, nil)
		ev = recvEvent(t, ch, time.Second)
		require.NoError(t, ev.Err)
		require.Equal(t, "v2", ev.Result)
		require.Equal(t, uint64(8), ev.Meta.Index)
		requireNoEvent(t, ch)
	})
}

// TestNotModified_withoutValueIsNoValue pins that a NotModified answer to
// an entry that has no value yet counts as no value, as a nil Value does,
// whether or not it carries a Value (which NotModified says to ignore): a
// Get goes on waiting, and the next fetch is a first fetch (MinIndex 0, no
// LastResult), not one that blocks on the NotModified's index.
//
// Without NotModified, the Value sent along would be stored and returned.
func TestNotModified_withoutValueIsNoValue(t *testing.T) {
	t.Parallel()
	for name, value := range map[string]any{"nil value": nil, "value sent along": "ignored"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var bug string // reported once the bubble has ended
			defer func() {
				if bug != "" {
					t.Fatal(bug)
				}
			}()
			synctest.Test(t, func(t *testing.T) {
				c, release := bubble(t)
				s := newScriptType(true, release)
				c.RegisterType("nm", s, nil)

				ch := goGet(c, "nm", RequestInfo{Key: "k"})
				s.answer(t, FetchResult{NotModified: true, Value: value, Index: 7, State: "s"}, nil)
				if value != nil {
					// Whether the Get returned the ignored value.
					synctest.Wait()
					select {
					case r := <-ch:
						bug = fmt.Sprintf("a NotModified answer without a cached value stored the Value sent along "+
							"(Get returned %v, index %d, err %v); FetchResult.NotModified says Value is ignored "+
							"and that without a cached value it means no value", r.Value, r.Meta.Index, r.Err)
						return
					default:
					}
				}
				requireBlocked(t, ch)
				require.Equal(t, 2, s.log.count(), "no value: the Get fetches again")
				require.Equal(t, FetchOptions{}, s.log.opt(1))

				s.answer(t, FetchResult{Value: "v1", Index: 5}, nil)
				r := requireReturned(t, ch)
				require.NoError(t, r.Err)
				require.Equal(t, "v1", r.Value)
				require.Equal(t, uint64(5), r.Meta.Index)
			})
		})
	}
}

// TestNotModified_bypassIsNoValue pins that a NotModified answer to a Get
// that bypasses the cache (empty Key), which has no cached value, is no
// value: the Value sent along is ignored, as for a nil Value.
//
// Without NotModified the Get would return the Value sent along.
func TestNotModified_bypassIsNoValue(t *testing.T) {
	t.Parallel()
	c := TestCache(t)
	c.RegisterType("nm", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{NotModified: true, Value: "ignored", Index: 7}, nil
	}), nil)
	v, meta, err := c.Get("nm", RequestInfo{})
	require.NoError(t, err)
	require.Equal(t, ResultMeta{}, meta)
	if v != nil {
		t.Fatalf("a bypass Get (empty Key) returned the Value %v of a NotModified answer; "+
			"FetchResult.NotModified says Value is ignored and that without a cached value it means no value", v)
	}
}

// TestNotModified_revalidationCounted pins that a NotModified answer to a
// revalidation (a MaxAge Get served beside the loop's blocking query) is
// handled like any other: the value stays, its freshness is renewed, and
// fetch_not_modified is counted besides fetch_success.
//
// Without NotModified the Value sent along would replace the cached one.
func TestNotModified_revalidationCounted(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	var bug string         // reported once the bubble has ended
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		s, blocked, reval := sideScript(t, c, "nmside", release)
		s.answerFetch(t, 2, FetchResult{NotModified: true, Value: "ignored", Index: 5}, nil)
		r := requireReturned(t, reval)
		require.NoError(t, r.Err)
		require.Equal(t, "v1", r.Value)
		require.Equal(t, uint64(5), r.Meta.Index)
		requireBlocked(t, blocked)

		time.Sleep(20 * time.Second)
		r = requireReturned(t, goGet(c, "nmside", RequestInfo{Key: "k", MaxAge: 30 * time.Second}))
		require.True(t, r.Meta.Hit, "fresh again since the NotModified")
		require.Equal(t, 20*time.Second, r.Meta.Age)

		require.Equal(t, 2, sinkCounter(sink, "consul.cache.nmside.fetch_success"))
		if n := sinkCounter(sink, "consul.cache.nmside.fetch_not_modified"); n != 1 {
			bug = fmt.Sprintf("a NotModified answer to a revalidation (revalidation.run) is not counted as "+
				"fetch_not_modified (count %d, want 1), though FetchResult.NotModified says it is, besides fetch_success", n)
		}
	})
	if bug != "" {
		t.Fatal(bug)
	}
}

// ---------------------------------------------------------------------------
// Closable state.

// stateType returns a Type without blocking whose Fetch of key k
// returns Value "v-"+k and Index 1, and as State the next of states[k]
// (the last one again once they run out; none for a nil one or a key not
// in states).
func stateType(states map[string][]*closableState) FetchFunc {
	var mu sync.Mutex
	used := map[string]int{}
	return func(_ FetchOptions, r Request) (FetchResult, error) {
		k := r.CacheInfo().Key
		res := FetchResult{Value: "v-" + k, Index: 1}
		mu.Lock()
		defer mu.Unlock()
		if sts := states[k]; len(sts) > 0 {
			if st := sts[min(used[k], len(sts)-1)]; st != nil {
				res.State = st
			}
			used[k]++
		}
		return res, nil
	}
}

// TestClosableState_closedOnExpiry pins that an io.Closer state is closed
// once when its entry expires LastGetTTL after the last Get, never while
// hits keep the entry live or while a refresh keeps the same state, and not
// again on Close.
//
// Without closable state, nothing is ever closed.
func TestClosableState_closedOnExpiry(t *testing.T) {
	t.Parallel()
	t.Run("no refresh", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			st := &closableState{name: "s"}
			c.RegisterType("t", stateType(map[string][]*closableState{"k": {st}}), &RegisterOptions{LastGetTTL: time.Hour})
			requireGet(t, c, "t", RequestInfo{Key: "k"})
			time.Sleep(50 * time.Minute)
			_, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.True(t, meta.Hit)
			time.Sleep(59 * time.Minute)
			synctest.Wait()
			require.Equal(t, 0, closeCount(st), "live: hit 59 minutes ago")
			time.Sleep(2 * time.Minute)
			synctest.Wait()
			require.False(t, isCachedKey(c, "t", "k"))
			require.Equal(t, 1, closeCount(st), "closed on expiry")
			require.NoError(t, c.Close())
			require.Equal(t, 1, closeCount(st), "not again on Close")
		})
	})
	t.Run("refresh keeps the state", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			st := &closableState{name: "s"}
			var log fetchLog
			c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
				log.record(mock.Arguments{o, r})
				if o.LastResult == nil {
					return FetchResult{Value: "v", Index: 1, State: st}, nil
				}
				sleep(time.Minute, release) // a blocking query: a change a minute
				return FetchResult{Value: "v", Index: o.MinIndex + 1, State: o.LastResult.State}, nil
			}), &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute, LastGetTTL: time.Hour})
			for i := 0; i < 6; i++ {
				requireGet(t, c, "t", RequestInfo{Key: "k"})
				time.Sleep(30 * time.Minute)
				require.Equal(t, 0, closeCount(st), "live after %d Gets", i+1)
			}
			require.Greater(t, log.count(), 150, "refreshed all along")
			time.Sleep(31 * time.Minute)
			synctest.Wait()
			require.False(t, isCachedKey(c, "t", "k"))
			require.Equal(t, 1, closeCount(st), "closed on expiry")
			n := log.count()
			time.Sleep(time.Hour)
			require.Equal(t, n, log.count(), "the refresh ended with the entry")
			require.Equal(t, 1, closeCount(st))
		})
	})
}

// TestClosableState_closedOnMaxEntriesEviction pins that the state of an
// entry evicted for MaxEntries is closed at once, and only once: not again
// on Close, while the state of the entry that stays is closed by Close.
//
// Without closable state, nothing is ever closed.
func TestClosableState_closedOnMaxEntriesEviction(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, &Options{MaxEntries: 1})
		a, b := &closableState{name: "a"}, &closableState{name: "b"}
		c.RegisterType("t", stateType(map[string][]*closableState{"a": {a}, "b": {b}}), nil)
		requireGet(t, c, "t", RequestInfo{Key: "a"})
		time.Sleep(time.Second)
		requireGet(t, c, "t", RequestInfo{Key: "b"})
		require.False(t, isCachedKey(c, "t", "a"))
		require.Equal(t, 1, closeCount(a), "evicted: closed")
		require.Equal(t, 0, closeCount(b), "live")
		_, meta := requireGet(t, c, "t", RequestInfo{Key: "b"})
		require.True(t, meta.Hit)
		require.Equal(t, 0, closeCount(b))

		require.NoError(t, c.Close())
		require.NoError(t, c.Close())
		require.Equal(t, 1, closeCount(a), "not again on Close")
		require.Equal(t, 1, closeCount(b), "closed once by Close, not by the second one")
	})
}

// TestClosableState_closedOnClose pins that Close closes the state of every
// entry once, whatever the number of Close calls, and that values stay
// served after Close.
//
// Without closable state, nothing is ever closed.
func TestClosableState_closedOnClose(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		sts := map[string][]*closableState{}
		for _, k := range []string{"a", "b", "c"} {
			sts[k] = []*closableState{{name: k}}
		}
		c.RegisterType("t", stateType(sts), nil)
		for k := range sts {
			requireGet(t, c, "t", RequestInfo{Key: k})
		}
		time.Sleep(time.Hour)
		for k, st := range sts {
			require.Equal(t, 0, closeCount(st[0]), "live: %s", k)
		}
		require.NoError(t, c.Close())
		require.NoError(t, c.Close())
		for k, st := range sts {
			require.Equal(t, 1, closeCount(st[0]), "closed once: %s", k)
		}
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "a"})
		require.Equal(t, "v-a", v)
		require.True(t, meta.Hit)
		time.Sleep(100 * time.Hour)
		for k, st := range sts {
			require.Equal(t, 1, closeCount(st[0]), "closed once: %s", k)
		}
	})
}

// TestClosableState_replacedStateNotClosed pins that a state that a later
// fetch replaces while the entry is live is not closed by the cache: the
// Type, which chose to replace it, owns it. A fetch that returns the
// current state again does not make it closed twice either.
//
// With a cache that closed replaced states, s1 would be closed.
func TestClosableState_replacedStateNotClosed(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		s1, s2 := &closableState{name: "s1"}, &closableState{name: "s2"}
		c.RegisterType("t", stateType(map[string][]*closableState{"k": {s1, s2, s2}}), nil)
		requireGet(t, c, "t", RequestInfo{Key: "k"})
		for i := 0; i < 2; i++ { // s2, then s2 again
			time.Sleep(time.Minute)
			_, meta := requireGet(t, c, "t", RequestInfo{Key: "k", MustRevalidate: true})
			require.False(t, meta.Hit)
		}
		require.Equal(t, 0, closeCount(s1))
		require.Equal(t, 0, closeCount(s2))
		require.NoError(t, c.Close())
		require.Equal(t, 0, closeCount(s1), "replaced while live: the Type's")
		require.Equal(t, 1, closeCount(s2))
	})
}

// TestClosableState_fetchFinishingAfterEviction pins that a state stored by
// a fetch that finishes after its entry was evicted is closed as it
// arrives: a refresh fetch of a blocking type takes 90 minutes, and the
// entry, unwatched, expires after an hour. The old state is closed at the
// eviction, the new one when the fetch ends; a fetch that returns the old
// state again does not close it twice. The refresh then stops.
//
// Without closable state nothing is closed; a cache that closed only at
// eviction would leave the late state open.
func TestClosableState_fetchFinishingAfterEviction(t *testing.T) {
	t.Parallel()
	for name, same := range map[string]bool{"new state": false, "same state": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c, release := bubble(t)
				s1, s2 := &closableState{name: "s1"}, &closableState{name: "s2"}
				var log fetchLog
				c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
					log.record(mock.Arguments{o, r})
					if o.LastResult == nil {
						return FetchResult{Value: "v1", Index: 1, State: s1}, nil
					}
					sleep(90*time.Minute, release)
					st := s2
					if same {
						st = o.LastResult.State.(*closableState)
					}
					return FetchResult{Value: "v2", Index: 2, State: st}, nil
				}), &RegisterOptions{Refresh: true, RefreshTimeout: 2 * time.Hour, LastGetTTL: time.Hour})

				requireGet(t, c, "t", RequestInfo{Key: "k"})
				time.Sleep(59 * time.Minute)
				require.True(t, isCachedKey(c, "t", "k"))
				require.Equal(t, 0, closeCount(s1))
				time.Sleep(2 * time.Minute)
				synctest.Wait()
				require.False(t, isCachedKey(c, "t", "k"), "expired with its refresh fetch in flight")
				require.Equal(t, 1, closeCount(s1), "closed on expiry")
				require.Equal(t, 2, log.count())

				time.Sleep(30 * time.Minute) // the fetch ends at 90 minutes
				synctest.Wait()
				require.Equal(t, 1, closeCount(s1), "never twice")
				if !same {
					require.Equal(t, 1, closeCount(s2), "stored after the eviction: closed as it arrived")
				}
				time.Sleep(5 * time.Hour)
				require.NoError(t, c.Close())
				require.Equal(t, 2, log.count(), "no refresh after the eviction")
				require.Equal(t, 1, closeCount(s1))
				require.Equal(t, map[bool]int{false: 1, true: 0}[same], closeCount(s2))
			})
		})
	}
}

// TestClosableState_fetchFinishingAfterClose pins that after Close, a fetch
// in flight that finishes with a new state gets that state closed: a
// refresh fetch (the old state was closed by Close), and a first fetch
// whose Get waited through Close for it.
//
// Without closable state nothing is closed; a cache that closed only the
// states present at Close would leave the late ones open.
func TestClosableState_fetchFinishingAfterClose(t *testing.T) {
	t.Parallel()
	t.Run("refresh fetch", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			gate := make(chan struct{})
			s1, s2 := &closableState{name: "s1"}, &closableState{name: "s2"}
			c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, _ Request) (FetchResult, error) {
				if o.LastResult == nil {
					return FetchResult{Value: "v1", Index: 1, State: s1}, nil
				}
				waitEither(gate, release)
				return FetchResult{Value: "v2", Index: 2, State: s2}, nil
			}), &RegisterOptions{Refresh: true, RefreshTimeout: time.Hour})
			requireGet(t, c, "t", RequestInfo{Key: "k"})
			synctest.Wait()
			require.NoError(t, c.Close())
			require.Equal(t, 1, closeCount(s1))
			require.Equal(t, 0, closeCount(s2))
			close(gate)
			synctest.Wait()
			require.Equal(t, 1, closeCount(s2), "stored after Close: closed as it arrived")
			require.Equal(t, 1, closeCount(s1))
		})
	})
	t.Run("first fetch", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			gate := make(chan struct{})
			st := &closableState{name: "s"}
			c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				waitEither(gate, release)
				return FetchResult{Value: "v", Index: 1, State: st}, nil
			}), nil)
			ch := goGet(c, "t", RequestInfo{Key: "k"})
			requireBlocked(t, ch)
			require.NoError(t, c.Close())
			requireBlocked(t, ch)
			require.Equal(t, 0, closeCount(st))
			close(gate)
			r := requireReturned(t, ch)
			require.NoError(t, r.Err, "a Get in flight at Close gets its fetch's result")
			require.Equal(t, "v", r.Value)
			synctest.Wait()
			require.Equal(t, 1, closeCount(st), "stored after Close: closed as it arrived")
		})
	})
}

// TestClosableState_closeWithoutLocks pins that a state's Close runs
// without the cache's locks held. On expiry and on eviction for MaxEntries,
// Close makes a Get of a missing key in the same shard (its fetch takes the
// expiry lock to enter the expiry heap, its entry the shard lock), a
// revalidating Get of the entry's own key (the entry lock) and a
// Prepopulate; on Close, where those return ErrClosed before taking a
// lock, it calls ReloadOptions with a new rate (which takes every entry's
// lock) and MaxEntries 1 (which takes the expiry lock and evicts, under a
// shard lock, the older of the two entries, without closing its state
// again).
//
// Called under the locks, Close would deadlock: the watchdog then fails the
// test with every goroutine's stack.
func TestClosableState_closeWithoutLocks(t *testing.T) {
	t.Parallel()
	for _, trigger := range []string{"expiry", "eviction", "close"} {
		t.Run(trigger, func(t *testing.T) {
			t.Parallel()
			watchdog(t, time.Minute)
			synctest.Test(t, func(t *testing.T) {
				opts := &Options{}
				if trigger == "eviction" {
					opts.MaxEntries = 1
				}
				c, _ := newCache(t, opts)
				other, pre := sameShardKey(c, "k", "other"), sameShardKey(c, "k", "pre")
				var mu sync.Mutex
				var got []any
				st := &closableState{name: "s"}
				st.onClose = func() {
					var out []any
					v, _, err := c.Get("t", RequestInfo{Key: other})
					out = append(out, v, err)
					v, _, err = c.Get("t", RequestInfo{Key: "k", MustRevalidate: true})
					out = append(out, v, err)
					out = append(out, c.Prepopulate("t", FetchResult{Value: "pre", Index: 3}, "", "", pre))
					if trigger == "close" {
						out = append(out, c.ReloadOptions(Options{EntryFetchRate: 1, MaxEntries: 1}))
					}
					mu.Lock()
					defer mu.Unlock()
					got = append(got, out...)
				}
				c.RegisterType("t", stateType(map[string][]*closableState{"k": {st, nil}}), &RegisterOptions{LastGetTTL: time.Hour})
				requireGet(t, c, "t", RequestInfo{Key: "k"})

				want := []any{"v-" + other, nil, "v-k", nil, nil}
				switch trigger {
				case "expiry":
					time.Sleep(61 * time.Minute)
				case "eviction":
					requireGet(t, c, "t", RequestInfo{Key: "k2"})
				case "close":
					time.Sleep(time.Second) // k, older, is the one MaxEntries evicts
					requireGet(t, c, "t", RequestInfo{Key: sameShardKey(c, "k", "k")})
					require.NoError(t, c.Close())
					want = []any{nil, ErrClosed, "v-k", ErrClosed, ErrClosed, true}
				}
				synctest.Wait()
				require.Equal(t, 1, closeCount(st))
				mu.Lock()
				defer mu.Unlock()
				require.Equal(t, want, got)
				if trigger == "close" {
					require.Equal(t, int64(1), c.count.Load(), "MaxEntries applied after Close")
					require.False(t, isCachedKey(c, "t", "k"), "k evicted after Close")
				}
			})
		})
	}
}

// TestClosableState_closePanicsOrFails pins that a state whose Close panics
// or returns an error crashes nothing: the panic and the error are logged
// with the entry's key, the expiry loop goes on expiring entries, and Close
// of the cache returns nil.
//
// Without the recovery, the panic would take the test binary down.
func TestClosableState_closePanicsOrFails(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var logs logBuf
		c, _ := newCache(t, &Options{Logger: logs.logger()})
		sp := &closableState{name: "panics", panicV: "close boom"}
		se := &closableState{name: "fails", err: errors.New("close failed")}
		sc := &closableState{name: "panics at Close", panicV: "boom at Close"}
		c.RegisterType("t", stateType(map[string][]*closableState{"p": {sp}, "e": {se}, "c": {sc}}), &RegisterOptions{LastGetTTL: time.Hour})
		requireGet(t, c, "t", RequestInfo{Key: "p"})
		requireGet(t, c, "t", RequestInfo{Key: "e"})
		time.Sleep(30 * time.Minute)
		requireGet(t, c, "t", RequestInfo{Key: "c"})
		requireGet(t, c, "t", RequestInfo{Key: "x"})
		time.Sleep(31 * time.Minute)
		synctest.Wait()
		require.Equal(t, 1, closeCount(sp))
		require.Equal(t, 1, closeCount(se))
		require.Len(t, logs.lines(`msg="cache: closing an entry's state panicked"`, "key=p", `panic="close boom"`), 1)
		require.Len(t, logs.lines(`msg="cache: closing an entry's state failed"`, "key=e", `error="close failed"`), 1)

		// The expiry loop survived: x still expires, and c, kept live, not.
		_, meta := requireGet(t, c, "t", RequestInfo{Key: "c"})
		require.True(t, meta.Hit)
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		require.False(t, isCachedKey(c, "t", "x"))
		require.True(t, isCachedKey(c, "t", "c"))
		require.Equal(t, 0, closeCount(sc))

		require.NotPanics(t, func() { require.NoError(t, c.Close()) })
		require.Equal(t, 1, closeCount(sc))
		require.Len(t, logs.lines(`msg="cache: closing an entry's state panicked"`, "key=c", `panic="boom at Close"`), 1)
		require.Len(t, logs.lines(`msg="cache: closing an entry's state`), 3)
	})
}

// closableState is a Type's per-entry state that counts its Close calls. Close
// runs onClose (if set), then panics with panicV (if set) or returns err.
type closableState struct {
	name    string
	closes  atomic.Int32
	onClose func()
	panicV  any
	err     error
}

func (s *closableState) Close() error {
	s.closes.Add(1)
	if s.onClose != nil {
		s.onClose()
	}
	if s.panicV != nil {
		panic(s.panicV)
	}
	return s.err
}

// closeCount returns how many times st was closed.
func closeCount(st *closableState) int { return int(st.closes.Load()) }

// watchdog, called outside the bubble, panics with every goroutine's
// stack if the test has not ended within d of real time. Goroutines stuck
// on a mutex are not durably blocked, so a deadlock inside a synctest
// bubble would otherwise hang until go test's -timeout.
func watchdog(t *testing.T, d time.Duration) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-done:
		case <-timer.C:
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			panic(fmt.Sprintf("%s: not over within %v: deadlock?\n%s", t.Name(), d, buf[:n]))
		}
	}()
}

// sameShardKey returns a key, made of prefix and a number, whose entry of
// type "t" lives in the same shard of c as key's: creating or evicting it
// takes the lock that key's shard writers take.
func sameShardKey(c *Cache, key, prefix string) string {
	want := c.makeKey(nil, "t", "", "", key).shard()
	for i := 0; ; i++ {
		k := fmt.Sprint(prefix, i)
		if c.makeKey(nil, "t", "", "", k).shard() == want {
			return k
		}
	}
}
