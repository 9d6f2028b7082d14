package redistier

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
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

// bound is how a tier bounds its Redis calls.
type bound struct {
	timeout time.Duration // RedisTimeout
	// inline: the client ends every call at its context's deadline, so
	// that a call needs no goroutine of its own.
	inline bool
}

// honoursDeadlines reports whether rdb ends its calls at their context's
// deadline: a go-redis client, cluster client or ring with
// ContextTimeoutEnabled whose read and write timeouts keep socket
// deadlines on (not -2) and, for a cluster, without a ClusterSlots
// function, which may ignore its context. Hooks, dialers and NewClient
// functions of such a client are trusted to honour their contexts too.
// Any other client gets a goroutine per call.
func honoursDeadlines(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		o := c.Options()
		return o.ContextTimeoutEnabled && o.ReadTimeout >= 0 && o.WriteTimeout >= 0
	case *redis.ClusterClient:
		o := c.Options()
		return o.ContextTimeoutEnabled && o.ReadTimeout >= 0 && o.WriteTimeout >= 0 && o.ClusterSlots == nil
	case *redis.Ring:
		o := c.Options()
		return o.ContextTimeoutEnabled && o.ReadTimeout >= 0 && o.WriteTimeout >= 0
	}
	return false
}

// bounded runs f with a context that ends after b.timeout, and returns
// when f does or the context ends, whichever is first. A client that
// honours context deadlines on its sockets (see honoursDeadlines) ends f
// in time by itself, and f runs in the caller's goroutine. Otherwise
// (go-redis ignores deadlines without ContextTimeoutEnabled) f runs in a
// goroutine of its own, which finishes within the client's own timeouts.
// Errors are *redisError.
func bounded[T any](ctx context.Context, b bound, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	if b.inline {
		v, err := f(ctx)
		if err != nil {
			return v, &redisError{err}
		}
		return v, nil
	}
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
