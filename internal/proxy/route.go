package proxy

import (
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/tokenproxy/tokenproxy/internal/endpoint"
)

// byRoute maps http://{listen}/{name}/{rest} to {base_url}/{rest}. The path
// and query are taken from the request line as the caller wrote them, so
// that they reach the upstream byte for byte; the Host header plays no part.
func (t *Table) byRoute(r *http.Request) (*Route, *url.URL, *Error) {
	path, query := requestTarget(r)
	if path == "*" {
		// OPTIONS * (RFC 9110 §9.3.7), or the preface of HTTP/2 with prior
		// knowledge, which net/http hands over as PRI *.
		return nil, nil, badRequest("the request target * names no upstream: tokenproxy serves HTTP/1.1 requests for /{upstream}/{path}")
	}
	if !strings.HasPrefix(path, "/") {
		return nil, nil, badRequest("the request target must start with /")
	}
	name, rest, hasRest := strings.Cut(path[1:], "/")
	rt := t.byName[name]
	if rt == nil {
		return nil, nil, &Error{Status: http.StatusNotFound, Code: CodeUnknownUpstream,
			Msg: "no upstream is named " + quoteName(name) + "; requests go to /{upstream}/{path}"}
	}
	target := rt.basePath()
	if hasRest {
		target += "/" + rest
	}
	if target == "" {
		target = "/"
	}
	u, err := rt.targetURL(target, query)
	if err != nil {
		return rt, nil, err
	}
	return rt, u, nil
}

// requestTarget is the escaped path and the raw query of the request line
// as the caller wrote them; in absolute form, what follows the authority
// (an empty path is /).
func requestTarget(r *http.Request) (path, query string) {
	target := r.RequestURI
	if r.URL.IsAbs() {
		_, rest, _ := strings.Cut(target, "://")
		target = "/"
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			target = rest[i:]
		}
		if strings.HasPrefix(target, "?") {
			target = "/" + target
		}
	}
	path, query, _ = strings.Cut(target, "?")
	return path, query
}

// forward handles a request in absolute form (a client that uses tokenproxy
// as its HTTP_PROXY): the host must be an upstream's base_url host, and the
// path, forwarded as written, must lie under that base_url's path.
func (t *Table) forward(r *http.Request) (*Route, *url.URL, *Error) {
	if r.URL.Scheme != "http" && r.URL.Scheme != "https" {
		return nil, nil, badRequest("only http URLs can be proxied")
	}
	if r.URL.User != nil {
		return nil, nil, badRequest("the URL must not carry user info")
	}
	if r.URL.Host == "" {
		return nil, nil, badRequest("the URL has no host")
	}
	path, query := requestTarget(r)
	var hostMatch *Route
	for _, rt := range t.sorted() {
		if !endpoint.SameHost(rt.Base, r.URL) {
			continue
		}
		hostMatch = rt
		base := rt.basePath()
		if path == base || strings.HasPrefix(path, base+"/") {
			u, err := rt.targetURL(path, query)
			return rt, u, err
		}
	}
	if hostMatch != nil {
		return hostMatch, nil, &Error{Status: http.StatusForbidden, Code: CodePathNotAllowed,
			Msg: "the path lies outside the upstream's base_url path " + hostMatch.basePath() + "/"}
	}
	return nil, nil, &Error{Status: http.StatusForbidden, Code: CodeHostNotAllowed,
		Msg: "no upstream is configured for host " + quoteName(r.URL.Host)}
}

// sorted returns the routes with the longest base path first, so that a
// forward-proxy request picks the most specific upstream of a shared host.
func (t *Table) sorted() []*Route {
	rs := make([]*Route, 0, len(t.byName))
	for _, rt := range t.byName {
		rs = append(rs, rt)
	}
	sort.Slice(rs, func(i, j int) bool {
		if a, b := len(rs[i].basePath()), len(rs[j].basePath()); a != b {
			return a > b
		}
		return rs[i].Name < rs[j].Name
	})
	return rs
}

// targetURL builds the outbound URL on rt's base from an escaped path
// (starting with /) and a raw query. It refuses paths that could step
// outside the base path at the upstream: dot segments, empty segments (//),
// and segments that decode to a slash, a backslash or a control character.
func (rt *Route) targetURL(escapedPath, rawQuery string) (*url.URL, *Error) {
	if strings.Contains(escapedPath, "#") || strings.Contains(rawQuery, "#") {
		// A request target never has a fragment (RFC 9112 §3.2); net/http
		// keeps a stray # as part of the path or query.
		return nil, badRequest("the request target has a fragment (#)")
	}
	escapedPath = escapeIllegal(escapedPath)
	if _, rest, ok := strings.Cut(escapedPath, "/"); ok {
		for {
			seg, after, more := strings.Cut(rest, "/")
			if seg == "" && more {
				return nil, badRequest("the path has an empty segment (//)")
			}
			if err := checkSegment(seg); err != nil {
				return nil, err
			}
			if !more {
				break
			}
			rest = after
		}
	}
	p, err := url.PathUnescape(escapedPath)
	if err != nil {
		return nil, badRequest("the path has a malformed percent-encoding")
	}
	return &url.URL{Scheme: rt.Base.Scheme, Host: rt.Base.Host, Path: p, RawPath: escapedPath, RawQuery: rawQuery}, nil
}

// escapeIllegal percent-encodes the bytes RFC 3986 §3.3 does not allow in a
// path but net/http lets through (", <, >, \, ^, `, {, |, } and non-ASCII),
// and leaves every other byte, escapes included, as the caller wrote it.
// Without it url.URL would re-encode the whole path from its decoded form,
// and the upstream would not get the caller's escapes.
func escapeIllegal(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if pathByte(c) {
			if b.Len() > 0 {
				b.WriteByte(c)
			}
			continue
		}
		if b.Len() == 0 {
			b.WriteString(p[:i])
		}
		const hex = "0123456789ABCDEF"
		b.Write([]byte{'%', hex[c>>4], hex[c&15]})
	}
	if b.Len() == 0 {
		return p
	}
	return b.String()
}

// pathByte reports whether c may stand as it is in an escaped path: RFC
// 3986's pchar and "/", plus the brackets that url.URL leaves alone too.
func pathByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@%/[]", c) >= 0
}

func checkSegment(seg string) *Error {
	d, err := url.PathUnescape(seg)
	// A segment's parameters (RFC 3986 §3.3: "..;x") are dropped by some
	// servers before they resolve dot segments, Java's among them.
	name, _, _ := strings.Cut(d, ";")
	switch {
	case err != nil:
		return badRequest("the path has a malformed percent-encoding")
	case name == "." || name == "..":
		return badRequest("the path has a dot segment (. or .., parameters aside)")
	case strings.ContainsAny(d, "/\\"):
		return badRequest("the path has an encoded slash or a backslash")
	case strings.IndexFunc(d, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
		return badRequest("the path has a control character")
	}
	return nil
}

// localLocation rewrites a Location on the upstream's origin and under its
// base path to the local URL that reaches the same place through the proxy.
// One on that origin but outside the base path, when relative, becomes the
// absolute URL on the upstream: resolved against the local URL instead, it
// would name another upstream's route (base /v1, Location /other/x: the
// route "other"), and the caller would get that upstream's credentials
// injected. So does one under the base path whose rest the path check
// refuses (a dot segment in any encoding, an encoded slash). Any other
// Location is left as it is (ok false).
func localLocation(rt *Route, sent *url.URL, loc, local string) (string, bool) {
	u, err := sent.Parse(loc)
	if err != nil || !strings.EqualFold(u.Scheme, rt.Base.Scheme) || !sameOrigin(u, rt.Base) {
		return "", false
	}
	base := rt.basePath()
	p := u.EscapedPath()
	if p != base && !strings.HasPrefix(p, base+"/") {
		if l, err := url.Parse(loc); err == nil && l.IsAbs() {
			return "", false
		}
		return u.String(), true
	}
	rest := strings.TrimPrefix(p, base)
	for _, seg := range strings.Split(rest, "/")[1:] {
		if checkSegment(seg) != nil {
			// A local URL tokenproxy's own path check would refuse: a
			// client that resolves %2e%2e as .. (WHATWG URL: browsers,
			// fetch) would step into another upstream's route.
			return u.String(), true
		}
	}
	out := local + "/" + rt.Name + rest
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	if u.Fragment != "" {
		out += "#" + u.EscapedFragment()
	}
	return out, true
}

// sameOrigin compares host and effective port.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "http") {
		return "80"
	}
	return "443"
}

// quoteName shows a caller-supplied name in a message, in quotes, bounded
// and without anything that could break a log line or the quotes.
func quoteName(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}
