package proxy

import (
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"
)

func table(t testing.TB, bases map[string]string) *Table {
	var routes []*Route
	for name, base := range bases {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, &Route{Name: name, Base: u})
	}
	return NewTable(routes)
}

// request builds a server-side request as net/http would from a request
// line; nil when net/http would refuse the target.
func request(target string) *http.Request {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil
	}
	return &http.Request{Method: "GET", URL: u, RequestURI: target, Host: "127.0.0.1:8080"}
}

// mustRequest is request for targets a table holds, which must be valid.
func mustRequest(t *testing.T, target string) *http.Request {
	r := request(target)
	if r == nil {
		t.Fatalf("%q is not a valid request target", target)
	}
	return r
}

func TestByRoute(t *testing.T) {
	tb := table(t, map[string]string{"hgem": "https://results-api.hgem.com", "ins": "https://t.inspera.com/api/", "p": "https://h.example:8443/v1"})
	cases := []struct {
		target, want, code string
	}{
		{"/hgem/api/visits?page=2&x=%2F", "https://results-api.hgem.com/api/visits?page=2&x=%2F", ""},
		{"/hgem", "https://results-api.hgem.com/", ""},
		{"/hgem/", "https://results-api.hgem.com/", ""},
		{"/ins/v1/test/1", "https://t.inspera.com/api/v1/test/1", ""},
		{"/ins", "https://t.inspera.com/api", ""},
		{"/p/a%20b/c", "https://h.example:8443/v1/a%20b/c", ""},
		{"/p/trailing/", "https://h.example:8443/v1/trailing/", ""},
		{"/nope/x", "", "unknown_upstream"},
		{"//evil.com/x", "", "unknown_upstream"},
		{"/hgem/../admin", "", "bad_request"},
		{"/hgem/a/%2e%2e/b", "", "bad_request"},
		{"/hgem/a/%2E./b", "", "bad_request"},
		{"/hgem/.", "", "bad_request"},
		{"/hgem/a/..;/admin", "", "bad_request"},
		{"/hgem/a/..;jsessionid=1/b", "", "bad_request"},
		{"/hgem/a/%2e%2e%3Bx/b", "", "bad_request"},
		{"/hgem/a/.;/b", "", "bad_request"},
		{"/hgem/a;v=1/b", "https://results-api.hgem.com/a;v=1/b", ""},
		{"/hgem/a%2Fb", "", "bad_request"},
		{"/hgem/a%5Cb", "", "bad_request"},
		{"/hgem/a\\b", "", "bad_request"},
		{"/hgem//evil.com/x", "", "bad_request"},
		{"/hgem/a%00b", "", "bad_request"},
		{"/hgem/@evil.com", "https://results-api.hgem.com/@evil.com", ""},
		// Bytes a path may not hold are escaped one by one; the caller's own
		// escapes stay as written.
		{"/p/a%41|b\"c", "https://h.example:8443/v1/a%41%7Cb%22c", ""},
		{"/p/\xc3\xa9t\xc3\xa9/%7e", "https://h.example:8443/v1/%C3%A9t%C3%A9/%7e", ""},
		{"/p/{x}^`<>", "https://h.example:8443/v1/%7Bx%7D%5E%60%3C%3E", ""},
		{"/p/[::1]/a:b@c!$&'()*+,;=", "https://h.example:8443/v1/[::1]/a:b@c!$&'()*+,;=", ""},
		{"/hgem/x#frag", "", "bad_request"},
		{"/hgem/x?q=1#frag", "", "bad_request"},
		{"*", "", "bad_request"},
	}
	for _, c := range cases {
		rt, u, err := tb.byRoute(mustRequest(t, c.target))
		switch {
		case c.code != "" && (err == nil || err.Code != c.code):
			t.Errorf("%s: got %v %v, want %s", c.target, u, err, c.code)
		case c.code == "" && err != nil:
			t.Errorf("%s: %v", c.target, err)
		case c.code == "" && u.String() != c.want:
			t.Errorf("%s: target %s, want %s", c.target, u, c.want)
		case c.code == "" && rt == nil:
			t.Errorf("%s: no route", c.target)
		}
	}
}

func TestForward(t *testing.T) {
	tb := table(t, map[string]string{
		"hgem": "https://results-api.hgem.com",
		"p":    "https://h.example:8443/v1",
		"p2":   "https://h.example:8443/v1/special",
	})
	cases := []struct {
		target, route, want, code string
	}{
		{"http://results-api.hgem.com/api/visits?a=1", "hgem", "https://results-api.hgem.com/api/visits?a=1", ""},
		{"http://RESULTS-API.hgem.com:80/x", "hgem", "https://results-api.hgem.com/x", ""},
		{"http://results-api.hgem.com:8080/x", "", "", "host_not_allowed"},
		{"http://h.example:8443/v1/x", "p", "https://h.example:8443/v1/x", ""},
		{"http://h.example:8443/v1/special/x", "p2", "https://h.example:8443/v1/special/x", ""},
		{"http://h.example/v1/x", "", "", "host_not_allowed"},
		{"http://h.example:8443/v2/x", "", "", "path_not_allowed"},
		{"http://h.example:8443/v1x", "", "", "path_not_allowed"},
		{"http://h.example:8443/v1/../v2", "", "", "bad_request"},
		{"http://evil.com/x", "", "", "host_not_allowed"},
		{"http://results-api.hgem.com@evil.com/x", "", "", "bad_request"},
		{"http://evil.com@results-api.hgem.com/x", "", "", "bad_request"},
		{"http://results-api.hgem.com?q=1", "hgem", "https://results-api.hgem.com/?q=1", ""},
		{"ftp://results-api.hgem.com/x", "", "", "bad_request"},
		{"http:///x", "", "", "bad_request"},
		{"http:x", "", "", "bad_request"},
		{"http://results-api.hgem.com/x#frag", "", "", "bad_request"},
		{"http://results-api.hgem.com/a|b", "hgem", "https://results-api.hgem.com/a%7Cb", ""},
	}
	for _, c := range cases {
		rt, u, err := tb.forward(mustRequest(t, c.target))
		switch {
		case c.code != "" && (err == nil || err.Code != c.code):
			t.Errorf("%s: got %v %v, want %s", c.target, u, err, c.code)
		case c.code == "" && err != nil:
			t.Errorf("%s: %v", c.target, err)
		case c.code == "" && (u.String() != c.want || rt.Name != c.route):
			t.Errorf("%s: %s via %s, want %s via %s", c.target, u, rt.Name, c.want, c.route)
		}
	}
}

func TestQuoteName(t *testing.T) {
	for in, want := range map[string]string{
		"nosuch":                `"nosuch"`,
		"":                      `""`,
		"a\"b\x01\n":            `"a\"b\x01\n"`,
		strings.Repeat("x", 70): `"` + strings.Repeat("x", 64) + `"...`,
	} {
		if got := quoteName(in); got != want {
			t.Errorf("quoteName(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestLocalLocation(t *testing.T) {
	base, _ := url.Parse("https://api.example/v1")
	rt := &Route{Name: "up", Base: base}
	sent, _ := url.Parse("https://api.example/v1/items?x=1")
	cases := []struct{ loc, want string }{
		{"https://api.example/v1/items/2?y=1", "http://127.0.0.1:8080/up/items/2?y=1"},
		{"https://API.example:443/v1", "http://127.0.0.1:8080/up"},
		{"/v1/next", "http://127.0.0.1:8080/up/next"},
		{"next", "http://127.0.0.1:8080/up/next"},
		{"https://api.example/other", ""},     // outside the base path
		{"/lh/z", "https://api.example/lh/z"}, // outside it, relative: absolute on the upstream, never a local path
		{"/v1x/z?q#f", "https://api.example/v1x/z?q#f"},
		{"../../other", "https://api.example/other"},
		{"//api.example/lh/z", "https://api.example/lh/z"},
		{"http://api.example/v1/x", ""},          // another scheme is another origin
		{"https://api.example:8443/v1/x", ""},    // another port too
		{"https://storage.example/blob?sig", ""}, // another host: passed through
		// Under the base path, but a rest the path check refuses: a
		// client resolving %2e%2e as .. would reach another route.
		{"/v1/%2e%2e/lh/y", "https://api.example/v1/%2e%2e/lh/y"},
		{"/v1/.%2E/lh/y", "https://api.example/v1/.%2E/lh/y"},
		{"https://api.example/v1/%2E%2E/lh/x", "https://api.example/v1/%2E%2E/lh/x"},
		{"//api.example/v1/%2e%2e/lh/x", "https://api.example/v1/%2e%2e/lh/x"},
		{"/v1/a%2Fb", "https://api.example/v1/a%2Fb"},
	}
	for _, c := range cases {
		got, ok := localLocation(rt, sent, c.loc, "http://127.0.0.1:8080")
		if (c.want == "") == ok || got != c.want {
			t.Errorf("%s: %q %v, want %q", c.loc, got, ok, c.want)
		}
	}
}

// FuzzByRoute: whatever the request target, an accepted request goes to the
// configured host, under the base path, without a dot segment.
func FuzzByRoute(f *testing.F) {
	for _, s := range []string{"/hgem/api/visits?x=1", "/hgem/../x", "/hgem/%2e%2e/x", "/hgem//h/x", "/hgem/a%2Fb", "/hgem/%252e%252e/", "/hgem/a/./b"} {
		f.Add(s)
	}
	tb := table(f, map[string]string{"hgem": "https://results-api.hgem.com/base"})
	f.Fuzz(func(t *testing.T, target string) {
		r := request(target)
		if r == nil {
			return // net/http refuses it before the proxy sees it
		}
		_, u, err := tb.byRoute(r)
		if err != nil {
			return
		}
		if u.Scheme != "https" || u.Host != "results-api.hgem.com" {
			t.Fatalf("%q went to %s://%s", target, u.Scheme, u.Host)
		}
		if u.Path != "/base" && !strings.HasPrefix(u.Path, "/base/") {
			t.Fatalf("%q left the base path: %q", target, u.Path)
		}
		if clean := path.Clean(u.Path); clean != strings.TrimSuffix(u.Path, "/") && clean != u.Path {
			t.Fatalf("%q reaches %q, which a server would clean to %q", target, u.Path, clean)
		}
		if strings.ContainsAny(u.Path, "\\\x00") {
			t.Fatalf("%q reaches %q", target, u.Path)
		}
	})
}

// FuzzForward: an accepted absolute-form request goes to the host of the
// route it matched, under that route's base path.
func FuzzForward(f *testing.F) {
	for _, s := range []string{"http://a.example/base/x", "http://a.example:443/base/../x", "http://b.example:8443/y?z", "http://a.example@b.example/base"} {
		f.Add(s)
	}
	tb := table(f, map[string]string{"a": "https://a.example/base", "b": "https://b.example:8443"})
	f.Fuzz(func(t *testing.T, target string) {
		r := request(target)
		if r == nil || !r.URL.IsAbs() {
			return // refused by net/http, or not absolute form
		}
		rt, u, err := tb.forward(r)
		if err != nil {
			return
		}
		if u.Host != rt.Base.Host || u.Scheme != "https" {
			t.Fatalf("%q went to %s via %s", target, u.Host, rt.Name)
		}
		if base := rt.basePath(); u.EscapedPath() != base && !strings.HasPrefix(u.EscapedPath(), base+"/") {
			t.Fatalf("%q left %s's base path: %q", target, rt.Name, u.EscapedPath())
		}
	})
}

// A name from the caller is shown in quotes; what would break the message
// or a log line is replaced, never the quotes themselves.
func TestUnknownUpstreamMessageQuotesTheName(t *testing.T) {
	_, _, err := table(t, map[string]string{"hgem": "https://h"}).byRoute(mustRequest(t, "/nosuch/x"))
	if want := `no upstream is named "nosuch"; requests go to /{upstream}/{path}`; err == nil || err.Msg != want {
		t.Errorf("message %v, want %s", err, want)
	}
}
