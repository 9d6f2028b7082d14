package cachehttp_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/cachehttp"
)

// entriesOut is EntriesHandler's JSON body, its entries decoded as
// generic objects so that every field, and no other, is compared.
type entriesOut struct {
	Matched int              `json:"matched"`
	Limit   int              `json:"limit"`
	Entries []map[string]any `json:"entries"`
}

// entryWith returns the JSON object of an entry whose fields are zero but
// for set.
func entryWith(set map[string]any) map[string]any {
	e := map[string]any{
		"type": "", "datacenter": "", "key": "", "token_fingerprint": "",
		"has_value": false, "index": 0.0, "age_seconds": 0.0, "since_fetch_seconds": 0.0,
		"fetching": false, "blocking": false, "refreshing": false, "refresh_stopped": false,
		"lost_contact_seconds": 0.0, "last_error": "", "failures": 0.0, "watchers": 0.0, "ttl_seconds": 0.0,
	}
	for k, v := range set {
		if _, ok := e[k]; !ok {
			panic("no field " + k)
		}
		e[k] = v
	}
	return e
}

// entriesGet sends a GET for target, with the Accept header if not empty.
func entriesGet(h http.Handler, target, accept string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	if accept != "" {
		r.Header.Set("Accept", accept)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// entriesJSON decodes a JSON answer of EntriesHandler, failing the test
// unless it is a 200 with an entries array.
func entriesJSON(t *testing.T, w *httptest.ResponseRecorder) entriesOut {
	t.Helper()
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q: %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	var out entriesOut
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("%v in %s", err, w.Body)
	}
	if out.Entries == nil {
		t.Fatalf("no entries array: %s", w.Body)
	}
	return out
}

// entriesKeys returns the keys of out's entries, in order.
func entriesKeys(out entriesOut) string {
	var keys []string
	for _, e := range out.Entries {
		keys = append(keys, e["key"].(string))
	}
	return strings.Join(keys, ",")
}

// entriesFingerprint is the fingerprint cache.TokenFingerprint documents.
func entriesFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:4])
}

// entriesCache returns, in a synctest bubble, a cache with entries whose
// ages differ: of type "nodes", "a" fetched 3 minutes ago, "b" 2 and "c" 1,
// in dc1 but "c", and of type "services", "svc/web" fetched just now
// with a token, and "svc/db", whose fetch failed.
func entriesCache(t *testing.T) *cache.Cache {
	c := cache.New(nil)
	t.Cleanup(func() { c.Close() })
	fetch := cache.FetchFunc(func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		info := r.CacheInfo()
		if info.Key == "svc/db" {
			return cache.FetchResult{}, errors.New("no such service")
		}
		return cache.FetchResult{Value: info.Key, Index: 10}, nil
	})
	c.RegisterType("nodes", fetch, &cache.RegisterOptions{LastGetTTL: time.Hour})
	c.RegisterType("services", fetch, &cache.RegisterOptions{LastGetTTL: time.Hour})
	for _, info := range []cache.RequestInfo{
		{Datacenter: "dc1", Key: "a"}, {Datacenter: "dc1", Key: "b"}, {Datacenter: "dc2", Key: "c"},
	} {
		if _, _, err := c.Get("nodes", info); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
	}
	_, _, _ = c.Get("services", cache.RequestInfo{Datacenter: "dc1", Token: "web-token-0123456789", Key: "svc/web"})
	_, _, _ = c.Get("services", cache.RequestInfo{Datacenter: "dc1", Key: "svc/db"})
	return c
}

func TestEntriesHandlerJSON(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := cachehttp.EntriesHandler(entriesCache(t))
		w := entriesGet(h, "/debug/cache/entries", "")
		if got := w.Header().Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control %q", got)
		}
		out := entriesJSON(t, w)
		if out.Matched != 5 || out.Limit != cachehttp.DefaultEntriesLimit {
			t.Errorf("matched %d, limit %d", out.Matched, out.Limit)
		}
		// The stalest first; entries of equal age (the failed one has no
		// value, so no age) by partition.
		if got := entriesKeys(out); got != "a,b,c,svc/db,svc/web" {
			t.Errorf("order %s", got)
		}
		for i, want := range map[int]map[string]any{
			0: entryWith(map[string]any{
				"type": "nodes", "datacenter": "dc1", "key": "a", "has_value": true, "index": 10.0,
				"age_seconds": 180.0, "since_fetch_seconds": 180.0, "ttl_seconds": 3600.0 - 180,
			}),
			3: entryWith(map[string]any{
				"type": "services", "datacenter": "dc1", "key": "svc/db", "last_error": "no such service",
				"failures": 1.0, "ttl_seconds": 3600.0,
			}),
			4: entryWith(map[string]any{
				"type": "services", "datacenter": "dc1", "key": "svc/web", "has_value": true, "index": 10.0,
				"token_fingerprint": entriesFingerprint("web-token-0123456789"), "ttl_seconds": 3600.0,
			}),
		} {
			if got := out.Entries[i]; !reflect.DeepEqual(got, want) {
				t.Errorf("entry %d:\ngot  %v\nwant %v", i, got, want)
			}
		}
	})
}

func TestEntriesHandlerFiltersAndLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := cachehttp.EntriesHandler(entriesCache(t))
		for _, tc := range []struct {
			query, keys string
			matched     int
		}{
			{"type=nodes", "a,b,c", 3},
			{"type=services", "svc/db,svc/web", 2},
			{"datacenter=dc1", "a,b,svc/db,svc/web", 4},
			{"datacenter=dc2", "c", 1},
			{"prefix=svc/", "svc/db,svc/web", 2},
			{"prefix=svc%2Fw", "svc/web", 1},
			{"type=nodes&datacenter=dc1&prefix=b", "b", 1},
			{"type=none", "", 0},
			{"limit=2", "a,b", 5},
			{"limit=1&type=services", "svc/db", 2},
			{"limit=1000", "a,b,c,svc/db,svc/web", 5},
		} {
			out := entriesJSON(t, entriesGet(h, "/?"+tc.query, ""))
			if got := entriesKeys(out); got != tc.keys || out.Matched != tc.matched {
				t.Errorf("%s: keys %s, matched %d; want %s, %d", tc.query, got, out.Matched, tc.keys, tc.matched)
			}
		}
	})
}

func TestEntriesHandlerBadRequests(t *testing.T) {
	c := cache.New(nil)
	defer c.Close()
	h := cachehttp.EntriesHandler(c)
	for _, q := range []string{"limit=0", "limit=-1", "limit=ten", "limit=1.5", "format=xml"} {
		w := entriesGet(h, "/?"+q, "")
		var body struct{ Error string }
		if err := json.Unmarshal(w.Body.Bytes(), &body); w.Code != http.StatusBadRequest || err != nil || body.Error == "" {
			t.Errorf("%s: %d %s", q, w.Code, w.Body)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", nil))
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d, Allow %q", w.Code, w.Header().Get("Allow"))
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodHead, "/?format=html", nil))
	if w.Code != http.StatusOK || w.Body.Len() != 0 || w.Header().Get("Content-Length") == "" {
		t.Errorf("HEAD: %d, %d bytes, Content-Length %q", w.Code, w.Body.Len(), w.Header().Get("Content-Length"))
	}
}

func TestEntriesHandlerHTML(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := entriesCache(t)
		if err := c.Prepopulate("nodes", cache.FetchResult{Value: 1, Index: 1}, "dc1", "", `<script>alert("x")</script>`); err != nil {
			t.Fatal(err)
		}
		h := cachehttp.EntriesHandler(c)
		for _, tc := range []struct {
			target, accept string
			html           bool
		}{
			{"/", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", true},
			{"/", "application/json", false},
			{"/", "text/html;q=0", false},
			{"/?format=html", "", true},
			{"/?format=json", "text/html", false},
		} {
			w := entriesGet(h, tc.target, tc.accept)
			isHTML := strings.HasPrefix(w.Header().Get("Content-Type"), "text/html")
			if w.Code != http.StatusOK || isHTML != tc.html {
				t.Errorf("%s, Accept %q: %d %q", tc.target, tc.accept, w.Code, w.Header().Get("Content-Type"))
			}
		}

		body := entriesGet(h, "/?format=html&type=nodes&limit=3", "").Body.String()
		if n := strings.Count(body, "<tr><td>"); n != 3 {
			t.Errorf("%d rows, want 3:\n%s", n, body)
		}
		for _, want := range []string{"4 entries matched; the 3 stalest are shown", "<td>nodes</td><td>dc1</td><td>a</td>", "<td>3m0s</td>", `value="nodes"`} {
			if !strings.Contains(body, want) {
				t.Errorf("no %q in\n%s", want, body)
			}
		}
		body = entriesGet(h, "/?format=html&prefix=%3Cscript", "").Body.String()
		if strings.Contains(body, "<script>") || !strings.Contains(body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
			t.Errorf("the key is not escaped:\n%s", body)
		}
	})
}

// entriesTokenForms returns the forms of token that must never be in an
// answer: as it is, Go- and JSON-quoted, URL-escaped and HTML-escaped.
func entriesTokenForms(token string) []string {
	q := strconv.Quote(token)
	j, _ := json.Marshal(token)
	return []string{
		token, q, q[1 : len(q)-1], string(j), string(j[1 : len(j)-1]),
		url.QueryEscape(token), url.PathEscape(token), html.EscapeString(token),
	}
}

// entriesRequireNoToken fails if body holds a form of one of tokens.
func entriesRequireNoToken(t *testing.T, what, body string, tokens []string) {
	t.Helper()
	for _, tok := range tokens {
		for _, form := range entriesTokenForms(tok) {
			if i := strings.Index(body, form); i >= 0 {
				t.Fatalf("%s: the form %q of the token %q: ...%s...", what, form, tok, body[max(i-60, 0):min(i+len(form)+60, len(body))])
			}
		}
	}
}

// entriesTokens are the ACL tokens of TestEntriesHandlerNeverShowsTokens.
var entriesTokens = []string{"0e9a1c7d-5b3f-4e21-8c6a-9d2f7b1e4a30", `p@ss "w0rd"/with <html> & spaces?`}

// entriesChurn runs, until stop is closed, Gets of keys and datacenters
// that embed the tokens, in every form, against c's types "plain" (whose
// fetches fail for keys starting with "fail", naming the token) and
// "watch" (blocking, refreshing, failing now and then).
func entriesChurn(c *cache.Cache, stop <-chan struct{}) (wait func()) {
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tok := entriesTokens[(i+g)%len(entriesTokens)]
				forms := entriesTokenForms(tok)
				form := forms[i%len(forms)]
				typ := []string{"plain", "watch"}[i%2]
				key := []string{"fail-" + form, "key/" + form, strconv.Itoa(i % 50)}[(i/2)%3]
				_, _, _ = c.Get(typ, cache.RequestInfo{Token: tok, Datacenter: "dc-" + form, Key: key, Timeout: 10 * time.Millisecond})
			}
		})
	}
	return wg.Wait
}

// entriesChurnCache returns a cache for entriesChurn, bounded so that it
// evicts, with short TTLs so that entries expire.
func entriesChurnCache(t *testing.T) *cache.Cache {
	c := cache.New(&cache.Options{MaxEntries: 100})
	t.Cleanup(func() { c.Close() })
	c.RegisterType("plain", cache.FetchFunc(func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		info := r.CacheInfo()
		if strings.HasPrefix(info.Key, "fail") {
			return cache.FetchResult{}, fmt.Errorf("ACL denied for %s (%q, %s)", info.Token, info.Token, url.QueryEscape(info.Token))
		}
		return cache.FetchResult{Value: info.Key, Index: 1}, nil
	}), &cache.RegisterOptions{LastGetTTL: 20 * time.Millisecond})
	var mu sync.Mutex
	n := uint64(0)
	c.RegisterType("watch", cache.BlockingFetchFunc(func(o cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		time.Sleep(time.Millisecond) // a blocking query that changes at once
		mu.Lock()
		n++
		i := n
		mu.Unlock()
		if i%7 == 0 {
			return cache.FetchResult{}, fmt.Errorf("token %q: server unavailable", r.CacheInfo().Token)
		}
		return cache.FetchResult{Value: i, Index: o.MinIndex + 1}, nil
	}), &cache.RegisterOptions{Refresh: true, RefreshTimeout: time.Second, LastGetTTL: 50 * time.Millisecond})
	return c
}

// TestEntriesHandlerNeverShowsTokens asks for entries in JSON and HTML,
// with every filter, while Gets, refreshes and evictions run on entries
// whose keys, datacenters and errors hold the tokens in every form, and
// checks that no form of a token is in any answer.
func TestEntriesHandlerNeverShowsTokens(t *testing.T) {
	c := entriesChurnCache(t)
	h := cachehttp.EntriesHandler(c)
	stop := make(chan struct{})
	wait := entriesChurn(c, stop)
	defer wait()
	defer close(stop)

	queries := []string{"", "type=plain", "type=watch", "prefix=key/", "prefix=fail", "limit=5", "datacenter=dc-x"}
	rows, redacted := 0, false
	for i := range 300 {
		q := queries[i%len(queries)]
		target, accept := "/?"+q, ""
		if i%2 == 1 {
			accept = "text/html"
		}
		w := entriesGet(h, target, accept)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", target, w.Code, w.Body)
		}
		body := w.Body.String()
		entriesRequireNoToken(t, fmt.Sprintf("%s (Accept %q)", target, accept), body, entriesTokens)
		if accept == "" {
			rows += len(entriesJSON(t, w).Entries)
		}
		redacted = redacted || strings.Contains(body, "redacted")
	}
	if rows == 0 || !redacted {
		t.Errorf("%d rows, redacted text seen: %t: the test saw nothing to hide", rows, redacted)
	}
}
