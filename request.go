package cache

import "time"

// Request is a cacheable request.
//
// Request is usually implemented directly on the struct a service already
// sends to its RPC, so that switching a call to the cache needs no new types.
type Request interface {
	// CacheInfo returns the information the cache needs to partition the
	// request and to decide whether a cached value can serve it.
	CacheInfo() RequestInfo
}

// RequestInfo describes a Request to the cache.
type RequestInfo struct {
	// Token is the ACL token the request is made with. Entries are
	// partitioned by token, so callers with different tokens never share
	// a value.
	Token string

	// Key identifies the request within its type, datacenter and token.
	// Two requests with the same Key must ask for the same data, so it has
	// to cover every parameter that changes the result (a hash of the
	// request is a good choice). An empty Key bypasses the cache: every Get
	// calls the Type's Fetch directly.
	Key string

	// Datacenter is the datacenter the request is made to. Entries are
	// partitioned by datacenter.
	Datacenter string

	// MinIndex is the index the caller has already seen. For types that
	// support blocking, a Get with MinIndex > 0 waits until the cache holds
	// a value with a greater index (or Timeout passes). It is ignored by
	// non-blocking types.
	MinIndex uint64

	// Timeout is the longest a blocking Get waits for a value newer than
	// MinIndex. When it passes, Get returns the last known value (which may
	// be nil) with no error, as a Consul blocking query does. Zero means no
	// timeout.
	Timeout time.Duration

	// MaxAge bounds how stale a cached value may be for a type without
	// background refresh: an older value is fetched again before it is
	// returned. Zero means any age. Types with background refresh ignore it.
	MaxAge time.Duration

	// MustRevalidate, for a type without background refresh, forces a fetch
	// before a cached value is returned, as HTTP's Cache-Control
	// must-revalidate does. If that fetch fails, the cached value is still
	// returned. Types with background refresh ignore it.
	MustRevalidate bool
}

// CacheInfo returns info itself, so that a bare RequestInfo is a Request.
func (info RequestInfo) CacheInfo() RequestInfo { return info }
