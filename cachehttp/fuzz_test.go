package cachehttp_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/agentcache/cache/cachehttp"
)

// FuzzParseCacheControl checks ParseCacheControl on arbitrary headers. A
// newline in the input separates Cache-Control lines.
func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{
		"",
		"max-age=5",
		"max-age=0, must-revalidate",
		"MAX-AGE=10\nStale-If-Error=60",
		`max-age="30", stale-if-error="\1\0"`,
		`x-foo="a, max-age=1, \"b\"", max-age=2`,
		"max-age=99999999999999999999",
		"max-age=-1",
		"max-age=1.5",
		"must-revalidate=1",
		"max-age=1, max-age=1",
		`x="unterminated`,
		" , ,\t,max-age = 3 ,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h := http.Header{"Cache-Control": strings.Split(s, "\n")}
		d, err := cachehttp.ParseCacheControl(h)

		d2, err2 := cachehttp.ParseCacheControl(h)
		if d != d2 || fmt.Sprint(err) != fmt.Sprint(err2) {
			t.Fatalf("not deterministic: %+v, %v then %+v, %v", d, err, d2, err2)
		}
		if err != nil {
			if d != (cachehttp.Directives{}) {
				t.Fatalf("error %v with non-zero %+v", err, d)
			}
			return
		}
		for name, v := range map[string]int64{"MaxAge": int64(d.MaxAge), "StaleIfError": int64(d.StaleIfError)} {
			if v < 0 || v > int64(maxDelta) {
				t.Fatalf("%s = %d, out of [0, 2^31 s]", name, v)
			}
		}
		if !d.HasMaxAge && d.MaxAge != 0 {
			t.Fatalf("MaxAge = %v without max-age", d.MaxAge)
		}

		canon := render(d)
		back, err := cachehttp.ParseCacheControl(http.Header{"Cache-Control": {canon}})
		if err != nil {
			t.Fatalf("parsing the rendering %q of %+v: %v", canon, d, err)
		}
		if back != d {
			t.Fatalf("rendering %q of %+v parses as %+v", canon, d, back)
		}
	})
}

// render returns the canonical Cache-Control value for d.
func render(d cachehttp.Directives) string {
	var parts []string
	if d.HasMaxAge {
		parts = append(parts, fmt.Sprintf("max-age=%d", int64(d.MaxAge.Seconds())))
	}
	if d.MustRevalidate {
		parts = append(parts, "must-revalidate")
	}
	if d.StaleIfError > 0 {
		parts = append(parts, fmt.Sprintf("stale-if-error=%d", int64(d.StaleIfError.Seconds())))
	}
	return strings.Join(parts, ", ")
}
