package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/require"
)

// Regression: the cache redacted the ACL token from a Type's error or panic
// only where it appeared as it is, by a plain substring replace. A Type
// that quoted it (%q, %+q) or put it in a URL (url.QueryEscape,
// url.PathEscape, lower-case hex) leaked it to Get's error, the log and
// Notify's events. Every form must be gone from all three, with the text
// and the slog JSON handler.
func TestRegression_RedactQuotedToken(t *testing.T) {
	const token = `s3cr3t "acl"/tøkén+1 %`
	fails := map[string]func() error{
		"quoted": func() error { return fmt.Errorf("acl: token %q not found", token) },
		"ascii":  func() error { return fmt.Errorf("acl: token %+q not found", token) },
		"query": func() error {
			return fmt.Errorf("GET /v1/kv/db?token=%s: 403 Forbidden", url.QueryEscape(token))
		},
		"path": func() error {
			return fmt.Errorf("GET /v1/acl/token/%s: 404", lowerHexOnly(url.PathEscape(token)))
		},
		"panic": func() error { panic(fmt.Sprintf("bad token %q", token)) },
	}
	handlers := map[string]func(io.Writer) slog.Handler{
		"text": func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) },
		"json": func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) },
	}
	for hname, handler := range handlers {
		for typ, fail := range fails {
			t.Run(hname+"/"+typ, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					var buf embLogBuf
					c := New(&Options{Logger: slog.New(handler(&buf))})
					defer c.Close()
					c.RegisterType(typ, BlockingFetchFunc(func(FetchOptions, Request) (FetchResult, error) {
						return FetchResult{}, fail()
					}), nil)
					req := RequestInfo{Token: token, Key: "k"}

					_, _, err := c.Get(typ, req)
					require.Error(t, err)
					require.Empty(t, tokenLeaks(token, err.Error()), "Get's error: %s", err)
					require.Contains(t, err.Error(), redactedText)

					ev := rhFirstEvent(t, c, typ, req)
					require.Error(t, ev.Err)
					require.Empty(t, tokenLeaks(token, ev.Err.Error()), "Notify's error: %s", ev.Err)

					synctest.Wait()
					logs := buf.String()
					require.Contains(t, logs, "cache: fetch failed")
					require.Empty(t, tokenLeaks(token, logs), "logs:\n%s", logs)
				})
			})
		}
	}
}

// rhFirstEvent returns the first event of a watch of r.
func rhFirstEvent(t *testing.T, c *Cache, typ string, r Request) UpdateEvent {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := make(chan UpdateEvent, 1)
	require.NoError(t, c.Notify(ctx, typ, r, "id", ch))
	return <-ch
}

// Regression: users' tests written for Consul v1.4.5 call TestCacheGetCh
// and TestCacheGetChResult(t, ch, nil) for a Get that fails: Consul's
// TestCacheGetCh logs the error and closes the channel, so the check
// receives nil and passes. This package sent the error on the channel
// instead, and such tests failed. TestCacheNotifyChResult with no expected
// event must panic, as Consul's does.
func TestRegression_TestHelpersLikeConsul(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		typ := TestType(t)
		typ.Static(FetchResult{}, errors.New("rpc error: ACL not found"))
		c.RegisterType("t", typ, nil)

		ft := &helperT{}
		TestCacheGetChResult(ft, TestCacheGetCh(ft, c, "t", TestRequest(t, RequestInfo{Key: "k"})), nil)
		require.Empty(t, ft.fatals, "a failed Get delivers nil")
		require.Empty(t, ft.errors)
		require.Equal(t, []string{"Error: rpc error: ACL not found"}, ft.logs, "the error is logged")

		require.PanicsWithValue(t, "asking for zero updates seems like a bug", func() {
			TestCacheNotifyChResult(ft, make(chan UpdateEvent))
		})
	})
}
