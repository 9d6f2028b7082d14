package cache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/agentcache/cache"
)

// catalog is a tiny service catalog served over HTTP. GET /services/{name}
// answers {"index": N, "value": "..."}. With ?index=I it is a blocking
// query: the answer waits until the catalog's index exceeds I, or for at
// most ?wait= (default 5m).
type catalog struct {
	mu       sync.Mutex
	index    uint64
	services map[string]string
	changed  chan struct{} // closed and replaced on every write
	closed   chan struct{} // closed by close: release blocked queries
	requests int
}

func newCatalog() *catalog {
	return &catalog{
		index:    1,
		services: map[string]string{"web": "10.0.0.1"},
		changed:  make(chan struct{}),
		closed:   make(chan struct{}),
	}
}

// set writes a service address and bumps the index.
func (c *catalog) set(name, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index++
	c.services[name] = addr
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *catalog) close() { close(c.closed) }

func (c *catalog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	minIndex, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
	if err != nil || wait <= 0 {
		wait = 5 * time.Minute
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()

	c.mu.Lock()
	c.requests++
	for waiting := true; waiting && c.index <= minIndex; {
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed: // look at the index again
		case <-timeout.C:
			waiting = false
		case <-c.closed:
			waiting = false
		case <-r.Context().Done():
			waiting = false
		}
		c.mu.Lock()
	}
	body := map[string]interface{}{"index": c.index, "value": c.services[r.PathValue("name")]}
	c.mu.Unlock()
	json.NewEncoder(w).Encode(body)
}

// requestCount is how many queries the catalog has answered or is serving.
func (c *catalog) requestCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests
}

// ServiceRequest asks for the address of one service. It implements
// cache.Request.
type ServiceRequest struct {
	Name     string
	MinIndex uint64        // for a blocking Get: wait for a newer index
	Wait     time.Duration // for a blocking Get: how long to wait
}

func (r *ServiceRequest) CacheInfo() cache.RequestInfo {
	return cache.RequestInfo{Key: r.Name, MinIndex: r.MinIndex, Timeout: r.Wait}
}

// serviceType is a cache.Type that fetches services from the catalog.
type serviceType struct{ baseURL string }

func (serviceType) SupportsBlocking() bool { return true }

func (t serviceType) Fetch(opts cache.FetchOptions, req cache.Request) (cache.FetchResult, error) {
	r := req.(*ServiceRequest)
	q := url.Values{"index": {fmt.Sprint(opts.MinIndex)}}
	if opts.Timeout > 0 {
		q.Set("wait", opts.Timeout.String())
	}
	resp, err := http.Get(t.baseURL + "/services/" + url.PathEscape(r.Name) + "?" + q.Encode())
	if err != nil {
		return cache.FetchResult{}, err
	}
	defer resp.Body.Close()
	var body struct {
		Index uint64 `json:"index"`
		Value string `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return cache.FetchResult{}, err
	}
	return cache.FetchResult{Value: body.Value, Index: body.Index}, nil
}

// startCatalog serves a new catalog; stop releases blocked queries and
// shuts the server down.
func startCatalog() (cat *catalog, baseURL string, stop func()) {
	cat = newCatalog()
	mux := http.NewServeMux()
	mux.Handle("GET /services/{name}", cat)
	srv := httptest.NewServer(mux)
	return cat, srv.URL, func() {
		cat.close()
		srv.Close()
	}
}

// A Get misses and fetches; the same Get again is served from the cache.
func Example() {
	cat, baseURL, stop := startCatalog()
	defer stop()

	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("service", serviceType{baseURL}, nil)

	for i := 0; i < 2; i++ {
		addr, meta, err := c.Get("service", &ServiceRequest{Name: "web"})
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		fmt.Printf("web = %s (index %d, hit %t)\n", addr, meta.Index, meta.Hit)
	}
	fmt.Println("catalog requests:", cat.requestCount())

	// Output:
	// web = 10.0.0.1 (index 1, hit false)
	// web = 10.0.0.1 (index 1, hit true)
	// catalog requests: 1
}

// A Get with MinIndex blocks until the data has a newer index (or Wait
// passes): here a write to the catalog releases it.
func ExampleCache_Get_blocking() {
	cat, baseURL, stop := startCatalog()
	defer stop()

	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("service", serviceType{baseURL}, nil)

	_, meta, _ := c.Get("service", &ServiceRequest{Name: "web"})
	fmt.Println("seen index", meta.Index)

	type result struct {
		addr interface{}
		meta cache.ResultMeta
	}
	done := make(chan result)
	go func() {
		addr, meta, _ := c.Get("service", &ServiceRequest{Name: "web", MinIndex: meta.Index, Wait: time.Minute})
		done <- result{addr, meta}
	}()

	// Let the blocking query reach the catalog before writing (not needed
	// for the result, which is the same either way).
	for deadline := time.Now().Add(5 * time.Second); cat.requestCount() < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	cat.set("web", "10.0.0.2")

	r := <-done
	fmt.Printf("web = %s (index %d)\n", r.addr, r.meta.Index)

	// Output:
	// seen index 1
	// web = 10.0.0.2 (index 2)
}

// Notify sends the current value, then an event for every change, until
// its context is cancelled.
func ExampleCache_Notify() {
	cat, baseURL, stop := startCatalog()
	defer stop()

	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("service", serviceType{baseURL}, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan cache.UpdateEvent)
	if err := c.Notify(ctx, "service", &ServiceRequest{Name: "web"}, "web-address", events); err != nil {
		fmt.Println("error:", err)
		return
	}

	for _, next := range []string{"10.0.0.2", "10.0.0.3", ""} {
		ev := <-events
		fmt.Printf("%s: %s (index %d)\n", ev.CorrelationID, ev.Result, ev.Meta.Index)
		if next != "" {
			cat.set("web", next)
		}
	}

	// Output:
	// web-address: 10.0.0.1 (index 1)
	// web-address: 10.0.0.2 (index 2)
	// web-address: 10.0.0.3 (index 3)
}
