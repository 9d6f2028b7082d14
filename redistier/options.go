package redistier

import (
	"cmp"
	"fmt"
	"log/slog"
	"time"

	metrics "github.com/armon/go-metrics"
)

// Defaults for the zero fields of Options.
const (
	DefaultKeyPrefix    = "agentcache"
	DefaultLeaseTTL     = 5 * time.Second
	DefaultRecordTTL    = 72 * time.Hour
	DefaultRedisTimeout = 500 * time.Millisecond

	// MinLeaseTTL is the shortest LeaseTTL Wrap accepts: the lease is
	// renewed every third of it, and Redis counts in milliseconds.
	MinLeaseTTL = 30 * time.Millisecond
)

// probeInterval is how often, while Redis is down, one fetch tries it
// again instead of going straight to the backend.
const probeInterval = time.Second

// Options configure a tier. Name and Codec are required.
type Options struct {
	// Name names the shared data in Redis: it is part of every key and of
	// the hashed partition, so tiers of different Names never share a
	// record. Use the name the type is registered under, so that the
	// tier's metrics sit next to the cache's. Every instance of the fleet
	// must use the same Name, Codec, KeyPrefix and Secret for a type.
	Name string

	// Codec encodes the values of the type for Redis.
	Codec Codec

	// KeyPrefix starts every Redis key and channel name. Empty means
	// DefaultKeyPrefix.
	KeyPrefix string

	// Secret, if set, keys the HMACs that name records in Redis, so that
	// someone who can read Redis cannot test guessed tokens against the
	// key names. It must be the same on every instance.
	Secret []byte

	// LeaseTTL is how long a lease outlives the last renewal of its
	// holder: after a holder dies, another instance takes over within it.
	// Zero means DefaultLeaseTTL; other values below MinLeaseTTL panic.
	LeaseTTL time.Duration

	// MaxStale is how old (by its fetch time) a shared record may be and
	// still answer a non-blocking fetch. Zero means that a non-blocking
	// fetch is answered from Redis only while a blocking query in flight
	// somewhere in the fleet vouches for the record; otherwise it shares
	// one fetch with the other instances asking at the same time. Clocks
	// of the fleet are assumed to agree to well within MaxStale.
	MaxStale time.Duration

	// RecordTTL is how long Redis keeps a record after it was last
	// written. Zero means DefaultRecordTTL.
	RecordTTL time.Duration

	// RedisTimeout bounds every Redis call. Zero means
	// DefaultRedisTimeout. A go-redis client with ContextTimeoutEnabled
	// (and socket deadlines on) ends a call at this deadline by itself;
	// the calls of any other client run in a goroutine each, which costs
	// a shared hit more.
	RedisTimeout time.Duration

	// Logger receives one line when Redis becomes unreachable and one
	// when it answers again, and failures to write records. ACL tokens are
	// never logged. Nil discards everything.
	Logger *slog.Logger

	// MetricsPrefix is put before the tier's metric names, as
	// cache.Options.MetricsPrefix is before the cache's. Nil means
	// {"consul", "cache"}.
	MetricsPrefix []string

	// Metrics is the go-metrics instance to report to. Nil means the
	// global one.
	Metrics *metrics.Metrics
}

// normalise checks o and fills in the defaults. It panics, as
// cache.RegisterType does, on what can only be a programming error.
func (o Options) normalise() Options {
	if o.Name == "" {
		panic("redistier: Options.Name is empty")
	}
	if o.Codec == nil {
		panic(fmt.Sprintf("redistier: Options.Codec is nil for %q", o.Name))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"LeaseTTL", o.LeaseTTL}, {"MaxStale", o.MaxStale}, {"RecordTTL", o.RecordTTL}, {"RedisTimeout", o.RedisTimeout}} {
		if d.v < 0 {
			panic(fmt.Sprintf("redistier: Options.%s is negative (%s) for %q", d.name, d.v, o.Name))
		}
	}
	if o.LeaseTTL > 0 && o.LeaseTTL < MinLeaseTTL {
		panic(fmt.Sprintf("redistier: Options.LeaseTTL %s is below %s for %q", o.LeaseTTL, MinLeaseTTL, o.Name))
	}
	o.KeyPrefix = cmp.Or(o.KeyPrefix, DefaultKeyPrefix)
	o.LeaseTTL = cmp.Or(o.LeaseTTL, DefaultLeaseTTL)
	o.RecordTTL = cmp.Or(o.RecordTTL, DefaultRecordTTL)
	o.RedisTimeout = cmp.Or(o.RedisTimeout, DefaultRedisTimeout)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MetricsPrefix == nil {
		o.MetricsPrefix = []string{"consul", "cache"}
	}
	return o
}
