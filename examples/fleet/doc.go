// Package fleet holds the tests of a fleet of caches that share their
// etcd reads through redistier: several cache instances, each with its
// own etcd and Redis clients as separate processes would have, watch the
// same keys of an embedded etcd server through a real redis-server. It
// has no code of its own.
package fleet
