package cachehttp_test

import (
	"testing"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/cachehttp"
)

func TestApplyRequestInfo(t *testing.T) {
	base := cache.RequestInfo{Token: "t", Key: "k", Datacenter: "dc1", MinIndex: 4, Timeout: time.Minute}
	withDefaults := base
	withDefaults.MaxAge = time.Hour
	withDefaults.MustRevalidate = true

	tests := []struct {
		name  string
		lines []string
		in    cache.RequestInfo
		want  cache.RequestInfo
	}{
		{"no header", nil, base, base},
		{"no header keeps defaults", nil, withDefaults, withDefaults},
		{"max-age", []string{"max-age=30"}, base, with(base, 30*time.Second, false)},
		{"max-age replaces default", []string{"max-age=30"}, withDefaults, with(base, 30*time.Second, true)},
		{"max-age=0 revalidates", []string{"max-age=0"}, base, with(base, 0, true)},
		{"max-age=0 replaces default", []string{"max-age=0"}, with(base, time.Hour, false), with(base, 0, true)},
		{"must-revalidate", []string{"must-revalidate"}, base, with(base, 0, true)},
		{"both", []string{"max-age=5, must-revalidate"}, base, with(base, 5*time.Second, true)},
		{"stale-if-error ignored", []string{"stale-if-error=5"}, base, base},
		{"unknown ignored", []string{"no-cache"}, base, base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ri := tt.in
			if err := cachehttp.ApplyRequestInfo(header(tt.lines...), &ri); err != nil {
				t.Fatalf("ApplyRequestInfo(%q): %v", tt.lines, err)
			}
			if ri != tt.want {
				t.Errorf("ApplyRequestInfo(%q) gave %+v, want %+v", tt.lines, ri, tt.want)
			}
		})
	}
}

// with returns ri with MaxAge and MustRevalidate set.
func with(ri cache.RequestInfo, maxAge time.Duration, mustRevalidate bool) cache.RequestInfo {
	ri.MaxAge = maxAge
	ri.MustRevalidate = mustRevalidate
	return ri
}

func TestApplyRequestInfoError(t *testing.T) {
	in := cache.RequestInfo{Key: "k", MaxAge: time.Minute}
	for _, lines := range [][]string{
		{"max-age=x"},
		{"max-age=0, must-revalidate=1"},
		{"max-age=0", "max-age=1"},
	} {
		ri := in
		if err := cachehttp.ApplyRequestInfo(header(lines...), &ri); err == nil {
			t.Errorf("ApplyRequestInfo(%q) succeeded, want an error", lines)
		}
		if ri != in {
			t.Errorf("ApplyRequestInfo(%q) changed the RequestInfo to %+v on error", lines, ri)
		}
	}
}

func TestApplyRequestInfoNil(t *testing.T) {
	if err := cachehttp.ApplyRequestInfo(header("max-age=1"), nil); err == nil {
		t.Error("ApplyRequestInfo with a nil RequestInfo succeeded, want an error")
	}
}
