package cachehttp_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/cachehttp"
)

func TestWriteMetaHeaders(t *testing.T) {
	tests := []struct {
		name             string
		meta             cache.ResultMeta
		xCache, age, idx string
	}{
		{"zero", cache.ResultMeta{}, "MISS", "0", "0"},
		{"hit", cache.ResultMeta{Hit: true, Index: 42}, "HIT", "0", "42"},
		{"seconds", cache.ResultMeta{Age: 5 * time.Second, Index: 7}, "MISS", "5", "7"},
		{"rounded down", cache.ResultMeta{Hit: true, Age: 1400 * time.Millisecond}, "HIT", "1", "0"},
		{"rounded up", cache.ResultMeta{Hit: true, Age: 1600 * time.Millisecond}, "HIT", "2", "0"},
		{"under half a second", cache.ResultMeta{Age: 499 * time.Millisecond}, "MISS", "0", "0"},
		{"hours", cache.ResultMeta{Age: 3 * time.Hour}, "MISS", "10800", "0"},
		{"negative", cache.ResultMeta{Age: -3 * time.Second}, "MISS", "0", "0"},
		{"slightly negative", cache.ResultMeta{Age: -time.Millisecond}, "MISS", "0", "0"},
		{"max index", cache.ResultMeta{Index: 1<<64 - 1}, "MISS", "0", "18446744073709551615"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			// Stale values must be replaced, not added to.
			w.Header().Set("X-Cache", "stale")
			w.Header().Set("Age", "stale")
			w.Header().Set("X-Cache-Index", "stale")
			cachehttp.WriteMetaHeaders(w, tt.meta)
			h := w.Header()
			for name, want := range map[string]string{"X-Cache": tt.xCache, "Age": tt.age, "X-Cache-Index": tt.idx} {
				if got := h.Values(name); len(got) != 1 || got[0] != want {
					t.Errorf("%s = %q, want [%q]", name, got, want)
				}
			}
		})
	}
}
