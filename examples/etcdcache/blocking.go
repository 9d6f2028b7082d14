package etcdcache

import (
	"errors"
	"time"

	"github.com/agentcache/cache"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// view is what KV and Prefix tell blockingFetch about their data.
type view[V any] struct {
	// key is the key, or the prefix, to watch.
	key    string
	prefix bool

	// read reads the data: its Index and State follow the package
	// documentation.
	read func() (cache.FetchResult, error)

	// change returns the value after events, given the last value.
	change func(last V, events []*clientv3.Event) cache.FetchResult

	// same reports whether two values hold the same writes.
	same func(a, b V) bool
}

// blockingFetch waits, up to the options' Timeout (or DefaultWait), for
// the data to change after opts.MinIndex and returns the new value, or
// the last one with its index if nothing changed. Without a usable last
// value (a request that bypasses the cache) it reads instead of applying
// the changes.
func blockingFetch[V any](s settings, cli *clientv3.Client, opts cache.FetchOptions, v view[V]) (cache.FetchResult, error) {
	var last V
	var haveLast bool
	var lastState any
	if opts.LastResult != nil {
		last, haveLast = opts.LastResult.Value.(V)
		lastState = opts.LastResult.State
	}
	from := watchFrom(opts.MinIndex, lastState)
	deadline := time.Now().Add(waitFor(opts.Timeout))
	for {
		events, err := watchOnce(cli, v.key, v.prefix, from, time.Until(deadline), s.lostContactAfter())
		switch {
		case err == nil:
			if !haveLast {
				return v.read()
			}
			return v.change(last, events), nil

		case errors.Is(err, errNoChange):
			if !haveLast {
				return v.read()
			}
			return cache.FetchResult{Value: last, Index: opts.LastResult.Index, State: revision(from)}, nil

		case errors.Is(err, errCompacted):
			res, err := v.read()
			if err != nil {
				return cache.FetchResult{}, err
			}
			read := int64(res.State.(revision))
			if !haveLast || !v.same(last, res.Value.(V)) {
				// The read's revision is past MinIndex, as is the
				// compaction that stopped the watch.
				if res.Index <= opts.MinIndex {
					res.Index = uint64(read)
				}
				return res, nil
			}
			from = read

		default:
			return cache.FetchResult{}, err
		}
	}
}
