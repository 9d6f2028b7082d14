package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/examples/etcdcache"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// workload drives the cache: readers Get random keys, a writer changes
// random keys at a fixed rate, and a Notify subscriber follows the whole
// prefix.
type workload struct {
	caches       []*cache.Cache // readers use them in turn; each has a subscriber
	cli          *clientv3.Client
	prefix       string
	requests     []*etcdcache.KVRequest // one per key, shared by the readers
	readers      int
	think        time.Duration
	writesPerSec float64

	latency   histogram
	getErrors atomic.Int64
	writes    atomic.Int64
	writeErrs atomic.Int64
	events    atomic.Int64
	eventErrs atomic.Int64
}

// keyName returns the etcd key of key number i.
func (w *workload) keyName(i int) string {
	return fmt.Sprintf("%skey-%03d", w.prefix, i)
}

// seed writes every key once, so that readers find values.
func (w *workload) seed(ctx context.Context, keys int) error {
	for i := 0; i < keys; i++ {
		name := w.keyName(i)
		if _, err := w.cli.Put(ctx, name, "v0"); err != nil {
			return fmt.Errorf("seed %s: %w", name, err)
		}
		w.requests = append(w.requests, &etcdcache.KVRequest{Key: name})
	}
	return nil
}

// start starts the readers, the writer and the subscriber; they run until
// ctx is done. The returned function waits for them to end.
func (w *workload) start(ctx context.Context) (wait func(), err error) {
	var wg sync.WaitGroup
	for _, c := range w.caches {
		events := make(chan cache.UpdateEvent, 64)
		if err := c.Notify(ctx, "prefix", &etcdcache.PrefixRequest{Prefix: w.prefix}, "all-keys", events); err != nil {
			return nil, err
		}
		wg.Go(func() { w.subscribe(ctx, events) })
	}
	for i := 0; i < w.readers; i++ {
		c := w.caches[i%len(w.caches)]
		wg.Go(func() { w.read(ctx, c) })
	}
	if w.writesPerSec > 0 {
		wg.Go(func() { w.write(ctx) })
	}
	return wg.Wait, nil
}

// read Gets random keys from c until ctx is done.
func (w *workload) read(ctx context.Context, c *cache.Cache) {
	for ctx.Err() == nil {
		req := w.requests[rand.IntN(len(w.requests))]
		start := time.Now()
		_, _, err := c.Get("kv", req)
		w.latency.record(time.Since(start))
		if err != nil {
			w.getErrors.Add(1)
		}
		if w.think > 0 {
			time.Sleep(w.think)
		}
	}
}

// write puts a new value under a random key writesPerSec times a second.
func (w *workload) write(ctx context.Context) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / w.writesPerSec))
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		name := w.requests[rand.IntN(len(w.requests))].Key
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := w.cli.Put(pctx, name, fmt.Sprintf("v%d", n))
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				w.writeErrs.Add(1)
			}
			continue
		}
		w.writes.Add(1)
	}
}

// subscribe counts the Notify events until ctx is done.
func (w *workload) subscribe(ctx context.Context, events <-chan cache.UpdateEvent) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			if ev.Err != nil {
				w.eventErrs.Add(1)
			} else {
				w.events.Add(1)
			}
		}
	}
}

// cleanup deletes the demo's keys.
func (w *workload) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = w.cli.Delete(ctx, w.prefix, clientv3.WithPrefix())
}
