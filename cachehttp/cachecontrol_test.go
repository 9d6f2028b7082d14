package cachehttp_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentcache/cache/cachehttp"
)

// maxDelta is the largest delta-seconds value, as a duration.
const maxDelta = (1 << 31) * time.Second

// header returns a header with one Cache-Control line per value.
func header(values ...string) http.Header {
	h := http.Header{}
	for _, v := range values {
		h.Add("Cache-Control", v)
	}
	return h
}

func TestParseCacheControl(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  cachehttp.Directives
	}{
		{"no header", nil, cachehttp.Directives{}},
		{"empty", []string{""}, cachehttp.Directives{}},
		{"empty elements", []string{" , ,, "}, cachehttp.Directives{}},
		{"max-age", []string{"max-age=5"}, cachehttp.Directives{MaxAge: 5 * time.Second, HasMaxAge: true}},
		{"max-age zero", []string{"max-age=0"}, cachehttp.Directives{HasMaxAge: true}},
		{"leading zeros", []string{"max-age=007"}, cachehttp.Directives{MaxAge: 7 * time.Second, HasMaxAge: true}},
		{"must-revalidate", []string{"must-revalidate"}, cachehttp.Directives{MustRevalidate: true}},
		{"stale-if-error", []string{"stale-if-error=30"}, cachehttp.Directives{StaleIfError: 30 * time.Second}},
		{"stale-if-error zero", []string{"stale-if-error=0"}, cachehttp.Directives{}},
		{
			"all in one line",
			[]string{"max-age=10, must-revalidate, stale-if-error=60"},
			cachehttp.Directives{MaxAge: 10 * time.Second, HasMaxAge: true, MustRevalidate: true, StaleIfError: time.Minute},
		},
		{
			"multiple lines",
			[]string{"max-age=10", "must-revalidate", "stale-if-error=60"},
			cachehttp.Directives{MaxAge: 10 * time.Second, HasMaxAge: true, MustRevalidate: true, StaleIfError: time.Minute},
		},
		{
			"case-insensitive names",
			[]string{"MAX-AGE=3, Must-Revalidate, Stale-If-Error=4"},
			cachehttp.Directives{MaxAge: 3 * time.Second, HasMaxAge: true, MustRevalidate: true, StaleIfError: 4 * time.Second},
		},
		{
			"whitespace",
			[]string{" \tmax-age=3 ,\tmust-revalidate\t, stale-if-error = 4 "},
			cachehttp.Directives{MaxAge: 3 * time.Second, HasMaxAge: true, MustRevalidate: true, StaleIfError: 4 * time.Second},
		},
		{"trailing comma", []string{"max-age=3,"}, cachehttp.Directives{MaxAge: 3 * time.Second, HasMaxAge: true}},
		{"quoted", []string{`max-age="12"`}, cachehttp.Directives{MaxAge: 12 * time.Second, HasMaxAge: true}},
		{"quoted-pair", []string{`stale-if-error="1\2"`}, cachehttp.Directives{StaleIfError: 12 * time.Second}},
		{"2^31", []string{"max-age=2147483648"}, cachehttp.Directives{MaxAge: maxDelta, HasMaxAge: true}},
		{"2^31-1", []string{"max-age=2147483647"}, cachehttp.Directives{MaxAge: maxDelta - time.Second, HasMaxAge: true}},
		{"clamped", []string{"max-age=2147483649"}, cachehttp.Directives{MaxAge: maxDelta, HasMaxAge: true}},
		{"clamped huge", []string{"stale-if-error=" + strings.Repeat("9", 100)}, cachehttp.Directives{StaleIfError: maxDelta}},
		{"clamped quoted", []string{`max-age="99999999999999999999"`}, cachehttp.Directives{MaxAge: maxDelta, HasMaxAge: true}},
		{
			"unknown directives",
			[]string{"no-cache, no-store, max-stale, min-fresh=5, x-foo=bar, max-age=1, only-if-cached"},
			cachehttp.Directives{MaxAge: time.Second, HasMaxAge: true},
		},
		{
			"unknown directive with quoted commas",
			[]string{`x-list="a, max-age=1, must-revalidate", stale-if-error=2`},
			cachehttp.Directives{StaleIfError: 2 * time.Second},
		},
		{
			"escaped quote in unknown directive",
			[]string{`x="a\", max-age=1", max-age=2`},
			cachehttp.Directives{MaxAge: 2 * time.Second, HasMaxAge: true},
		},
		{"malformed unknown directive", []string{"=5, x y z, max-age=1"}, cachehttp.Directives{MaxAge: time.Second, HasMaxAge: true}},
		{"prefix of a known name", []string{"max-ages=x, must-revalidated=1"}, cachehttp.Directives{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cachehttp.ParseCacheControl(header(tt.lines...))
			if err != nil {
				t.Fatalf("ParseCacheControl(%q): %v", tt.lines, err)
			}
			if got != tt.want {
				t.Errorf("ParseCacheControl(%q) = %+v, want %+v", tt.lines, got, tt.want)
			}
		})
	}
}

func TestParseCacheControlNilHeader(t *testing.T) {
	got, err := cachehttp.ParseCacheControl(nil)
	if err != nil || got != (cachehttp.Directives{}) {
		t.Errorf("ParseCacheControl(nil) = %+v, %v; want zero, nil", got, err)
	}
}

func TestParseCacheControlErrors(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string // substring of the error
	}{
		{"max-age without value", []string{"max-age"}, `"max-age": missing value`},
		{"max-age empty", []string{"max-age="}, `"max-age=": missing value`},
		{"max-age empty quoted", []string{`max-age=""`}, `"max-age=\"\"": missing value`},
		{"stale-if-error without value", []string{"stale-if-error"}, `"stale-if-error": missing value`},
		{"non-numeric", []string{"max-age=abc"}, `"max-age=abc": value is not a decimal integer`},
		{"non-numeric quoted", []string{`max-age="abc"`}, `"max-age=\"abc\"": value is not a decimal integer`},
		{"exponent", []string{"stale-if-error=1e3"}, `"stale-if-error=1e3": value is not a decimal integer`},
		{"plus sign", []string{"max-age=+5"}, `"max-age=+5": value is not a decimal integer`},
		{"inner space", []string{"max-age=1 2"}, `"max-age=1 2": value is not a decimal integer`},
		{"negative", []string{"max-age=-1"}, `"max-age=-1": negative value`},
		{"negative quoted", []string{`stale-if-error="-10"`}, `"stale-if-error=\"-10\"": negative value`},
		{"fractional", []string{"max-age=1.5"}, `"max-age=1.5": fractional value`},
		{"fractional without integer part", []string{"stale-if-error=.5"}, `"stale-if-error=.5": fractional value`},
		{"two points", []string{"max-age=1.2.3"}, `"max-age=1.2.3": value is not a decimal integer`},
		{"text after quote", []string{`max-age="5"x`}, `"max-age=\"5\"x": malformed quoted string`},
		{"two quoted strings", []string{`max-age="5""6"`}, `malformed quoted string`},
		{"must-revalidate with value", []string{"must-revalidate=1"}, `"must-revalidate=1": must-revalidate takes no value`},
		{"must-revalidate with empty value", []string{"must-revalidate="}, `must-revalidate takes no value`},
		{"duplicate max-age", []string{"max-age=1, max-age=2"}, `"max-age=2": max-age given more than once`},
		{"duplicate equal max-age", []string{"max-age=1, MAX-AGE=1"}, `"MAX-AGE=1": max-age given more than once`},
		{"duplicate across lines", []string{"stale-if-error=1", "stale-if-error=2"}, `stale-if-error given more than once`},
		{"duplicate must-revalidate", []string{"must-revalidate", "must-revalidate"}, `must-revalidate given more than once`},
		{"unterminated quote", []string{`x="a, max-age=1`}, `unterminated quoted string`},
		{"unterminated escape", []string{`x="a\`}, `unterminated quoted string`},
		{"error on a later line", []string{"max-age=1", "stale-if-error=x"}, `"stale-if-error=x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cachehttp.ParseCacheControl(header(tt.lines...))
			if err == nil {
				t.Fatalf("ParseCacheControl(%q) = %+v, want an error", tt.lines, got)
			}
			if got != (cachehttp.Directives{}) {
				t.Errorf("ParseCacheControl(%q) returned %+v with its error, want zero Directives", tt.lines, got)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseCacheControl(%q) error = %q, want it to contain %q", tt.lines, err, tt.want)
			}
		})
	}
}
