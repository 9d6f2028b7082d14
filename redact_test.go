package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// tokenHolder is a struct whose %#v quotes the token.
type tokenHolder struct {
	Name  string
	Token string
}

// Pins the forms redact replaces, for long tokens plain and with quotes,
// backslashes, spaces, '%', '+', '/', control bytes and non-ASCII letters.
func TestRedact_Forms(t *testing.T) {
	tokens := []string{
		"3f2c9a1e-5b7d-4e0f-9a2c-1d3e5f7a9b0c",
		`s3cr3t "pass" \ word`,
		"tøkén-ünïcode-秘密",
		"a+b/c?d=e&f%20g h~",
		"tab\there\nnewline\x01ctl",
		"\xffinvalid-utf8\xfe",
		"<html>&amp;'x'",
	}
	formats := map[string]func(tok string) string{
		"raw":        func(tok string) string { return fmt.Sprintf("acl: token %s not found", tok) },
		"%q":         func(tok string) string { return fmt.Sprintf("acl: token %q not found", tok) },
		"%+q":        func(tok string) string { return fmt.Sprintf("acl: token %+q not found", tok) },
		"%#q":        func(tok string) string { return fmt.Sprintf("acl: token %#q not found", tok) },
		"%#v":        func(tok string) string { return fmt.Sprintf("bad request %#v", tokenHolder{"n", tok}) },
		"%v struct":  func(tok string) string { return fmt.Sprintf("bad request %v", tokenHolder{"n", tok}) },
		"%q slice":   func(tok string) string { return fmt.Sprintf("tokens %q", []string{"x", tok}) },
		"json":       func(tok string) string { b, _ := json.Marshal(tokenHolder{"n", tok}); return string(b) },
		"query":      func(tok string) string { return "GET /v1/kv/x?token=" + url.QueryEscape(tok) + "&dc=dc1: 403" },
		"query hex":  func(tok string) string { return "GET /v1/kv/x?token=" + lowerHexOnly(url.QueryEscape(tok)) },
		"path":       func(tok string) string { return "GET /v1/acl/token/" + url.PathEscape(tok) + "/info: 404" },
		"path hex":   func(tok string) string { return "GET /v1/acl/token/" + lowerHexOnly(url.PathEscape(tok)) },
		"url values": func(tok string) string { return "POST ?" + url.Values{"token": {tok}, "a": {"b"}}.Encode() },
		"twice":      func(tok string) string { return fmt.Sprintf("%s then %q", tok, tok) },
	}
	for _, tok := range tokens {
		for name, format := range formats {
			msg := format(tok)
			got := redact(tok, msg)
			require.Empty(t, tokenLeaks(tok, got), "token %q, %s: %q -> %q", tok, name, msg, got)
			require.Contains(t, got, redactedText, "token %q, %s", tok, name)
		}
	}
}

// Pins exact results: what is replaced, and that the rest of the message
// stays as it was.
func TestRedact_Exact(t *testing.T) {
	const special = `p"a\ss w/+d%`
	tests := []struct {
		name, token, msg, want string
	}{
		{"empty token", "", "nothing to hide", "nothing to hide"},
		{"empty token, empty msg", "", "", ""},
		{"absent", "secret-token", "permission denied", "permission denied"},
		{"raw", "secret-token", "token secret-token denied", "token <redacted> denied"},
		{"long token inside a word", "secret-token", "xsecret-tokenx", "x<redacted>x"},
		{"every occurrence", "secret-token", "secret-token/secret-token", "<redacted>/<redacted>"},
		{"%q", special, fmt.Sprintf("token %q denied", special), `token "<redacted>" denied`},
		{"%+q unicode", "clé-secrète", fmt.Sprintf("token %+q", "clé-secrète"), `token "<redacted>"`},
		{"query", special, "?token=" + url.QueryEscape(special) + "&x=1", "?token=<redacted>&x=1"},
		{"query lower hex", special, "?token=p%22a%5css+w%2f%2bd%25", "?token=<redacted>"},
		{"path", special, "/acl/" + url.PathEscape(special) + "/x", "/acl/<redacted>/x"},
		{"path lower hex", special, "/acl/p%22a%5css%20w%2f+d%25", "/acl/<redacted>"},
		{"marker text kept", "redacted-token!", "redacted-token! was redacted", "<redacted> was redacted"},

		// Short tokens: whole words only.
		{"short alone", "on", "token on denied", "token <redacted> denied"},
		{"short in words", "on", "connection refused: python onion", "connection refused: python onion"},
		{"short at the ends", "on", "on: refused on", "<redacted>: refused <redacted>"},
		{"short next to punctuation", "on", `t=on&x="on" (on) /on/`, `t=<redacted>&x="<redacted>" (<redacted>) /<redacted>/`},
		{"short next to digits", "7", "port 8080, token 7, id 17", "port 8080, token <redacted>, id 17"},
		{"one letter", "a", "a bad token: a", "<redacted> bad token: <redacted>"},
		{"short overlapping", "ab", "abab ab", "abab <redacted>"},
		{"short quoted", `a"b`, fmt.Sprintf("t=%q x%sy", `a"b`, `a"b`), `t="<redacted>" x` + `a"b` + `y`},
		{"short escaped", "a b", "q=a+b&x=xa+by", "q=<redacted>&x=xa+by"},
		{"short non-word edge", "!x", "a!x y!xz", "a<redacted> y!xz"},
		{"short non-ASCII", "ü", "über token ü.", "über token <redacted>."},
		{"7 bytes in a word", "abcdefg", "xabcdefgx abcdefg", "xabcdefgx <redacted>"},
		{"8 bytes in a word", "abcdefgh", "xabcdefghx abcdefgh", "x<redacted>x <redacted>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, redact(tt.token, tt.msg))
		})
	}
}

// aclErr is an error type for errors.As.
type aclErr struct{ token string }

func (e *aclErr) Error() string { return fmt.Sprintf("acl %q not found", e.token) }

// Pins redactError: the message is redacted, errors.Is and errors.As see
// the original through it, and an error without the token is returned as
// it is.
func TestRedactError(t *testing.T) {
	const token = `tok "quoted" en`
	base := &aclErr{token: token}
	err := fmt.Errorf("fetch: %w (%w)", base, fs.ErrPermission)

	red := redactError(token, err)
	require.Equal(t, `fetch: acl "<redacted>" not found (permission denied)`, red.Error())
	require.ErrorIs(t, red, fs.ErrPermission)
	require.ErrorIs(t, red, base)
	var as *aclErr
	require.ErrorAs(t, red, &as)
	require.Same(t, base, as)
	require.Same(t, err, errors.Unwrap(red))

	plain := errors.New("permission denied")
	require.Same(t, plain, redactError(token, plain), "no token: the same error")
	require.Same(t, plain, redactError("", plain), "empty token: the same error")
	short := errors.New("connection refused")
	require.Same(t, short, redactError("on", short), "a short token inside words is no leak")
}

// Pins the fast path: a message without any form of the token costs no
// allocation, for a plain token and for one with special characters.
func TestRedact_FastPathAllocatesNothing(t *testing.T) {
	err := errors.New("rpc error: code = PermissionDenied desc = ACL not found")
	for _, token := range []string{"3f2c9a1e-5b7d-4e0f-9a2c-1d3e5f7a9b0c", `s3cr3t-"pass"/word`, "on"} {
		allocs := testing.AllocsPerRun(100, func() {
			if redactError(token, err) != err {
				t.Fatal("redacted an error without the token")
			}
		})
		require.Zero(t, allocs, "token %q", token)
	}
}

// BenchmarkRedactError measures redactError on an error with and without
// the token, for a plain token and for one that URL escaping and quoting
// change.
func BenchmarkRedactError(b *testing.B) {
	const plain = "3f2c9a1e-5b7d-4e0f-9a2c-1d3e5f7a9b0c"
	const special = `3f2c9a1e "5b7d" 4e0f/9a2c`
	miss := errors.New("rpc error: code = PermissionDenied desc = ACL not found")
	cases := []struct {
		name  string
		token string
		err   error
	}{
		{"plain/miss", plain, miss},
		{"plain/hit", plain, fmt.Errorf("ACL %s not found", plain)},
		{"special/miss", special, miss},
		{"special/hit", special, fmt.Errorf("ACL %q not found", special)},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = redactError(bc.token, bc.err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// ACL token secrecy.

// Pins: the token is in no log line (errors, panics, back-off; Type messages redacted, rest kept) nor metric name.
func TestEmbedding_TokenNotLoggedNorInMetricNames(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var buf logBuf
		m, sink := newMetrics(t)
		c, _ := newCache(t, &Options{Logger: buf.logger(), Metrics: m})
		c.RegisterType("errt", BlockingFetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			return FetchResult{}, tokenQuotingErr(r)
		}), &RegisterOptions{Refresh: true})
		c.RegisterType("panict", BlockingFetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			panic("bad token " + r.CacheInfo().Token)
		}), &RegisterOptions{Refresh: true})
		c.RegisterType("okt", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			return FetchResult{Value: "v", Index: 1}, nil
		}), &RegisterOptions{LastGetTTL: time.Minute})

		req := RequestInfo{Token: secretToken, Datacenter: "dc1", Key: "k"}
		for _, typ := range []string{"errt", "panict"} {
			_, _, err := c.Get(typ, req)
			require.Error(t, err)
		}
		for range 2 {
			v, _, err := c.Get("okt", req) // miss, then hit
			require.NoError(t, err)
			require.Equal(t, "v", v)
		}
		time.Sleep(5 * time.Minute) // back-off rounds and the expiry of okt
		synctest.Wait()

		logs := buf.String()
		require.NotContains(t, logs, secretToken)
		require.NotEmpty(t, buf.messages("backing off"))
		require.Contains(t, logs, "permission denied for token", "the error is logged, redacted")
		require.Contains(t, logs, "bad token", "the panic value is logged, redacted")

		names := metricNames(sink)
		require.Contains(t, names, "consul.cache.okt.hit")
		require.Contains(t, names, "consul.cache.panict.fetch_panic")
		for _, n := range names {
			require.NotContains(t, n, secretToken)
		}
	})
}

// Pins: a waiter's panic error has the token redacted from the panic value, the rest kept.
func TestEmbedding_TokenRedactedFromPanicError(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t, nil)
	c.RegisterType("panict", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		panic(tokenQuotingErr(r))
	}), nil)

	_, _, err := c.Get("panict", RequestInfo{Token: secretToken, Key: "k"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), secretToken)
	require.Contains(t, err.Error(), "permission denied for token")
}

// Pins: Get and Notify errors from a Type error quoting the token have it redacted, the rest kept.
func TestEmbedding_TokenRedactedFromFetchError(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, nil)
		c.RegisterType("errt", BlockingFetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			return FetchResult{}, tokenQuotingErr(r)
		}), nil)
		req := RequestInfo{Token: secretToken, Key: "k"}

		_, _, err := c.Get("errt", req)
		require.Error(t, err)
		require.NotContains(t, err.Error(), secretToken)
		require.Contains(t, err.Error(), "permission denied for token")

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var evErr atomic.Pointer[error]
		require.NoError(t, c.NotifyCallback(ctx, "errt", req, "id", func(_ context.Context, e UpdateEvent) {
			evErr.CompareAndSwap(nil, &e.Err)
		}))
		synctest.Wait()
		require.NotNil(t, evErr.Load())
		require.Error(t, *evErr.Load())
		require.NotContains(t, (*evErr.Load()).Error(), secretToken)
		cancel()
	})
}

// Pins: a bypass Get (empty Key) also gets the Type's error with the token redacted.
func TestEmbedding_TokenRedactedFromBypassError(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t, nil)
	c.RegisterType("errt", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{}, tokenQuotingErr(r)
	}), nil)

	_, _, err := c.Get("errt", RequestInfo{Token: secretToken})
	require.Error(t, err)
	require.NotContains(t, err.Error(), secretToken)
	require.Contains(t, err.Error(), "permission denied for token")
}

// secretToken is an ACL token that must never leak out of the cache.
const secretToken = "s3cr3t-acl-7f2e9c"

// tokenQuotingErr is a Type error that quotes the request's token, as careless
// RPC layers do.
func tokenQuotingErr(r Request) error {
	return fmt.Errorf("permission denied for token %s", r.CacheInfo().Token)
}
