package etcdcache

import (
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// KeyValue is the value of one key as the cache holds it. KV returns a
// KeyValue and Prefix a []KeyValue. The cache hands the same value to
// every caller, so callers must treat it as read-only; Value is a string
// rather than a byte slice for that reason.
type KeyValue struct {
	// Key is the etcd key.
	Key string

	// Value is the key's value. It is empty when the key does not exist.
	Value string

	// Exists reports whether the key exists. A missing key is a valid
	// result, not an error, so that a caller can wait for it to appear.
	Exists bool

	// CreateRevision is the revision that created the key, or 0.
	CreateRevision int64

	// ModRevision is the revision that last wrote the key. For a key
	// deleted while it was watched, it is the revision of the delete.
	ModRevision int64

	// Version counts the writes since the key was created, or is 0.
	Version int64

	// Lease is the ID of the lease attached to the key, or 0.
	Lease int64
}

// fromMVCC converts a key that exists.
func fromMVCC(kv *mvccpb.KeyValue) KeyValue {
	return KeyValue{
		Key:            string(kv.Key),
		Value:          string(kv.Value),
		Exists:         true,
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
		Version:        kv.Version,
		Lease:          kv.Lease,
	}
}

// fromEvent converts a watch event: a put gives the new value, a delete
// gives a missing key whose ModRevision is the revision of the delete.
func fromEvent(ev *clientv3.Event) KeyValue {
	if ev.Type == mvccpb.DELETE {
		return KeyValue{Key: string(ev.Kv.Key), ModRevision: ev.Kv.ModRevision}
	}
	return fromMVCC(ev.Kv)
}

// sameVersion reports whether a and b describe the same write of a key.
func sameVersion(a, b KeyValue) bool {
	return a.Key == b.Key && a.Exists == b.Exists &&
		(!a.Exists || a.ModRevision == b.ModRevision)
}
