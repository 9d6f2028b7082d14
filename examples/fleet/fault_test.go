package fleet

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentcache/cache/examples/etcdcache"
	"github.com/agentcache/cache/redistier/redistest"
)

// TestFleetSurvivesARedisRestart kills redis-server under a fleet at
// work and starts it again: no Get fails, the instances fall back to etcd
// meanwhile (and count it), and once Redis is back they share their
// queries again.
func TestFleetSurvivesARedisRestart(t *testing.T) {
	const instances, nkeys = 5, 20
	srv := redistest.New(t) // its own: this test kills it
	cli := newEtcdClient(t)
	ks := newKeys(t, cli, nkeys)
	f := newFleet(t, instances, fmt.Sprintf("kv-%s-%d", t.Name(), runs.Add(1)), srv.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	var watchers []*watcher
	var stops []func()
	for _, in := range f {
		w, stop := watch(ctx, t, in, ks, 2)
		watchers, stops = append(watchers, w), append(stops, stop)
	}
	defer func() {
		if t.Failed() {
			for i, w := range watchers {
				t.Logf("instance %d: %d errors, stats %+v", i, w.errors.Load(), f[i].tier.Stats())
			}
		}
		cancel()
		for _, stop := range stops {
			stop()
		}
	}()
	for i, w := range watchers {
		redistest.Eventually(t, wait, fmt.Sprintf("instance %d to have every key", i), func() bool { return w.hasAll(ks) })
	}
	// perChange runs writes and returns the blocking etcd queries per
	// change. Every instance must see every change, or, with lax, at
	// least the last value of every key: when Redis dies, two changes of
	// a key may pass before an instance notices, and its next query
	// returns only the later.
	perChange := func(writes int, lax bool) float64 {
		before := f.blockingCalls()
		written := writer(ctx, t, cli, ks, writes, 20*time.Millisecond)
		for i, w := range watchers {
			if !redistest.Poll(wait, func() bool { return w.sawAll(written, lax) }) {
				t.Fatalf("instance %d misses %s", i, w.missing(written))
			}
		}
		return float64(f.blockingCalls()-before) / float64(count(written))
	}
	t.Logf("before the outage: %.2f blocking queries per change", perChange(40, false))

	srv.Kill()
	during := perChange(40, true)
	fallbacks := f.stats().Fallbacks
	t.Logf("during the outage: %.2f blocking queries per change, %d fallbacks", during, fallbacks)
	if fallbacks == 0 {
		t.Error("no fallback counted while Redis was down")
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// Queries started during the outage go on until their key changes;
	// after a round of changes the fleet shares again.
	deadline := time.Now().Add(wait)
	for {
		after := perChange(40, false)
		t.Logf("after the restart: %.2f blocking queries per change", after)
		if after <= 1.5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sharing did not resume: %.2f blocking queries per change", after)
		}
	}
	for i, w := range watchers {
		if n := w.errors.Load(); n != 0 {
			t.Errorf("instance %d: %d Get errors", i, n)
		}
	}
}

// TestLeaseHolderHangsAndIsClosed: the instance whose blocking query
// holds a key's lease hangs in etcd and is closed; another instance takes
// over within LeaseTTL and a second, and the fleet sees the next change.
func TestLeaseHolderHangsAndIsClosed(t *testing.T) {
	addr, cli, ks, name := setup(t, 1)
	holder := newInstance(t, name, addr)
	hang := make(chan struct{})
	defer close(hang)
	holder.backend.hang.Store(&hang)
	req := &etcdcache.KVRequest{Key: ks[0]}
	_, meta, err := holder.cache.Get("kv", req)
	if err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, wait, "the holder's blocking query", func() bool { return holder.backend.blocking.Load() == 1 })

	others := newFleet(t, 2, name, addr)
	for _, in := range others {
		if _, _, err := in.cache.Get("kv", req); err != nil {
			t.Fatal(err)
		}
		redistest.Eventually(t, wait, "the others to wait", func() bool { return in.tier.Stats().Waits >= 1 })
	}
	if n := others.blockingCalls(); n != 0 {
		t.Fatalf("%d blocking queries while the holder had the lease", n)
	}

	holder.close()
	closed := time.Now()
	redistest.Eventually(t, leaseTTL+time.Second, "another instance to take over", func() bool { return others.blockingCalls() >= 1 })
	t.Logf("taken over %s after the holder closed", time.Since(closed).Round(time.Millisecond))
	put(t, cli, ks[0], "v1")
	for i, in := range others {
		v, _, err := in.cache.Get("kv", &etcdcache.KVRequest{Key: ks[0], MinIndex: meta.Index, Timeout: wait})
		if kv, _ := v.(etcdcache.KeyValue); err != nil || kv.Value != "v1" {
			t.Fatalf("instance %d after the takeover: %+v %v", i, v, err)
		}
	}
}

// TestCorruptRecordIsReplaced: a record that cannot be decoded is counted,
// its key fetched from etcd and the record overwritten, so that the next
// instance is served from Redis again.
func TestCorruptRecordIsReplaced(t *testing.T) {
	addr, _, ks, name := setup(t, 3)
	warm := newInstance(t, name, addr)
	for _, k := range ks {
		if _, _, err := warm.cache.Get("kv", &etcdcache.KVRequest{Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	rdb := newRedisClient(t, addr)
	recordKey := warm.tier.RecordKey("", "", ks[1])
	if err := rdb.Set(context.Background(), recordKey, "garbage", 0).Err(); err != nil {
		t.Fatal(err)
	}

	cold := newInstance(t, name, addr)
	v, _, err := cold.cache.Get("kv", &etcdcache.KVRequest{Key: ks[1]})
	if kv, _ := v.(etcdcache.KeyValue); err != nil || kv.Value != "v0" {
		t.Fatalf("Get of the corrupt key: %+v %v", v, err)
	}
	if s := cold.tier.Stats(); s.DecodeErrors == 0 || cold.backend.calls.Load() != 1 {
		t.Fatalf("corrupt record: stats %+v, %d etcd calls, want a decode error and one call", s, cold.backend.calls.Load())
	}
	if raw, err := rdb.Get(context.Background(), recordKey).Result(); err != nil || strings.HasPrefix(raw, "garbage") {
		t.Fatalf("record not overwritten: %q %v", raw, err)
	}
	third := newInstance(t, name, addr)
	if _, _, err := third.cache.Get("kv", &etcdcache.KVRequest{Key: ks[1]}); err != nil || third.backend.calls.Load() != 0 {
		t.Fatalf("after the overwrite: %v, %d etcd calls, want 0", err, third.backend.calls.Load())
	}
}
