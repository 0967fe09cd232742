// Package vendor owns what makes a vendor API a vendor, as data: how its
// token request is made, where its answer keeps the token, which grants it
// has, and which headers every API call carries. The four built-in vendors
// are four descriptions (builtin/*.yaml); a config brings a fifth as
// `type: oauth2` (RFC 6749, compiled to a description), `type: custom` (a
// description written in YAML) or `type: static` (headers from credentials
// alone). Config validation, required credential keys, default token URLs,
// scope rules, the simulators and dev mode read descriptions from here; the
// one adapter in internal/upstream carries them out.
//
// The package is a leaf: plain data, its checks and its templates.
package vendor

import (
	"net/http"
	"slices"
	"strings"
)

// Description is one vendor. Values of Fields, Query and Headers are
// templates (Template): text with placeholders such as {credential api_key}
// or {token}. A value that comes out empty is not sent (an unset scope).
type Description struct {
	// Credentials are the keys the credentials object must hold, in the
	// order a missing one is named. Empty: every key a template refers to,
	// sorted.
	Credentials []string `yaml:"credentials,omitempty"`
	// Scope is the rule for the upstream's `scope` setting, which
	// templates read as {scope}.
	Scope Scope `yaml:"scope,omitempty"`
	// Token is the primary grant's request to the token endpoint; nil for
	// a vendor without one (static: the headers come from the credentials).
	Token *Request `yaml:"token,omitempty"`
	// Refresh is the refresh grant (RFC 6749 §6), presenting
	// {refresh_token} to the token endpoint; nil when the vendor has none.
	// A refresh answer without a new refresh token keeps the old one
	// (rotation is honoured when the vendor rotates); a refused refresh
	// (RefreshRefused) falls back to Token within the same fetch.
	Refresh *Request `yaml:"refresh,omitempty"`
	// Answer says where token answers keep what the broker needs.
	Answer Answer `yaml:"answer,omitempty"`
	// Headers are set on every API call; {token} is the access token.
	Headers map[string]string `yaml:"headers,omitempty"`
}

// Scope is what a vendor makes of the upstream's `scope` setting.
type Scope struct {
	// Default is sent as {scope} when the setting is empty.
	Default string `yaml:"default,omitempty"`
	// Requires is a scope value a configured scope must hold (HGEM's
	// hgem-results-api): validation refuses a scope without it.
	Requires string `yaml:"requires,omitempty"`
}

// Request is one request to the token endpoint.
type Request struct {
	// URL is the default token_url: a path ("/connect/token") put after
	// the whole base_url, its path included, or an absolute https URL.
	// Empty: token_url must be configured. Token only; the refresh grant
	// goes to the same endpoint.
	URL string `yaml:"url,omitempty"`
	// Method is POST (the default), PUT or GET (no body).
	Method string `yaml:"method,omitempty"`
	// Body is how Fields are encoded: form (application/x-www-form-urlencoded,
	// RFC 6749 §4; the default), json (an object of strings) or none (no
	// body, no Content-Type). A form without fields is an empty form body.
	Body    string            `yaml:"body,omitempty"`
	Fields  map[string]string `yaml:"fields,omitempty"`
	Query   map[string]string `yaml:"query,omitempty"`
	Headers map[string]string `yaml:"headers,omitempty"`
}

// Answer says where a vendor's token answers keep what the broker needs,
// as dot-separated paths into the JSON body ("data.accessToken"); an empty
// path is a field the vendor does not send.
type Answer struct {
	// Success, when set, is a boolean that must be true for the answer to
	// hold a token (PROMinsight's envelope); false makes it a refusal.
	Success     string `yaml:"success,omitempty"`
	AccessToken string `yaml:"access_token,omitempty"`
	// TokenType, when the answer has one, must be Bearer (RFC 6750), in any case.
	TokenType        string `yaml:"token_type,omitempty"`
	ExpiresIn        string `yaml:"expires_in,omitempty"` // seconds
	RefreshToken     string `yaml:"refresh_token,omitempty"`
	RefreshExpiresIn string `yaml:"refresh_expires_in,omitempty"` // seconds
	// ErrorCode and ErrorDescription are a refusal's reason: each a string,
	// or an object holding an "error" or "message" string (Inspera's
	// OAuth2Exception).
	ErrorCode        string `yaml:"error_code,omitempty"`
	ErrorDescription string `yaml:"error_description,omitempty"`
}

// Body encodings and methods a Request may use.
const (
	BodyForm = "form"
	BodyJSON = "json"
	BodyNone = "none"
)

// The generic types: a fifth API with no code.
const (
	TypeOAuth2 = "oauth2"
	TypeCustom = "custom"
	TypeStatic = "static"
)

// Generic are the generic type names, in the order the docs give them.
var Generic = []string{TypeOAuth2, TypeCustom, TypeStatic}

// MethodOf is r's method, POST when unset.
func (r *Request) MethodOf() string {
	if r.Method == "" {
		return http.MethodPost
	}
	return r.Method
}

// BodyOf is r's body encoding, form when unset.
func (r *Request) BodyOf() string {
	if r.Body == "" {
		return BodyForm
	}
	return r.Body
}

// RefreshRequest is the refresh grant as sent: Refresh with the token
// request's method and body encoding where it leaves them unset. Nil when
// the vendor has no refresh grant.
func (d *Description) RefreshRequest() *Request {
	if d.Refresh == nil || d.Token == nil {
		return nil
	}
	r := *d.Refresh
	if r.Method == "" {
		r.Method = d.Token.Method
	}
	if r.Body == "" {
		r.Body = d.Token.Body
	}
	return &r
}

// TokenURL is the token endpoint used when token_url is not set, built on
// the whole base URL, its path included (shared/VENDORS.md); "" when the
// vendor has no default (its token endpoint lives on another host) or no
// token endpoint at all.
func (d *Description) TokenURL(baseURL string) string {
	if d.Token == nil || d.Token.URL == "" || baseURL == "" {
		return ""
	}
	if !strings.HasPrefix(d.Token.URL, "/") {
		return d.Token.URL // absolute
	}
	return strings.TrimRight(baseURL, "/") + d.Token.URL
}

// RequiredKeys are the credential keys an upstream of this vendor needs.
func (d *Description) RequiredKeys() []string {
	if len(d.Credentials) > 0 {
		return slices.Clone(d.Credentials)
	}
	var keys []string
	for _, t := range d.templates() {
		if p, err := ParseTemplate(t.value); err == nil {
			keys = append(keys, p.Keys()...)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// KeyHeaders are the credential headers a description sets besides
// Authorization, canonical and sorted: on token requests (Inspera's Code)
// and API calls (HGEM's Hgem-Api-Key). A caller's copies of these, and of
// Authorization, never reach the upstream.
func (d *Description) KeyHeaders() []string {
	var names []string
	for _, t := range d.templates() {
		if t.kind == partHeader || t.kind == partAPIHeader {
			if n := http.CanonicalHeaderKey(t.name); n != "Authorization" {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Uses reports whether any template of d has the placeholder name
// ("scope", "audience", ...).
func (d *Description) Uses(name string) bool {
	for _, t := range d.templates() {
		if p, err := ParseTemplate(t.value); err == nil && p.Has(name) {
			return true
		}
	}
	return false
}

// part kinds: where a template's value goes.
const (
	partField     = "fields"
	partQuery     = "query"
	partHeader    = "headers"
	partAPIHeader = "api"
)

// tmpl is one template of a description and where it is.
type tmpl struct {
	req   string // "token", "refresh" or "" for API headers
	kind  string
	name  string
	value string
}

// templates lists every template of d in a stable order.
func (d *Description) templates() []tmpl {
	var out []tmpl
	add := func(req, kind string, m map[string]string) {
		for _, k := range sortedKeys(m) {
			out = append(out, tmpl{req: req, kind: kind, name: k, value: m[k]})
		}
	}
	for _, r := range []struct {
		name string
		r    *Request
	}{{"token", d.Token}, {"refresh", d.Refresh}} {
		if r.r != nil {
			add(r.name, partField, r.r.Fields)
			add(r.name, partQuery, r.r.Query)
			add(r.name, partHeader, r.r.Headers)
		}
	}
	add("", partAPIHeader, d.Headers)
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
