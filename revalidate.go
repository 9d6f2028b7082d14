package cache

import "context"

// sideFetch returns a channel closed when the entry's revalidation fetch
// ends, starting one if none runs. It serves Gets that want the current
// value (MaxAge, MustRevalidate) while the loop's fetch is a blocking query
// that only answers on a change or after the type's timeout: they must not
// wait for a change they did not ask for (Consul #12048). Revalidations
// share one fetch, which does not block, so an entry has at most two
// fetches in flight: the loop's blocking query and one revalidation.
// e.mu must be held and the loop running.
func (c *Cache) sideFetch(e *entry, te *typeEntry, r Request) <-chan struct{} {
	lp := e.loop.Load()
	if lp.side == nil {
		lp.side = make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		lp.sideCancel = cancel
		go func() {
			v := revalidation{c, ctx, e, lp, te, r}
			v.run()
		}()
	}
	return lp.side
}

// revalidation is a revalidation fetch running beside a blocking one. It
// belongs to the goroutine that runs it; e.mu guards what it changes of
// the entry.
type revalidation struct {
	c   *Cache
	ctx context.Context // ended by eviction only: its Gets need its result
	e   *entry
	lp  *entryLoop
	te  *typeEntry
	r   Request
}

// run is the goroutine of a revalidation fetch; it ends with it.
func (v *revalidation) run() {
	k := decodeKey(v.e.key)
	prev := v.e.result()
	opts := fetchOptions(v.te, &prev)
	opts.MinIndex, opts.Timeout = 0, 0

	// Preset for a Fetch that calls runtime.Goexit.
	o := outcome{err: errExited(v.te.name, k.key)}
	defer func() { v.publish(&prev, o) }()
	o.fr, o.err = v.c.callFetch(v.ctx, &fetchCall{v.te, k, opts, v.r})
	if o.err == nil {
		v.c.countSuccess(v.te, o.fr)
	} else {
		v.c.countError(v.te, &k, o.err, 1)
	}
}

// publish publishes the outcome o of the revalidation, which started from
// prev. A new value also wakes the loop's waiters, since it may be the
// change they wait for; an error goes only to the revalidating callers.
func (v *revalidation) publish(prev *result, o outcome) {
	e, lp := v.e, v.lp
	now := v.c.now()
	e.mu.Lock()
	cur := e.result()
	closeSt := e.store(cur.follow(prev, o, now))
	if o.err == nil && e.loop.Load() == lp {
		e.wake()
	}
	close(lp.side)
	lp.sideCancel()
	lp.side, lp.sideCancel = nil, nil
	e.mu.Unlock()
	v.c.closeState(e, closeSt)
}
