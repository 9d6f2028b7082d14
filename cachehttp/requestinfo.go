package cachehttp

import (
	"errors"
	"net/http"

	"github.com/agentcache/cache"
)

// ApplyRequestInfo parses the Cache-Control header fields of h, as
// ParseCacheControl does, and sets the MaxAge and MustRevalidate fields of
// ri from them. Directives that are absent leave their field as it is, so
// ri may carry defaults; the other fields of ri are never touched.
//
// max-age=N sets MaxAge to N seconds and must-revalidate sets
// MustRevalidate. max-age=0 says that no cached value is fresh enough, but
// a MaxAge of 0 means "any age" to the cache, so it sets MaxAge to 0 and
// MustRevalidate to true: the value is fetched again before it is served.
// stale-if-error does not belong in a RequestInfo and is ignored here; see
// Handler.
//
// It returns an error, leaving ri unchanged, if the header is malformed or
// ri is nil.
func ApplyRequestInfo(h http.Header, ri *cache.RequestInfo) error {
	if ri == nil {
		return errors.New("cachehttp: ApplyRequestInfo with a nil RequestInfo")
	}
	d, err := ParseCacheControl(h)
	if err != nil {
		return err
	}
	applyDirectives(d, ri)
	return nil
}

// applyDirectives sets the fields of ri that d gives.
func applyDirectives(d Directives, ri *cache.RequestInfo) {
	if d.HasMaxAge {
		ri.MaxAge = d.MaxAge
		if d.MaxAge == 0 {
			ri.MustRevalidate = true
		}
	}
	if d.MustRevalidate {
		ri.MustRevalidate = true
	}
}
