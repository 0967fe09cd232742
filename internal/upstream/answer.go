package upstream

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/redact"
	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

// readAnswer turns a token endpoint's answer (resp's status and headers,
// and its body read whole) into a token, or into the *broker.FetchError
// saying why there is none, looking where a says (vendor.Answer).
//
// Every vendor's answers are read alike (shared/VENDORS.md, "Token answers
// as they really come"): as JSON whatever the Content-Type says, after an
// optional UTF-8 byte-order mark (RFC 8259 §8.1); a lifetime is any JSON
// number or numeric string, in whole seconds rounded down; the token type is
// matched without regard to case.
//
// A refusal (a non-2xx status, a false Success, or an error code in a 2xx
// answer, as some servers send them) carries the status, the vendor's error
// code and description, and Retry-After; a 2xx answer without a usable
// token is Malformed. Every piece of vendor text in the error has the
// secrets of hide scrubbed from it (a vendor may echo what it was sent)
// before it is clipped, so that no secret is cut in half and half shown.
func readAnswer(a vendor.Answer, resp *http.Response, body []byte, hide *redact.Set) (broker.Token, error) {
	body = bytes.TrimPrefix(body, []byte("\uFEFF"))
	if resp.StatusCode/100 == 3 {
		return broker.Token{}, redirected(resp)
	}
	if resp.StatusCode/100 != 2 {
		return broker.Token{}, refusal(a, resp, body, hide)
	}
	if a.Success != "" {
		raw, found := field(body, a.Success)
		var ok bool
		if !found || json.Unmarshal(raw, &ok) != nil {
			return broker.Token{}, malformed(resp, "answer is not the JSON envelope")
		}
		if !ok {
			fe := refusal(a, resp, body, hide)
			fe.Code = cmp.Or(fe.Code, "success false")
			return broker.Token{}, fe
		}
	}
	if fe := refusal(a, resp, body, hide); fe.Code != "" {
		return broker.Token{}, fe
	}
	var (
		tok               broker.Token
		tokenType         string
		life, refreshLife seconds
	)
	readable := decode(body, a.AccessToken, &tok.AccessToken) && decode(body, a.ExpiresIn, &life) &&
		decode(body, a.TokenType, &tokenType) && decode(body, a.RefreshToken, &tok.RefreshToken) &&
		decode(body, a.RefreshExpiresIn, &refreshLife)
	if !readable || tok.AccessToken == "" {
		// One description for every way the token is unreadable: it names
		// the field to look at first, and tests hold it word for word.
		return broker.Token{}, malformed(resp, "no "+where(a.AccessToken))
	}
	if tokenType != "" && !strings.EqualFold(tokenType, "Bearer") {
		return broker.Token{}, malformed(resp, fmt.Sprintf("%s %q is not Bearer", a.TokenType, clip(hide.Scrub(tokenType))))
	}
	tok.ExpiresIn, tok.RefreshExpiresIn = life.duration(), refreshLife.duration()
	return tok, nil
}

// refusal reads a refusal's reason from wherever the vendor puts it.
func refusal(a vendor.Answer, resp *http.Response, body []byte, hide *redact.Set) *broker.FetchError {
	fe := &broker.FetchError{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header, time.Now())}
	if raw, ok := field(body, a.ErrorCode); ok {
		fe.Code = clip(hide.Scrub(text(raw)))
	}
	if raw, ok := field(body, a.ErrorDescription); ok {
		fe.Description = clip(hide.Scrub(text(raw)))
	}
	if fe.Code == "" && fe.Description == "" && !json.Valid(body) {
		// A refusal in plain words ("invalid_client", "Forbidden by WAF")
		// still says why (CONTRACT.md §4: the vendor's message, when it
		// gives one). A page of markup says nothing a person could use.
		fe.Description = plainReason(body, hide)
	}
	return fe
}

// plainReason is the first line of a text answer, scrubbed, tidied and
// bounded, or "" for markup or an empty body.
func plainReason(body []byte, hide *redact.Set) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	line = strings.Join(strings.Fields(hide.Scrub(line)), " ")
	if line == "" || strings.HasPrefix(line, "<") {
		return ""
	}
	return clip(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return -1
		}
		return r
	}, line))
}

// redirected is a 3xx answer: not a refusal of the credentials (they were
// never looked at), but a token_url that is not the token endpoint itself
// (http for https, a missing or extra slash, a moved endpoint). It is an
// answer without a usable token, so the broker backs off as from any
// unusable answer, not as from a refusal. Where it pointed is named by
// scheme and host only: the path and query may hold what was sent
// (Inspera's client_id travels in the query).
func redirected(resp *http.Response) *broker.FetchError {
	to := "without a Location"
	if loc, err := resp.Location(); err == nil && loc.Host != "" {
		to = "to " + loc.Scheme + "://" + loc.Host
	}
	return malformed(resp, "a redirect "+to+": token_url must be the token endpoint itself; "+
		"a token request never follows a redirect, which would carry the credentials elsewhere")
}

func malformed(resp *http.Response, why string) *broker.FetchError {
	return &broker.FetchError{Status: resp.StatusCode, Malformed: true, Description: why}
}

// where names a field for an error: a nested path already says where it
// is, a top-level name is said to be in the answer.
func where(path string) string {
	if strings.Contains(path, ".") {
		return path
	}
	return path + " in the answer"
}

// field finds path in a JSON document; false when the document is not
// JSON, or the path is empty or leads nowhere.
func field(doc []byte, path string) (json.RawMessage, bool) {
	if path == "" {
		return nil, false
	}
	raw := json.RawMessage(doc)
	for name := range strings.SplitSeq(path, ".") {
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return nil, false
		}
		var ok bool
		if raw, ok = obj[name]; !ok {
			return nil, false
		}
	}
	return raw, true
}

// decode reads path into v, leaving v alone when the path is absent; false
// when the value is there but not of v's kind.
func decode(doc []byte, path string, v any) bool {
	raw, ok := field(doc, path)
	return !ok || json.Unmarshal(raw, v) == nil
}

// text reads a JSON string, or an object's "error"/"message" string.
func text(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct{ Error, Message string }
	if json.Unmarshal(raw, &o) == nil {
		return cmp.Or(o.Error, o.Message)
	}
	return ""
}

// seconds is a lifetime given as a JSON number or as a string holding one
// ("3600"), as token endpoints variously do.
type seconds int64

// UnmarshalJSON takes a number or numeric string; null and "" are no
// lifetime. Fractions are rounded down, a negative lifetime is none given,
// and one beyond what a time.Duration holds is capped rather than wrapped.
func (s *seconds) UnmarshalJSON(b []byte) error {
	str := string(b)
	if strings.HasPrefix(str, `"`) {
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
	}
	if str == "" || str == "null" {
		*s = 0
		return nil
	}
	f, err := strconv.ParseFloat(str, 64)
	if !isNumber(str) || err != nil && !errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("lifetime %q is not a number", clip(str))
	}
	*s = seconds(min(max(f, 0), maxSeconds))
	return nil
}

// isNumber reports whether s is a JSON number (RFC 8259 §6): what a
// numeric string may hold, so no hex, no "Inf", no spaces.
func isNumber(s string) bool {
	return s != "" && (s[0] == '-' || '0' <= s[0] && s[0] <= '9') && '0' <= s[len(s)-1] && s[len(s)-1] <= '9' &&
		json.Valid([]byte(s))
}

// maxSeconds is the longest lifetime a time.Duration holds, in seconds.
const maxSeconds = float64(math.MaxInt64 / time.Second)

func (s seconds) duration() time.Duration { return time.Duration(s) * time.Second }

// retryAfter reads a Retry-After header given in seconds or as an HTTP
// date (RFC 9110 §10.2.3); 0 when absent or unreadable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		return seconds(min(float64(secs), maxSeconds)).duration()
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// clip bounds vendor text carried into errors and logs.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
