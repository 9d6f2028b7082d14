package cache

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// Pins: a bare RequestInfo is a Request (CacheInfo is itself) that Get, Notify and Fetch take, partitioned by it.
func TestRequestInfo_IsRequest(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		info := RequestInfo{Token: "tok", Key: "k", Datacenter: "dc1", MaxAge: time.Hour}
		var r Request = info
		require.Equal(t, info, r.CacheInfo())

		var calls fetchLog
		c, _ := newCache(t, nil)
		c.RegisterType("t", BlockingFetchFunc(func(o FetchOptions, r Request) (FetchResult, error) {
			n := calls.add(o, r)
			return FetchResult{Value: r.CacheInfo().Token, Index: uint64(n)}, nil
		}), nil)

		v, _, err := c.Get("t", info)
		require.NoError(t, err)
		require.Equal(t, "tok", v)
		require.Equal(t, info, calls.req(0), "Fetch gets the RequestInfo itself")

		other := info
		other.Token = "tok2"
		v, _, err = c.Get("t", other)
		require.NoError(t, err)
		require.Equal(t, "tok2", v)
		v, meta, err := c.Get("t", info)
		require.NoError(t, err)
		require.Equal(t, "tok", v)
		require.True(t, meta.Hit)
		require.Equal(t, 2, calls.count())

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := make(chan UpdateEvent, 1)
		require.NoError(t, c.Notify(ctx, "t", info, "id", ch))
		ev := recvEvent(t, ch, time.Second)
		require.Equal(t, "tok", ev.Result)
		cancel()
	})
}
