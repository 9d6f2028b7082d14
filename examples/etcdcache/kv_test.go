package etcdcache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentcache/cache"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestKVGetCachesTheValue(t *testing.T) {
	cli := newClient(t)
	reads := countReads(cli)
	c := newCache(t, "kv", &KV{Client: cli})
	k := key(t, "a")
	rev := put(t, cli, k, "v1")

	v, meta, err := c.Get("kv", &KVRequest{Key: k})
	kv := mustKV(t, v, err)
	if !kv.Exists || kv.Value != "v1" || kv.Key != k {
		t.Fatalf("got %+v, want %s=v1", kv, k)
	}
	if meta.Hit || meta.Index != uint64(rev) {
		t.Fatalf("first get: meta %+v, want a miss at index %d", meta, rev)
	}

	for i := 0; i < 10; i++ {
		v, meta, err = c.Get("kv", &KVRequest{Key: k})
		if kv := mustKV(t, v, err); kv.Value != "v1" || !meta.Hit {
			t.Fatalf("get %d: %+v %+v, want a hit on v1", i, kv, meta)
		}
	}
	if n := reads.gets.Load(); n != 1 {
		t.Fatalf("%d etcd reads for 11 gets, want 1", n)
	}
}

func TestKVConcurrentGetsShareOneRead(t *testing.T) {
	cli := newClient(t)
	reads := countReads(cli)
	hold := make(chan struct{})
	reads.hold.Store(&hold)
	c := newCache(t, "kv", &KV{Client: cli})
	k := key(t, "a")
	put(t, cli, k, "v1")

	const n = 50
	var started, done sync.WaitGroup
	started.Add(n)
	done.Add(n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			started.Done()
			v, _, err := c.Get("kv", &KVRequest{Key: k})
			if err == nil && v.(KeyValue).Value != "v1" {
				err = fmt.Errorf("got %+v, want v1", v)
			}
			errs <- err
		}()
	}
	started.Wait()
	eventually(t, wait, "the first read", func() bool { return reads.gets.Load() == 1 })
	time.Sleep(50 * time.Millisecond) // let the other Gets join the fetch
	close(hold)
	done.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := reads.gets.Load(); got != 1 {
		t.Fatalf("%d etcd reads for %d concurrent gets, want 1", got, n)
	}
}

func TestKVBlockingGetReturnsAfterPut(t *testing.T) {
	cli := newClient(t)
	c := newCache(t, "kv", &KV{Client: cli})
	k := key(t, "a")
	put(t, cli, k, "v1")

	v, meta, err := c.Get("kv", &KVRequest{Key: k})
	mustKV(t, v, err)

	ch := getAsync(c, "kv", &KVRequest{Key: k, MinIndex: meta.Index, Timeout: time.Minute})
	select {
	case res := <-ch:
		t.Fatalf("blocking get returned before any change: %+v", res)
	case <-time.After(200 * time.Millisecond):
	}
	rev := put(t, cli, k, "v2")
	written := time.Now()
	res := receive(t, ch, wait)
	kv := mustKV(t, res.value, res.err)
	if kv.Value != "v2" || res.meta.Index != uint64(rev) {
		t.Fatalf("got %+v at index %d, want v2 at %d", kv, res.meta.Index, rev)
	}
	if since := time.Since(written); since > 5*time.Second {
		t.Fatalf("blocking get returned %s after the put", since)
	}
}

func TestKVBlockingGetTimesOutWithTheLastValue(t *testing.T) {
	cli := newClient(t)
	c := newCache(t, "kv", &KV{Client: cli})
	k := key(t, "a")
	rev := put(t, cli, k, "v1")
	v, meta, err := c.Get("kv", &KVRequest{Key: k})
	mustKV(t, v, err)

	const timeout = 300 * time.Millisecond
	ch := getAsync(c, "kv", &KVRequest{Key: k, MinIndex: meta.Index, Timeout: timeout})
	put(t, cli, key(t, "other"), "x") // moves the store's revision, not k's
	res := receive(t, ch, wait)
	kv := mustKV(t, res.value, res.err)
	if kv.Value != "v1" || res.meta.Index != uint64(rev) {
		t.Fatalf("got %+v at index %d, want v1 at %d", kv, res.meta.Index, rev)
	}
	if res.took < timeout {
		t.Fatalf("returned after %s, before the %s timeout", res.took, timeout)
	}
}

func TestKVFetchTimeoutKeepsValueAndIndex(t *testing.T) {
	cli := newClient(t)
	typ := &KV{Client: cli}
	k := key(t, "a")
	put(t, cli, k, "v1")
	req := &KVRequest{Key: k}
	first, err := typ.Fetch(cache.FetchOptions{}, req)
	if err != nil {
		t.Fatal(err)
	}
	// Writes elsewhere must not end the wait.
	for i := 0; i < 5; i++ {
		put(t, cli, key(t, "other"), "x")
	}
	start := time.Now()
	res, err := typ.Fetch(cache.FetchOptions{MinIndex: first.Index, Timeout: 300 * time.Millisecond, LastResult: &first}, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Index != first.Index || res.Value != first.Value {
		t.Fatalf("got %+v, want the last value %+v", res, first)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("fetch returned after %s, before its timeout", took)
	}
}

func TestKVRefreshDoesNotSpinOnOtherWrites(t *testing.T) {
	cli := newClient(t)
	typ := &countingType{Type: &KV{Client: cli}}
	c := newCache(t, "kv", typ)
	k := key(t, "a")
	put(t, cli, k, "v1")
	v, _, err := c.Get("kv", &KVRequest{Key: k})
	mustKV(t, v, err)
	eventually(t, wait, "the refresh fetch", func() bool { return typ.fetches.Load() == 2 })

	for i := 0; i < 20; i++ {
		put(t, cli, key(t, "other"), "x")
	}
	time.Sleep(300 * time.Millisecond)
	if n := typ.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after writes to other keys, want 2", n)
	}
}

func TestKVMissingKeyIsAValue(t *testing.T) {
	cli := newClient(t)
	c := newCache(t, "kv", &KV{Client: cli})
	k := key(t, "missing")

	v, meta, err := c.Get("kv", &KVRequest{Key: k})
	kv := mustKV(t, v, err)
	if kv.Exists || kv.Key != k || meta.Index == 0 {
		t.Fatalf("got %+v at index %d, want a missing key at a revision", kv, meta.Index)
	}

	ch := getAsync(c, "kv", &KVRequest{Key: k, MinIndex: meta.Index, Timeout: time.Minute})
	rev := put(t, cli, k, "here")
	res := receive(t, ch, wait)
	kv = mustKV(t, res.value, res.err)
	if !kv.Exists || kv.Value != "here" || res.meta.Index != uint64(rev) {
		t.Fatalf("got %+v at index %d, want the new key at %d", kv, res.meta.Index, rev)
	}
}

func TestKVDeleteIsAChange(t *testing.T) {
	cli := newClient(t)
	c := newCache(t, "kv", &KV{Client: cli})
	k := key(t, "a")
	put(t, cli, k, "v1")
	v, meta, err := c.Get("kv", &KVRequest{Key: k})
	mustKV(t, v, err)

	ch := getAsync(c, "kv", &KVRequest{Key: k, MinIndex: meta.Index, Timeout: time.Minute})
	rev := del(t, cli, k)
	res := receive(t, ch, wait)
	kv := mustKV(t, res.value, res.err)
	if kv.Exists || kv.ModRevision != rev || res.meta.Index != uint64(rev) {
		t.Fatalf("got %+v at index %d, want a deletion at %d", kv, res.meta.Index, rev)
	}

	// Later plain Gets see the deletion too.
	v, _, err = c.Get("kv", &KVRequest{Key: k})
	if kv := mustKV(t, v, err); kv.Exists {
		t.Fatalf("got %+v after the delete", kv)
	}
}

func TestKVNotifyDeliversEachChangeOnce(t *testing.T) {
	cli := newClient(t)
	c := newCache(t, "kv", &KV{Client: cli})
	k := key(t, "a")
	first := put(t, cli, k, "v0")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan cache.UpdateEvent, 10)
	if err := c.Notify(ctx, "kv", &KVRequest{Key: k}, "watch-a", ch); err != nil {
		t.Fatal(err)
	}
	check := func(ev cache.UpdateEvent, value string, exists bool, index int64) {
		t.Helper()
		if ev.Err != nil || ev.CorrelationID != "watch-a" {
			t.Fatalf("event %+v", ev)
		}
		kv := ev.Result.(KeyValue)
		if kv.Value != value || kv.Exists != exists || ev.Meta.Index != uint64(index) {
			t.Fatalf("event %+v at index %d, want %q (exists %v) at %d", kv, ev.Meta.Index, value, exists, index)
		}
	}
	check(nextEvent(t, ch, wait), "v0", true, first)

	for _, value := range []string{"v1", "v2", "v3"} {
		rev := put(t, cli, k, value)
		check(nextEvent(t, ch, wait), value, true, rev)
	}
	rev := del(t, cli, k)
	check(nextEvent(t, ch, wait), "", false, rev)

	select {
	case ev := <-ch:
		t.Fatalf("extra event %+v", ev)
	case <-time.After(500 * time.Millisecond):
	}
}

func TestKVPartitionsByDatacenterAndToken(t *testing.T) {
	cli := newClient(t)
	reads := countReads(cli)
	var mu sync.Mutex
	asked := map[string]int{}
	typ := &KV{ClientFor: func(dc, token string) (*clientv3.Client, error) {
		mu.Lock()
		defer mu.Unlock()
		asked[dc+"/"+token]++
		if dc == "nowhere" {
			return nil, errors.New("unknown datacenter")
		}
		return cli, nil
	}}
	c := newCache(t, "kv", typ)
	k := key(t, "a")
	put(t, cli, k, "v1")

	for _, r := range []*KVRequest{
		{Key: k, Datacenter: "dc1", Token: "alice"},
		{Key: k, Datacenter: "dc1", Token: "bob"},
		{Key: k, Datacenter: "dc2", Token: "alice"},
		{Key: k, Datacenter: "dc1", Token: "alice"},
	} {
		v, _, err := c.Get("kv", r)
		mustKV(t, v, err)
	}
	if n := reads.gets.Load(); n != 3 {
		t.Fatalf("%d reads, want one per datacenter and token (3)", n)
	}
	if _, _, err := c.Get("kv", &KVRequest{Key: k, Datacenter: "nowhere"}); err == nil {
		t.Fatal("get from an unknown datacenter succeeded")
	}
}

func TestKVFetchEndsWhenTheClientCloses(t *testing.T) {
	cli := newClient(t)
	typ := &KV{Client: cli}
	k := key(t, "a")
	put(t, cli, k, "v1")
	req := &KVRequest{Key: k}
	first, err := typ.Fetch(cache.FetchOptions{}, req)
	if err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := typ.Fetch(cache.FetchOptions{MinIndex: first.Index, Timeout: time.Minute, LastResult: &first}, req)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the fetch start watching
	_ = cli.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("fetch succeeded after the client closed")
		}
	case <-time.After(wait):
		t.Fatal("fetch still blocked after the client closed")
	}
}
