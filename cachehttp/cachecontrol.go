package cachehttp

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// maxDeltaSeconds is the value that larger delta-seconds are clamped to,
// as RFC 9111 section 1.2.2 says.
const maxDeltaSeconds = 1 << 31

// Directives are the Cache-Control request directives that the cache
// understands. The zero value means that none was given.
type Directives struct {
	// MaxAge is the value of max-age: the client does not want a value
	// older than this. It is meaningful only when HasMaxAge is set.
	MaxAge time.Duration

	// HasMaxAge reports whether max-age was given, which tells max-age=0
	// (no cached value is fresh enough) from no max-age at all.
	HasMaxAge bool

	// MustRevalidate reports whether must-revalidate was given: the
	// client wants the value fetched again before it is served.
	MustRevalidate bool

	// StaleIfError is the value of stale-if-error: when fetching fails,
	// the client accepts a cached value up to this old instead of an
	// error. Zero means the directive was absent (or stale-if-error=0).
	StaleIfError time.Duration
}

// ParseCacheControl parses the Cache-Control header fields of h, which are
// request directives. It reads every Cache-Control line, each a
// comma-separated list; empty list elements and whitespace around
// directives are ignored, and directive names are case-insensitive.
//
// It recognises max-age=N, must-revalidate and stale-if-error=N, where N is
// a number of seconds written as a non-negative decimal integer, bare or as
// a quoted string ("N"). Values above 2^31 seconds are taken as 2^31
// seconds, as RFC 9111 section 1.2.2 says. Other directives are ignored,
// whatever their arguments; quoted strings in them may contain commas.
//
// It returns an error, naming the directive, for a malformed recognised
// directive: a missing, negative, fractional or non-numeric value, a value
// given to must-revalidate, or a directive given more than once (even with
// the same value), which RFC 9111 treats as invalid. It also returns an
// error for an unterminated quoted string, since the list cannot then be
// split. Without a Cache-Control header, it returns zero Directives and no
// error.
func ParseCacheControl(h http.Header) (Directives, error) {
	var d Directives
	var seenMaxAge, seenRevalidate, seenStale bool
	for _, line := range h.Values("Cache-Control") {
		for rest := line; rest != ""; {
			var elem string
			var err error
			elem, rest, err = nextElement(rest)
			if err != nil {
				return Directives{}, err
			}
			if elem == "" {
				continue
			}
			name, value, hasValue := strings.Cut(elem, "=")
			name = trimOWS(name)
			value = trimOWS(value)
			switch {
			case strings.EqualFold(name, "max-age"):
				if seenMaxAge {
					return Directives{}, duplicate(elem, "max-age")
				}
				seenMaxAge = true
				if d.MaxAge, err = parseDelta(elem, value, hasValue); err != nil {
					return Directives{}, err
				}
				d.HasMaxAge = true
			case strings.EqualFold(name, "must-revalidate"):
				if seenRevalidate {
					return Directives{}, duplicate(elem, "must-revalidate")
				}
				seenRevalidate = true
				if hasValue {
					return Directives{}, invalid(elem, "must-revalidate takes no value")
				}
				d.MustRevalidate = true
			case strings.EqualFold(name, "stale-if-error"):
				if seenStale {
					return Directives{}, duplicate(elem, "stale-if-error")
				}
				seenStale = true
				if d.StaleIfError, err = parseDelta(elem, value, hasValue); err != nil {
					return Directives{}, err
				}
			}
		}
	}
	return d, nil
}

// nextElement splits the first element off a comma-separated list, leaving
// commas inside quoted strings alone. elem has surrounding whitespace
// removed; rest follows the comma.
func nextElement(s string) (elem, rest string, err error) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++ // quoted-pair: skip the escaped byte
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == ',':
			return trimOWS(s[:i]), s[i+1:], nil
		}
	}
	if inQuote {
		return "", "", fmt.Errorf("cachehttp: invalid Cache-Control header %q: unterminated quoted string", s)
	}
	return trimOWS(s), "", nil
}

// trimOWS removes HTTP optional whitespace (spaces and tabs) around s.
func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}

// parseDelta parses the delta-seconds value of the directive elem.
func parseDelta(elem, value string, hasValue bool) (time.Duration, error) {
	if strings.HasPrefix(value, `"`) {
		v, ok := unquote(value)
		if !ok {
			return 0, invalid(elem, "malformed quoted string")
		}
		value = v
	}
	switch {
	case !hasValue || value == "":
		return 0, invalid(elem, "missing value")
	case value[0] == '-' && isNumber(value[1:]):
		return 0, invalid(elem, "negative value")
	case isNumber(value) && strings.Contains(value, "."):
		return 0, invalid(elem, "fractional value")
	}
	var n int64
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c < '0' || c > '9' {
			return 0, invalid(elem, "value is not a decimal integer")
		}
		if n < maxDeltaSeconds {
			n = n*10 + int64(c-'0')
		}
	}
	n = min(n, maxDeltaSeconds)
	return time.Duration(n) * time.Second, nil
}

// isNumber reports whether s is digits with at most one decimal point.
func isNumber(s string) bool {
	digits, points := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			points++
		default:
			return false
		}
	}
	return digits > 0 && points <= 1
}

// unquote returns the content of the quoted string s, which must be the
// whole of s, with its quoted-pairs unescaped.
func unquote(s string) (string, bool) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		switch c {
		case '"':
			return "", false
		case '\\':
			i++
			if i == len(s)-1 {
				return "", false
			}
			c = s[i]
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

// invalid returns the error for the malformed directive elem.
func invalid(elem, reason string) error {
	return fmt.Errorf("cachehttp: invalid Cache-Control directive %q: %s", elem, reason)
}

// duplicate returns the error for elem, a repeat of the directive name.
func duplicate(elem, name string) error {
	return invalid(elem, name+" given more than once")
}
