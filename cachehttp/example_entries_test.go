package cachehttp_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/cachehttp"
)

func ExampleEntriesHandler() {
	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("nodes", cache.FetchFunc(func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		info := r.CacheInfo()
		if info.Datacenter == "dc2" {
			return cache.FetchResult{}, fmt.Errorf("no path to %s for token %s", info.Datacenter, info.Token)
		}
		return cache.FetchResult{Value: []string{"web-1"}, Index: 7}, nil
	}), nil)
	const token = "8a1f3b2c-0d4e-4f56-a789-0b1c2d3e4f5a"
	for _, dc := range []string{"dc1", "dc2"} {
		_, _, _ = c.Get("nodes", cache.RequestInfo{Datacenter: dc, Token: token, Key: "web"})
	}

	// On a debug mux that only operators reach, as net/http/pprof.
	debug := http.NewServeMux()
	debug.Handle("/debug/cache/entries", cachehttp.EntriesHandler(c))

	w := httptest.NewRecorder()
	debug.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/debug/cache/entries?type=nodes&datacenter=dc2", nil))
	var page struct {
		Matched int
		Entries []struct {
			Datacenter, Key  string
			TokenFingerprint string `json:"token_fingerprint"`
			HasValue         bool   `json:"has_value"`
			LastError        string `json:"last_error"`
		}
	}
	if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(w.Code, w.Header().Get("Content-Type"), page.Matched)
	for _, e := range page.Entries {
		fmt.Printf("%s %s token %s: value %t, error %q\n", e.Datacenter, e.Key, e.TokenFingerprint, e.HasValue, e.LastError)
	}

	// A browser gets an HTML table.
	r := httptest.NewRequest(http.MethodGet, "/debug/cache/entries", nil)
	r.Header.Set("Accept", "text/html")
	w = httptest.NewRecorder()
	debug.ServeHTTP(w, r)
	fmt.Println(w.Code, w.Header().Get("Content-Type"))
	// Output:
	// 200 application/json 1
	// dc2 web token 4dc0f849: value false, error "no path to dc2 for token <redacted>"
	// 200 text/html; charset=utf-8
}
