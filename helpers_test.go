package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
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

// Fakes and helpers shared by the package's tests. Helpers used by one
// test file only live in that file.
//
// Names carry no file prefix; they say what a helper does or is:
//   - go* runs a call in a goroutine and returns the channel its result
//     arrives on (goGet, goCall);
//   - require* fails the test unless what it names holds (requireBlocked,
//     requireReturned, requireBackOff);
//   - new* builds something the test uses (newCache, newMetrics);
//   - *Type is a fake Type (indexType, scriptType, timedType), *Log and
//     *Buf record what happened (fetchLog, eventLog, logBuf);
//   - a wait func for fetchLog.on is named for what it does while the fetch
//     runs (sleeping, waitingFor).
//
// fuzz_test.go, soak_test.go and benchmark_test.go keep their fuzz*, soak*
// and bench* names for what only they use.

// ---------------------------------------------------------------------------
// Gets in a goroutine.

// getResult is what one Get returned.
type getResult struct {
	Value any
	Meta  ResultMeta
	Err   error
}

// goGet runs Get in a goroutine; its result arrives on the channel.
func goGet(c *Cache, typ string, r Request) <-chan getResult {
	return goResult(func() (any, ResultMeta, error) { return c.Get(typ, r) })
}

// goResult runs f in a goroutine; its result arrives on the channel.
func goResult(f func() (any, ResultMeta, error)) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		v, meta, err := f()
		ch <- getResult{v, meta, err}
	}()
	return ch
}

// callResult is what one GetContext or GetAs call returned, and when.
type callResult[V any] struct {
	Value V
	Meta  ResultMeta
	Err   error
	At    time.Time
}

// goCall runs f in a goroutine; its result, stamped with the time it
// returned, arrives on the channel.
func goCall[V any](f func() (V, ResultMeta, error)) <-chan callResult[V] {
	ch := make(chan callResult[V], 1)
	go func() {
		v, meta, err := f()
		ch <- callResult[V]{v, meta, err, time.Now()}
	}()
	return ch
}

// requireBlocked (in a bubble) fails if the call sending on ch (goGet,
// goCall) has returned once every goroutine of the bubble is idle.
func requireBlocked[R any](t *testing.T, ch <-chan R) {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		t.Fatalf("returned while it should wait: %+v", r)
	default:
	}
}

// requireReturned (in a bubble) returns the result of the call sending on
// ch, failing if it is still waiting once every goroutine of the bubble is
// idle.
func requireReturned[R any](t *testing.T, ch <-chan R) R {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatalf("still waiting")
		var zero R
		return zero
	}
}

// requireGet is a synchronous Get that fails the test on error.
func requireGet(t *testing.T, c *Cache, typ string, info RequestInfo) (any, ResultMeta) {
	t.Helper()
	v, meta, err := c.Get(typ, TestRequest(t, info))
	require.NoError(t, err)
	return v, meta
}

// ---------------------------------------------------------------------------
// Recording fetches, and fake Types.

// fetchLog records the options, request and (possibly fake) start time of
// every Fetch: of a MockType with record or on, of any other Type with add.
type fetchLog struct {
	mu    sync.Mutex
	opts  []FetchOptions
	reqs  []Request
	times []time.Time
}

// add records a Fetch and returns how many there were.
func (l *fetchLog) add(o FetchOptions, r Request) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opts = append(l.opts, o)
	l.reqs = append(l.reqs, r)
	l.times = append(l.times, time.Now())
	return len(l.opts)
}

// record records the Fetch of a MockType whose arguments are args.
func (l *fetchLog) record(args mock.Arguments) {
	r, _ := args.Get(1).(Request)
	l.add(args.Get(0).(FetchOptions), r)
}

func (l *fetchLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.opts)
}

func (l *fetchLog) opt(i int) FetchOptions {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opts[i]
}

func (l *fetchLog) req(i int) Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reqs[i]
}

// lastReq returns the Request of the last Fetch, or nil before the first.
func (l *fetchLog) lastReq() Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.reqs) == 0 {
		return nil
	}
	return l.reqs[len(l.reqs)-1]
}

func (l *fetchLog) startTimes() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.times...)
}

// on adds a Fetch expectation on typ that records the call, runs wait (if
// not nil) and returns res and err. Chain .Once()/.Times(n) to sequence.
func (l *fetchLog) on(typ *MockType, wait func(), res FetchResult, err error) *mock.Call {
	return typ.On("Fetch", mock.Anything, mock.Anything).Run(func(args mock.Arguments) {
		l.record(args)
		if wait != nil {
			wait()
		}
	}).Return(res, err)
}

// indexType returns a blocking MockType whose every Fetch (recorded in
// log) answers at once with Value = Index = MinIndex+1.
func indexType(t *testing.T, log *fetchLog) *MockType {
	typ := TestType(t)
	typ.On("Fetch", mock.Anything, mock.Anything).Run(log.record).Return(
		func(o FetchOptions, _ Request) FetchResult {
			return FetchResult{Value: o.MinIndex + 1, Index: o.MinIndex + 1}
		}, nil)
	return typ
}

// changingType returns a blocking MockType whose data changes all the
// time: every Fetch (recorded in log) takes d (cut short once release is
// closed, so that the bubble can end), then answers with
// Value = Index = MinIndex+1.
func changingType(t *testing.T, log *fetchLog, d time.Duration, release <-chan struct{}) *MockType {
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

// timedType returns a MockType (blocking or not) whose Fetch records
// its fake start time and returns next().
func timedType(t *testing.T, blocking bool, next func(FetchOptions) (FetchResult, error)) (*MockType, func() []time.Time) {
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

// scriptStep is the answer the test gives one Fetch of a scriptType.
type scriptStep struct {
	fr  FetchResult
	err error
}

// scriptType is a Type whose every Fetch records its options and (fake)
// start time in log, then waits for the test to answer it (see answer and
// answerFetch), or for release, which ends it with an error.
type scriptType struct {
	blocking bool
	log      fetchLog
	release  <-chan struct{}

	mu      sync.Mutex
	pending map[int]chan scriptStep // by fetch number, from 0
}

func (s *scriptType) Fetch(o FetchOptions, r Request) (FetchResult, error) {
	ch := make(chan scriptStep, 1)
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

func (s *scriptType) SupportsBlocking() bool { return s.blocking }

// answer (in a bubble) hands fr and err to the one Fetch waiting for its
// answer, failing unless exactly one is once the bubble is idle, and then
// lets the bubble settle, so that the outcome is published on return.
func (s *scriptType) answer(t *testing.T, fr FetchResult, err error) {
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
func (s *scriptType) answerFetch(t *testing.T, i int, fr FetchResult, err error) {
	t.Helper()
	synctest.Wait()
	s.mu.Lock()
	ch, ok := s.pending[i]
	delete(s.pending, i)
	s.mu.Unlock()
	if !ok {
		t.Fatalf("fetch %d is not waiting for an answer (%d fetches so far)", i+1, s.log.count())
	}
	ch <- scriptStep{fr, err}
	synctest.Wait()
}

func newScriptType(blocking bool, release <-chan struct{}) *scriptType {
	return &scriptType{blocking: blocking, release: release, pending: map[int]chan scriptStep{}}
}

// sideScript starts, in a bubble, an entry of a blocking type without
// Refresh (value v1 at index 5) with a blocking Get in the loop's blocking
// query (fetch 2) and, a minute later, a MaxAge Get that revalidates beside
// it (fetch 3, waiting for its answer). It returns the script and the two
// Gets.
func sideScript(t *testing.T, c *Cache, typ string, release <-chan struct{}) (s *scriptType, blocked, reval <-chan getResult) {
	t.Helper()
	s = newScriptType(true, release)
	c.RegisterType(typ, s, nil)
	first := goGet(c, typ, RequestInfo{Key: "k"})
	s.answer(t, FetchResult{Value: "v1", Index: 5}, nil)
	require.Equal(t, "v1", requireReturned(t, first).Value)
	blocked = goGet(c, typ, RequestInfo{Key: "k", MinIndex: 5})
	requireBlocked(t, blocked)

	time.Sleep(time.Minute)
	reval = goGet(c, typ, RequestInfo{Key: "k", MaxAge: 30 * time.Second})
	requireBlocked(t, reval)
	require.Equal(t, 3, s.log.count(), "a revalidation beside the blocking query")
	require.Equal(t, uint64(0), s.log.opt(2).MinIndex)
	return s, blocked, reval
}

// blockingBackend is a fake blocking data source for Notify tests: Fetch waits
// until the index exceeds MinIndex (or opts.Timeout passes, then returns the
// current value unchanged). Create it inside the bubble; it releases blocked
// fetches on test cleanup so that no goroutine outlives the bubble.
type blockingBackend struct {
	mu      sync.Mutex
	value   any
	index   uint64
	changed chan struct{} // closed and replaced on every set
	closed  bool
	fetches atomic.Int64
	minIdx  []uint64 // MinIndex of every Fetch
}

func (b *blockingBackend) set(value any, index uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.value, b.index = value, index
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *blockingBackend) minIndexes() []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]uint64(nil), b.minIdx...)
}

func (b *blockingBackend) Fetch(opts FetchOptions, _ Request) (FetchResult, error) {
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

func (b *blockingBackend) SupportsBlocking() bool { return true }

func newBlockingBackend(t *testing.T, value any, index uint64) *blockingBackend {
	b := &blockingBackend{value: value, index: index, changed: make(chan struct{})}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.closed = true
		close(b.changed)
	})
	return b
}

// ---------------------------------------------------------------------------
// Caches in a bubble, and waits.

// bubble returns, inside a synctest bubble, a cache that is closed when
// the test ends, and a channel closed right after that, which releases
// fetches left blocked on it so that the bubble's goroutines can exit.
func bubble(t *testing.T) (*Cache, <-chan struct{}) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs after Close (cleanups are LIFO)
	return TestCache(t), release
}

// newCache is bubble with Options: a cache with the given options, closed
// when the test ends, and a channel closed right after that.
func newCache(t *testing.T, o *Options) (*Cache, <-chan struct{}) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	c := New(o)
	t.Cleanup(func() { c.Close() })
	return c, release
}

// sleeping returns a wait func for fetchLog.on (or for a Fetch of its own)
// that sleeps d, or less if release is closed first, so that it cannot
// outlive a bubble whose test failed early. A nil release never closes.
func sleeping(d time.Duration, release <-chan struct{}) func() {
	return func() { sleep(d, release) }
}

// sleep sleeps d, or less if release is closed first.
func sleep(d time.Duration, release <-chan struct{}) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-release:
	}
}

// waitingFor returns a wait func for fetchLog.on that waits for ch.
func waitingFor(ch <-chan struct{}) func() { return func() { <-ch } }

// waitEither waits until a or b is closed.
func waitEither(a, b <-chan struct{}) {
	select {
	case <-a:
	case <-b:
	}
}

// ---------------------------------------------------------------------------
// Back-off.

// backOffBase is the documented least back-off after n failures in a
// row: none up to CacheRefreshBackoffMin, then 2 s, doubling up to
// CacheRefreshMaxWait. The wait itself adds a stagger below the base.
func backOffBase(n int) time.Duration {
	if n <= CacheRefreshBackoffMin {
		return 0
	}
	shift := n - CacheRefreshBackoffMin
	if shift >= 6 { // 64 s: past the cap
		return CacheRefreshMaxWait
	}
	return min(time.Duration(1<<shift)*time.Second, CacheRefreshMaxWait)
}

// requireBackOff checks that times, the start times of failing fetches
// that each took d (with no RefreshTimer), follow a single back-off
// schedule: fetch i+1 starts d after fetch i, plus the back-off after i
// failures, which is at least its base and less than twice it.
func requireBackOff(t *testing.T, times []time.Time, d time.Duration) {
	t.Helper()
	for i := 1; i < len(times); i++ {
		wait := times[i].Sub(times[i-1]) - d
		base := backOffBase(i)
		if base == 0 {
			require.Equal(t, time.Duration(0), wait, "wait before fetch %d (after %d failures)", i+1, i)
			continue
		}
		require.GreaterOrEqual(t, wait, base, "wait before fetch %d (after %d failures)", i+1, i)
		require.Less(t, wait, 2*base, "wait before fetch %d (after %d failures)", i+1, i)
	}
}

// requireGaps checks the gaps between consecutive fetch start times:
// gap i (between fetch i and i+1) must be in [lo[i], hi[i]).
func requireGaps(t *testing.T, times []time.Time, lo, hi []time.Duration) {
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

// ---------------------------------------------------------------------------
// Metrics and logs.

// newSink returns a go-metrics configuration without host name or runtime
// metrics, and a fresh InmemSink whose interval is so long that it never
// rotates.
func newSink() (*metrics.Config, *metrics.InmemSink) {
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	return cfg, metrics.NewInmemSink(1<<62, 1<<62)
}

// installSink routes go-metrics to a fresh InmemSink until the test
// ends, then to a blackhole. The interval is huge so that everything lands
// in one interval, whether it is emitted at fake (bubble) or real time: no
// interval is ever rotated, so no bubble channel is touched from outside.
func installSink(t *testing.T) *metrics.InmemSink {
	t.Helper()
	cfg, sink := newSink()
	_, err := metrics.NewGlobal(cfg, sink)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = metrics.NewGlobal(cfg, &metrics.BlackholeSink{})
	})
	return sink
}

// sinkCounter sums a counter over the sink's intervals.
func sinkCounter(sink *metrics.InmemSink, name string) int {
	n := 0
	for _, iv := range sink.Data() {
		if v, ok := iv.Counters[name]; ok {
			n += v.Count
		}
	}
	return n
}

// sinkGauge returns the latest value of a gauge.
func sinkGauge(t *testing.T, sink *metrics.InmemSink, name string) float32 {
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

// newMetrics returns a go-metrics instance of its own (not the global
// one, so that the test may run in parallel) reporting to an InmemSink
// whose interval never rotates.
func newMetrics(t *testing.T) (*metrics.Metrics, *metrics.InmemSink) {
	t.Helper()
	cfg, sink := newSink()
	m, err := metrics.New(cfg, sink)
	require.NoError(t, err)
	return m, sink
}

// metricNames lists every counter, gauge and sample name in sink.
func metricNames(sink *metrics.InmemSink) []string {
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

// logBuf is a goroutine-safe buffer behind a slog text logger.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the logged lines that contain every one of parts.
func (l *logBuf) lines(parts ...string) []string {
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

// messages returns the lines whose message starts with "cache:" and that
// contain msg.
func (l *logBuf) messages(msg string) []string {
	return l.lines(`msg="cache:`, msg)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// logger returns a debug-level text logger writing to l.
func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// ---------------------------------------------------------------------------
// Notify.

// requireNoEvent fails if an event is waiting on ch once the bubble is idle.
func requireNoEvent(t *testing.T, ch <-chan UpdateEvent) {
	t.Helper()
	synctest.Wait()
	select {
	case ev := <-ch:
		t.Fatalf("unexpected event: %+v", ev)
	default:
	}
}

// recvEvent returns the next event, failing if none comes within d of fake
// time.
func recvEvent(t *testing.T, ch <-chan UpdateEvent, d time.Duration) UpdateEvent {
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

// eventLog records the events a NotifyCallback watch delivers.
type eventLog struct {
	mu     sync.Mutex
	events []UpdateEvent
}

func (e *eventLog) add(ev UpdateEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ev.Meta.Age = 0
	e.events = append(e.events, ev)
}

func (e *eventLog) get() []UpdateEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]UpdateEvent(nil), e.events...)
}

// ---------------------------------------------------------------------------
// Cache internals, keys and tokens.

// lookupKey returns the entry of a partition, or nil.
func (c *Cache) lookupKey(typ, dc, token, key string) *entry {
	k := c.makeKey(nil, typ, dc, token, key)
	return c.lookup(&k)
}

// isCached reports whether the cache holds an entry for typ and info.
func isCached(c *Cache, typ string, info RequestInfo) bool {
	return c.lookupKey(typ, info.Datacenter, info.Token, info.Key) != nil
}

// isCachedKey reports whether the cache holds key k of type typ.
func isCachedKey(c *Cache, typ, k string) bool {
	return isCached(c, typ, RequestInfo{Key: k})
}

// requireHeap fails unless every entry's heapIndex is its position and
// the heap property (parent expires no later than child) holds.
func requireHeap(t *testing.T, h expiryHeap) {
	t.Helper()
	for i, e := range h {
		require.Equal(t, i, int(e.heapIndex), "heapIndex of element %d", i)
		if i > 0 {
			parent := (i - 1) / 2
			require.LessOrEqual(t, h[parent].expires, e.expires, "heap order at %d", i)
		}
	}
}

// fetchedPartition is the value the partition test's types return: the
// partition that was fetched.
type fetchedPartition struct{ Type, DC, Token, Key string }

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

// oldHashM1 is the constant the cache's hash once XORed the first eight
// bytes of a key with before multiplying: any key of 8 to 16 bytes that
// starts with it, little-endian, hashed to 0 whatever the seed.
const oldHashM1 = 0xa0761d6478bd642f

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

// recordingT is a T that records failures instead of stopping the test, so that
// the helpers' failure paths can be checked. Fatalf only records: it may be
// called from any goroutine.
type recordingT struct {
	mu       sync.Mutex
	fatals   []string
	errors   []string
	logs     []string
	cleanups []func()
}

func (h *recordingT) Helper() {}

func (h *recordingT) Cleanup(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cleanups = append(h.cleanups, f)
}

func (h *recordingT) Logf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs = append(h.logs, fmt.Sprintf(format, args...))
}

func (h *recordingT) Errorf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errors = append(h.errors, fmt.Sprintf(format, args...))
}

func (h *recordingT) Fatalf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fatals = append(h.fatals, fmt.Sprintf(format, args...))
}

func (h *recordingT) FailNow() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fatals = append(h.fatals, "FailNow")
}

// failed reports whether Fatalf, Errorf or FailNow was called.
func (h *recordingT) failed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.fatals)+len(h.errors) > 0
}

// runCleanups runs the registered cleanups, last first, as testing does.
func (h *recordingT) runCleanups() {
	h.mu.Lock()
	fs := h.cleanups
	h.cleanups = nil
	h.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
