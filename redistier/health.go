package redistier

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// health tracks whether Redis answers. While it does not, fetches go
// straight to the backend, except for one probe a second.
type health struct {
	down      atomic.Bool
	nextProbe atomic.Int64 // Unix nanoseconds
	since     atomic.Int64 // start of the outage, Unix nanoseconds
}

// allow reports whether a fetch should use Redis now.
func (h *health) allow(now time.Time) bool {
	if !h.down.Load() {
		return true
	}
	next := h.nextProbe.Load()
	return now.UnixNano() >= next && h.nextProbe.CompareAndSwap(next, now.Add(probeInterval).UnixNano())
}

// failed records a failed Redis call and reports whether it starts an
// outage.
func (h *health) failed(now time.Time) bool {
	h.nextProbe.Store(now.Add(probeInterval).UnixNano())
	if h.down.CompareAndSwap(false, true) {
		h.since.Store(now.UnixNano())
		return true
	}
	return false
}

// answered records a Redis call that worked and, if it ends an outage,
// returns how long the outage lasted.
func (h *health) answered(now time.Time) (time.Duration, bool) {
	if !h.down.Load() || !h.down.CompareAndSwap(true, false) {
		return 0, false
	}
	return now.Sub(time.Unix(0, h.since.Load())), true
}

// redisError marks an error of Redis, as opposed to one of the backend:
// the fetch then falls back to the backend.
type redisError struct{ err error }

func (e *redisError) Error() string { return "redistier: redis: " + e.err.Error() }
func (e *redisError) Unwrap() error { return e.err }

// isRedisError reports whether err came from Redis.
func isRedisError(err error) bool {
	var re *redisError
	return errors.As(err, &re)
}

// bounded runs f with a context that ends after d, and returns when f
// does or the context ends, whichever is first. The client may not honour
// context deadlines on its sockets (go-redis does only with
// ContextTimeoutEnabled), so f runs in a goroutine of its own, which
// finishes within the client's own timeouts. Errors are *redisError.
func bounded[T any](ctx context.Context, d time.Duration, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	type out struct {
		v   T
		err error
	}
	ch := make(chan out, 1)
	go func() {
		v, err := f(ctx)
		ch <- out{v, err}
	}()
	select {
	case o := <-ch:
		if o.err != nil {
			return o.v, &redisError{o.err}
		}
		return o.v, nil
	case <-ctx.Done():
		var zero T
		return zero, &redisError{ctx.Err()}
	}
}
