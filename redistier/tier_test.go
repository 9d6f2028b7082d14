package redistier

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/redistier/redistest"
)

// TestFleetSharesBlockingQueries runs five caches, each with its own tier
// and Redis client, over one key with a blocking refresh: every change
// costs the backend about one blocking query, not five, and every
// instance's Notify sees every change.
func TestFleetSharesBlockingQueries(t *testing.T) {
	const instances, changes = 5, 10
	b := newFakeBackend(true, "v0")
	name := uniqueName(t)
	req := cache.RequestInfo{Key: "k", Token: "tok"}
	var events []chan cache.UpdateEvent
	var tiers []*Tier
	defer func() {
		for i, tr := range tiers {
			if t.Failed() {
				t.Logf("instance %d: %+v", i, tr.Stats())
			}
		}
	}()
	for range instances {
		tr := newTier(t, b, newClient(t), Options{Name: name})
		tiers = append(tiers, tr)
		c := newCache(t, tr)
		ch := make(chan cache.UpdateEvent, changes+2)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		if err := c.Notify(ctx, "t", req, "k", ch); err != nil {
			t.Fatal(err)
		}
		events = append(events, ch)
	}
	for i, ch := range events {
		expectEvent(t, i, ch, "v0@tok")
	}
	redistest.Eventually(t, wait, "a blocking query", func() bool { return b.blockingCalls.Load() >= 1 })
	before := b.blockingCalls.Load()
	for n := 1; n <= changes; n++ {
		b.set(fmt.Sprintf("v%d", n))
		for i, ch := range events {
			expectEvent(t, i, ch, fmt.Sprintf("v%d@tok", n))
		}
	}
	// Each change ends one blocking query and starts the next; let the
	// last one start before counting.
	redistest.Eventually(t, wait, "the next blocking query", func() bool { return b.blockingCalls.Load() >= before+changes })
	if got := b.blockingCalls.Load() - before; got > changes+2 {
		t.Fatalf("%d blocking backend queries for %d changes on %d instances, want about %d", got, changes, instances, changes)
	}
}

// expectEvent waits for a Notify event with value want.
func expectEvent(t testing.TB, instance int, ch <-chan cache.UpdateEvent, want string) {
	t.Helper()
	select {
	case ev := <-ch:
		if ev.Err != nil || ev.Result != want {
			t.Fatalf("instance %d: event %v %v, want %q", instance, ev.Result, ev.Err, want)
		}
	case <-time.After(wait):
		t.Fatalf("instance %d: no event %q after %s", instance, want, wait)
	}
}

// TestColdInstanceIsServedFromRedis: an instance that starts after the
// fleet has the value gets it from Redis, with no backend call.
func TestColdInstanceIsServedFromRedis(t *testing.T) {
	b := newFakeBackend(true, "v1")
	name := uniqueName(t)
	warm := newCache(t, newTier(t, b, newClient(t), Options{Name: name}))
	req := cache.RequestInfo{Key: "k"}
	if v, _, err := warm.Get("t", req); err != nil || v != "v1@" {
		t.Fatalf("warm Get: %v %v", v, err)
	}
	redistest.Eventually(t, wait, "the warm refresh to block", func() bool { return b.blockingCalls.Load() == 1 })
	calls := b.calls.Load()

	tier := newTier(t, b, newClient(t), Options{Name: name})
	cold := newCache(t, tier)
	v, meta, err := cold.Get("t", req)
	if err != nil || v != "v1@" || meta.Index != 2-1 {
		t.Fatalf("cold Get: %v %+v %v", v, meta, err)
	}
	// The cold refresh waits on the warm one's blocking query.
	redistest.Eventually(t, wait, "the cold refresh to wait", func() bool { return tier.Stats().Waits >= 1 })
	if got := b.calls.Load() - calls; got != 0 {
		t.Fatalf("cold instance made %d backend calls, want 0", got)
	}
	if s := tier.Stats(); s.SharedHits != 1 || s.BackendCalls != 0 {
		t.Fatalf("cold stats %+v, want one shared hit and no backend call", s)
	}
}

// TestNonBlockingSharesOneFetch: concurrent non-blocking fetches of
// several instances make one backend call; within MaxStale the record
// answers without any.
func TestNonBlockingSharesOneFetch(t *testing.T) {
	const instances = 8
	b := newFakeBackend(false, "v1")
	name := uniqueName(t)
	release := b.hangFetches()
	var tiers []*Tier
	var results []<-chan fetchResult
	for range instances {
		tier := newTier(t, b, newClient(t), Options{Name: name, MaxStale: time.Minute})
		tiers = append(tiers, tier)
		results = append(results, fetchAsync(context.Background(), tier, cache.FetchOptions{}, cache.RequestInfo{Key: "k"}))
	}
	redistest.Eventually(t, wait, "the others to wait", func() bool {
		waits := uint64(0)
		for _, tier := range tiers {
			waits += tier.Stats().Waits
		}
		return b.calls.Load() == 1 && waits >= instances-1
	})
	release()
	for i, ch := range results {
		if r := receive(t, ch, wait); r.err != nil || r.res.Value != "v1@" {
			t.Fatalf("instance %d: %+v", i, r)
		}
	}
	if n := b.calls.Load(); n != 1 {
		t.Fatalf("%d backend calls for %d concurrent fetches, want 1", n, instances)
	}
	// Within MaxStale: served from Redis.
	res, err := tiers[0].Fetch(cache.FetchOptions{}, cache.RequestInfo{Key: "k"})
	if err != nil || res.Value != "v1@" || b.calls.Load() != 1 {
		t.Fatalf("fetch within MaxStale: %+v %v, %d backend calls", res, err, b.calls.Load())
	}
}

// TestMaxStale: a record older than MaxStale is fetched again.
func TestMaxStale(t *testing.T) {
	b := newFakeBackend(false, "v1")
	tier := newTier(t, b, newClient(t), Options{Name: uniqueName(t), MaxStale: 50 * time.Millisecond})
	req := cache.RequestInfo{Key: "k"}
	if _, err := tier.Fetch(cache.FetchOptions{}, req); err != nil {
		t.Fatal(err)
	}
	b.set("v2")
	res, err := tier.Fetch(cache.FetchOptions{}, req)
	if err != nil || res.Value != "v1@" {
		t.Fatalf("fresh record: %+v %v, want v1 from Redis", res, err)
	}
	time.Sleep(60 * time.Millisecond) // the record's age is what is tested
	res, err = tier.Fetch(cache.FetchOptions{}, req)
	if err != nil || res.Value != "v2@" || b.calls.Load() != 2 {
		t.Fatalf("stale record: %+v %v after %d calls, want v2 from the backend", res, err, b.calls.Load())
	}
}

// TestPartitionsNeverMix: tokens, datacenters and Names each get their
// own record, and a record copied under another partition's key is not
// served.
func TestPartitionsNeverMix(t *testing.T) {
	b := newFakeBackend(false, "v")
	rdb := newClient(t)
	name := uniqueName(t)
	tier := newTier(t, b, rdb, Options{Name: name, MaxStale: time.Hour})
	other := newTier(t, b, rdb, Options{Name: name + "-other", MaxStale: time.Hour})
	reqs := []cache.RequestInfo{
		{Key: "k", Token: "a"}, {Key: "k", Token: "b"},
		{Key: "k", Token: "a", Datacenter: "dc2"}, {Key: "k2", Token: "a"},
	}
	for _, r := range reqs {
		res, err := tier.Fetch(cache.FetchOptions{}, r)
		if err != nil || res.Value != "v@"+r.Token {
			t.Fatalf("%+v: %+v %v", r, res, err)
		}
	}
	if n := b.calls.Load(); n != int64(len(reqs)) {
		t.Fatalf("%d backend calls for %d partitions", n, len(reqs))
	}
	if _, err := other.Fetch(cache.FetchOptions{}, reqs[0]); err != nil || b.calls.Load() != int64(len(reqs))+1 {
		t.Fatalf("another Name was served a record: %v, %d calls", err, b.calls.Load())
	}

	// Put token a's record under token b's key: b must not be served it.
	ctx := context.Background()
	raw, err := rdb.Get(ctx, tier.RecordKey("", "a", "k")).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, tier.RecordKey("", "b", "k"), raw, 0).Err(); err != nil {
		t.Fatal(err)
	}
	decodeErrs, calls := tier.Stats().DecodeErrors, b.calls.Load()
	res, err := tier.Fetch(cache.FetchOptions{}, reqs[1])
	if err != nil || res.Value != "v@b" || b.calls.Load() != calls+1 || tier.Stats().DecodeErrors == decodeErrs {
		t.Fatalf("foreign record: %+v %v, calls %d->%d, stats %+v", res, err, calls, b.calls.Load(), tier.Stats())
	}
}

// TestTokensNeverReachRedis: no Redis key holds the token, and a backend
// error that names it reaches the waiting instances with the token
// redacted.
func TestTokensNeverReachRedis(t *testing.T) {
	const token = "s3cr3t-t0ken"
	b := newFakeBackend(true, "v")
	rdb := newClient(t)
	name := uniqueName(t)
	holder := newTier(t, b, rdb, Options{Name: name})
	waiter := newTier(t, b, newClient(t), Options{Name: name})
	req := cache.RequestInfo{Key: "k", Token: token}
	if _, err := holder.Fetch(cache.FetchOptions{}, req); err != nil {
		t.Fatal(err)
	}
	release := b.hangFetches()
	defer release()
	b.failWith(fmt.Errorf("permission denied for token %s", token))
	opts := cache.FetchOptions{MinIndex: 1, Timeout: wait}
	held := fetchAsync(context.Background(), holder, opts, req)
	redistest.Eventually(t, wait, "the holder's query", func() bool { return b.blockingCalls.Load() == 1 })
	waited := fetchAsync(context.Background(), waiter, opts, req)
	redistest.Eventually(t, wait, "the waiter to wait", func() bool { return waiter.Stats().Waits == 1 })
	release()
	if r := receive(t, held, wait); r.err == nil {
		t.Fatalf("holder's fetch succeeded: %+v", r)
	}
	r := receive(t, waited, wait)
	var remote *remoteError
	if !errors.As(r.err, &remote) || strings.Contains(r.err.Error(), token) || !strings.Contains(r.err.Error(), "<redacted>") {
		t.Fatalf("waiter got %v, want the holder's error with the token redacted", r.err)
	}
	if n := b.blockingCalls.Load(); n != 1 {
		t.Fatalf("%d blocking backend queries, want 1: the waiter must not retry", n)
	}

	keys, err := rdb.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, token) {
			t.Fatalf("key %q holds the token", k)
		}
	}
	if k := holder.RecordKey("", token, "k"); strings.Contains(k, token) || !strings.Contains(k, name) {
		t.Fatalf("record key %q", k)
	}
}

// TestPartitionsRemembered: a tier remembers a bounded number of
// partitions, each the one its request's datacenter, token and key make.
func TestPartitionsRemembered(t *testing.T) {
	tier := newTier(t, newFakeBackend(false, "v"), newClient(t), Options{Name: uniqueName(t)})
	a := cache.RequestInfo{Datacenter: "dc1", Token: "a", Key: "k"}
	p := tier.partition(a)
	if tier.partition(a) != p || *p != *tier.newPartition(a) {
		t.Fatal("a remembered partition differs from the request's")
	}
	for _, other := range []cache.RequestInfo{
		{Datacenter: "dc1", Token: "b", Key: "k"},
		{Datacenter: "dc2", Token: "a", Key: "k"},
		{Datacenter: "dc1", Token: "a", Key: "k2"},
	} {
		if q := tier.partition(other); q.id == p.id || q.fp == p.fp || q.record == p.record {
			t.Fatalf("%+v shares the partition of %+v", other, a)
		}
	}
	for i := range maxPartitions + 10 {
		tier.partition(cache.RequestInfo{Token: "t", Key: strconv.Itoa(i)})
	}
	if n := len(tier.parts.m); n > maxPartitions {
		t.Fatalf("%d partitions remembered, want at most %d", n, maxPartitions)
	}
}

// TestStaleRecordVouched: with MaxStale, a record older than it is still
// served while a blocking query holds the lease, and without a record
// such a lease sends the fetch to the backend directly.
func TestStaleRecordVouched(t *testing.T) {
	b := newFakeBackend(false, "v")
	rdb := newClient(t)
	tier := newTier(t, b, rdb, Options{Name: uniqueName(t), MaxStale: time.Minute})
	ctx := context.Background()
	req := cache.RequestInfo{Key: "k"}
	p := tier.partition(req)
	if err := rdb.Set(ctx, p.lease, "b:holder", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := tier.Fetch(cache.FetchOptions{}, req)
	if err != nil || res.Value != "v@" || tier.Stats().Direct != 1 {
		t.Fatalf("without a record: %+v %v %+v", res, err, tier.Stats())
	}
	old, _ := tier.o.Codec.Encode("old")
	if err := rdb.Set(ctx, p.record, encodeRecord(p, 7, time.Now().Add(-time.Hour), old), 0).Err(); err != nil {
		t.Fatal(err)
	}
	res, err = tier.Fetch(cache.FetchOptions{}, req)
	if err != nil || res.Value != "old" || res.Index != 7 || b.calls.Load() != 1 {
		t.Fatalf("stale record under a blocking lease: %+v %v, %d backend calls", res, err, b.calls.Load())
	}
}
