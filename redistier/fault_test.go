package redistier

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/redistier/redistest"
	"github.com/redis/go-redis/v9"
)

// logBuffer collects log lines; it is safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// count returns how many lines contain s.
func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// TestRedisOutage kills Redis under a tier and restarts it: fetches keep
// succeeding from the backend, the fallbacks are counted and the outage
// logged once, and sharing resumes once Redis is back.
func TestRedisOutage(t *testing.T) {
	srv := redistest.New(t)
	b := newFakeBackend(false, "v")
	logs := &logBuffer{}
	tier := newTier(t, b, newClient(t, srv.Addr()), Options{Name: uniqueName(t), MaxStale: time.Hour, RedisTimeout: 200 * time.Millisecond, Logger: logs.logger()})
	req := cache.RequestInfo{Key: "k"}
	fetchOK := func() {
		t.Helper()
		if res, err := tier.Fetch(cache.FetchOptions{}, req); err != nil || res.Value != "v@" {
			t.Fatalf("fetch: %+v %v", res, err)
		}
	}
	fetchOK()
	fetchOK()
	if s := tier.Stats(); s.SharedHits != 1 || s.BackendCalls != 1 {
		t.Fatalf("before the outage: %+v", s)
	}

	srv.Kill()
	for range 20 {
		fetchOK()
	}
	s := tier.Stats()
	if s.Fallbacks != 20 || s.BackendCalls != 21 {
		t.Fatalf("during the outage: %+v, want 20 fallbacks", s)
	}
	if n := logs.count("redis unreachable"); n != 1 {
		t.Fatalf("outage logged %d times, want once:\n%s", n, logs.buf.String())
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// Within a probe interval a fetch tries Redis again and shares.
	redistest.Eventually(t, wait, "sharing to resume", func() bool {
		fetchOK()
		return tier.Stats().SharedHits > s.SharedHits
	})
	if n := logs.count("sharing resumed"); n != 1 {
		t.Fatalf("recovery logged %d times, want once", n)
	}
}

// TestSlowRedisIsBounded: a Redis that accepts connections but never
// answers costs a fetch about RedisTimeout, not a failure.
func TestSlowRedisIsBounded(t *testing.T) {
	// The client's own timeout is far longer than the tier's.
	slowRedisIsBounded(t, &redis.Options{ReadTimeout: 10 * time.Second, MaxRetries: -1})
}

// TestSlowRedisIsBoundedByDeadline: the same through a client with
// ContextTimeoutEnabled, whose calls the tier runs in the fetch's own
// goroutine, bounded by their context's deadline alone.
func TestSlowRedisIsBoundedByDeadline(t *testing.T) {
	slowRedisIsBounded(t, &redis.Options{ReadTimeout: 10 * time.Second, MaxRetries: -1, ContextTimeoutEnabled: true})
}

// TestSlowRedisIsBoundedWithoutSocketDeadlines: a client told to set no
// socket deadlines ignores ContextTimeoutEnabled, and is bounded as one
// without it.
func TestSlowRedisIsBoundedWithoutSocketDeadlines(t *testing.T) {
	slowRedisIsBounded(t, &redis.Options{ReadTimeout: -2, WriteTimeout: -2, MaxRetries: -1, ContextTimeoutEnabled: true})
}

// slowRedisIsBounded checks TestSlowRedisIsBounded with a client of the
// given options (but for Addr).
func slowRedisIsBounded(t *testing.T, opts *redis.Options) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		_ = l.Close()
		conns.Wait()
	})
	conns.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { // never answer
				<-done
				_ = c.Close()
			})
		}
	})
	b := newFakeBackend(false, "v")
	const timeout = 100 * time.Millisecond
	opts.Addr = l.Addr().String()
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	tier := newTier(t, b, rdb, Options{Name: uniqueName(t), RedisTimeout: timeout})
	// In the background, so that a fetch that hangs fails the test; it
	// ends when the cleanup closes the connections.
	r := receive(t, fetchAsync(context.Background(), tier, cache.FetchOptions{}, cache.RequestInfo{Key: "k"}), timeout+900*time.Millisecond)
	if r.err != nil || r.res.Value != "v@" {
		t.Fatalf("fetch: %+v %v", r.res, r.err)
	}
	if s := tier.Stats(); s.Fallbacks != 1 {
		t.Fatalf("stats %+v, want one fallback", s)
	}
	// Until the next probe, fetches skip Redis altogether.
	start := time.Now()
	if _, err := tier.Fetch(cache.FetchOptions{}, cache.RequestInfo{Key: "k"}); err != nil || time.Since(start) > timeout {
		t.Fatalf("second fetch: %v after %s", err, time.Since(start))
	}
}

// hungHolder makes holder the lease holder of a blocking query that hangs
// in the backend (under ctx) and other an instance waiting for it. Later
// fetches do not hang; release ends the hung one.
func hungHolder(t *testing.T, ctx context.Context, b *fakeBackend, holder, other *Tier) (hung, waited <-chan fetchResult, release func()) {
	t.Helper()
	req := cache.RequestInfo{Key: "k"}
	if _, err := holder.Fetch(cache.FetchOptions{}, req); err != nil {
		t.Fatal(err)
	}
	release = b.hangFetches()
	t.Cleanup(release)
	opts := cache.FetchOptions{MinIndex: 1, Timeout: wait}
	hung = fetchAsync(ctx, holder, opts, req)
	redistest.Eventually(t, wait, "the holder's query", func() bool { return holder.Stats().LeaseWins == 2 })
	waited = fetchAsync(context.Background(), other, opts, req)
	redistest.Eventually(t, wait, "the other to wait", func() bool { return other.Stats().Waits >= 1 })
	b.mu.Lock()
	b.hang = nil // the next fetch, the other's, does not hang
	b.mu.Unlock()
	return hung, waited, release
}

// takenOver checks that other, having taken over, returns the next
// change, and ends the hung fetch.
func takenOver(t *testing.T, b *fakeBackend, hung, waited <-chan fetchResult, release func()) {
	t.Helper()
	b.set("v2")
	if r := receive(t, waited, wait); r.err != nil || r.res.Value != "v2@" {
		t.Fatalf("other's fetch: %+v", r)
	}
	release()
	receive(t, hung, wait)
}

// TestHolderDiesLeaseExpires: the lease holder's fetch hangs and it loses
// Redis (as a crashed process would): its lease expires and a waiting
// instance takes over within LeaseTTL and a second.
func TestHolderDiesLeaseExpires(t *testing.T) {
	const leaseTTL = 500 * time.Millisecond
	b := newFakeBackend(true, "v1")
	name := uniqueName(t)
	holderRedis := newClient(t)
	holder := newTier(t, b, holderRedis, Options{Name: name, LeaseTTL: leaseTTL})
	other := newTier(t, b, newClient(t), Options{Name: name, LeaseTTL: leaseTTL})
	hung, waited, release := hungHolder(t, context.Background(), b, holder, other)

	_ = holderRedis.Close() // the holder can neither renew nor release
	died := time.Now()
	redistest.Eventually(t, leaseTTL+time.Second, "the other to take over", func() bool { return other.Stats().LeaseWins == 1 })
	if took := time.Since(died); took > leaseTTL+time.Second {
		t.Fatalf("took over after %s", took)
	}
	takenOver(t, b, hung, waited, release)
}

// TestCancelledHolderReleasesLease: when the holder's fetch is abandoned
// (its cache closed), it releases the lease at once, long before it
// would expire.
func TestCancelledHolderReleasesLease(t *testing.T) {
	b := newFakeBackend(true, "v1")
	name := uniqueName(t)
	holder := newTier(t, b, newClient(t), Options{Name: name, LeaseTTL: time.Minute})
	other := newTier(t, b, newClient(t), Options{Name: name, LeaseTTL: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	hung, waited, release := hungHolder(t, ctx, b, holder, other)
	cancel()
	redistest.Eventually(t, 5*time.Second, "the other to take over", func() bool { return other.Stats().LeaseWins == 1 })
	takenOver(t, b, hung, waited, release)
}

// TestCorruptRecord: a record that cannot be decoded is counted, fetched
// again from the backend and overwritten.
func TestCorruptRecord(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		b := newFakeBackend(blocking, "v")
		rdb := newClient(t)
		tier := newTier(t, b, rdb, Options{Name: uniqueName(t), MaxStale: time.Hour})
		key := tier.RecordKey("", "", "k")
		if err := rdb.Set(context.Background(), key, "not a record", 0).Err(); err != nil {
			t.Fatal(err)
		}
		res, err := tier.Fetch(cache.FetchOptions{}, cache.RequestInfo{Key: "k"})
		if err != nil || res.Value != "v@" || b.calls.Load() != 1 {
			t.Fatalf("blocking %v: %+v %v, %d calls", blocking, res, err, b.calls.Load())
		}
		if s := tier.Stats(); s.DecodeErrors != 1 {
			t.Fatalf("blocking %v: stats %+v, want one decode error", blocking, s)
		}
		if raw, err := rdb.Get(context.Background(), key).Result(); err != nil || !strings.HasPrefix(raw, recordMagic) {
			t.Fatalf("blocking %v: record not overwritten: %q %v", blocking, raw, err)
		}
		if _, err := tier.Fetch(cache.FetchOptions{}, cache.RequestInfo{Key: "k"}); err != nil || b.calls.Load() != 1 {
			t.Fatalf("blocking %v: the new record was not served: %v", blocking, err)
		}
	}
}

// TestUndecodableValue: a record whose value the Codec rejects is fetched
// again and replaced.
func TestUndecodableValue(t *testing.T) {
	b := newFakeBackend(false, "v")
	rdb := newClient(t)
	tier := newTier(t, b, rdb, Options{Name: uniqueName(t), MaxStale: time.Hour})
	p := tier.partition(cache.RequestInfo{Key: "k"})
	if err := rdb.Set(context.Background(), p.record, encodeRecord(p, 7, time.Now(), []byte("{")), 0).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := tier.Fetch(cache.FetchOptions{}, cache.RequestInfo{Key: "k"})
	if err != nil || res.Value != "v@" || tier.Stats().DecodeErrors != 1 {
		t.Fatalf("%+v %v %+v", res, err, tier.Stats())
	}
	if _, err := tier.Fetch(cache.FetchOptions{}, cache.RequestInfo{Key: "k"}); err != nil || b.calls.Load() != 1 {
		t.Fatalf("the new record was not served: %v, %d calls", err, b.calls.Load())
	}
}

// TestLeaseIsReleasedOnlyByItsOwner: a commit by another owner neither
// deletes the lease nor writes the record.
func TestLeaseIsReleasedOnlyByItsOwner(t *testing.T) {
	b := newFakeBackend(false, "v")
	rdb := newClient(t)
	tier := newTier(t, b, rdb, Options{Name: uniqueName(t)})
	f := &fetch{t: tier, ctx: context.Background(), p: tier.partition(cache.RequestInfo{Key: "k"})}
	l, err := f.acquire("n:owner", snapshot{})
	if err != nil || !l.won {
		t.Fatalf("acquire: %+v %v", l, err)
	}
	if l, err := f.acquire("n:intruder", snapshot{}); err != nil || l.won || l.pttl <= 0 {
		t.Fatalf("second acquire: %+v %v", l, err)
	}
	f.commit("n:intruder", encodeRecord(f.p, 1, time.Now(), []byte(`"x"`)), kindRecord, nil)
	ctx := context.Background()
	if owner, err := rdb.Get(ctx, f.p.lease).Result(); err != nil || owner != "n:owner" {
		t.Fatalf("lease after another's commit: %q %v", owner, err)
	}
	if n, _ := rdb.Exists(ctx, f.p.record).Result(); n != 0 {
		t.Fatal("another owner's commit wrote the record")
	}
	if s := tier.Stats(); s.LeasesLost != 1 {
		t.Fatalf("stats %+v", s)
	}
	f.commit("n:owner", nil, kindNone, nil)
	if n, _ := rdb.Exists(ctx, f.p.lease).Result(); n != 0 {
		t.Fatal("the owner's commit left the lease")
	}
}

// TestBlockingWaitTimesOut: a waiter whose Timeout passes before the
// holder answers returns "nothing new" with its MinIndex.
func TestBlockingWaitTimesOut(t *testing.T) {
	b := newFakeBackend(true, "v")
	name := uniqueName(t)
	holder := newTier(t, b, newClient(t), Options{Name: name})
	other := newTier(t, b, newClient(t), Options{Name: name})
	req := cache.RequestInfo{Key: "k"}
	held := fetchAsync(context.Background(), holder, cache.FetchOptions{MinIndex: 1, Timeout: wait}, req)
	redistest.Eventually(t, wait, "the holder's query", func() bool { return b.blockingCalls.Load() == 1 })
	r := receive(t, fetchAsync(context.Background(), other, cache.FetchOptions{MinIndex: 1, Timeout: 100 * time.Millisecond}, req), wait)
	if r.err != nil || !r.res.NotModified || r.res.Index != 1 {
		t.Fatalf("timed out wait: %+v", r)
	}
	b.set("v2")
	receive(t, held, wait)
}

// TestWrapPanicsOnBadOptions: programming errors panic, as
// cache.RegisterType's do.
func TestWrapPanicsOnBadOptions(t *testing.T) {
	b := newFakeBackend(false, "v")
	rdb := newClient(t)
	for _, tc := range []struct {
		name  string
		inner cache.Type
		o     Options
	}{
		{"nil type", nil, Options{Name: "n", Codec: JSON[string]()}},
		{"no name", b, Options{Codec: JSON[string]()}},
		{"no codec", b, Options{Name: "n"}},
		{"negative MaxStale", b, Options{Name: "n", Codec: JSON[string](), MaxStale: -1}},
		{"short LeaseTTL", b, Options{Name: "n", Codec: JSON[string](), LeaseTTL: time.Millisecond}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Wrap did not panic", tc.name)
				}
			}()
			Wrap(tc.inner, rdb, tc.o)
		}()
	}
}

// TestJSONCodec round-trips a value and rejects one of another type.
func TestJSONCodec(t *testing.T) {
	type node struct{ Name string }
	c := JSON[[]node]()
	b, err := c.Encode([]node{{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Decode(b)
	if err != nil || len(v.([]node)) != 1 || v.([]node)[0].Name != "a" {
		t.Fatalf("%v %v", v, err)
	}
	if _, err := c.Encode("x"); err == nil {
		t.Fatal("encoded a string as []node")
	}
	if _, err := c.Decode([]byte("{")); err == nil {
		t.Fatal("decoded bad JSON")
	}
}

// TestLatePublicationDoesNotGoBack: a publication that arrives after the
// waiter read a newer record (the subscription lagging behind the reads)
// must not take the entry back; the answer to the waiter's own question
// is taken whatever its index (a reset).
func TestLatePublicationDoesNotGoBack(t *testing.T) {
	tier := newTier(t, newFakeBackend(true, "v"), newClient(t), Options{Name: uniqueName(t)})
	p := tier.partition(cache.RequestInfo{Key: "k"})
	f := &fetch{t: tier, ctx: context.Background(), p: p, blocking: true,
		opts: cache.FetchOptions{MinIndex: 5, LastResult: &cache.FetchResult{Value: "v", Index: 5}}}
	publication := func(index, asked uint64) notice {
		body := binary.BigEndian.AppendUint64(nil, asked)
		return notice{kind: kindRecord, body: append(body, encodeRecord(p, index, time.Now(), []byte(`"x"`))...)}
	}
	for _, tc := range []struct {
		index, asked uint64
		want         bool
	}{
		{3, 2, false}, // late: answers an older question
		{5, 4, false},
		{6, 4, true}, // newer than the entry
		{3, 5, true}, // a reset, in answer to this very question
		{5, 5, true}, // a timeout of this very question
	} {
		res, done, err := f.notice(publication(tc.index, tc.asked))
		if err != nil || done != tc.want || (done && res.Index != tc.index) {
			t.Errorf("index %d asked %d: %+v done %v %v, want done %v", tc.index, tc.asked, res, done, err, tc.want)
		}
	}
}

// TestHonoursDeadlines: only clients that end their calls at the
// context's deadline are called without a goroutine of their own.
func TestHonoursDeadlines(t *testing.T) {
	const addr = "127.0.0.1:1"
	for _, c := range []struct {
		name string
		rdb  redis.UniversalClient
		want bool
	}{
		{"client", redis.NewClient(&redis.Options{Addr: addr}), false},
		{"client with ContextTimeoutEnabled", redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true}), true},
		{"client without socket deadlines", redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, ReadTimeout: -2}), false},
		{"cluster", redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}}), false},
		{"cluster with ContextTimeoutEnabled", redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}, ContextTimeoutEnabled: true}), true},
		{"cluster with ClusterSlots", redis.NewClusterClient(&redis.ClusterOptions{
			ContextTimeoutEnabled: true,
			ClusterSlots:          func(context.Context) ([]redis.ClusterSlot, error) { return nil, nil },
		}), false},
		{"ring", redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addr}}), false},
		{"ring with ContextTimeoutEnabled", redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addr}, ContextTimeoutEnabled: true}), true},
		{"ring without socket deadlines", redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addr}, ContextTimeoutEnabled: true, WriteTimeout: -2}), false},
	} {
		if got := honoursDeadlines(c.rdb); got != c.want {
			t.Errorf("%s: honoursDeadlines = %v, want %v", c.name, got, c.want)
		}
		_ = c.rdb.Close()
	}
}
