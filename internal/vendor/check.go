package vendor

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/tokenproxy/tokenproxy/internal/endpoint"
)

// Problem is one thing wrong with a description, at a key path relative to
// it ("token.fields.client_id").
type Problem struct {
	Path string
	Msg  string
}

type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Check reports every problem of d: what would make a request
// unbuildable, an answer unreadable, a token never sent, or a credential
// sent where it must not go.
func (d *Description) Check() []Problem {
	var ps problems
	if d.Token == nil {
		if d.Refresh != nil {
			ps.add("refresh", "needs a token request (token) to refresh")
		}
		if d.Answer != (Answer{}) {
			ps.add("answer", "needs a token request (token) whose answer it reads")
		}
	} else {
		d.checkRequest(&ps, "token", d.Token, false)
		d.checkAnswer(&ps)
	}
	if d.Refresh != nil && d.Token != nil {
		if d.Refresh.URL != "" {
			ps.add("refresh.url", "the refresh grant goes to the token endpoint (RFC 6749 §6); set token.url or token_url instead")
		}
		d.checkRequest(&ps, "refresh", d.RefreshRequest(), true)
	}
	if len(d.Headers) == 0 {
		ps.add("headers", "required: the headers every API call carries, e.g. Authorization: Bearer {token}")
	}
	checkHeaders(&ps, "headers", d.Headers, apiPlaceholders, false)
	tokenSent := false
	for _, t := range d.Headers {
		if p, err := ParseTemplate(t); err == nil && p.Has("token") {
			tokenSent = true
		}
	}
	switch {
	case d.Token == nil && tokenSent:
		ps.add("headers", "{token} needs a token request (token); without one the headers come from the credentials alone")
	case d.Token != nil && !tokenSent && len(d.Headers) > 0:
		ps.add("headers", "no header carries {token}: the token would never be sent")
	}
	d.checkCredentials(&ps)
	d.checkScope(&ps)
	return ps
}

// Which placeholders each kind of template may use.
var (
	grantPlaceholders   = []string{"credential", "basic", "scope", "audience"}
	refreshPlaceholders = []string{"credential", "basic", "scope", "audience", "refresh_token"}
	apiPlaceholders     = []string{"credential", "basic", "token", "scope", "audience"}
)

func (d *Description) checkRequest(ps *problems, path string, r *Request, refresh bool) {
	if !refresh {
		checkTokenURL(ps, path+".url", r.URL)
	}
	switch r.MethodOf() {
	case http.MethodPost, http.MethodPut:
	case http.MethodGet:
		if r.BodyOf() != BodyNone {
			ps.add(path+".body", "a GET has no body: use body: none (and query for its parameters)")
		}
	default:
		ps.add(path+".method", "%q is not one of POST, PUT, GET", r.Method)
	}
	switch r.BodyOf() {
	case BodyForm, BodyJSON:
	case BodyNone:
		if len(r.Fields) > 0 {
			ps.add(path+".fields", "body none sends no fields: use body form or json, or query")
		}
	default:
		ps.add(path+".body", "%q is not one of form, json, none", r.Body)
	}
	allowed := grantPlaceholders
	if refresh {
		allowed = refreshPlaceholders
	}
	checkTemplates(ps, path+".fields", r.Fields, allowed)
	checkTemplates(ps, path+".query", r.Query, allowed)
	checkHeaders(ps, path+".headers", r.Headers, allowed, true)
	if refresh {
		has := false
		for _, m := range []map[string]string{r.Fields, r.Query, r.Headers} {
			for _, v := range m {
				if t, err := ParseTemplate(v); err == nil && t.Has("refresh_token") {
					has = true
				}
			}
		}
		if !has {
			ps.add(path, "never presents {refresh_token}")
		}
	}
}

// checkTokenURL accepts a path for base_url, or an absolute https URL (http
// only to a loopback host): a token request carries secrets.
func checkTokenURL(ps *problems, path, raw string) {
	if raw == "" {
		return
	}
	if strings.HasPrefix(raw, "/") {
		if strings.HasPrefix(raw, "//") || strings.ContainsAny(raw, "?#") {
			ps.add(path, "%q must be a path after base_url (/oauth/token) or an absolute URL, without a query or fragment", raw)
		}
		return
	}
	switch err := endpoint.Check(raw, endpoint.LoopbackOnly); {
	case errors.Is(err, endpoint.ErrNotAbsolute):
		ps.add(path, "%q is neither a path after base_url (/oauth/token) nor an absolute URL", raw)
	case errors.Is(err, endpoint.ErrQuery):
		ps.add(path, "must not have a query or fragment (use query for parameters)")
	case err != nil:
		ps.add(path, "%s", err)
	}
}

var pathRE = regexp.MustCompile(`^[^.\s]+(\.[^.\s]+)*$`)

func (d *Description) checkAnswer(ps *problems) {
	a := d.Answer
	if a.AccessToken == "" {
		ps.add("answer.access_token", "required: where the answer keeps the access token (a dot path such as data.accessToken)")
	}
	for _, f := range []struct{ key, path string }{
		{"success", a.Success}, {"access_token", a.AccessToken}, {"token_type", a.TokenType},
		{"expires_in", a.ExpiresIn}, {"refresh_token", a.RefreshToken}, {"refresh_expires_in", a.RefreshExpiresIn},
		{"error_code", a.ErrorCode}, {"error_description", a.ErrorDescription},
	} {
		if f.path != "" && !pathRE.MatchString(f.path) {
			ps.add("answer."+f.key, "%q is not a dot path into the answer's JSON (data.accessToken)", f.path)
		}
	}
	switch {
	case a.RefreshToken != "" && d.Refresh == nil:
		ps.add("refresh", "required with answer.refresh_token: the grant that presents it")
	case a.RefreshToken == "" && d.Refresh != nil:
		ps.add("answer.refresh_token", "required with a refresh grant: where the answer keeps the refresh token")
	case a.RefreshExpiresIn != "" && a.RefreshToken == "":
		ps.add("answer.refresh_expires_in", "needs answer.refresh_token")
	}
}

// checkTemplates reports templates that do not parse, placeholders not
// allowed where they are, and text that could split a header.
func checkTemplates(ps *problems, path string, m map[string]string, allowed []string) {
	for _, k := range sortedKeys(m) {
		p := join(path, k)
		t, err := ParseTemplate(m[k])
		if err != nil {
			ps.add(p, "%s", err)
			continue
		}
		for _, s := range t {
			if s.name != "" && !slices.Contains(allowed, s.name) {
				ps.add(p, "{%s} cannot be used here; here: %s", s.name, braced(allowed))
			}
			if s.name == "credential" || s.name == "basic" {
				for _, a := range s.args {
					if !keyRE.MatchString(a) {
						ps.add(p, "%q is not a credential key name", a)
					}
				}
			}
		}
		if strings.ContainsAny(t.literal(), "\r\n\x00") {
			ps.add(p, "holds a CR, LF or NUL character")
		}
	}
}

var keyRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

func braced(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "{" + n + "}"
	}
	return strings.Join(out, ", ")
}

// Header names a description may not set, and why. Each would either be
// read by another host than the upstream (a proxy on the way), be acted on
// or dropped by the first hop, or fight what tokenproxy sets itself.
var reserved = map[string]string{
	"Proxy-Authorization": "is read by an HTTP proxy on the way, so its value would reach a host other than the upstream's",
	"Proxy-Authenticate":  "is read by an HTTP proxy on the way, so its value would reach a host other than the upstream's",
	"Proxy-Connection":    "is read by an HTTP proxy on the way, so its value would reach a host other than the upstream's",
	"Connection":          "is hop-by-hop (RFC 9110 §7.6.1): the first hop, maybe a proxy, acts on it",
	"Keep-Alive":          "is hop-by-hop (RFC 9110 §7.6.1): the first hop, maybe a proxy, acts on it",
	"Te":                  "is hop-by-hop (RFC 9110 §7.6.1): the first hop, maybe a proxy, acts on it",
	"Trailer":             "is hop-by-hop (RFC 9110 §7.6.1): the first hop, maybe a proxy, acts on it",
	"Upgrade":             "is hop-by-hop (RFC 9110 §7.6.1): the first hop, maybe a proxy, acts on it",
	"Transfer-Encoding":   "is set by tokenproxy from the request itself",
	"Content-Length":      "is set by tokenproxy from the request itself",
	"Host":                "is set by tokenproxy from the upstream's URL",
	"Forwarded":           "is removed from every request",
	"X-Forwarded-For":     "is removed from every request",
	"X-Forwarded-Host":    "is removed from every request",
	"X-Forwarded-Proto":   "is removed from every request",
	"Content-Type":        "is set by tokenproxy (from body on a token request, by the caller on an API call)",
	// What tokenproxy sets on every API call, or passes on as the caller
	// sent it: a description's value would replace it, and the upstream
	// would log (and may echo back) a credential as the request's id or
	// trace.
	"X-Request-Id":    "is tokenproxy's: the caller's id, or a new one, goes to the upstream and back (CONTRACT.md §3)",
	"Traceparent":     "is tokenproxy's: the W3C Trace Context of the caller's trace or tokenproxy's span",
	"Tracestate":      "is tokenproxy's: the W3C Trace Context of the caller's trace or tokenproxy's span",
	"Baggage":         "is the caller's W3C Baggage, passed on as sent",
	"Accept-Encoding": "is the caller's on an API call, and Go's on a token request (which then decompresses the answer itself)",
}

// reservedPrefix is tokenproxy's own header namespace (Tokenproxy-Error).
const reservedPrefix = "Tokenproxy-"

// checkHeaders checks header names and their templates. token says the
// headers go on a token request, where Accept is tokenproxy's.
func checkHeaders(ps *problems, path string, m map[string]string, allowed []string, token bool) {
	seen := map[string]string{}
	for _, k := range sortedKeys(m) {
		p := join(path, k)
		canon := http.CanonicalHeaderKey(k)
		switch {
		case !httpguts.ValidHeaderFieldName(k):
			ps.add(p, "%q is not a valid header name", k)
		case reserved[canon] != "":
			ps.add(p, "%s %s", canon, reserved[canon])
		case strings.HasPrefix(canon, reservedPrefix):
			ps.add(p, "%s is in tokenproxy's own header namespace (%s*: Tokenproxy-Error)", canon, reservedPrefix)
		case token && canon == "Accept":
			ps.add(p, "Accept is tokenproxy's: token answers are read as JSON")
		}
		if other, dup := seen[canon]; dup {
			ps.add(p, "the same header as %s (header names ignore case)", other)
		}
		seen[canon] = k
	}
	checkTemplates(ps, path, m, allowed)
}

func (d *Description) checkCredentials(ps *problems) {
	used := map[string]bool{}
	var refs []tmpl
	for _, t := range d.templates() {
		if p, err := ParseTemplate(t.value); err == nil {
			for _, k := range p.Keys() {
				used[k] = true
			}
			if len(p.Keys()) > 0 {
				refs = append(refs, t)
			}
		}
	}
	if len(d.Credentials) == 0 {
		if len(used) == 0 {
			ps.add("credentials", "nothing sends a credential: no template has {credential KEY}")
		}
		return
	}
	listed := map[string]bool{}
	for i, k := range d.Credentials {
		p := fmt.Sprintf("credentials[%d]", i)
		switch {
		case !keyRE.MatchString(k):
			ps.add(p, "%q is not a credential key name", k)
		case listed[k]:
			ps.add(p, "%s is listed twice", k)
		case !used[k]:
			ps.add(p, "%s is listed but no request or header sends it", k)
		}
		listed[k] = true
	}
	for _, t := range refs {
		p, _ := ParseTemplate(t.value)
		for _, k := range p.Keys() {
			if !listed[k] {
				ps.add(t.path(), "{credential %s}: %s is not in credentials, so it would never be required", k, k)
			}
		}
	}
}

// path is where t is in the description.
func (t tmpl) path() string {
	if t.kind == partAPIHeader {
		return join("headers", t.name)
	}
	return join(t.req+"."+t.kind, t.name)
}

func (d *Description) checkScope(ps *problems) {
	if (d.Scope.Default != "" || d.Scope.Requires != "") && !d.Uses("scope") {
		ps.add("scope", "no template sends {scope}")
	}
	if d.Scope.Requires != "" && d.Scope.Default != "" && !slices.Contains(strings.Fields(d.Scope.Default), d.Scope.Requires) {
		ps.add("scope.default", "must hold %s, which scope.requires asks of every scope", d.Scope.Requires)
	}
	if strings.ContainsAny(d.Scope.Requires, " \t") {
		ps.add("scope.requires", "is one scope value, without spaces")
	}
}

// CheckScope reports what is wrong with a configured scope for d (HGEM
// refuses a scope without hgem-results-api); "" when nothing is.
func (d *Description) CheckScope(scope string) string {
	if d.Scope.Requires != "" && scope != "" && !slices.Contains(strings.Fields(scope), d.Scope.Requires) {
		return "must contain " + d.Scope.Requires + " when set"
	}
	return ""
}

// join appends key to a key path as the config's problems write it: a key
// that is not a plain name is quoted.
func join(path, key string) string {
	if !plainKeyRE.MatchString(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

var plainKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
