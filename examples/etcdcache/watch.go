package etcdcache

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	// errNoChange reports that a wait ended without a change.
	errNoChange = errors.New("etcdcache: no change before the wait ended")

	// errCompacted reports that the revision to watch from was compacted.
	errCompacted = errors.New("etcdcache: watch start revision compacted")

	// errLostContact reports that the connection to etcd was down for
	// longer than LostContactAfter.
	errLostContact = errors.New("etcdcache: lost contact with etcd")
)

// watchOnce waits up to wait for the first changes to key (or, with
// prefix, to the keys under it) after revision from, and returns their
// events. It returns errNoChange when the wait passes, errCompacted when
// revision from+1 is gone, and errLostContact when the connection stays
// down for lostAfter.
//
// Every way out cancels the watch's context: the client blocks even in
// Watch itself while it cannot reach etcd, so the timeout and the loss of
// contact have to end the wait through the context.
func watchOnce(cli *clientv3.Client, key string, prefix bool, from int64, wait, lostAfter time.Duration) ([]*clientv3.Event, error) {
	ctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(cli.Ctx()))
	defer cancel(nil)
	ctx, stop := context.WithTimeoutCause(ctx, wait, errNoChange)
	defer stop()
	watchContact(ctx, cli.ActiveConnection(), lostAfter, func() { cancel(errLostContact) })

	opts := []clientv3.OpOption{clientv3.WithRev(from + 1)}
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	for resp := range cli.Watch(ctx, key, opts...) {
		if ctx.Err() != nil {
			break
		}
		if resp.CompactRevision != 0 {
			return nil, errCompacted
		}
		if err := resp.Err(); err != nil {
			return nil, fmt.Errorf("etcdcache: watch %q: %w", key, err)
		}
		if len(resp.Events) > 0 {
			return resp.Events, nil
		}
		// A progress notification or the creation ack: keep waiting.
	}
	return nil, ended(ctx, cli)
}

// ended explains why a watch under ctx closed.
func ended(ctx context.Context, cli *clientv3.Client) error {
	if err := cli.Ctx().Err(); err != nil {
		return fmt.Errorf("etcdcache: client closed: %w", err)
	}
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	return errors.New("etcdcache: watch closed")
}
