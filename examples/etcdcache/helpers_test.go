package etcdcache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentcache/cache"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// wait bounds every wait for something that should happen soon; it is
// generous so that a loaded machine does not fail the tests.
const wait = 20 * time.Second

// newClient returns a client of the given endpoints (the shared server's
// by default), closed when the test ends. It reconnects within a second
// of a server coming back.
func newClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	if len(endpoints) == 0 {
		endpoints = shared.Endpoints()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: wait,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   time.Second,
			},
			MinConnectTimeout: 2 * time.Second,
		})},
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// countReads replaces the client's KV with one that counts reads.
func countReads(cli *clientv3.Client) *countingKV {
	kv := &countingKV{KV: cli.KV}
	cli.KV = kv
	return kv
}

// countingKV counts Get calls and can hold them until released.
type countingKV struct {
	clientv3.KV
	gets atomic.Int64
	hold atomic.Pointer[chan struct{}]
}

// Get counts the read and waits for the hold channel, if any, to close.
func (k *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.gets.Add(1)
	if h := k.hold.Load(); h != nil {
		select {
		case <-*h:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return k.KV.Get(ctx, key, opts...)
}

// countingType wraps a type and records its fetches.
type countingType struct {
	cache.Type
	fetches atomic.Int64

	mu       sync.Mutex
	failures []time.Time
}

// Fetch counts the fetch and records when it failed.
func (c *countingType) Fetch(opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	c.fetches.Add(1)
	res, err := c.Type.Fetch(opts, r)
	if err != nil {
		c.mu.Lock()
		c.failures = append(c.failures, time.Now())
		c.mu.Unlock()
	}
	return res, err
}

// failed returns the times of the failed fetches so far.
func (c *countingType) failed() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.failures...)
}

// newCache returns a cache with typ registered as name with a blocking
// refresh; it is closed when the test ends.
func newCache(t *testing.T, name string, typ cache.Type) *cache.Cache {
	t.Helper()
	c := cache.New(nil)
	c.RegisterType(name, typ, &cache.RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// runs numbers the test runs that asked for keys, so that a test run
// again (go test -count) starts from no keys.
var (
	runs    sync.Map // *testing.T -> int64
	lastRun atomic.Int64
)

// key returns a key private to this run of the test.
func key(t *testing.T, name string) string {
	n, _ := runs.LoadOrStore(t, lastRun.Add(1))
	return fmt.Sprintf("/etcdcache-test/%s/%d/%s", t.Name(), n, name)
}

// put writes key and returns the revision of the write.
func put(t *testing.T, cli *clientv3.Client, key, value string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp, err := cli.Put(ctx, key, value)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp.Header.Revision
}

// del deletes key and returns the revision of the delete.
func del(t *testing.T, cli *clientv3.Client, key string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp, err := cli.Delete(ctx, key)
	if err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
	return resp.Header.Revision
}

// getResult is the outcome of a Get run in the background.
type getResult struct {
	value any
	meta  cache.ResultMeta
	err   error
	took  time.Duration
}

// getAsync runs a Get in the background.
func getAsync(c *cache.Cache, typ string, r cache.Request) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		start := time.Now()
		v, meta, err := c.Get(typ, r)
		ch <- getResult{value: v, meta: meta, err: err, took: time.Since(start)}
	}()
	return ch
}

// receive waits up to d for a Get result.
func receive(t *testing.T, ch <-chan getResult, d time.Duration) getResult {
	t.Helper()
	select {
	case res := <-ch:
		return res
	case <-time.After(d):
		t.Fatalf("no result after %s", d)
		return getResult{}
	}
}

// mustKV asserts that a Get succeeded with a KeyValue and returns it.
func mustKV(t *testing.T, v any, err error) KeyValue {
	t.Helper()
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	kv, ok := v.(KeyValue)
	if !ok {
		t.Fatalf("get returned %T, want KeyValue", v)
	}
	return kv
}

// eventually polls cond every 20ms until it holds, failing the test if it
// does not within d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nextEvent waits up to d for a Notify event.
func nextEvent(t *testing.T, ch <-chan cache.UpdateEvent, d time.Duration) cache.UpdateEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(d):
		t.Fatalf("no Notify event after %s", d)
		return cache.UpdateEvent{}
	}
}
