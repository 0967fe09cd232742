package redact

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// Every way a vendor's text may repeat what it was sent, written by the
// encoders that write it (not by Forms), is hidden.
func TestScrubHidesEveryForm(t *testing.T) {
	const secret = `s+e/c r=t%é<&>"\😀~*'`
	var python strings.Builder // json.dumps(ensure_ascii=True): \u escapes, lower case
	for _, r := range secret {
		switch {
		case r == '"' || r == '\\':
			python.WriteString(`\` + string(r))
		case r == 'é':
			python.WriteString(`\u00e9`)
		case r == '😀':
			python.WriteString(`\ud83d\ude00`)
		default:
			python.WriteRune(r)
		}
	}
	goJSON, _ := json.Marshal(secret)
	encoded := map[string]string{
		"raw":                       secret,
		"form body":                 strings.TrimPrefix(url.Values{"k": {secret}}.Encode(), "k="),
		"form body, lower hex":      strings.ToLower(strings.TrimPrefix(url.Values{"k": {secret}}.Encode(), "k=")),
		"path segment":              url.PathEscape(secret),
		"Go JSON":                   string(goJSON[1 : len(goJSON)-1]),
		"Python JSON":               python.String(),
		"Java JSON, upper hex":      strings.NewReplacer(`\u00e9`, `\u00E9`, `\ud83d\ude00`, `\uD83D\uDE00`).Replace(python.String()),
		"PHP JSON, slash escaped":   strings.ReplaceAll(python.String(), "/", `\/`),
		"base64":                    base64.StdEncoding.EncodeToString([]byte(secret)),
		"URL base64":                base64.URLEncoding.EncodeToString([]byte(secret)),
		"base64 without padding":    base64.RawStdEncoding.EncodeToString([]byte(secret)),
		"URL base64 without pad":    base64.RawURLEncoding.EncodeToString([]byte(secret)),
		"a pair, as Basic sends it": base64.StdEncoding.EncodeToString([]byte(url.QueryEscape("id-1") + ":" + url.QueryEscape(secret))),
	}
	var s Set
	s.Add(secret, base64.StdEncoding.EncodeToString([]byte(url.QueryEscape("id-1")+":"+url.QueryEscape(secret))))
	for name, e := range encoded {
		if got := s.Scrub("before " + e + " after"); got != "before REDACTED after" {
			t.Errorf("%s (%s): scrubbed to %q", name, e, got)
		}
	}
}

// A secret inside another is never half replaced; a short one is left
// alone, and so is text without secrets.
func TestScrubOverlapsAndShortValues(t *testing.T) {
	var s Set
	s.Add("abcd", "abcdefgh", "ab", "")
	for in, want := range map[string]string{
		"x abcdefgh y abcd z": "x REDACTED y REDACTED z",
		"ab abc":              "ab abc",
		"HTTP 401":            "HTTP 401",
		"":                    "",
	} {
		if got := s.Scrub(in); got != want {
			t.Errorf("Scrub(%q) = %q, want %q", in, got, want)
		}
	}
	if Forms("abc") != nil {
		t.Errorf("a 3-byte secret has forms: %q", Forms("abc"))
	}
	var none *Set
	if got := none.Scrub("abcd"); got != "abcd" {
		t.Errorf("a nil Set scrubbed %q", got)
	}
	var zero Set
	if got := zero.Scrub("abcd"); got != "abcd" {
		t.Errorf("the zero Set scrubbed %q", got)
	}
}
