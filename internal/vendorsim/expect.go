package vendorsim

import (
	"net/http"
	"slices"
	"strings"

	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

// What a token request and an API call must carry comes from the vendor's
// description (internal/vendor), the same one tokenproxy's adapter carries
// out; how the vendor refuses a request that lacks it (which status, which
// error, in which order) is the simulator's own, from shared/VENDORS.md.
// The simulators' tests send requests written by hand from VENDORS.md, so
// a description that strays from the vendor fails them.

// expectation is one value a request must carry.
type expectation struct {
	name string // header, form or JSON field, or query parameter
	want string // with the simulator's credentials
	cred bool   // made from a credential; else a constant
}

// expect lists what part ("fields", "query", "headers") of req must carry
// with creds. Values made from settings (scope, audience) or the refresh
// token are the handler's to check: the simulator does not know the
// upstream's settings, and keeps its own refresh tokens.
func expect(req *vendor.Request, part string, creds map[string]string) []expectation {
	if req == nil {
		return nil
	}
	m := map[string]map[string]string{"fields": req.Fields, "query": req.Query, "headers": req.Headers}[part]
	var out []expectation
	for _, name := range sortedNames(m) {
		t, err := vendor.ParseTemplate(m[name])
		if err != nil || t.Has("scope") || t.Has("audience") || t.Has("refresh_token") {
			continue
		}
		out = append(out, expectation{name: name, want: t.Expand(vendor.Values{Credential: func(k string) string { return creds[k] }}),
			cred: !t.IsConstant()})
	}
	return out
}

// credentialsIn lists the expectations made from credentials.
func credentialsIn(es []expectation) []expectation {
	var out []expectation
	for _, e := range es {
		if e.cred {
			out = append(out, e)
		}
	}
	return out
}

// constant is the constant value req's part gives name ("grant_type"), or "".
func constant(req *vendor.Request, part, name string) string {
	for _, e := range expect(req, part, nil) {
		if e.name == name && !e.cred {
			return e.want
		}
	}
	return ""
}

// headerOnce reports whether h carries name exactly once, with value want.
func headerOnce(h http.Header, name, want string) bool {
	vs := h.Values(name)
	return len(vs) == 1 && match(vs[0], want)
}

// apiAuth returns why an API call's headers do not authorize it under the
// description d, or "" when they do; token is the access token presented.
// Headers made from credentials alone (HGEM's API key) are checked first.
func apiAuth(d *vendor.Description, h http.Header, creds map[string]string) (why, token string) {
	var tokenHeader, prefix string
	for _, name := range sortedNames(d.Headers) {
		t, err := vendor.ParseTemplate(d.Headers[name])
		if err != nil {
			continue
		}
		if t.Has("token") {
			tokenHeader = name
			prefix, _, _ = strings.Cut(d.Headers[name], "{token}")
			continue
		}
		if !headerOnce(h, name, t.Expand(vendor.Values{Credential: func(k string) string { return creds[k] }})) {
			return "Missing or invalid API key", ""
		}
	}
	if tokenHeader == "" {
		return "", ""
	}
	vs := h.Values(tokenHeader)
	// Two Authorization headers means the proxy appended instead of replacing.
	if len(vs) != 1 || len(vs[0]) < len(prefix) || !strings.EqualFold(vs[0][:len(prefix)], prefix) {
		return "Missing bearer token", ""
	}
	tok := strings.TrimSpace(vs[0][len(prefix):])
	if tok == "" {
		return "Missing bearer token", ""
	}
	return "", tok
}

func sortedNames(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}
