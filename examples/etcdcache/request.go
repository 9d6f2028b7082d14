package etcdcache

import (
	"time"

	"github.com/agentcache/cache"
)

// KVRequest asks the KV type for one key.
type KVRequest struct {
	// Key is the etcd key. It is also the cache key; an empty Key, which
	// etcd rejects anyway, bypasses the cache.
	Key string

	// Datacenter names the etcd cluster (or group of endpoints) to read
	// from. Entries are partitioned by it, and the type's ClientFor
	// receives it to pick a client.
	Datacenter string

	// Token names the identity the key is read as, for example an etcd
	// user. Entries are partitioned by it, so identities never share a
	// value, and the type's ClientFor receives it to pick a client.
	Token string

	// MinIndex, when greater than zero, makes Get wait until the cache
	// holds a value with a greater index: pass the ResultMeta.Index of the
	// last result to wait for the next change.
	MinIndex uint64

	// Timeout bounds how long a Get with MinIndex waits. When it passes,
	// Get returns the last value. Zero means no bound.
	Timeout time.Duration
}

// CacheInfo implements cache.Request.
func (r *KVRequest) CacheInfo() cache.RequestInfo {
	return cache.RequestInfo{
		Key:        r.Key,
		Datacenter: r.Datacenter,
		Token:      r.Token,
		MinIndex:   r.MinIndex,
		Timeout:    r.Timeout,
	}
}

// PrefixRequest asks the Prefix type for every key under a prefix.
type PrefixRequest struct {
	// Prefix selects the keys. An empty Prefix selects every key.
	Prefix string

	// Datacenter names the etcd cluster (or group of endpoints) to read
	// from, as in KVRequest.
	Datacenter string

	// Token names the identity the keys are read as, as in KVRequest.
	Token string

	// MinIndex, when greater than zero, makes Get wait until the cache
	// holds a value with a greater index.
	MinIndex uint64

	// Timeout bounds how long a Get with MinIndex waits. Zero means no
	// bound.
	Timeout time.Duration
}

// CacheInfo implements cache.Request. The cache key is the prefix behind
// a marker byte, so that the empty prefix is cached too.
func (r *PrefixRequest) CacheInfo() cache.RequestInfo {
	return cache.RequestInfo{
		Key:        "p" + r.Prefix,
		Datacenter: r.Datacenter,
		Token:      r.Token,
		MinIndex:   r.MinIndex,
		Timeout:    r.Timeout,
	}
}
