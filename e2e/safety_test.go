package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
)

// Data-plane safety (CONTRACT.md §3): forward-proxy mode, no open proxy and
// no path escape, redirects, hop-by-hop headers, slow and oversized
// headers, request smuggling, loopback listeners. Requests that must reach
// the proxy unnormalised are written byte for byte over TCP.

// prefixedConfig runs hgem with base_url {sim}/api, so that the simulator's
// token endpoint (/connect/token) lies outside the base path and any escape
// from it shows in the simulator's records.
func prefixedConfig(e *env) config.Config {
	v := e.vendors["hgem"]
	c := e.config("hgem")
	c.LogLevel = "debug"
	edit(c, "hgem", func(u *config.Upstream) { u.BaseURL, u.TokenURL = v.url()+"/api", v.url()+"/connect/token" })
	return c
}

// hostOf is the host:port of an http(s) URL.
func hostOf(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// attacker is a pair of servers (plain HTTP, and HTTPS with the certificate
// the proxy trusts, so that anything sent there would succeed) that no
// request may ever reach.
type attacker struct {
	plain, tls *httptest.Server
	mu         sync.Mutex
	hits       []string
}

func newAttacker(t *testing.T) *attacker {
	a := &attacker{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		var creds []string
		for _, k := range []string{"Authorization", "Hgem-Api-Key", "Code", "Proxy-Authorization"} {
			if r.Header.Get(k) != "" {
				creds = append(creds, k)
			}
		}
		a.hits = append(a.hits, fmt.Sprintf("%s %s (credential headers: %v)", r.Method, r.URL, creds))
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "attacker")
	})
	a.plain = httptest.NewUnstartedServer(h)
	a.plain.Config.ErrorLog = discardLog
	a.plain.Start()
	a.tls = httptest.NewUnstartedServer(h)
	a.tls.Config.ErrorLog = discardLog
	a.tls.StartTLS()
	t.Cleanup(func() { a.plain.Close(); a.tls.Close() })
	t.Cleanup(func() { a.check(t) })
	return a
}

// check fails the test if anything reached the attacker.
func (a *attacker) check(t *testing.T) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, h := range a.hits {
		t.Errorf("the attacker's server was reached: %s", h)
	}
	a.hits = nil
}

// rawConn is a TCP connection to the data plane on which requests are
// written exactly as given.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, p *proc) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(p.data, "http://"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// A bound on the whole exchange, so that a hang fails instead of blocking.
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn, br: bufio.NewReader(conn)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("writing the request: %v", err)
	}
}

// read reads one response and its whole body.
func (c *rawConn) read(method string) *response {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading the response body: %v", err)
	}
	return &response{Response: resp, body: b}
}

// closedByPeer waits for the proxy to close the connection and reports
// whether it did so without sending anything more (such as the answer to a
// smuggled request).
func (c *rawConn) closedByPeer() (bool, string) {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(c.br)
	var ne net.Error
	switch {
	case len(rest) > 0:
		return false, fmt.Sprintf("more bytes after the response: %q", rest)
	case errors.As(err, &ne) && ne.Timeout():
		return false, "connection still open after 10s"
	}
	return true, "" // EOF, or a reset
}

// rawOnce sends one raw request on a fresh connection and reads its answer.
func rawOnce(t *testing.T, p *proc, req string) *response {
	t.Helper()
	c := dialRaw(t, p)
	c.send(req)
	method, _, _ := strings.Cut(req, " ")
	return c.read(method)
}

// rawGET is a minimal HTTP/1.1 request for target, closing the connection.
func rawGET(target, host string, header ...string) string {
	s := "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n"
	for _, h := range header {
		s += h + "\r\n"
	}
	return s + "\r\n"
}

// checkSimStayedInside fails when the simulator saw a request outside
// base_url's path (/api), with another Host, or on its token endpoint
// through the data plane (the broker's own fetches are tokenCalls).
func checkSimStayedInside(t *testing.T, v *vendor, tokenCalls int) {
	t.Helper()
	simHost := hostOf(t, v.url())
	for _, r := range v.sim.APIRequests() {
		if r.Path != "/api" && !strings.HasPrefix(r.Path, "/api/") {
			t.Errorf("the simulator saw %s %s, outside base_url's path /api", r.Method, r.Path)
		}
		if r.Host != simHost {
			t.Errorf("the simulator saw Host %q for %s, want %q", r.Host, r.Path, simHost)
		}
	}
	if n := v.sim.TokenCalls(); n != tokenCalls {
		t.Errorf("%d requests reached the token endpoint, want the broker's %d", n, tokenCalls)
	}
}

func TestForwardProxyMode(t *testing.T) {
	e := newEnv(t)
	att := newAttacker(t)
	v := e.vendors["hgem"]
	p := e.start(prefixedConfig(e))
	p.ready(t)
	simHost := hostOf(t, v.url())
	_, simPort, _ := net.SplitHostPort(simHost)

	t.Run("raw absolute form", func(t *testing.T) {
		r := rawOnce(t, p, rawGET("http://"+simHost+"/api/visits?page=2&q=%2F", simHost,
			"Authorization: Bearer caller-token", "hgem-api-key: caller-key"))
		if r.StatusCode != 200 || !bytes.Contains(r.body, []byte("Simulated Site North")) {
			t.Fatalf("got %d %s", r.StatusCode, r.body)
		}
		got := lastAPI(t, v)
		auth := got.Header.Values("Authorization")
		if got.Path != "/api/visits" || got.RawQuery != "page=2&q=%2F" || len(auth) != 1 ||
			!contains(v.sim.Tokens(), strings.TrimPrefix(auth[0], "Bearer ")) ||
			fmt.Sprint(got.Header.Values("Hgem-Api-Key")) != fmt.Sprint([]string{v.creds["api_key"]}) {
			t.Fatalf("the vendor saw %s?%s with %d Authorization values and the wrong key or token", got.Path, got.RawQuery, len(auth))
		}
	})

	t.Run("HTTP_PROXY client", func(t *testing.T) {
		proxyURL, _ := url.Parse(p.data)
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
		resp, err := c.Get("http://" + simHost + "/api/visits/1001")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"1001"`)) {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
	})

	attPlain, attTLS := hostOf(t, att.plain.URL), hostOf(t, att.tls.URL)
	_, attPort, _ := net.SplitHostPort(attPlain)
	for _, tc := range []struct {
		name, target   string
		status         int
		code, upstream string
	}{
		{"no port, base_url names one", "http://127.0.0.1/api/visits", 403, "host_not_allowed", ""},
		{"default port, base_url names another", "http://127.0.0.1:80/api/visits", 403, "host_not_allowed", ""},
		{"another port of the same host", "http://127.0.0.1:" + attPort + "/api/visits", 403, "host_not_allowed", ""},
		{"another name for the same host", "http://localhost:" + simPort + "/api/visits", 403, "host_not_allowed", ""},
		{"another host", "http://" + attPlain + "/api/visits", 403, "host_not_allowed", ""},
		{"another https host", "https://" + attTLS + "/api/visits", 403, "host_not_allowed", ""},
		{"userinfo naming the upstream", "http://" + simHost + "@" + attPlain + "/api/visits", 400, "bad_request", ""},
		{"token endpoint outside base path", "http://" + simHost + "/connect/token", 403, "path_not_allowed", "hgem"},
		{"prefix without a slash boundary", "http://" + simHost + "/apix/visits", 403, "path_not_allowed", "hgem"},
		{"root", "http://" + simHost + "/", 403, "path_not_allowed", "hgem"},
		{"no path", "http://" + simHost, 403, "path_not_allowed", "hgem"},
		{"double slash before the base path", "http://" + simHost + "//" + attPlain + "/api/visits", 403, "path_not_allowed", "hgem"},
		{"dot segment", "http://" + simHost + "/api/../connect/token", 400, "bad_request", "hgem"},
		{"encoded dot segment", "http://" + simHost + "/api/%2e%2e/connect/token", 400, "bad_request", "hgem"},
		{"not http", "ftp://" + simHost + "/api/visits", 400, "bad_request", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, rawOnce(t, p, rawGET(tc.target, simHost)), tc.status, tc.code, tc.upstream)
		})
	}

	t.Run("CONNECT", func(t *testing.T) {
		for _, target := range []string{simHost, attTLS} {
			r := rawOnce(t, p, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
			wantError(t, r, 405, "connect_not_supported", "")
		}
		// What an HTTPS_PROXY client does with an https URL: refused, not tunnelled.
		proxyURL, _ := url.Parse(p.data)
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
		if resp, err := c.Get(att.tls.URL + "/steal"); err == nil {
			resp.Body.Close()
			t.Fatalf("an https URL through the proxy got %d, want the CONNECT refused", resp.StatusCode)
		}
	})

	checkSimStayedInside(t, v, 1)
}

func TestNoOpenProxyOrPathEscape(t *testing.T) {
	e := newEnv(t)
	att := newAttacker(t)
	v := e.vendors["hgem"]
	p := e.start(prefixedConfig(e))
	p.ready(t)
	simHost := hostOf(t, v.url())
	attHost := hostOf(t, att.tls.URL)
	host := strings.TrimPrefix(p.data, "http://")

	// status 0: the request may reach the upstream, as long as it stays under
	// base_url's path on the configured host (checked below); anything else is
	// the status the proxy, or net/http before it, must answer. code is the
	// Tokenproxy-Error the proxy must set ("" for net/http's own refusals).
	cases := []struct {
		name, req string
		status    int
		code      string
	}{
		{"dot dot", rawGET("/hgem/../connect/token", host), 400, "bad_request"},
		{"dot dot at the end", rawGET("/hgem/visits/..", host), 400, "bad_request"},
		{"single dot", rawGET("/hgem/./visits", host), 400, "bad_request"},
		{"encoded dot dot", rawGET("/hgem/%2e%2e/connect/token", host), 400, "bad_request"},
		{"mixed encoded dot dot", rawGET("/hgem/%2E./connect/token", host), 400, "bad_request"},
		{"dot then encoded dot", rawGET("/hgem/.%2E/connect/token", host), 400, "bad_request"},
		{"encoded slash", rawGET("/hgem/..%2Fconnect%2Ftoken", host), 400, "bad_request"},
		{"lower-case encoded slash", rawGET("/hgem/visits/..%2f..%2fconnect/token", host), 400, "bad_request"},
		{"encoded slash alone", rawGET("/hgem/%2F"+attHost+"/x", host), 400, "bad_request"},
		{"encoded backslash", rawGET("/hgem/%5C..%5Cconnect/token", host), 400, "bad_request"},
		{"raw backslashes", rawGET(`/hgem/visits\..\..\connect/token`, host), 400, ""},
		{"backslash in the name", rawGET(`/hgem\..\connect/token`, host), 0, ""},
		{"empty segment", rawGET("/hgem//"+attHost+"/x", host), 400, "bad_request"},
		{"trailing empty segments", rawGET("/hgem/visits//", host), 400, "bad_request"},
		{"authority-like path", rawGET("//"+attHost+"/x", host), 404, "unknown_upstream"},
		{"at sign in the path", rawGET("/hgem/@"+attHost+"/x", host), 0, ""},
		{"at sign after the name", rawGET("/hgem@"+attHost+"/x", host), 404, "unknown_upstream"},
		{"double-encoded dot dot", rawGET("/hgem/%252e%252e/connect/token", host), 0, ""},
		{"encoded NUL", rawGET("/hgem/visits%00/x", host), 400, "bad_request"},
		{"malformed escape", rawGET("/hgem/visits%zz", host), 400, ""},
		{"asterisk form", "GET * HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n", 400, "bad_request"},
		{"OPTIONS asterisk", "OPTIONS * HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n", 400, "bad_request"},
		{"authority form", rawGET(attHost, host), 400, ""},
		{"Host of another server", rawGET("/hgem/visits", attHost), 200, ""},
		{"Host with userinfo", rawGET("/hgem/visits", "user:pw@"+attHost), 0, ""},
		{"Host naming the upstream", rawGET("/hgem/visits", simHost), 200, ""},
		{"no Host", "GET /hgem/visits HTTP/1.1\r\nConnection: close\r\n\r\n", 400, ""},
		{"no Host, HTTP/1.0", "GET /hgem/visits HTTP/1.0\r\n\r\n", 200, ""},
		{"two Hosts", "GET /hgem/visits HTTP/1.1\r\nHost: " + host + "\r\nHost: " + attHost + "\r\nConnection: close\r\n\r\n", 400, ""},
		{"absolute form with userinfo", rawGET("http://user:pw@"+simHost+"/api/visits", simHost), 400, "bad_request"},
		{"absolute form with a backslash before @", rawGET(`http://`+simHost+`\@`+attHost+"/api/visits", simHost), 0, ""},
		{"absolute form, Host of another server", rawGET("http://"+simHost+"/api/visits", attHost), 200, ""},
		{"absolute form of another server, Host of the upstream", rawGET("http://"+attHost+"/api/visits", simHost), 403, "host_not_allowed"},
		{"absolute form with an empty segment", rawGET("http://"+simHost+"/api//"+attHost+"/x", simHost), 400, "bad_request"},
		{"absolute form with an encoded backslash", rawGET("http://"+simHost+"/api/%5c..%5cconnect/token", simHost), 400, "bad_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rawOnce(t, p, tc.req)
			switch {
			case tc.status == 0:
			case r.StatusCode != tc.status:
				t.Errorf("got %d %q %s, want %d", r.StatusCode, r.Header.Get("Tokenproxy-Error"), r.body, tc.status)
			case tc.code != "" && r.Header.Get("Tokenproxy-Error") != tc.code:
				t.Errorf("got %d %q, want %s", r.StatusCode, r.Header.Get("Tokenproxy-Error"), tc.code)
			}
			t.Logf("%d %s %s", r.StatusCode, r.Header.Get("Tokenproxy-Error"), bytes.TrimSpace(r.body))
		})
	}
	checkSimStayedInside(t, v, 1)
	// The requests that were let through reached the simulator as sent.
	paths := map[string]bool{}
	for _, r := range v.sim.APIRequests() {
		paths[r.Path] = true
	}
	for _, want := range []string{"/api/visits", "/api/@" + attHost + "/x", "/api/%2e%2e/connect/token"} {
		if !paths[want] {
			t.Errorf("the simulator never saw %s; it saw %v", want, paths)
		}
	}
}

func TestRedirectsAreRewrittenNotFollowed(t *testing.T) {
	e := newEnv(t)
	att := newAttacker(t)
	v := e.vendors["hgem"]
	_, simPort, _ := net.SplitHostPort(hostOf(t, v.url()))
	locations := map[string]string{
		"own":            v.url() + "/api/visits/1001?x=1&y=%2F#top",
		"relative":       "/api/visits/1001",
		"base":           v.url() + "/api",
		"outside-base":   v.url() + "/connect/token",
		"relative-out":   "/connect/token",
		"other-port":     "https://127.0.0.1:" + hostPort(t, att.tls.URL) + "/api/visits",
		"other-name":     "https://localhost:" + simPort + "/api/visits",
		"other-scheme":   "http://" + hostOf(t, v.url()) + "/api/visits",
		"attacker":       att.tls.URL + "/steal",
		"attacker-plain": att.plain.URL + "/steal",
		"scheme-less":    "//" + hostOf(t, att.tls.URL) + "/steal",
	}
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		loc, ok := locations[r.PathValue("case")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Location", loc)
		status := http.StatusFound
		if r.Method == http.MethodPost {
			status = http.StatusTemporaryRedirect
		}
		w.WriteHeader(status)
	})
	v.sim.HandleAPI("GET /api/redirect/{case}", redirect)
	v.sim.HandleAPI("POST /api/redirect/{case}", redirect)
	p := e.start(prefixedConfig(e))
	p.ready(t)

	local := p.data + "/hgem"
	want := map[string]string{
		"own":      local + "/visits/1001?x=1&y=%2F#top",
		"relative": local + "/visits/1001",
		"base":     local,
		// Outside base_url's path: absolute on the upstream, never a
		// local path (which could name another upstream's route).
		"relative-out": v.url() + "/connect/token",
	}
	for name, loc := range locations {
		if want[name] == "" {
			want[name] = loc // another origin or outside base_url: passed through unchanged
		}
	}
	for name := range locations {
		for _, method := range []string{"GET", "POST"} {
			t.Run(name+" "+method, func(t *testing.T) {
				before := len(v.sim.APIRequests())
				var body io.Reader
				if method == "POST" {
					body = strings.NewReader(`{"a":1}`)
				}
				r := do(t, method, p.data+"/hgem/redirect/"+name, body)
				if (method == "GET" && r.StatusCode != 302) || (method == "POST" && r.StatusCode != 307) {
					t.Fatalf("got %d %s, want the upstream's redirect", r.StatusCode, r.body)
				}
				if got := r.Header.Get("Location"); got != want[name] {
					t.Errorf("Location %q, want %q", got, want[name])
				}
				if n := len(v.sim.APIRequests()) - before; n != 1 {
					t.Errorf("the simulator saw %d requests, want 1: the redirect must not be followed", n)
				}
			})
		}
	}
	t.Run("forward-proxy mode", func(t *testing.T) {
		r := rawOnce(t, p, rawGET(v.url()+"/api/redirect/own", hostOf(t, v.url())))
		r2 := rawOnce(t, p, rawGET(strings.Replace(v.url(), "https:", "http:", 1)+"/api/redirect/attacker", hostOf(t, v.url())))
		if r.StatusCode != 302 || r.Header.Get("Location") != want["own"] || r2.StatusCode != 302 || r2.Header.Get("Location") != want["attacker"] {
			t.Errorf("got %d %q and %d %q", r.StatusCode, r.Header.Get("Location"), r2.StatusCode, r2.Header.Get("Location"))
		}
		// A client using the proxy (curl -L with http_proxy) follows the
		// rewritten Location through it, in absolute form: it names the
		// proxy itself and is routed by its path, by IP and as localhost.
		port := hostPort(t, p.data)
		own, _, _ := strings.Cut(want["own"], "#") // a client sends no fragment
		for _, loc := range []string{own, strings.Replace(own, "127.0.0.1", "localhost", 1)} {
			before := len(v.sim.APIRequests())
			r := rawOnce(t, p, rawGET(loc, hostOf(t, v.url())))
			reqs := v.sim.APIRequests()
			if r.StatusCode == http.StatusForbidden || len(reqs) != before+1 || reqs[len(reqs)-1].Path != "/api/visits/1001" {
				t.Errorf("following %s through the proxy (port %s): %d %s, want it routed to /api/visits/1001", loc, port, r.StatusCode, r.body)
			}
		}
	})
	att.check(t)
}

func hostPort(t *testing.T, raw string) string {
	_, port, err := net.SplitHostPort(hostOf(t, raw))
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func TestHopByHopCannotStripInjection(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	p := e.start(prefixedConfig(e))
	p.ready(t)
	simHost := hostOf(t, v.url())
	for _, target := range []string{"/hgem/visits", "http://" + simHost + "/api/visits"} {
		for _, conn := range []string{"Authorization", "hgem-api-key", "Authorization, hgem-api-key, X-Caller-Hop", "close, authorization, HGEM-API-KEY, x-caller-hop"} {
			t.Run(target+" Connection: "+conn, func(t *testing.T) {
				before := len(v.sim.APIRequests())
				r := rawOnce(t, p, "GET "+target+" HTTP/1.1\r\nHost: "+simHost+"\r\n"+
					"Connection: "+conn+"\r\n"+
					"Authorization: Bearer caller-token\r\n"+
					"hgem-api-key: caller-key\r\n"+
					"Proxy-Authorization: Basic Y2FsbGVyOnB3\r\n"+
					"X-Forwarded-For: 203.0.113.9\r\n"+
					"X-Forwarded-Host: evil.example\r\n"+
					"X-Forwarded-Proto: https\r\n"+
					"Forwarded: for=203.0.113.9;host=evil.example;proto=https\r\n"+
					"X-Caller-Hop: drop-me\r\n"+
					"X-Caller-Kept: yes\r\n\r\n")
				if r.StatusCode != 200 {
					t.Fatalf("got %d %s: the injected credentials did not reach the vendor", r.StatusCode, r.body)
				}
				reqs := v.sim.APIRequests()[before:]
				if len(reqs) != 1 {
					t.Fatalf("the vendor saw %d requests, want 1", len(reqs))
				}
				h := reqs[0].Header
				auth := h.Values("Authorization")
				if len(auth) != 1 || !contains(v.sim.Tokens(), strings.TrimPrefix(auth[0], "Bearer ")) {
					t.Errorf("Authorization at the vendor: %d values, not the issued token", len(auth))
				}
				if keys := h.Values("Hgem-Api-Key"); len(keys) != 1 || keys[0] != v.creds["api_key"] {
					t.Errorf("hgem-api-key at the vendor: %d values, not the configured key", len(keys))
				}
				gone := []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "Proxy-Authorization", "Connection"}
				if strings.Contains(strings.ToLower(conn), "x-caller-hop") {
					gone = append(gone, "X-Caller-Hop") // named hop-by-hop by the caller: dropped
				}
				for _, k := range gone {
					if vs := h.Values(k); len(vs) > 0 {
						t.Errorf("%s reached the vendor: %q", k, vs)
					}
				}
				if h.Get("X-Caller-Kept") != "yes" {
					t.Error("an end-to-end header of the caller did not reach the vendor")
				}
			})
		}
	}
}

func TestSlowAndOversizedHeaders(t *testing.T) {
	e := newEnv(t)
	cfg := prefixedConfig(e)
	cfg.ReadHeaderTimeout.Duration = time.Second
	p := e.start(cfg)
	p.ready(t)

	t.Run("dribbled headers are cut off", func(t *testing.T) {
		c := dialRaw(t, p)
		start := time.Now()
		c.send("GET /hgem/visits HTTP/1.1\r\nHost: x\r\n")
		// One header line every 100ms for up to 20s: never finishing the headers.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for i := 0; i < 200; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := fmt.Fprintf(c.conn, "X-Slow-%d: y\r\n", i); err != nil {
					return
				}
			}
		}()
		c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := c.br.Read(make([]byte, 1024))
		d := time.Since(start)
		if n > 0 || err == nil {
			t.Fatalf("got %d bytes of answer, want the connection closed", n)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("still open after %s with a 1s read_header_timeout", d)
		}
		if d < time.Second {
			t.Fatalf("closed after %s, before read_header_timeout", d)
		}
		t.Logf("closed after %s", d)
	})

	t.Run("headers over 64 KiB", func(t *testing.T) {
		c := dialRaw(t, p)
		big := "GET /hgem/visits HTTP/1.1\r\nHost: x\r\n"
		for i := 0; len(big) < 80<<10; i++ {
			big += fmt.Sprintf("X-Big-%d: %s\r\n", i, strings.Repeat("a", 1000))
		}
		// Written beside the read: the proxy may answer before reading all of it.
		go io.WriteString(c.conn, big+"\r\n")
		r := c.read("GET")
		if r.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("got %d %s, want 431", r.StatusCode, r.body)
		}
	})

	t.Run("headers just under the limit", func(t *testing.T) {
		hdr := strings.Repeat("a", 60<<10)
		r := get(t, p.data+"/hgem/visits", "X-Large", hdr)
		if r.StatusCode != 200 {
			t.Fatalf("got %d with 60 KiB of headers", r.StatusCode)
		}
	})
}

// wireUpstream is an HTTPS server that records the bytes of every request
// it receives, so that a test can see the headers as they crossed the
// wire rather than as a server's parser left them.
type wireUpstream struct {
	ln    net.Listener
	mu    sync.Mutex
	raw   bytes.Buffer
	heads []textproto.MIMEHeader
}

func newWireUpstream(t *testing.T, e *env) *wireUpstream {
	cfg := e.vendors["hgem"].srv.TLS.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := &wireUpstream{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { w.serve(conn) })
		}
	})
	return w
}

func (w *wireUpstream) url() string { return "https://" + w.ln.Addr().String() }

func (w *wireUpstream) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.raw.Write(b)
}

// serve answers requests on conn, one after another, with 200 and the
// number of body bytes read.
func (w *wireUpstream) serve(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewReader(bufio.NewReader(io.TeeReader(conn, w)))
	for {
		if _, err := tp.ReadLine(); err != nil {
			return
		}
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		w.mu.Lock()
		w.heads = append(w.heads, h)
		w.mu.Unlock()
		var n int64
		switch {
		case strings.EqualFold(h.Get("Transfer-Encoding"), "chunked"):
			n, _ = io.Copy(io.Discard, httputil.NewChunkedReader(tp.R))
			tp.ReadMIMEHeader() // the trailer
		case h.Get("Content-Length") != "":
			cl, _ := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
			n, _ = io.CopyN(io.Discard, tp.R, cl)
		}
		body := strconv.FormatInt(n, 10)
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
}

func (w *wireUpstream) seen() (string, []textproto.MIMEHeader) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.raw.String(), append([]textproto.MIMEHeader(nil), w.heads...)
}

func TestSmuggling(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	v.sim.HandleAPI("POST /api/echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}))
	wire := newWireUpstream(t, e)
	cfg := prefixedConfig(e)
	cfg.Upstreams["wire"] = e.upstream("hgem", func(u *config.Upstream) { u.BaseURL, u.TokenURL = wire.url(), v.url()+"/connect/token" })
	p := e.start(cfg)
	p.ready(t)
	host := strings.TrimPrefix(p.data, "http://")
	smuggled := func(route string) string {
		return "GET /" + route + "/smuggled HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	}

	for _, route := range []string{"hgem", "wire"} {
		t.Run(route+" Content-Length and Transfer-Encoding", func(t *testing.T) {
			for _, cl := range []string{"4", "100", "0"} {
				c := dialRaw(t, p)
				// Read by Content-Length, the body would end early or swallow the
				// next request; read by Transfer-Encoding, it is "hello".
				c.send("POST /" + route + "/echo HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: " + cl +
					"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + smuggled(route))
				r := c.read("POST")
				switch {
				case r.StatusCode == 400:
				case r.StatusCode == 200 && string(r.body) == "5" && r.Close:
				default:
					t.Fatalf("Content-Length %s: got %d %q (Connection %q), want 400, or 200 read by Transfer-Encoding with the connection closed",
						cl, r.StatusCode, r.body, r.Header.Get("Connection"))
				}
				if ok, why := c.closedByPeer(); !ok {
					t.Fatalf("Content-Length %s: after the response: %s", cl, why)
				}
			}
		})
		t.Run(route+" two Content-Lengths", func(t *testing.T) {
			for _, h := range []string{"Content-Length: 5\r\nContent-Length: 6", "Content-Length: 5, 6", "Content-Length: 6\r\nContent-Length: 5"} {
				c := dialRaw(t, p)
				c.send("POST /" + route + "/echo HTTP/1.1\r\nHost: " + host + "\r\n" + h + "\r\n\r\nhello!" + smuggled(route))
				if r := c.read("POST"); r.StatusCode != 400 {
					t.Fatalf("%q: got %d %q, want 400", h, r.StatusCode, r.body)
				}
				if ok, why := c.closedByPeer(); !ok {
					t.Fatalf("%q: after the response: %s", h, why)
				}
			}
		})
		t.Run(route+" chunked alone keeps working", func(t *testing.T) {
			c := dialRaw(t, p)
			c.send("POST /" + route + "/echo HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
			if r := c.read("POST"); r.StatusCode != 200 || string(r.body) != "5" {
				t.Fatalf("got %d %q", r.StatusCode, r.body)
			}
		})
	}

	for _, r := range v.sim.APIRequests() {
		if strings.Contains(r.Path, "smuggled") {
			t.Errorf("a smuggled request reached the simulator: %s %s", r.Method, r.Path)
		}
		if len(r.Header.Values("Content-Length")) > 0 && len(r.Header.Values("Transfer-Encoding")) > 0 {
			t.Errorf("the simulator got a request with both Content-Length and Transfer-Encoding")
		}
	}
	raw, heads := wire.seen()
	if strings.Contains(raw, "smuggled") {
		t.Errorf("a smuggled request reached the upstream:\n%s", raw)
	}
	if len(heads) == 0 {
		t.Fatal("nothing reached the wire upstream")
	}
	for _, h := range heads {
		if len(h["Content-Length"]) > 1 || (len(h["Content-Length"]) > 0 && len(h["Transfer-Encoding"]) > 0) {
			t.Errorf("the upstream got Content-Length %q with Transfer-Encoding %q", h["Content-Length"], h["Transfer-Encoding"])
		}
	}
}

func TestListenersDefaultToLoopback(t *testing.T) {
	e := newEnv(t)
	// Its subject is a key left out: the configs are text.
	upstreams := "upstreams:\n" + e.upstreamYAML("hgem")
	validate := func(cfg string) (int, string) {
		return validateOut(t, e.write("validate.yaml", []byte(cfg)))
	}

	if code, out := validate(upstreams); code != 0 || strings.Contains(out, "warning") {
		t.Errorf("defaults: exit %d, stderr %q: want 0 and no warning", code, out)
	}
	code, out := validate("listen: 0.0.0.0:8080\nadmin_listen: 0.0.0.0:9901\n" + upstreams)
	var listen, admin bool
	for _, l := range strings.Split(out, "\n") {
		listen = listen || strings.HasPrefix(l, "listen: ") && strings.Contains(l, "warning")
		admin = admin || strings.HasPrefix(l, "admin_listen: ") && strings.Contains(l, "warning")
	}
	if code != 0 || !listen || !admin {
		t.Errorf("0.0.0.0: exit %d, stderr %q: want 0 and a warning line for listen: and admin_listen:", code, out)
	}

	t.Run("run binds the defaults", func(t *testing.T) {
		// The default ports are fixed; something else holding them is a
		// failure to see, not a reason to skip.
		for _, a := range []string{"127.0.0.1:8080", "127.0.0.1:9901"} {
			l, err := net.Listen("tcp", a)
			if err != nil {
				t.Fatalf("%s, a default port, is in use, so the defaults cannot be tested: %v", a, err)
			}
			l.Close()
		}
		p := e.startText("log_level: debug\n" + upstreams)
		if p.data != "http://127.0.0.1:8080" || p.admin != "http://127.0.0.1:9901" {
			t.Fatalf("listening on %s and %s, want the loopback defaults", p.data, p.admin)
		}
		p.ready(t)
		if r := get(t, p.data+"/hgem/api/visits"); r.StatusCode != 200 {
			t.Fatalf("got %d", r.StatusCode)
		}
		p.stop()
	})
}
