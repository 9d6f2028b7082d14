// Package cache caches the results of RPC-like calls in front of an
// authoritative server. It is a port of the agent cache of HashiCorp Consul
// v1.4.5 (agent/cache).
//
// Unlike anti-entropy, where the local agent is the authority and pushes its
// view, here the server is the authority: the cache only balances freshness
// against load, in a way each type of data chooses.
//
// Each kind of data is a Type, registered under a name with RegisterType.
// Callers then Get a value with a Request, which is usually the RPC's own
// request struct: using the cache is mostly a drop-in change of the call
// site. Types that support blocking queries get blocking Gets (MinIndex and
// Timeout) and can be refreshed in the background; Notify streams changes of
// one request to a channel.
package cache
