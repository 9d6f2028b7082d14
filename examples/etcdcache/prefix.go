package etcdcache

import (
	"fmt"
	"sort"
	"time"

	"github.com/agentcache/cache"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Prefix is a cache type for every key under a prefix, requested with a
// *PrefixRequest. Its values are []KeyValue sorted by key, holding only
// keys that exist. It supports blocking queries like KV; a change to any
// key under the prefix is a change of the value.
type Prefix struct {
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
func (t *Prefix) SupportsBlocking() bool { return true }

// Fetch implements cache.Type. With MinIndex zero it reads the keys. With
// MinIndex greater than zero it waits, up to the options' Timeout (or
// DefaultWait), for a change under the prefix after that index, and
// applies the changes to the last value; if nothing changes, Fetch
// returns the last value with the same index.
func (t *Prefix) Fetch(opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	req, ok := r.(*PrefixRequest)
	if !ok {
		return cache.FetchResult{}, fmt.Errorf("etcdcache: Prefix got request type %T, want *PrefixRequest", r)
	}
	s := t.settings()
	cli, err := s.pick(req.Datacenter, req.Token)
	if err != nil {
		return cache.FetchResult{}, err
	}
	if opts.MinIndex == 0 {
		return s.readPrefix(cli, req.Prefix)
	}

	return blockingFetch(s, cli, opts, view[[]KeyValue]{
		key:    req.Prefix,
		prefix: true,
		read:   func() (cache.FetchResult, error) { return s.readPrefix(cli, req.Prefix) },
		change: func(last []KeyValue, events []*clientv3.Event) cache.FetchResult {
			rev := events[len(events)-1].Kv.ModRevision
			return cache.FetchResult{Value: apply(last, events), Index: uint64(rev), State: revision(rev)}
		},
		same: sameList,
	})
}

// settings returns the fields Prefix shares with KV.
func (t *Prefix) settings() settings {
	return settings{
		client:      t.Client,
		clientFor:   t.ClientFor,
		readTimeout: t.ReadTimeout,
		lostAfter:   t.LostContactAfter,
	}
}

// readPrefix reads the keys under prefix. Index and State are the read's
// revision.
func (s settings) readPrefix(cli *clientv3.Client, prefix string) (cache.FetchResult, error) {
	ctx, cancel := s.readContext(cli)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return cache.FetchResult{}, fmt.Errorf("etcdcache: get prefix %q: %w", prefix, err)
	}
	list := make([]KeyValue, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		list = append(list, fromMVCC(kv))
	}
	read := resp.Header.Revision
	return cache.FetchResult{Value: list, Index: uint64(read), State: revision(read)}, nil
}

// apply returns a new list: last with the events applied in order. last
// itself is shared with other callers and is left untouched.
func apply(last []KeyValue, events []*clientv3.Event) []KeyValue {
	byKey := make(map[string]KeyValue, len(last)+len(events))
	for _, kv := range last {
		byKey[kv.Key] = kv
	}
	for _, ev := range events {
		kv := fromEvent(ev)
		if kv.Exists {
			byKey[kv.Key] = kv
		} else {
			delete(byKey, kv.Key)
		}
	}
	list := make([]KeyValue, 0, len(byKey))
	for _, kv := range byKey {
		list = append(list, kv)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Key < list[j].Key })
	return list
}

// sameList reports whether two sorted lists hold the same writes.
func sameList(a, b []KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameVersion(a[i], b[i]) {
			return false
		}
	}
	return true
}
