package cache

// Regression tests: one per defect of the seed (the agent cache of Consul
// v1.4.5) or of a later Consul version that this package fixes. The comment
// of each test names the defect, with its Consul issue where there is one,
// and says what the seed's design did wrong, so that it reads as the failure
// the test prevents.
//
// The last sections pin, one test each, the defects found later by review
// and by tests written from Consul's documented behaviour.

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	metrics "github.com/armon/go-metrics"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
)

// newGate returns a channel and a func that closes it. The func may be
// called more than once, and is called when the test ends, so that a fetch
// waiting on the channel cannot outlive the bubble. Called before
// bubble, it opens the gate only after the cache is closed.
func newGate(t *testing.T) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	open := sync.OnceFunc(func() { close(ch) })
	t.Cleanup(open)
	return ch, open
}

// raiseMax raises m to v if v is greater.
func raiseMax(m *atomic.Int32, v int32) {
	for old := m.Load(); v > old && !m.CompareAndSwap(old, v); old = m.Load() {
	}
}

// requireReturnedAfter (in a bubble) returns the result of the Get that sends
// it on ch, failing unless the Get returns exactly d of fake time from now.
func requireReturnedAfter(t *testing.T, ch <-chan getResult, d time.Duration) getResult {
	t.Helper()
	time.Sleep(d - time.Nanosecond)
	requireBlocked(t, ch)
	time.Sleep(time.Nanosecond)
	return requireReturned(t, ch)
}

// panicValue returns what f panicked with, or nil.
func panicValue(f func()) (v any) {
	defer func() { v = recover() }()
	f()
	return nil
}

// ---------------------------------------------------------------------------
// Close.

// TestRegression_CloseMeansStop pins that after Close returns the cache
// starts no fetch and nobody waits on it: a refresh loop asleep in its
// back-off or RefreshTimer wait does not fetch again; a Get that hits is
// served, one that needs a fetch returns ErrClosed (with the cached value,
// if any), one already waiting for a change returns ErrClosed at once (one
// waiting for a value gets its fetch's result); Notify fails with
// ErrClosed and running watches end; a ContextType's blocking fetch sees
// its context done.
//
// The seed's Close only stopped the expiry loop. Refresh goroutines checked
// it before their back-off or RefreshTimer sleep, not after, so each
// fetched once more, and so did every later Get that missed; a blocking Get
// waited out its fetch; Notify ignored Close, so watches ran on until their
// contexts ended; and a fetch had no context to cancel.
func TestRegression_CloseMeansStop(t *testing.T) {
	t.Parallel()

	t.Run("RefreshLoops", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			failing := TestType(t)
			var failLog fetchLog
			failLog.on(failing, nil, FetchResult{}, errors.New("down"))
			c.RegisterType("failing", failing, &RegisterOptions{Refresh: true})
			var timerLog fetchLog
			c.RegisterType("timer", indexType(t, &timerLog), &RegisterOptions{Refresh: true, RefreshTimer: time.Minute})

			_, _, err := c.Get("failing", RequestInfo{Key: "k"})
			require.EqualError(t, err, "down")
			requireGet(t, c, "timer", RequestInfo{Key: "k"})
			synctest.Wait()
			require.Equal(t, 4, failLog.count(), "three retries at once, then a back-off wait")
			require.Equal(t, 1, timerLog.count(), "in its RefreshTimer wait")

			require.NoError(t, c.Close())
			time.Sleep(5 * time.Hour)
			require.Equal(t, 4, failLog.count(), "no fetch after Close")
			require.Equal(t, 1, timerLog.count(), "no fetch after Close")
		})
	})

	t.Run("Get", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			var log fetchLog
			c.RegisterType("t", indexType(t, &log), nil)
			requireGet(t, c, "t", RequestInfo{Key: "k"}) // value 1, index 1
			time.Sleep(time.Minute)
			require.NoError(t, c.Close())
			start := time.Now()

			v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, uint64(1), v)
			require.True(t, meta.Hit, "a hit is still served")

			for _, info := range []RequestInfo{
				{Key: "k", MinIndex: 1},         // wants a newer index
				{Key: "k", MaxAge: time.Second}, // the value is older
				{Key: "k", MustRevalidate: true},
			} {
				v, meta, err := c.Get("t", info)
				require.ErrorIs(t, err, ErrClosed, "%+v", info)
				require.Equal(t, uint64(1), v, "the cached value comes with the error: %+v", info)
				require.Equal(t, uint64(1), meta.Index, "%+v", info)
				require.False(t, meta.Hit, "%+v", info)
			}
			v, _, err := c.Get("t", RequestInfo{Key: "new"})
			require.ErrorIs(t, err, ErrClosed)
			require.Nil(t, v)

			require.Zero(t, time.Since(start), "nothing waited")
			synctest.Wait()
			require.Equal(t, 1, log.count(), "no fetch after Close")
		})
	})

	t.Run("WaitingGet", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			typ := TestType(t)
			var log fetchLog
			gate := make(chan struct{})
			log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
			log.on(typ, waitingFor(release), FetchResult{}, nil).Once() // hangs until the test ends
			log.on(typ, waitingFor(gate), FetchResult{Value: "v7", Index: 7}, nil).Once()
			c.RegisterType("t", typ, nil)
			requireGet(t, c, "t", RequestInfo{Key: "k"})

			blocking := goGet(c, "t", RequestInfo{Key: "k", MinIndex: 5})
			requireBlocked(t, blocking)
			fresh := goGet(c, "t", RequestInfo{Key: "new"})
			requireBlocked(t, fresh)
			require.Equal(t, 3, log.count())

			start := time.Now()
			require.NoError(t, c.Close())
			r := requireReturned(t, blocking)
			require.ErrorIs(t, r.Err, ErrClosed)
			require.Equal(t, "v5", r.Value)
			require.Equal(t, uint64(5), r.Meta.Index)
			require.Zero(t, time.Since(start), "a wait for a change ends at Close")
			// A Get waiting for a value it does not have gets the result of
			// the fetch in flight.
			requireBlocked(t, fresh)
			close(gate)
			r = requireReturned(t, fresh)
			require.NoError(t, r.Err)
			require.Equal(t, "v7", r.Value)
			synctest.Wait()
			require.Equal(t, 3, log.count(), "no fetch after Close")
		})
	})

	t.Run("Notify", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			blocking := TestType(t)
			var blockingLog fetchLog
			blockingLog.on(blocking, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
			blockingLog.on(blocking, waitingFor(release), FetchResult{}, nil)
			c.RegisterType("blocking", blocking, nil)
			polling := TestTypeNonBlocking(t)
			var pollingLog fetchLog
			pollingLog.on(polling, nil, FetchResult{Value: "p", Index: 1}, nil)
			c.RegisterType("polling", polling, nil)

			// Never cancelled: only Close can end these watches.
			ctx := context.Background()
			ch := make(chan UpdateEvent, 10)
			require.NoError(t, c.Notify(ctx, "blocking", RequestInfo{Key: "k"}, "blocking", ch))
			require.NoError(t, c.Notify(ctx, "polling", RequestInfo{Key: "k", MaxAge: time.Minute}, "polling", ch))
			got := map[string]any{}
			for range 2 {
				ev := recvEvent(t, ch, time.Second)
				got[ev.CorrelationID] = ev.Result
			}
			require.Equal(t, map[string]any{"blocking": "v5", "polling": "p"}, got)
			synctest.Wait()
			require.Equal(t, 2, liveWatches(t, c), "one watch in a blocking Get, one between polls")

			require.NoError(t, c.Close())
			synctest.Wait()
			require.Zero(t, liveWatches(t, c), "Close ended both watches")
			requireNoEvent(t, ch)
			time.Sleep(5 * time.Hour)
			requireNoEvent(t, ch)
			require.Equal(t, 2, blockingLog.count(), "no fetch after Close")
			require.Equal(t, 1, pollingLog.count(), "no poll after Close")

			err := c.Notify(ctx, "blocking", RequestInfo{Key: "k"}, "late", ch)
			require.ErrorIs(t, err, ErrClosed)
			require.Zero(t, liveWatches(t, c), "no watch started")
		})
	})

	t.Run("FetchContext", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			var log fetchLog
			type abandon struct {
				at  time.Time
				err error
			}
			abandoned := make(chan abandon, 1)
			c.RegisterType("t", contextType{blocking: true, fetch: func(ctx context.Context, o FetchOptions, r Request) (FetchResult, error) {
				log.add(o, r)
				if o.MinIndex == 0 {
					return FetchResult{Value: "v1", Index: 1}, nil
				}
				select { // a blocking query that only its context ends
				case <-ctx.Done():
				case <-release: // never cancelled: end with the test
					return FetchResult{}, errors.New("not cancelled")
				}
				abandoned <- abandon{time.Now(), ctx.Err()}
				return FetchResult{}, ctx.Err()
			}}, &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute})
			requireGet(t, c, "t", RequestInfo{Key: "k"})
			time.Sleep(time.Minute)
			require.Equal(t, 2, log.count(), "the refresh is a blocking fetch")

			closedAt := time.Now()
			require.NoError(t, c.Close())
			synctest.Wait()
			select {
			case a := <-abandoned:
				require.Equal(t, closedAt, a.at, "the fetch's context ended with Close")
				require.ErrorIs(t, a.err, context.Canceled)
			default:
				t.Fatal("the blocking fetch's context is not done after Close")
			}
			time.Sleep(5 * time.Hour)
			require.Equal(t, 2, log.count(), "no fetch after Close")
		})
	})
}

// ---------------------------------------------------------------------------
// Refresh loops and expiry.

// TestRegression8541_RefreshChainsDoNotMultiply pins that an entry has a
// single refresh loop: while a failing refresh backs off, Gets (plain and
// blocking ones) wait for the loop's next fetch instead of starting their
// own, so fetches never overlap and follow one back-off schedule (Consul
// #8541, #8682, #14908).
//
// In the seed a refresh was a chain of goroutines: each fetch, when done,
// started one that slept out the back-off and fetched again. The entry was
// not marked as fetching during the sleep, so every Get that missed started
// a fetch of its own, which started a chain of its own: a burst of Gets
// against a failing server multiplied the load it was backing off from.
func TestRegression8541_RefreshChainsDoNotMultiply(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		const fetchTime = time.Second
		var log fetchLog
		var inFlight, maxInFlight atomic.Int32
		c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			log.add(o, r)
			raiseMax(&maxInFlight, inFlight.Add(1))
			defer inFlight.Add(-1)
			sleeping(fetchTime, release)()
			return FetchResult{}, errors.New("down")
		}), &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute})

		_, _, err := c.Get("t", RequestInfo{Key: "k"})
		require.EqualError(t, err, "down")

		// Ten minutes of Gets every two seconds: plain, blocking, and
		// blocking with a timeout shorter than the longest back-off.
		var gets []<-chan getResult
		for range 300 {
			gets = append(gets,
				goGet(c, "t", RequestInfo{Key: "k"}),
				goGet(c, "t", RequestInfo{Key: "k", MinIndex: 5}),
				goGet(c, "t", RequestInfo{Key: "k", MinIndex: 5, Timeout: 30 * time.Second}))
			time.Sleep(2 * time.Second)
		}
		// The last ones wait for the next fetch, at most a capped back-off
		// and a fetch away.
		time.Sleep(2*CacheRefreshMaxWait + fetchTime)
		synctest.Wait()
		for i, ch := range gets {
			select {
			case r := <-ch:
				require.Nil(t, r.Value, "Get %d", i)
				if r.Err != nil {
					require.EqualError(t, r.Err, "down", "Get %d", i)
				}
			default:
				t.Fatalf("Get %d still waiting", i)
			}
		}

		require.Equal(t, int32(1), maxInFlight.Load(), "one fetch at a time")
		times := log.startTimes()
		// One schedule over 12 minutes has 13 to 19 fetches; a chain per
		// missing Get would make hundreds.
		require.GreaterOrEqual(t, len(times), 13)
		require.LessOrEqual(t, len(times), 19)
		requireBackOff(t, times, fetchTime)
	})
}

// TestRegression9978_NoResurrection pins that an evicted entry stays
// evicted: when a refresh fetch that outlived its entry (a 90-minute
// blocking query against a 1-hour LastGetTTL) returns, its value is not
// stored in the cache, its loop ends, and the next Get is a miss that
// fetches from scratch; entries_count stays right (Consul #8715, #9978).
//
// The seed's fetch goroutine stored its result with c.entries[key] =
// entry, and gave an entry that had left the expiry heap a fresh TTL: a
// late fetch brought its evicted entry back, and its refresh went on for
// another TTL, then another, for ever.
func TestRegression9978_NoResurrection(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v1", Index: 1}, nil).Once()
		log.on(typ, sleeping(90*time.Minute, release), FetchResult{Value: "v2", Index: 2}, nil).Once()
		log.on(typ, nil, FetchResult{Value: "v3", Index: 3}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("resurrect_t", typ, &RegisterOptions{
			Refresh: true, RefreshTimeout: 2 * time.Hour, LastGetTTL: time.Hour,
		})
		const entries = "consul.cache.entries_count"

		_, meta := requireGet(t, c, "resurrect_t", RequestInfo{Key: "k"})
		require.False(t, meta.Hit)
		require.Equal(t, float32(1), sinkGauge(t, sink, entries))

		time.Sleep(61 * time.Minute)
		require.Equal(t, float32(0), sinkGauge(t, sink, entries), "evicted at 1h")
		require.Equal(t, 2, log.count(), "with its refresh in flight")

		time.Sleep(2 * time.Hour) // the refresh returned at 1h30m
		require.Equal(t, 2, log.count(), "the loop ended with the late fetch")
		require.Equal(t, float32(0), sinkGauge(t, sink, entries), "the late value did not bring the entry back")
		require.Equal(t, 1, sinkCounter(sink, "consul.cache.evict_expired"))

		v, meta := requireGet(t, c, "resurrect_t", RequestInfo{Key: "k"})
		require.False(t, meta.Hit, "a miss")
		require.Equal(t, "v3", v)
		require.Equal(t, uint64(0), log.opt(2).MinIndex, "fetched from scratch")
		require.Nil(t, log.opt(2).LastResult, "fetched from scratch")
		require.Equal(t, float32(1), sinkGauge(t, sink, entries))
	})
}

// TestRegression9979_WatchedEntryDoesNotExpire pins that an entry does not
// expire while Gets wait on it: a blocking Get whose query outlasts
// LastGetTTL gets its value and leaves the entry cached, and a Notify whose
// every blocking fetch outlasts LastGetTTL never loses its entry, so each
// fetch blocks on the last index with the last result (Consul #9979).
//
// The seed counted LastGetTTL from the last Get that returned, so an entry
// whose only readers were blocked in long queries expired under them
// (counted in evict_expired). Only resurrection (see
// TestRegression9978_NoResurrection) put it back when the query returned;
// with that fixed, the waiting Get woke to a missing entry and fetched
// again from scratch, and a Notify's next fetch lost MinIndex and
// LastResult.
func TestRegression9979_WatchedEntryDoesNotExpire(t *testing.T) {
	t.Run("BlockingGet", func(t *testing.T) {
		sink := installSink(t) // metrics: not parallel
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			typ := TestType(t)
			var log fetchLog
			log.on(typ, nil, FetchResult{Value: "v1", Index: 1}, nil).Once()
			log.on(typ, sleeping(2*time.Hour, release), FetchResult{Value: "v2", Index: 2}, nil).Once()
			log.on(typ, nil, FetchResult{Value: "v3", Index: 3}, nil) // not expected
			c.RegisterType("watched_get", typ, &RegisterOptions{LastGetTTL: time.Hour})
			requireGet(t, c, "watched_get", RequestInfo{Key: "k"})

			start := time.Now()
			v, meta := requireGet(t, c, "watched_get", RequestInfo{Key: "k", MinIndex: 1, Timeout: 3 * time.Hour})
			require.Equal(t, 2*time.Hour, time.Since(start), "returned with the fetch")
			require.Equal(t, "v2", v)
			require.Equal(t, ResultMeta{Index: 2}, meta)

			v, meta = requireGet(t, c, "watched_get", RequestInfo{Key: "k"})
			require.Equal(t, "v2", v)
			require.Equal(t, ResultMeta{Hit: true, Index: 2}, meta, "still cached")
			require.Equal(t, 2, log.count())
			require.Zero(t, sinkCounter(sink, "consul.cache.evict_expired"))
		})
	})

	t.Run("Notify", func(t *testing.T) {
		sink := installSink(t) // metrics: not parallel
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			var log fetchLog
			c.RegisterType("watched_notify", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
				log.add(o, r)
				if o.MinIndex > 0 {
					sleeping(30*time.Minute, release)() // then the data changes
				}
				return FetchResult{Value: o.MinIndex + 1, Index: o.MinIndex + 1}, nil
			}), &RegisterOptions{LastGetTTL: 10 * time.Minute})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ch := make(chan UpdateEvent, 16)
			require.NoError(t, c.Notify(ctx, "watched_notify", RequestInfo{Key: "k"}, "id", ch))

			time.Sleep(3*time.Hour + time.Minute)
			cancel()
			synctest.Wait()
			for i := uint64(1); i <= 7; i++ {
				ev := recvEvent(t, ch, time.Second)
				require.NoError(t, ev.Err)
				require.Equal(t, i, ev.Result)
				require.Equal(t, i, ev.Meta.Index)
			}
			requireNoEvent(t, ch)
			require.Equal(t, 8, log.count(), "a first fetch, then one per 30 minutes")
			for i := 1; i < log.count(); i++ {
				o := log.opt(i)
				require.Equal(t, uint64(i), o.MinIndex, "fetch %d blocks on the last index", i+1)
				require.NotNil(t, o.LastResult, "fetch %d", i+1)
				require.Equal(t, uint64(i), o.LastResult.Index, "fetch %d", i+1)
			}
			require.Zero(t, sinkCounter(sink, "consul.cache.evict_expired"))
		})
	})
}

// TestRegression9588_FailingRefreshStopsAtTTL pins that a refreshing entry
// whose fetches all fail, and that nobody reads, is evicted LastGetTTL
// after its last Get, whatever its fetches do, and that its refresh stops
// then (Consul #9588). Each failing fetch here is a blocking query that
// takes 4 minutes, so the eviction comes while one is in flight.
//
// The seed renewed an entry's TTL from its fetches, not only from its
// Gets: a fetch in flight when its entry expired stored the entry back with
// a fresh TTL, errors included (and Consul later renewed the TTL on every
// fetch). A background refresh thus kept its own entry alive with nobody
// reading it, failing against the servers for as long as the agent ran.
func TestRegression9588_FailingRefreshStopsAtTTL(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		const fetchTime = 4 * time.Minute
		var log fetchLog
		c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			log.add(o, r)
			sleeping(fetchTime, release)()
			return FetchResult{}, errors.New("down")
		}), &RegisterOptions{Refresh: true, RefreshTimeout: fetchTime, LastGetTTL: 10 * time.Minute})
		info := RequestInfo{Key: "k"}

		_, _, err := c.Get("t", info) // returns at 4m
		require.EqualError(t, err, "down")
		time.Sleep(time.Minute)
		_, _, err = c.Get("t", info) // waits for the refresh in flight: 8m
		require.EqualError(t, err, "down")
		lastGet := time.Now()
		evictAt := lastGet.Add(10 * time.Minute)

		// Fetches 3 and 4 fail at 12m and 16m; fetch 5 starts after a 2-4s
		// back-off and is in flight at 18m.
		time.Sleep(time.Until(evictAt) - time.Second)
		require.True(t, isCached(c, "t", info), "kept until LastGetTTL after the last Get")
		require.Equal(t, 5, log.count())
		time.Sleep(2 * time.Second)
		require.False(t, isCached(c, "t", info), "evicted LastGetTTL after the last Get")

		time.Sleep(5 * time.Hour)
		require.False(t, isCached(c, "t", info), "the late failure did not bring the entry back")
		require.Equal(t, 5, log.count(), "the refresh stopped")
		requireBackOff(t, log.startTimes(), fetchTime)
	})
}

// ---------------------------------------------------------------------------
// Blocking Gets.

// pauseType is a blocking type whose SupportsBlocking can be made to
// stop, once, on a chosen call, until the test resumes it. A Get consults
// SupportsBlocking between its look at the entry and joining a fetch, so
// this opens the window of a race with a fetch that publishes meanwhile.
type pauseType struct {
	BlockingFetchFunc

	mu      sync.Mutex
	calls   int // since arm
	pauseAt int // call to stop on; 0 for none
	paused  chan struct{}
	resume  chan struct{}
}

// arm makes the n-th call of SupportsBlocking from now on close paused,
// then wait until resume is called (at the latest when the test ends).
func (p *pauseType) arm(t *testing.T, n int) (paused <-chan struct{}, resume func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls, p.pauseAt = 0, n
	p.paused, p.resume = make(chan struct{}), make(chan struct{})
	resume = sync.OnceFunc(func() { close(p.resume) })
	t.Cleanup(resume)
	return p.paused, resume
}

func (p *pauseType) SupportsBlocking() bool {
	p.mu.Lock()
	var paused, resume chan struct{}
	if p.pauseAt > 0 {
		p.calls++
		if p.calls == p.pauseAt {
			paused, resume = p.paused, p.resume
			p.pauseAt = 0
		}
	}
	p.mu.Unlock()
	if paused != nil {
		close(paused)
		<-resume
	}
	return true
}

// TestRegression5793_NoStall pins that a blocking Get never waits for a
// change it could already have: when a fetch publishes index 6 between the
// moment a Get with MinIndex 5 looked at the entry (index 5) and the moment
// it joins a fetch, it returns index 6 at once, without a new fetch
// (Consul #5793).
//
// The seed's Get read the entry, released the lock, then asked for the
// entry's current fetch. If a fetch had finished in between, it got the
// next one, a fresh blocking query at index 6, and stalled until the data
// changed again or its timeout passed, with index 6 in the cache all along.
func TestRegression5793_NoStall(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		gate, open := newGate(t)
		c, release := bubble(t)
		var log fetchLog
		typ := &pauseType{BlockingFetchFunc: func(o FetchOptions, r Request) (FetchResult, error) {
			log.add(o, r)
			switch o.MinIndex {
			case 0:
				return FetchResult{Value: "v5", Index: 5}, nil
			case 5:
				<-gate
				return FetchResult{Value: "v6", Index: 6}, nil
			default: // no further change until the test ends
				<-release
				return FetchResult{}, nil
			}
		}}
		c.RegisterType("t", typ, nil)
		requireGet(t, c, "t", RequestInfo{Key: "k"})

		// A blocking Get starts the fetch that will bring index 6.
		first := goGet(c, "t", RequestInfo{Key: "k", MinIndex: 5})
		requireBlocked(t, first)

		// A second one stops after it loaded the entry's result: its first
		// SupportsBlocking call is the check for a hit at first sight, its
		// second the same check on the result it will wait on.
		paused, resume := typ.arm(t, 2)
		second := goGet(c, "t", RequestInfo{Key: "k", MinIndex: 5})
		synctest.Wait()
		select {
		case <-paused:
		default:
			t.Fatal("the Get did not consult SupportsBlocking twice")
		}

		open() // index 6 is published while the second Get looks away
		r := requireReturned(t, first)
		require.Equal(t, "v6", r.Value)

		start := time.Now()
		resume()
		r = requireReturned(t, second)
		require.NoError(t, r.Err)
		require.Equal(t, "v6", r.Value)
		require.Equal(t, ResultMeta{Index: 6}, r.Meta)
		require.Zero(t, time.Since(start))
		require.Equal(t, 2, log.count(), "no fetch for a change already cached")
	})
}

// TestRegression12048_RevalidateNotBehindBlockingQuery pins that a Get with
// MustRevalidate, or with a MaxAge the value exceeds, does not wait behind a
// blocking query in flight on its entry: it gets, in the same instant, the
// value of a non-blocking fetch (MinIndex 0) made beside the query;
// concurrent ones share that fetch; the blocking Get still gets its change
// when the query answers (Consul #12048).
//
// The seed had one fetch per entry: a Get that wanted the current value
// found the entry fetching and waited on that fetch, a blocking query that
// answers only when the data changes or its timeout (typically 10 minutes)
// passes.
func TestRegression12048_RevalidateNotBehindBlockingQuery(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		sideGate, openSide := newGate(t)
		c, release := bubble(t)
		var log fetchLog
		var sides, sidesInFlight, maxSidesInFlight atomic.Int32
		c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			log.add(o, r)
			switch {
			case o.LastResult == nil: // the first fetch
				return FetchResult{Value: "v5", Index: 5}, nil
			case o.MinIndex == 0: // a revalidation
				n := sides.Add(1)
				raiseMax(&maxSidesInFlight, sidesInFlight.Add(1))
				defer sidesInFlight.Add(-1)
				if n == 1 {
					<-sideGate
				}
				return FetchResult{Value: fmt.Sprint("fresh", n), Index: 5}, nil
			case o.MinIndex == 5: // the blocking query: 10 minutes to a change
				sleeping(10*time.Minute, release)()
				return FetchResult{Value: "v6", Index: 6}, nil
			default:
				<-release
				return FetchResult{}, nil
			}
		}), &RegisterOptions{RefreshTimeout: 10 * time.Minute})
		revalidate := RequestInfo{Key: "k", MustRevalidate: true}
		maxAge := RequestInfo{Key: "k", MaxAge: 30 * time.Second}

		requireGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(time.Minute) // older than maxAge
		blockingStart := time.Now()
		blocking := goGet(c, "t", RequestInfo{Key: "k", MinIndex: 5})
		requireBlocked(t, blocking)
		require.Equal(t, 2, log.count())

		// Concurrent revalidations share one fetch.
		start := time.Now()
		var chs []<-chan getResult
		for _, info := range []RequestInfo{revalidate, maxAge, revalidate, maxAge} {
			chs = append(chs, goGet(c, "t", info))
		}
		synctest.Wait()
		require.Equal(t, int32(1), sides.Load(), "one revalidation for all")
		openSide()
		for i, ch := range chs {
			r := requireReturned(t, ch)
			require.NoError(t, r.Err, "Get %d", i)
			require.Equal(t, "fresh1", r.Value, "Get %d", i)
			require.Equal(t, ResultMeta{Index: 5}, r.Meta, "Get %d", i)
		}
		require.Zero(t, time.Since(start), "in the same instant")
		requireBlocked(t, blocking)

		// One at a time, each revalidates at once.
		time.Sleep(time.Minute) // fresh1 is older than maxAge
		start = time.Now()
		v, meta := requireGet(t, c, "t", maxAge)
		require.Equal(t, "fresh2", v)
		require.Equal(t, ResultMeta{Index: 5}, meta)
		v, _ = requireGet(t, c, "t", revalidate)
		require.Equal(t, "fresh3", v)
		require.Zero(t, time.Since(start), "in the same instant")
		requireBlocked(t, blocking)

		require.Equal(t, int32(1), maxSidesInFlight.Load())
		require.Equal(t, 5, log.count())
		require.Equal(t, uint64(5), log.opt(1).MinIndex, "the blocking query")
		for i := 2; i < log.count(); i++ {
			o := log.opt(i)
			require.Zero(t, o.MinIndex, "revalidation %d does not block", i-1)
			require.Zero(t, o.Timeout, "revalidation %d does not block", i-1)
			require.NotNil(t, o.LastResult, "revalidation %d", i-1)
		}

		r := <-blocking
		require.Equal(t, 10*time.Minute, time.Since(blockingStart), "the blocking Get returned with its query")
		require.NoError(t, r.Err)
		require.Equal(t, "v6", r.Value)
		require.Equal(t, ResultMeta{Index: 6}, r.Meta)
		require.Equal(t, 5, log.count())
	})
}

// TestRegression_IndexResetGet pins that a blocking Get treats a lower
// index than the one it waited on as new data: the servers' index was reset
// (a snapshot restore, say). A Get with MinIndex 10 returns the value at
// index 3 when its fetch brings it, at once and without an error.
//
// The seed's Get returned only for an index above MinIndex: after a reset
// it fetched again and again, blocking at index 3, until the index passed
// 10 once more or its timeout expired, serving nothing meanwhile.
func TestRegression_IndexResetGet(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		gate, open := newGate(t)
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v10", Index: 10}, nil).Once()
		log.on(typ, waitingFor(gate), FetchResult{Value: "v3", Index: 3}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, nil)
		requireGet(t, c, "t", RequestInfo{Key: "k"})

		ch := goGet(c, "t", RequestInfo{Key: "k", MinIndex: 10})
		requireBlocked(t, ch)
		start := time.Now()
		open()
		r := requireReturned(t, ch)
		require.NoError(t, r.Err)
		require.Equal(t, "v3", r.Value)
		require.Equal(t, ResultMeta{Index: 3}, r.Meta)
		require.Zero(t, time.Since(start))
		require.Equal(t, 2, log.count(), "no fetch waiting for the index to pass 10 again")

		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v3", v)
		require.Equal(t, ResultMeta{Hit: true, Index: 3}, meta)
	})
}

// ---------------------------------------------------------------------------
// Notify.

// TestRegression6521_NotifyRecoversAfterFirstError pins that a watch whose
// first fetch fails delivers the error, then the first value even if its
// index is 1 (a new cluster) (Consul #6521).
//
// The seed's watch sent an event only when the index grew: the error, at
// index 0, was never sent; then it forced its next blocking Get to
// MinIndex 1, so a first value at index 1 looked old and the watch blocked
// until the index passed 1, delivering nothing at all.
func TestRegression6521_NotifyRecoversAfterFirstError(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{}, errors.New("no cluster leader")).Once()
		log.on(typ, nil, FetchResult{Value: "v1", Index: 1}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		require.NoError(t, c.Notify(ctx, "t", RequestInfo{Key: "k"}, "id", ch))

		ev := recvEvent(t, ch, time.Minute)
		require.Equal(t, "id", ev.CorrelationID)
		require.EqualError(t, ev.Err, "no cluster leader")
		require.Nil(t, ev.Result)
		ev = recvEvent(t, ch, time.Minute)
		require.Equal(t, UpdateEvent{CorrelationID: "id", Result: "v1", Meta: ResultMeta{Index: 1}}, ev)
		requireNoEvent(t, ch)

		require.Equal(t, 3, log.count())
		require.Zero(t, log.opt(1).MinIndex, "after the error the fetch does not block")
		require.Equal(t, uint64(1), log.opt(2).MinIndex, "after the value it blocks on its index")
		cancel()
	})
}

// TestRegression8092_NotifyCancelDuringBlockingFetch pins that cancelling
// a watch's context ends the watch at once, even while its Get waits for a
// long blocking fetch: the goroutine is gone before the fetch answers, and
// the fetch's answer delivers nothing (Consul #8092).
//
// The seed's Get took no context: a watch checked its context only between
// Gets, so a cancelled watch lived on, holding its goroutine and its
// request, until the blocking query answered (up to its 10-minute timeout);
// watches that came and went piled up meanwhile.
func TestRegression8092_NotifyCancelDuringBlockingFetch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		gate, open := newGate(t)
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v1", Index: 1}, nil).Once()
		log.on(typ, waitingFor(gate), FetchResult{Value: "v2", Index: 2}, nil).Once()
		c.RegisterType("t", typ, &RegisterOptions{RefreshTimeout: 10 * time.Minute})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		require.NoError(t, c.Notify(ctx, "t", RequestInfo{Key: "k"}, "id", ch))
		require.Equal(t, "v1", recvEvent(t, ch, time.Second).Result)
		time.Sleep(time.Minute)
		require.Equal(t, 2, log.count(), "the watch waits for a blocking fetch")
		require.Equal(t, 1, liveWatches(t, c))

		start := time.Now()
		cancel()
		synctest.Wait()
		require.Zero(t, liveWatches(t, c), "the watch ended while its fetch is in flight")
		require.Zero(t, time.Since(start))
		requireNoEvent(t, ch)

		open() // the fetch answers; nobody is left to hear it
		synctest.Wait()
		requireNoEvent(t, ch)
		require.Equal(t, 2, log.count())
	})
}

// TestRegression_IndexResetNotify pins that a watch delivers an index
// reset: after index 10, a value at index 3 is sent as new data, and later
// events count from it (index 4).
//
// The seed's watch sent a value only when its index grew, and blocked on
// the highest index it had seen: it swallowed the reset and every value
// after it until the index passed 10 again.
func TestRegression_IndexResetNotify(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v10", Index: 10}, nil).Once()
		log.on(typ, sleeping(time.Minute, release), FetchResult{Value: "v3", Index: 3}, nil).Once()
		log.on(typ, sleeping(time.Minute, release), FetchResult{Value: "v4", Index: 4}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		require.NoError(t, c.Notify(ctx, "t", RequestInfo{Key: "k"}, "id", ch))

		for _, want := range []struct {
			value string
			index uint64
		}{{"v10", 10}, {"v3", 3}, {"v4", 4}} {
			ev := recvEvent(t, ch, 2*time.Minute)
			require.Equal(t, UpdateEvent{CorrelationID: "id", Result: want.value, Meta: ResultMeta{Index: want.index}}, ev)
		}
		requireNoEvent(t, ch)
		var minIndexes []uint64
		for i := 0; i < log.count(); i++ {
			minIndexes = append(minIndexes, log.opt(i).MinIndex)
		}
		require.Equal(t, []uint64{0, 10, 3, 4}, minIndexes, "each fetch blocks on the last index sent")
		cancel()
	})
}

// TestRegression_PollingNotifyDeliversErrors pins that a polling watch (a
// non-blocking type, MaxAge set) whose polls fail before any value exists
// delivers each error, with the back-off between polls, then the value.
//
// The seed's polling watch sent an event only when the index grew or the
// value changed (reflect.DeepEqual): a failed poll brings neither, so a
// watcher of a failing request heard nothing at all, not even that it
// failed.
func TestRegression_PollingNotifyDeliversErrors(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const failures = 6
		var calls int
		typ, times := timedType(t, false, func(FetchOptions) (FetchResult, error) {
			calls++
			if calls <= failures {
				return FetchResult{}, fmt.Errorf("down %d", calls)
			}
			return FetchResult{Value: "v", Index: 3}, nil
		})
		c, _ := bubble(t)
		c.RegisterType("t", typ, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 10)
		require.NoError(t, c.Notify(ctx, "t", RequestInfo{Key: "k", MaxAge: 10 * time.Second}, "id", ch))

		for i := 1; i <= failures; i++ {
			ev := recvEvent(t, ch, 2*CacheRefreshMaxWait)
			require.Equal(t, "id", ev.CorrelationID)
			require.EqualError(t, ev.Err, fmt.Sprint("down ", i))
			require.Nil(t, ev.Result)
		}
		ev := recvEvent(t, ch, 2*CacheRefreshMaxWait)
		require.Equal(t, UpdateEvent{CorrelationID: "id", Result: "v", Meta: ResultMeta{Index: 3}}, ev)
		requireBackOff(t, times()[:failures+1], 0)

		time.Sleep(time.Minute) // polls that find the value unchanged
		requireNoEvent(t, ch)
		cancel()
	})
}

// ---------------------------------------------------------------------------
// Contexts.

// TestRegression23368_RefreshNotTiedToCallerContext pins that the context
// of the GetContext that created an entry bounds only that Get: cancelled
// during the first fetch, it ends the Get with its error, but the fetch and
// the background refresh that follows go on, with contexts of their own
// that are not done (Consul #23368).
//
// The seed had no contexts; the defect lies in the obvious way to add
// them, which later Consul versions took: the fetch, and the refresh it
// starts, inherit the context of the Get that caused them. One caller
// giving up (an HTTP client disconnecting) then cancels the refresh that
// every other reader of the entry relies on, and the entry silently goes
// stale.
func TestRegression23368_RefreshNotTiedToCallerContext(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		var log fetchLog
		var mu sync.Mutex
		var ctxErrs []error
		c.RegisterType("t", contextType{blocking: true, fetch: func(ctx context.Context, o FetchOptions, r Request) (FetchResult, error) {
			log.add(o, r)
			if o.MinIndex == 0 {
				sleeping(5*time.Second, release)()
			}
			mu.Lock()
			ctxErrs = append(ctxErrs, ctx.Err())
			mu.Unlock()
			return FetchResult{Value: o.MinIndex + 1, Index: o.MinIndex + 1}, nil
		}}, &RegisterOptions{Refresh: true, RefreshTimer: time.Minute, RefreshTimeout: 10 * time.Minute})

		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel) // during the first fetch
		v, _, err := c.GetContext(ctx, "t", RequestInfo{Key: "k"})
		require.ErrorIs(t, err, context.Canceled)
		require.Nil(t, v)

		// The first fetch ends at 5s, then one refresh a minute: by 10m30s,
		// eleven fetches.
		time.Sleep(10*time.Minute + 29*time.Second)
		require.Equal(t, 11, log.count(), "the refresh went on")
		mu.Lock()
		require.Equal(t, make([]error, 11), ctxErrs, "no fetch saw its context done")
		mu.Unlock()
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, uint64(11), v)
		require.Equal(t, ResultMeta{Hit: true, Index: 11}, meta)
	})
}

// TestRegression_BypassHonoursTimeout pins that a Get that bypasses the
// cache (an empty Key) keeps the promises of any Get: it returns (nil, no
// meta, no error) when its Timeout passes, ctx.Err() when its context ends
// and ErrClosed when the cache closes, while the fetch hangs; a ContextType
// then sees its context done; after Close it fetches nothing.
//
// The seed called Fetch directly in the caller's goroutine and returned
// what it returned: the Timeout was ignored, a hung fetch hung the caller
// for good, and Close did not stop bypass fetches.
func TestRegression_BypassHonoursTimeout(t *testing.T) {
	t.Parallel()

	t.Run("Timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			typ := TestType(t)
			var log fetchLog
			log.on(typ, waitingFor(release), FetchResult{Value: "late", Index: 9}, nil)
			c.RegisterType("t", typ, nil)

			r := requireReturnedAfter(t, goGet(c, "t", RequestInfo{Timeout: time.Second}), time.Second)
			require.Equal(t, getResult{}, r, "no value, no meta, no error")
			require.Equal(t, 1, log.count())
		})
	})

	t.Run("FetchContext", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			type abandon struct {
				at  time.Time
				err error
			}
			abandoned := make(chan abandon, 3)
			c.RegisterType("t", contextType{fetch: func(ctx context.Context, _ FetchOptions, _ Request) (FetchResult, error) {
				select {
				case <-ctx.Done():
				case <-release: // never cancelled: end with the test
					return FetchResult{}, errors.New("not cancelled")
				}
				abandoned <- abandon{time.Now(), ctx.Err()}
				return FetchResult{}, ctx.Err()
			}}, nil)
			requireAbandoned := func(at time.Time) {
				t.Helper()
				synctest.Wait()
				select {
				case a := <-abandoned:
					require.Equal(t, at, a.at, "the fetch's context ended with the Get")
					require.ErrorIs(t, a.err, context.Canceled)
				default:
					t.Fatal("the fetch's context is not done")
				}
			}

			start := time.Now()
			r := requireReturnedAfter(t, goGet(c, "t", RequestInfo{Timeout: time.Second}), time.Second)
			require.Equal(t, getResult{}, r, "no value, no meta, no error")
			requireAbandoned(start.Add(time.Second))

			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(5*time.Second, cancel)
			start = time.Now()
			r = requireReturnedAfter(t, goGetContext(ctx, c, "t", RequestInfo{}), 5*time.Second)
			require.ErrorIs(t, r.Err, context.Canceled)
			require.Nil(t, r.Value)
			require.Equal(t, ResultMeta{}, r.Meta)
			requireAbandoned(start.Add(5 * time.Second))

			start = time.Now()
			r = requireReturned(t, goGetContext(ctx, c, "t", RequestInfo{})) // already cancelled
			require.ErrorIs(t, r.Err, context.Canceled)
			require.Zero(t, time.Since(start))
			requireAbandoned(start)
		})
	})

	// A bypassing Get waiting for a value gets the result of its fetch
	// after Close (the seed's promise for Gets in flight); one waiting for
	// a change (MinIndex) ends at Close with ErrClosed, and its fetch's
	// context with it.
	t.Run("Close", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			var fetches atomic.Int32
			abandoned := make(chan error, 1)
			gate := make(chan struct{})
			c.RegisterType("t", contextType{fetch: func(ctx context.Context, o FetchOptions, _ Request) (FetchResult, error) {
				fetches.Add(1)
				select {
				case <-ctx.Done():
				case <-gate:
					return FetchResult{Value: "v", Index: 2}, nil
				case <-release: // never cancelled: end with the test
					return FetchResult{}, errors.New("not cancelled")
				}
				abandoned <- ctx.Err()
				return FetchResult{}, ctx.Err()
			}}, nil)

			value := goGet(c, "t", RequestInfo{})
			change := goGet(c, "t", RequestInfo{MinIndex: 1})
			requireBlocked(t, value)
			requireBlocked(t, change)
			start := time.Now()
			require.NoError(t, c.Close())
			r := requireReturned(t, change)
			require.ErrorIs(t, r.Err, ErrClosed)
			require.Nil(t, r.Value)
			require.Zero(t, time.Since(start))
			select {
			case err := <-abandoned:
				require.ErrorIs(t, err, context.Canceled)
			default:
				t.Fatal("the blocking fetch's context is not done after Close")
			}
			requireBlocked(t, value)
			close(gate)
			r = requireReturned(t, value)
			require.NoError(t, r.Err)
			require.Equal(t, "v", r.Value, "the Get in flight gets its fetch's result")

			v, _, err := c.Get("t", RequestInfo{})
			require.ErrorIs(t, err, ErrClosed)
			require.Nil(t, v)
			synctest.Wait()
			require.Equal(t, int32(2), fetches.Load(), "no fetch after Close")
		})
	})
}

// ---------------------------------------------------------------------------
// Partitions, registration and input.

// TestRegression_KeyCollisions pins that entries are partitioned exactly:
// requests that differ in type, datacenter, token or key never share an
// entry, whatever the fields contain. Each gets its own fetch and value.
//
// The seed keyed entries by fmt.Sprintf("%s/%s/%s/%s", type, dc, token,
// key), so datacenter "a/b" with token "c" and datacenter "a" with token
// "b/c" shared an entry: one ACL token could be served data fetched with
// another.
func TestRegression_KeyCollisions(t *testing.T) {
	t.Parallel()
	c := TestCache(t)
	var fetches atomic.Int32
	for _, name := range []string{"t", "a", "a/b"} {
		c.RegisterType(name, FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			fetches.Add(1)
			i := r.CacheInfo()
			return FetchResult{Value: fetchedPartition{name, i.Datacenter, i.Token, i.Key}, Index: 1}, nil
		}), nil)
	}
	// Each group is one entry under a key made by joining the fields with
	// "/" (or, for the last, with NUL bytes).
	groups := [][]fetchedPartition{
		{{"t", "a/b", "c", "k"}, {"t", "a", "b/c", "k"}, {"t", "a", "b", "c/k"}},
		{{"a/b", "c", "tok", "k"}, {"a", "b/c", "tok", "k"}, {"a", "b", "c/tok", "k"}},
		{{"t", "", "a/b", "k"}, {"t", "", "a", "b/k"}, {"t", "/a", "b", "k"}},
		{{"t", "\x00", "", "k"}, {"t", "", "\x00", "k"}, {"t", "", "", "\x00k"}},
	}

	var n int32
	for round := 0; round < 2; round++ {
		for _, group := range groups {
			for _, p := range group {
				v, meta := requireGet(t, c, p.Type, RequestInfo{Datacenter: p.DC, Token: p.Token, Key: p.Key})
				require.Equal(t, p, v, "round %d", round)
				require.Equal(t, round == 1, meta.Hit, "round %d: %+v", round, p)
				if round == 0 {
					n++
				}
			}
		}
	}
	require.Equal(t, n, fetches.Load(), "one fetch per partition")
}

// TestRegression_RegisterTypeCopiesOptions pins that RegisterType keeps a
// copy of its options: it writes no default into the caller's struct, and
// changing the struct afterwards changes nothing.
//
// The seed kept the caller's pointer and wrote the 72-hour LastGetTTL
// default into it, so options shared between types, or reused by the
// caller, changed registered types behind the cache's back.
func TestRegression_RegisterTypeCopiesOptions(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var plainLog, refreshLog fetchLog
		plainOpts := &RegisterOptions{}
		c.RegisterType("plain", indexType(t, &plainLog), plainOpts)
		refreshed := RegisterOptions{Refresh: true, RefreshTimer: time.Minute, LastGetTTL: 10*time.Minute + 30*time.Second}
		refreshOpts := &refreshed
		c.RegisterType("refresh", indexType(t, &refreshLog), refreshOpts)
		require.Equal(t, RegisterOptions{}, *plainOpts, "no default written")
		require.Equal(t, RegisterOptions{Refresh: true, RefreshTimer: time.Minute, LastGetTTL: 10*time.Minute + 30*time.Second}, *refreshOpts)

		// Turn each into the other: the cache must not notice.
		*plainOpts = RegisterOptions{Refresh: true, RefreshTimer: time.Second, LastGetTTL: time.Minute}
		*refreshOpts = RegisterOptions{}

		requireGet(t, c, "plain", RequestInfo{Key: "k"})
		requireGet(t, c, "refresh", RequestInfo{Key: "k"})
		time.Sleep(time.Hour)

		_, meta := requireGet(t, c, "plain", RequestInfo{Key: "k"})
		require.True(t, meta.Hit, "still the 72h default TTL")
		require.Equal(t, 1, plainLog.count(), "still no refresh")
		require.Equal(t, 11, refreshLog.count(), "refreshed every minute until evicted at 10m30s")
		_, meta = requireGet(t, c, "refresh", RequestInfo{Key: "k"})
		require.False(t, meta.Hit, "evicted after its own LastGetTTL")
	})
}

// TestRegression_BadInput pins that misuse is reported, not turned into a
// crash, a hang or a silent default: Get, GetContext and Notify reject a
// nil Request, a negative Timeout or MaxAge (and Notify a nil channel) with
// an error, fetching nothing and starting no watch; Get of an unknown type
// is an error; RegisterType panics, registering nothing, on an empty name,
// a nil Type or a negative duration. Registering a type again is no misuse:
// the cached value is still served, and the next fetch uses the new Type.
//
// The seed called CacheInfo on a nil Request (a nil-pointer panic);
// ignored negative Timeouts and MaxAges; let a watch on a nil channel block
// for ever on its first send; and registered anything, so that a nil Type
// panicked in the first Get and a negative LastGetTTL expired every entry
// at once.
func TestRegression_BadInput(t *testing.T) {
	t.Parallel()

	t.Run("Requests", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			var log fetchLog
			c.RegisterType("t", indexType(t, &log), nil)
			ctx := t.Context()
			ch := make(chan UpdateEvent, 1)

			_, _, err := c.Get("t", nil)
			require.ErrorContains(t, err, "nil Request")
			_, _, err = c.GetContext(ctx, "t", nil)
			require.ErrorContains(t, err, "nil Request")
			require.ErrorContains(t, c.Notify(ctx, "t", nil, "id", ch), "nil Request")

			for _, info := range []RequestInfo{
				{Key: "k", Timeout: -time.Second},
				{Key: "k", MaxAge: -time.Second},
				{Timeout: -time.Second}, // a bypass
				{MaxAge: -time.Second},
			} {
				v, _, err := c.Get("t", info)
				require.Error(t, err, "%+v", info)
				require.Nil(t, v, "%+v", info)
				_, _, err = c.GetContext(ctx, "t", info)
				require.Error(t, err, "%+v", info)
				require.Error(t, c.Notify(ctx, "t", info, "id", ch), "%+v", info)
			}
			require.Error(t, c.Notify(ctx, "t", RequestInfo{Key: "k"}, "id", nil), "a nil channel")

			for _, key := range []string{"k", ""} {
				_, _, err := c.Get("nope", RequestInfo{Key: key})
				require.ErrorContains(t, err, "unknown type", "key %q", key)
			}

			synctest.Wait()
			require.Zero(t, log.count(), "nothing was fetched")
			require.Zero(t, liveWatches(t, c), "no watch started")
			require.Empty(t, ch)
		})
	})

	t.Run("RegisterType", func(t *testing.T) {
		c := TestCache(t)
		typ := TestType(t)
		for _, tc := range []struct {
			name string
			typ  Type
			opts *RegisterOptions
			want string
		}{
			{"", typ, nil, "empty type name"},
			{"x", nil, nil, "nil Type"},
			{"x", typ, &RegisterOptions{LastGetTTL: -time.Second}, "negative"},
			{"x", typ, &RegisterOptions{RefreshTimer: -time.Second}, "negative"},
			{"x", typ, &RegisterOptions{Refresh: true, RefreshTimeout: -time.Second}, "negative"},
		} {
			v := panicValue(func() { c.RegisterType(tc.name, tc.typ, tc.opts) })
			require.NotNil(t, v, "RegisterType(%q, %v, %+v) did not panic", tc.name, tc.typ, tc.opts)
			require.Contains(t, fmt.Sprint(v), tc.want)
		}
		_, _, err := c.Get("x", RequestInfo{Key: "k"})
		require.ErrorContains(t, err, "unknown type", "a rejected registration registers nothing")
		require.Nil(t, c.typeEntry(""))
		typ.AssertNotCalled(t, "Fetch", mock.Anything, mock.Anything)
	})

	t.Run("ReRegister", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			a := TestType(t)
			a.Static(FetchResult{Value: "a", Index: 1}, nil)
			b := TestType(t)
			b.Static(FetchResult{Value: "b", Index: 2}, nil)

			c.RegisterType("t", a, nil)
			v, _ := requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, "a", v)
			c.RegisterType("t", b, nil)
			v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, "a", v)
			require.Equal(t, ResultMeta{Hit: true, Index: 1}, meta, "the cached value is still served")
			v, meta = requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 1})
			require.Equal(t, "b", v, "the next fetch uses the new Type")
			require.Equal(t, ResultMeta{Index: 2}, meta)
			a.AssertNumberOfCalls(t, "Fetch", 1)
			b.AssertNumberOfCalls(t, "Fetch", 1)
		})
	})

	t.Run("ReRegisterOptions", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			a := TestType(t)
			a.Static(FetchResult{Value: "a", Index: 1}, nil)
			c.RegisterType("t", a, nil)
			requireGet(t, c, "t", RequestInfo{Key: "k"})
			time.Sleep(time.Minute)
			_, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, ResultMeta{Hit: true, Index: 1, Age: time.Minute}, meta)
			c.RegisterType("t", a, &RegisterOptions{Refresh: true, RefreshTimer: time.Hour})
			_, meta = requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, ResultMeta{Hit: true, Index: 1, Age: time.Minute}, meta,
				"a hit follows the new registration: not refreshed yet, the value has its age")
			synctest.Wait()
			a.AssertNumberOfCalls(t, "Fetch", 2) // the hit started the refresh
			_, meta = requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, ResultMeta{Hit: true, Index: 1}, meta, "in contact, a refreshed value has no age")
		})
	})
}

// ---------------------------------------------------------------------------
// Panics.

// TestRegression_PanickingFetch pins that a Fetch that panics fails its
// fetch, not the process: the waiting Get gets an error naming the type and
// quoting the panic value; fetch_error and fetch_panic are counted, overall
// and per type; a refreshing type goes on with its usual back-off.
//
// The seed called Fetch in a bare goroutine, so one panicking Type took the
// whole agent down.
func TestRegression_PanickingFetch(t *testing.T) {
	sink := installSink(t) // metrics: not parallel
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		c.RegisterType("panic_once", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			panic("kaboom 42")
		}), nil)
		var log fetchLog
		c.RegisterType("panic_refresh", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			log.add(o, r)
			panic(fmt.Errorf("assignment to entry in nil map %d", 7))
		}), &RegisterOptions{Refresh: true})

		v, meta, err := c.Get("panic_once", RequestInfo{Key: "k"})
		require.Error(t, err)
		require.Contains(t, err.Error(), "panic_once")
		require.Contains(t, err.Error(), "kaboom 42")
		require.Nil(t, v)
		require.Equal(t, ResultMeta{}, meta)

		_, _, err = c.Get("panic_refresh", RequestInfo{Key: "k"})
		require.ErrorContains(t, err, "panic_refresh")
		require.ErrorContains(t, err, "assignment to entry in nil map 7")

		time.Sleep(10 * time.Minute)
		synctest.Wait()
		times := log.startTimes()
		require.GreaterOrEqual(t, len(times), 10, "the refresh went on")
		requireBackOff(t, times, 0)

		n := len(times)
		for name, want := range map[string]int{
			"consul.cache.fetch_error":               1 + n,
			"consul.cache.fetch_panic":               1 + n,
			"consul.cache.panic_once.fetch_error":    1,
			"consul.cache.panic_once.fetch_panic":    1,
			"consul.cache.panic_refresh.fetch_error": n,
			"consul.cache.panic_refresh.fetch_panic": n,
		} {
			require.Equal(t, want, sinkCounter(sink, name), name)
		}
	})
}

// ---------------------------------------------------------------------------
// Found by trying the cache as a new user would, against Consul v1.4.5's
// documented behaviour.

// TestRegression_CloseLetsGetsInFlightFinish pins the seed's promise for
// Close: fetches in flight run to completion and the Gets waiting on them
// get their result. A Get waiting for a value it does not have (a first
// fetch, a retry after an error, a revalidation) gets the result of the
// fetch it waits on, whose context Close does not cancel; its own Timeout
// still applies. Fetches nobody needs (a background refresh, a Notify
// watch's) are cancelled, and nothing new starts.
//
// Close used to wake every waiting Get with ErrClosed and cancel every
// fetch, though the fetch then returned a value.
func TestRegression_CloseLetsGetsInFlightFinish(t *testing.T) {
	t.Parallel()
	// ctxType fetches "v" once gate is closed, or fails with its context.
	ctxType := func(gate <-chan struct{}, cancelled *atomic.Int32) contextType {
		return contextType{fetch: func(ctx context.Context, o FetchOptions, _ Request) (FetchResult, error) {
			select {
			case <-gate:
				return FetchResult{Value: "v", Index: o.MinIndex + 1}, nil
			case <-ctx.Done():
				cancelled.Add(1)
				return FetchResult{}, ctx.Err()
			}
		}}
	}

	t.Run("FirstFetch", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			gate := make(chan struct{})
			var cancelled atomic.Int32
			c.RegisterType("t", ctxType(gate, &cancelled), nil)
			plain := goGet(c, "t", RequestInfo{Key: "k"})
			timed := goGet(c, "t", RequestInfo{Key: "k", Timeout: time.Minute})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			withCtx := goGetContext(ctx, c, "t", RequestInfo{Key: "k"})
			requireBlocked(t, plain)
			requireBlocked(t, timed)
			requireBlocked(t, withCtx)

			require.NoError(t, c.Close())
			requireBlocked(t, plain)
			requireBlocked(t, timed)
			requireBlocked(t, withCtx)
			v, _, err := c.Get("t", RequestInfo{Key: "other"})
			require.ErrorIs(t, err, ErrClosed, "nothing new starts")
			require.Nil(t, v)

			close(gate)
			for _, ch := range []<-chan getResult{plain, timed, withCtx} {
				r := requireReturned(t, ch)
				require.NoError(t, r.Err)
				require.Equal(t, "v", r.Value)
			}
			require.Zero(t, cancelled.Load(), "Close cancelled a fetch that Gets wait on")
			v, meta, err := c.Get("t", RequestInfo{Key: "k"})
			require.NoError(t, err, "values stay readable")
			require.Equal(t, "v", v)
			require.True(t, meta.Hit)
		})
	})

	t.Run("TimeoutStillApplies", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			var cancelled atomic.Int32
			c.RegisterType("t", ctxType(release, &cancelled), nil)
			timed := goGet(c, "t", RequestInfo{Key: "k", Timeout: time.Minute})
			requireBlocked(t, timed)
			require.NoError(t, c.Close())
			start := time.Now()
			r := <-timed
			require.Equal(t, time.Minute, time.Since(start))
			require.NoError(t, r.Err, "a Get that times out returns no error")
			require.Nil(t, r.Value)
			synctest.Wait()
			require.Equal(t, int32(1), cancelled.Load(), "once nobody waits, the fetch is cancelled")
		})
	})

	t.Run("RetryAfterError", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			gate := make(chan struct{})
			var calls atomic.Int32
			c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				if calls.Add(1) == 1 {
					return FetchResult{}, errors.New("down")
				}
				<-gate
				return FetchResult{Value: "v", Index: 2}, nil
			}), nil)
			_, _, err := c.Get("t", RequestInfo{Key: "k"})
			require.EqualError(t, err, "down")
			retry := goGet(c, "t", RequestInfo{Key: "k"})
			requireBlocked(t, retry)
			require.NoError(t, c.Close())
			requireBlocked(t, retry)
			close(gate)
			r := requireReturned(t, retry)
			require.NoError(t, r.Err)
			require.Equal(t, "v", r.Value)
		})
	})

	t.Run("Revalidation", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			gate := make(chan struct{})
			var calls atomic.Int32
			c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				if calls.Add(1) > 1 {
					<-gate
				}
				return FetchResult{Value: calls.Load(), Index: uint64(calls.Load())}, nil
			}), nil)
			requireGet(t, c, "t", RequestInfo{Key: "k"})
			time.Sleep(time.Minute)
			fresh := goGet(c, "t", RequestInfo{Key: "k", MaxAge: time.Second})
			requireBlocked(t, fresh)
			require.NoError(t, c.Close())
			requireBlocked(t, fresh)
			close(gate)
			r := requireReturned(t, fresh)
			require.NoError(t, r.Err)
			require.Equal(t, int32(2), r.Value)
		})
	})

	// A Get waiting for a change returns ErrClosed, whichever it sees
	// first: Close's wake-up or the error its cancelled fetch stored.
	t.Run("ChangeWaiterGetsErrClosed", func(t *testing.T) {
		for range 50 {
			synctest.Test(t, func(t *testing.T) {
				c, _ := bubble(t)
				c.RegisterType("t", contextType{blocking: true, fetch: func(ctx context.Context, o FetchOptions, _ Request) (FetchResult, error) {
					if o.MinIndex == 0 {
						return FetchResult{Value: "v", Index: 1}, nil
					}
					<-ctx.Done()
					return FetchResult{}, ctx.Err()
				}}, nil)
				requireGet(t, c, "t", RequestInfo{Key: "k"})
				change := goGet(c, "t", RequestInfo{Key: "k", MinIndex: 1})
				requireBlocked(t, change)
				require.NoError(t, c.Close())
				r := requireReturned(t, change)
				require.ErrorIs(t, r.Err, ErrClosed)
				require.Equal(t, "v", r.Value)
			})
		}
	})

	t.Run("UnneededFetchesCancelled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			var cancelled atomic.Int32
			refreshed := ctxType(release, &cancelled)
			first := true
			c.RegisterType("t", contextType{blocking: true, fetch: func(ctx context.Context, o FetchOptions, r Request) (FetchResult, error) {
				if first {
					first = false
					return FetchResult{Value: "v", Index: 1}, nil
				}
				return refreshed.fetch(ctx, o, r)
			}}, &RegisterOptions{Refresh: true})
			requireGet(t, c, "t", RequestInfo{Key: "k"})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch := make(chan UpdateEvent, 4)
			require.NoError(t, c.Notify(ctx, "t", RequestInfo{Key: "k"}, "id", ch))
			require.Equal(t, "v", recvEvent(t, ch, time.Second).Result)
			synctest.Wait()
			require.Zero(t, cancelled.Load())

			require.NoError(t, c.Close())
			synctest.Wait()
			require.Equal(t, int32(1), cancelled.Load(), "the refresh (and the watch's wait on it) was cancelled")
			require.Zero(t, liveWatches(t, c), "the watch ended")
		})
	})
}

// TestRegression_EmptyResultsBackOff pins that a Fetch returning
// FetchResult{} and no error (no value, no index) makes a waiting Get back
// off like a failing refresh, instead of fetching again at once: a handful
// of fetches before its Timeout, and, without a Timeout, a back-off that
// keeps growing rather than a core kept busy.
//
// Each new loop used to start its attempt count at 0: 215 fetches in
// 500 ms for a blocking Get on an existing value, 13,610 in 100 ms for a
// new key.
func TestRegression_EmptyResultsBackOff(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T, blocking bool) (*Cache, *atomic.Int32) {
		c, _ := bubble(t)
		var calls atomic.Int32
		fetch := func(o FetchOptions, _ Request) (FetchResult, error) {
			time.Sleep(2 * time.Millisecond)
			if calls.Add(1) == 1 && blocking {
				return FetchResult{Value: "v", Index: 5}, nil
			}
			return FetchResult{}, nil
		}
		if blocking {
			c.RegisterType("t", BlockingFetchFunc(fetch), nil)
		} else {
			c.RegisterType("t", FetchFunc(fetch), nil)
		}
		return c, &calls
	}

	t.Run("BlockingGetOnValue", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, calls := setup(t, true)
			requireGet(t, c, "t", RequestInfo{Key: "k"})
			v, meta, err := c.Get("t", RequestInfo{Key: "k", MinIndex: 5, Timeout: 500 * time.Millisecond})
			require.NoError(t, err)
			require.Equal(t, "v", v)
			require.Equal(t, uint64(5), meta.Index)
			require.LessOrEqual(t, calls.Load(), int32(1+CacheRefreshBackoffMin+1))
		})
	})

	t.Run("NewKey", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, calls := setup(t, false)
			v, _, err := c.Get("t", RequestInfo{Key: "k", Timeout: 100 * time.Millisecond})
			require.NoError(t, err)
			require.Nil(t, v)
			require.LessOrEqual(t, calls.Load(), int32(CacheRefreshBackoffMin+1))
		})
	})

	t.Run("NoTimeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, calls := setup(t, false)
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			v, _, err := c.GetContext(ctx, "t", RequestInfo{Key: "k"})
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Nil(t, v)
			// 3 at once, then waits of 2 s, 4 s, ... up to 1-2 minutes:
			// about 40 in an hour.
			require.Less(t, calls.Load(), int32(80))
		})
	})
}

// TestRegression_StoppedRefreshNoErrorToPlainGet pins the seed's rule for
// a Get without MinIndex that finds a valid value: it gets the value and
// no error, whatever the fetches that ended meanwhile returned, here a
// StopRefresh that ended the background refresh.
//
// A Get woken by the first fetch of a refreshing type returned the value
// and the terminal error when the loop had run ahead (a NotModified
// refresh, then StopRefresh) before it looked; and a Get that restarted a
// stopped refresh returned the value with the error of that fetch.
func TestRegression_StoppedRefreshNoErrorToPlainGet(t *testing.T) {
	t.Parallel()
	terminal := StopRefresh(errors.New("token deleted"))

	t.Run("LoopRanAhead", func(t *testing.T) {
		for range 50 {
			synctest.Test(t, func(t *testing.T) {
				c, _ := bubble(t)
				var calls atomic.Int32
				c.RegisterType("t", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
					switch calls.Add(1) {
					case 1:
						return FetchResult{Value: "v", Index: 1}, nil
					case 2:
						return FetchResult{NotModified: true, Index: 1}, nil
					}
					return FetchResult{}, terminal
				}), &RegisterOptions{Refresh: true})
				v, _, err := c.Get("t", RequestInfo{Key: "k"})
				require.NoError(t, err)
				require.Equal(t, "v", v)
			})
		}
	})

	t.Run("Restart", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			var calls atomic.Int32
			c.RegisterType("t", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				if calls.Add(1) == 1 {
					return FetchResult{Value: "v", Index: 1}, nil
				}
				return FetchResult{}, terminal
			}), &RegisterOptions{Refresh: true})
			requireGet(t, c, "t", RequestInfo{Key: "k"})
			synctest.Wait()
			require.Equal(t, int32(2), calls.Load(), "the refresh stopped")

			v, meta, err := c.Get("t", RequestInfo{Key: "k"})
			require.NoError(t, err)
			require.Equal(t, "v", v)
			require.False(t, meta.Hit, "the Get fetched again")
			require.Equal(t, int32(3), calls.Load())
			_, _, err = c.Get("t", RequestInfo{Key: "k", MinIndex: 1})
			require.ErrorIs(t, err, terminal, "a Get waiting for something newer gets the error")
		})
	})
}

// TestRegression_RefreshWithoutLoop pins that an entry of a refreshing type
// that no background refresh keeps current is refreshed from its next Get
// on, with the age of its value meanwhile: a type registered again with
// Refresh, and an entry whose refresh loop ended in runtime.Goexit.
//
// Such entries were served as fresh forever: no loop was started, Age read
// 0 and every hit extended their TTL.
func TestRegression_RefreshWithoutLoop(t *testing.T) {
	t.Parallel()

	t.Run("ReRegistered", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			var index atomic.Uint64
			index.Store(1)
			typ := BlockingFetchFunc(func(o FetchOptions, _ Request) (FetchResult, error) {
				if o.MinIndex >= index.Load() {
					select { // a blocking query with no change
					case <-time.After(time.Hour):
					case <-release:
					}
				}
				return FetchResult{Value: index.Load(), Index: index.Load()}, nil
			})
			c.RegisterType("t", typ, nil)
			requireGet(t, c, "t", RequestInfo{Key: "k"})
			time.Sleep(time.Minute)
			c.RegisterType("t", typ, &RegisterOptions{Refresh: true, RefreshTimeout: time.Hour})

			_, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, ResultMeta{Hit: true, Index: 1, Age: time.Minute}, meta, "not refreshed: the value's age")
			synctest.Wait() // the refresh blocks on index 1
			index.Store(2)
			time.Sleep(2 * time.Hour)
			v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, uint64(2), v, "refreshed in the background since the last Get")
			require.Equal(t, ResultMeta{Hit: true, Index: 2}, meta)
		})
	})

	t.Run("LoopExited", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, _ := bubble(t)
			var calls atomic.Int32
			c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, _ Request) (FetchResult, error) {
				switch calls.Add(1) {
				case 1:
					return FetchResult{Value: "v1", Index: 1}, nil
				case 2:
					runtime.Goexit()
				}
				time.Sleep(time.Second)
				return FetchResult{Value: "v3", Index: 3}, nil
			}), &RegisterOptions{Refresh: true, RefreshTimer: time.Minute})
			requireGet(t, c, "t", RequestInfo{Key: "k"})
			time.Sleep(2 * time.Minute)
			require.Equal(t, int32(2), calls.Load(), "the refresh exited")

			_, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.True(t, meta.Hit)
			require.Equal(t, 2*time.Minute, meta.Age, "not refreshed: the value's age")
			time.Sleep(2 * time.Second)
			v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, "v3", v, "the hit restarted the refresh")
			require.Equal(t, ResultMeta{Hit: true, Index: 3}, meta)
		})
	})
}

// TestRegression_FirstValueReleased pins that an entry's first value is
// garbage once a refresh replaced it.
//
// The first result lived inside the entry's own allocation, so an entry
// held its first value (and State) as long as it lived, beside the current
// one.
func TestRegression_FirstValueReleased(t *testing.T) {
	c := TestCache(t)
	var calls atomic.Int32
	firstValue := make(chan weak.Pointer[[]byte], 1)
	c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, _ Request) (FetchResult, error) {
		n := calls.Add(1)
		if n > 4 {
			<-t.Context().Done() // no more refreshes
			return FetchResult{}, t.Context().Err()
		}
		v := make([]byte, 1<<20)
		if n == 1 {
			firstValue <- weak.Make(&v)
		}
		return FetchResult{Value: &v, State: &v, Index: uint64(n)}, nil
	}), &RegisterOptions{Refresh: true})
	requireGet(t, c, "t", RequestInfo{Key: "k"})
	wp := <-firstValue
	require.Eventually(t, func() bool { return calls.Load() == 5 }, 10*time.Second, time.Millisecond)
	require.Eventually(t, func() bool {
		runtime.GC()
		return wp.Value() == nil
	}, 10*time.Second, 10*time.Millisecond, "the first value is still reachable after three refreshes")
}

// TestRegression_FetchContextIsReal pins that contexts a ContextType
// derives from its fetch's context cost no goroutine each.
//
// The fetch context was a type of the cache's own, which the context
// package can only watch from a goroutine per derived context: 100
// derived contexts, 100 goroutines.
func TestRegression_FetchContextIsReal(t *testing.T) {
	c := TestCache(t)
	during := make(chan int, 1)
	c.RegisterType("t", contextType{fetch: func(ctx context.Context, _ FetchOptions, _ Request) (FetchResult, error) {
		before := runtime.NumGoroutine()
		var cancels []context.CancelFunc
		for range 100 {
			_, cancel := context.WithTimeout(ctx, time.Hour)
			cancels = append(cancels, cancel)
		}
		during <- runtime.NumGoroutine() - before
		for _, cancel := range cancels {
			cancel()
		}
		return FetchResult{Value: "v", Index: 1}, nil
	}}, nil)
	requireGet(t, c, "t", RequestInfo{Key: "k"})
	require.LessOrEqual(t, <-during, 5, "goroutines started by 100 derived contexts")
}

// TestRegression_NilContext pins that the exported functions that take a
// context reject a nil one with an error, at once.
//
// GetContext panicked on a miss, and Notify returned nil, then crashed the
// process from the watch's goroutine.
func TestRegression_NilContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var calls atomic.Int32
		c.RegisterType("t", BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			calls.Add(1)
			return FetchResult{Value: "v", Index: 1}, nil
		}), nil)
		var nilCtx context.Context
		_, _, err := c.GetContext(nilCtx, "t", RequestInfo{Key: "k"})
		require.ErrorContains(t, err, "nil context")
		_, _, err = GetAs[string](nilCtx, c, "t", RequestInfo{Key: "k"})
		require.ErrorContains(t, err, "nil context")
		ch := make(chan UpdateEvent, 1)
		require.ErrorContains(t, c.Notify(nilCtx, "t", RequestInfo{Key: "k"}, "id", ch), "nil context")
		require.ErrorContains(t, c.NotifyCallback(nilCtx, "t", RequestInfo{Key: "k"}, "id",
			func(context.Context, UpdateEvent) {}), "nil context")
		synctest.Wait()
		require.Zero(t, calls.Load(), "nothing was fetched")
		require.Zero(t, liveWatches(t, c), "no watch started")
	})
}

// ---------------------------------------------------------------------------
// Expiry and MaxEntries eviction under one lock.

// fillHeap prepopulates n entries of a type "t" with LastGetTTL ttl,
// waits for the expiry loop to settle, and returns them in the order of
// their keys. It runs in a bubble: the loop then sleeps until time moves,
// which the test does not let it do, so the test alone works the heap.
func fillHeap(t *testing.T, c *Cache, n int, ttl time.Duration) []*entry {
	t.Helper()
	c.RegisterType("t", TestType(t), &RegisterOptions{LastGetTTL: ttl})
	es := make([]*entry, n)
	for i := range es {
		k := fmt.Sprint("k", i)
		require.NoError(t, c.Prepopulate("t", FetchResult{Value: i, Index: 1}, "", "", k))
		es[i] = c.lookupKey("t", "", "", k)
	}
	synctest.Wait()
	return es
}

// heapOps returns what was done to the heap since snap, a copy of the
// entries' expiry times: the entries evicted and those re-heaped (each
// entry, in the tests, is re-heaped at most once). c.expiryMu must be held.
func heapOps(snap map[*entry]int64) (ops int) {
	for e, exp := range snap {
		if e.heapIndex < 0 || e.expires != exp {
			ops++
		}
	}
	return ops
}

// expirySnapshot returns the expiry time of every entry in the heap.
// c.expiryMu must be held.
func expirySnapshot(c *Cache) map[*entry]int64 {
	snap := make(map[*entry]int64, len(c.expiry))
	for _, e := range c.expiry {
		snap[e] = e.expires
	}
	return snap
}

// TestRegression_ExpiryHeadBounded pins that no hold of expiryMu does more
// than evictBatch heap fixes and evictions together, however many entries
// come due at once after being hit: a hit only records its time, so each
// of them must be re-heaped when it comes due, and inserts (which take
// expiryMu) waited behind all of those re-heaps at once. Repeated batches
// still finish the job, with the seed's semantics: a hit entry stays, an
// idle one goes, and MaxEntries evicts the truly soonest first.
func TestRegression_ExpiryHeadBounded(t *testing.T) {
	const n, ttl = 8 * evictBatch, time.Hour
	t.Run("expiry", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) { checkExpiryBounded(t, n, ttl) })
	})
	t.Run("overflow", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) { checkOverflowBounded(t, n, ttl) })
	})
}

// checkExpiryBounded: n entries all due, the even ones hit since they were
// queued (and on top), the odd ones idle.
func checkExpiryBounded(t *testing.T, n int, ttl time.Duration) {
	c := TestCache(t)
	es := fillHeap(t, c, n, ttl)
	c.expiryMu.Lock()
	now := c.now()
	for i, e := range es {
		if i%2 == 0 {
			e.expires = now - 2
			e.lastAccess.Store(now)
		} else {
			e.expires = now - 1
			e.lastAccess.Store(now - int64(ttl) - 1)
		}
	}
	heap.Init(&c.expiry)
	c.expiryMu.Unlock()

	calls := 0
	for {
		calls++
		require.LessOrEqual(t, calls, 2*n/evictBatch, "the batches finish")
		c.expiryMu.Lock()
		snap := expirySnapshot(c)
		c.expiryMu.Unlock()
		wait, ok := c.expireDue()
		c.expiryMu.Lock()
		ops := heapOps(snap)
		c.expiryMu.Unlock()
		require.LessOrEqual(t, ops, evictBatch, "heap fixes and evictions in batch %d", calls)
		if !ok || wait > 0 {
			require.True(t, ok)
			require.Equal(t, ttl, wait, "next due: the hit entries, a TTL after their hit")
			break
		}
	}
	require.Equal(t, n/evictBatch, calls, "full batches")
	require.Equal(t, int64(n/2), c.count.Load())
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	requireHeap(t, c.expiry)
	for i, e := range es {
		if i%2 == 0 {
			require.Equal(t, now+int64(ttl), e.expires, "hit entry %d re-heaped at its true expiry", i)
		} else {
			require.True(t, e.evicted, "idle entry %d evicted", i)
		}
	}
}

// checkOverflowBounded: n entries, all stale in the heap, entry i truly
// expiring at now+i, and a bound of n/4: the first 3n/4 must go.
func checkOverflowBounded(t *testing.T, n int, ttl time.Duration) {
	c := TestCache(t)
	es := fillHeap(t, c, n, ttl)
	makeStale(c, es, ttl)
	s := *c.settings.Load()
	s.maxEntries = n / 4
	c.settings.Store(&s)

	var ev evictions
	for calls, more := 1, true; more; calls++ {
		require.LessOrEqual(t, calls, 2*n/evictBatch, "the batches finish")
		c.expiryMu.Lock()
		snap := expirySnapshot(c)
		c.expiryMu.Unlock()
		more = c.overflowBatch(c.now(), &ev)
		c.finishEvictions(&ev, c.metrics.evictSize)
		c.expiryMu.Lock()
		ops := heapOps(snap)
		c.expiryMu.Unlock()
		require.LessOrEqual(t, ops, evictBatch, "heap fixes and evictions in batch %d", calls)
	}
	require.Equal(t, int64(n/4), c.count.Load())
	requireSoonestEvicted(t, c, es, 3*n/4)

	// evictOverflow itself, in batches, ends with the bound respected.
	makeStale(c, es, ttl)
	s.maxEntries = n / 8
	c.settings.Store(&s)
	c.evictOverflow()
	require.Equal(t, int64(n/8), c.count.Load())
	requireSoonestEvicted(t, c, es, 7*n/8)
}

// makeStale makes the expiry times in the heap stale: entry i of es truly
// expires at now+i, but is queued as expiring a TTL before now.
func makeStale(c *Cache, es []*entry, ttl time.Duration) {
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	now := c.now()
	for i, e := range es {
		e.expires = now - int64(ttl)
		e.lastAccess.Store(now - int64(ttl) + int64(i))
	}
	heap.Init(&c.expiry)
}

// requireSoonestEvicted fails unless exactly the first k of es, the
// soonest to expire, were evicted, and the heap is sound.
func requireSoonestEvicted(t *testing.T, c *Cache, es []*entry, k int) {
	t.Helper()
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	requireHeap(t, c.expiry)
	for i, e := range es {
		require.Equal(t, i < k, e.evicted, "entry %d evicted", i)
	}
}

// reentrantSink is a go-metrics sink that calls into the cache from
// within a metric update, once: on the first increment of the counter
// named on, or, for on "entries_count", on the first fall of that gauge
// (an eviction). It sums the counters and keeps the gauge's last value.
type reentrantSink struct {
	metrics.BlackholeSink
	on   string
	call func()
	done chan struct{} // closed once call returned

	fired    atomic.Bool
	mu       sync.Mutex
	counters map[string]float32
	gauge    float32
}

func (s *reentrantSink) IncrCounterWithLabels(key []string, val float32, _ []metrics.Label) {
	name := key[len(key)-1]
	s.mu.Lock()
	s.counters[name] += val
	s.mu.Unlock()
	if name == s.on {
		s.fire()
	}
}

func (s *reentrantSink) SetGaugeWithLabels(key []string, val float32, _ []metrics.Label) {
	if key[len(key)-1] != "entries_count" {
		return
	}
	s.mu.Lock()
	fell := val < s.gauge
	s.gauge = val
	s.mu.Unlock()
	if fell && s.on == "entries_count" {
		s.fire()
	}
}

func (s *reentrantSink) fire() {
	if s.fired.CompareAndSwap(false, true) {
		s.call()
		close(s.done)
	}
}

// evicted returns the sum of the eviction counters, and the gauge.
func (s *reentrantSink) evicted() (n, gauge float32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters["evict_expired"] + s.counters["evict_size"], s.gauge
}

// TestRegression_MetricsOutsideExpiryLock pins that evictions emit their
// metrics once expiryMu is released: a sink is the embedder's code, and one
// that calls back into the cache (Prepopulate, a Get of a new key: both
// take expiryMu) deadlocked the expiry loop or the Get that evicted to
// honour MaxEntries. The counters stay exact: one per evicted entry.
//
// Not in a bubble: a goroutine blocked on a mutex does not count as
// blocked there, so the bubble would hang rather than report the deadlock;
// a generous deadline catches it instead.
func TestRegression_MetricsOutsideExpiryLock(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		on     string
		bySize bool
	}{
		{"evict_expired", false},
		{"evict_size", true},
		{"entries_count", false},
		{"entries_count", true},
	} {
		for _, call := range []string{"prepopulate", "get"} {
			t.Run(fmt.Sprintf("%s/size=%v/%s", tc.on, tc.bySize, call), func(t *testing.T) {
				t.Parallel()
				checkMetricsReentrant(t, tc.on, call, tc.bySize)
			})
		}
	}
}

// checkMetricsReentrant runs one case: the sink's callback makes call on
// the metric on; entries are evicted by size (MaxEntries 1) if bySize,
// else by expiry (a TTL of a millisecond).
func checkMetricsReentrant(t *testing.T, on, call string, bySize bool) {
	sink := &reentrantSink{on: on, done: make(chan struct{}), counters: map[string]float32{}}
	cfg := metrics.DefaultConfig("x")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	m, err := metrics.New(cfg, sink)
	require.NoError(t, err)
	o := &Options{Metrics: m}
	ttl := time.Millisecond
	if bySize {
		o.MaxEntries, ttl = 1, time.Hour
	}
	c := New(o)
	t.Cleanup(func() { c.Close() })
	c.RegisterType("t", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{Value: r.CacheInfo().Key, Index: 1}, nil
	}), &RegisterOptions{LastGetTTL: ttl})

	var callErr error
	sink.call = func() {
		if call == "prepopulate" {
			callErr = c.Prepopulate("t", FetchResult{Value: 1, Index: 1}, "", "", "inner")
		} else {
			_, _, callErr = c.Get("t", RequestInfo{Key: "inner"})
		}
	}
	// Fed from a goroutine of its own: evicting by size, the Prepopulate
	// that evicts is the one that would deadlock.
	const created = 3 // the two keys fed, and the sink's
	fed := make(chan error, 1)
	go func() {
		var err error
		for i := range created - 1 {
			err = errors.Join(err, c.Prepopulate("t", FetchResult{Value: i, Index: 1}, "", "", fmt.Sprint("k", i)))
		}
		fed <- err
	}()
	recvWithin(t, sink.done, "the sink's "+call+" from within "+on)
	require.NoError(t, callErr)
	require.NoError(t, recvWithin(t, fed, "feeding the cache"))

	// Every entry created is either still cached or counted once as evicted.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, gauge := sink.evicted()
		left := c.count.Load()
		if int(n)+int(left) == created && gauge == float32(left) && (bySize || left == 0) {
			break
		}
		require.True(t, time.Now().Before(deadline), "evicted %v, gauge %v, %d cached, of %d created", n, gauge, left, created)
		time.Sleep(time.Millisecond)
	}
}

// recvWithin returns what ch gives, failing unless it does within a deadline
// far beyond what the work takes: a deadlock, here, is a call that never
// returns.
func recvWithin[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("%s never returned: metrics were emitted under expiryMu", what)
		var zero T
		return zero
	}
}

// ---------------------------------------------------------------------------
// Hash flooding and hash collisions.

// TestRegression_HashFlooding: the key hash XORed the first eight bytes of
// each field with a public constant before multiplying, so a key of 8 to
// 16 bytes starting with that constant hashed to 0 whatever the cache's
// seed, type, datacenter or token. Anyone choosing keys (URL paths served
// through cachehttp, say) could put thousands of them in shard 0 on one
// probe sequence: every miss then scanned them all under the shard's lock
// and every hit scanned them without it. Keys crafted against the old hash,
// and keys sharing a long prefix, must now spread over shards and slots as
// random keys do.
func TestRegression_HashFlooding(t *testing.T) {
	t.Parallel()
	n := 20_000
	if testing.Short() {
		n = 5000
	}
	for _, kind := range adversarialKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			c := New(nil)
			defer c.Close()
			c.RegisterType("t", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				return FetchResult{}, errors.New("prepopulated only")
			}), nil)
			keys := adversarialKeys(kind, n)

			// Shards first: with the old hash, the crafted keys fail here
			// at once, before their filling takes quadratic time.
			perShard := make([]int, shardCount)
			hashes := make(map[uint64]bool, n)
			for _, k := range keys {
				key := c.makeKey(nil, "t", "dc1", "tok", k)
				perShard[key.shard()]++
				hashes[key.hash] = true
			}
			require.LessOrEqual(t, slices.Max(perShard), 2*n/shardCount,
				"the largest shard holds more than twice its share")
			require.Greater(t, len(hashes), n-10, "keys share hashes")

			for _, k := range keys {
				require.NoError(t, c.Prepopulate("t", FetchResult{Value: k, Index: 1}, "dc1", "tok", k))
			}
			mean, longest := probeLengths(c)
			require.LessOrEqual(t, mean, 3.0, "mean probe length")
			require.LessOrEqual(t, longest, 256, "longest probe")
		})
	}
}

// probeLengths returns the mean and the largest number of slots a lookup
// reads to find an entry of c, over all its entries.
func probeLengths(c *Cache) (mean float64, longest int) {
	var sum, n int
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		t := s.tab.Load()
		for j := range t.slots {
			sl := &t.slots[j]
			if e := sl.e.Load(); e != nil && e != tombstone {
				probes := int((uint64(j)-sl.hash.Load())&t.mask) + 1
				sum += probes
				n++
				longest = max(longest, probes)
			}
		}
		s.mu.Unlock()
	}
	return float64(sum) / float64(n), longest
}

// newCollidingCache returns a cache in which every partition hashes to 0:
// all share shard 0 and one probe sequence, and only the comparison of
// whole keys tells them apart.
func newCollidingCache() *Cache {
	c := New(nil)
	c.hashSeed.mask = 0 // no entry yet, and no lookup: nothing has hashed
	return c
}

// collidingPartitions returns partitions that differ in every field and in
// where their fields split, each the value its type's fetch returns.
func collidingPartitions() []entryKey {
	var ps []entryKey
	for _, typ := range []string{"a", "b"} {
		for _, dc := range []string{"", "dc1", "dc2"} {
			for _, token := range []string{"", "tok1", "tok2"} {
				for _, key := range []string{"k", "k2"} {
					ps = append(ps, entryKey{typ, dc, token, key})
				}
			}
		}
	}
	// Partitions too long to encode on the hit path's stack, compared
	// field by field: the same bytes split differently, and a field whose
	// length takes two bytes.
	long := strings.Repeat("x", 130)
	return append(ps,
		entryKey{"a", "dc1tok1", "", "k"},
		entryKey{"a", "", "dc1tok1", "k"},
		entryKey{"a", "dc1", "", "tok1k"},
		entryKey{"a", "dc1", "tok1k", "2"},
		entryKey{"ab", "", "", "k"},
		entryKey{"a", long, "", "k"},
		entryKey{"a", "", long, "k"},
		entryKey{"a", "", "", long + "k"},
		entryKey{"a", long[:100], long[100:], "k"},
		entryKey{"a", long[:100], "", long[100:] + "k"},
	)
}

// collidingTypes registers types "a", "b" and "ab" on c: each returns its
// partition as the value and counts its fetches per partition.
func collidingTypes(c *Cache, opts *RegisterOptions) *sync.Map {
	var fetches sync.Map // entryKey -> *atomic.Int64
	for _, typ := range []string{"a", "b", "ab"} {
		c.RegisterType(typ, FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			info := r.CacheInfo()
			p := entryKey{typ, info.Datacenter, info.Token, info.Key}
			n, _ := fetches.LoadOrStore(p, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			return FetchResult{Value: p, Index: 1}, nil
		}), opts)
	}
	return &fetches
}

// getPartition gets p from c and checks that the value is p's own, and
// whether it was a hit when wantHit says which it must be (nil: either).
func getPartition(t *testing.T, c *Cache, p entryKey, wantHit *bool) {
	v, meta, err := c.Get(p.typ, RequestInfo{Datacenter: p.dc, Token: p.token, Key: p.key})
	if err != nil || v != p {
		t.Errorf("Get %+v: got %+v, %v", p, v, err)
	}
	if wantHit != nil && meta.Hit != *wantHit {
		t.Errorf("Get %+v: Hit %v, want %v", p, meta.Hit, *wantHit)
	}
}

// getAllConcurrently gets every partition from callers goroutines each.
func getAllConcurrently(t *testing.T, c *Cache, ps []entryKey, callers int, wantHit *bool) {
	var wg sync.WaitGroup
	for _, p := range ps {
		for range callers {
			wg.Go(func() { getPartition(t, c, p, wantHit) })
		}
	}
	wg.Wait()
}

// TestRegression_HashCollisionsKeptApart: no test kept apart two
// partitions with the same hash, so a lookup that trusted the hash alone,
// and served one type's, datacenter's or token's value to another, passed
// the whole suite. With every partition hashed to the same value, each
// caller must still get its own value: on concurrent fills and hits,
// after evictions and from Prepopulate.
func TestRegression_HashCollisionsKeptApart(t *testing.T) {
	t.Parallel()
	ps := collidingPartitions()
	hit := true

	t.Run("seam", func(t *testing.T) {
		c := newCollidingCache()
		defer c.Close()
		for _, p := range ps {
			k := c.makeKey(nil, p.typ, p.dc, p.token, p.key)
			require.Zero(t, k.hash)
			require.Zero(t, k.shard())
		}
	})

	t.Run("fills and hits", func(t *testing.T) {
		t.Parallel()
		c := newCollidingCache()
		defer c.Close()
		fetches := collidingTypes(c, nil)
		getAllConcurrently(t, c, ps, 4, nil)
		for _, p := range ps {
			require.EqualValues(t, 1, fetchCount(fetches, p), "fetches of %+v", p)
		}
		getAllConcurrently(t, c, ps, 4, &hit)
		require.Equal(t, len(ps), shardEntries(c, 0), "all entries in shard 0")
	})

	t.Run("expiry", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			testCollidingExpiry(t, ps)
		})
	})

	t.Run("prepopulate", func(t *testing.T) {
		t.Parallel()
		testCollidingPrepopulate(t, ps)
	})
}

// testCollidingPrepopulate prepopulates half the colliding partitions
// while the other half are fetched, then checks that each partition hits
// its own value and that only the second half was fetched.
func testCollidingPrepopulate(t *testing.T, ps []entryKey) {
	c := newCollidingCache()
	defer c.Close()
	fetches := collidingTypes(c, nil)
	half := len(ps) / 2
	var wg sync.WaitGroup
	for _, p := range ps[:half] {
		wg.Go(func() {
			if err := c.Prepopulate(p.typ, FetchResult{Value: p, Index: 1}, p.dc, p.token, p.key); err != nil {
				t.Error(err)
			}
		})
	}
	getAllConcurrently(t, c, ps[half:], 2, nil)
	wg.Wait()
	hit := true
	getAllConcurrently(t, c, ps, 4, &hit)
	for i, p := range ps {
		want := int64(0)
		if i >= half {
			want = 1
		}
		require.Equal(t, want, fetchCount(fetches, p), "fetches of %+v", p)
	}
}

// testCollidingExpiry fills colliding partitions, keeps every other one in
// use while the rest expire, and checks that the right ones were evicted
// and that each partition still gets its own value.
func testCollidingExpiry(t *testing.T, ps []entryKey) {
	const ttl = time.Minute
	c := newCollidingCache()
	defer c.Close()
	fetches := collidingTypes(c, &RegisterOptions{LastGetTTL: ttl})
	hit := true
	getAllConcurrently(t, c, ps, 2, nil)

	var kept, expired []entryKey
	for i, p := range ps {
		if i%2 == 0 {
			kept = append(kept, p)
		} else {
			expired = append(expired, p)
		}
	}
	time.Sleep(ttl * 2 / 3)
	getAllConcurrently(t, c, kept, 2, &hit)
	time.Sleep(ttl * 2 / 3)
	synctest.Wait() // the expiry loop has evicted what is due
	for _, p := range expired {
		require.Nil(t, c.lookupKey(p.typ, p.dc, p.token, p.key), "%+v not evicted", p)
	}
	require.Equal(t, len(kept), shardEntries(c, 0))
	getAllConcurrently(t, c, kept, 2, &hit)
	getAllConcurrently(t, c, expired, 2, nil)
	for i, p := range ps {
		require.EqualValues(t, 1+i%2, fetchCount(fetches, p), "fetches of %+v", p)
	}
}

// shardEntries returns the number of entries in shard i of c.
func shardEntries(c *Cache, i int) int {
	s := &c.shards[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	s.tab.Load().each(func(*entry) { n++ })
	return n
}

// ---------------------------------------------------------------------------
// Redaction and the test helpers.

// Regression: the cache redacted the ACL token from a Type's error or panic
// only where it appeared as it is, by a plain substring replace. A Type
// that quoted it (%q, %+q) or put it in a URL (url.QueryEscape,
// url.PathEscape, lower-case hex) leaked it to Get's error, the log and
// Notify's events. Every form must be gone from all three, with the text
// and the slog JSON handler.
func TestRegression_RedactQuotedToken(t *testing.T) {
	const token = `s3cr3t "acl"/tøkén+1 %`
	fails := map[string]func() error{
		"quoted": func() error { return fmt.Errorf("acl: token %q not found", token) },
		"ascii":  func() error { return fmt.Errorf("acl: token %+q not found", token) },
		"query": func() error {
			return fmt.Errorf("GET /v1/kv/db?token=%s: 403 Forbidden", url.QueryEscape(token))
		},
		"path": func() error {
			return fmt.Errorf("GET /v1/acl/token/%s: 404", lowerHexOnly(url.PathEscape(token)))
		},
		"panic": func() error { panic(fmt.Sprintf("bad token %q", token)) },
	}
	handlers := map[string]func(io.Writer) slog.Handler{
		"text": func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) },
		"json": func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) },
	}
	for hname, handler := range handlers {
		for typ, fail := range fails {
			t.Run(hname+"/"+typ, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					var buf logBuf
					c := New(&Options{Logger: slog.New(handler(&buf))})
					defer c.Close()
					c.RegisterType(typ, BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
						return FetchResult{}, fail()
					}), nil)
					req := RequestInfo{Token: token, Key: "k"}

					_, _, err := c.Get(typ, req)
					require.Error(t, err)
					require.Empty(t, tokenLeaks(token, err.Error()), "Get's error: %s", err)
					require.Contains(t, err.Error(), redactedText)

					ev := firstEvent(t, c, typ, req)
					require.Error(t, ev.Err)
					require.Empty(t, tokenLeaks(token, ev.Err.Error()), "Notify's error: %s", ev.Err)

					synctest.Wait()
					logs := buf.String()
					require.Contains(t, logs, "cache: fetch failed")
					require.Empty(t, tokenLeaks(token, logs), "logs:\n%s", logs)
				})
			})
		}
	}
}

// firstEvent returns the first event of a watch of r.
func firstEvent(t *testing.T, c *Cache, typ string, r Request) UpdateEvent {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := make(chan UpdateEvent, 1)
	require.NoError(t, c.Notify(ctx, typ, r, "id", ch))
	return <-ch
}

// Regression: users' tests written for Consul v1.4.5 call TestCacheGetCh
// and TestCacheGetChResult(t, ch, nil) for a Get that fails: Consul's
// TestCacheGetCh logs the error and closes the channel, so the check
// receives nil and passes. This package sent the error on the channel
// instead, and such tests failed. TestCacheNotifyChResult with no expected
// event must panic, as Consul's does.
func TestRegression_TestHelpersLikeConsul(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		typ := TestType(t)
		typ.Static(FetchResult{}, errors.New("rpc error: ACL not found"))
		c.RegisterType("t", typ, nil)

		ft := &recordingT{}
		TestCacheGetChResult(ft, TestCacheGetCh(ft, c, "t", TestRequest(t, RequestInfo{Key: "k"})), nil)
		require.Empty(t, ft.fatals, "a failed Get delivers nil")
		require.Empty(t, ft.errors)
		require.Equal(t, []string{"Error: rpc error: ACL not found"}, ft.logs, "the error is logged")

		require.PanicsWithValue(t, "asking for zero updates seems like a bug", func() {
			TestCacheNotifyChResult(ft, make(chan UpdateEvent))
		})
	})
}

// goGetContext is goGet for GetContext.
func goGetContext(ctx context.Context, c *Cache, typ string, r Request) <-chan getResult {
	return goResult(func() (any, ResultMeta, error) { return c.GetContext(ctx, typ, r) })
}

// contextType adapts a function to a ContextType: the cache must call
// FetchContext, never Fetch.
type contextType struct {
	blocking bool
	fetch    func(ctx context.Context, o FetchOptions, r Request) (FetchResult, error)
}

func (rt contextType) Fetch(FetchOptions, Request) (FetchResult, error) {
	return FetchResult{}, errors.New("cache test: Fetch called on a ContextType")
}

func (rt contextType) FetchContext(ctx context.Context, o FetchOptions, r Request) (FetchResult, error) {
	return rt.fetch(ctx, o, r)
}

func (rt contextType) SupportsBlocking() bool { return rt.blocking }

// liveWatches returns the number of live Notify watches of c: those that
// neither ended nor saw their end. Unlike synctest.Wait with an idle
// channel, it tells a watch that ended from one still waiting in a Get,
// which holds no goroutine.
func liveWatches(t *testing.T, c *Cache) int {
	t.Helper()
	return c.watches.len()
}

// fetchCount returns how often p was fetched.
func fetchCount(fetches *sync.Map, p entryKey) int64 {
	n, ok := fetches.Load(p)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}
