package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// Malformed requests (CONTRACT.md §4): every one the proxy's handler sees
// is answered in the contract's shape (Tokenproxy-Error, JSON body); the
// ones net/http refuses before routing get its plain 400, 417, 431, 501 or
// 505 (README.md lists them). None reaches an upstream.
func TestMalformedRequests(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	v.sim.HandleAPI("GET /api/echo/{rest...}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.RequestURI) // the target as it reached the upstream
	}))
	p := e.start(prefixedConfig(e))
	p.ready(t)
	host := strings.TrimPrefix(p.data, "http://")
	simHost := hostOf(t, v.url())
	req := func(line string, header ...string) string {
		return line + "\r\nHost: " + host + "\r\nConnection: close\r\n" + strings.Join(append(header, ""), "\r\n") + "\r\n"
	}
	get := func(target string, header ...string) string { return req("GET "+target+" HTTP/1.1", header...) }

	cases := []struct {
		name, req string
		status    int
		code      string // the Tokenproxy-Error; "" for net/http's own plain answers
		upstream  string
	}{
		// Refused by net/http before routing.
		{"unparseable request line", "GARBAGE\r\n\r\n", 400, "", ""},
		{"request line without a version", "GET /hgem/visits\r\n\r\n", 400, "", ""},
		{"request line with two spaces", req("GET  /hgem/visits HTTP/1.1"), 400, "", ""},
		{"invalid method", req("G@T /hgem/visits HTTP/1.1"), 400, "", ""},
		{"HTTP/2.0 in the request line", req("GET /hgem/visits HTTP/2.0"), 505, "", ""},
		{"HTTP/3.0 in the request line", req("GET /hgem/visits HTTP/3.0"), 505, "", ""},
		{"malformed percent-encoding", get("/hgem/visits%zz"), 400, "", ""},
		{"truncated percent-encoding", get("/hgem/visits%2"), 400, "", ""},
		{"control byte in the path", get("/hgem/a\x01b"), 400, "", ""},
		{"authority form", get(simHost), 400, "", ""},
		{"absolute form with a bad port", get("http://" + simHost + "x/api/visits"), 400, "", ""},
		{"absolute form with malformed percent-encoding", get("http://" + simHost + "/api/visits%zz"), 400, "", ""},
		{"no Host", "GET /hgem/visits HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "", ""},
		{"two Hosts", get("/hgem/visits", "Host: "+simHost), 400, "", ""},
		{"malformed Host", "GET /hgem/visits HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n", 400, "", ""},
		{"invalid header name", get("/hgem/visits", "Bad Name: x"), 400, "", ""},
		{"control byte in a header value", get("/hgem/visits", "X-A: a\x01b"), 400, "", ""},
		{"conflicting Content-Lengths", get("/hgem/visits", "Content-Length: 1", "Content-Length: 2"), 400, "", ""},
		{"negative Content-Length", get("/hgem/visits", "Content-Length: -1"), 400, "", ""},
		{"non-numeric Content-Length", get("/hgem/visits", "Content-Length: x"), 400, "", ""},
		{"unsupported Transfer-Encoding", get("/hgem/visits", "Transfer-Encoding: gzip"), 501, "", ""},
		{"Transfer-Encoding identity", get("/hgem/visits", "Transfer-Encoding: identity"), 501, "", ""},
		{"Expect other than 100-continue", get("/hgem/visits", "Expect: something"), 417, "", ""},

		// Seen by the proxy, answered in the contract's shape.
		{"OPTIONS *", req("OPTIONS * HTTP/1.1"), 400, "bad_request", ""},
		{"GET *", get("*"), 400, "bad_request", ""},
		{"HTTP/2 connection preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request", ""},
		{"fragment", get("/hgem/visits#frag"), 400, "bad_request", "hgem"},
		{"fragment in the query", get("/hgem/visits?a=1#frag"), 400, "bad_request", "hgem"},
		{"fragment in absolute form", get("http://" + simHost + "/api/visits#frag"), 400, "bad_request", "hgem"},
		{"absolute form without a host", get("http:///api/visits"), 400, "bad_request", ""},
		{"absolute form, opaque", get("http:api/visits"), 400, "bad_request", ""},
		{"absolute form, another scheme", get("mailto:a@" + simHost), 400, "bad_request", ""},
		{"empty upstream name", get("//" + simHost + "/api/visits"), 404, "unknown_upstream", ""},
		{"Upgrade naming a non-ASCII protocol", get("/hgem/visits", "Connection: Upgrade", "Upgrade: w\xe9bsocket"), 400, "bad_request", "hgem"},
		{"TRACE, which would echo the injected credentials", req("TRACE /hgem/visits HTTP/1.1"), 400, "bad_request", "hgem"},
		{"TRACE in absolute form", req("TRACE http://" + simHost + "/api/visits HTTP/1.1"), 400, "bad_request", "hgem"},
		{"CONNECT", "CONNECT " + simHost + " HTTP/1.1\r\nHost: " + simHost + "\r\n\r\n", 405, "connect_not_supported", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method, _, _ := strings.Cut(tc.req, " ")
			r := rawOnce(t, p, tc.req)
			if tc.code != "" {
				wantError(t, r, tc.status, tc.code, tc.upstream)
				return
			}
			if r.StatusCode != tc.status || r.Header.Get("Tokenproxy-Error") != "" || json.Valid(r.body) && len(r.body) > 0 {
				t.Fatalf("%s: got %d %q %q, want net/http's plain %d", method, r.StatusCode, r.Header.Get("Tokenproxy-Error"), r.body, tc.status)
			}
		})
	}
	if n := len(v.sim.APIRequests()); n != 0 {
		t.Errorf("%d malformed requests reached the simulator", n)
	}

	// What net/http lets through reaches the upstream as the caller wrote
	// it, bytes a path may not hold escaped one by one.
	for _, tc := range []struct{ target, want string }{
		{"/hgem/echo/x?q=%zz&r=%2F", "/api/echo/x?q=%zz&r=%2F"},
		{"/hgem/echo/a%41|b\"c", "/api/echo/a%41%7Cb%22c"},
		{"/hgem/echo/\xc3\xa9t\xc3\xa9/%7e", "/api/echo/%C3%A9t%C3%A9/%7e"},
		{"http://" + simHost + "/api/echo/a%41{b}", "/api/echo/a%41%7Bb%7D"},
	} {
		r := rawOnce(t, p, get(tc.target))
		if r.StatusCode != 200 || !bytes.Equal(r.body, []byte(tc.want)) {
			t.Errorf("%q: got %d %q, want the upstream to see %q", tc.target, r.StatusCode, r.body, tc.want)
		}
	}
	checkSimStayedInside(t, v, 1)
}
