package etcdcache

import (
	"fmt"
	"time"

	"github.com/agentcache/cache"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// KV is a cache type for the value of one etcd key, requested with a
// *KVRequest. Its values are KeyValue; a missing key is a KeyValue with
// Exists false. It supports blocking queries: see the package
// documentation for how indexes are chosen.
//
// Register it with a blocking refresh to keep each cached key current
// through a watch:
//
//	c.RegisterType("kv", &etcdcache.KV{Client: cli}, &cache.RegisterOptions{
//		Refresh:        true,
//		RefreshTimeout: 10 * time.Minute,
//	})
type KV struct {
	// Client is the client used for every request, unless ClientFor is
	// set.
	Client *clientv3.Client

	// ClientFor, if set, picks the client for each request from its
	// Datacenter and Token.
	ClientFor ClientFunc

	// ReadTimeout bounds each read. Zero means DefaultReadTimeout.
	ReadTimeout time.Duration

	// LostContactAfter is how long the connection to etcd may be down
	// during a blocking fetch before the fetch fails. Zero means
	// DefaultLostContactAfter.
	LostContactAfter time.Duration
}

// SupportsBlocking implements cache.Type; it returns true.
func (t *KV) SupportsBlocking() bool { return true }

// Fetch implements cache.Type. With MinIndex zero it reads the key. With
// MinIndex greater than zero it waits, up to the options' Timeout (or
// DefaultWait), for the key to change after that index; if it does not,
// Fetch returns the last value with the same index.
func (t *KV) Fetch(opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	req, ok := r.(*KVRequest)
	if !ok {
		return cache.FetchResult{}, fmt.Errorf("etcdcache: KV got request type %T, want *KVRequest", r)
	}
	s := t.settings()
	cli, err := s.pick(req.Datacenter, req.Token)
	if err != nil {
		return cache.FetchResult{}, err
	}
	if opts.MinIndex == 0 {
		return s.readKey(cli, req.Key)
	}

	return blockingFetch(s, cli, opts, view[KeyValue]{
		key:  req.Key,
		read: func() (cache.FetchResult, error) { return s.readKey(cli, req.Key) },
		change: func(_ KeyValue, events []*clientv3.Event) cache.FetchResult {
			kv := fromEvent(events[len(events)-1])
			return cache.FetchResult{Value: kv, Index: uint64(kv.ModRevision), State: revision(kv.ModRevision)}
		},
		same: sameVersion,
	})
}

// settings returns the fields KV shares with Prefix.
func (t *KV) settings() settings {
	return settings{
		client:      t.Client,
		clientFor:   t.ClientFor,
		readTimeout: t.ReadTimeout,
		lostAfter:   t.LostContactAfter,
	}
}

// readKey reads key. The index is the key's ModRevision, or the read's
// revision when the key is missing; the State is the read's revision.
func (s settings) readKey(cli *clientv3.Client, key string) (cache.FetchResult, error) {
	ctx, cancel := s.readContext(cli)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return cache.FetchResult{}, fmt.Errorf("etcdcache: get %q: %w", key, err)
	}
	read := resp.Header.Revision
	kv := KeyValue{Key: key}
	index := read
	if len(resp.Kvs) > 0 {
		kv = fromMVCC(resp.Kvs[0])
		index = kv.ModRevision
	}
	return cache.FetchResult{Value: kv, Index: uint64(index), State: revision(read)}, nil
}
