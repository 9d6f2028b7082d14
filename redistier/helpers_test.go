package redistier

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/redistier/redistest"
	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) {
	// go-redis logs connections it drops after a cancelled call; the
	// tests cancel calls on purpose.
	redis.SetLogger(quiet{})
	os.Exit(redistest.Main(m))
}

// quiet discards go-redis's log lines.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// wait bounds every wait for something that should happen soon; it is
// generous so that a loaded machine does not fail the tests.
const wait = 20 * time.Second

// newClient returns a client of the server at addr (the shared server's
// by default), closed when the test ends.
func newClient(t testing.TB, addr ...string) *redis.Client {
	t.Helper()
	if len(addr) == 0 {
		addr = []string{redistest.Shared(t).Addr()}
	}
	rdb := redis.NewClient(&redis.Options{
		Addr:        addr[0],
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MaxRetries: -1,
	})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// names numbers tier names, so that tests (and runs of them) never share
// records.
var names atomic.Int64

// uniqueName returns a tier Name private to this test.
func uniqueName(t testing.TB) string {
	return fmt.Sprintf("%s-%d-%d", t.Name(), os.Getpid(), names.Add(1))
}

// newTier wraps inner for a test, with short timeouts; it is closed when
// the test ends.
func newTier(t testing.TB, inner cache.Type, rdb redis.UniversalClient, o Options) *Tier {
	t.Helper()
	if o.Codec == nil {
		o.Codec = JSON[string]()
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = time.Second
	}
	tier := Wrap(inner, rdb, o)
	t.Cleanup(func() { _ = tier.Close() })
	return tier
}

// newCache returns a cache with typ registered as "t" with a blocking
// refresh; it is closed when the test ends, before the tier.
func newCache(t testing.TB, typ cache.Type) *cache.Cache {
	t.Helper()
	c := cache.New(nil)
	c.RegisterType("t", typ, &cache.RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// fakeBackend is an in-process data source of string values with an
// index that grows with every change, supporting blocking fetches.
type fakeBackend struct {
	blocking bool

	mu      sync.Mutex
	value   string
	index   uint64
	changed chan struct{} // closed and replaced at every change
	err     error         // returned by every fetch while set
	hang    chan struct{} // while set, fetches wait for it, ignoring their context

	calls         atomic.Int64 // every fetch
	blockingCalls atomic.Int64 // fetches with MinIndex > 0
}

func newFakeBackend(blocking bool, value string) *fakeBackend {
	return &fakeBackend{blocking: blocking, value: value, index: 1, changed: make(chan struct{})}
}

// set changes the value and wakes blocked fetches.
func (b *fakeBackend) set(v string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.value = v
	b.index++
	close(b.changed)
	b.changed = make(chan struct{})
}

// failWith makes fetches fail with err (nil: succeed again).
func (b *fakeBackend) failWith(err error) {
	b.mu.Lock()
	b.err = err
	b.mu.Unlock()
}

// hangFetches makes fetches wait until the returned function is called.
func (b *fakeBackend) hangFetches() (release func()) {
	ch := make(chan struct{})
	b.mu.Lock()
	b.hang = ch
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.hang = nil
			b.mu.Unlock()
			close(ch)
		})
	}
}

func (b *fakeBackend) SupportsBlocking() bool { return b.blocking }

func (b *fakeBackend) Fetch(opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	return b.FetchContext(context.Background(), opts, r)
}

// FetchContext returns the value, waiting with MinIndex until the index
// is above it, the Timeout passes or ctx ends.
func (b *fakeBackend) FetchContext(ctx context.Context, opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	b.calls.Add(1)
	if opts.MinIndex > 0 {
		b.blockingCalls.Add(1)
	}
	b.mu.Lock()
	hang := b.hang
	b.mu.Unlock()
	if hang != nil {
		<-hang
	}
	var timeout <-chan time.Time
	if opts.Timeout > 0 {
		tm := time.NewTimer(opts.Timeout)
		defer tm.Stop()
		timeout = tm.C
	}
	for {
		b.mu.Lock()
		v, index, changed, err := b.value, b.index, b.changed, b.err
		b.mu.Unlock()
		if err != nil {
			return cache.FetchResult{}, err
		}
		if !b.blocking || index > opts.MinIndex {
			return cache.FetchResult{Value: v + "@" + r.CacheInfo().Token, Index: index}, nil
		}
		select {
		case <-changed:
		case <-timeout:
			return cache.FetchResult{Value: v + "@" + r.CacheInfo().Token, Index: index}, nil
		case <-ctx.Done():
			return cache.FetchResult{}, ctx.Err()
		}
	}
}

// fetchResult is the outcome of a fetch run in the background.
type fetchResult struct {
	res cache.FetchResult
	err error
}

// fetchAsync runs tier.FetchContext in the background.
func fetchAsync(ctx context.Context, tier *Tier, opts cache.FetchOptions, r cache.Request) <-chan fetchResult {
	ch := make(chan fetchResult, 1)
	go func() {
		res, err := tier.FetchContext(ctx, opts, r)
		ch <- fetchResult{res, err}
	}()
	return ch
}

// receive waits up to d for a background fetch.
func receive(t testing.TB, ch <-chan fetchResult, d time.Duration) fetchResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		t.Fatalf("no fetch result after %s", d)
		return fetchResult{}
	}
}
