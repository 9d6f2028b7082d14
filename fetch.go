package cache

import (
	"context"
	"fmt"
	"runtime/debug"
)

// fetchCall is one call of a Type's Fetch, for the entry k (a copy, so
// that the caller's does not escape with r).
type fetchCall struct {
	te   *typeEntry
	k    entryKey
	opts FetchOptions
	r    Request
}

// callFetch makes the call f: the type's Fetch, or FetchContext with ctx.
// A panic becomes an error, so that one bad type can neither take the
// process down nor strand the callers waiting for it; it is counted and
// logged. The ACL token is redacted from the error, which callers, logs
// and Notify events all see.
func (c *Cache) callFetch(ctx context.Context, f *fetchCall) (fr FetchResult, err error) {
	defer func() {
		if v := recover(); v != nil {
			fr, err = FetchResult{}, c.panicked(f.te, &f.k, v, "cache: fetch panicked")
		}
		if err != nil {
			err = redactError(f.k.token, err)
		}
	}()
	if ct, ok := f.te.typ.(ContextType); ok {
		return ct.FetchContext(ctx, f.opts, f.r)
	}
	return f.te.typ.Fetch(f.opts, f.r)
}

// panicked counts and logs, with the message msg, a panic with v while
// fetching the entry k of type te, and returns the error its callers get.
func (c *Cache) panicked(te *typeEntry, k *entryKey, v any, msg string) error {
	text := redact(k.token, fmt.Sprint(v))
	c.metrics.incr(c.metrics.fetchPanic)
	c.metrics.incr(te.keys.fetchPanic)
	c.logger().Error(msg, logAttrs(k, "panic", text, "stack", string(debug.Stack()))...)
	return fmt.Errorf("cache: fetch of type %q, key %q panicked: %s", te.name, k.key, text)
}

// errExited is the error of a fetch whose Fetch called runtime.Goexit (as
// t.FailNow does in a mock): its callers must not wait for it forever. key
// is empty for a Get that bypasses the cache.
func errExited(typ, key string) error {
	if key == "" {
		return fmt.Errorf("cache: fetch of type %q exited without a result", typ)
	}
	return fmt.Errorf("cache: fetch of type %q, key %q exited without a result", typ, key)
}

// logAttrs returns the attributes that identify the entry k in log lines,
// followed by more. The ACL token is left out: it is a secret.
func logAttrs(k *entryKey, more ...any) []any {
	return append([]any{"type", k.typ, "datacenter", k.dc, "key", k.key}, more...)
}
