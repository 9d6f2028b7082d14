package cache

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"
)

// UpdateEvent is a change delivered by Notify.
type UpdateEvent struct {
	// CorrelationID is the value given to Notify, so that one channel can
	// serve several watches.
	CorrelationID string
	// Result is the value, as Get would return it.
	Result any
	// Meta is the ResultMeta Get returned with it.
	Meta ResultMeta
	// Err is the error Get returned, if any.
	Err error
}

// Notify watches the request r of type t and sends an UpdateEvent to ch each
// time its result changes, until ctx is done or the cache is closed. It
// returns at once; the watch runs in its own goroutine, which ends with
// it, without a last event. ch should be drained promptly: the watch
// waits for each send.
//
// For a type that supports blocking, the watch is a loop of blocking Gets:
// the first result is always sent, then one whenever the index changes.
// A lower index than the last one sent is a reset of the servers' index (a
// snapshot restore, say) and is sent as new data; later events count from
// it. Errors, and results with index 0, are retried with the same back-off
// as background refresh. Until a first value has been sent, every error is
// sent, and the watch does not block on an index: the first value is sent
// whatever its index.
//
// A type that does not support blocking is polled instead, which needs
// RequestInfo.MaxAge > 0 (Notify returns an error otherwise). An event is
// sent when the index or the value changes (reflect.DeepEqual), and for
// each failed poll until a first value arrives; the next poll comes when
// the value would be older than MaxAge, plus a small jitter so that it is
// stale by then and fetched anew, or after the back-off for an error.
//
// Notify returns an error if ctx, r or ch is nil, t is not registered, r
// has a negative Timeout or MaxAge, or the cache is closed (ErrClosed).
func (c *Cache) Notify(ctx context.Context, t string, r Request, correlationID string, ch chan<- UpdateEvent) error {
	// Five parameters, unlike the rest of the package: the seed's API.
	if ch == nil {
		return fmt.Errorf("cache: Notify of type %q: nil channel", t)
	}
	return c.NotifyCallback(ctx, t, r, correlationID, func(ctx context.Context, ev UpdateEvent) {
		select {
		case ch <- ev:
		case <-ctx.Done():
		case <-c.closing:
		}
	})
}

// NotifyCallback is Notify for callers that want a function called rather
// than a channel: cb receives each event, in order, from the watch's
// goroutine, together with ctx. The watch waits for cb to return before it
// looks for the next change, so cb should be quick. It returns the errors
// Notify does, with a nil cb in place of a nil channel.
func (c *Cache) NotifyCallback(ctx context.Context, t string, r Request, correlationID string, cb func(ctx context.Context, e UpdateEvent)) error {
	// Five parameters, unlike the rest of the package: Notify's, with cb
	// for ch.
	if c.closed.Load() {
		return ErrClosed
	}
	te := c.typeEntry(t)
	if te == nil {
		return unknownType(t)
	}
	if cb == nil {
		return fmt.Errorf("cache: NotifyCallback of type %q: nil callback", t)
	}
	if r == nil || ctx == nil {
		return nilArg("Notify", t, r, ctx)
	}
	info := r.CacheInfo()
	if info.Timeout < 0 || info.MaxAge < 0 {
		return badRequestInfo("Notify", t, &info)
	}
	w := &watch{c: c, ctx: ctx, t: t, r: r, info: info, id: correlationID, cb: cb}
	if te.typ.SupportsBlocking() {
		go w.blocking()
		return nil
	}
	if info.MaxAge == 0 {
		return errors.New("cannot use Notify for polling cache types without specifying the MaxAge")
	}
	go w.polling()
	return nil
}

// watch is one Notify watch, and what its loop shares. It belongs to the
// watch's goroutine, which NotifyCallback starts and which ends with ctx or
// Close.
type watch struct {
	c    *Cache
	ctx  context.Context
	t    string
	r    Request
	info RequestInfo // info.MinIndex is moved along by get
	id   string      // the correlation ID
	cb   func(context.Context, UpdateEvent)
}

// get is a Get of the watch that waits beyond minIndex. A cached value with
// an index below floor (0 for none) is a reset, returned at once: the
// watch passes the index it delivered last, which came from this cache.
func (w *watch) get(minIndex, floor uint64) (any, ResultMeta, error) {
	w.info.MinIndex = minIndex
	if done, v, meta, err := w.c.getFast(w.ctx, w.t, w.r, &w.info); done {
		return v, meta, err
	}
	return w.c.getSlow(w.ctx, w.t, w.r, &w.info, floor, true)
}

// blocking is the watch's loop for blocking types.
func (w *watch) blocking() {
	// index is that of the last value sent, 0 before the first. After
	// errors it stays 0, so that the Gets do not block and a first value
	// at index 1 (a new cluster) is not mistaken for an old one (Consul
	// #6521).
	var index uint64
	var failures uint
	for {
		res, meta, err := w.get(index, index)
		if w.ended() {
			return
		}
		// The first result is always sent (index is 0 only until then),
		// then each change.
		reset := err == nil && meta.Index > 0 && meta.Index < index
		if index == 0 || index < meta.Index || reset {
			if !w.deliver(UpdateEvent{w.id, res, meta, err}) {
				return
			}
			index = meta.Index
		}

		// A type that answers with index 0 would never block: back off as
		// for an error instead of spinning. For a cached entry its fetch
		// loop does that already (see emptyFetch), and the next Get joins
		// it, so only Gets that bypass the cache back off here: two
		// back-offs would add up.
		if err == nil && (meta.Index > 0 || w.info.Key != "") {
			failures = 0
		} else {
			failures++
		}
		if !w.sleep(backOffWait(failures)) {
			return
		}
		// A result without an index (a misbehaving type, or a timeout
		// before any value) must not make the next Get return at once.
		// After an error, though, the next Get must not block: the first
		// value may well have index 1.
		if err == nil && index < 1 {
			index = 1
		}
	}
}

// polling is the watch's loop for non-blocking types.
func (w *watch) polling() {
	var index uint64
	var failures uint
	var last any
	for {
		res, meta, err := w.get(index, 0)
		if w.ended() {
			return
		}
		var send bool
		if err != nil {
			// Errors are news until there is a value to keep serving.
			send = last == nil
		} else {
			send = meta.Index != index || !reflect.DeepEqual(last, res)
		}
		if send {
			if !w.deliver(UpdateEvent{w.id, res, meta, err}) {
				return
			}
			last, index = res, meta.Index
		}
		if err != nil {
			failures++
		} else {
			failures = 0
		}
		if !w.sleep(w.pollWait(err, failures, meta.Age)) {
			return
		}
	}
}

// pollWait returns how long a polling watch waits before its next poll,
// after one that returned err (the latest of failures in a row) or a value
// of the given age.
func (w *watch) pollWait(err error, failures uint, age time.Duration) time.Duration {
	if err != nil {
		return backOffWait(failures)
	}
	// Poll again when the value becomes older than MaxAge, at once if it
	// already is. The jitter makes sure it is stale by then, so that the
	// next Get fetches rather than hits.
	maxAge := w.info.MaxAge
	var wait time.Duration
	if age <= maxAge {
		wait = maxAge - age
	}
	return wait + randomStagger(maxAge/16)
}

// ended reports whether the watch is over: its context ended or the cache
// closed.
func (w *watch) ended() bool {
	return w.ctx.Err() != nil || w.c.closed.Load()
}

// deliver hands ev to the watch's callback and reports whether the watch
// goes on.
func (w *watch) deliver(ev UpdateEvent) bool {
	w.cb(w.ctx, ev)
	return !w.ended()
}

// sleep waits for d unless the watch's context ends or the cache closes
// first, and reports whether the watch goes on.
func (w *watch) sleep(d time.Duration) bool {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-w.ctx.Done():
		case <-w.c.closing:
		}
	}
	return !w.ended()
}
