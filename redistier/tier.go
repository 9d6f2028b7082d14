package redistier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentcache/cache"
	"github.com/redis/go-redis/v9"
)

// Tier is a cache.Type that shares the results of another Type across a
// fleet through Redis; Wrap makes one. It implements cache.ContextType,
// so that a cache's cancellation reaches the fetch it runs and the waits
// for other instances' fetches. It is safe for concurrent use.
type Tier struct {
	inner   cache.Type
	rdb     redis.UniversalClient
	o       Options
	keyBase string // KeyPrefix:Name:
	channel string // where the tier's publications go

	bound   bound
	parts   partitions
	health  health
	metrics tierMetrics
	subs    *subscriber
	closed  atomic.Bool
}

var _ cache.ContextType = (*Tier)(nil)

// Wrap returns a Type that fetches through inner, sharing its results
// with every other instance that wraps the same kind of data under the
// same Options.Name in the same Redis (see the package documentation).
// Register the returned Tier with the cache in place of inner, and Close
// it after closing the cache.
//
// Wrap panics, as cache.RegisterType does, on what can only be a
// programming error: a nil inner or rdb, an empty Name, a nil Codec, a
// negative duration or a LeaseTTL below MinLeaseTTL. It does not contact
// Redis.
func Wrap(inner cache.Type, rdb redis.UniversalClient, o Options) *Tier {
	if inner == nil {
		panic("redistier: Wrap of a nil Type")
	}
	if rdb == nil {
		panic("redistier: Wrap with a nil Redis client")
	}
	o = o.normalise()
	t := &Tier{inner: inner, rdb: rdb, o: o}
	t.bound = bound{timeout: o.RedisTimeout, inline: honoursDeadlines(rdb)}
	t.keyBase = o.KeyPrefix + ":" + o.Name + ":"
	t.channel = t.keyBase + "events"
	t.metrics.init(&t.o)
	t.subs = newSubscriber(rdb, t.channel, func(err error) { t.redisFailed(&redisError{err}) })
	return t
}

// SupportsBlocking implements cache.Type: it is the wrapped Type's.
func (t *Tier) SupportsBlocking() bool { return t.inner.SupportsBlocking() }

// Fetch implements cache.Type; it is FetchContext with a background
// context.
func (t *Tier) Fetch(opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	return t.FetchContext(context.Background(), opts, r)
}

// FetchContext implements cache.ContextType. A request with an empty Key
// bypasses the cache, and so the tier: it goes to the wrapped Type.
func (t *Tier) FetchContext(ctx context.Context, opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	info := r.CacheInfo()
	if info.Key == "" || t.closed.Load() {
		return t.backend(ctx, opts, r)
	}
	if !t.health.allow(time.Now()) {
		t.metrics.incr(cFallback)
		return t.backend(ctx, opts, r)
	}
	f := &fetch{t: t, ctx: ctx, opts: opts, req: r, p: t.partition(info)}
	f.blocking = opts.MinIndex > 0 && t.inner.SupportsBlocking()
	if f.blocking && opts.Timeout > 0 {
		f.deadline = time.Now().Add(opts.Timeout)
	}
	res, err := f.run()
	if err != nil && isRedisError(err) && ctx.Err() == nil {
		t.redisFailed(err)
		t.metrics.incr(cFallback)
		return t.backend(ctx, opts, r)
	}
	return res, err
}

// Close stops the tier's subscription. Fetches after Close go to the
// wrapped Type directly. Close the cache first, so that no fetch is
// waiting on the tier. It returns nil.
func (t *Tier) Close() error {
	t.closed.Store(true)
	t.subs.close()
	return nil
}

// Stats returns the tier's counters.
func (t *Tier) Stats() Stats { return t.metrics.stats() }

// RecordKey returns the Redis key under which the tier keeps the record
// of a partition, for operators and tests. It holds no secret: the token
// is hashed into it.
func (t *Tier) RecordKey(datacenter, token, key string) string {
	return t.partition(cache.RequestInfo{Datacenter: datacenter, Token: token, Key: key}).record
}

// backend calls the wrapped Type.
func (t *Tier) backend(ctx context.Context, opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	t.metrics.incr(cBackendCall)
	if ct, ok := t.inner.(cache.ContextType); ok {
		return ct.FetchContext(ctx, opts, r)
	}
	return t.inner.Fetch(opts, r)
}

// redisFailed records a failed Redis call, logging the start of an
// outage.
func (t *Tier) redisFailed(err error) {
	if t.health.failed(time.Now()) {
		t.o.Logger.Warn("redistier: redis unreachable, fetching from the backend directly",
			"name", t.o.Name, "error", err.Error())
	}
}

// redisAnswered records a Redis call that worked, logging the end of an
// outage.
func (t *Tier) redisAnswered() {
	if d, ok := t.health.answered(time.Now()); ok {
		t.o.Logger.Info("redistier: redis answers again, sharing resumed",
			"name", t.o.Name, "outage", d.Round(time.Millisecond).String(),
			"fallbacks", t.metrics.counts[cFallback].Load())
	}
}

// newOwner returns a random lease owner; blocking tells the lease is
// taken for a blocking query, which vouches for the record meanwhile.
func newOwner(blocking bool) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	kind := "n:"
	if blocking {
		kind = "b:"
	}
	return kind + hex.EncodeToString(b[:])
}

// redact removes the token from an error message before it is published.
func redact(token, msg string) string {
	if token == "" {
		return msg
	}
	return strings.ReplaceAll(msg, token, "<redacted>")
}

// remoteError is a backend error that another instance's fetch returned.
type remoteError struct{ msg string }

func (e *remoteError) Error() string {
	return fmt.Sprintf("redistier: fetch by another instance failed: %s", e.msg)
}
