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
	Result interface{}
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
	if te.typ.SupportsBlocking() {
		go c.notifyBlockingQuery(ctx, t, r, info, correlationID, cb)
		return nil
	}
	if info.MaxAge == 0 {
		return errors.New("cannot use Notify for polling cache types without specifying the MaxAge")
	}
	go c.notifyPollingQuery(ctx, t, r, info, correlationID, cb)
	return nil
}

// notifyBlockingQuery is Notify's loop for blocking types.
func (c *Cache) notifyBlockingQuery(ctx context.Context, t string, r Request, info RequestInfo, correlationID string, cb func(context.Context, UpdateEvent)) {
	// index is that of the last value sent, 0 before the first. After
	// errors it stays 0, so that the Gets do not block and a first value
	// at index 1 (a new cluster) is not mistaken for an old one (Consul
	// #6521).
	var index uint64
	var failures uint
	for {
		res, meta, err := c.watchGet(ctx, t, r, &info, wanted{minIndex: index, floor: index})
		if c.watchEnded(ctx) {
			return
		}
		// The first result is always sent (index is 0 only until then),
		// then each change.
		reset := err == nil && meta.Index > 0 && meta.Index < index
		if index == 0 || index < meta.Index || reset {
			if !c.deliver(ctx, cb, UpdateEvent{correlationID, res, meta, err}) {
				return
			}
			index = meta.Index
		}

		// A type that answers with index 0 would never block: back off as
		// for an error instead of spinning. For a cached entry its fetch
		// loop does that already (see emptyFetch), and the next Get joins
		// it, so only Gets that bypass the cache back off here: two
		// back-offs would add up.
		if err == nil && (meta.Index > 0 || info.Key != "") {
			failures = 0
		} else {
			failures++
		}
		if !c.sleep(ctx, backOffWait(failures)) {
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

// notifyPollingQuery is Notify's loop for non-blocking types.
func (c *Cache) notifyPollingQuery(ctx context.Context, t string, r Request, info RequestInfo, correlationID string, cb func(context.Context, UpdateEvent)) {
	maxAge := info.MaxAge
	var index uint64
	var failures uint
	var last interface{}
	for {
		res, meta, err := c.watchGet(ctx, t, r, &info, wanted{minIndex: index})
		if c.watchEnded(ctx) {
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
			if !c.deliver(ctx, cb, UpdateEvent{correlationID, res, meta, err}) {
				return
			}
			last, index = res, meta.Index
		}

		var wait time.Duration
		if err != nil {
			failures++
			wait = backOffWait(failures)
		} else {
			failures = 0
			// Poll again when the value becomes older than MaxAge, at once
			// if it already is. The jitter makes sure it is stale by then,
			// so that the next Get fetches rather than hits.
			if meta.Age <= maxAge {
				wait = maxAge - meta.Age
			}
			wait += randomStagger(maxAge / 16)
		}
		if !c.sleep(ctx, wait) {
			return
		}
	}
}

// watchEnded reports whether a watch is over: its context ended or the
// cache closed.
func (c *Cache) watchEnded(ctx context.Context) bool {
	return ctx.Err() != nil || c.closed.Load()
}

// deliver hands ev to cb and reports whether the watch goes on.
func (c *Cache) deliver(ctx context.Context, cb func(context.Context, UpdateEvent), ev UpdateEvent) bool {
	cb(ctx, ev)
	return !c.watchEnded(ctx)
}

// sleep waits for d unless ctx ends or the cache closes first, and
// reports whether the watch goes on.
func (c *Cache) sleep(ctx context.Context, d time.Duration) bool {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-c.closing:
		}
	}
	return !c.watchEnded(ctx)
}
