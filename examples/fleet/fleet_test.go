package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/agentcache/cache/examples/etcdcache"
	"github.com/agentcache/cache/redistier/redistest"
)

// TestFleetOneQueryPerChange runs two fleets of 10 instances side by side
// over the same 100 keys, with Notify on every key and blocking Gets on
// every instance, while a writer changes the keys: with the tier, each
// change costs etcd about one blocking query fleet-wide, without it about
// ten. Every instance sees every change, no Get fails, and a cold 11th
// instance gets every key from Redis without a single etcd call.
func TestFleetOneQueryPerChange(t *testing.T) {
	const instances, nkeys, writes = 10, 100, 200
	addr, cli, ks, name := setup(t, nkeys)
	shared := newFleet(t, instances, name, addr)
	plain := newFleet(t, instances, "", "")

	ctx, cancel := context.WithCancel(context.Background())
	var watchers []*watcher
	var stops []func()
	for _, in := range append(append(fleet{}, shared...), plain...) {
		w, stop := watch(ctx, t, in, ks, 2)
		watchers, stops = append(watchers, w), append(stops, stop)
	}
	defer func() {
		cancel()
		for _, stop := range stops {
			stop()
		}
	}()
	for i, w := range watchers {
		redistest.Eventually(t, wait, fmt.Sprintf("instance %d to have every key", i), func() bool { return w.hasAll(ks) })
	}
	// Every key's refresh blocks: once per key with the tier, once per
	// key and instance without.
	redistest.Eventually(t, wait, "the refreshes to block", func() bool {
		return shared.blockingCalls() >= nkeys && plain.blockingCalls() >= instances*nkeys
	})
	sharedBefore, plainBefore := shared.blockingCalls(), plain.blockingCalls()

	written := writer(ctx, t, cli, ks, writes, 10*time.Millisecond)
	changes := count(written)
	for i, w := range watchers {
		redistest.Eventually(t, wait, fmt.Sprintf("instance %d to see every change", i), func() bool { return w.sawAll(written, false) })
	}
	// Each change ends one blocking query and starts the next: wait for
	// the last ones to start before counting.
	redistest.Eventually(t, wait, "the next queries", func() bool {
		return shared.blockingCalls()-sharedBefore >= int64(changes) && plain.blockingCalls()-plainBefore >= int64(instances*changes)
	})
	time.Sleep(200 * time.Millisecond) // let stragglers show up in the counts
	sharedPer := float64(shared.blockingCalls()-sharedBefore) / float64(changes)
	plainPer := float64(plain.blockingCalls()-plainBefore) / float64(changes)
	t.Logf("%d changes: blocking etcd queries per change: %.3f with the tier, %.3f without; tier stats %+v",
		changes, sharedPer, plainPer, shared.stats())
	if sharedPer > 1.1 {
		t.Errorf("%.3f blocking queries per change with the tier, want <= 1.1", sharedPer)
	}
	if plainPer < 0.9*instances {
		t.Errorf("%.3f blocking queries per change without the tier, want about %d", plainPer, instances)
	}
	for i, w := range watchers {
		if n := w.errors.Load(); n != 0 || w.gets.Load() == 0 {
			t.Errorf("instance %d: %d errors in %d blocking Gets", i, n, w.gets.Load())
		}
	}

	// A cold instance: its first Gets are answered from Redis.
	cold := newInstance(t, name, addr)
	for _, k := range ks {
		v, _, err := cold.cache.Get("kv", &etcdcache.KVRequest{Key: k})
		kv, _ := v.(etcdcache.KeyValue)
		if want := written[k][len(written[k])-1].value; err != nil || kv.Value != want {
			t.Fatalf("cold Get %s: %+v %v, want %s", k, v, err, want)
		}
	}
	if n := cold.backend.calls.Load(); n != 0 {
		t.Fatalf("cold instance: %d etcd fetches for %d keys, want 0", n, nkeys)
	}
}
