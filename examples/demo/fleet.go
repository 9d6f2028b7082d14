package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/examples/etcdcache"
	"github.com/agentcache/cache/redistier"
	"github.com/agentcache/cache/redistier/redistest"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fleets are the caches the demo runs: one by default; with -instances N,
// N of them; and with -redis, N more that share their fetches through
// redistier, so that the summary can compare the two.
type fleets struct {
	caches []*cache.Cache
	plain  *fleetCount // the caches without the tier; nil by default
	tiered *fleetCount // the caches with the tier; nil without -redis

	tiers     []*redistier.Tier
	clients   []*redis.Client
	server    *redistest.Server // with -redis local
	redisAddr string
}

// fleetCount counts the blocking kv queries that etcd answered for one
// fleet. Each write ends one blocking query per instance watching the key,
// or, with the tier, one for the whole fleet; queries still waiting are
// not counted.
type fleetCount struct {
	instances int
	kv        atomic.Int64
}

// counted is a Type that counts its blocking fetches as they return.
type counted struct {
	cache.Type
	n *atomic.Int64
}

// Fetch passes the fetch on and counts it if it was a blocking query.
func (c counted) Fetch(opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	res, err := c.Type.Fetch(opts, r)
	if opts.MinIndex > 0 {
		c.n.Add(1)
	}
	return res, err
}

// openFleets builds the caches for the options o over the etcd client cli.
func openFleets(o options, cli *clientv3.Client) (*fleets, error) {
	f := &fleets{}
	reg := &cache.RegisterOptions{Refresh: true, RefreshTimeout: o.refreshTimeout}
	if o.instances == 1 && o.redis == "" {
		c := cache.New(nil)
		c.RegisterType("kv", &etcdcache.KV{Client: cli}, reg)
		c.RegisterType("prefix", &etcdcache.Prefix{Client: cli}, reg)
		f.caches = []*cache.Cache{c}
		return f, nil
	}
	f.plain = &fleetCount{instances: o.instances}
	for range o.instances {
		c := cache.New(nil)
		c.RegisterType("kv", counted{&etcdcache.KV{Client: cli}, &f.plain.kv}, reg)
		c.RegisterType("prefix", &etcdcache.Prefix{Client: cli}, reg)
		f.caches = append(f.caches, c)
	}
	if o.redis == "" {
		return f, nil
	}
	if err := f.openRedis(o.redis); err != nil {
		f.close()
		return nil, err
	}
	f.tiered = &fleetCount{instances: o.instances}
	prefix := "agentcache-demo:" + runID()
	for range o.instances {
		// Each instance has its own Redis client, as separate processes would.
		rdb := redis.NewClient(&redis.Options{Addr: f.redisAddr, ContextTimeoutEnabled: true})
		f.clients = append(f.clients, rdb)
		kv := f.tier(counted{&etcdcache.KV{Client: cli}, &f.tiered.kv}, rdb, "kv", prefix, redistier.JSON[etcdcache.KeyValue]())
		pfx := f.tier(&etcdcache.Prefix{Client: cli}, rdb, "prefix", prefix, redistier.JSON[[]etcdcache.KeyValue]())
		c := cache.New(nil)
		c.RegisterType("kv", kv, reg)
		c.RegisterType("prefix", pfx, reg)
		f.caches = append(f.caches, c)
	}
	return f, nil
}

// tier wraps typ for the type registered as name.
func (f *fleets) tier(typ cache.Type, rdb *redis.Client, name, prefix string, codec redistier.Codec) *redistier.Tier {
	t := redistier.Wrap(typ, rdb, redistier.Options{
		Name: name, Codec: codec, KeyPrefix: prefix,
		MaxStale: time.Minute, RecordTTL: 10 * time.Minute,
	})
	f.tiers = append(f.tiers, t)
	return t
}

// openRedis starts a local redis-server for "local", or checks that addr
// answers.
func (f *fleets) openRedis(addr string) error {
	if addr == "local" {
		srv, err := redistest.Start()
		if err != nil {
			return fmt.Errorf("-redis local: %w", err)
		}
		f.server, f.redisAddr = srv, srv.Addr()
		return nil
	}
	f.redisAddr = addr
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", addr, err)
	}
	return nil
}

// runID returns a random name for this run's records in Redis, so that
// records of an earlier run (of another embedded etcd, whose revisions
// started over) are never served.
func runID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// close closes the caches, then the tiers, their clients and the local
// server.
func (f *fleets) close() error {
	var errs []error
	for _, c := range f.caches {
		errs = append(errs, c.Close())
	}
	for _, t := range f.tiers {
		errs = append(errs, t.Close())
	}
	for _, rdb := range f.clients {
		errs = append(errs, rdb.Close())
	}
	if f.server != nil {
		f.server.Stop()
	}
	return errors.Join(errs...)
}

// report adds the fleet rows to the summary.
func (f *fleets) report(row func(name, value, note string), writes float64) {
	if f.plain == nil {
		return
	}
	perChange := func(fc *fleetCount) string {
		if writes == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", float64(fc.kv.Load())/writes)
	}
	row("instances", fmt.Sprint(len(f.caches)), f.describe())
	row("blocking kv queries per write", "", "answered by etcd")
	row("  without the tier", perChange(f.plain), fmt.Sprintf("%d instances, %s queries", f.plain.instances, group(float64(f.plain.kv.Load()))))
	if f.tiered != nil {
		var s redistier.Stats
		for _, t := range f.tiers {
			x := t.Stats()
			s.SharedHits += x.SharedHits
			s.Fallbacks += x.Fallbacks
		}
		row("  with the tier", perChange(f.tiered), fmt.Sprintf("%d instances, %s queries", f.tiered.instances, group(float64(f.tiered.kv.Load()))))
		row("  shared hits (all types)", group(float64(s.SharedHits)), "")
		row("  fallbacks to etcd", group(float64(s.Fallbacks)), "")
	}
}

// describe says what the fleets are.
func (f *fleets) describe() string {
	if f.tiered == nil {
		return fmt.Sprintf("%d without a tier", f.plain.instances)
	}
	where := "redis at " + f.redisAddr
	if f.server != nil {
		where = "local redis-server at " + f.redisAddr
	}
	return fmt.Sprintf("%d without the tier, %d with it (%s)", f.plain.instances, f.tiered.instances, where)
}
