package etcdcache

import (
	"context"
	"testing"
	"time"

	"github.com/agentcache/cache"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// compact writes twice elsewhere and compacts the store up to the second
// write, so that no revision up to the one before the first write can be
// watched any more.
func compact(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	put(t, cli, "/etcdcache-test/compaction-marker", "x")
	rev := put(t, cli, "/etcdcache-test/compaction-marker", "y")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
}

// stale returns r without its State, so that a fetch has to watch from
// its index.
func stale(r cache.FetchResult) *cache.FetchResult {
	r.State = nil
	return &r
}

func TestKVCompactedWatchWithoutChangeKeepsWaiting(t *testing.T) {
	cli := newClient(t)
	reads := countReads(cli)
	typ := &KV{Client: cli}
	k := key(t, "a")
	put(t, cli, k, "v1")
	req := &KVRequest{Key: k}
	first, err := typ.Fetch(cache.FetchOptions{}, req)
	if err != nil {
		t.Fatal(err)
	}
	compact(t, cli)

	res, err := typ.Fetch(cache.FetchOptions{MinIndex: first.Index, Timeout: 300 * time.Millisecond, LastResult: stale(first)}, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Index != first.Index || res.Value != first.Value {
		t.Fatalf("got %+v, want the unchanged %+v", res, first)
	}
	if n := reads.gets.Load(); n != 2 {
		t.Fatalf("%d reads, want 2 (the first fetch and one after the compaction)", n)
	}
}

func TestKVCompactedWatchReturnsTheChange(t *testing.T) {
	cli := newClient(t)
	typ := &KV{Client: cli}
	k := key(t, "a")
	put(t, cli, k, "v1")
	req := &KVRequest{Key: k}
	first, err := typ.Fetch(cache.FetchOptions{}, req)
	if err != nil {
		t.Fatal(err)
	}
	rev := put(t, cli, k, "v2")
	compact(t, cli)

	res, err := typ.Fetch(cache.FetchOptions{MinIndex: first.Index, Timeout: time.Minute, LastResult: stale(first)}, req)
	if err != nil {
		t.Fatal(err)
	}
	if kv := res.Value.(KeyValue); kv.Value != "v2" || res.Index != uint64(rev) {
		t.Fatalf("got %+v at index %d, want v2 at %d", kv, res.Index, rev)
	}
}

func TestKVCompactedWatchSeesADeletion(t *testing.T) {
	cli := newClient(t)
	typ := &KV{Client: cli}
	k := key(t, "a")
	put(t, cli, k, "v1")
	req := &KVRequest{Key: k}
	first, err := typ.Fetch(cache.FetchOptions{}, req)
	if err != nil {
		t.Fatal(err)
	}
	del(t, cli, k)
	compact(t, cli)

	res, err := typ.Fetch(cache.FetchOptions{MinIndex: first.Index, Timeout: time.Minute, LastResult: stale(first)}, req)
	if err != nil {
		t.Fatal(err)
	}
	if kv := res.Value.(KeyValue); kv.Exists || res.Index <= first.Index {
		t.Fatalf("got %+v at index %d, want a deletion after %d", kv, res.Index, first.Index)
	}
}

func TestPrefixCompactedWatch(t *testing.T) {
	cli := newClient(t)
	typ := &Prefix{Client: cli}
	p := key(t, "dir/")
	put(t, cli, p+"a", "1")
	req := &PrefixRequest{Prefix: p}
	first, err := typ.Fetch(cache.FetchOptions{}, req)
	if err != nil {
		t.Fatal(err)
	}
	compact(t, cli)

	// Unchanged: the fetch waits out its timeout and keeps the index.
	res, err := typ.Fetch(cache.FetchOptions{MinIndex: first.Index, Timeout: 300 * time.Millisecond, LastResult: stale(first)}, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Index != first.Index {
		t.Fatalf("index %d, want the unchanged %d", res.Index, first.Index)
	}

	// Changed before the compaction: the fetch returns the new listing.
	put(t, cli, p+"b", "2")
	compact(t, cli)
	res, err = typ.Fetch(cache.FetchOptions{MinIndex: first.Index, Timeout: time.Minute, LastResult: stale(first)}, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := values(t, res.Value, nil, p); !equal(got, []string{"a=1", "b=2"}) || res.Index <= first.Index {
		t.Fatalf("got %v at index %d, want a and b after %d", got, res.Index, first.Index)
	}
}

func TestKVStateSkipsCompactedRevisions(t *testing.T) {
	cli := newClient(t)
	reads := countReads(cli)
	typ := &KV{Client: cli}
	k := key(t, "a")
	put(t, cli, k, "v1")
	compact(t, cli) // the key's ModRevision is now behind the compaction
	req := &KVRequest{Key: k}
	first, err := typ.Fetch(cache.FetchOptions{}, req)
	if err != nil {
		t.Fatal(err)
	}

	res, err := typ.Fetch(cache.FetchOptions{MinIndex: first.Index, Timeout: 300 * time.Millisecond, LastResult: &first}, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Index != first.Index {
		t.Fatalf("index %d, want the unchanged %d", res.Index, first.Index)
	}
	if n := reads.gets.Load(); n != 1 {
		t.Fatalf("%d reads, want 1: the wait should start after the read's revision", n)
	}
}
