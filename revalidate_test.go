package cache

import (
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/require"
)

// Pins: at Close, a Get waiting for a revalidation fetch that runs beside a
// blocking query gets that fetch's result, which Close does not cancel,
// while the Get waiting for a change returns ErrClosed at once.
func TestCacheClose_revalidationWaitersGetTheirResult(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, release := bubble(t)
		gate := make(chan struct{})
		typ := TestType(t)
		var log fetchLog
		log.on(typ, nil, FetchResult{Value: "v5", Index: 5}, nil).Once()
		// The blocking query hangs until the test ends, whatever its
		// context says; the revalidation until gate.
		log.on(typ, waitingFor(release), FetchResult{Value: "v6", Index: 6}, nil).Once()
		log.on(typ, waitingFor(gate), FetchResult{Value: "v5", Index: 5}, nil).Once()
		c.RegisterType("t", typ, nil)

		requireGet(t, c, "t", RequestInfo{Key: "k"})
		blocked := goGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MinIndex: 5}))
		requireBlocked(t, blocked)
		revalidating := goGet(c, "t", TestRequest(t, RequestInfo{Key: "k", MustRevalidate: true}))
		requireBlocked(t, revalidating)
		require.Equal(t, 3, log.count(), "the revalidation runs beside the blocking query")

		require.NoError(t, c.Close())
		r := requireReturned(t, blocked)
		require.ErrorIs(t, r.Err, ErrClosed)
		require.Equal(t, "v5", r.Value)
		requireBlocked(t, revalidating)
		close(gate)
		r = requireReturned(t, revalidating)
		require.NoError(t, r.Err)
		require.Equal(t, "v5", r.Value)
	})
}
