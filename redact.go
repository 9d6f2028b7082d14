package cache

import (
	"cmp"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// redactedText is what an ACL token is replaced with.
const redactedText = "<redacted>"

// shortToken is the length, in bytes, below which a token is redacted only
// where it stands as a word of its own.
const shortToken = 8

// redact returns msg with the ACL token replaced by "<redacted>" in every
// form the usual encodings give it: as it is; Go-quoted, as %q and %#v
// write it (strconv.Quote), and ASCII-quoted, as %+q does
// (strconv.QuoteToASCII); JSON-quoted (encoding/json); and URL-escaped
// (url.QueryEscape and url.PathEscape), with upper- or lower-case hex.
//
// A token shorter than 8 bytes, such as "on", replaced wherever it occurs
// would rewrite ordinary words ("connection"). It is therefore replaced only
// where it is not part of a longer word, that is, where no letter or digit
// touches an end of it that is itself a letter or digit: the token never
// survives as a word of its own, and the words that contain it survive. A
// token of 8 bytes or more is replaced wherever it occurs. An empty token
// replaces nothing.
//
// Every form keeps the token's letters, digits and "-._~" as they are, so a
// message without the longest run of those in the token holds no form of
// it: that check, which allocates nothing, is all that a message without
// the token costs.
func redact(token, msg string) string {
	msg, _ = redactString(token, msg)
	return msg
}

// redactError returns err, or, if its message contains the token in a form
// that redact replaces, an error with the message redacted that still
// unwraps to err, so errors.Is and errors.As see the original.
func redactError(token string, err error) error {
	if token == "" {
		return err
	}
	msg, changed := redactString(token, err.Error())
	if !changed {
		return err
	}
	return &redactedError{err: err, msg: msg}
}

// redactedError is an error whose message had the ACL token redacted.
type redactedError struct {
	err error
	msg string
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactString is redact, and also reports whether it replaced anything.
func redactString(token, msg string) (string, bool) {
	if token == "" {
		return msg, false
	}
	run := plainRun(token)
	if !strings.Contains(msg, run) {
		return msg, false
	}
	whole := len(token) < shortToken
	if len(run) == len(token) {
		// Every encoding leaves the token as it is.
		return replaceForm(msg, token, whole)
	}
	changed := false
	for _, form := range tokenForms(token) {
		var c bool
		msg, c = replaceForm(msg, form, whole)
		changed = changed || c
	}
	return msg, changed
}

// plainRun returns the longest run of bytes in token that no encoding
// changes: ASCII letters and digits and "-._~". It may be empty.
func plainRun(token string) string {
	best, start := "", 0
	for i := 0; i < len(token); i++ {
		if !isPlain(token[i]) {
			if i-start > len(best) {
				best = token[start:i]
			}
			start = i + 1
		}
	}
	if len(token)-start > len(best) {
		best = token[start:]
	}
	return best
}

// isPlain reports whether b is an ASCII letter or digit or one of "-._~",
// the bytes that URL escaping, Go quoting and JSON all leave as they are.
func isPlain(b byte) bool {
	if l := b | 0x20; 'a' <= l && l <= 'z' { // either case
		return true
	}
	return '0' <= b && b <= '9' || b == '-' || b == '.' || b == '_' || b == '~'
}

// tokenForms returns the distinct forms of token that redact replaces,
// longest first, so that a form containing a shorter one goes whole.
func tokenForms(token string) []string {
	q := strconv.Quote(token)
	a := strconv.QuoteToASCII(token)
	j, _ := json.Marshal(token) // a string always marshals
	qe, pe := url.QueryEscape(token), url.PathEscape(token)
	forms := []string{
		token, q[1 : len(q)-1], a[1 : len(a)-1], string(j[1 : len(j)-1]),
		qe, lowerHex(qe), pe, lowerHex(pe),
	}
	slices.SortFunc(forms, func(x, y string) int {
		return cmp.Or(len(y)-len(x), strings.Compare(x, y))
	})
	return slices.Compact(forms)
}

// lowerHex returns the URL-escaped s with the hex digits of its escapes in
// lower case. Every '%' in s starts an escape: a '%' of the token itself
// is escaped as "%25".
func lowerHex(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lowerHexDigit(b[i+1]), lowerHexDigit(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lowerHexDigit(c byte) byte {
	if 'A' <= c && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// replaceForm replaces form in msg with redactedText: everywhere, or, if
// whole, where it is not part of a longer word. It reports whether it
// replaced anything.
func replaceForm(msg, form string, whole bool) (string, bool) {
	if !whole {
		if !strings.Contains(msg, form) {
			return msg, false
		}
		return strings.ReplaceAll(msg, form, redactedText), true
	}
	var b strings.Builder
	done, changed := 0, false
	for i := 0; ; {
		j := strings.Index(msg[i:], form)
		if j < 0 {
			break
		}
		start, end := i+j, i+j+len(form)
		if inWord(msg, form, start, end) {
			i = start + 1
			continue
		}
		b.WriteString(msg[done:start])
		b.WriteString(redactedText)
		done, i, changed = end, end, true
	}
	if !changed {
		return msg, false
	}
	b.WriteString(msg[done:])
	return b.String(), true
}

// inWord reports whether the occurrence msg[start:end] of form is part of a
// longer word: a letter or digit touches an end of it that is a letter or
// digit too.
func inWord(msg, form string, start, end int) bool {
	first, _ := utf8.DecodeRuneInString(form)
	last, _ := utf8.DecodeLastRuneInString(form)
	prev, _ := utf8.DecodeLastRuneInString(msg[:start]) // RuneError at the start
	next, _ := utf8.DecodeRuneInString(msg[end:])
	return isWordRune(first) && isWordRune(prev) || isWordRune(last) && isWordRune(next)
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }
