package fleet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/examples/etcdcache"
	"github.com/agentcache/cache/redistier"
	"github.com/agentcache/cache/redistier/redistest"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// wait bounds every wait for something that should happen soon; it is
// generous so that a loaded machine does not fail the tests.
const wait = 30 * time.Second

// leaseTTL is the tiers' LeaseTTL in these tests.
const leaseTTL = time.Second

// counter counts the fetches that reach etcd. hang, while set, holds the
// blocking ones, ignoring everything, as a stuck query would.
type counter struct {
	cache.Type
	calls, blocking atomic.Int64
	hang            atomic.Pointer[chan struct{}]
}

// Fetch counts the fetch and passes it on.
func (c *counter) Fetch(opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	c.calls.Add(1)
	if opts.MinIndex > 0 {
		c.blocking.Add(1)
		if h := c.hang.Load(); h != nil {
			<-*h
		}
	}
	return c.Type.Fetch(opts, r)
}

// instance is one member of a fleet: a cache with its own clients.
type instance struct {
	cache   *cache.Cache
	tier    *redistier.Tier // nil without the tier
	backend *counter
	etcd    *clientv3.Client

	closeOnce sync.Once
}

// close closes the cache, then the tier.
func (in *instance) close() {
	in.closeOnce.Do(func() {
		_ = in.cache.Close()
		if in.tier != nil {
			_ = in.tier.Close()
		}
	})
}

// newEtcdClient returns a client of the shared etcd server, closed when
// the test ends.
func newEtcdClient(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: wait, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// newRedisClient returns a client of the Redis server at addr, closed
// when the test ends.
func newRedisClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// newInstance starts a cache over etcd with "kv" registered with a
// blocking refresh, through a tier named name on the Redis server at
// redisAddr, or without a tier if redisAddr is empty. It is closed when
// the test ends.
func newInstance(t testing.TB, name, redisAddr string) *instance {
	t.Helper()
	cli := newEtcdClient(t)
	in := &instance{etcd: cli, backend: &counter{Type: &etcdcache.KV{Client: cli}}}
	typ := cache.Type(in.backend)
	if redisAddr != "" {
		in.tier = redistier.Wrap(in.backend, newRedisClient(t, redisAddr), redistier.Options{
			Name: name, Codec: redistier.JSON[etcdcache.KeyValue](),
			LeaseTTL: leaseTTL, MaxStale: time.Minute, RedisTimeout: time.Second,
		})
		typ = in.tier
	}
	in.cache = cache.New(nil)
	in.cache.RegisterType("kv", typ, &cache.RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})
	t.Cleanup(in.close)
	return in
}

// fleet is a set of instances.
type fleet []*instance

func newFleet(t testing.TB, n int, name, redisAddr string) fleet {
	var f fleet
	for range n {
		f = append(f, newInstance(t, name, redisAddr))
	}
	return f
}

// blockingCalls returns the blocking fetches that reached etcd.
func (f fleet) blockingCalls() int64 {
	var n int64
	for _, in := range f {
		n += in.backend.blocking.Load()
	}
	return n
}

// stats sums the tiers' counters.
func (f fleet) stats() redistier.Stats {
	var s redistier.Stats
	for _, in := range f {
		if in.tier == nil {
			continue
		}
		x := in.tier.Stats()
		s.SharedHits += x.SharedHits
		s.Fallbacks += x.Fallbacks
		s.BackendCalls += x.BackendCalls
		s.DecodeErrors += x.DecodeErrors
		s.LeaseWins += x.LeaseWins
		s.Waits += x.Waits
	}
	return s
}

// setup returns the shared Redis's address, an etcd client, n new keys
// and a tier Name private to the test.
func setup(t testing.TB, n int) (string, *clientv3.Client, keys, string) {
	t.Helper()
	addr := redistest.Shared(t).Addr()
	cli := newEtcdClient(t)
	return addr, cli, newKeys(t, cli, n), fmt.Sprintf("kv-%s-%d", t.Name(), runs.Add(1))
}

// keys is a set of etcd keys private to one test.
type keys []string

var runs atomic.Int64

// newKeys writes n keys with the value "v0" and returns them.
func newKeys(t testing.TB, cli *clientv3.Client, n int) keys {
	t.Helper()
	run := runs.Add(1)
	var ks keys
	for i := range n {
		k := fmt.Sprintf("/fleet-test/%s/%d/key-%03d", t.Name(), run, i)
		put(t, cli, k, "v0")
		ks = append(ks, k)
	}
	return ks
}

// put writes key and returns the revision of the write.
func put(t testing.TB, cli *clientv3.Client, key, value string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp, err := cli.Put(ctx, key, value)
	if err != nil {
		t.Errorf("put %s: %v", key, err)
		return 0
	}
	return resp.Header.Revision
}

// watcher follows keys on one instance with Notify and with blocking
// Gets, and records what it sees.
type watcher struct {
	in *instance

	mu   sync.Mutex
	seen map[string]map[int64]bool // key -> ModRevisions seen by Notify
	last map[string]string         // key -> last value seen by Notify

	errors atomic.Int64 // Get errors and Notify events with an error
	gets   atomic.Int64 // blocking Gets that returned
}

// watch starts Notify on every key and readers blocking Gets on random
// keys; they stop when ctx ends, and the returned function waits for
// them.
func watch(ctx context.Context, t testing.TB, in *instance, ks keys, readers int) (*watcher, func()) {
	w := &watcher{in: in, seen: map[string]map[int64]bool{}, last: map[string]string{}}
	var wg sync.WaitGroup
	for _, k := range ks {
		ch := make(chan cache.UpdateEvent, 4)
		if err := in.cache.Notify(ctx, "kv", &etcdcache.KVRequest{Key: k}, k, ch); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { w.follow(ctx, ch) })
	}
	for range readers {
		wg.Go(func() { w.read(ctx, ks) })
	}
	return w, wg.Wait
}

// follow records Notify events until ctx ends.
func (w *watcher) follow(ctx context.Context, ch <-chan cache.UpdateEvent) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-ch:
			kv, ok := ev.Result.(etcdcache.KeyValue)
			if ev.Err != nil || !ok {
				w.errors.Add(1)
				continue
			}
			w.mu.Lock()
			if w.seen[ev.CorrelationID] == nil {
				w.seen[ev.CorrelationID] = map[int64]bool{}
			}
			w.seen[ev.CorrelationID][kv.ModRevision] = true
			w.last[ev.CorrelationID] = kv.Value
			w.mu.Unlock()
		}
	}
}

// read runs blocking Gets of random keys until ctx ends.
func (w *watcher) read(ctx context.Context, ks keys) {
	index := map[string]uint64{}
	for ctx.Err() == nil {
		k := ks[rand.IntN(len(ks))]
		_, meta, err := w.in.cache.GetContext(ctx, "kv", &etcdcache.KVRequest{Key: k, MinIndex: index[k], Timeout: 500 * time.Millisecond})
		if err != nil {
			if ctx.Err() == nil {
				w.errors.Add(1)
			}
			continue
		}
		index[k] = meta.Index
		w.gets.Add(1)
	}
}

// hasAll reports whether Notify delivered a value for every key.
func (w *watcher) hasAll(ks keys) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.last) == len(ks)
}

// sawAll reports whether Notify delivered every revision in writes (or,
// with lastOnly, the last of each key) and ends on the last value of each
// key.
func (w *watcher) sawAll(writes map[string][]write, lastOnly bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, ws := range writes {
		for i, wr := range ws {
			if !w.seen[k][wr.rev] && (!lastOnly || i == len(ws)-1) {
				return false
			}
		}
		if w.last[k] != ws[len(ws)-1].value {
			return false
		}
	}
	return true
}

// missing describes what sawAll misses, for failure messages.
func (w *watcher) missing(writes map[string][]write) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := ""
	for k, ws := range writes {
		for _, wr := range ws {
			if !w.seen[k][wr.rev] {
				out += fmt.Sprintf("%s@%d (seen %v, last %q); ", k[len(k)-7:], wr.rev, w.seen[k], w.last[k])
			}
		}
	}
	return out
}

// write is one write of the writer.
type write struct {
	rev   int64
	value string
}

// writer puts new values into keys, round-robin, one every interval,
// until n writes are done or ctx ends; it returns the writes per key.
func writer(ctx context.Context, t testing.TB, cli *clientv3.Client, ks keys, n int, interval time.Duration) map[string][]write {
	out := map[string][]write{}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := range n {
		select {
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
		k := ks[i%len(ks)]
		v := fmt.Sprintf("v%d", i+1)
		if rev := put(t, cli, k, v); rev != 0 {
			out[k] = append(out[k], write{rev, v})
		}
	}
	return out
}

// count returns the number of writes.
func count(writes map[string][]write) int {
	n := 0
	for _, ws := range writes {
		n += len(ws)
	}
	return n
}
