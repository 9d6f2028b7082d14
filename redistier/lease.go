package redistier

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/agentcache/cache"
)

// hold runs the backend fetch under the lease owner holds, then shares
// its outcome: the record, or the error, is published to the waiting
// instances and the lease released, in one script.
func (f *fetch) hold(owner string) (cache.FetchResult, error) {
	f.t.metrics.incr(cLeaseWin)
	stop := f.keepLease(owner)
	res, err := f.t.backend(f.ctx, f.opts, f.req)
	stop()
	switch {
	case f.ctx.Err() != nil:
		// Nobody needs the result; keepLease released the lease.
	case err != nil:
		f.commit(owner, nil, kindError, []byte(redact(f.p.token, err.Error())))
	default:
		payload, ok := f.record(res)
		if ok {
			// The MinIndex the backend answered tells waiters whether
			// the record answers their question (see notice).
			f.commit(owner, payload, kindRecord, binary.BigEndian.AppendUint64(nil, f.opts.MinIndex))
		} else {
			f.commit(owner, nil, kindNone, nil)
		}
	}
	return res, err
}

// keepLease renews the lease every third of LeaseTTL until the returned
// function is called. If the fetch's context ends first, it releases the
// lease at once, so that another instance takes over without waiting for
// it to expire.
func (f *fetch) keepLease(owner string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(f.t.o.LeaseTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-f.ctx.Done():
				f.commit(owner, nil, kindNone, nil)
				return
			case <-tick.C:
				if !f.renew(owner) {
					return
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// renew extends the lease and reports whether renewing should go on: not
// once another owner has it. A failed call is retried at the next tick;
// if Redis stays away, the lease expires and the commit finds it gone.
func (f *fetch) renew(owner string) bool {
	n, err := bounded(f.ctx, f.t.bound, func(ctx context.Context) (int64, error) {
		return renewScript.Run(ctx, f.t.rdb, []string{f.p.lease}, owner, f.t.o.LeaseTTL.Milliseconds()).Int64()
	})
	if err == nil && n == 0 {
		f.t.metrics.incr(cLeaseLost)
		return false
	}
	return true
}

// commit ends the lease: if owner still holds it, it stores payload as
// the record (unless nil), releases the lease and publishes a notice of
// the given kind, followed by the record or body. It runs even when the
// fetch's context has ended.
func (f *fetch) commit(owner string, payload []byte, kind byte, body []byte) {
	msg := make([]byte, 0, publishIDLen+len(body))
	msg = append(append(append(msg, f.p.id[:]...), kind), body...)
	ctx := context.WithoutCancel(f.ctx)
	n, err := bounded(ctx, f.t.bound, func(ctx context.Context) (int64, error) {
		keys := []string{f.p.lease, f.p.record}
		return commitScript.Run(ctx, f.t.rdb, keys, owner, payload, f.t.o.RecordTTL.Milliseconds(), f.t.channel, msg).Int64()
	})
	switch {
	case err != nil:
		f.t.publishFailed(err)
	case n == 0:
		f.t.metrics.incr(cLeaseLost)
	}
}

// wait waits for the fetch of the instance holding the lease, whose
// remaining time is pttl. It reports done with the fetch's result, or
// not done when the fetch should look again (the lease was released
// without a record, expired, or may have).
func (f *fetch) wait(pttl time.Duration) (res cache.FetchResult, done bool, err error) {
	w, err := f.t.subs.add(f.ctx, f.p.id, f.t.o.RedisTimeout)
	if err != nil {
		return cache.FetchResult{}, false, err
	}
	defer f.t.subs.remove(w)
	f.t.metrics.incr(cWait)
	// Registered first, then looked: a publication that came before the
	// registration is in Redis now, and one after it reaches w.
	snap, err := f.read()
	if err != nil {
		return cache.FetchResult{}, false, err
	}
	if res, ok := f.serve(snap); ok {
		return res, true, nil
	}
	if !snap.leaseHeld {
		return cache.FetchResult{}, false, nil
	}
	// Look again when the lease would expire if its holder died now.
	recheck := time.NewTimer(min(max(pttl, 0), f.t.o.LeaseTTL) + 10*time.Millisecond)
	defer recheck.Stop()
	var deadline <-chan time.Time
	if !f.deadline.IsZero() {
		dt := time.NewTimer(time.Until(f.deadline))
		defer dt.Stop()
		deadline = dt.C
	}
	select {
	case n := <-w.ch:
		return f.notice(n)
	case <-recheck.C:
		return cache.FetchResult{}, false, nil
	case <-deadline:
		return f.timedOut(), true, nil
	case <-f.ctx.Done():
		return cache.FetchResult{}, true, f.ctx.Err()
	}
}

// notice turns a publication into the fetch's outcome.
func (f *fetch) notice(n notice) (cache.FetchResult, bool, error) {
	switch n.kind {
	case kindRecord:
		if len(n.body) < 8 {
			f.t.metrics.incr(cDecodeError)
			return cache.FetchResult{}, false, nil
		}
		asked := binary.BigEndian.Uint64(n.body)
		rec, err := decodeRecord(f.p, n.body[8:])
		if err != nil {
			f.t.metrics.incr(cDecodeError)
			return cache.FetchResult{}, false, nil
		}
		if !f.answers(rec, asked) {
			return cache.FetchResult{}, false, nil
		}
		res, ok := f.result(rec)
		return res, ok, nil
	case kindError:
		f.t.metrics.incr(cRemoteError)
		return cache.FetchResult{}, true, &remoteError{msg: string(n.body)}
	}
	return cache.FetchResult{}, false, nil
}

// answers reports whether a published record, fetched by a query with
// MinIndex asked, answers this fetch. A publication may arrive late, after
// this fetch read a newer record, so it must not take the entry back: a
// blocking fetch takes a newer index, or the answer to its very question
// (the same index after a timeout, a lower one after a reset); a
// non-blocking fetch takes any index not below the entry's.
func (f *fetch) answers(rec record, asked uint64) bool {
	if f.blocking {
		return rec.index > f.opts.MinIndex || asked == f.opts.MinIndex
	}
	return f.opts.LastResult == nil || rec.index >= f.opts.LastResult.Index
}
