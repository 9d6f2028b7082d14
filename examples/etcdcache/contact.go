package etcdcache

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// watchContact calls lost once conn has not been ready for lostAfter,
// checking until ctx is done. A nil conn is never reported lost.
//
// An etcd watch retries a broken connection on its own and never reports
// it, so without this a blocking fetch would wait out its whole timeout
// while etcd is down and the cache would believe its values current.
//
// The goroutine started here ends when ctx is done or lost has been
// called.
func watchContact(ctx context.Context, conn *grpc.ClientConn, lostAfter time.Duration, lost func()) {
	if conn == nil {
		return
	}
	go func() {
		for {
			state := conn.GetState()
			if state == connectivity.Ready {
				if !conn.WaitForStateChange(ctx, state) {
					return
				}
				continue
			}
			if !becomesReady(ctx, conn, lostAfter) {
				if ctx.Err() == nil {
					lost()
				}
				return
			}
		}
	}()
}

// becomesReady waits up to d for conn to be ready, asking an idle
// connection to connect.
func becomesReady(ctx context.Context, conn *grpc.ClientConn, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		state := conn.GetState()
		switch state {
		case connectivity.Ready:
			return true
		case connectivity.Idle:
			conn.Connect()
		}
		if !conn.WaitForStateChange(ctx, state) {
			return false
		}
	}
}
