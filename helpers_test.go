package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	metrics "github.com/armon/go-metrics"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
)

// cacheGetResult is what one Get returned.
type cacheGetResult struct {
	Value any
	Meta  ResultMeta
	Err   error
}

// cacheGoGet runs Get in a goroutine; its result arrives on the channel.
func cacheGoGet(c *Cache, typ string, r Request) <-chan cacheGetResult {
	ch := make(chan cacheGetResult, 1)
	go func() {
		v, meta, err := c.Get(typ, r)
		ch <- cacheGetResult{v, meta, err}
	}()
	return ch
}

// regGoGetContext is cacheGoGet for GetContext.
func regGoGetContext(ctx context.Context, c *Cache, typ string, r Request) <-chan cacheGetResult {
	ch := make(chan cacheGetResult, 1)
	go func() {
		v, meta, err := c.GetContext(ctx, typ, r)
		ch <- cacheGetResult{v, meta, err}
	}()
	return ch
}

// cacheRequireBlocked (in a bubble) fails if the Get has returned once every
// goroutine of the bubble is idle.
func cacheRequireBlocked(t *testing.T, ch <-chan cacheGetResult) {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		t.Fatalf("Get returned while it should wait: %+v", r)
	default:
	}
}

// cacheRequireReturned (in a bubble) returns the Get's result, failing if it
// is still waiting once every goroutine of the bubble is idle.
func cacheRequireReturned(t *testing.T, ch <-chan cacheGetResult) cacheGetResult {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatalf("Get still waiting")
		return cacheGetResult{}
	}
}

// ergoRes is what one GetContext or GetAs call returned, and when.
type ergoRes[V any] struct {
	Value V
	Meta  ResultMeta
	Err   error
	At    time.Time
}

// ergoGo runs f in a goroutine; its result arrives on the channel.
func ergoGo[V any](f func() (V, ResultMeta, error)) <-chan ergoRes[V] {
	ch := make(chan ergoRes[V], 1)
	go func() {
		v, meta, err := f()
		ch <- ergoRes[V]{v, meta, err, time.Now()}
	}()
	return ch
}

// ergoBlocked (in a bubble) fails if the call has returned once the bubble
// is idle.
func ergoBlocked[V any](t *testing.T, ch <-chan ergoRes[V]) {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		t.Fatalf("returned while it should wait: %+v", r)
	default:
	}
}

// ergoReturned (in a bubble) returns the call's result, failing if it is
// still waiting once the bubble is idle.
func ergoReturned[V any](t *testing.T, ch <-chan ergoRes[V]) ergoRes[V] {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatalf("still waiting")
		return ergoRes[V]{}
	}
}

// cacheGet is a synchronous Get that fails the test on error.
func cacheGet(t *testing.T, c *Cache, typ string, info RequestInfo) (any, ResultMeta) {
	t.Helper()
	v, meta, err := c.Get(typ, TestRequest(t, info))
	require.NoError(t, err)
	return v, meta
}

// cacheFetchLog records the options and (possibly fake) start time of every
// Fetch of a MockType.
type cacheFetchLog struct {
	mu    sync.Mutex
	opts  []FetchOptions
	times []time.Time
}

func (l *cacheFetchLog) record(args mock.Arguments) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opts = append(l.opts, args.Get(0).(FetchOptions))
	l.times = append(l.times, time.Now())
}

func (l *cacheFetchLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.opts)
}

func (l *cacheFetchLog) opt(i int) FetchOptions {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opts[i]
}

func (l *cacheFetchLog) startTimes() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.times...)
}

// on adds a Fetch expectation on typ that records the call, runs wait (if
// not nil) and returns res and err. Chain .Once()/.Times(n) to sequence.
func (l *cacheFetchLog) on(typ *MockType, wait func(), res FetchResult, err error) *mock.Call {
	return typ.On("Fetch", mock.Anything, mock.Anything).Run(func(args mock.Arguments) {
		l.record(args)
		if wait != nil {
			wait()
		}
	}).Return(res, err)
}

// embCalls records the options and fake start time of every call of a
// function-typed Type.
type embCalls struct {
	mu    sync.Mutex
	opts  []FetchOptions
	reqs  []Request
	times []time.Time
}

func (c *embCalls) add(o FetchOptions, r Request) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opts = append(c.opts, o)
	c.reqs = append(c.reqs, r)
	c.times = append(c.times, time.Now())
	return len(c.opts)
}

func (c *embCalls) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.opts)
}

func (c *embCalls) opt(i int) FetchOptions {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opts[i]
}

func (c *embCalls) req(i int) Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reqs[i]
}

func (c *embCalls) startTimes() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.times...)
}

// cacheIndexType returns a blocking MockType whose every Fetch (recorded in
// log) answers at once with Value = Index = MinIndex+1.
func cacheIndexType(t *testing.T, log *cacheFetchLog) *MockType {
	typ := TestType(t)
	typ.On("Fetch", mock.Anything, mock.Anything).Run(log.record).Return(
		func(o FetchOptions, _ Request) FetchResult {
			return FetchResult{Value: o.MinIndex + 1, Index: o.MinIndex + 1}
		}, nil)
	return typ
}

// limitsChangingType returns a blocking MockType whose data changes all the
// time: every Fetch (recorded in log) takes d (cut short once release is
// closed, so that the bubble can end), then answers with
// Value = Index = MinIndex+1.
func limitsChangingType(t *testing.T, log *cacheFetchLog, d time.Duration, release <-chan struct{}) *MockType {
	typ := TestType(t)
	typ.On("Fetch", mock.Anything, mock.Anything).Run(func(args mock.Arguments) {
		log.record(args)
		if d > 0 {
			timer := time.NewTimer(d)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-release:
			}
		}
	}).Return(
		func(o FetchOptions, _ Request) FetchResult {
			return FetchResult{Value: o.MinIndex + 1, Index: o.MinIndex + 1}
		}, nil)
	return typ
}

// notifyTimedType returns a MockType (blocking or not) whose Fetch records
// its fake start time and returns next().
func notifyTimedType(t *testing.T, blocking bool, next func(FetchOptions) (FetchResult, error)) (*MockType, func() []time.Time) {
	var mu sync.Mutex
	var times []time.Time
	var lastErr error
	typ := TestType(t)
	if !blocking {
		typ = TestTypeNonBlocking(t)
	}
	typ.On("Fetch", mock.Anything, mock.Anything).Return(
		func(o FetchOptions, _ Request) FetchResult {
			mu.Lock()
			times = append(times, time.Now())
			mu.Unlock()
			res, err := next(o) // may block: not under mu
			mu.Lock()
			lastErr = err
			mu.Unlock()
			return res
		},
		// The cache never runs two Fetches of one entry at once, so the
		// error of the call just made is lastErr.
		func(FetchOptions, Request) error {
			mu.Lock()
			defer mu.Unlock()
			return lastErr
		})
	return typ, func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), times...)
	}
}

// regContextType adapts a function to a ContextType: the cache must call
// FetchContext, never Fetch.
type regContextType struct {
	blocking bool
	fetch    func(ctx context.Context, o FetchOptions, r Request) (FetchResult, error)
}

func (rt regContextType) Fetch(FetchOptions, Request) (FetchResult, error) {
	return FetchResult{}, errors.New("cache test: Fetch called on a ContextType")
}

func (rt regContextType) FetchContext(ctx context.Context, o FetchOptions, r Request) (FetchResult, error) {
	return rt.fetch(ctx, o, r)
}

func (rt regContextType) SupportsBlocking() bool { return rt.blocking }

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

func newLaterScript(blocking bool, release <-chan struct{}) *laterScript {
	return &laterScript{blocking: blocking, release: release, pending: map[int]chan laterStep{}}
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

// notifyBackend is a fake blocking data source for Notify tests: Fetch waits
// until the index exceeds MinIndex (or opts.Timeout passes, then returns the
// current value unchanged). Create it inside the bubble; it releases blocked
// fetches on test cleanup so that no goroutine outlives the bubble.
type notifyBackend struct {
	mu      sync.Mutex
	value   any
	index   uint64
	changed chan struct{} // closed and replaced on every set
	closed  bool
	fetches atomic.Int64
	minIdx  []uint64 // MinIndex of every Fetch
}

func (b *notifyBackend) set(value any, index uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.value, b.index = value, index
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *notifyBackend) minIndexes() []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]uint64(nil), b.minIdx...)
}

func (b *notifyBackend) Fetch(opts FetchOptions, _ Request) (FetchResult, error) {
	b.fetches.Add(1)
	var timeout <-chan time.Time
	if opts.Timeout > 0 {
		tm := time.NewTimer(opts.Timeout)
		defer tm.Stop()
		timeout = tm.C
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.minIdx = append(b.minIdx, opts.MinIndex)
	for b.index <= opts.MinIndex && !b.closed {
		ch := b.changed
		b.mu.Unlock()
		timedOut := false
		select {
		case <-ch:
		case <-timeout:
			timedOut = true
		}
		b.mu.Lock()
		if timedOut {
			break
		}
	}
	if b.closed {
		// Fail, so that a refresh loop backs off instead of spinning
		// until the cache is closed.
		return FetchResult{}, errors.New("backend closed")
	}
	return FetchResult{Value: b.value, Index: b.index}, nil
}

func (b *notifyBackend) SupportsBlocking() bool { return true }

func newNotifyBackend(t *testing.T, value any, index uint64) *notifyBackend {
	b := &notifyBackend{value: value, index: index, changed: make(chan struct{})}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.closed = true
		close(b.changed)
	})
	return b
}

// cacheBubble returns, inside a synctest bubble, a cache that is closed when
// the test ends, and a channel closed right after that, which releases
// fetches left blocked on it so that the bubble's goroutines can exit.
func cacheBubble(t *testing.T) (*Cache, <-chan struct{}) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs after Close (cleanups are LIFO)
	return TestCache(t), release
}

// limitsBubble is cacheBubble with Options: inside a synctest bubble, a
// cache closed when the test ends, and a channel closed right after that.
func limitsBubble(t *testing.T, opts *Options) (*Cache, <-chan struct{}) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs after Close (cleanups are LIFO)
	c := New(opts)
	t.Cleanup(func() { c.Close() })
	return c, release
}

// embNew returns a cache with the given options, closed when the test ends,
// and a channel closed right after that (as cacheBubble does).
func embNew(t *testing.T, o *Options) (*Cache, <-chan struct{}) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	c := New(o)
	t.Cleanup(func() { c.Close() })
	return c, release
}

// cacheSleep returns a wait func for cacheFetchLog.on that sleeps d.
func cacheSleep(d time.Duration) func() { return func() { time.Sleep(d) } }

// regSleep returns a wait func for cacheFetchLog.on (or for a Fetch of
// its own) that sleeps d, or less if release is closed first: unlike
// cacheSleep, it cannot outlive a bubble whose test failed early.
func regSleep(d time.Duration, release <-chan struct{}) func() {
	return func() {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-release:
		}
	}
}

// laterSleep sleeps d, or less if release is closed first.
func laterSleep(d time.Duration, release <-chan struct{}) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-release:
	}
}

// cacheUntil returns a wait func for cacheFetchLog.on that waits for ch.
func cacheUntil(ch <-chan struct{}) func() { return func() { <-ch } }

// limitsUntilEither waits until a or b is closed.
func limitsUntilEither(a, b <-chan struct{}) {
	select {
	case <-a:
	case <-b:
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

// regBackOffBase is the documented least back-off after n failures in a
// row: none up to CacheRefreshBackoffMin, then 2 s, doubling up to
// CacheRefreshMaxWait. The wait itself adds a stagger below the base.
func regBackOffBase(n int) time.Duration {
	if n <= CacheRefreshBackoffMin {
		return 0
	}
	shift := n - CacheRefreshBackoffMin
	if shift >= 6 { // 64 s: past the cap
		return CacheRefreshMaxWait
	}
	return min(time.Duration(1<<shift)*time.Second, CacheRefreshMaxWait)
}

// regRequireBackOff checks that times, the start times of failing fetches
// that each took d (with no RefreshTimer), follow a single back-off
// schedule: fetch i+1 starts d after fetch i, plus the back-off after i
// failures, which is at least its base and less than twice it.
func regRequireBackOff(t *testing.T, times []time.Time, d time.Duration) {
	t.Helper()
	for i := 1; i < len(times); i++ {
		wait := times[i].Sub(times[i-1]) - d
		base := regBackOffBase(i)
		if base == 0 {
			require.Equal(t, time.Duration(0), wait, "wait before fetch %d (after %d failures)", i+1, i)
			continue
		}
		require.GreaterOrEqual(t, wait, base, "wait before fetch %d (after %d failures)", i+1, i)
		require.Less(t, wait, 2*base, "wait before fetch %d (after %d failures)", i+1, i)
	}
}

// cacheRequireGaps checks the gaps between consecutive fetch start times:
// gap i (between fetch i and i+1) must be in [lo[i], hi[i]).
func cacheRequireGaps(t *testing.T, times []time.Time, lo, hi []time.Duration) {
	t.Helper()
	require.GreaterOrEqual(t, len(times), len(lo)+1)
	for i := range lo {
		gap := times[i+1].Sub(times[i])
		require.GreaterOrEqual(t, gap, lo[i], "gap after fetch %d", i+1)
		if hi[i] == lo[i] {
			require.Equal(t, lo[i], gap, "gap after fetch %d", i+1)
		} else {
			require.Less(t, gap, hi[i], "gap after fetch %d", i+1)
		}
	}
}

// cacheInstallSink routes go-metrics to a fresh InmemSink until the test
// ends, then to a blackhole. The interval is huge so that everything lands
// in one interval, whether it is emitted at fake (bubble) or real time: no
// interval is ever rotated, so no bubble channel is touched from outside.
func cacheInstallSink(t *testing.T) *metrics.InmemSink {
	t.Helper()
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	sink := metrics.NewInmemSink(1<<62, 1<<62)
	_, err := metrics.NewGlobal(cfg, sink)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = metrics.NewGlobal(cfg, &metrics.BlackholeSink{})
	})
	return sink
}

// cacheCounter sums a counter over the sink's intervals.
func cacheCounter(sink *metrics.InmemSink, name string) int {
	n := 0
	for _, iv := range sink.Data() {
		if v, ok := iv.Counters[name]; ok {
			n += v.Count
		}
	}
	return n
}

// cacheGauge returns the latest value of a gauge.
func cacheGauge(t *testing.T, sink *metrics.InmemSink, name string) float32 {
	t.Helper()
	var val float32
	found := false
	for _, iv := range sink.Data() {
		if g, ok := iv.Gauges[name]; ok {
			val, found = g.Value, true
		}
	}
	require.True(t, found, "gauge %s not set", name)
	return val
}

// embMetrics returns a go-metrics instance (not the global one) reporting to
// a fresh InmemSink whose interval never rotates.
func embMetrics(t *testing.T) (*metrics.Metrics, *metrics.InmemSink) {
	t.Helper()
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	sink := metrics.NewInmemSink(1<<62, 1<<62)
	m, err := metrics.New(cfg, sink)
	require.NoError(t, err)
	return m, sink
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

// embMetricNames lists every counter, gauge and sample name in sink.
func embMetricNames(sink *metrics.InmemSink) []string {
	var names []string
	for _, iv := range sink.Data() {
		for k := range iv.Counters {
			names = append(names, k)
		}
		for k := range iv.Gauges {
			names = append(names, k)
		}
		for k := range iv.Samples {
			names = append(names, k)
		}
	}
	return names
}

// embLogBuf is a goroutine-safe buffer for a slog text handler.
type embLogBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *embLogBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *embLogBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the lines whose message starts with "cache:" and contains
// msg.
func (b *embLogBuf) lines(msg string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, `msg="cache:`) && strings.Contains(l, msg) {
			out = append(out, l)
		}
	}
	return out
}

// embLogger returns a debug-level text logger writing to b.
func embLogger(b *embLogBuf) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
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

// notifyNoEvent fails if an event is waiting on ch once the bubble is idle.
func notifyNoEvent(t *testing.T, ch <-chan UpdateEvent) {
	t.Helper()
	synctest.Wait()
	select {
	case ev := <-ch:
		t.Fatalf("unexpected event: %+v", ev)
	default:
	}
}

// notifyRecv returns the next event, failing if none comes within d of fake
// time.
func notifyRecv(t *testing.T, ch <-chan UpdateEvent, d time.Duration) UpdateEvent {
	t.Helper()
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case ev := <-ch:
		return ev
	case <-tm.C:
		t.Fatalf("no event within %s", d)
		return UpdateEvent{}
	}
}

// regWatches returns the number of live Notify watches that the calling
// goroutine started: goroutines created by Notify or NotifyCallback in it.
// Unlike synctest.Wait with an idle channel, it tells a watch that ended
// from one still blocked in a Get.
func regWatches(t *testing.T) int {
	t.Helper()
	self := strings.Fields(regStack(false)) // "goroutine 42 [running]: ..."
	require.GreaterOrEqual(t, len(self), 2)
	creator := "\ncreated by " + reflect.TypeFor[Cache]().PkgPath() + ".(*Cache).Notify"
	parent := " in goroutine " + self[1] + "\n"
	n := 0
	for _, g := range strings.Split(regStack(true), "\n\n") {
		if i := strings.Index(g, creator); i >= 0 && strings.Contains(g[i:], parent) {
			n++
		}
	}
	return n
}

// regStack returns runtime.Stack's dump of the current goroutine or, with
// all, of every goroutine.
func regStack(all bool) string {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, all)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// lookupKey returns the entry of a partition, or nil.
func (c *Cache) lookupKey(typ, dc, token, key string) *entry {
	k := c.makeKey(nil, typ, dc, token, key)
	return c.lookup(&k)
}

// expiryCached reports whether the cache holds an entry for typ and info.
func expiryCached(c *Cache, typ string, info RequestInfo) bool {
	return c.lookupKey(typ, info.Datacenter, info.Token, info.Key) != nil
}

// limitsCached reports whether the cache holds key k of type typ.
func limitsCached(c *Cache, typ, k string) bool {
	return expiryCached(c, typ, RequestInfo{Key: k})
}

// expiryCheckHeap fails unless every entry's heapIndex is its position and
// the heap property (parent expires no later than child) holds.
func expiryCheckHeap(t *testing.T, h expiryHeap) {
	t.Helper()
	for i, e := range h {
		require.Equal(t, i, int(e.heapIndex), "heapIndex of element %d", i)
		if i > 0 {
			parent := (i - 1) / 2
			require.LessOrEqual(t, h[parent].expires, e.expires, "heap order at %d", i)
		}
	}
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

// fetchCount returns how often p was fetched.
func fetchCount(fetches *sync.Map, p entryKey) int64 {
	n, ok := fetches.Load(p)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// tokenLeaks returns the forms of token that s still contains: as it is,
// Go-quoted, ASCII-quoted, JSON-quoted and URL-escaped with upper- and
// lower-case hex.
func tokenLeaks(token, s string) []string {
	unquote := func(q string) string { return q[1 : len(q)-1] }
	j, _ := json.Marshal(token)
	var leaks []string
	for _, f := range []string{
		token, unquote(strconv.Quote(token)), unquote(strconv.QuoteToASCII(token)), unquote(string(j)),
		url.QueryEscape(token), lowerHexOnly(url.QueryEscape(token)), url.PathEscape(token), lowerHexOnly(url.PathEscape(token)),
	} {
		if strings.Contains(s, f) {
			leaks = append(leaks, f)
		}
	}
	return leaks
}

// lowerHexOnly lower-cases the hex digits of the escapes in e, not the rest.
func lowerHexOnly(e string) string {
	var b strings.Builder
	for i := 0; i < len(e); i++ {
		b.WriteByte(e[i])
		if e[i] == '%' && i+2 < len(e) {
			b.WriteString(strings.ToLower(e[i+1 : i+3]))
			i += 2
		}
	}
	return b.String()
}

// embToken is an ACL token that must never leak out of the cache.
const embToken = "s3cr3t-acl-7f2e9c"

// embTokenErr is a Type error that quotes the request's token, as careless
// RPC layers do.
func embTokenErr(r Request) error {
	return fmt.Errorf("permission denied for token %s", r.CacheInfo().Token)
}

// laterErr is an error type for errors.As.
type laterErr struct{ msg string }

func (e *laterErr) Error() string { return e.msg }

// cachePartition is the value the partition test's types return: the
// partition that was fetched.
type cachePartition struct{ Type, DC, Token, Key string }

// memReq is a request that carries the index of its pre-boxed value.
type memReq struct {
	info RequestInfo
	i    int
}

func (r *memReq) CacheInfo() RequestInfo { return r.info }

// heapAlloc returns the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// adversarialKinds are the kinds of keys adversarialKeys makes.
var adversarialKinds = []string{"crafted", "longprefix", "random", "randomlong"}

// adversarialKeys returns n distinct keys of a kind: "crafted", 9 to 13
// bytes that start with oldHashM1; "longprefix", a common 200-byte prefix
// and a counter; and the baselines, "random", 12 random letters and
// digits, and "randomlong", 204 of them.
func adversarialKeys(kind string, n int) []string {
	keys := make([]string, 0, n)
	seen := make(map[string]bool, n)
	prefix := strings.Repeat("/v1/health/service/web?", 10)[:200]
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	for i := 0; len(keys) < n; i++ {
		var k string
		switch kind {
		case "crafted":
			k = string(binary.LittleEndian.AppendUint64(nil, oldHashM1)) + strconv.Itoa(i)
		case "longprefix":
			k = prefix + strconv.Itoa(i)
		case "random", "randomlong":
			b := make([]byte, 12)
			if kind == "randomlong" {
				b = make([]byte, 204)
			}
			for j := range b {
				b[j] = alphabet[rand.IntN(len(alphabet))]
			}
			k = string(b)
		default:
			panic("unknown kind " + kind)
		}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// helperT is a T that records failures instead of stopping the test, so that
// the helpers' failure paths can be checked. Fatalf only records: it may be
// called from any goroutine.
type helperT struct {
	mu       sync.Mutex
	fatals   []string
	errors   []string
	logs     []string
	cleanups []func()
}

func (h *helperT) Helper() {}

func (h *helperT) Cleanup(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cleanups = append(h.cleanups, f)
}

func (h *helperT) Logf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs = append(h.logs, fmt.Sprintf(format, args...))
}

func (h *helperT) Errorf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errors = append(h.errors, fmt.Sprintf(format, args...))
}

func (h *helperT) Fatalf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fatals = append(h.fatals, fmt.Sprintf(format, args...))
}

func (h *helperT) FailNow() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fatals = append(h.fatals, "FailNow")
}

// failed reports whether Fatalf, Errorf or FailNow was called.
func (h *helperT) failed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.fatals)+len(h.errors) > 0
}

// runCleanups runs the registered cleanups, last first, as testing does.
func (h *helperT) runCleanups() {
	h.mu.Lock()
	fs := h.cleanups
	h.cleanups = nil
	h.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
