package etcdcache

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/examples/internal/embedetcd"
)

// TestKVSurvivesAnEtcdRestart stops a server under a refreshing entry,
// checks that the cache notices (failed fetches with back-off, a growing
// Age, the last value still served), restarts the server on the same data
// and ports, and checks that fresh values arrive again.
func TestKVSurvivesAnEtcdRestart(t *testing.T) {
	srv, err := embedetcd.Start(filepath.Join(t.TempDir(), "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	cli := newClient(t, srv.Endpoints()...)
	typ := &countingType{Type: &KV{
		Client:           cli,
		ReadTimeout:      time.Second,
		LostContactAfter: 500 * time.Millisecond,
	}}
	c := cache.New(nil)
	c.RegisterType("kv", typ, &cache.RegisterOptions{Refresh: true, RefreshTimeout: time.Minute})
	t.Cleanup(func() { _ = c.Close() })

	k := key(t, "a")
	put(t, cli, k, "v1")
	v, meta, err := c.Get("kv", &KVRequest{Key: k})
	if kv := mustKV(t, v, err); kv.Value != "v1" || meta.Age != 0 {
		t.Fatalf("got %+v %+v before the outage", kv, meta)
	}
	eventually(t, wait, "the refresh to start watching", func() bool { return typ.fetches.Load() >= 2 })

	srv.Stop()
	stopped := time.Now()

	// The blocking refresh notices the outage and fails; a caller that
	// waits for something newer sees the error.
	res := receive(t, getAsync(c, "kv", &KVRequest{Key: k, MinIndex: meta.Index, Timeout: 30 * time.Second}), 40*time.Second)
	if res.err == nil {
		for _, f := range typ.failed() {
			t.Logf("failure at %s", f.Sub(stopped))
		}
		t.Fatalf("blocking get during the outage returned %+v, want an error", res)
	}

	// Plain Gets keep serving the last value, with a growing Age.
	var age time.Duration
	eventually(t, wait, "Age to grow", func() bool {
		v, meta, err := c.Get("kv", &KVRequest{Key: k})
		if kv := mustKV(t, v, err); kv.Value != "v1" {
			t.Fatalf("got %+v during the outage", kv)
		}
		if meta.Age > 0 && age > 0 && meta.Age > age {
			return true
		}
		age = meta.Age
		return false
	})

	// After three quick retries the cache backs off: wait for a fifth
	// failure, which comes after a pause of at least two seconds.
	eventually(t, 40*time.Second, "five failed fetches", func() bool { return len(typ.failed()) >= 5 })
	failures := typ.failed()
	if gap := failures[4].Sub(failures[3]); gap < 1500*time.Millisecond {
		t.Fatalf("fifth failure %s after the fourth, want a back-off of about 2s or more", gap)
	}
	if n := len(failures); n > 10 {
		t.Fatalf("%d failed fetches in %s: no back-off", n, time.Since(stopped))
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	rev := put(t, cli, k, "v2")
	eventually(t, 45*time.Second, "the new value after the restart", func() bool {
		v, meta, err := c.Get("kv", &KVRequest{Key: k})
		kv := mustKV(t, v, err)
		return kv.Value == "v2" && meta.Index == uint64(rev) && meta.Age == 0
	})
	t.Logf("outage %s, %d failed fetches, back online after %s", failures[len(failures)-1].Sub(stopped).Round(time.Millisecond), len(failures), time.Since(stopped).Round(time.Millisecond))
}
