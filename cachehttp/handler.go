package cachehttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/agentcache/cache"
)

// Handler is an http.Handler that serves values of one type of a cache as
// JSON, honouring the client's Cache-Control request header.
type Handler struct {
	// Cache is the cache to serve values from.
	Cache *cache.Cache

	// Type is the name of the type of the values, as registered with
	// Cache.RegisterType.
	Type string

	// Request builds the cache request for an HTTP request. info holds the
	// MaxAge and MustRevalidate that the Cache-Control header asks for (see
	// ApplyRequestInfo); the request's CacheInfo should return them, along
	// with its own Key, Token, Datacenter and so on. An error is reported
	// to the client as a bad request.
	Request func(r *http.Request, info cache.RequestInfo) (cache.Request, error)
}

// ServeHTTP serves the value for r. It answers:
//
//   - 405 Method Not Allowed, with an Allow header, to methods other than
//     GET and HEAD;
//   - 400 Bad Request to a malformed Cache-Control header or when Request
//     returns an error;
//   - 200 OK with the JSON encoding of the value and the headers of
//     WriteMetaHeaders when the cache returns it. A blocking Get that times
//     out before the first value arrives has no value and no error: its
//     body is null;
//   - 200 OK with an older value, as above, when the cache returns an
//     error together with that value, the Cache-Control header has
//     stale-if-error=N with N > 0, and the value's Age is no more than N
//     seconds. This holds for any error, a timeout included. It comes
//     into play with max-age: a must-revalidate request whose fetch fails
//     is served the cached value without an error (the cache's rule: only
//     its first look is a miss), as a plain 200;
//   - otherwise 504 Gateway Timeout for an error that is (or wraps)
//     context.DeadlineExceeded, and 500 Internal Server Error for other
//     errors, including a value that cannot be encoded.
//
// Error responses have the JSON body {"error": "..."}. A HEAD request gets
// the headers a GET would, without the body.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, http.StatusMethodNotAllowed, fmt.Errorf("cachehttp: method %s not allowed", r.Method))
		return
	}
	if h.Cache == nil || h.Request == nil {
		writeError(w, r, http.StatusInternalServerError, errors.New("cachehttp: Handler needs a Cache and a Request func"))
		return
	}

	d, err := ParseCacheControl(r.Header)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, err)
		return
	}
	var info cache.RequestInfo
	applyDirectives(d, &info)
	req, err := h.Request(r, info)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, err)
		return
	}
	if req == nil {
		writeError(w, r, http.StatusInternalServerError, errors.New("cachehttp: Request returned a nil request"))
		return
	}

	v, meta, err := h.Cache.GetContext(r.Context(), h.Type, req)
	if err != nil && !(d.StaleIfError > 0 && v != nil && meta.Age <= d.StaleIfError) {
		code := http.StatusInternalServerError
		if errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusGatewayTimeout
		}
		writeError(w, r, code, err)
		return
	}

	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, r, http.StatusInternalServerError, fmt.Errorf("cachehttp: encoding the value: %w", err))
		return
	}
	WriteMetaHeaders(w, meta)
	writeJSON(w, r, http.StatusOK, body)
}

// writeError writes err as the JSON body {"error": "..."} with the status
// code.
func writeError(w http.ResponseWriter, r *http.Request, code int, err error) {
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{err.Error()}) // a struct of a string always encodes
	writeJSON(w, r, code, body)
}

// writeJSON writes the JSON body, followed by a newline, with the status
// code; a HEAD request gets the headers only.
func writeJSON(w http.ResponseWriter, r *http.Request, code int, body []byte) {
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}
