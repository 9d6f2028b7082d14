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
// time its result changes, until ctx is done. It returns at once; the watch
// runs in its own goroutine, which ends when ctx is done. ch should be
// drained promptly: the watch waits for each send.
//
// For a type that supports blocking, the watch is a loop of blocking Gets:
// the first result is always sent, then one whenever the index grows.
// Errors, and results with index 0, are retried with the same back-off as
// background refresh.
//
// A type that does not support blocking is polled instead, which needs
// RequestInfo.MaxAge > 0 (Notify returns an error otherwise). An event is
// sent when the index grows or the value changes (reflect.DeepEqual); the
// next poll comes when the value would be older than MaxAge, plus a small
// jitter so that it is stale by then and fetched anew.
//
// Notify returns an error if t is not registered or ch is nil.
func (c *Cache) Notify(ctx context.Context, t string, r Request, correlationID string, ch chan<- UpdateEvent) error {
	if ch == nil {
		return fmt.Errorf("cache: Notify of type %q: nil channel", t)
	}
	return c.NotifyCallback(ctx, t, r, correlationID, func(ctx context.Context, ev UpdateEvent) {
		select {
		case ch <- ev:
		case <-ctx.Done():
		}
	})
}

// NotifyCallback is Notify for callers that want a function called rather
// than a channel: cb receives each event, in order, from the watch's
// goroutine, together with ctx. The watch waits for cb to return before it
// looks for the next change, so cb should be quick. It returns an error if
// t is not registered or cb is nil.
func (c *Cache) NotifyCallback(ctx context.Context, t string, r Request, correlationID string, cb func(ctx context.Context, e UpdateEvent)) error {
	te := c.typeEntry(t)
	if te == nil {
		return unknownType(t)
	}
	if cb == nil {
		return fmt.Errorf("cache: NotifyCallback of type %q: nil callback", t)
	}
	info := r.CacheInfo()
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
	var index uint64
	var failures uint
	for ctx.Err() == nil {
		res, meta, err := c.getWithIndex(ctx, t, r, &info, index)
		if ctx.Err() != nil {
			return
		}
		// The first result is always sent (index is 0 only then).
		if index == 0 || index < meta.Index {
			if !deliver(ctx, cb, UpdateEvent{correlationID, res, meta, err}) {
				return
			}
			index = meta.Index
		}

		// A type that answers with index 0 would never block: back off as
		// for an error instead of spinning.
		if err == nil && meta.Index > 0 {
			failures = 0
		} else {
			failures++
		}
		if !sleep(ctx, backOffWait(failures)) {
			return
		}
		// Every later Get must block.
		if index < 1 {
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
	for ctx.Err() == nil {
		res, meta, err := c.getWithIndex(ctx, t, r, &info, index)
		if ctx.Err() != nil {
			return
		}
		if index < meta.Index || !reflect.DeepEqual(last, res) {
			if !deliver(ctx, cb, UpdateEvent{correlationID, res, meta, err}) {
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
		if !sleep(ctx, wait) {
			return
		}
	}
}

// deliver hands ev to cb and reports whether the watch goes on.
func deliver(ctx context.Context, cb func(context.Context, UpdateEvent), ev UpdateEvent) bool {
	cb(ctx, ev)
	return ctx.Err() == nil
}

// sleep waits for d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
