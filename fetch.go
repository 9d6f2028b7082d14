package cache

import (
	"context"
	"fmt"
	"runtime/debug"
)

// callFetch calls the type's Fetch, or FetchContext with ctx, for the
// entry k. A panic becomes an
// error, so that one bad type can neither take the process down nor strand
// the callers waiting for it; it is counted and logged. The ACL token is
// redacted from the error, which callers, logs and Notify events all see.
func (c *Cache) callFetch(ctx context.Context, te *typeEntry, k *entryKey, opts FetchOptions, r Request) (fr FetchResult, err error) {
	defer func() {
		if v := recover(); v != nil {
			msg := redact(k.token, fmt.Sprint(v))
			fr, err = FetchResult{}, fmt.Errorf("cache: fetch of type %q, key %q panicked: %s", te.name, k.key, msg)
			c.metrics.incr(c.metrics.fetchPanic)
			c.metrics.incr(te.keys.fetchPanic)
			c.logger().Error("cache: fetch panicked", logAttrs(k, "panic", msg, "stack", string(debug.Stack()))...)
		}
		if err != nil {
			err = redactError(k.token, err)
		}
	}()
	if ct, ok := te.typ.(ContextType); ok {
		return ct.FetchContext(ctx, opts, r)
	}
	return te.typ.Fetch(opts, r)
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
