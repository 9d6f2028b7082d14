package cachehttp

import (
	"bytes"
	"cmp"
	"container/heap"
	"encoding/json"
	"fmt"
	"html/template"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentcache/cache"
)

// DefaultEntriesLimit is the number of entries EntriesHandler shows when
// the request sets no limit.
const DefaultEntriesLimit = 100

// EntriesHandler returns an http.Handler that shows the state of the
// entries of c, one row per entry as described by [cache.EntryInfo]: the
// answer to "why is this value stale". Like net/http/pprof, it is meant
// for an internal debug mux that only operators reach, never for a public
// one:
//
//	debug := http.NewServeMux()
//	debug.Handle("/debug/cache/entries", cachehttp.EntriesHandler(c))
//	go http.ListenAndServe("127.0.0.1:6060", debug)
//
// It never shows an ACL token, in any form (entries show a
// [cache.TokenFingerprint] instead), but it does show request keys,
// datacenters and error messages.
//
// It answers GET and HEAD requests. The query parameters type, datacenter
// and prefix select the entries of one type, of one datacenter and whose
// key starts with the prefix (see [cache.EntryFilter]); limit (a positive
// integer, DefaultEntriesLimit by default) bounds how many are shown.
// The stalest are shown first: by Age, then by time since their value was
// fetched, the longest first.
//
// The answer is JSON unless the request asks for HTML, with format=html
// or an Accept header that names text/html, as browsers send; format=json
// asks for JSON whatever the Accept header. The JSON object has the
// number of entries that matched the filters, the limit and the entries
// shown:
//
//	{"matched": 2, "limit": 100, "entries": [{"type": "kv", "datacenter": "dc1",
//	  "key": "/config/x", "token_fingerprint": "978f0b99", "has_value": true,
//	  "index": 42, "age_seconds": 12.5, "since_fetch_seconds": 12.5,
//	  "fetching": false, "blocking": false, "refreshing": false,
//	  "refresh_stopped": false, "lost_contact_seconds": 0, "last_error": "",
//	  "failures": 0, "watchers": 0, "ttl_seconds": 259187.5}, ...]}
//
// The HTML page is a plain table of the same fields. A malformed query is
// answered with 400 Bad Request and the JSON body {"error": "..."}.
//
// A request reads every entry once, without blocking the cache's Gets
// (see [cache.Cache.EntriesSeq]), and keeps only the entries it shows.
// EntriesHandler panics if c is nil.
func EntriesHandler(c *cache.Cache) http.Handler {
	if c == nil {
		panic("cachehttp: EntriesHandler with a nil Cache")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveEntries(c, w, r)
	})
}

// entriesQuery is what a request to EntriesHandler asks for.
type entriesQuery struct {
	filter cache.EntryFilter
	limit  int
	html   bool
}

// parseEntriesQuery reads the query of a request to EntriesHandler.
func parseEntriesQuery(r *http.Request) (entriesQuery, error) {
	v := r.URL.Query()
	q := entriesQuery{
		filter: cache.EntryFilter{Type: v.Get("type"), Datacenter: v.Get("datacenter"), KeyPrefix: v.Get("prefix")},
		limit:  DefaultEntriesLimit,
		html:   acceptsHTML(r.Header),
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return q, fmt.Errorf("cachehttp: limit %q is not a positive integer", s)
		}
		q.limit = n
	}
	switch f := v.Get("format"); f {
	case "":
	case "json", "html":
		q.html = f == "html"
	default:
		return q, fmt.Errorf("cachehttp: format %q is neither json nor html", f)
	}
	return q, nil
}

// acceptsHTML reports whether the Accept header names text/html, with a
// non-zero quality.
func acceptsHTML(h http.Header) bool {
	for _, v := range h.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, params, err := mime.ParseMediaType(part)
			if err == nil && mt == "text/html" && !isZeroQuality(params["q"]) {
				return true
			}
		}
	}
	return false
}

// isZeroQuality reports whether q, the quality of a media range, is 0.
func isZeroQuality(q string) bool {
	f, err := strconv.ParseFloat(q, 64)
	return err == nil && f == 0
}

// serveEntries is EntriesHandler's ServeHTTP.
func serveEntries(c *cache.Cache, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, http.StatusMethodNotAllowed, fmt.Errorf("cachehttp: method %s not allowed", r.Method))
		return
	}
	q, err := parseEntriesQuery(r)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, err)
		return
	}
	page := stalest(c, &q)
	// The state of the cache: for nobody to keep.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Add("Vary", "Accept")
	if !q.html {
		body, err := json.Marshal(page.json())
		if err != nil {
			writeError(w, r, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, r, http.StatusOK, body)
		return
	}
	var buf bytes.Buffer
	if err := entriesPage.Execute(&buf, page); err != nil {
		writeError(w, r, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
}

// entriesResult is what EntriesHandler shows: the entries that matched,
// the stalest first, at most Limit of them.
type entriesResult struct {
	Query   cache.EntryFilter
	Limit   int
	Matched int
	Entries []cache.EntryInfo
}

// stalest returns the result of the query q: one pass over the entries of
// c, keeping the q.limit stalest in a heap.
func stalest(c *cache.Cache, q *entriesQuery) *entriesResult {
	res := &entriesResult{Query: q.filter, Limit: q.limit}
	h := &freshestFirst{}
	for e := range c.EntriesSeq(q.filter) {
		res.Matched++
		switch {
		case h.Len() < q.limit:
			heap.Push(h, e)
		case staler(e, (*h)[0]) < 0:
			(*h)[0] = e
			heap.Fix(h, 0)
		}
	}
	res.Entries = *h
	slices.SortFunc(res.Entries, staler)
	return res
}

// staler orders entries by staleness, the stalest first: by Age, then by
// time since the value was fetched, the longest first, then by partition,
// so that the order is stable.
func staler(a, b cache.EntryInfo) int {
	return cmp.Or(
		cmp.Compare(b.Age, a.Age),
		cmp.Compare(b.SinceFetch, a.SinceFetch),
		strings.Compare(a.Type, b.Type),
		strings.Compare(a.Datacenter, b.Datacenter),
		strings.Compare(a.Key, b.Key),
		strings.Compare(a.TokenFingerprint, b.TokenFingerprint),
	)
}

// freshestFirst is a container/heap of entries with the least stale on
// top: the one to drop for a staler one.
type freshestFirst []cache.EntryInfo

func (h freshestFirst) Len() int           { return len(h) }
func (h freshestFirst) Less(i, j int) bool { return staler(h[i], h[j]) > 0 }
func (h freshestFirst) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *freshestFirst) Push(x any)        { *h = append(*h, x.(cache.EntryInfo)) }

func (h *freshestFirst) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// entryJSON is the JSON form of a cache.EntryInfo. Durations are in
// seconds, as Prometheus and most tools read them.
type entryJSON struct {
	Type               string  `json:"type"`
	Datacenter         string  `json:"datacenter"`
	Key                string  `json:"key"`
	TokenFingerprint   string  `json:"token_fingerprint"`
	HasValue           bool    `json:"has_value"`
	Index              uint64  `json:"index"`
	AgeSeconds         float64 `json:"age_seconds"`
	SinceFetchSeconds  float64 `json:"since_fetch_seconds"`
	Fetching           bool    `json:"fetching"`
	Blocking           bool    `json:"blocking"`
	Refreshing         bool    `json:"refreshing"`
	RefreshStopped     bool    `json:"refresh_stopped"`
	LostContactSeconds float64 `json:"lost_contact_seconds"`
	LastError          string  `json:"last_error"`
	Failures           int     `json:"failures"`
	Watchers           int     `json:"watchers"`
	TTLSeconds         float64 `json:"ttl_seconds"`
}

// entriesJSON is the JSON body of EntriesHandler.
type entriesJSON struct {
	Matched int         `json:"matched"`
	Limit   int         `json:"limit"`
	Entries []entryJSON `json:"entries"`
}

// json returns the JSON form of res.
func (res *entriesResult) json() entriesJSON {
	out := entriesJSON{Matched: res.Matched, Limit: res.Limit, Entries: make([]entryJSON, len(res.Entries))}
	for i, e := range res.Entries {
		out.Entries[i] = entryJSON{
			Type: e.Type, Datacenter: e.Datacenter, Key: e.Key, TokenFingerprint: e.TokenFingerprint,
			HasValue: e.HasValue, Index: e.Index,
			AgeSeconds: e.Age.Seconds(), SinceFetchSeconds: e.SinceFetch.Seconds(),
			Fetching: e.Fetching, Blocking: e.Blocking, Refreshing: e.Refreshing, RefreshStopped: e.RefreshStopped,
			LostContactSeconds: e.LostContact.Seconds(), LastError: e.LastError,
			Failures: e.Failures, Watchers: e.Watchers, TTLSeconds: e.TTL.Seconds(),
		}
	}
	return out
}

// Truncated reports whether entries that matched were left out.
func (res *entriesResult) Truncated() bool { return res.Matched > len(res.Entries) }

// entriesPage is the HTML form of an entriesResult. html/template escapes
// every value.
var entriesPage = template.Must(template.New("entries").Funcs(template.FuncMap{
	"dur": func(d time.Duration) string {
		if d == 0 {
			return "0"
		}
		return d.Round(time.Millisecond).String()
	},
}).Parse(`<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>Cache entries</title>
<style>
body { font-family: sans-serif; }
table { border-collapse: collapse; font-family: monospace; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
</style>
</head>
<body>
<form method="get">
<input type="hidden" name="format" value="html">
type <input name="type" value="{{.Query.Type}}">
datacenter <input name="datacenter" value="{{.Query.Datacenter}}">
key prefix <input name="prefix" value="{{.Query.KeyPrefix}}">
limit <input name="limit" value="{{.Limit}}" size="6">
<input type="submit" value="Show">
</form>
<p>{{.Matched}} entries matched{{if .Truncated}}; the {{len .Entries}} stalest are shown{{end}}.</p>
<table>
<tr><th>type</th><th>datacenter</th><th>key</th><th>token</th><th>value</th><th>index</th><th>age</th><th>since fetch</th><th>fetching</th><th>refreshing</th><th>lost contact</th><th>failures</th><th>watchers</th><th>TTL left</th><th>last error</th></tr>
{{range .Entries}}<tr><td>{{.Type}}</td><td>{{.Datacenter}}</td><td>{{.Key}}</td><td>{{.TokenFingerprint}}</td><td>{{if .HasValue}}yes{{else}}no{{end}}</td><td>{{.Index}}</td><td>{{dur .Age}}</td><td>{{dur .SinceFetch}}</td><td>{{if .Blocking}}blocking{{else if .Fetching}}yes{{end}}</td><td>{{if .RefreshStopped}}stopped{{else if .Refreshing}}yes{{end}}</td><td>{{dur .LostContact}}</td><td>{{.Failures}}</td><td>{{.Watchers}}</td><td>{{dur .TTL}}</td><td>{{.LastError}}</td></tr>
{{end}}</table>
</body>
</html>
`))
