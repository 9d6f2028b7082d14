package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// FuzzCacheOps runs sequences of Get, GetContext, Notify, cancellations,
// server writes and index resets, failing and panicking fetches, sleeps
// and Close against a cache of three types (blocking, refreshing, polled)
// over a few keys and partitions, in a synctest bubble so that every wait
// and back-off plays out in fake time. It checks that:
//
//   - an entry never has two loop fetches (blocking queries) or two
//     non-blocking fetches in flight at once;
//   - no value crosses a partition: Gets and Notify events only carry
//     values of their own type, datacenter, token and key;
//   - Notify indexes never go backwards except after a reset of that
//     entry's index on the server;
//   - no panic of a Fetch escapes;
//   - after Close, no Fetch starts, Gets return without waiting, and every
//     goroutine ends (synctest fails a bubble that leaves one blocked).
//
// Each input is a sequence of 3-byte operations; see fuzzRun.step.
func FuzzCacheOps(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 2, 8, 40, 0, 9, 0, 0})
	f.Add([]byte{3, 0, 0, 5, 0, 0, 8, 60, 0, 6, 0, 0, 8, 60, 0, 4, 0, 0})
	f.Add([]byte{7, 0, 1, 0, 1, 0, 3, 1, 0, 8, 255, 0, 9, 0, 0, 0, 1, 0})
	f.Add([]byte{7, 2, 2, 3, 2, 0, 8, 200, 0, 7, 2, 3, 8, 255, 0, 5, 2, 0})
	f.Add([]byte{0, 3, 9, 0, 3, 11, 1, 3, 4, 5, 3, 0, 8, 30, 0, 2, 3, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 3*64 {
			data = data[:3*64]
		}
		synctest.Test(t, func(t *testing.T) {
			r := newFuzzRun(t)
			for i := 0; i+2 < len(data); i += 3 {
				r.step(data[i], data[i+1], data[i+2])
			}
			r.finish()
		})
	})
}

// Fetch outcomes a fuzzServer can be told to give.
const (
	fuzzOK = iota
	fuzzErr
	fuzzPanic
	fuzzZeroIndex
	fuzzNilValue
	fuzzModes
)

// fuzzPartitions are the datacenter/token pairs requests use. The first
// two would collide if the parts were joined with "/"; the second and
// third differ only by token, the third and fourth only by datacenter.
var fuzzPartitions = [][2]string{{"a/b", "c"}, {"a", "b/c"}, {"a", "c"}, {"", "c"}}

// fuzzTypes are the registered type names; see newFuzzRun.
var fuzzTypes = []string{"blk", "ref", "poll"}

const fuzzKeys = 2

// fuzzID names one entry: type, partition and key.
type fuzzID struct {
	typ       string
	part, key int
}

// fuzzValue is what the fake server returns: it says where it came from,
// so that a value served for another entry is caught.
type fuzzValue struct {
	id    fuzzID
	index uint64
	epoch int // the entry's resets when the value was made
}

// fuzzReq is the Request of the fuzzed calls.
type fuzzReq struct {
	id   fuzzID
	info RequestInfo
}

func (r *fuzzReq) CacheInfo() RequestInfo { return r.info }

// fuzzEntry is the fake server's state for one entry.
type fuzzEntry struct {
	index    uint64
	resets   int   // times the index was lowered, or answered as 0
	modes    []int // outcomes of the next fetches; then fuzzOK
	blocking int   // fetches in flight with MinIndex > 0
	plain    int   // fetches in flight with MinIndex 0
}

// fuzzServer is the fake backend behind all three types.
type fuzzServer struct {
	t           *testing.T
	mu          sync.Mutex
	entries     map[fuzzID]*fuzzEntry
	afterClose  atomic.Bool // set once Close returned and the bubble settled
	fetchCount  atomic.Int64
	panicsFired atomic.Int64
}

func (s *fuzzServer) entry(id fuzzID) *fuzzEntry {
	e := s.entries[id]
	if e == nil {
		e = &fuzzEntry{index: 1}
		s.entries[id] = e
	}
	return e
}

// fuzzType is one registered type, served by the fuzzServer. It
// implements ContextType, so blocking queries end when the cache no
// longer needs them.
type fuzzType struct {
	name     string
	blocking bool
	srv      *fuzzServer
}

func (ft *fuzzType) SupportsBlocking() bool { return ft.blocking }

func (ft *fuzzType) Fetch(opts FetchOptions, r Request) (FetchResult, error) {
	return ft.FetchContext(context.Background(), opts, r)
}

func (ft *fuzzType) FetchContext(ctx context.Context, opts FetchOptions, r Request) (FetchResult, error) {
	s := ft.srv
	req := r.(*fuzzReq)
	if req.id.typ != ft.name {
		s.t.Errorf("type %s fetching a request of %s", ft.name, req.id.typ)
	}
	if s.afterClose.Load() {
		s.t.Errorf("Fetch of %+v started after Close", req.id)
	}
	s.fetchCount.Add(1)

	s.mu.Lock()
	e := s.entry(req.id)
	inflight := &e.plain
	if opts.MinIndex > 0 {
		inflight = &e.blocking
	}
	*inflight++
	if *inflight > 1 {
		s.t.Errorf("%d fetches of %+v in flight at once (MinIndex>0: %v)", *inflight, req.id, opts.MinIndex > 0)
	}
	mode := fuzzOK
	if len(e.modes) > 0 {
		mode, e.modes = e.modes[0], e.modes[1:]
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		*inflight--
		s.mu.Unlock()
	}()

	switch mode {
	case fuzzErr:
		return FetchResult{}, errors.New("fuzz: fetch failed")
	case fuzzPanic:
		s.panicsFired.Add(1)
		panic("fuzz: fetch panicked")
	case fuzzNilValue:
		return FetchResult{}, nil
	}

	// A blocking query waits for a change, up to a fake 5 minutes.
	if opts.MinIndex > 0 {
		deadline := time.Now().Add(5 * time.Minute)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			s.mu.Lock()
			changed := s.entry(req.id).index != opts.MinIndex
			s.mu.Unlock()
			if changed {
				break
			}
			time.Sleep(10 * time.Second)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e = s.entry(req.id)
	res := FetchResult{Index: e.index}
	if mode == fuzzZeroIndex {
		// The cache stores index 1 instead: to it, a lower index.
		res.Index = 0
		e.resets++
	}
	res.Value = fuzzValue{req.id, e.index, e.resets}
	return res, nil
}

// fuzzWatch is one Notify in a fuzz run.
type fuzzWatch struct {
	cancel context.CancelFunc
}

// fuzzRun is the state of one fuzz input.
type fuzzRun struct {
	t       *testing.T
	c       *Cache
	srv     *fuzzServer
	closed  bool
	watches []*fuzzWatch
	lastIdx map[fuzzID]uint64 // the latest index a Get returned, for MinIndex
	mu      sync.Mutex        // guards lastIdx
}

func newFuzzRun(t *testing.T) *fuzzRun {
	srv := &fuzzServer{t: t, entries: map[fuzzID]*fuzzEntry{}}
	c := New(nil)
	ttl := &RegisterOptions{LastGetTTL: 100 * time.Hour}
	c.RegisterType("blk", &fuzzType{name: "blk", blocking: true, srv: srv}, ttl)
	c.RegisterType("ref", &fuzzType{name: "ref", blocking: true, srv: srv},
		&RegisterOptions{LastGetTTL: 100 * time.Hour, Refresh: true, RefreshTimeout: 5 * time.Minute})
	c.RegisterType("poll", &fuzzType{name: "poll", srv: srv}, ttl)
	return &fuzzRun{t: t, c: c, srv: srv, lastIdx: map[fuzzID]uint64{}}
}

// id picks an entry from a byte.
func fuzzPick(b byte) fuzzID {
	return fuzzID{
		typ:  fuzzTypes[int(b)%len(fuzzTypes)],
		part: int(b/3) % len(fuzzPartitions),
		key:  int(b/9) % fuzzKeys,
	}
}

// request builds the Request for id; a's bits choose its options.
func (r *fuzzRun) request(id fuzzID, a byte) *fuzzReq {
	p := fuzzPartitions[id.part]
	info := RequestInfo{Datacenter: p[0], Token: p[1], Key: fmt.Sprint("k", id.key)}
	if a&1 != 0 {
		r.mu.Lock()
		info.MinIndex = r.lastIdx[id]
		r.mu.Unlock()
	}
	if a&2 != 0 {
		info.MustRevalidate = true
	}
	if a&4 != 0 {
		info.MaxAge = time.Duration(a>>4+1) * time.Minute
	}
	// Every Get ends by itself, so that sequences always terminate.
	info.Timeout = time.Duration(a>>3+1) * time.Minute
	return &fuzzReq{id: id, info: info}
}

// step runs one operation: op picks it, a and b are its arguments.
func (r *fuzzRun) step(op, a, b byte) {
	switch op % 10 {
	case 0, 1:
		r.get(context.Background(), fuzzPick(a), b)
	case 2:
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(b)*10*time.Second)
		r.get(ctx, fuzzPick(a), b)
		// The timer keeps ctx's resources until it fires; cancel with it.
		context.AfterFunc(ctx, cancel)
	case 3:
		r.notify(fuzzPick(a), b)
	case 4:
		if len(r.watches) > 0 {
			r.watches[int(a)%len(r.watches)].cancel()
		}
	case 5:
		r.write(fuzzPick(a), false)
	case 6:
		r.write(fuzzPick(a), true)
	case 7:
		id := fuzzPick(a)
		r.srv.mu.Lock()
		e := r.srv.entry(id)
		for i := 0; i < int(b>>4)+1; i++ {
			e.modes = append(e.modes, int(b)%fuzzModes)
		}
		r.srv.mu.Unlock()
	case 8:
		time.Sleep(time.Duration(a) * 10 * time.Second)
	case 9:
		if a%4 == 0 {
			r.close()
		}
	}
}

// get runs a Get in its own goroutine and checks what it returns.
func (r *fuzzRun) get(ctx context.Context, id fuzzID, a byte) {
	req := r.request(id, a)
	closed := r.closed
	go func() {
		start := time.Now()
		v, meta, err := r.c.GetContext(ctx, id.typ, req)
		if closed && time.Since(start) > 0 {
			r.t.Errorf("Get of %+v waited %v after Close", id, time.Since(start))
		}
		if v != nil {
			fv, ok := v.(fuzzValue)
			if !ok || fv.id != id {
				r.t.Errorf("Get of %+v returned %#v", id, v)
			}
		}
		if err == nil && meta.Index > 0 {
			r.mu.Lock()
			r.lastIdx[id] = meta.Index
			r.mu.Unlock()
		}
	}()
}

// notify starts a watch of id whose events are checked as they come.
func (r *fuzzRun) notify(id fuzzID, a byte) {
	req := r.request(id, a)
	req.info.MinIndex = 0
	if req.info.MaxAge == 0 {
		req.info.MaxAge = time.Minute // polling needs one
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan UpdateEvent)
	err := r.c.Notify(ctx, id.typ, req, "w", ch)
	if r.closed {
		cancel()
		if !errors.Is(err, ErrClosed) {
			r.t.Errorf("Notify after Close: %v", err)
		}
		return
	}
	if err != nil {
		cancel()
		r.t.Errorf("Notify of %+v: %v", id, err)
		return
	}
	r.watches = append(r.watches, &fuzzWatch{cancel: cancel})
	go r.check(ctx, id, ch)
}

// check receives a watch's events until its context ends and checks
// them: right partition, and an index that only goes back with a value
// made after a reset.
func (r *fuzzRun) check(ctx context.Context, id fuzzID, ch <-chan UpdateEvent) {
	var last uint64
	var epoch int
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-ch:
			if ev.Result == nil {
				continue
			}
			fv, ok := ev.Result.(fuzzValue)
			if !ok || fv.id != id {
				r.t.Errorf("Notify of %+v sent %#v", id, ev.Result)
				continue
			}
			if ev.Err != nil {
				continue
			}
			if ev.Meta.Index < last && fv.epoch <= epoch {
				r.t.Errorf("Notify of %+v went from index %d back to %d without a reset", id, last, ev.Meta.Index)
			}
			last, epoch = ev.Meta.Index, fv.epoch
		}
	}
}

// write changes an entry on the server: a new index, or a reset to a
// lower one.
func (r *fuzzRun) write(id fuzzID, reset bool) {
	r.srv.mu.Lock()
	defer r.srv.mu.Unlock()
	e := r.srv.entry(id)
	if reset {
		e.index = max(e.index/2, 1)
		e.resets++
		return
	}
	e.index++
}

// close closes the cache and, once the bubble has settled (a fetch that
// began before Close may still be entering Fetch), arms the check that no
// Fetch starts after it.
func (r *fuzzRun) close() {
	if r.closed {
		return
	}
	if err := r.c.Close(); err != nil {
		r.t.Errorf("Close: %v", err)
	}
	r.closed = true
	synctest.Wait()
	r.srv.afterClose.Store(true)
}

// finish closes the cache, ends every watch and lets every goroutine
// finish; synctest.Test then fails if one is left blocked.
func (r *fuzzRun) finish() {
	r.close()
	for _, w := range r.watches {
		w.cancel()
	}
	time.Sleep(24 * time.Hour) // fetches and Gets in flight end
	synctest.Wait()
}
