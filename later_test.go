package cache

// Tests of NotModified results, closable per-entry state, StopRefresh,
// RegisterOptions.RefreshMaxFailures and Cache.ReloadOptions. Each test's
// comment says what it pins and how it would fail without the feature.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	metrics "github.com/armon/go-metrics"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// laterStep is the answer the test gives one Fetch of a laterScript.
type laterStep struct {
	fr  FetchResult
	err error
}

// laterScript is a Type whose every Fetch records its options and (fake)
// start time in log, then waits for the test to answer it (see answer and
// answerFetch), or for release, which ends it with an error.
type laterScript struct {
	blocking bool
	log      cacheFetchLog
	release  <-chan struct{}

	mu      sync.Mutex
	pending map[int]chan laterStep // by fetch number, from 0
}

func newLaterScript(blocking bool, release <-chan struct{}) *laterScript {
	return &laterScript{blocking: blocking, release: release, pending: map[int]chan laterStep{}}
}

func (s *laterScript) Fetch(o FetchOptions, r Request) (FetchResult, error) {
	ch := make(chan laterStep, 1)
	s.mu.Lock()
	s.log.record(mock.Arguments{o, r})
	s.pending[s.log.count()-1] = ch
	s.mu.Unlock()
	select {
	case st := <-ch:
		return st.fr, st.err
	case <-s.release:
		return FetchResult{}, errors.New("released")
	}
}

func (s *laterScript) SupportsBlocking() bool { return s.blocking }

// answer (in a bubble) hands fr and err to the one Fetch waiting for its
// answer, failing unless exactly one is once the bubble is idle, and then
// lets the bubble settle, so that the outcome is published on return.
func (s *laterScript) answer(t *testing.T, fr FetchResult, err error) {
	t.Helper()
	synctest.Wait()
	s.mu.Lock()
	i := -1
	for n := range s.pending {
		i = n
	}
	waiting := len(s.pending)
	s.mu.Unlock()
	if waiting != 1 {
		t.Fatalf("%d Fetches waiting for an answer, want 1 (%d fetches so far)", waiting, s.log.count())
	}
	s.answerFetch(t, i, fr, err)
}

// answerFetch is answer for fetch number i (from 0), when more than one
// waits.
func (s *laterScript) answerFetch(t *testing.T, i int, fr FetchResult, err error) {
	t.Helper()
	synctest.Wait()
	s.mu.Lock()
	ch, ok := s.pending[i]
	delete(s.pending, i)
	s.mu.Unlock()
	if !ok {
		t.Fatalf("fetch %d is not waiting for an answer (%d fetches so far)", i+1, s.log.count())
	}
	ch <- laterStep{fr, err}
	synctest.Wait()
}

// laterState is a Type's per-entry state that counts its Close calls. Close
// runs onClose (if set), then panics with panicV (if set) or returns err.
type laterState struct {
	name    string
	closes  atomic.Int32
	onClose func()
	panicV  any
	err     error
}

func (s *laterState) Close() error {
	s.closes.Add(1)
	if s.onClose != nil {
		s.onClose()
	}
	if s.panicV != nil {
		panic(s.panicV)
	}
	return s.err
}

// laterClosed returns how many times st was closed.
func laterClosed(st *laterState) int { return int(st.closes.Load()) }

// laterErr is an error type for errors.As.
type laterErr struct{ msg string }

func (e *laterErr) Error() string { return e.msg }

// laterSleep sleeps d, or less if release is closed first.
func laterSleep(d time.Duration, release <-chan struct{}) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-release:
	}
}

// laterLog is a goroutine-safe buffer behind a slog text logger.
type laterLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *laterLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the logged lines that contain every one of parts.
func (l *laterLog) lines(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func (l *laterLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// laterMetrics returns a go-metrics instance of its own (not the global
// one, so that the test may run in parallel) reporting to an InmemSink
// whose interval never rotates.
func laterMetrics(t *testing.T) (*metrics.Metrics, *metrics.InmemSink) {
	t.Helper()
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	sink := metrics.NewInmemSink(1<<62, 1<<62)
	m, err := metrics.New(cfg, sink)
	require.NoError(t, err)
	return m, sink
}

// laterSameShard returns a key, made of prefix and a number, whose entry of
// type "t" lives in the same shard of c as key's: creating or evicting it
// takes the lock that key's shard writers take.
func laterSameShard(c *Cache, key, prefix string) string {
	want := c.makeKey(nil, "t", "", "", key).shard()
	for i := 0; ; i++ {
		k := fmt.Sprint(prefix, i)
		if c.makeKey(nil, "t", "", "", k).shard() == want {
			return k
		}
	}
}

// laterWatchdog, called outside the bubble, panics with every goroutine's
// stack if the test has not ended within d of real time. Goroutines stuck
// on a mutex are not durably blocked, so a deadlock inside a synctest
// bubble would otherwise hang until go test's -timeout.
func laterWatchdog(t *testing.T, d time.Duration) {
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

// laterBackOffBase is the documented least back-off after n failures in a
// row: none up to CacheRefreshBackoffMin, then 2 s, doubling up to
// CacheRefreshMaxWait. The wait itself adds a stagger below the base.
func laterBackOffBase(n int) time.Duration {
	if n <= CacheRefreshBackoffMin {
		return 0
	}
	if shift := n - CacheRefreshBackoffMin; shift < 6 {
		return min(time.Duration(1<<shift)*time.Second, CacheRefreshMaxWait)
	}
	return CacheRefreshMaxWait
}

// laterRequireBackOff checks that times, the start times of instant
// failing fetches in a row, follow the back-off schedule: fetch i+1 starts
// between the base back-off after i failures and twice that after fetch i.
func laterRequireBackOff(t *testing.T, times []time.Time) {
	t.Helper()
	for i := 1; i < len(times); i++ {
		wait, base := times[i].Sub(times[i-1]), laterBackOffBase(i)
		if base == 0 {
			require.Equal(t, time.Duration(0), wait, "wait before failing fetch %d", i+1)
			continue
		}
		require.GreaterOrEqual(t, wait, base, "wait before failing fetch %d", i+1)
		require.Less(t, wait, 2*base, "wait before failing fetch %d", i+1)
	}
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
	sink := cacheInstallSink(t) // metrics: not parallel
	for _, tc := range []struct {
		index, next uint64 // the NotModified's index, and the next MinIndex
	}{{7, 7}, {5, 5}, {3, 5}} {
		typ := fmt.Sprintf("nm%d", tc.index)
		t.Run(typ, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, release := cacheBubble(t)
				s := newLaterScript(true, release)
				c.RegisterType(typ, s, nil)

				first := cacheGoGet(c, typ, RequestInfo{Key: "k"})
				s.answer(t, FetchResult{Value: "v1", Index: 5, State: "s1"}, nil)
				r := cacheRequireReturned(t, first)
				require.NoError(t, r.Err)
				require.Equal(t, "v1", r.Value)
				require.Equal(t, uint64(5), r.Meta.Index)

				blocked := cacheGoGet(c, typ, RequestInfo{Key: "k", MinIndex: 5, Timeout: time.Hour})
				cacheRequireBlocked(t, blocked)
				require.Equal(t, 2, s.log.count())
				require.Equal(t, FetchOptions{MinIndex: 5, LastResult: &FetchResult{Value: "v1", State: "s1", Index: 5}}, s.log.opt(1))

				time.Sleep(40 * time.Second)
				s.answer(t, FetchResult{NotModified: true, Value: "ignored", Index: tc.index, State: "s2"}, nil)
				cacheRequireBlocked(t, blocked)
				require.Equal(t, 3, s.log.count(), "the blocked Get fetches again")
				require.Equal(t, FetchOptions{MinIndex: tc.next, LastResult: &FetchResult{Value: "v1", State: "s2", Index: tc.next}}, s.log.opt(2))

				// 50 s after the first fetch, 10 s after the NotModified.
				time.Sleep(10 * time.Second)
				r = cacheRequireReturned(t, cacheGoGet(c, typ, RequestInfo{Key: "k", MaxAge: 30 * time.Second}))
				require.NoError(t, r.Err)
				require.Equal(t, "v1", r.Value)
				require.Equal(t, ResultMeta{Hit: true, Age: 10 * time.Second, Index: 5}, r.Meta)
				require.Equal(t, 3, s.log.count(), "a hit: no fetch")

				require.Equal(t, 1, cacheCounter(sink, "consul.cache."+typ+".fetch_not_modified"))
				require.Equal(t, 2, cacheCounter(sink, "consul.cache."+typ+".fetch_success"))

				s.answer(t, FetchResult{Value: "v2", Index: 8}, nil)
				r = cacheRequireReturned(t, blocked)
				require.NoError(t, r.Err)
				require.Equal(t, "v2", r.Value)
				require.Equal(t, uint64(8), r.Meta.Index)
				require.Equal(t, 1, cacheCounter(sink, "consul.cache."+typ+".fetch_not_modified"))
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
		c, release := cacheBubble(t)
		s := newLaterScript(true, release)
		c.RegisterType("nm", s, nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		require.NoError(t, c.Notify(ctx, "nm", RequestInfo{Key: "k"}, "id", ch))

		s.answer(t, FetchResult{Value: "v1", Index: 5}, nil)
		ev := notifyRecv(t, ch, time.Second)
		require.NoError(t, ev.Err)
		require.Equal(t, "v1", ev.Result)
		require.Equal(t, uint64(5), ev.Meta.Index)

		s.answer(t, FetchResult{NotModified: true, Value: "ignored", Index: 7, State: "s2"}, nil)
		notifyNoEvent(t, ch)
		require.Equal(t, 3, s.log.count())
		require.Equal(t, uint64(7), s.log.opt(2).MinIndex)

		s.answer(t, FetchResult{Value: "v2", Index: 8}, nil)
		ev = notifyRecv(t, ch, time.Second)
		require.NoError(t, ev.Err)
		require.Equal(t, "v2", ev.Result)
		require.Equal(t, uint64(8), ev.Meta.Index)
		notifyNoEvent(t, ch)
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
				c, release := cacheBubble(t)
				s := newLaterScript(true, release)
				c.RegisterType("nm", s, nil)

				ch := cacheGoGet(c, "nm", RequestInfo{Key: "k"})
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
				cacheRequireBlocked(t, ch)
				require.Equal(t, 2, s.log.count(), "no value: the Get fetches again")
				require.Equal(t, FetchOptions{}, s.log.opt(1))

				s.answer(t, FetchResult{Value: "v1", Index: 5}, nil)
				r := cacheRequireReturned(t, ch)
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

// laterSideScript starts, in a bubble, an entry of a blocking type without
// Refresh (value v1 at index 5) with a blocking Get in the loop's blocking
// query (fetch 2) and, a minute later, a MaxAge Get that revalidates beside
// it (fetch 3, waiting for its answer). It returns the script and the two
// Gets.
func laterSideScript(t *testing.T, c *Cache, typ string, release <-chan struct{}) (s *laterScript, blocked, reval <-chan cacheGetResult) {
	t.Helper()
	s = newLaterScript(true, release)
	c.RegisterType(typ, s, nil)
	first := cacheGoGet(c, typ, RequestInfo{Key: "k"})
	s.answer(t, FetchResult{Value: "v1", Index: 5}, nil)
	require.Equal(t, "v1", cacheRequireReturned(t, first).Value)
	blocked = cacheGoGet(c, typ, RequestInfo{Key: "k", MinIndex: 5})
	cacheRequireBlocked(t, blocked)

	time.Sleep(time.Minute)
	reval = cacheGoGet(c, typ, RequestInfo{Key: "k", MaxAge: 30 * time.Second})
	cacheRequireBlocked(t, reval)
	require.Equal(t, 3, s.log.count(), "a revalidation beside the blocking query")
	require.Equal(t, uint64(0), s.log.opt(2).MinIndex)
	return s, blocked, reval
}

// TestNotModified_revalidationCounted pins that a NotModified answer to a
// revalidation (a MaxAge Get served beside the loop's blocking query) is
// handled like any other: the value stays, its freshness is renewed, and
// fetch_not_modified is counted besides fetch_success.
//
// Without NotModified the Value sent along would replace the cached one.
func TestNotModified_revalidationCounted(t *testing.T) {
	sink := cacheInstallSink(t) // metrics: not parallel
	var bug string              // reported once the bubble has ended
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		s, blocked, reval := laterSideScript(t, c, "nmside", release)
		s.answerFetch(t, 2, FetchResult{NotModified: true, Value: "ignored", Index: 5}, nil)
		r := cacheRequireReturned(t, reval)
		require.NoError(t, r.Err)
		require.Equal(t, "v1", r.Value)
		require.Equal(t, uint64(5), r.Meta.Index)
		cacheRequireBlocked(t, blocked)

		time.Sleep(20 * time.Second)
		r = cacheRequireReturned(t, cacheGoGet(c, "nmside", RequestInfo{Key: "k", MaxAge: 30 * time.Second}))
		require.True(t, r.Meta.Hit, "fresh again since the NotModified")
		require.Equal(t, 20*time.Second, r.Meta.Age)

		require.Equal(t, 2, cacheCounter(sink, "consul.cache.nmside.fetch_success"))
		if n := cacheCounter(sink, "consul.cache.nmside.fetch_not_modified"); n != 1 {
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

// laterStateType returns a Type without blocking whose Fetch of key k
// returns Value "v-"+k and Index 1, and as State the next of states[k]
// (the last one again once they run out; none for a nil one or a key not
// in states).
func laterStateType(states map[string][]*laterState) FetchFunc {
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
			c, _ := cacheBubble(t)
			st := &laterState{name: "s"}
			c.RegisterType("t", laterStateType(map[string][]*laterState{"k": {st}}), &RegisterOptions{LastGetTTL: time.Hour})
			cacheGet(t, c, "t", RequestInfo{Key: "k"})
			time.Sleep(50 * time.Minute)
			_, meta := cacheGet(t, c, "t", RequestInfo{Key: "k"})
			require.True(t, meta.Hit)
			time.Sleep(59 * time.Minute)
			synctest.Wait()
			require.Equal(t, 0, laterClosed(st), "live: hit 59 minutes ago")
			time.Sleep(2 * time.Minute)
			synctest.Wait()
			require.False(t, limitsCached(c, "t", "k"))
			require.Equal(t, 1, laterClosed(st), "closed on expiry")
			require.NoError(t, c.Close())
			require.Equal(t, 1, laterClosed(st), "not again on Close")
		})
	})
	t.Run("refresh keeps the state", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			c, release := cacheBubble(t)
			st := &laterState{name: "s"}
			var log cacheFetchLog
			c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
				log.record(mock.Arguments{o, r})
				if o.LastResult == nil {
					return FetchResult{Value: "v", Index: 1, State: st}, nil
				}
				laterSleep(time.Minute, release) // a blocking query: a change a minute
				return FetchResult{Value: "v", Index: o.MinIndex + 1, State: o.LastResult.State}, nil
			}), &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute, LastGetTTL: time.Hour})
			for i := 0; i < 6; i++ {
				cacheGet(t, c, "t", RequestInfo{Key: "k"})
				time.Sleep(30 * time.Minute)
				require.Equal(t, 0, laterClosed(st), "live after %d Gets", i+1)
			}
			require.Greater(t, log.count(), 150, "refreshed all along")
			time.Sleep(31 * time.Minute)
			synctest.Wait()
			require.False(t, limitsCached(c, "t", "k"))
			require.Equal(t, 1, laterClosed(st), "closed on expiry")
			n := log.count()
			time.Sleep(time.Hour)
			require.Equal(t, n, log.count(), "the refresh ended with the entry")
			require.Equal(t, 1, laterClosed(st))
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
		c, _ := limitsBubble(t, &Options{MaxEntries: 1})
		a, b := &laterState{name: "a"}, &laterState{name: "b"}
		c.RegisterType("t", laterStateType(map[string][]*laterState{"a": {a}, "b": {b}}), nil)
		cacheGet(t, c, "t", RequestInfo{Key: "a"})
		time.Sleep(time.Second)
		cacheGet(t, c, "t", RequestInfo{Key: "b"})
		require.False(t, limitsCached(c, "t", "a"))
		require.Equal(t, 1, laterClosed(a), "evicted: closed")
		require.Equal(t, 0, laterClosed(b), "live")
		_, meta := cacheGet(t, c, "t", RequestInfo{Key: "b"})
		require.True(t, meta.Hit)
		require.Equal(t, 0, laterClosed(b))

		require.NoError(t, c.Close())
		require.NoError(t, c.Close())
		require.Equal(t, 1, laterClosed(a), "not again on Close")
		require.Equal(t, 1, laterClosed(b), "closed once by Close, not by the second one")
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
		c, _ := cacheBubble(t)
		sts := map[string][]*laterState{}
		for _, k := range []string{"a", "b", "c"} {
			sts[k] = []*laterState{{name: k}}
		}
		c.RegisterType("t", laterStateType(sts), nil)
		for k := range sts {
			cacheGet(t, c, "t", RequestInfo{Key: k})
		}
		time.Sleep(time.Hour)
		for k, st := range sts {
			require.Equal(t, 0, laterClosed(st[0]), "live: %s", k)
		}
		require.NoError(t, c.Close())
		require.NoError(t, c.Close())
		for k, st := range sts {
			require.Equal(t, 1, laterClosed(st[0]), "closed once: %s", k)
		}
		v, meta := cacheGet(t, c, "t", RequestInfo{Key: "a"})
		require.Equal(t, "v-a", v)
		require.True(t, meta.Hit)
		time.Sleep(100 * time.Hour)
		for k, st := range sts {
			require.Equal(t, 1, laterClosed(st[0]), "closed once: %s", k)
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
		c, _ := cacheBubble(t)
		s1, s2 := &laterState{name: "s1"}, &laterState{name: "s2"}
		c.RegisterType("t", laterStateType(map[string][]*laterState{"k": {s1, s2, s2}}), nil)
		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		for i := 0; i < 2; i++ { // s2, then s2 again
			time.Sleep(time.Minute)
			_, meta := cacheGet(t, c, "t", RequestInfo{Key: "k", MustRevalidate: true})
			require.False(t, meta.Hit)
		}
		require.Equal(t, 0, laterClosed(s1))
		require.Equal(t, 0, laterClosed(s2))
		require.NoError(t, c.Close())
		require.Equal(t, 0, laterClosed(s1), "replaced while live: the Type's")
		require.Equal(t, 1, laterClosed(s2))
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
				c, release := cacheBubble(t)
				s1, s2 := &laterState{name: "s1"}, &laterState{name: "s2"}
				var log cacheFetchLog
				c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
					log.record(mock.Arguments{o, r})
					if o.LastResult == nil {
						return FetchResult{Value: "v1", Index: 1, State: s1}, nil
					}
					laterSleep(90*time.Minute, release)
					st := s2
					if same {
						st = o.LastResult.State.(*laterState)
					}
					return FetchResult{Value: "v2", Index: 2, State: st}, nil
				}), &RegisterOptions{Refresh: true, RefreshTimeout: 2 * time.Hour, LastGetTTL: time.Hour})

				cacheGet(t, c, "t", RequestInfo{Key: "k"})
				time.Sleep(59 * time.Minute)
				require.True(t, limitsCached(c, "t", "k"))
				require.Equal(t, 0, laterClosed(s1))
				time.Sleep(2 * time.Minute)
				synctest.Wait()
				require.False(t, limitsCached(c, "t", "k"), "expired with its refresh fetch in flight")
				require.Equal(t, 1, laterClosed(s1), "closed on expiry")
				require.Equal(t, 2, log.count())

				time.Sleep(30 * time.Minute) // the fetch ends at 90 minutes
				synctest.Wait()
				require.Equal(t, 1, laterClosed(s1), "never twice")
				if !same {
					require.Equal(t, 1, laterClosed(s2), "stored after the eviction: closed as it arrived")
				}
				time.Sleep(5 * time.Hour)
				require.NoError(t, c.Close())
				require.Equal(t, 2, log.count(), "no refresh after the eviction")
				require.Equal(t, 1, laterClosed(s1))
				require.Equal(t, map[bool]int{false: 1, true: 0}[same], laterClosed(s2))
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
			c, release := cacheBubble(t)
			gate := make(chan struct{})
			s1, s2 := &laterState{name: "s1"}, &laterState{name: "s2"}
			c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, _ Request) (FetchResult, error) {
				if o.LastResult == nil {
					return FetchResult{Value: "v1", Index: 1, State: s1}, nil
				}
				limitsUntilEither(gate, release)
				return FetchResult{Value: "v2", Index: 2, State: s2}, nil
			}), &RegisterOptions{Refresh: true, RefreshTimeout: time.Hour})
			cacheGet(t, c, "t", RequestInfo{Key: "k"})
			synctest.Wait()
			require.NoError(t, c.Close())
			require.Equal(t, 1, laterClosed(s1))
			require.Equal(t, 0, laterClosed(s2))
			close(gate)
			synctest.Wait()
			require.Equal(t, 1, laterClosed(s2), "stored after Close: closed as it arrived")
			require.Equal(t, 1, laterClosed(s1))
		})
	})
	t.Run("first fetch", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			c, release := cacheBubble(t)
			gate := make(chan struct{})
			st := &laterState{name: "s"}
			c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				limitsUntilEither(gate, release)
				return FetchResult{Value: "v", Index: 1, State: st}, nil
			}), nil)
			ch := cacheGoGet(c, "t", RequestInfo{Key: "k"})
			cacheRequireBlocked(t, ch)
			require.NoError(t, c.Close())
			cacheRequireBlocked(t, ch)
			require.Equal(t, 0, laterClosed(st))
			close(gate)
			r := cacheRequireReturned(t, ch)
			require.NoError(t, r.Err, "a Get in flight at Close gets its fetch's result")
			require.Equal(t, "v", r.Value)
			synctest.Wait()
			require.Equal(t, 1, laterClosed(st), "stored after Close: closed as it arrived")
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
			laterWatchdog(t, time.Minute)
			synctest.Test(t, func(t *testing.T) {
				opts := &Options{}
				if trigger == "eviction" {
					opts.MaxEntries = 1
				}
				c, _ := limitsBubble(t, opts)
				other, pre := laterSameShard(c, "k", "other"), laterSameShard(c, "k", "pre")
				var mu sync.Mutex
				var got []any
				st := &laterState{name: "s"}
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
				c.RegisterType("t", laterStateType(map[string][]*laterState{"k": {st, nil}}), &RegisterOptions{LastGetTTL: time.Hour})
				cacheGet(t, c, "t", RequestInfo{Key: "k"})

				want := []any{"v-" + other, nil, "v-k", nil, nil}
				switch trigger {
				case "expiry":
					time.Sleep(61 * time.Minute)
				case "eviction":
					cacheGet(t, c, "t", RequestInfo{Key: "k2"})
				case "close":
					time.Sleep(time.Second) // k, older, is the one MaxEntries evicts
					cacheGet(t, c, "t", RequestInfo{Key: laterSameShard(c, "k", "k")})
					require.NoError(t, c.Close())
					want = []any{nil, ErrClosed, "v-k", ErrClosed, ErrClosed, true}
				}
				synctest.Wait()
				require.Equal(t, 1, laterClosed(st))
				mu.Lock()
				defer mu.Unlock()
				require.Equal(t, want, got)
				if trigger == "close" {
					require.Equal(t, int64(1), c.count.Load(), "MaxEntries applied after Close")
					require.False(t, limitsCached(c, "t", "k"), "k evicted after Close")
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
		var logs laterLog
		c, _ := limitsBubble(t, &Options{Logger: logs.logger()})
		sp := &laterState{name: "panics", panicV: "close boom"}
		se := &laterState{name: "fails", err: errors.New("close failed")}
		sc := &laterState{name: "panics at Close", panicV: "boom at Close"}
		c.RegisterType("t", laterStateType(map[string][]*laterState{"p": {sp}, "e": {se}, "c": {sc}}), &RegisterOptions{LastGetTTL: time.Hour})
		cacheGet(t, c, "t", RequestInfo{Key: "p"})
		cacheGet(t, c, "t", RequestInfo{Key: "e"})
		time.Sleep(30 * time.Minute)
		cacheGet(t, c, "t", RequestInfo{Key: "c"})
		cacheGet(t, c, "t", RequestInfo{Key: "x"})
		time.Sleep(31 * time.Minute)
		synctest.Wait()
		require.Equal(t, 1, laterClosed(sp))
		require.Equal(t, 1, laterClosed(se))
		require.Len(t, logs.lines(`msg="cache: closing an entry's state panicked"`, "key=p", `panic="close boom"`), 1)
		require.Len(t, logs.lines(`msg="cache: closing an entry's state failed"`, "key=e", `error="close failed"`), 1)

		// The expiry loop survived: x still expires, and c, kept live, not.
		_, meta := cacheGet(t, c, "t", RequestInfo{Key: "c"})
		require.True(t, meta.Hit)
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		require.False(t, limitsCached(c, "t", "x"))
		require.True(t, limitsCached(c, "t", "c"))
		require.Equal(t, 0, laterClosed(sc))

		require.NotPanics(t, func() { require.NoError(t, c.Close()) })
		require.Equal(t, 1, laterClosed(sc))
		require.Len(t, logs.lines(`msg="cache: closing an entry's state panicked"`, "key=c", `panic="boom at Close"`), 1)
		require.Len(t, logs.lines(`msg="cache: closing an entry's state`), 3)
	})
}

// ---------------------------------------------------------------------------
// StopRefresh.

// TestStopRefresh_wrapper pins StopRefresh's error: nil for nil, the same
// message, and errors.Is and errors.As see the wrapped error (and what it
// wraps) through it.
//
// Without StopRefresh's Unwrap, errors.Is and errors.As would not see the
// Type's error.
func TestStopRefresh_wrapper(t *testing.T) {
	t.Parallel()
	require.Nil(t, StopRefresh(nil))
	require.True(t, StopRefresh(nil) == nil, "an untyped nil, not a nil pointer in an interface")
	base := &laterErr{"token deleted"}
	wrapped := fmt.Errorf("rpc: %w", base)
	err := StopRefresh(wrapped)
	require.EqualError(t, err, "rpc: token deleted")
	require.ErrorIs(t, err, wrapped)
	require.ErrorIs(t, err, base)
	var le *laterErr
	require.ErrorAs(t, err, &le)
	require.Same(t, base, le)
	require.True(t, isStopRefresh(fmt.Errorf("more: %w", err)))
	require.False(t, isStopRefresh(wrapped))
}

// TestStopRefresh_stopsRefresh pins a refresh fetch that returns
// StopRefresh(errX): the blocking Get waiting for it gets the error, which
// errors.Is and errors.As see through, with the cached value;
// fetch_error_terminal is counted besides fetch_error; no fetch happens
// for hours; the value stays cached; the next Get is not a hit, fetches,
// and once that succeeds the refresh goes on.
//
// Without StopRefresh the refresh would retry the error at once.
func TestStopRefresh_stopsRefresh(t *testing.T) {
	sink := cacheInstallSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		s := newLaterScript(true, release)
		c.RegisterType("stop", s, &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute, LastGetTTL: 24 * time.Hour})

		first := cacheGoGet(c, "stop", RequestInfo{Key: "k"})
		s.answer(t, FetchResult{Value: "v1", Index: 1}, nil)
		require.Equal(t, "v1", cacheRequireReturned(t, first).Value)
		require.Equal(t, 2, s.log.count(), "the refresh's blocking query")
		blocked := cacheGoGet(c, "stop", RequestInfo{Key: "k", MinIndex: 1, Timeout: time.Hour})
		cacheRequireBlocked(t, blocked)

		errX := &laterErr{"ACL not found"}
		s.answer(t, FetchResult{}, StopRefresh(errX))
		r := cacheRequireReturned(t, blocked)
		require.ErrorIs(t, r.Err, errX)
		var target *laterErr
		require.ErrorAs(t, r.Err, &target)
		require.Same(t, errX, target)
		require.EqualError(t, r.Err, "ACL not found")
		require.Equal(t, "v1", r.Value, "the cached value comes with the error")
		require.Equal(t, uint64(1), r.Meta.Index)
		require.Equal(t, 1, cacheCounter(sink, "consul.cache.stop.fetch_error_terminal"))
		require.Equal(t, 1, cacheCounter(sink, "consul.cache.stop.fetch_error"))
		require.Equal(t, 1, cacheCounter(sink, "consul.cache.fetch_error"))

		time.Sleep(5 * time.Hour)
		synctest.Wait()
		require.Equal(t, 2, s.log.count(), "no fetch after StopRefresh")
		require.True(t, limitsCached(c, "stop", "k"), "the value stays until its TTL")

		next := cacheGoGet(c, "stop", RequestInfo{Key: "k"})
		cacheRequireBlocked(t, next)
		require.Equal(t, 3, s.log.count(), "the next Get fetches")
		require.Equal(t, uint64(1), s.log.opt(2).MinIndex)
		s.answer(t, FetchResult{Value: "v2", Index: 2}, nil)
		r = cacheRequireReturned(t, next)
		require.NoError(t, r.Err)
		require.Equal(t, "v2", r.Value)
		require.False(t, r.Meta.Hit)

		require.Equal(t, 4, s.log.count(), "the refresh resumed")
		require.Equal(t, uint64(2), s.log.opt(3).MinIndex)
		s.answer(t, FetchResult{Value: "v3", Index: 3}, nil)
		require.Equal(t, 5, s.log.count())
		v, meta := cacheGet(t, c, "stop", RequestInfo{Key: "k"})
		require.Equal(t, "v3", v)
		require.True(t, meta.Hit)
		require.Equal(t, 1, cacheCounter(sink, "consul.cache.stop.fetch_error_terminal"))
	})
}

// TestStopRefresh_valueStaysUntilTTL pins that after StopRefresh, the value
// stays cached, without any fetch, until LastGetTTL after the last Get, and
// is then evicted.
//
// Without StopRefresh the refresh would go on fetching.
func TestStopRefresh_valueStaysUntilTTL(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		s := newLaterScript(true, release)
		c.RegisterType("stop", s, &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute, LastGetTTL: 2 * time.Hour})
		first := cacheGoGet(c, "stop", RequestInfo{Key: "k"})
		s.answer(t, FetchResult{Value: "v1", Index: 1}, nil)
		require.Equal(t, "v1", cacheRequireReturned(t, first).Value)
		lastGet := time.Now()
		time.Sleep(time.Minute)
		s.answer(t, FetchResult{}, StopRefresh(errors.New("gone")))

		time.Sleep(time.Until(lastGet.Add(2*time.Hour)) - time.Second)
		require.True(t, limitsCached(c, "stop", "k"))
		require.Equal(t, 2, s.log.count())
		time.Sleep(2 * time.Second)
		require.False(t, limitsCached(c, "stop", "k"), "evicted at its TTL")
		time.Sleep(time.Hour)
		require.Equal(t, 2, s.log.count())
	})
}

// TestStopRefresh_withoutRefresh pins that for a type without Refresh,
// StopRefresh changes nothing but the metric: the same script of fetches,
// with a plain error or with StopRefresh, gives the same Get outcomes, and
// only StopRefresh counts fetch_error_terminal.
//
// Without StopRefresh there would be no terminal count; a cache that
// marked the result stopped for such types would make hits miss.
func TestStopRefresh_withoutRefresh(t *testing.T) {
	sink := cacheInstallSink(t) // metrics: not parallel
	errX := &laterErr{"no such token"}
	type outcome struct {
		value any
		meta  ResultMeta
		isX   bool
	}
	run := func(typ string, wrap func(error) error) ([]outcome, int) {
		var outs []outcome
		var fetches int
		synctest.Test(t, func(t *testing.T) {
			c, _ := cacheBubble(t)
			steps := []laterStep{
				{err: wrap(errX)},
				{fr: FetchResult{Value: "v1", Index: 1}},
				{err: wrap(errX)},
				{fr: FetchResult{Value: "v2", Index: 2}},
			}
			var n atomic.Int32
			c.RegisterType(typ, BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				i := int(n.Add(1)) - 1
				if i >= len(steps) {
					return FetchResult{}, errors.New("unexpected fetch")
				}
				return steps[i].fr, steps[i].err
			}), nil)
			for _, info := range []RequestInfo{
				{Key: "k"},              // error, no value
				{Key: "k"},              // v1
				{Key: "k"},              // hit
				{Key: "k", MinIndex: 1}, // error, with v1
				{Key: "k"},              // hit
				{Key: "k", MinIndex: 1}, // v2
				{Key: "k"},              // hit
			} {
				v, meta, err := c.Get(typ, info)
				if err != nil {
					require.ErrorIs(t, err, errX)
				}
				outs = append(outs, outcome{v, meta, err != nil})
			}
			fetches = int(n.Load())
		})
		return outs, fetches
	}
	plain, nPlain := run("plain", func(err error) error { return err })
	stopped, nStopped := run("stopped", StopRefresh)
	require.Equal(t, plain, stopped)
	require.Equal(t, nPlain, nStopped)
	require.Equal(t, 4, nStopped)
	require.Equal(t, []outcome{
		{nil, ResultMeta{}, true},
		{"v1", ResultMeta{Index: 1}, false},
		{"v1", ResultMeta{Hit: true, Index: 1}, false},
		{"v1", ResultMeta{Index: 1}, true},
		{"v1", ResultMeta{Hit: true, Index: 1}, false},
		{"v2", ResultMeta{Index: 2}, false},
		{"v2", ResultMeta{Hit: true, Index: 2}, false},
	}, stopped)
	require.Equal(t, 2, cacheCounter(sink, "consul.cache.stopped.fetch_error_terminal"))
	require.Equal(t, 2, cacheCounter(sink, "consul.cache.stopped.fetch_error"))
	require.Equal(t, 0, cacheCounter(sink, "consul.cache.plain.fetch_error_terminal"))
	require.Equal(t, 2, cacheCounter(sink, "consul.cache.plain.fetch_error"))
}

// TestStopRefresh_revalidationCounted pins that a StopRefresh error
// returned to a revalidation (a MaxAge Get served beside the loop's
// blocking query) reaches that Get unchanged and is counted as
// fetch_error_terminal besides fetch_error, as StopRefresh says it is for
// every type; the loop's blocking query goes on.
//
// Without StopRefresh there would be no terminal count.
func TestStopRefresh_revalidationCounted(t *testing.T) {
	sink := cacheInstallSink(t) // metrics: not parallel
	var bug string              // reported once the bubble has ended
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		s, blocked, reval := laterSideScript(t, c, "stopside", release)
		errX := &laterErr{"ACL not found"}
		s.answerFetch(t, 2, FetchResult{}, StopRefresh(errX))
		r := cacheRequireReturned(t, reval)
		require.ErrorIs(t, r.Err, errX)
		require.Equal(t, "v1", r.Value)
		cacheRequireBlocked(t, blocked)
		require.Equal(t, 1, cacheCounter(sink, "consul.cache.stopside.fetch_error"))

		s.answerFetch(t, 1, FetchResult{Value: "v2", Index: 6}, nil)
		r = cacheRequireReturned(t, blocked)
		require.NoError(t, r.Err)
		require.Equal(t, "v2", r.Value)
		if n := cacheCounter(sink, "consul.cache.stopside.fetch_error_terminal"); n != 1 {
			bug = fmt.Sprintf("a StopRefresh error returned to a revalidation (revalidation.run) is not counted as "+
				"fetch_error_terminal (count %d, want 1), though StopRefresh says it is, besides fetch_error", n)
		}
	})
	if bug != "" {
		t.Fatal(bug)
	}
}

// ---------------------------------------------------------------------------
// RefreshMaxFailures.

// laterFlakyType returns a blocking Type (recording its fetches in log)
// that answers its first fetch with index 1, fails while down is set, and
// otherwise answers, after a minute (a blocking query that sees a change
// a minute), with index MinIndex+1.
func laterFlakyType(log *cacheFetchLog, down *atomic.Bool, release <-chan struct{}) BlockingFetchFunc {
	return func(o FetchOptions, r Request) (FetchResult, error) {
		log.record(mock.Arguments{o, r})
		switch {
		case o.LastResult == nil:
			return FetchResult{Value: "v1", Index: 1}, nil
		case down.Load():
			return FetchResult{}, errors.New("server unavailable")
		}
		laterSleep(time.Minute, release)
		return FetchResult{Value: fmt.Sprint("v", o.MinIndex+1), Index: o.MinIndex + 1}, nil
	}
}

// TestRefreshMaxFailures_stopsAfterFailuresInARow pins RefreshMaxFailures:
// after a first success, the refresh fails that many times in a row, with
// the usual back-off between the attempts, and then stops: no fetch for
// hours. The next Get is not a hit and fetches; once that succeeds the
// refresh goes on.
//
// Without RefreshMaxFailures the refresh would retry every minute or two.
func TestRefreshMaxFailures_stopsAfterFailuresInARow(t *testing.T) {
	t.Parallel()
	for _, max := range []int{3, 6} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c, release := cacheBubble(t)
				var log cacheFetchLog
				var down atomic.Bool
				down.Store(true)
				c.RegisterType("t", laterFlakyType(&log, &down, release), &RegisterOptions{
					Refresh: true, RefreshTimeout: 10 * time.Minute, RefreshMaxFailures: max,
				})
				// The Get waits for the first fetch, but the failures may
				// follow before it looks: then the last error comes with v1.
				v, _, _ := c.Get("t", RequestInfo{Key: "k"})
				require.Equal(t, "v1", v)
				time.Sleep(10 * time.Minute) // enough for the back-off of 6 failures
				synctest.Wait()
				require.Equal(t, 1+max, log.count(), "one success, then %d failures", max)
				laterRequireBackOff(t, log.startTimes()[1:])
				time.Sleep(5 * time.Hour)
				require.Equal(t, 1+max, log.count(), "stopped")

				down.Store(false)
				ch := cacheGoGet(c, "t", RequestInfo{Key: "k"})
				cacheRequireBlocked(t, ch)
				require.Equal(t, 2+max, log.count(), "the next Get fetches")
				time.Sleep(time.Minute)
				r := cacheRequireReturned(t, ch)
				require.NoError(t, r.Err)
				require.Equal(t, "v2", r.Value)
				require.False(t, r.Meta.Hit)
				time.Sleep(10*time.Minute - time.Second)
				require.Equal(t, 2+max+10, log.count(), "the refresh goes on: a fetch a minute")
			})
		})
	}
}

// TestRefreshMaxFailures_countsFailuresInARow pins that only failures in a
// row count: a success in between starts the count over.
//
// A cache that counted all failures would stop after the third.
func TestRefreshMaxFailures_countsFailuresInARow(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		s := newLaterScript(true, release)
		c.RegisterType("t", s, &RegisterOptions{Refresh: true, RefreshTimeout: time.Minute, RefreshMaxFailures: 3})
		first := cacheGoGet(c, "t", RequestInfo{Key: "k"})
		s.answer(t, FetchResult{Value: "v1", Index: 1}, nil)
		require.Equal(t, "v1", cacheRequireReturned(t, first).Value)
		down := errors.New("down")
		for i := 0; i < 5; i++ {
			s.answer(t, FetchResult{}, down)
			s.answer(t, FetchResult{}, down)
			s.answer(t, FetchResult{Value: "v", Index: uint64(i + 2)}, nil)
		}
		require.Equal(t, 17, s.log.count(), "still refreshing")
		for i := 0; i < 3; i++ {
			s.answer(t, FetchResult{}, down)
		}
		time.Sleep(time.Hour)
		require.Equal(t, 19, s.log.count(), "stopped after the third failure in a row")
	})
}

// TestRefreshMaxFailures_zeroKeepsRetrying pins RefreshMaxFailures 0 (the
// default): a failing refresh goes on retrying with the seed's back-off.
//
// It is the control of the tests above: a cache that stopped every failing
// refresh would fail it.
func TestRefreshMaxFailures_zeroKeepsRetrying(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := cacheBubble(t)
		var log cacheFetchLog
		var down atomic.Bool
		down.Store(true)
		c.RegisterType("t", laterFlakyType(&log, &down, release), &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute})
		v, _, _ := c.Get("t", RequestInfo{Key: "k"})
		require.Equal(t, "v1", v)
		time.Sleep(time.Hour)
		n := log.count()
		t.Logf("%d fetches in an hour", n)
		require.Greater(t, n, 30)
		laterRequireBackOff(t, log.startTimes()[1:])
		time.Sleep(time.Hour)
		require.GreaterOrEqual(t, log.count(), n+25, "still retrying")
	})
}

// TestRefreshMaxFailures_negativePanics pins that RegisterType panics on a
// negative RefreshMaxFailures, naming the option, and registers nothing.
//
// Without the check, the type would be registered.
func TestRefreshMaxFailures_negativePanics(t *testing.T) {
	t.Parallel()
	c := TestCache(t)
	v := func() (v any) {
		defer func() { v = recover() }()
		c.RegisterType("t", TestType(t), &RegisterOptions{Refresh: true, RefreshMaxFailures: -1})
		return nil
	}()
	require.NotNil(t, v, "RegisterType did not panic")
	require.Contains(t, fmt.Sprint(v), "RefreshMaxFailures -1")
	_, _, err := c.Get("t", RequestInfo{Key: "k"})
	require.EqualError(t, err, "unknown type in cache: t")
}

// ---------------------------------------------------------------------------
// ReloadOptions.

// TestReloadOptions_reportsChanges pins ReloadOptions' result: false for
// options New would have normalised to the same settings (including
// Options{} on a New(nil) cache), and for a different MetricsPrefix or
// Metrics only, which New fixes (ReloadOptions ignores them); true for a
// changed rate, burst, logger or MaxEntries. Once applied, the same options
// are no change.
//
// A ReloadOptions that compared the raw Options, or reported every call as
// a change, would fail it.
func TestReloadOptions_reportsChanges(t *testing.T) {
	t.Parallel()
	l1, l2 := slog.New(slog.DiscardHandler), slog.New(slog.DiscardHandler)
	m1, _ := laterMetrics(t)
	m2, _ := laterMetrics(t)
	base := Options{EntryFetchRate: 5, EntryFetchMaxBurst: 3, Logger: l1, Metrics: m1, MaxEntries: 10, MetricsPrefix: []string{"a"}}
	with := func(f func(*Options)) Options {
		o := base
		f(&o)
		return o
	}
	for _, tc := range []struct {
		name    string
		from    *Options
		to      Options
		changed bool
	}{
		{"nil and zero", nil, Options{}, false},
		{"same", &base, base, false},
		{"prefix only", &base, with(func(o *Options) { o.MetricsPrefix = []string{"b"} }), false},
		{"metrics only", &base, with(func(o *Options) { o.Metrics = m2 }), false},
		{"no metrics only", &base, with(func(o *Options) { o.Metrics = nil }), false},
		{"burst below 1 means 2", &Options{EntryFetchRate: 5}, Options{EntryFetchRate: 5, EntryFetchMaxBurst: 2}, false},
		{"burst without rate", &Options{}, Options{EntryFetchMaxBurst: 7}, false},
		{"negative rate", &Options{}, Options{EntryFetchRate: -1}, false},
		{"negative MaxEntries", &Options{}, Options{MaxEntries: -3}, false},
		{"rate", &base, with(func(o *Options) { o.EntryFetchRate = 6 }), true},
		{"no rate", &base, with(func(o *Options) { o.EntryFetchRate = 0 }), true},
		{"rate on nil", nil, Options{EntryFetchRate: 1}, true},
		{"burst", &base, with(func(o *Options) { o.EntryFetchMaxBurst = 4 }), true},
		{"logger", &base, with(func(o *Options) { o.Logger = l2 }), true},
		{"no logger", &base, with(func(o *Options) { o.Logger = nil }), true},
		{"logger on nil", nil, Options{Logger: l1}, true},
		{"MaxEntries", &base, with(func(o *Options) { o.MaxEntries = 11 }), true},
		{"no MaxEntries", &base, with(func(o *Options) { o.MaxEntries = 0 }), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(tc.from)
			defer c.Close()
			require.Equal(t, tc.changed, c.ReloadOptions(tc.to))
			require.False(t, c.ReloadOptions(tc.to), "applied: no change the second time")
		})
	}
}

// TestReloadOptions_metricsFixedByNew pins that ReloadOptions leaves the
// metrics instance and prefix New was given: metrics keep going there, under
// the same names, whatever Metrics and MetricsPrefix the reload carries.
//
// A ReloadOptions that swapped the instance or the names would fail it.
func TestReloadOptions_metricsFixedByNew(t *testing.T) {
	t.Parallel()
	m1, sink1 := laterMetrics(t)
	m2, sink2 := laterMetrics(t)
	c := New(&Options{Metrics: m1, MetricsPrefix: []string{"app"}})
	defer c.Close()
	c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{Value: "v", Index: 1}, nil
	}), nil)
	require.True(t, c.ReloadOptions(Options{Metrics: m2, MetricsPrefix: []string{"other"}, MaxEntries: 5}))
	cacheGet(t, c, "t", RequestInfo{Key: "k"})
	cacheGet(t, c, "t", RequestInfo{Key: "k"})
	require.Equal(t, 1, cacheCounter(sink1, "app.t.fetch_success"))
	require.Equal(t, 1, cacheCounter(sink1, "app.t.hit"))
	require.Empty(t, sink2.Data()[0].Counters)
}

// TestReloadOptions_rateAppliesToWaitingFetch pins that a new
// EntryFetchRate applies at once to a loop waiting for its limiter: at one
// fetch an hour, the refresh of a blocking type whose data changes every
// 10 ms waits; ReloadOptions to 10/s (burst 1) makes the waiting fetch
// happen within 100 ms (its wait starts over under the new limit), and
// fetches then follow 100 ms apart; ReloadOptions to rate 0 lifts the limit
// (a fetch every 10 ms); a new rate then applies again.
//
// Without ReloadOptions reaching the waiting loop, the fetch would wait out
// the rest of the hour.
func TestReloadOptions_rateAppliesToWaitingFetch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := limitsBubble(t, &Options{EntryFetchRate: rate.Every(time.Hour), EntryFetchMaxBurst: 1})
		var log cacheFetchLog
		c.RegisterType("t", limitsChangingType(t, &log, 10*time.Millisecond, release), &RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})
		cacheGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(10 * time.Minute)
		require.Equal(t, 1, log.count(), "waiting for the limiter")

		reload := time.Now()
		require.True(t, c.ReloadOptions(Options{EntryFetchRate: 10, EntryFetchMaxBurst: 1}))
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		require.Equal(t, 2, log.count(), "the waiting fetch went within 100 ms")
		time.Sleep(time.Until(reload.Add(time.Second)))
		times := log.startTimes()[1:]
		require.Len(t, times, 10, "10 fetches in the second after the reload")
		for i := 1; i < len(times); i++ {
			require.InDelta(t, float64(100*time.Millisecond), float64(times[i].Sub(times[i-1])), float64(time.Millisecond), "gap before fetch %d", i)
		}

		n := log.count()
		require.True(t, c.ReloadOptions(Options{}))
		time.Sleep(time.Second)
		synctest.Wait()
		unlimited := log.count() - n
		require.GreaterOrEqual(t, unlimited, 95, "no limit: a fetch every 10 ms")
		require.LessOrEqual(t, unlimited, 101)

		n = log.count()
		require.True(t, c.ReloadOptions(Options{EntryFetchRate: 10, EntryFetchMaxBurst: 1}))
		time.Sleep(time.Second)
		synctest.Wait()
		require.LessOrEqual(t, log.count()-n, 11, "limited again")
		require.GreaterOrEqual(t, log.count()-n, 9)
	})
}

// TestReloadOptions_limitsExistingEntries pins that ReloadOptions gives the
// existing entries of a cache started without a limit the new rate: their
// running refresh loops slow down.
//
// Without it, only entries created after the reload would be limited.
func TestReloadOptions_limitsExistingEntries(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := limitsBubble(t, nil)
		var logA, logB cacheFetchLog
		c.RegisterType("a", limitsChangingType(t, &logA, 10*time.Millisecond, release), &RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})
		c.RegisterType("b", limitsChangingType(t, &logB, 10*time.Millisecond, release), nil)
		cacheGet(t, c, "a", RequestInfo{Key: "k"})
		cacheGet(t, c, "b", RequestInfo{Key: "k"})
		time.Sleep(time.Second)
		require.Greater(t, logA.count(), 90, "unlimited")

		require.True(t, c.ReloadOptions(Options{EntryFetchRate: 1, EntryFetchMaxBurst: 1}))
		n := logA.count()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		require.LessOrEqual(t, logA.count()-n, 11, "the running refresh is limited")

		// An entry whose loop is not running (no Refresh) is limited too, from its next fetch.
		for i := 1; i <= 5; i++ {
			cacheGet(t, c, "b", RequestInfo{Key: "k", MinIndex: uint64(i)})
		}
		require.Equal(t, 6, logB.count())
		b := logB.startTimes()
		require.GreaterOrEqual(t, b[5].Sub(b[1]), 3*time.Second, "one fetch a second")
	})
}

// TestReloadOptions_logger pins that a new Logger receives the fetch
// failures from the reload on, and the old one no more; Options{} then
// discards them.
//
// Without ReloadOptions applying the logger, A would keep them all.
func TestReloadOptions_logger(t *testing.T) {
	t.Parallel()
	var a, b laterLog
	c := New(&Options{Logger: a.logger()})
	defer c.Close()
	c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
		return FetchResult{}, errors.New("server unavailable")
	}), nil)
	get := func(k string) {
		_, _, err := c.Get("t", RequestInfo{Key: k})
		require.EqualError(t, err, "server unavailable")
	}
	get("k1")
	require.True(t, c.ReloadOptions(Options{Logger: b.logger()}))
	get("k2")
	require.True(t, c.ReloadOptions(Options{}))
	get("k3")

	failed := `msg="cache: fetch failed"`
	require.Len(t, a.lines(failed, "key=k1"), 1)
	require.Empty(t, a.lines(failed, "key=k2"))
	require.Len(t, b.lines(failed, "key=k2", `error="server unavailable"`), 1)
	require.Empty(t, b.lines(failed, "key=k1"))
	require.Empty(t, a.lines("key=k3"))
	require.Empty(t, b.lines("key=k3"))
}

// TestReloadOptions_maxEntriesEvictsAtOnce pins that ReloadOptions with a
// lower MaxEntries (or a first one) evicts down to the bound at once, the
// entries closest to expiry first, counted as evict_size, with the
// entries_count gauge following; a higher bound evicts nothing.
//
// Without it, the cache would stay over the bound until the next entry is
// created.
func TestReloadOptions_maxEntriesEvictsAtOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m, sink := laterMetrics(t)
		c, _ := limitsBubble(t, &Options{Metrics: m})
		// Metrics are New's: the reloads leave them out.
		var log cacheFetchLog
		c.RegisterType("t", cacheIndexType(t, &log), nil)
		keys := []string{"k1", "k2", "k3", "k4", "k5", "k6"}
		for _, k := range keys {
			cacheGet(t, c, "t", RequestInfo{Key: k})
			time.Sleep(time.Second)
		}
		cacheGet(t, c, "t", RequestInfo{Key: "k1"}) // now the most recently used
		present := func(want ...string) {
			t.Helper()
			for _, k := range keys {
				require.Equal(t, limitsContains(want, k), limitsCached(c, "t", k), "entry %s", k)
			}
			require.Equal(t, int64(len(want)), c.count.Load())
			require.Equal(t, float32(len(want)), cacheGauge(t, sink, "consul.cache.entries_count"))
		}

		require.True(t, c.ReloadOptions(Options{MaxEntries: 4}))
		present("k1", "k4", "k5", "k6")
		require.Equal(t, 2, cacheCounter(sink, "consul.cache.evict_size"))

		require.True(t, c.ReloadOptions(Options{MaxEntries: 5}))
		present("k1", "k4", "k5", "k6")

		require.True(t, c.ReloadOptions(Options{MaxEntries: 2}))
		present("k1", "k6")
		require.Equal(t, 4, cacheCounter(sink, "consul.cache.evict_size"))
		require.Equal(t, 0, cacheCounter(sink, "consul.cache.evict_expired"))
		_, meta := cacheGet(t, c, "t", RequestInfo{Key: "k1"})
		require.True(t, meta.Hit)
		require.Equal(t, len(keys), log.count(), "no fetch for the reloads")
	})
}

// TestReloadOptions_concurrentWithGets (run it under -race) pins that
// ReloadOptions is safe with Gets, fetches and refresh loops in flight:
// while goroutines Get several keys of a type without refresh (each Get
// revalidates, so it fetches through the limiter) and of a refreshing
// type, another alternates two settings (rate limit, MaxEntries, logger)
// 200 times. Every Get succeeds. A context deadline bounds the
// test.
//
// Without the synchronisation of the settings, limiters and reload
// channel, the race detector would fail it.
func TestReloadOptions_concurrentWithGets(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var logs laterLog
	c := New(nil)
	defer c.Close()
	var fetches atomic.Int64
	c.RegisterType("poll", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{Value: r.CacheInfo().Key, Index: uint64(fetches.Add(1))}, nil
	}), nil)
	c.RegisterType("refresh", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
		fetches.Add(1)
		return FetchResult{Value: r.CacheInfo().Key, Index: o.MinIndex + 1}, nil
	}), &RegisterOptions{Refresh: true, RefreshTimer: 5 * time.Millisecond})

	settings := []Options{
		{EntryFetchRate: 2000, EntryFetchMaxBurst: 5, MaxEntries: 5, Logger: logs.logger()},
		{},
	}
	reloads := make(chan error, 1)
	started := make(chan struct{}) // closed once a first Get succeeded
	var once sync.Once
	go func() {
		select {
		case <-started:
		case <-ctx.Done():
		}
		for i := 0; i < 200; i++ {
			if !c.ReloadOptions(settings[i%2]) {
				reloads <- fmt.Errorf("reload %d: no change reported", i)
				return
			}
		}
		reloads <- nil
	}()

	keys := []string{"a", "b", "c", "d"}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	var done atomic.Bool
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50 || !done.Load(); i++ {
				typ, k := []string{"poll", "refresh"}[i%2], keys[(g+i)%len(keys)]
				v, _, err := c.GetContext(ctx, typ, RequestInfo{Key: k, MustRevalidate: true})
				if err == nil && v != k {
					err = fmt.Errorf("value %v", v)
				}
				if err != nil {
					errs <- fmt.Errorf("Get %d of %s %s: %w", i, typ, k, err)
					return
				}
				once.Do(func() { close(started) })
			}
		}()
	}
	select {
	case err := <-reloads:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("the reloads did not finish")
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.NoError(t, ctx.Err())
	t.Logf("%d fetches", fetches.Load())
}
