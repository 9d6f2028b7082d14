package cache

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// ---------------------------------------------------------------------------
// ResultMeta.

// Pins ResultMeta for non-refresh types: Hit only when served without
// waiting, Age = time since the value was fetched, Index of the value.
func TestCacheGet_metaNonRefresh(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), nil)

		time.Sleep(time.Second)
		_, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, ResultMeta{Index: 1}, meta)
		time.Sleep(5 * time.Second)
		_, meta = requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, ResultMeta{Hit: true, Age: 5 * time.Second, Index: 1}, meta)
		time.Sleep(5 * time.Second)
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k", MinIndex: 1})
		require.Equal(t, uint64(2), v)
		require.Equal(t, ResultMeta{Index: 2}, meta, "waited for a fetch: no hit, age 0")
	})
}

// Pins ResultMeta.Age for refresh types: 0 while refreshes succeed; while
// they fail, the time since the first failure; back to 0 on success.
func TestCacheGet_metaRefreshAge(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()                           // t0
		log.on(typ, sleeping(10*time.Second, nil), FetchResult{}, errors.New("e")).Once()          // fails at 10s
		log.on(typ, sleeping(10*time.Second, nil), FetchResult{}, errors.New("e")).Once()          // fails at 20s
		log.on(typ, sleeping(20*time.Second, nil), FetchResult{Value: "v6", Index: 6}, nil).Once() // ok at 40s
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		start := time.Now()
		at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }

		requireGet(t, c, "t", RequestInfo{Key: "k"})
		for _, step := range []struct {
			at  time.Duration
			val string
			age time.Duration
		}{
			{5 * time.Second, "v5", 0},
			{15 * time.Second, "v5", 5 * time.Second},
			{25 * time.Second, "v5", 15 * time.Second}, // still from the first failure
			{45 * time.Second, "v6", 0},
		} {
			at(step.at)
			v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, step.val, v, "at %s", step.at)
			require.True(t, meta.Hit)
			require.Equal(t, step.age, meta.Age, "at %s", step.at)
		}
	})
}

// Pins the 31 s connected timer: with RefreshTimeout > 31s a refresh that
// blocks 31 s clears the lost-contact Age; a later failure restarts it; with
// RefreshTimeout <= 31s nothing is cleared until a success.
func TestCacheGet_metaRefreshConnectedTimer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		timeout time.Duration
		cleared bool
	}{
		{10 * time.Minute, true},
		{31 * time.Second, false},
	} {
		synctest.Test(t, func(t *testing.T) {
			c, release := bubble(t)
			typ := TestType(t)
			var log fetchLog
			log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
			log.on(typ, sleeping(10*time.Second, nil), FetchResult{}, errors.New("e")).Once() // lost at 10s
			log.on(typ, sleeping(5*time.Minute, nil), FetchResult{}, errors.New("e")).Once()  // blocks 10s..5m10s
			log.on(typ, waitingFor(release), FetchResult{}, nil)
			c.RegisterType("t", typ, &RegisterOptions{Refresh: true, RefreshTimeout: tc.timeout})
			start := time.Now()
			age := func(at time.Duration) time.Duration {
				time.Sleep(time.Until(start.Add(at)))
				_, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
				return meta.Age
			}

			requireGet(t, c, "t", RequestInfo{Key: "k"})
			require.Equal(t, 30500*time.Millisecond, age(40500*time.Millisecond), "blocked 30.5s")
			if tc.cleared {
				require.Equal(t, time.Duration(0), age(41500*time.Millisecond), "blocked 31.5s: connected")
				require.Equal(t, 10*time.Second, age(5*time.Minute+20*time.Second), "failed again at 5m10s")
			} else {
				require.Equal(t, 31500*time.Millisecond, age(41500*time.Millisecond))
				require.Equal(t, 5*time.Minute+10*time.Second, age(5*time.Minute+20*time.Second))
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Close and RegisterType.

// Pins: Close is idempotent and returns nil; it ends a refresh loop waiting on
// RefreshTimer; cached values stay readable; a Get after Close still fetches
// but no refresh follows.
func TestCacheClose_stopsRefresh(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), &RegisterOptions{Refresh: true, RefreshTimer: time.Minute})
		requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.NoError(t, c.Close())
		require.NoError(t, c.Close())
		time.Sleep(time.Hour)
		require.Equal(t, 1, log.count(), "no refresh after Close")

		_, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.True(t, meta.Hit, "cached values are still served")
		v, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k2"}))
		require.ErrorIs(t, err, ErrClosed, "a Get that needs a fetch")
		require.Nil(t, v)
		time.Sleep(time.Hour)
		require.Equal(t, 1, log.count())
	})
}

// Pins: Close ends a refresh loop in its back-off wait at once; a Get that
// was waiting on it returns ErrClosed at once; no fetch follows.
func TestCacheClose_duringBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{}, errors.New("down")).Times(4)
		log.on(typ, nil, FetchResult{Value: "v", Index: 5}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		req := TestRequest(t, RequestInfo{Key: "k"})
		_, _, err := c.Get("t", req)
		require.Error(t, err)
		synctest.Wait()
		require.Equal(t, 4, log.count())

		ch := goGet(c, "t", req)
		requireBlocked(t, ch)
		start := time.Now()
		require.NoError(t, c.Close())
		r := requireReturned(t, ch)
		require.Equal(t, start, time.Now(), "not after the back-off")
		require.ErrorIs(t, r.Err, ErrClosed)
		require.Nil(t, r.Value)
		time.Sleep(time.Hour)
		require.Equal(t, 4, log.count(), "no fetch after Close")
	})
}

// Pins: a refresh fetch in flight at Close finishes and its value is stored,
// but no refresh follows.
func TestCacheClose_duringFetch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		gate := make(chan struct{})
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v1", Index: 1}, nil).Once()
		log.on(typ, waitingFor(gate), FetchResult{Value: "v2", Index: 2}, nil).Once()
		log.on(typ, waitingFor(release), FetchResult{}, nil)
		c.RegisterType("t", typ, &RegisterOptions{Refresh: true})
		requireGet(t, c, "t", RequestInfo{Key: "k"})
		synctest.Wait()
		require.Equal(t, 2, log.count())

		require.NoError(t, c.Close())
		close(gate)
		time.Sleep(time.Hour)
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "v2", v)
		require.True(t, meta.Hit)
		require.Equal(t, 2, log.count())
	})
}

// Pins: after Close entries no longer expire.
func TestCacheClose_stopsExpiry(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		c.RegisterType("t", indexType(t, &log), &RegisterOptions{LastGetTTL: time.Minute})
		requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.NoError(t, c.Close())
		time.Sleep(time.Hour)
		_, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.True(t, meta.Hit)
		require.Equal(t, 1, log.count())
	})
}

// Pins: RegisterType copies the options: the caller's struct is not modified
// (no TTL default written into it) and later changes to it have no effect.
func TestCacheRegisterType_copiesOptions(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		var log fetchLog
		opts := &RegisterOptions{}
		c.RegisterType("t", indexType(t, &log), opts)
		require.Equal(t, RegisterOptions{}, *opts)

		opts.Refresh, opts.RefreshTimer, opts.LastGetTTL = true, time.Second, time.Minute
		requireGet(t, c, "t", RequestInfo{Key: "k"})
		time.Sleep(time.Hour)
		_, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.True(t, meta.Hit, "still the 72h default TTL")
		require.Equal(t, 1, log.count(), "still no refresh")
	})
}

// Pins: registering a type again under the same name replaces it: later
// fetches, including those of a running refresh loop, use the new type.
func TestCacheRegisterType_replace(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := bubble(t)
		opts := &RegisterOptions{Refresh: true, RefreshTimer: time.Minute}
		a := TestType(t)
		a.Static(FetchResult{Value: "a", Index: 1}, nil)
		b := TestType(t)
		b.Static(FetchResult{Value: "b", Index: 2}, nil)

		c.RegisterType("t", a, opts)
		v, _ := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "a", v)
		c.RegisterType("t", b, opts)
		time.Sleep(61 * time.Second)
		v, meta := requireGet(t, c, "t", RequestInfo{Key: "k"})
		require.Equal(t, "b", v)
		require.Equal(t, ResultMeta{Hit: true, Index: 2}, meta)
		a.AssertNumberOfCalls(t, "Fetch", 1)
	})
}
