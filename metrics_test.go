package cache

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Pins: skipping the untouched global blackhole is decided per metric, not
// once: a global sink installed after New receives the cache's metrics.
func TestMetrics_globalSinkInstalledAfterNew(t *testing.T) {
	c := TestCache(t)
	typ := TestType(t)
	typ.Static(FetchResult{Value: 1, Index: 1}, nil)
	c.RegisterType("late", typ, nil)
	_, _, err := c.Get("late", TestRequest(t, RequestInfo{Key: "k"}))
	require.NoError(t, err)

	sink := cacheInstallSink(t) // global metrics: not parallel
	_, meta, err := c.Get("late", TestRequest(t, RequestInfo{Key: "k"}))
	require.NoError(t, err)
	require.True(t, meta.Hit)
	require.Equal(t, 1, cacheCounter(sink, "consul.cache.late.hit"))
}
