package cachehttp_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/cachehttp"
)

func ExampleParseCacheControl() {
	h := http.Header{}
	h.Add("Cache-Control", "max-age=60, no-transform")
	h.Add("Cache-Control", `Stale-If-Error="300"`)

	d, err := cachehttp.ParseCacheControl(h)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d.HasMaxAge, d.MaxAge, d.MustRevalidate, d.StaleIfError)

	h.Set("Cache-Control", "max-age=1.5")
	_, err = cachehttp.ParseCacheControl(h)
	fmt.Println(err)
	// Output:
	// true 1m0s false 5m0s
	// cachehttp: invalid Cache-Control directive "max-age=1.5": fractional value
}

func ExampleApplyRequestInfo() {
	r := httptest.NewRequest(http.MethodGet, "/v1/nodes/web", nil)
	r.Header.Set("Cache-Control", "max-age=0")

	info := cache.RequestInfo{Key: "web"}
	if err := cachehttp.ApplyRequestInfo(r.Header, &info); err != nil {
		fmt.Println(err)
		return
	}
	// max-age=0: no cached value is fresh enough.
	fmt.Println(info.Key, info.MaxAge, info.MustRevalidate)
	// Output:
	// web 0s true
}

// nodesRequest is the request an application sends to its backend.
type nodesRequest struct {
	Service string
	info    cache.RequestInfo // from the Cache-Control header
}

func (r *nodesRequest) CacheInfo() cache.RequestInfo {
	info := r.info
	info.Key = r.Service
	return info
}

func ExampleHandler() {
	c := cache.New(nil)
	defer c.Close()
	fetches := 0
	c.RegisterType("nodes", cache.FetchFunc(func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		fetches++
		nodes := []string{r.(*nodesRequest).Service + "-1", r.(*nodesRequest).Service + "-2"}
		return cache.FetchResult{Value: nodes, Index: uint64(fetches)}, nil
	}), nil)

	h := &cachehttp.Handler{
		Cache: c,
		Type:  "nodes",
		Request: func(r *http.Request, info cache.RequestInfo) (cache.Request, error) {
			service := strings.TrimPrefix(r.URL.Path, "/v1/nodes/")
			if service == "" {
				return nil, fmt.Errorf("no service in %s", r.URL.Path)
			}
			return &nodesRequest{Service: service, info: info}, nil
		},
	}

	for _, cc := range []string{"", "", "must-revalidate", "max-age=ten"} {
		r := httptest.NewRequest(http.MethodGet, "/v1/nodes/web", nil)
		if cc != "" {
			r.Header.Set("Cache-Control", cc)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Printf("%d X-Cache=%s X-Cache-Index=%s %s", w.Code,
			w.Header().Get("X-Cache"), w.Header().Get("X-Cache-Index"), w.Body)
	}
	// Output:
	// 200 X-Cache=MISS X-Cache-Index=1 ["web-1","web-2"]
	// 200 X-Cache=HIT X-Cache-Index=1 ["web-1","web-2"]
	// 200 X-Cache=MISS X-Cache-Index=2 ["web-1","web-2"]
	// 400 X-Cache= X-Cache-Index= {"error":"cachehttp: invalid Cache-Control directive \"max-age=ten\": value is not a decimal integer"}
}
