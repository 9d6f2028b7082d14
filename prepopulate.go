package cache

import "fmt"

// Prepopulate stores res, fetched elsewhere, as the value of type t for the
// given datacenter, token and key, as if the cache had fetched it: it
// replaces any cached value and wakes Gets waiting for one. The entry then
// expires like any other, and for a type with Refresh, its background
// refresh starts with the first Get that hits it (Prepopulate has no
// Request to fetch with). It returns an error for an unknown type, an empty
// key, a nil Value or a zero Index, and ErrClosed after Close.
func (c *Cache) Prepopulate(t string, res FetchResult, dc, token, key string) error {
	// Five parameters, unlike the rest of the package: a partition's four
	// fields and the result.
	te := c.typeEntry(t)
	switch {
	case te == nil:
		return unknownType(t)
	case key == "":
		return fmt.Errorf("cache: prepopulate type %q: empty key", t)
	case res.Value == nil:
		return fmt.Errorf("cache: prepopulate type %q, key %q: nil value", t, key)
	case res.Index == 0:
		return fmt.Errorf("cache: prepopulate type %q, key %q: zero index", t, key)
	case c.closed.Load():
		return ErrClosed
	}
	var kbuf [128]byte
	k := c.makeKey(kbuf[:], t, dc, token, key)
	for {
		e := c.lookupOrCreate(&k, te)
		e.mu.Lock()
		if e.evicted {
			e.mu.Unlock()
			continue // evicted just now: store in a new entry
		}
		closeSt := e.store(newResult(res.Value, res.Index, c.now(), resultExtra{state: res.State}))
		e.wake()
		e.mu.Unlock()
		c.closeState(e, closeSt)
		c.addExpiry(e)
		return nil
	}
}
