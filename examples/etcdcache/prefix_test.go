package etcdcache

import (
	"context"
	"testing"
	"time"

	"github.com/agentcache/cache"
)

// values returns the key=value pairs of a Prefix result, relative to
// prefix.
func values(t *testing.T, v any, err error, prefix string) []string {
	t.Helper()
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	list, ok := v.([]KeyValue)
	if !ok {
		t.Fatalf("get returned %T, want []KeyValue", v)
	}
	out := []string{}
	for _, kv := range list {
		out = append(out, kv.Key[len(prefix):]+"="+kv.Value)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPrefixGetAndBlockingChanges(t *testing.T) {
	cli := newClient(t)
	c := newCache(t, "prefix", &Prefix{Client: cli})
	p := key(t, "dir/")
	put(t, cli, p+"b", "2")
	put(t, cli, p+"a", "1")
	put(t, cli, key(t, "dirt"), "not under the prefix")

	req := &PrefixRequest{Prefix: p}
	v, meta, err := c.Get("prefix", req)
	if got := values(t, v, err, p); !equal(got, []string{"a=1", "b=2"}) {
		t.Fatalf("got %v", got)
	}

	steps := []struct {
		write func() int64
		want  []string
	}{
		{func() int64 { return put(t, cli, p+"c", "3") }, []string{"a=1", "b=2", "c=3"}},
		{func() int64 { return put(t, cli, p+"a", "one") }, []string{"a=one", "b=2", "c=3"}},
		{func() int64 { return del(t, cli, p+"b") }, []string{"a=one", "c=3"}},
	}
	for i, step := range steps {
		ch := getAsync(c, "prefix", &PrefixRequest{Prefix: p, MinIndex: meta.Index, Timeout: time.Minute})
		rev := step.write()
		res := receive(t, ch, wait)
		if got := values(t, res.value, res.err, p); !equal(got, step.want) || res.meta.Index != uint64(rev) {
			t.Fatalf("step %d: got %v at index %d, want %v at %d", i, got, res.meta.Index, step.want, rev)
		}
		meta = res.meta
	}
}

func TestPrefixIgnoresWritesOutsideIt(t *testing.T) {
	cli := newClient(t)
	c := newCache(t, "prefix", &Prefix{Client: cli})
	p := key(t, "dir/")
	put(t, cli, p+"a", "1")
	v, meta, err := c.Get("prefix", &PrefixRequest{Prefix: p})
	values(t, v, err, p)

	ch := getAsync(c, "prefix", &PrefixRequest{Prefix: p, MinIndex: meta.Index, Timeout: 300 * time.Millisecond})
	put(t, cli, key(t, "elsewhere"), "x")
	res := receive(t, ch, wait)
	if got := values(t, res.value, res.err, p); !equal(got, []string{"a=1"}) || res.meta.Index != meta.Index {
		t.Fatalf("got %v at index %d, want the same value at %d", got, res.meta.Index, meta.Index)
	}
}

func TestPrefixEmptyIsAValue(t *testing.T) {
	cli := newClient(t)
	c := newCache(t, "prefix", &Prefix{Client: cli})
	p := key(t, "empty/")
	v, meta, err := c.Get("prefix", &PrefixRequest{Prefix: p})
	if got := values(t, v, err, p); len(got) != 0 || meta.Index == 0 {
		t.Fatalf("got %v at index %d, want an empty list at a revision", got, meta.Index)
	}
}

func TestPrefixNotify(t *testing.T) {
	cli := newClient(t)
	c := newCache(t, "prefix", &Prefix{Client: cli})
	p := key(t, "dir/")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan cache.UpdateEvent, 10)
	if err := c.Notify(ctx, "prefix", &PrefixRequest{Prefix: p}, "dir", ch); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, ch, wait)
	if got := values(t, ev.Result, ev.Err, p); len(got) != 0 {
		t.Fatalf("first event %v, want an empty list", got)
	}
	want := []string{}
	for _, k := range []string{"a", "b", "c"} {
		put(t, cli, p+k, k)
		want = append(want, k+"="+k)
		ev := nextEvent(t, ch, wait)
		if got := values(t, ev.Result, ev.Err, p); !equal(got, want) {
			t.Fatalf("event %v, want %v", got, want)
		}
	}
	select {
	case ev := <-ch:
		t.Fatalf("extra event %+v", ev)
	case <-time.After(500 * time.Millisecond):
	}
}
