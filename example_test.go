package cache_test

import (
	"context"
	"encoding/json"
	"errors"
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
	body := map[string]any{"index": c.index, "value": c.services[r.PathValue("name")]}
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
		addr any
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

// A Type may answer NotModified when the data has not changed since
// FetchOptions.LastResult (here, its ETag in State is still current), so
// that the server need not send the value again: the cache keeps its value
// and index, takes the new State, and counts the value as fetched now.
func ExampleFetchResult_notModified() {
	value, etag, index := "debug", "v1", uint64(1) // the server's data
	config := cache.FetchFunc(func(opts cache.FetchOptions, _ cache.Request) (cache.FetchResult, error) {
		if last := opts.LastResult; last != nil && last.State == etag {
			fmt.Println("server: not modified since", etag)
			return cache.FetchResult{NotModified: true, State: etag, Index: index}, nil
		}
		fmt.Println("server: sending", value, etag)
		return cache.FetchResult{Value: value, State: etag, Index: index}, nil
	})

	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("config", config, nil)

	req := cache.RequestInfo{Key: "log-level", MustRevalidate: true}
	for i := 0; i < 3; i++ {
		if i == 2 {
			value, etag, index = "info", "v2", 2 // the data changes
		}
		v, meta, _ := c.Get("config", req)
		fmt.Printf("log-level=%s (index %d)\n", v, meta.Index)
	}

	// Output:
	// server: sending debug v1
	// log-level=debug (index 1)
	// server: not modified since v1
	// log-level=debug (index 1)
	// server: sending info v2
	// log-level=info (index 2)
}

// watchStream is a Type's per-entry state that holds a resource, such as
// a stream from the server, to release when the entry leaves the cache.
type watchStream struct{ key string }

func (s *watchStream) Close() error {
	fmt.Println("closed the stream of", s.key)
	return nil
}

// A State that implements io.Closer is closed when its entry leaves the
// cache: on expiry, on eviction for MaxEntries (here), and on Close. A
// State that a later fetch replaces stays the Type's to close.
func ExampleFetchResult_closableState() {
	feed := cache.FetchFunc(func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		key := r.CacheInfo().Key
		fmt.Println("opened the stream of", key)
		return cache.FetchResult{Value: "feed " + key, Index: 1, State: &watchStream{key}}, nil
	})

	c := cache.New(&cache.Options{MaxEntries: 1})
	c.RegisterType("feed", feed, nil)
	c.Get("feed", cache.RequestInfo{Key: "a"})
	c.Get("feed", cache.RequestInfo{Key: "b"}) // over MaxEntries: a is evicted
	c.Close()

	// Output:
	// opened the stream of a
	// closed the stream of a
	// opened the stream of b
	// closed the stream of b
}

// A Type returns StopRefresh(err) when retrying cannot help, here because
// the request's ACL token was deleted: the background refresh stops
// instead of retrying every minute or two. The value stays cached; the
// next Get fetches again and, once that succeeds, restarts the refresh.
func ExampleStopRefresh() {
	errNoToken := errors.New("ACL not found")
	var mu sync.Mutex // guards the server's data
	value, index, tokenOK := "s3cr3t", uint64(1), true
	changed := make(chan struct{}) // closed and replaced at every change
	update := func(f func()) {
		mu.Lock()
		defer mu.Unlock()
		f()
		close(changed)
		changed = make(chan struct{})
	}
	secret := cache.BlockingFetchFunc(func(opts cache.FetchOptions, _ cache.Request) (cache.FetchResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for tokenOK && index <= opts.MinIndex { // a blocking query: wait for a change
			ch := changed
			mu.Unlock()
			<-ch
			mu.Lock()
		}
		if !tokenOK {
			return cache.FetchResult{}, cache.StopRefresh(errNoToken)
		}
		return cache.FetchResult{Value: value, Index: index}, nil
	})

	c := cache.New(nil)
	defer update(func() { index++ }) // after Close: end the blocking query
	defer c.Close()
	c.RegisterType("secret", secret, &cache.RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})

	v, _, _ := c.Get("secret", cache.RequestInfo{Key: "db/password"})
	fmt.Println("got", v)

	update(func() { tokenOK = false }) // the token is deleted
	v, _, err := c.Get("secret", cache.RequestInfo{Key: "db/password", MinIndex: 1})
	fmt.Printf("got %v, error %q, token deleted: %t\n", v, err, errors.Is(err, errNoToken))

	update(func() { value, index, tokenOK = "rotated", 2, true }) // a new token
	v, meta, _ := c.Get("secret", cache.RequestInfo{Key: "db/password"})
	fmt.Printf("got %v (hit %t)\n", v, meta.Hit)

	// Output:
	// got s3cr3t
	// got s3cr3t, error "ACL not found", token deleted: true
	// got rotated (hit false)
}

// RefreshMaxFailures stops the background refresh of an entry after that
// many failed fetches in a row, instead of retrying every minute or two
// until the entry expires. The next Get fetches again and restarts it.
func ExampleRegisterOptions_refreshMaxFailures() {
	var fetches atomic.Int32
	release := make(chan struct{})
	health := cache.BlockingFetchFunc(func(opts cache.FetchOptions, _ cache.Request) (cache.FetchResult, error) {
		switch n := fetches.Add(1); {
		case n == 1:
			return cache.FetchResult{Value: "healthy", Index: 1}, nil
		case n <= 4: // then the server is down for three fetches
			return cache.FetchResult{}, errors.New("server unavailable")
		case opts.MinIndex < 2:
			return cache.FetchResult{Value: "healthy again", Index: 2}, nil
		default: // a blocking query: nothing changes until the end
			<-release
			return cache.FetchResult{Value: "healthy again", Index: 2}, nil
		}
	})
	noTime := func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		return a
	}
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: noTime}))

	c := cache.New(&cache.Options{Logger: logger})
	defer close(release) // after Close: end the blocking query
	defer c.Close()
	c.RegisterType("health", health, &cache.RegisterOptions{
		Refresh: true, RefreshTimeout: time.Minute, RefreshMaxFailures: 3,
	})

	first, _, _ := c.Get("health", cache.RequestInfo{Key: "db"})
	// Wait for a newer value. Gets that wait while the refresh fails get
	// its errors; once it has stopped, the next Get fetches again.
	var later any
	for err := errors.New("none yet"); err != nil; {
		later, _, err = c.Get("health", cache.RequestInfo{Key: "db", MinIndex: 1})
	}
	fmt.Printf("first %s, then %s\n", first, later)

	// Output:
	// level=WARN msg="cache: fetch failed" type=health datacenter="" key=db error="server unavailable" failures=1
	// level=WARN msg="cache: fetch failed" type=health datacenter="" key=db error="server unavailable" failures=2
	// level=WARN msg="cache: fetch failed" type=health datacenter="" key=db error="server unavailable" failures=3
	// level=WARN msg="cache: background refresh stopped until the next Get" type=health datacenter="" key=db error="server unavailable" failures=3
	// first healthy, then healthy again
}

// ReloadOptions changes the options of a running cache and reports whether
// anything changed. Here a lower MaxEntries evicts at once, and a Logger
// starts receiving fetch errors.
func ExampleCache_ReloadOptions() {
	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("user", cache.FetchFunc(func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		if key := r.CacheInfo().Key; key != "nobody" {
			return cache.FetchResult{Value: "user " + key, Index: 1}, nil
		}
		return cache.FetchResult{}, errors.New("no such user")
	}), nil)
	for _, key := range []string{"a", "b", "c"} {
		c.Get("user", cache.RequestInfo{Key: key})
	}

	noTime := func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		return a
	}
	opts := cache.Options{
		MaxEntries: 1, // keeps c, the most recently used
		Logger:     slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: noTime})),
	}
	fmt.Println("changed:", c.ReloadOptions(opts))
	fmt.Println("changed again:", c.ReloadOptions(opts))

	for _, key := range []string{"c", "nobody", "a"} {
		_, meta, err := c.Get("user", cache.RequestInfo{Key: key})
		fmt.Printf("%s: hit %t, error %v\n", key, meta.Hit, err)
	}

	// Output:
	// changed: true
	// changed again: false
	// c: hit true, error <nil>
	// level=WARN msg="cache: fetch failed" type=user datacenter="" key=nobody error="no such user" failures=1
	// nobody: hit false, error no such user
	// a: hit false, error <nil>
}

// longPoll is a Type whose blocking fetch can be abandoned: it implements
// cache.ContextType, so the cache calls FetchContext with a context that
// ends when nobody needs the answer any more.
type longPoll struct{ waiting, abandoned chan struct{} }

func (longPoll) SupportsBlocking() bool { return true }

func (p longPoll) Fetch(opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	return p.FetchContext(context.Background(), opts, r)
}

func (p longPoll) FetchContext(ctx context.Context, opts cache.FetchOptions, _ cache.Request) (cache.FetchResult, error) {
	if opts.MinIndex == 0 {
		return cache.FetchResult{Value: "v1", Index: 1}, nil
	}
	// A blocking query: wait for a change, or give up with the caller.
	close(p.waiting)
	<-ctx.Done()
	close(p.abandoned)
	return cache.FetchResult{}, ctx.Err()
}

// A Type that implements ContextType learns when its long blocking query is
// no longer needed: here, because the cache closes while a blocking Get
// waits on it.
func ExampleContextType() {
	c := cache.New(nil)
	p := longPoll{waiting: make(chan struct{}), abandoned: make(chan struct{})}
	c.RegisterType("poll", p, &cache.RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute})

	v, _, _ := c.Get("poll", cache.RequestInfo{Key: "k"})
	fmt.Println("first value:", v)
	<-p.waiting // the background refresh is in its blocking query

	done := make(chan error)
	go func() {
		_, _, err := c.Get("poll", cache.RequestInfo{Key: "k", MinIndex: 1})
		done <- err
	}()
	c.Close()
	<-p.abandoned
	fmt.Println("the blocking fetch was abandoned")
	fmt.Println("the waiting Get:", <-done)
	// Output:
	// first value: v1
	// the blocking fetch was abandoned
	// the waiting Get: cache: closed
}
