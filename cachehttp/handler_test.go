package cachehttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/cachehttp"
)

// item is the value the test backend returns: Fetch counts its fetches.
type item struct {
	Fetch int `json:"fetch"`
}

// backend is a non-blocking type whose fetches the test controls.
type backend struct {
	mu    sync.Mutex
	calls int
	err   error         // if set, fetches fail with it
	block chan struct{} // if set, fetches wait until it is closed
	value any           // if set, fetches return it instead of an item
}

func (b *backend) fetch(cache.FetchOptions, cache.Request) (cache.FetchResult, error) {
	b.mu.Lock()
	b.calls++
	n, err, block, value := b.calls, b.err, b.block, b.value
	b.mu.Unlock()
	if block != nil {
		<-block
	}
	if err != nil {
		return cache.FetchResult{}, err
	}
	if value == nil {
		value = item{Fetch: n}
	}
	return cache.FetchResult{Value: value, Index: uint64(n)}, nil
}

func (b *backend) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.err = err
}

func (b *backend) fetches() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

// newHandler returns a Handler for a type fetched by b, on a new cache
// that is closed when the test ends. The request key is the URL path.
func newHandler(t *testing.T, b *backend) *cachehttp.Handler {
	t.Helper()
	c := cache.New(nil)
	t.Cleanup(func() { c.Close() })
	c.RegisterType("items", cache.FetchFunc(b.fetch), nil)
	return &cachehttp.Handler{
		Cache: c,
		Type:  "items",
		Request: func(r *http.Request, info cache.RequestInfo) (cache.Request, error) {
			info.Key = r.URL.Path
			return info, nil
		},
	}
}

// do serves a request with the given method, path and Cache-Control lines.
func do(h http.Handler, method, path string, cacheControl ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	for _, v := range cacheControl {
		r.Header.Add("Cache-Control", v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func get(h http.Handler, path string, cacheControl ...string) *httptest.ResponseRecorder {
	return do(h, http.MethodGet, path, cacheControl...)
}

// checkValue fails the test unless w is a 200 response with the given
// cache headers and the JSON of item{fetch}.
func checkValue(t *testing.T, w *httptest.ResponseRecorder, xCache string, age, fetch int) {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %q", w.Code, w.Body)
	}
	want := map[string]string{
		"X-Cache":       xCache,
		"Age":           strconv.Itoa(age),
		"X-Cache-Index": strconv.Itoa(fetch),
		"Content-Type":  "application/json",
	}
	for name, v := range want {
		if got := w.Header().Get(name); got != v {
			t.Errorf("%s = %q, want %q", name, got, v)
		}
	}
	var got item
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	if got.Fetch != fetch {
		t.Errorf("body is the value of fetch %d, want fetch %d", got.Fetch, fetch)
	}
}

// checkError fails the test unless w is an error response with the given
// status and a JSON error that contains msg.
func checkError(t *testing.T, w *httptest.ResponseRecorder, code int, msg string) {
	t.Helper()
	if w.Code != code {
		t.Fatalf("status = %d, want %d; body %q", w.Code, code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	if len(body) != 1 || !strings.Contains(body["error"], msg) {
		t.Errorf("body = %q, want only an error containing %q", w.Body, msg)
	}
	if xc := w.Header().Get("X-Cache"); xc != "" {
		t.Errorf("X-Cache = %q on an error", xc)
	}
}

func checkFetches(t *testing.T, b *backend, want int) {
	t.Helper()
	if got := b.fetches(); got != want {
		t.Errorf("%d fetches, want %d", got, want)
	}
}

func TestHandlerHitMiss(t *testing.T) {
	b := &backend{}
	h := newHandler(t, b)

	checkValue(t, get(h, "/a"), "MISS", 0, 1)
	checkValue(t, get(h, "/a"), "HIT", 0, 1)
	checkValue(t, get(h, "/a", "max-age=60, stale-if-error=60, no-cache"), "HIT", 0, 1)
	checkValue(t, get(h, "/b"), "MISS", 0, 2)
	checkValue(t, get(h, "/b"), "HIT", 0, 2)
	checkFetches(t, b, 2)
}

func TestHandlerMaxAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &backend{}
		h := newHandler(t, b)

		checkValue(t, get(h, "/a"), "MISS", 0, 1)
		time.Sleep(10 * time.Second)
		checkValue(t, get(h, "/a"), "HIT", 10, 1)
		checkValue(t, get(h, "/a", "max-age=10"), "HIT", 10, 1)
		checkValue(t, get(h, "/a", "max-age=9"), "MISS", 0, 2)
		checkValue(t, get(h, "/a"), "HIT", 0, 2)
		time.Sleep(1500 * time.Millisecond)
		checkValue(t, get(h, "/a", "max-age=5"), "HIT", 2, 2) // 1.5 s rounds to 2
		checkFetches(t, b, 2)
	})
}

func TestHandlerMaxAgeZero(t *testing.T) {
	b := &backend{}
	h := newHandler(t, b)

	checkValue(t, get(h, "/a"), "MISS", 0, 1)
	checkValue(t, get(h, "/a", "max-age=0"), "MISS", 0, 2)
	checkValue(t, get(h, "/a", `max-age="0"`), "MISS", 0, 3)
	checkValue(t, get(h, "/a"), "HIT", 0, 3)
}

func TestHandlerMustRevalidate(t *testing.T) {
	b := &backend{}
	h := newHandler(t, b)

	checkValue(t, get(h, "/a"), "MISS", 0, 1)
	checkValue(t, get(h, "/a", "must-revalidate"), "MISS", 0, 2)
	checkValue(t, get(h, "/a"), "HIT", 0, 2)
	checkValue(t, get(h, "/a", "max-age=3600", "Must-Revalidate"), "MISS", 0, 3)
	checkFetches(t, b, 3)
}

// TestHandlerMustRevalidateFailure pins the cache's own rule for a failed
// revalidation (kept from Consul's cache): only the first look is a miss,
// so once the fetch has been tried, even in vain, the cached value is
// served, without an error and with its Age. stale-if-error plays no part.
func TestHandlerMustRevalidateFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &backend{}
		h := newHandler(t, b)

		checkValue(t, get(h, "/a"), "MISS", 0, 1)
		time.Sleep(30 * time.Second)
		b.fail(errors.New("backend down"))

		checkValue(t, get(h, "/a", "must-revalidate"), "MISS", 30, 1)
		checkValue(t, get(h, "/a", "must-revalidate, stale-if-error=10"), "MISS", 30, 1)
		checkFetches(t, b, 3)

		b.fail(nil)
		checkValue(t, get(h, "/a", "must-revalidate"), "MISS", 0, 4)
	})
}

func TestHandlerStaleIfErrorMaxAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &backend{}
		h := newHandler(t, b)

		checkValue(t, get(h, "/a"), "MISS", 0, 1)
		time.Sleep(30 * time.Second)
		b.fail(errors.New("backend down"))

		// The value is older than max-age, so it is fetched again, and
		// that fails.
		checkError(t, get(h, "/a", "max-age=10"), http.StatusInternalServerError, "backend down")
		checkError(t, get(h, "/a", "max-age=10, stale-if-error=29"), http.StatusInternalServerError, "backend down")
		checkValue(t, get(h, "/a", "max-age=10, stale-if-error=30"), "MISS", 30, 1)
		checkValue(t, get(h, "/a", "max-age=0, stale-if-error=60"), "MISS", 30, 1)
		// Fresh enough for max-age: a hit, whatever the backend does.
		checkValue(t, get(h, "/a", "max-age=30"), "HIT", 30, 1)
		checkFetches(t, b, 5)
	})
}

func TestHandlerStaleIfErrorWithoutValue(t *testing.T) {
	b := &backend{err: errors.New("backend down")}
	h := newHandler(t, b)
	checkError(t, get(h, "/a", "stale-if-error=60"), http.StatusInternalServerError, "backend down")
}

func TestHandlerContextErrors(t *testing.T) {
	b := &backend{block: make(chan struct{})}
	h := newHandler(t, b)
	t.Cleanup(func() { close(b.block) }) // runs before the cache closes

	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, tt := range []struct {
		ctx  context.Context
		code int
	}{
		{expired, http.StatusGatewayTimeout},
		{canceled, http.StatusInternalServerError},
	} {
		r := httptest.NewRequest(http.MethodGet, "/a", nil).WithContext(tt.ctx)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		checkError(t, w, tt.code, tt.ctx.Err().Error())
	}
}

func TestHandlerDeadlineStaleIfError(t *testing.T) {
	b := &backend{}
	h := newHandler(t, b)
	checkValue(t, get(h, "/a"), "MISS", 0, 1)

	b.mu.Lock()
	b.block = make(chan struct{})
	b.mu.Unlock()
	t.Cleanup(func() { close(b.block) })

	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	for _, tt := range []struct {
		cacheControl string
		code         int
	}{
		{"must-revalidate", http.StatusGatewayTimeout},
		{"must-revalidate, stale-if-error=60", http.StatusOK},
	} {
		r := httptest.NewRequest(http.MethodGet, "/a", nil).WithContext(expired)
		r.Header.Set("Cache-Control", tt.cacheControl)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if tt.code == http.StatusOK {
			checkValue(t, w, "MISS", 0, 1)
		} else {
			checkError(t, w, tt.code, context.DeadlineExceeded.Error())
		}
	}
}

func TestHandlerTimeoutWithoutValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &backend{block: make(chan struct{})}
		h := newHandler(t, b)
		t.Cleanup(func() { close(b.block) })
		h.Request = func(r *http.Request, info cache.RequestInfo) (cache.Request, error) {
			info.Key = r.URL.Path
			info.Timeout = time.Second
			return info, nil
		}

		w := get(h, "/a")
		if w.Code != http.StatusOK || w.Body.String() != "null\n" {
			t.Fatalf("got %d %q, want 200 %q", w.Code, w.Body, "null\n")
		}
		for name, want := range map[string]string{"X-Cache": "MISS", "Age": "0", "X-Cache-Index": "0", "Content-Type": "application/json"} {
			if got := w.Header().Get(name); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
	})
}

func TestHandlerMethods(t *testing.T) {
	b := &backend{}
	h := newHandler(t, b)
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions} {
		w := do(h, m, "/a")
		checkError(t, w, http.StatusMethodNotAllowed, m)
		if allow := w.Header().Get("Allow"); allow != "GET, HEAD" {
			t.Errorf("%s: Allow = %q, want %q", m, allow, "GET, HEAD")
		}
	}
	checkFetches(t, b, 0)
}

func TestHandlerHead(t *testing.T) {
	b := &backend{}
	h := newHandler(t, b)

	w := do(h, http.MethodHead, "/a")
	if w.Code != http.StatusOK || w.Body.Len() != 0 {
		t.Fatalf("HEAD: got %d %q, want 200 and no body", w.Code, w.Body)
	}
	if xc := w.Header().Get("X-Cache"); xc != "MISS" {
		t.Errorf("HEAD: X-Cache = %q, want MISS", xc)
	}
	g := get(h, "/a")
	checkValue(t, g, "HIT", 0, 1)
	if got, want := w.Header().Get("Content-Length"), strconv.Itoa(g.Body.Len()); got != want {
		t.Errorf("HEAD: Content-Length = %q, want %q as for GET", got, want)
	}

	w = do(h, http.MethodHead, "/a", "max-age=x")
	if w.Code != http.StatusBadRequest || w.Body.Len() != 0 {
		t.Errorf("HEAD with a bad header: got %d %q, want 400 and no body", w.Code, w.Body)
	}
}

func TestHandlerBadCacheControl(t *testing.T) {
	b := &backend{}
	h := newHandler(t, b)
	called := false
	h.Request = func(*http.Request, cache.RequestInfo) (cache.Request, error) {
		called = true
		return cache.RequestInfo{Key: "k"}, nil
	}
	for _, cc := range []string{"max-age=-1", "max-age", "must-revalidate=yes", "stale-if-error=1.5", `x="open`} {
		checkError(t, get(h, "/a", cc), http.StatusBadRequest, "Cache-Control")
	}
	if called {
		t.Error("Request was called for a malformed header")
	}
	checkFetches(t, b, 0)
}

func TestHandlerRequestInfo(t *testing.T) {
	b := &backend{}
	h := newHandler(t, b)
	tests := []struct {
		cacheControl []string
		want         cache.RequestInfo
	}{
		{nil, cache.RequestInfo{}},
		{[]string{"max-age=7", "must-revalidate"}, cache.RequestInfo{MaxAge: 7 * time.Second, MustRevalidate: true}},
		{[]string{"max-age=0"}, cache.RequestInfo{MustRevalidate: true}},
		{[]string{"stale-if-error=5"}, cache.RequestInfo{}},
	}
	for _, tt := range tests {
		var got cache.RequestInfo
		h.Request = func(r *http.Request, info cache.RequestInfo) (cache.Request, error) {
			got = info
			info.Key = "k"
			return info, nil
		}
		get(h, "/a", tt.cacheControl...)
		if got != tt.want {
			t.Errorf("Cache-Control %q: Request got %+v, want %+v", tt.cacheControl, got, tt.want)
		}
	}
}

func TestHandlerRequestError(t *testing.T) {
	b := &backend{}
	h := newHandler(t, b)
	h.Request = func(*http.Request, cache.RequestInfo) (cache.Request, error) {
		return nil, errors.New("missing parameter name")
	}
	checkError(t, get(h, "/a"), http.StatusBadRequest, "missing parameter name")
	checkFetches(t, b, 0)
}

func TestHandlerServerErrors(t *testing.T) {
	b := &backend{value: make(chan int)} // not encodable
	h := newHandler(t, b)
	checkError(t, get(h, "/a"), http.StatusInternalServerError, "json")

	unknown := *h
	unknown.Type = "nope"
	checkError(t, get(&unknown, "/a"), http.StatusInternalServerError, "nope")

	nilRequest := *h
	nilRequest.Request = func(*http.Request, cache.RequestInfo) (cache.Request, error) { return nil, nil }
	checkError(t, get(&nilRequest, "/a"), http.StatusInternalServerError, "nil request")

	checkError(t, get(&cachehttp.Handler{Type: "items"}, "/a"), http.StatusInternalServerError, "Handler")
}

func TestHandlerServer(t *testing.T) {
	b := &backend{}
	srv := httptest.NewServer(newHandler(t, b))
	t.Cleanup(srv.Close)

	send := func(method, cacheControl string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+"/a", nil)
		if err != nil {
			t.Fatal(err)
		}
		if cacheControl != "" {
			req.Header.Set("Cache-Control", cacheControl)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}

	for i, tt := range []struct {
		method, cacheControl string
		code                 int
		xCache, body         string
	}{
		{http.MethodGet, "", 200, "MISS", `{"fetch":1}` + "\n"},
		{http.MethodGet, "", 200, "HIT", `{"fetch":1}` + "\n"},
		{http.MethodHead, "", 200, "HIT", ""},
		{http.MethodGet, "must-revalidate", 200, "MISS", `{"fetch":2}` + "\n"},
		{http.MethodGet, "max-age=1.5", 400, "", ""},
		{http.MethodPost, "", 405, "", ""},
	} {
		resp, body := send(tt.method, tt.cacheControl)
		if resp.StatusCode != tt.code || resp.Header.Get("X-Cache") != tt.xCache {
			t.Errorf("%d: %s: got %d X-Cache %q, want %d %q", i, tt.method, resp.StatusCode, resp.Header.Get("X-Cache"), tt.code, tt.xCache)
		}
		if tt.body != "" && body != tt.body {
			t.Errorf("%d: %s: body %q, want %q", i, tt.method, body, tt.body)
		}
	}
}
