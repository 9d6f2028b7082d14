package cache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	metrics "github.com/armon/go-metrics"

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

// Prepopulate stores a value fetched elsewhere (here, at startup) so that
// the first Get is already a hit.
func ExampleCache_Prepopulate() {
	fetches := 0
	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("config", cache.FetchFunc(func(cache.FetchOptions, cache.Request) (cache.FetchResult, error) {
		fetches++
		return cache.FetchResult{Value: "from the server", Index: 9}, nil
	}), nil)

	err := c.Prepopulate("config", cache.FetchResult{Value: "from the snapshot", Index: 7}, "dc1", "", "log-level")
	fmt.Println("prepopulate:", err)

	v, meta, _ := c.Get("config", cache.RequestInfo{Datacenter: "dc1", Key: "log-level"})
	fmt.Printf("%s (index %d, hit %t), fetches: %d\n", v, meta.Index, meta.Hit, fetches)

	// Output:
	// prepopulate: <nil>
	// from the snapshot (index 7, hit true), fetches: 0
}

// With EntryFetchRate, a blocking type whose data changes all the time
// cannot refresh in a hot loop: at 1 fetch per second with a burst of 2, an
// entry is fetched at most 2 times at once, then once a second. Without the
// limit, this refresh would run thousands of fetches a second.
func ExampleOptions_entryFetchRate() {
	start := time.Now()
	var fetches atomic.Int64
	busy := cache.BlockingFetchFunc(func(opts cache.FetchOptions, _ cache.Request) (cache.FetchResult, error) {
		fetches.Add(1)
		return cache.FetchResult{Value: "changed", Index: opts.MinIndex + 1}, nil // never blocks
	})

	c := cache.New(&cache.Options{EntryFetchRate: 1, EntryFetchMaxBurst: 2})
	defer c.Close()
	c.RegisterType("busy", busy, &cache.RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})

	c.Get("busy", cache.RequestInfo{Key: "k"})
	time.Sleep(500 * time.Millisecond)
	n := fetches.Load()
	limit := 2 + int64(time.Since(start)/time.Second) // the burst, then 1 a second
	fmt.Println("within the limit:", n <= limit)

	// Output:
	// within the limit: true
}

// The Logger gets fetch errors with the entry's type, datacenter and key.
// The ACL token is never logged, and is redacted from the Type's error.
func ExampleOptions_logger() {
	noTime := func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		return a
	}
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: noTime}))

	c := cache.New(&cache.Options{Logger: logger})
	defer c.Close()
	c.RegisterType("kv", cache.FetchFunc(func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		return cache.FetchResult{}, fmt.Errorf("ACL not found: %s", r.CacheInfo().Token)
	}), nil)

	_, _, err := c.Get("kv", cache.RequestInfo{Datacenter: "dc1", Token: "3f2c9a1e-secret", Key: "db/password"})
	fmt.Println("Get failed:", err != nil)

	// Output:
	// level=WARN msg="cache: fetch failed" type=kv datacenter=dc1 key=db/password error="ACL not found: <redacted>" failures=1
	// Get failed: true
}

// MetricsPrefix and Metrics send the cache's metrics, under names of your
// choosing, to a go-metrics instance of your own instead of the global one.
func ExampleOptions_metricsPrefix() {
	sink := metrics.NewInmemSink(time.Minute, time.Hour)
	conf := metrics.DefaultConfig("")
	conf.EnableHostname, conf.EnableRuntimeMetrics = false, false
	m, _ := metrics.New(conf, sink)

	c := cache.New(&cache.Options{MetricsPrefix: []string{"myapp", "cache"}, Metrics: m})
	defer c.Close()
	c.RegisterType("config", cache.FetchFunc(func(cache.FetchOptions, cache.Request) (cache.FetchResult, error) {
		return cache.FetchResult{Value: "info", Index: 1}, nil
	}), nil)
	c.Get("config", cache.RequestInfo{Key: "log-level"})
	c.Get("config", cache.RequestInfo{Key: "log-level"})

	counters := map[string]float64{}
	for _, interval := range sink.Data() { // a Get may straddle two intervals
		for _, v := range interval.Counters {
			counters[v.Name] += v.Sum
		}
	}
	for _, name := range slices.Sorted(maps.Keys(counters)) {
		fmt.Println(name, counters[name])
	}

	// Output:
	// myapp.cache.config.fetch_success 1
	// myapp.cache.config.hit 1
	// myapp.cache.config.miss_new 1
	// myapp.cache.fetch_success 1
}

// NotifyCallback calls a function for each change instead of sending to a
// channel. The calls come one at a time, in order, from the watch's
// goroutine.
func ExampleCache_NotifyCallback() {
	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("leader", cache.BlockingFetchFunc(func(opts cache.FetchOptions, _ cache.Request) (cache.FetchResult, error) {
		next := opts.MinIndex + 1 // the leader changes at every fetch
		return cache.FetchResult{Value: fmt.Sprintf("node%d", next), Index: next}, nil
	}), nil)

	ctx, cancel := context.WithCancel(context.Background())
	seen := 0
	err := c.NotifyCallback(ctx, "leader", cache.RequestInfo{Key: "db"}, "db-leader", func(ctx context.Context, ev cache.UpdateEvent) {
		fmt.Printf("%s: %s (index %d)\n", ev.CorrelationID, ev.Result, ev.Meta.Index)
		if seen++; seen == 3 {
			cancel() // ends the watch
		}
	})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	<-ctx.Done()

	// Output:
	// db-leader: node1 (index 1)
	// db-leader: node2 (index 2)
	// db-leader: node3 (index 3)
}

// FetchFunc turns a function into a Type that does not support blocking.
func ExampleFetchFunc() {
	settings := map[string]string{"log-level": "info", "region": "eu-west-1"}
	lookup := cache.FetchFunc(func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		v, ok := settings[r.CacheInfo().Key]
		if !ok {
			return cache.FetchResult{}, fmt.Errorf("no setting %q", r.CacheInfo().Key)
		}
		return cache.FetchResult{Value: v, Index: 1}, nil
	})

	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("setting", lookup, nil)

	for _, key := range []string{"region", "region", "color"} {
		v, meta, err := c.Get("setting", cache.RequestInfo{Key: key})
		fmt.Printf("%s: %v (hit %t, err %v)\n", key, v, meta.Hit, err)
	}

	// Output:
	// region: eu-west-1 (hit false, err <nil>)
	// region: eu-west-1 (hit true, err <nil>)
	// color: <nil> (hit false, err no setting "color")
}

// BlockingFetchFunc turns a function into a Type that supports blocking: it
// gets the index the cache holds as MinIndex and the type's RefreshTimeout
// as Timeout, and should answer once the data is newer than MinIndex.
func ExampleBlockingFetchFunc() {
	nodes := cache.BlockingFetchFunc(func(opts cache.FetchOptions, _ cache.Request) (cache.FetchResult, error) {
		fmt.Printf("fetch: MinIndex=%d Timeout=%s\n", opts.MinIndex, opts.Timeout)
		// A real Type would block here until the data changes.
		next := opts.MinIndex + 1
		return cache.FetchResult{Value: fmt.Sprintf("nodes v%d", next), Index: next}, nil
	})

	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("nodes", nodes, &cache.RegisterOptions{RefreshTimeout: 30 * time.Second})

	v, meta, _ := c.Get("nodes", cache.RequestInfo{Key: "web"})
	fmt.Printf("got %s (index %d)\n", v, meta.Index)
	v, meta, _ = c.Get("nodes", cache.RequestInfo{Key: "web", MinIndex: meta.Index, Timeout: time.Minute})
	fmt.Printf("got %s (index %d)\n", v, meta.Index)

	// Output:
	// fetch: MinIndex=0 Timeout=30s
	// got nodes v1 (index 1)
	// fetch: MinIndex=1 Timeout=30s
	// got nodes v2 (index 2)
}

// A bare RequestInfo is a Request: its CacheInfo returns itself. Requests
// with different tokens use different entries.
func ExampleRequestInfo_CacheInfo() {
	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("secret", cache.FetchFunc(func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		return cache.FetchResult{Value: "visible to " + r.CacheInfo().Token, Index: 1}, nil
	}), nil)

	for _, token := range []string{"alice", "bob", "alice"} {
		req := cache.RequestInfo{Datacenter: "dc1", Token: token, Key: "db/password"}
		v, meta, _ := c.Get("secret", req)
		fmt.Printf("%s (hit %t)\n", v, meta.Hit)
	}

	// Output:
	// visible to alice (hit false)
	// visible to bob (hit false)
	// visible to alice (hit true)
}

// GetAs returns the value with its static type, or an error if the value
// has another type.
func ExampleGetAs() {
	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("ports", cache.FetchFunc(func(cache.FetchOptions, cache.Request) (cache.FetchResult, error) {
		return cache.FetchResult{Value: []int{8080, 8443}, Index: 1}, nil
	}), nil)
	ctx := context.Background()
	req := cache.RequestInfo{Key: "web"}

	ports, _, err := cache.GetAs[[]int](ctx, c, "ports", req)
	fmt.Println(ports[1], err)

	_, _, err = cache.GetAs[string](ctx, c, "ports", req)
	fmt.Println(err)

	// Output:
	// 8443 <nil>
	// cache: value of type "ports" is a []int, not a string
}

// MaxEntries bounds the cache: a new entry beyond the bound evicts the
// entry closest to expiry, here the one used least recently.
func ExampleOptions_maxEntries() {
	c := cache.New(&cache.Options{MaxEntries: 2})
	defer c.Close()
	c.RegisterType("user", cache.FetchFunc(func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		return cache.FetchResult{Value: "user " + r.CacheInfo().Key, Index: 1}, nil
	}), nil)

	for _, key := range []string{"a", "b", "c", "a", "c"} {
		_, meta, _ := c.Get("user", cache.RequestInfo{Key: key})
		fmt.Printf("%s: hit %t\n", key, meta.Hit)
	}

	// Output:
	// a: hit false
	// b: hit false
	// c: hit false
	// a: hit false
	// c: hit true
}
