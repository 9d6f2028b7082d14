package redistier

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/redistier/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkSharedHit measures a fetch answered from Redis (one round trip
// on loopback, plus decoding the record and the value) against a bare
// go-redis GET of the same record's bytes, in the same run. The client
// has ContextTimeoutEnabled, as the package documentation recommends;
// tier-no-ctx-timeout is the same hit through a client without it, whose
// calls the tier bounds with a goroutine each.
func BenchmarkSharedHit(b *testing.B) {
	rdb := redis.NewClient(&redis.Options{
		Addr:        redistest.Shared(b).Addr(),
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MaxRetries: -1, ContextTimeoutEnabled: true,
	})
	b.Cleanup(func() { _ = rdb.Close() })
	tier, req := sharedHitTier(b, rdb)
	key := tier.RecordKey(req.Datacenter, req.Token, req.Key)
	ctx := context.Background()

	b.Run("tier", func(b *testing.B) { benchTierHit(b, tier, req) })
	b.Run("redis-get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := rdb.Get(ctx, key).Bytes(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tier-no-ctx-timeout", func(b *testing.B) {
		plain, req := sharedHitTier(b, newClient(b))
		benchTierHit(b, plain, req)
	})
}

// sharedHitTier returns a tier on rdb whose record for the returned
// request is in Redis.
func sharedHitTier(b *testing.B, rdb *redis.Client) (*Tier, cache.RequestInfo) {
	tier := newTier(b, newFakeBackend(false, "value"), rdb, Options{Name: uniqueName(b), MaxStale: time.Hour})
	req := cache.RequestInfo{Key: "k", Datacenter: "dc1", Token: "token"}
	if _, err := tier.Fetch(cache.FetchOptions{}, req); err != nil {
		b.Fatal(err)
	}
	return tier, req
}

// benchTierHit fetches req through tier, which must answer every fetch
// from Redis.
func benchTierHit(b *testing.B, tier *Tier, req cache.RequestInfo) {
	ctx := context.Background()
	hits := tier.Stats().SharedHits
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tier.FetchContext(ctx, cache.FetchOptions{}, req); err != nil {
			b.Fatal(err)
		}
	}
	if s := tier.Stats(); s.BackendCalls != 1 || s.SharedHits-hits != uint64(b.N) {
		b.Fatalf("stats %+v after %d fetches, want 1 backend call and a shared hit each", s, b.N)
	}
}

// BenchmarkFleetLoad measures what one change of a watched key costs the
// backend as the fleet grows: N caches, each with its own tier and Redis
// client (or, for "plain", without a tier), follow one key with a
// blocking refresh and Notify; each iteration changes the key and waits
// until every instance has the new value. queries/change is the number of
// blocking backend queries per change; ns/op is the time for a change to
// reach the whole fleet.
func BenchmarkFleetLoad(b *testing.B) {
	for _, n := range []int{1, 2, 5, 10, 20} {
		for _, tiered := range []bool{true, false} {
			kind := "plain"
			if tiered {
				kind = "tier"
			}
			b.Run(fmt.Sprintf("instances=%d/%s", n, kind), func(b *testing.B) { benchFleet(b, n, tiered) })
		}
	}
}

func benchFleet(b *testing.B, n int, tiered bool) {
	backend := newFakeBackend(true, "v0")
	name := uniqueName(b)
	req := cache.RequestInfo{Key: "k"}
	var events []chan cache.UpdateEvent
	for range n {
		typ := cache.Type(backend)
		if tiered {
			typ = newTier(b, backend, newClient(b), Options{Name: name})
		}
		c := newCache(b, typ)
		ch := make(chan cache.UpdateEvent, 4)
		ctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(cancel)
		if err := c.Notify(ctx, "t", req, "k", ch); err != nil {
			b.Fatal(err)
		}
		events = append(events, ch)
	}
	awaitAll(b, events, "v0@")
	redistest.Eventually(b, wait, "the blocking queries", func() bool {
		return tiered && backend.blockingCalls.Load() >= 1 || backend.blockingCalls.Load() >= int64(n)
	})
	before := backend.blockingCalls.Load()
	changes := 0
	for b.Loop() {
		changes++
		v := fmt.Sprintf("v%d", changes)
		backend.set(v)
		awaitAll(b, events, v+"@")
	}
	b.StopTimer()
	// The last change's next queries start after it arrived everywhere.
	want := before + int64(changes)
	if !tiered {
		want = before + int64(n*changes)
	}
	redistest.Eventually(b, wait, "the next queries", func() bool { return backend.blockingCalls.Load() >= want })
	b.ReportMetric(float64(backend.blockingCalls.Load()-before)/float64(changes), "queries/change")
}

// awaitAll waits for an event with value v on every channel.
func awaitAll(b *testing.B, events []chan cache.UpdateEvent, v string) {
	for i, ch := range events {
		expectEvent(b, i, ch, v)
	}
}
