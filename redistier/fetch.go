package redistier

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentcache/cache"
	"github.com/redis/go-redis/v9"
)

// fetch is one fetch through the tier.
type fetch struct {
	t        *Tier
	ctx      context.Context
	opts     cache.FetchOptions
	req      cache.Request
	p        *partition
	blocking bool      // MinIndex > 0 on a blocking type
	deadline time.Time // end of a blocking fetch's wait; zero: none
}

// snapshot is what one read of a partition found in Redis.
type snapshot struct {
	raw         []byte // the record's bytes; nil if none
	rec         record
	recErr      error // why rec is unusable; nil if usable
	leaseHeld   bool
	leaseBlocks bool // the lease is held for a blocking query
}

// errDown is the error of a fetch that stops using Redis because another
// call found it down.
var errDown = errors.New("marked down")

// errMissing is the recErr of a snapshot without a record.
var errMissing = errors.New("redistier: no record")

// run answers the fetch from Redis, another instance's fetch or the
// backend. An error of Redis is a *redisError: the caller then falls
// back to the backend.
func (f *fetch) run() (cache.FetchResult, error) {
	for again := false; ; again = true {
		if err := f.ctx.Err(); err != nil {
			return cache.FetchResult{}, err
		}
		if again && f.t.health.down.Load() {
			// Redis failed meanwhile (the subscription broke, say).
			return cache.FetchResult{}, &redisError{errDown}
		}
		if f.expired() {
			return f.timedOut(), nil
		}
		snap, res, ok, err := f.look()
		if err != nil || ok {
			return res, err
		}
		if !f.blocking && snap.leaseBlocks {
			// A blocking query holds the lease but cannot answer this
			// fetch before it returns, which may take minutes.
			return f.direct(snap)
		}
		owner := newOwner(f.blocking)
		l, err := f.acquire(owner, snap)
		switch {
		case err != nil:
			return cache.FetchResult{}, err
		case l.changed:
			continue // a new record: read it
		case l.won:
			return f.hold(owner)
		case !f.blocking && l.blocks:
			return f.direct(snap)
		}
		res, done, err := f.wait(l.pttl)
		if err != nil || done {
			return res, err
		}
	}
}

// leaseState is the outcome of an attempt to take the lease.
type leaseState struct {
	won     bool
	changed bool          // the record changed since the fetch read it
	pttl    time.Duration // the holder's remaining time, if not won
	blocks  bool          // the holder runs a blocking query
}

// acquire tries to take the partition's lease for owner, unless the
// record changed since snap was read: the fetch would then run for
// nothing, since the new record may answer it.
func (f *fetch) acquire(owner string, snap snapshot) (leaseState, error) {
	header := snap.raw[:min(len(snap.raw), recordHeaderCheck)]
	vals, err := bounded(f.ctx, f.t.bound, func(ctx context.Context) ([]any, error) {
		keys := []string{f.p.lease, f.p.record}
		return acquireScript.Run(ctx, f.t.rdb, keys, owner, f.t.o.LeaseTTL.Milliseconds(), header).Slice()
	})
	if err != nil {
		return leaseState{}, err
	}
	if len(vals) != 2 {
		return leaseState{}, &redisError{fmt.Errorf("acquire returned %d values", len(vals))}
	}
	pttl, _ := vals[0].(int64)
	switch pttl {
	case -1:
		return leaseState{won: true}, nil
	case -2:
		return leaseState{changed: true}, nil
	}
	holder, _ := vals[1].(string)
	return leaseState{pttl: time.Duration(pttl) * time.Millisecond, blocks: isBlockingOwner(holder)}, nil
}

// isBlockingOwner reports whether a lease owner runs a blocking query.
func isBlockingOwner(owner string) bool { return strings.HasPrefix(owner, "b:") }

// look reads the partition and serves its record if it answers the
// fetch; otherwise it returns what it read, with the lease if a
// non-blocking fetch needs it. A record that is likely to answer (a
// blocking fetch's, or one that MaxStale may let through) is read alone,
// in a single GET: the lease matters only if it does not answer, and a
// blocking fetch's first look does not use it at all.
func (f *fetch) look() (s snapshot, res cache.FetchResult, ok bool, err error) {
	leaseFirst := !f.blocking && f.t.o.MaxStale == 0
	if leaseFirst {
		s, err = f.read()
	} else {
		s, err = f.readRecord()
	}
	if err != nil {
		return s, res, false, err
	}
	if res, ok = f.serve(s); ok || f.blocking || leaseFirst {
		return s, res, ok, nil
	}
	if s.recErr != nil || !f.stale(s.rec) {
		// No record to serve (none, or one the Codec rejects): the lease
		// alone tells what to do.
		err = f.readLease(&s)
		return s, res, false, err
	}
	// A stale record may be served if a blocking query vouches for it:
	// read both at one instant.
	if s, err = f.read(); err != nil {
		return s, res, false, err
	}
	res, ok = f.serve(s)
	return s, res, ok, nil
}

// read reads the partition's record and lease.
func (f *fetch) read() (snapshot, error) {
	vals, err := bounded(f.ctx, f.t.bound, func(ctx context.Context) ([]any, error) {
		return f.t.rdb.MGet(ctx, f.p.record, f.p.lease).Result()
	})
	if err != nil {
		return snapshot{}, err
	}
	f.t.redisAnswered()
	s := snapshot{recErr: errMissing}
	if len(vals) == 2 {
		if v, ok := vals[0].(string); ok {
			f.decode(&s, v)
		}
		if v, ok := vals[1].(string); ok {
			s.leaseHeld, s.leaseBlocks = true, isBlockingOwner(v)
		}
	}
	return s, nil
}

// readRecord reads the partition's record alone.
func (f *fetch) readRecord() (snapshot, error) {
	v, err := f.get(f.p.record)
	if err != nil {
		return snapshot{}, err
	}
	s := snapshot{recErr: errMissing}
	if v != "" {
		f.decode(&s, v)
	}
	return s, nil
}

// readLease adds the partition's lease to s.
func (f *fetch) readLease(s *snapshot) error {
	v, err := f.get(f.p.lease)
	if err != nil {
		return err
	}
	s.leaseHeld, s.leaseBlocks = v != "", isBlockingOwner(v)
	return nil
}

// get returns the value of a key, "" if there is none: neither a record
// nor a lease is ever empty.
func (f *fetch) get(key string) (string, error) {
	v, err := bounded(f.ctx, f.t.bound, func(ctx context.Context) (string, error) {
		v, err := f.t.rdb.Get(ctx, key).Result()
		if err == redis.Nil {
			return "", nil
		}
		return v, err
	})
	if err != nil {
		return "", err
	}
	f.t.redisAnswered()
	return v, nil
}

// decode decodes the record v into s, counting a record it cannot use.
func (f *fetch) decode(s *snapshot, v string) {
	s.raw = []byte(v)
	s.rec, s.recErr = decodeRecord(f.p, s.raw)
	if s.recErr != nil {
		f.t.metrics.incr(cDecodeError)
	}
}

// serve returns the snapshot's record as the fetch's result, if it
// answers the fetch.
func (f *fetch) serve(s snapshot) (cache.FetchResult, bool) {
	if s.recErr != nil {
		return cache.FetchResult{}, false
	}
	if f.blocking {
		if s.rec.index <= f.opts.MinIndex {
			return cache.FetchResult{}, false
		}
	} else if !s.leaseBlocks && f.stale(s.rec) {
		return cache.FetchResult{}, false
	}
	return f.result(s.rec)
}

// stale reports whether a record is too old to answer a non-blocking
// fetch by itself.
func (f *fetch) stale(rec record) bool {
	return f.t.o.MaxStale == 0 || time.Since(rec.fetchedAt) >= f.t.o.MaxStale
}

// result decodes a record into the fetch's result, counting a shared hit.
func (f *fetch) result(rec record) (cache.FetchResult, bool) {
	v, err := f.t.o.Codec.Decode(rec.value)
	if err != nil {
		f.t.metrics.incr(cDecodeError)
		return cache.FetchResult{}, false
	}
	f.t.metrics.incr(cSharedHit)
	res := cache.FetchResult{Value: v, Index: rec.index}
	if f.opts.LastResult != nil {
		res.State = f.opts.LastResult.State
	}
	return res, true
}

// expired reports whether a blocking fetch's wait is over.
func (f *fetch) expired() bool {
	return !f.deadline.IsZero() && !time.Now().Before(f.deadline)
}

// timedOut is the result of a blocking fetch whose Timeout passed with no
// change: nothing new, as a blocking query that times out answers.
func (f *fetch) timedOut() cache.FetchResult {
	res := cache.FetchResult{NotModified: true, Index: f.opts.MinIndex}
	if f.opts.LastResult != nil {
		res.State = f.opts.LastResult.State
	}
	return res
}

// direct fetches from the backend without the lease and stores the
// result unless a newer record arrived meanwhile.
func (f *fetch) direct(s snapshot) (cache.FetchResult, error) {
	f.t.metrics.incr(cDirect)
	res, err := f.t.backend(f.ctx, f.opts, f.req)
	if err != nil {
		return res, err
	}
	if payload, ok := f.record(res); ok {
		_, err := bounded(f.ctx, f.t.bound, func(ctx context.Context) (int64, error) {
			return putScript.Run(ctx, f.t.rdb, []string{f.p.record}, payload, f.t.o.RecordTTL.Milliseconds(), s.raw).Int64()
		})
		f.t.publishFailed(err)
	}
	return res, nil
}

// record returns the bytes of the record that shares the backend's
// result res, if it has a value to share.
func (f *fetch) record(res cache.FetchResult) ([]byte, bool) {
	v, index := res.Value, res.Index
	if res.NotModified || v == nil {
		// Nothing new: share the value the entry holds, with the index
		// the cache keeps for it.
		v = nil
		if last := f.opts.LastResult; last != nil {
			v, index = last.Value, last.Index
			if res.NotModified {
				index = max(res.Index, last.Index)
			}
		}
	}
	if v == nil {
		return nil, false
	}
	b, err := f.t.o.Codec.Encode(v)
	if err != nil {
		f.t.metrics.incr(cEncodeError)
		return nil, false
	}
	return encodeRecord(f.p, index, time.Now(), b), true
}

// publishFailed counts and logs a failed write of a record or notice, if
// err is not nil.
func (t *Tier) publishFailed(err error) {
	if err == nil {
		return
	}
	t.metrics.incr(cPublishError)
	t.o.Logger.Warn("redistier: could not share a result", "name", t.o.Name, "error", err.Error())
}
