package bench

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentcache/cache"
)

// scaleMaxEnv names the environment variable that sets the largest size the
// Scale families run, as a number ("1e7", "100000"). Unset, they run their
// smallest size only, so that CI stays quick.
const scaleMaxEnv = "SCALE_MAX"

// The sizes of the Scale families, smallest first.
var (
	scaleEntries  = []int{1e3, 1e4, 1e5, 1e6, 1e7}
	scaleWatchers = []int{1e3, 1e4, 1e5}
)

// Hit sampling. A clock read costs about 20 ns, as much as a hit, so each
// sample times a batch of hitBatch Gets and counts as batch time/hitBatch.
const (
	hitBatch   = 32
	hitSamples = 20_000 // batches per op
	hitWarmup  = 1_000  // batches run, and not kept, before the samples
)

// scaleSizes returns the sizes of all up to SCALE_MAX, or only the smallest
// when it is unset.
func scaleSizes(tb testing.TB, all []int) []int {
	tb.Helper()
	s := os.Getenv(scaleMaxEnv)
	if s == "" {
		return all[:1]
	}
	limit, err := strconv.ParseFloat(s, 64)
	if err != nil || limit < 1 {
		tb.Fatalf("%s=%q: want a size such as 1e7", scaleMaxEnv, s)
	}
	var out []int
	for _, n := range all {
		if float64(n) <= limit {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		out = all[:1]
	}
	return out
}

// makeScaleKeys returns n keys ("s0", "s1", ...) and their values, with
// only the key forms the Scale implementations use (no joined string).
func makeScaleKeys(n int) []benchKey {
	vals := make([]Value, n)
	keys := make([]benchKey, n)
	for i := range keys {
		k := "s" + strconv.Itoa(i)
		vals[i] = Value{byte(i), byte(i >> 8), byte(i >> 16)}
		keys[i] = benchKey{
			fk:  floorKey{typeName, dc, token, k},
			req: cache.RequestInfo{Datacenter: dc, Token: token, Key: k},
			val: &vals[i],
		}
	}
	return keys
}

// indexLoader serves a key's value by the index its name ends with, so that
// ten million keys need no map beside them.
func indexLoader(keys []benchKey) loader {
	return func(key string) *Value {
		i, err := strconv.Atoi(key[1:])
		if err != nil || i < 0 || i >= len(keys) {
			return nil
		}
		return keys[i].val
	}
}

// heapInUse runs a full collection and returns the live heap, plus the
// goroutine stacks when stacks is set.
func heapInUse(stacks bool) uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if stacks {
		return ms.HeapAlloc + ms.StackInuse
	}
	return ms.HeapAlloc
}

// perItem returns the growth from before to after, per item (0 if the
// heap shrank).
func perItem(before, after uint64, n int) float64 {
	if after < before {
		return 0
	}
	return float64(after-before) / float64(n)
}

// percentiles returns the p50 and p99 of xs, which it sorts.
func percentiles(xs []float64) (p50, p99 float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	slices.Sort(xs)
	return xs[len(xs)/2], xs[len(xs)*99/100]
}

// scaleImpls are the implementations of BenchmarkScale.
var scaleImpls = []impl{impls[0], impls[1], impls[len(impls)-1]} // agentcache, otter, floor

// scaleOp is what one op of BenchmarkScale measured.
type scaleOp struct {
	fillNs, bytes, p50, p99 float64 // per entry, per Get
}

// BenchmarkScale shows how the agent cache (and otter, for context) cost
// as the number of entries grows: 10^3 entries, and with SCALE_MAX up to
// 10^7. Each op fills a new instance with N entries through Get, from a
// non-blocking type (keys and values are allocated before), then Gets
// random keys. It reports:
//
//   - fill-ns/entry: the time to fill, per entry;
//   - B/entry: the growth of HeapAlloc (after runtime.GC) from before the
//     instance was created to after it was filled, per entry;
//   - hit-p50-ns, hit-p99-ns: percentiles of the hit time, per Get. A clock
//     read costs about as much as a hit, so each of 20,000 samples times a
//     batch of 32 Gets of random keys and counts batch time/32; a p99 is
//     thus that of 32-Get averages, not of single Gets.
//
// The samples are taken inside each op, so -benchtime=1x gives the full
// figures; with more ops each metric is the mean over them. ns/op is the
// time of a whole op, collections included.
func BenchmarkScale(b *testing.B) {
	for _, n := range scaleSizes(b, scaleEntries) {
		keys := makeScaleKeys(n)
		rng := rand.New(rand.NewPCG(uint64(n), 7))
		order := make([]int32, (hitSamples+hitWarmup)*hitBatch)
		for i := range order {
			order[i] = int32(rng.IntN(n))
		}
		for _, im := range scaleImpls {
			b.Run("entries="+strconv.Itoa(n)+"/"+im.name, func(b *testing.B) {
				var sum scaleOp
				for range b.N {
					op := scaleRun(b, im, keys, order)
					sum.fillNs += op.fillNs
					sum.bytes += op.bytes
					sum.p50 += op.p50
					sum.p99 += op.p99
				}
				ops := float64(b.N)
				b.ReportMetric(sum.fillNs/ops, "fill-ns/entry")
				b.ReportMetric(sum.bytes/ops, "B/entry")
				b.ReportMetric(sum.p50/ops, "hit-p50-ns")
				b.ReportMetric(sum.p99/ops, "hit-p99-ns")
			})
		}
		keys, order = nil, nil
		runtime.GC() // the next size starts without this one's keys
	}
}

// scaleRun is one op of BenchmarkScale: a new instance of im filled with
// keys, its memory measured, then hits sampled in the given order.
func scaleRun(b *testing.B, im impl, keys []benchKey, order []int32) scaleOp {
	before := heapInUse(false)
	start := time.Now()
	g := im.new(indexLoader(keys), len(keys))
	defer g.close()
	for i := range keys {
		if v, err := g.get(&keys[i]); v != keys[i].val || err != nil {
			b.Fatalf("fill: Get(%q) = %v, %v; want %v", keys[i].fk.key, v, err, keys[i].val)
		}
	}
	fill := time.Since(start)
	after := heapInUse(false)

	samples := make([]float64, 0, hitSamples)
	bad, warmth := 0, 0
	for s := range hitSamples + hitWarmup {
		batch := order[s*hitBatch : (s+1)*hitBatch]
		warmth += touch(keys, batch)
		t0 := time.Now()
		for _, i := range batch {
			k := &keys[i]
			if v, err := g.get(k); v != k.val || err != nil {
				bad++
			}
		}
		d := time.Since(t0)
		if s >= hitWarmup {
			samples = append(samples, float64(d.Nanoseconds())/hitBatch)
		}
	}
	if bad > 0 {
		b.Fatalf("%d hits returned a wrong value or an error", bad)
	}
	runtime.KeepAlive(g)
	touched.Store(int64(warmth))
	op := scaleOp{
		fillNs: float64(fill.Nanoseconds()) / float64(len(keys)),
		bytes:  perItem(before, after, len(keys)),
	}
	op.p50, op.p99 = percentiles(samples)
	return op
}

// touched keeps touch's reads from being optimised away.
var touched atomic.Int64

// touch reads the caller's side of the keys of batch (the key struct, the
// boxed request, the key's bytes) so that they are in the CPU caches when
// the batch is timed, as a request a caller has just built would be: the
// hit times are then the cache's own, not those of fetching the
// benchmark's keys from memory.
func touch(keys []benchKey, batch []int32) int {
	n := 0
	for _, i := range batch {
		k := &keys[i]
		info := k.req.CacheInfo()
		n += len(info.Key) + int(info.Key[0]) + int(k.fk.key[len(k.fk.key)-1])
	}
	return n
}

// Notify scale: watchers of a blocking type spread over notifyKeys keys,
// each key changed notifyChanges times per op.
const (
	notifyKeys    = 100
	notifyChanges = 5
	notifyWait    = 2 * time.Minute // the longest a round of events may take
)

// board is the blocking backend of BenchmarkScaleNotify: one index shared
// by every key. A Fetch returns at once if the index is past its MinIndex,
// else when the index is raised or the board (or the fetch's context)
// ends.
type board struct {
	mu      sync.Mutex
	index   uint64
	changed chan struct{} // closed, and replaced, by each raise
	stop    chan struct{}
	val     Value
}

func newBoard() *board {
	return &board{index: 1, changed: make(chan struct{}), stop: make(chan struct{})}
}

// raise changes every key: it bumps the index and wakes every Fetch.
func (bd *board) raise() {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	bd.index++
	close(bd.changed)
	bd.changed = make(chan struct{})
}

func (bd *board) now() (uint64, <-chan struct{}) {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	return bd.index, bd.changed
}

// Fetch is FetchContext without a context of its own.
func (bd *board) Fetch(opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	return bd.FetchContext(context.Background(), opts, r)
}

// FetchContext waits for the index to pass opts.MinIndex.
func (bd *board) FetchContext(ctx context.Context, opts cache.FetchOptions, _ cache.Request) (cache.FetchResult, error) {
	index, changed := bd.now()
	if index <= opts.MinIndex {
		select {
		case <-changed:
		case <-bd.stop:
			return cache.FetchResult{}, errBoardStopped
		case <-ctx.Done():
			return cache.FetchResult{}, ctx.Err()
		}
		index, _ = bd.now()
	}
	return cache.FetchResult{Value: &bd.val, Index: index}, nil
}

// SupportsBlocking reports true: the board's fetches block on an index.
func (*board) SupportsBlocking() bool { return true }

var errBoardStopped = errors.New("board stopped")

// tally counts the events of every watcher and signals when a target
// count is reached.
type tally struct {
	got, errs, want atomic.Int64
	reached         chan struct{}
}

func (t *tally) event(_ context.Context, e cache.UpdateEvent) {
	if e.Err != nil {
		t.errs.Add(1)
	}
	if t.got.Add(1) == t.want.Load() {
		t.reached <- struct{}{}
	}
}

// await waits for the count to reach the target set last.
func (t *tally) await(b *testing.B, what string) {
	b.Helper()
	select {
	case <-t.reached:
	case <-time.After(notifyWait):
		b.Fatalf("%s: %d events (%d errors) after %v, want %d", what, t.got.Load(), t.errs.Load(), notifyWait, t.want.Load())
	}
}

// BenchmarkScaleNotify shows how Notify costs as watchers grow: 10^3
// watchers, and with SCALE_MAX up to 10^5, NotifyCallback watches of a
// blocking type spread evenly over 100 keys. It reports:
//
//   - B/watcher: the growth of HeapAlloc+StackInuse (after runtime.GC) per
//     idle watcher, once each has had its first event. One watcher per key
//     is started first, outside the measure, so that the keys' entries and
//     their blocking fetches are not counted;
//   - ms/change: the time from a change of every key until all N
//     watchers have had its event (median of 5 changes);
//   - ns/event: ms/change over N, the delivery time per watcher.
//
// Each metric is the mean over the ops; ns/op is the time of a whole op.
func BenchmarkScaleNotify(b *testing.B) {
	for _, n := range scaleSizes(b, scaleWatchers) {
		b.Run("watchers="+strconv.Itoa(n), func(b *testing.B) {
			var bytes, ms float64
			for range b.N {
				w, d := notifyRun(b, n)
				bytes += w
				ms += d
			}
			b.ReportMetric(bytes/float64(b.N), "B/watcher")
			b.ReportMetric(ms/float64(b.N), "ms/change")
			b.ReportMetric(ms/float64(b.N)*1e6/float64(n), "ns/event")
		})
	}
}

// notifyRun is one op of BenchmarkScaleNotify with n watchers: it returns
// the bytes per idle watcher and the median milliseconds per change.
func notifyRun(b *testing.B, n int) (perWatcher, msPerChange float64) {
	goroutines := runtime.NumGoroutine()
	reqs := make([]cache.Request, n)
	for i := range reqs {
		reqs[i] = cache.RequestInfo{Datacenter: dc, Token: token, Key: "w" + strconv.Itoa(i%notifyKeys)}
	}
	bd := newBoard()
	c := cache.New(nil)
	c.RegisterType(typeName, bd, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		close(bd.stop)
		c.Close()
		settle(b, goroutines)
	}()
	t := &tally{reached: make(chan struct{}, 1)}
	watch := func(rs []cache.Request) {
		t.want.Add(int64(len(rs)))
		for _, r := range rs {
			if err := c.NotifyCallback(ctx, typeName, r, "", t.event); err != nil {
				b.Fatalf("NotifyCallback: %v", err)
			}
		}
		t.await(b, "first events")
	}
	watch(reqs[:notifyKeys]) // one a key: the entries and their fetches
	before := heapInUse(true)
	watch(reqs[notifyKeys:])
	after := heapInUse(true)

	changes := make([]float64, 0, notifyChanges)
	for range notifyChanges {
		t.want.Add(int64(n))
		start := time.Now()
		bd.raise()
		t.await(b, "change")
		changes = append(changes, float64(time.Since(start).Nanoseconds())/1e6)
	}
	if e := t.errs.Load(); e > 0 {
		b.Fatalf("%d events with an error", e)
	}
	p50, _ := percentiles(changes)
	return perItem(before, after, n-notifyKeys), p50
}

// settle waits, polling up to a deadline, until no more goroutines run
// than want: the watches and fetches of an op end after it returns, and
// must not be counted in the next op's memory.
func settle(b *testing.B, want int) {
	b.Helper()
	deadline := time.Now().Add(notifyWait)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			b.Fatalf("%d goroutines still running after %v, want %d", runtime.NumGoroutine(), notifyWait, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestScaleSizes checks how SCALE_MAX picks the sizes of the Scale
// families.
func TestScaleSizes(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want []int
	}{
		{"", []int{1e3}},
		{"1e3", []int{1e3}},
		{"1e5", []int{1e3, 1e4, 1e5}},
		{"200000", []int{1e3, 1e4, 1e5}},
		{"1e7", scaleEntries},
		{"10", []int{1e3}},
	} {
		t.Setenv(scaleMaxEnv, tc.env)
		if got := scaleSizes(t, scaleEntries); !slices.Equal(got, tc.want) {
			t.Errorf("%s=%q: sizes %v, want %v", scaleMaxEnv, tc.env, got, tc.want)
		}
	}
}
