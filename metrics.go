package cache

import (
	metrics "github.com/armon/go-metrics"
)

// cacheMetrics sends a cache's metrics to its go-metrics instance. Every
// name is built once, with the cache's prefix, so that emitting allocates
// nothing.
type cacheMetrics struct {
	m      *metrics.Metrics // nil: the global instance; fixed by New
	prefix []string

	bypass, fetchSuccess, fetchError, fetchPanic []string
	evictExpired, evictSize, entriesCount        []string
}

// typeKeys are a type's metric names.
type typeKeys struct {
	hit, missNew, missBlock              []string
	fetchSuccess, fetchError, fetchPanic []string
	fetchNotModified, fetchErrorTerminal []string
}

// defaultMetricsPrefix keeps the seed's metric names.
var defaultMetricsPrefix = []string{"consul", "cache"}

// init sets the metrics up for a cache with the options o.
func (cm *cacheMetrics) init(o *Options) {
	cm.m = o.Metrics
	cm.prefix = o.MetricsPrefix
	if cm.prefix == nil {
		cm.prefix = defaultMetricsPrefix
	}
	cm.bypass = cm.key("bypass")
	cm.fetchSuccess = cm.key("fetch_success")
	cm.fetchError = cm.key("fetch_error")
	cm.fetchPanic = cm.key("fetch_panic")
	cm.evictExpired = cm.key("evict_expired")
	cm.evictSize = cm.key("evict_size")
	cm.entriesCount = cm.key("entries_count")
}

// typeKeys returns the metric names of the type registered as name.
func (cm *cacheMetrics) typeKeys(name string) typeKeys {
	return typeKeys{
		hit:          cm.key(name, "hit"),
		missNew:      cm.key(name, "miss_new"),
		missBlock:    cm.key(name, "miss_block"),
		fetchSuccess: cm.key(name, "fetch_success"),
		fetchError:   cm.key(name, "fetch_error"),
		fetchPanic:   cm.key(name, "fetch_panic"),

		fetchNotModified:   cm.key(name, "fetch_not_modified"),
		fetchErrorTerminal: cm.key(name, "fetch_error_terminal"),
	}
}

// key returns the prefix followed by parts, in a slice of its own.
func (cm *cacheMetrics) key(parts ...string) []string {
	k := make([]string, 0, len(cm.prefix)+len(parts))
	k = append(k, cm.prefix...)
	return append(k, parts...)
}

// blackhole is the global go-metrics instance that go-metrics starts with:
// it discards everything. While it is still the global instance, emitting
// to it is skipped, which keeps its filter lock, shared by every caller,
// off the hit path.
var blackhole = metrics.Default()

// sink returns where metrics go, or nil if nowhere.
func (cm *cacheMetrics) sink() *metrics.Metrics {
	if cm.m != nil {
		return cm.m
	}
	if m := metrics.Default(); m != blackhole {
		return m
	}
	return nil
}

func (cm *cacheMetrics) incr(key []string) {
	if m := cm.sink(); m != nil {
		m.IncrCounter(key, 1)
	}
}

func (cm *cacheMetrics) gauge(key []string, v float32) {
	if m := cm.sink(); m != nil {
		m.SetGauge(key, v)
	}
}
