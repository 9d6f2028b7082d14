package etcdcache

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults for the tunables of KV and Prefix.
const (
	// DefaultReadTimeout bounds a read when ReadTimeout is zero.
	DefaultReadTimeout = 5 * time.Second

	// DefaultLostContactAfter is used when LostContactAfter is zero.
	DefaultLostContactAfter = 3 * time.Second

	// DefaultWait bounds a blocking fetch whose FetchOptions carry no
	// Timeout (the type was registered without RefreshTimeout).
	DefaultWait = 5 * time.Minute
)

// ClientFunc returns the client to serve a request made to datacenter
// with token. It lets one type serve several clusters or several etcd
// users; the cache keeps their entries apart.
type ClientFunc func(datacenter, token string) (*clientv3.Client, error)

// errNoClient is returned by a type that has neither Client nor ClientFor.
var errNoClient = errors.New("etcdcache: type has no Client and no ClientFor")

// settings are the fields that KV and Prefix share.
type settings struct {
	client      *clientv3.Client
	clientFor   ClientFunc
	readTimeout time.Duration
	lostAfter   time.Duration
}

// pick returns the client for a request.
func (s settings) pick(datacenter, token string) (*clientv3.Client, error) {
	if s.clientFor != nil {
		return s.clientFor(datacenter, token)
	}
	if s.client == nil {
		return nil, errNoClient
	}
	return s.client, nil
}

// readContext returns a context for one read under the client's context.
func (s settings) readContext(cli *clientv3.Client) (context.Context, context.CancelFunc) {
	d := s.readTimeout
	if d <= 0 {
		d = DefaultReadTimeout
	}
	return context.WithTimeout(cli.Ctx(), d)
}

// lostContactAfter returns the effective LostContactAfter.
func (s settings) lostContactAfter() time.Duration {
	if s.lostAfter <= 0 {
		return DefaultLostContactAfter
	}
	return s.lostAfter
}

// waitFor returns how long a blocking fetch may wait.
func waitFor(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		return DefaultWait
	}
	return timeout
}

// revision is the State of a result: the revision up to which its value
// is known to be current.
type revision int64

// watchFrom returns the revision after which a blocking fetch has to look
// for changes: the later of MinIndex and the last result's State.
func watchFrom(minIndex uint64, last any) int64 {
	from := int64(minIndex)
	if r, ok := last.(revision); ok && int64(r) > from {
		from = int64(r)
	}
	return from
}
