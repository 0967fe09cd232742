// Package redact owns the forms a secret takes in text that repeats what
// tokenproxy sent, and hides every one of them: a vendor's refusal may echo
// the token request it was given, its body form-encoded, its JSON escaped,
// its Basic credentials in base64 (RFC 6749 §2.3.1), so that removing the
// raw values alone would leave the secrets readable.
package redact

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// Mask is what every form of a secret is replaced with.
const Mask = "REDACTED"

// MinLen is the shortest secret hidden, in bytes: a shorter one (a
// two-digit client id) would blank out unrelated words and numbers of a
// message, and says little on its own.
const MinLen = 4

// Forms are the spellings of s in text that repeats what was sent, without
// duplicates:
//
//   - s as it is;
//   - percent-encoded as a form or query value (space as +, as
//     url.Values.Encode and HTML forms write it) and as a path segment
//     (space as %20), each with upper- and lower-case hex digits (RFC 3986
//     §2.1 lets either be written);
//   - inside a JSON string (RFC 8259 §7), as Go writes it (with and
//     without escaping <, > and &), with every non-ASCII character as \u
//     escapes in lower and upper case (Python's and Java's defaults), and
//     with / written as \/ (PHP's default);
//   - in standard and URL base64 (RFC 4648 §4 and §5), padded or not.
//
// A secret shorter than MinLen has no forms.
func Forms(s string) []string {
	if len(s) < MinLen {
		return nil
	}
	forms := []string{s}
	for _, p := range []string{url.QueryEscape(s), url.PathEscape(s)} {
		forms = append(forms, p, lowerHex(p))
	}
	for _, j := range jsonForms(s) {
		forms = append(forms, j, strings.ReplaceAll(j, "/", `\/`))
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		forms = append(forms, enc.EncodeToString([]byte(s)))
	}
	slices.Sort(forms)
	return slices.Compact(forms)
}

// jsonForms are s inside a JSON string, without the quotes, as common
// encoders write it.
func jsonForms(s string) []string {
	html, _ := json.Marshal(s) // never fails for a string
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	plain := strings.TrimSuffix(b.String(), "\n")
	out := []string{unquote(html), unquote([]byte(plain))}
	lower, upper := asciiJSON(unquote([]byte(plain)), "%04x"), asciiJSON(unquote([]byte(plain)), "%04X")
	return append(out, lower, upper)
}

func unquote(b []byte) string { return string(b[1 : len(b)-1]) }

// asciiJSON writes every non-ASCII character of a JSON string body as \u
// escapes (a UTF-16 surrogate pair above U+FFFF), hex in format.
func asciiJSON(s, format string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < utf8.RuneSelf:
			b.WriteRune(r)
		case r > 0xFFFF:
			r -= 0x10000
			fmt.Fprintf(&b, `\u`+format+`\u`+format, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			fmt.Fprintf(&b, `\u`+format, r)
		}
	}
	return b.String()
}

// lowerHex writes the hex digits of p's percent escapes in lower case.
func lowerHex(p string) string {
	b := []byte(p)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lower(b[i+1]), lower(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// Set is the secrets to hide in a text. The zero value, and nil, hide
// nothing. Add and Scrub must not run at once.
type Set struct {
	forms []string
	r     *strings.Replacer
}

// Add adds secrets to hide, each in all its Forms.
func (s *Set) Add(secrets ...string) {
	for _, v := range secrets {
		s.forms = append(s.forms, Forms(v)...)
	}
	// strings.Replacer tries its pairs in order at each position: longest
	// first, so that a secret is never half replaced by a shorter one
	// inside it.
	slices.SortFunc(s.forms, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	s.forms = slices.Compact(s.forms)
	pairs := make([]string, 0, 2*len(s.forms))
	for _, f := range s.forms {
		pairs = append(pairs, f, Mask)
	}
	s.r = strings.NewReplacer(pairs...)
}

// Scrub replaces every form of every secret of s in text with Mask. Where
// forms overlap (one secret holding another), the longest is replaced.
func (s *Set) Scrub(text string) string {
	if s == nil || s.r == nil {
		return text
	}
	return s.r.Replace(text)
}
