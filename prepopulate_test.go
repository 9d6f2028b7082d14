package cache

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// ---------------------------------------------------------------------------
// Validation.

// Pins: Prepopulate rejects an unknown type, a zero index, an empty key and
// a nil value, and stores nothing then.
func TestCachePrepopulate_errors(t *testing.T) {
	t.Parallel()
	c := TestCache(t)
	var log fetchLog
	c.RegisterType("t", indexType(t, &log), nil)

	for name, tc := range map[string]struct {
		typ string
		res FetchResult
		key string
	}{
		"unknown type": {"nope", FetchResult{Value: "v", Index: 5}, "k"},
		"zero index":   {"t", FetchResult{Value: "v", Index: 0}, "k"},
		"empty key":    {"t", FetchResult{Value: "v", Index: 5}, ""},
		"nil value":    {"t", FetchResult{Value: nil, Index: 5}, "k"},
	} {
		err := c.Prepopulate(tc.typ, tc.res, "dc1", "tok", tc.key)
		require.Error(t, err, name)
	}
	require.ErrorContains(t, c.Prepopulate("nope", FetchResult{Value: "v", Index: 5}, "", "", "k"), "nope")
	require.Equal(t, int64(0), c.count.Load(), "nothing stored")
	require.False(t, isCached(c, "t", RequestInfo{Datacenter: "dc1", Token: "tok", Key: "k"}))
	require.Equal(t, 0, log.count())
}

// ---------------------------------------------------------------------------
// Serving a prepopulated value.

// Pins: a prepopulated value is served as a hit (with its index, MinIndex
// below it included) without any fetch, only for its own dc/token/key.
func TestCachePrepopulate_hit(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), nil)
		require.NoError(t, c.Prepopulate("t", FetchResult{Value: "pre", Index: 10}, "dc1", "tok", "k"))

		info := RequestInfo{Datacenter: "dc1", Token: "tok", Key: "k"}
		v, meta := requireGet(t, c, "t", info)
		require.Equal(t, "pre", v)
		require.True(t, meta.Hit)
		require.Equal(t, uint64(10), meta.Index)

		info.MinIndex = 9
		v, meta = requireGet(t, c, "t", info)
		require.Equal(t, "pre", v, "MinIndex below the prepopulated index is a hit")
		require.True(t, meta.Hit)
		require.Equal(t, 0, log.count(), "no fetch")

		for _, other := range []RequestInfo{
			{Datacenter: "dc2", Token: "tok", Key: "k"},
			{Datacenter: "dc1", Token: "tok2", Key: "k"},
			{Datacenter: "dc1", Token: "tok", Key: "k2"},
		} {
			v, meta = requireGet(t, c, "t", other)
			require.False(t, meta.Hit, "%+v", other)
			require.Equal(t, uint64(1), v, "%+v", other)
		}
		require.Equal(t, 3, log.count())
	})
}

// Pins: a blocking Get at or above the prepopulated index fetches as if the
// value had been fetched: MinIndex and LastResult come from it.
func TestCachePrepopulate_blockingFetchContinuesFromIt(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), nil)
		pre := FetchResult{Value: "pre", State: "st", Index: 10}
		require.NoError(t, c.Prepopulate("t", pre, "", "", "k"))

		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 10})
		require.Equal(t, uint64(11), v)
		require.False(t, meta.Hit)
		require.Equal(t, 1, log.count())
		require.Equal(t, uint64(10), log.opt(0).MinIndex)
		require.Equal(t, &pre, log.opt(0).LastResult)
	})
}

// Pins: Prepopulate replaces a cached value, and wakes a blocking Get that
// waits for a newer index than the cached one.
func TestCachePrepopulate_replacesAndWakes(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, errors.New("released"))
		c.RegisterType("t", typ, nil)
		requireGet(t, c, "t", RequestInfo{Key: "k"})

		ch := goGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 5}))
		requireBlocked(t, ch)
		require.NoError(t, c.Prepopulate("t", FetchResult{Value: "pre", Index: 8}, "", "", "k"))
		r := requireReturned(t, ch)
		require.NoError(t, r.Err)
		require.Equal(t, "pre", r.Value)
		require.Equal(t, uint64(8), r.Meta.Index)

		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "pre", v)
		require.True(t, meta.Hit)
		require.Equal(t, 2, log.count(), "no fetch beyond the one still blocked")
	})
}

// Pins: for a non-blocking type the prepopulated value ages from the moment
// it was stored (MaxAge), as a fetched one would.
func TestCachePrepopulate_maxAge(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestTypeNonBlocking(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "fetched", Index: 20}, nil)
		c.RegisterType("t", typ, nil)
		require.NoError(t, c.Prepopulate("t", FetchResult{Value: "pre", Index: 10}, "", "", "k"))

		time.Sleep(30 * time.Second)
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k", MaxAge: time.Minute, MinIndex: 50})
		require.Equal(t, "pre", v)
		require.True(t, meta.Hit)
		require.Equal(t, 30*time.Second, meta.Age)

		time.Sleep(time.Minute)
		v, meta = requireGet(t, c, "t", RequestInfo{Key: "k", MaxAge: time.Minute})
		require.Equal(t, "fetched", v, "older than MaxAge")
		require.False(t, meta.Hit)
		require.Equal(t, 1, log.count())
	})
}

// ---------------------------------------------------------------------------
// Expiry and refresh.

// Pins: a prepopulated entry expires LastGetTTL after it was stored or last
// hit, like any entry; then a Get fetches.
func TestCachePrepopulate_expires(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), &RegisterOptions{LastGetTTL: 10 * time.Minute})
		require.NoError(t, c.Prepopulate("t", FetchResult{Value: "a", Index: 10}, "", "", "a"))
		require.NoError(t, c.Prepopulate("t", FetchResult{Value: "b", Index: 10}, "", "", "b"))

		time.Sleep(9 * time.Minute)
		_, meta := requireGet(t, c, "t", RequestInfo{Key: "a"})
		require.True(t, meta.Hit)
		time.Sleep(2 * time.Minute) // 11m: b never hit, a hit 2m ago
		require.False(t, isCached(c, "t", RequestInfo{Key: "b"}), "b expired 10m after Prepopulate")
		require.True(t, isCached(c, "t", RequestInfo{Key: "a"}), "a's hit extended it")
		time.Sleep(9 * time.Minute) // 20m: 11m after a's hit
		require.False(t, isCached(c, "t", RequestInfo{Key: "a"}))

		v, meta := requireGet(t, c, "t", RequestInfo{Key: "a"})
		require.False(t, meta.Hit)
		require.Equal(t, uint64(1), v, "fetched anew")
		require.Equal(t, 1, log.count())
	})
}

// Pins: for a Refresh type, the background refresh starts at the first Get
// that hits a prepopulated entry, with that Get's Request, continuing from
// the prepopulated index and value; none runs before.
func TestCachePrepopulate_refreshStartsAtFirstHit(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), &RegisterOptions{
			Refresh: true, RefreshTimer: time.Minute, LastGetTTL: 24 * time.Hour,
		})
		pre := FetchResult{Value: uint64(10), State: "st", Index: 10}
		require.NoError(t, c.Prepopulate("t", pre, "", "", "k"))
		time.Sleep(time.Hour)
		require.Equal(t, 0, log.count(), "no refresh before a Get")

		req := TestRequest(t, RequestInfo{Key: "k"})
		v, meta, err := c.Get("t", req)
		require.NoError(t, err)
		require.Equal(t, uint64(10), v)
		require.True(t, meta.Hit)
		synctest.Wait()
		require.Equal(t, 1, log.count(), "the hit started the refresh")
		require.Same(t, req, log.lastReq())
		require.Equal(t, uint64(10), log.opt(0).MinIndex)
		require.Equal(t, &pre, log.opt(0).LastResult)

		v, meta = requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, uint64(11), v, "the refreshed value")
		require.True(t, meta.Hit)
		time.Sleep(time.Minute + time.Second)
		require.Equal(t, 2, log.count(), "refreshes on its RefreshTimer")
		require.Same(t, req, log.lastReq(), "with the first hit's Request")
	})
}

// Pins: Prepopulate over a Refresh entry whose loop is running starts no
// second loop: later hits fetch nothing more.
func TestCachePrepopulate_refreshRunningLoopNotDoubled(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, errors.New("released"))
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true, RefreshTimeout: time.Hour})
		requireGet(t, c, "t", RequestInfo{Key: "k"})
		synctest.Wait()
		require.Equal(t, 2, log.count(), "the refresh is blocked in its fetch")

		require.NoError(t, c.Prepopulate("t", FetchResult{Value: "pre", Index: 9}, "", "", "k"))
		for i := 0; i < 3; i++ {
			v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, "pre", v)
			require.True(t, meta.Hit)
		}
		synctest.Wait()
		require.Equal(t, 2, log.count())
	})
}

// Pins: Prepopulate after Close stores nothing and returns ErrClosed; a
// value prepopulated before Close is still served after it, and its first
// hit starts no refresh.
func TestCachePrepopulate_afterClose(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), &RegisterOptions{Refresh: true, RefreshTimer: time.Minute})
		require.NoError(t, c.Prepopulate("t", FetchResult{Value: "pre", Index: 3}, "", "", "k"))
		require.NoError(t, c.Close())
		require.ErrorIs(t, c.Prepopulate("t", FetchResult{Value: "late", Index: 4}, "", "", "k"), ErrClosed)
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "pre", v)
		require.True(t, meta.Hit)
		time.Sleep(time.Hour)
		require.Equal(t, 0, log.count())
	})
}

// Pins: a fetch already in flight when Prepopulate stores a newer value, and
// that then fails, does not bring back the older value: the prepopulated one
// stays (as it would had it been fetched).
func TestCachePrepopulate_failedFetchInFlightKeepsIt(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		gate := make(chan struct{})
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		log.on(typ, waitingFor(gate), FetchResult{}, errors.New("down")).Once()
		c.RegisterType("t", typ, nil)
		requireGet(t, c, "t", RequestInfo{Key: "k"})

		ch := goGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 5}))
		requireBlocked(t, ch)
		require.NoError(t, c.Prepopulate("t", FetchResult{Value: "pre", Index: 8}, "", "", "k"))
		r := requireReturned(t, ch)
		require.Equal(t, "pre", r.Value)

		close(gate) // the blocking fetch started before Prepopulate fails
		synctest.Wait()
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "pre", v, "the older value came back")
		require.Equal(t, uint64(8), meta.Index)
		require.Equal(t, 2, log.count())
	})
}
