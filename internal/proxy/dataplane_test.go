package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenproxy/tokenproxy/internal/metrics"
)

// seenRequest is what the recording upstream received.
type seenRequest struct {
	method, path string
	header       http.Header
	body         string
	bodyErr      error
	trailer      http.Header
}

// recRig is a data plane (a real listener, with metrics and a log) in front
// of an HTTPS upstream that records every request it gets and answers with
// answer (200 "ok" when nil).
type recRig struct {
	h    *Handler
	srv  *testServer
	logs *observer.ObservedLogs
	base *url.URL

	mu     sync.Mutex
	seen   []seenRequest
	answer http.HandlerFunc
}

func newRecRig(t *testing.T, basePath string, answer http.HandlerFunc) *recRig {
	t.Helper()
	g := &recRig{answer: answer}
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		g.mu.Lock()
		g.seen = append(g.seen, seenRequest{method: r.Method, path: r.URL.EscapedPath(), header: r.Header.Clone(),
			body: string(b), bodyErr: err, trailer: r.Trailer.Clone()})
		g.mu.Unlock()
		if g.answer != nil {
			g.answer(w, r)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	g.base, _ = url.Parse(up.URL + basePath)
	tr := NewClient(up.Client().Transport.(*http.Transport))
	t.Cleanup(tr.CloseIdleConnections)
	route := &Route{Name: "up", Base: g.base, KeyHeaders: []string{"Hgem-Api-Key"}, Tokens: &switchTokens{}, Transport: tr,
		Timeout: 10 * time.Second, ReplayMaxBytes: 1 << 20}
	core, logs := observer.New(zap.InfoLevel)
	g.logs = logs
	g.h = New(NewTable([]*Route{route}), "127.0.0.1:0", metrics.New(prometheus.NewRegistry(), metrics.Build{Version: "test"}), zap.New(core))
	g.srv = newTestServer(g.h)
	t.Cleanup(g.srv.Close)
	return g
}

func (g *recRig) requests() []seenRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]seenRequest(nil), g.seen...)
}

func (g *recRig) addr() string { return g.srv.Listener.Addr().String() }

// raw sends req as written on a new connection and reads one answer.
func (g *recRig) raw(t *testing.T, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", g.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	method, _, _ := strings.Cut(req, " ")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// A client using tokenproxy as its HTTP proxy follows a rewritten Location
// (http://{listen}/{name}/...) through the proxy, in absolute form: that
// names tokenproxy itself, and is routed as the path alone would be, by the
// address the connection came in on (the configured port is 0 here) and as
// localhost. Any other port is another host.
func TestAbsoluteFormToSelfIsRoutedByPath(t *testing.T) {
	g := newRecRig(t, "/base", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/base/redir" {
			w.Header().Set("Location", "/base/foo?x=1")
			w.WriteHeader(http.StatusFound)
		}
	})
	_, port, _ := net.SplitHostPort(g.addr())
	// The redirect, asked in forward-proxy mode, names the proxy itself.
	resp, _ := g.raw(t, "GET http://"+g.base.Host+"/base/redir HTTP/1.1\r\nHost: "+g.base.Host+"\r\n\r\n")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || loc != "http://"+g.addr()+"/up/foo?x=1" {
		t.Fatalf("redirect: %d Location %q", resp.StatusCode, loc)
	}
	for _, target := range []string{loc, "http://localhost:" + port + "/up/foo?x=1", "http://127.0.0.1:" + port + "?x=1"} {
		resp, body := g.raw(t, "GET "+target+" HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n")
		seen := g.requests()
		last := seen[len(seen)-1]
		want := "/base/foo"
		if strings.HasSuffix(target, port+"?x=1") {
			// No path: "/" names no upstream.
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Tokenproxy-Error") != CodeUnknownUpstream {
				t.Errorf("%s: %d %s, want 404 unknown_upstream", target, resp.StatusCode, body)
			}
			continue
		}
		if resp.StatusCode != http.StatusOK || last.path != want {
			t.Errorf("%s: %d %s, upstream saw %s, want 200 from %s", target, resp.StatusCode, body, last.path, want)
		}
	}
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	for _, target := range []string{"http://" + other.Addr().String() + "/up/foo", "http://localhost.:" + port + "/up/foo", "http://user@" + g.addr() + "/up/foo"} {
		resp, body := g.raw(t, "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want it refused as another host", target, resp.StatusCode, body)
		}
	}
}

func TestAddressedToSelf(t *testing.T) {
	cases := []struct {
		listen, target string
		want           bool
	}{
		{"127.0.0.1:8080", "http://127.0.0.1:8080/up/x", true},
		{"127.0.0.1:8080", "http://localhost:8080/up/x", true},
		{"127.0.0.1:8080", "http://LOCALHOST:8080/up/x", true},
		{"127.0.0.1:8080", "http://127.0.0.1:8081/up/x", false},
		{"127.0.0.1:8080", "http://127.0.0.1/up/x", false},
		{"127.0.0.1:8080", "https://127.0.0.1:8080/up/x", false},
		{"127.0.0.1:8080", "http://10.0.0.1:8080/up/x", false},
		{"127.0.0.1:80", "http://127.0.0.1/up/x", true},
		{"[::1]:8080", "http://[::1]:8080/up/x", true},
		{"[::1]:8080", "http://[0:0::1]:8080/up/x", true},
		{"[::1]:8080", "http://localhost:8080/up/x", true},
		{"localhost:8080", "http://localhost:8080/up/x", true},
		{"10.0.0.1:8080", "http://localhost:8080/up/x", false},
		{"10.0.0.1:8080", "http://10.0.0.1:8080/up/x", true},
		{"0.0.0.0:8080", "http://0.0.0.0:8080/up/x", false},
		{"0.0.0.0:8080", "http://localhost:8080/up/x", false},
	}
	for _, c := range cases {
		h := &Handler{listen: c.listen}
		if got := h.addressedToSelf(mustRequest(t, c.target)); got != c.want {
			t.Errorf("listen %s, %s: %v, want %v", c.listen, c.target, got, c.want)
		}
	}
}

// A request body the caller framed badly is the caller's fault: 400
// bad_request naming the problem, the connection closed after it, never
// 502 upstream_unreachable nor an upstream error in the log; whether the
// body was being read whole (up to ReplayMaxBytes) or streamed.
func TestMalformedCallerBodyIs400(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"bad chunk line", "ZZ\r\nabc\r\n0\r\n\r\n", "malformed chunked framing"},
		{"bare LF", "3\nabc\r\n0\r\n\r\n", "malformed chunked framing"},
		{"oversized chunk length", "ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n", "malformed chunked framing"},
		{"bad chunk after streaming began", "8\r\n12345678\r\nZZ\r\n", "malformed chunked framing"},
	}
	for _, streamed := range []bool{false, true} {
		g := newRecRig(t, "", nil)
		if streamed {
			g.h.table.Load().byName["up"].ReplayMaxBytes = 4
		}
		for i, c := range cases {
			req := "POST /up/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + c.body
			resp, body := g.raw(t, req)
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Tokenproxy-Error") != CodeBadRequest ||
				!strings.Contains(body, "request body") || !strings.Contains(body, c.want) || !resp.Close {
				t.Errorf("%s (streamed %v): %d %q close %v, want 400 bad_request naming %q, connection closed",
					c.name, streamed, resp.StatusCode, body, resp.Close, c.want)
			}
			waitUntil(t, "the log line", func() bool { return g.logs.FilterMessage("request").Len() == i+1 })
			if line := g.logs.FilterMessage("request").All()[i].ContextMap(); line["error"] != CodeBadRequest {
				t.Errorf("%s: logged %v", c.name, line)
			}
		}
		if n := g.logs.FilterMessage("upstream unreachable").Len(); n != 0 {
			t.Errorf("streamed %v: a malformed caller body blamed on the upstream %d times", streamed, n)
		}
		if !streamed && len(g.requests()) != 0 {
			t.Errorf("a body read whole before sending reached the upstream: %+v", g.requests())
		}
		m := g.h.metrics
		if n := testutil.ToFloat64(m.ProxyErrors.WithLabelValues("up", CodeUnreachable)); n != 0 {
			t.Errorf("streamed %v: %v counted as upstream_unreachable", streamed, n)
		}
		if n := testutil.ToFloat64(m.ProxyErrors.WithLabelValues("up", CodeBadRequest)); n != float64(len(cases)) {
			t.Errorf("streamed %v: %v counted as bad_request, want %d", streamed, n, len(cases))
		}
	}
}

// An upstream that answers 101 to a request that asked for no protocol
// switch, or switches to another protocol than the one asked for, gets its
// connection closed, and the caller 502 upstream_unreachable saying so,
// never a tunnel.
func TestUnaskedSwitchIsRefused(t *testing.T) {
	closed := make(chan string, 4)
	g := newRecRig(t, "", func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		io.WriteString(brw, "HTTP/1.1 101 Switching Protocols\r\n"+strings.ReplaceAll(r.Header.Get("X-Answer"), `\n`, "\r\n")+"\r\ntunnel bytes")
		brw.Flush()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.Copy(io.Discard, brw)
		closed <- fmt.Sprint(err)
	})
	cases := []struct{ name, asked, answer, want string }{
		{"no Upgrade asked nor named", "", "", "asked for no protocol switch"},
		{"no Upgrade asked", "", "Connection: Upgrade\r\nUpgrade: websocket\r\n", "asked for no protocol switch"},
		{"another protocol", "Connection: Upgrade\r\nUpgrade: websocket\r\n", "Connection: Upgrade\r\nUpgrade: h2c\r\n", `switched to protocol \"h2c\" (101) though the request asked for \"websocket\"`},
	}
	for _, c := range cases {
		resp, body := g.raw(t, "GET /up/x HTTP/1.1\r\nHost: x\r\n"+c.asked+"X-Answer: "+strings.ReplaceAll(c.answer, "\r\n", "\\n")+"\r\n\r\n")
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Tokenproxy-Error") != CodeUnreachable || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %q, want 502 upstream_unreachable saying %q", c.name, resp.StatusCode, body, c.want)
		}
		if err := <-closed; err != "<nil>" {
			t.Errorf("%s: the upstream's connection was not closed: %s", c.name, err)
		}
	}
}

// The caller's headers that could impersonate or steer on some upstream
// framework never reach it: every X-Forwarded-*, X-Original-URL,
// X-Rewrite-URL, X-Real-IP and the like, and any spelling of a credential header that a CGI/WSGI
// framework reads as the same (case, "_" for "-"). Names merely like them
// pass.
func TestSteeringAndCredentialHeadersRemoved(t *testing.T) {
	g := newRecRig(t, "", nil)
	removed := []string{
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port", "X-Forwarded-Prefix",
		"X-Forwarded-Server", "X-Forwarded-Ssl", "x-forwarded-anything", "X_Forwarded_For", "X-FORWARDED_HOST",
		"Forwarded", "X-Original-URL", "x-original-url", "X-Rewrite-URL", "X_Rewrite_Url", "X-Forwarded",
		"X-Real-IP", "True-Client-IP", "Client-IP", "X-Client-IP", "X-Original-Host", "X-Host", "x_real_ip",
		"Authorization", "Proxy-Authorization", "Proxy_Authorization", "AUTHORIZATION",
		"hgem-api-key", "hgem_api_key", "HGEM_API_KEY", "Hgem-Api_Key",
	}
	kept := []string{"X-Forwardedfor", "X-Original-Urls", "Authorization-Hint", "Hgem-Api-Keys", "X-Caller"}
	req := "GET /up/x HTTP/1.1\r\nHost: x\r\n"
	for _, h := range append(append([]string(nil), removed...), kept...) {
		req += h + ": caller-" + h + "\r\n"
	}
	resp, body := g.raw(t, req+"\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	got := g.requests()[0].header
	for k, vs := range got {
		for _, v := range vs {
			if strings.HasPrefix(v, "caller-") && !slices.Contains(kept, strings.TrimPrefix(v, "caller-")) {
				t.Errorf("the upstream got the caller's %s: %s", k, v)
			}
		}
	}
	for _, k := range kept {
		if v := got.Get(k); v != "caller-"+k {
			t.Errorf("%s: the upstream got %q, want the caller's", k, v)
		}
	}
	if a, k := got.Values("Authorization"), got.Values("Hgem-Api-Key"); len(a) != 1 || a[0] != "Bearer "+tokenCanary || len(k) != 1 || k[0] != keyCanary {
		t.Errorf("injected: Authorization %d values, Hgem-Api-Key %d values, want the token's alone", len(a), len(k))
	}
}

// The fields a Connection field names are hop-by-hop (RFC 9110 §7.6.1),
// also when it lists "close", which net/http's ReadResponse reads by
// deleting the field; in a header block the first read holds whole, and in
// one it does not (the client reads 4 KiB at a time). The caller's side too.
func TestConnectionListedFieldsRemovedBesideClose(t *testing.T) {
	for _, c := range []struct {
		name       string
		connection []string
		big        int
	}{
		{"one field", []string{"close, X-Hop"}, 0},
		{"two fields", []string{"close", "X-Hop"}, 0},
		{"close last", []string{"X-Hop, close"}, 0},
		{"header over the first read", []string{"close, X-Hop"}, 12 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newRecRig(t, "", func(w http.ResponseWriter, r *http.Request) {
				if c.big > 0 {
					// net/http writes fields sorted: this one goes before Connection.
					w.Header().Set("A-Big", strings.Repeat("b", c.big))
				}
				w.Header()["Connection"] = c.connection
				w.Header().Set("X-Hop", "upstream-hop")
				w.Header().Set("X-Kept", "kept")
				io.WriteString(w, "ok")
			})
			for range 2 { // a new upstream connection each time
				resp, body := g.raw(t, "GET /up/x HTTP/1.1\r\nHost: x\r\nConnection: close, X-Caller-Hop\r\nX-Caller-Hop: caller-hop\r\n\r\n")
				if resp.StatusCode != http.StatusOK || body != "ok" {
					t.Fatalf("%d %q", resp.StatusCode, body)
				}
				if v := resp.Header.Values("X-Hop"); v != nil {
					t.Errorf("the caller got X-Hop %q, listed in the upstream's Connection", v)
				}
				if resp.Header.Get("X-Kept") != "kept" || (c.big > 0 && len(resp.Header.Get("A-Big")) != c.big) {
					t.Errorf("the answer lost fields it should keep: %v", resp.Header)
				}
			}
			for _, r := range g.requests() {
				if v := r.header.Values("X-Caller-Hop"); v != nil {
					t.Errorf("the upstream got X-Caller-Hop %q, listed in the caller's Connection", v)
				}
			}
		})
	}
}

// A 1xx answer's hop-by-hop fields stay on the upstream's hop too.
func TestInterimAnswerHopByHopFieldsRemoved(t *testing.T) {
	g := newRecRig(t, "", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Link", "</style.css>; rel=preload")
		h.Set("Connection", "close, X-Hop")
		h.Set("X-Hop", "upstream-hop")
		h.Set("Keep-Alive", "timeout=5")
		w.WriteHeader(http.StatusEarlyHints)
		for _, k := range []string{"Link", "Connection", "X-Hop", "Keep-Alive"} {
			h.Del(k)
		}
		io.WriteString(w, "ok")
	})
	c := dialRaw(t, g.addr())
	io.WriteString(c, "GET /up/x HTTP/1.1\r\nHost: x\r\n\r\n")
	tp := textproto.NewReader(bufio.NewReader(c))
	line, err := tp.ReadLine()
	if err != nil || line != "HTTP/1.1 103 Early Hints" {
		t.Fatalf("first answer %q (%v), want the 103", line, err)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatal(err)
	}
	if h.Get("Link") == "" || h["Connection"] != nil || h["X-Hop"] != nil || h["Keep-Alive"] != nil {
		t.Errorf("the caller's 103: %v; want Link and no hop-by-hop field", h)
	}
}

func TestSameName(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"Hgem-Api-Key", "hgem_api_key", true},
		{"PROXY_AUTHORIZATION", "Proxy-Authorization", true},
		{"Authorization", "Authorisation", false},
		{"Authorization", "Authorization_", false},
		{"a-b", "a_b", true},
		{"a-b", "a.b", false},
	} {
		if got := sameName(c.a, c.b); got != c.want {
			t.Errorf("sameName(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

// A relative Location outside the upstream's base path, followed on
// tokenproxy as a local path, would name another upstream's route and get
// that upstream's credentials: it comes back absolute, on the upstream.
func TestRelativeLocationOutsideBaseStaysOnTheUpstream(t *testing.T) {
	g := newRecRig(t, "/base/v1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", r.URL.Query().Get("to"))
		w.WriteHeader(http.StatusFound)
	})
	lh := *g.h.table.Load().byName["up"]
	lh.Name = "lh"
	g.h.SetTable(NewTable([]*Route{g.h.table.Load().byName["up"], &lh}))
	local := "http://" + g.addr()
	for to, want := range map[string]string{
		"/lh/z":                      g.base.Scheme + "://" + g.base.Host + "/lh/z",
		"/base/v1/next?a=1":          local + "/up/next?a=1",
		"next":                       local + "/up/next",
		"/base/v2":                   g.base.Scheme + "://" + g.base.Host + "/base/v2",
		"https://other.example/lh/z": "https://other.example/lh/z",
	} {
		resp, _ := g.raw(t, "GET /up/r?to="+url.QueryEscape(to)+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if got := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || got != want {
			t.Errorf("Location %s: %d %q, want %q", to, resp.StatusCode, got, want)
		}
	}
}

// HTTP/1.0 with Transfer-Encoding is faulty framing (RFC 9112 §6.1): a
// hop that ignores the field (as net/http does, golang/go#12785) reads the
// body by Content-Length, or as empty, and the rest of the chunked body as
// another request. The data plane refuses it with 400 before routing
// (checkRequest), and closes every HTTP/1.0 connection after its answer:
// what was smuggled behind a body never reaches an upstream.
func TestHTTP10ConnectionsClosedAfterTheAnswer(t *testing.T) {
	g := newRecRig(t, "", nil)
	smuggled := "GET /up/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := []string{
		"POST /up/a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\n" + smuggled,
		"POST /up/a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled,
		"GET /up/a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled,
		"POST /up/a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc" + smuggled,
	}
	for _, req := range cases {
		c, err := net.Dial("tcp", g.addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req)
		got, err := io.ReadAll(c) // to the close: the test fails on the deadline otherwise
		c.Close()
		if err != nil || strings.Count(string(got), "HTTP/1.") != 1 || !strings.Contains(string(got), "Connection: close\r\n") {
			t.Errorf("%q: got %q (%v), want one answer with Connection: close, then the close", req, got, err)
		}
	}
	for _, r := range g.requests() {
		if r.path != "/a" {
			t.Errorf("the upstream got %s %s", r.method, r.path)
		}
	}
	if n := len(g.requests()); n != 1 {
		t.Errorf("the upstream got %d requests, want 1: the last case's, without Transfer-Encoding", n)
	}
}

// A caller's request trailers reach the upstream after the body, whether
// the body was read whole (and replayed after a 401, trailers and all) or
// streamed; trailer fields that would be stripped as headers are not sent.
// A Trailer announcing a field RFC 9110 §6.5.1 keeps out of trailers (the
// credentials, the framing, the connection's own) is refused before
// routing, as fasthttp's parser refuses it.
func TestRequestTrailersForwarded(t *testing.T) {
	for _, replayMax := range []int64{1 << 20, 4} {
		g := newRecRig(t, "", func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer tok-2" {
				w.WriteHeader(http.StatusUnauthorized)
			}
		})
		rt := g.h.table.Load().byName["up"]
		rt.ReplayMaxBytes, rt.Tokens = replayMax, &genTokens{gen: 1}
		req := "POST /up/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" +
			"Trailer: X-Checksum, hgem_api_key, X-Original-URL, X-Request-Id\r\n\r\n" +
			"5\r\nhello\r\n6\r\n world\r\n0\r\n" +
			"X-Checksum: sum-1\r\nhgem_api_key: caller-key\r\nX-Original-URL: /evil\r\nX-Request-Id: other\r\n\r\n"
		resp, body := g.raw(t, req)
		seen := g.requests()
		want := 2 // the 401, then the replay
		if replayMax == 4 {
			want = 1 // streamed: its 401 goes back
		}
		if len(seen) != want {
			t.Fatalf("replay_max_bytes %d: the upstream got %d requests (%d %s), want %d", replayMax, len(seen), resp.StatusCode, body, want)
		}
		for i, s := range seen {
			if s.body != "hello world" || s.bodyErr != nil || len(s.trailer) != 1 || s.trailer.Get("X-Checksum") != "sum-1" {
				t.Errorf("replay_max_bytes %d, attempt %d: body %q (%v), trailer %v, want the body and X-Checksum alone",
					replayMax, i, s.body, s.bodyErr, s.trailer)
			}
		}
	}
	g := newRecRig(t, "", nil)
	for _, name := range []string{"Authorization", "Proxy-Authorization", "X-Forwarded-Host", "Keep-Alive", "TE", "Content-Length", "Host"} {
		req := "POST /up/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, " + name + "\r\n\r\n" +
			"5\r\nhello\r\n0\r\n" + name + ": v\r\n\r\n"
		if resp, body := g.raw(t, req); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("Trailer naming %s: %d %s, want 400", name, resp.StatusCode, body)
		}
	}
	if n := len(g.requests()); n != 0 {
		t.Errorf("%d requests announcing forbidden trailers reached the upstream", n)
	}
}

// A trailer carries the trailer section's values alone: not those of a
// field of the same name in the header block, nor a field the message's
// Connection names (RFC 9110 §6.5, §7.6.1); both ways.
func TestTrailersCarryTheTrailerSectionAlone(t *testing.T) {
	g := newRecRig(t, "", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("Trailer", "X-Hop, X-Sum")
		io.WriteString(w, "ok")
		w.Header().Set("X-Hop", "upstream-hop")
		w.Header().Set("X-Sum", "upstream-sum")
	})
	req := "POST /up/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\n" +
		"Trailer: X-Sum, X-Hop, X-Header-Only\r\nX-Sum: in-header\r\nX-Header-Only: in-header\r\n\r\n" +
		"5\r\nhello\r\n0\r\nX-Sum: in-trailer\r\nX-Hop: caller-hop\r\n\r\n"
	resp, body := g.raw(t, req)
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if tr := resp.Trailer; tr.Get("X-Sum") != "upstream-sum" || tr["X-Hop"] != nil {
		t.Errorf("the caller's trailer %v: want X-Sum alone", tr)
	}
	s := g.requests()[0]
	for k, v := range s.trailer { // an announced name that never came has no value
		if len(v) > 0 && (k != "X-Sum" || !slices.Equal(v, []string{"in-trailer"})) || k == "X-Hop" {
			t.Errorf("the upstream's trailer %v: want X-Sum: in-trailer alone", s.trailer)
		}
	}
	if s.header.Get("X-Sum") != "in-header" || s.header.Get("X-Header-Only") != "in-header" {
		t.Errorf("the upstream's header %v: want X-Sum and X-Header-Only as sent", s.header)
	}
}

// A caller that stops sending its body is cut off after the route's timeout
// of silence (answered, or its connection closed), whether its body was being read whole (for a
// replay) or streamed to the upstream; a body that arrives in time, and an
// upstream slower than that once the body is in, are not cut.
func TestStalledCallerBodyIsCutOff(t *testing.T) {
	for _, c := range []struct {
		name       string
		replayMax  int64
		wantStatus []int
	}{
		{"read whole", 1 << 20, []int{http.StatusBadRequest}},
		{"streamed", 4, []int{http.StatusBadRequest, http.StatusGatewayTimeout}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newRecRig(t, "", nil)
			rt := g.h.table.Load().byName["up"]
			rt.ReplayMaxBytes, rt.Timeout = c.replayMax, 300*time.Millisecond
			conn, err := net.Dial("tcp", g.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			io.WriteString(conn, "POST /up/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				t.Fatalf("a stalled body held the connection: %v", err)
			case err != nil:
				// Cut off without an answer: net/http takes a failed read
				// of the connection for the caller leaving.
				return
			}
			if !slices.Contains(c.wantStatus, resp.StatusCode) {
				t.Fatalf("got %d, want one of %v", resp.StatusCode, c.wantStatus)
			}
		})
	}
	t.Run("in time, answer streamed past the limit", func(t *testing.T) {
		g := newRecRig(t, "", func(w http.ResponseWriter, r *http.Request) {
			for _, part := range []string{"one ", "two ", "three"} {
				io.WriteString(w, part)
				w.(http.Flusher).Flush()
				time.Sleep(250 * time.Millisecond)
			}
		})
		// The body's limit must be gone once the body is in: net/http
		// watches the connection while the answer streams, and a stale
		// deadline would end the request as if the caller had left.
		g.h.table.Load().byName["up"].Timeout = 300 * time.Millisecond
		resp, body := g.raw(t, "POST /up/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
		if resp.StatusCode != http.StatusOK || body != "one two three" {
			t.Fatalf("got %d %q, want 200 and the whole answer", resp.StatusCode, body)
		}
	})
}

// An answer sent slowly with a Content-Length reaches the caller piece by
// piece, as one without a length does: an event stream (a break-it
// tester's input: each event was held until the body's end) or any other
// (net/http's 4 KiB buffer held it, status included, until 4 KiB or the
// end).
func TestSlowAnswerWithALengthPassesPieceByPiece(t *testing.T) {
	for _, ctype := range []string{"text/event-stream", "application/octet-stream"} {
		t.Run(ctype, func(t *testing.T) {
			next := make(chan struct{})
			h := http.Header{"Content-Type": {ctype}, "Content-Length": {"22"}}
			g := newRecRig(t, "", twoPieces(h, "data: one\n\n", "data: two\n\n", next))
			// On a failure, the upstream is let go so that everything ends.
			var once sync.Once
			release := func() { once.Do(func() { close(next) }) }
			defer release()
			type first struct {
				resp  *http.Response
				piece string
				err   error
			}
			got := make(chan first, 1)
			go func() {
				// The headers too may be held back: Get is in here.
				resp, err := http.Get(g.srv.URL + "/up/events")
				if err != nil {
					got <- first{err: err}
					return
				}
				b := make([]byte, len("data: one\n\n"))
				n, err := io.ReadFull(resp.Body, b)
				got <- first{resp, string(b[:n]), err}
			}()
			var resp *http.Response
			select {
			case f := <-got:
				if f.resp != nil {
					resp = f.resp
					defer resp.Body.Close()
				}
				if f.err != nil || f.piece != "data: one\n\n" {
					t.Fatalf("first piece: %q (%v)", f.piece, f.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the first piece (or the headers) was held back until the upstream sent the next")
			}
			release()
			rest, err := io.ReadAll(resp.Body)
			if string(rest) != "data: two\n\n" || err != nil {
				t.Fatalf("rest: %q (%v)", rest, err)
			}
		})
	}
}

// An upstream that answers before it has read the body (a 413, a 401) has
// its answer reach a caller still sending a large body: the caller's
// connection is closed after the answer without a reset (linger), which
// would have cost the caller the answer ("connection reset by peer" on its
// write, found in e2e TestReplaysOnceAfter401 one run in three).
func TestEarlyAnswerReachesACallerStillSending(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	}))
	t.Cleanup(up.Close)
	base, _ := url.Parse(up.URL)
	tr := NewClient(up.Client().Transport.(*http.Transport))
	t.Cleanup(tr.CloseIdleConnections)
	h := New(NewTable([]*Route{{Name: "up", Base: base, Tokens: &switchTokens{}, Transport: tr,
		Timeout: 10 * time.Second, ReplayMaxBytes: 1 << 10}}), "127.0.0.1:0", nil, nil)
	srv := newTestServer(h)
	t.Cleanup(srv.Close)
	body := bytes.Repeat([]byte("y"), 4<<20)
	for i := range 20 {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Post(srv.URL+"/up/upload", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("upload %d: %v, want the upstream's 413", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
			t.Fatalf("upload %d: %d, close %v; want 413 and the connection closed", i, resp.StatusCode, resp.Close)
		}
	}
}

// A caller that closes before its body reaches its Content-Length never
// has the part it sent reach the upstream as a whole request (a
// break-it tester's input: fasthttp's body stream ended it like a whole
// one, and the upstream answered 200 to 200 bytes of 500), whether the
// body was being read whole or streamed.
func TestTruncatedCallerBodyNeverReachesTheUpstreamWhole(t *testing.T) {
	for _, replayMax := range []int64{1 << 20, 4} {
		g := newRecRig(t, "", nil)
		g.h.table.Load().byName["up"].ReplayMaxBytes = replayMax
		c, err := net.Dial("tcp", g.addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "POST /up/x HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"+strings.Repeat("a", 200))
		c.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(c)
		c.Close()
		if strings.HasPrefix(string(got), "HTTP/1.1 200") {
			t.Errorf("replay_max_bytes %d: the caller got %q for a body cut short", replayMax, got)
		}
		waitUntil(t, "the log line", func() bool { return g.logs.FilterMessage("request").Len() == 1 })
		for _, r := range g.requests() {
			if r.bodyErr == nil {
				t.Errorf("replay_max_bytes %d: the upstream got a whole request of %d bytes", replayMax, len(r.body))
			}
		}
	}
}

// An upstream's answer trailers reach the caller after the last chunk,
// announced or not (as httputil.ReverseProxy passed them; a break-it
// tester found the unannounced dropped), but X-Request-Id and
// Tokenproxy-Error, which only tokenproxy sets.
func TestAnswerTrailersForwarded(t *testing.T) {
	g := newRecRig(t, "", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum, X-Request-Id")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", "abc")
		w.Header().Set("X-Request-Id", "upstream-id")
		w.Header().Set(http.TrailerPrefix+"X-Late", "def")
		w.Header().Set(http.TrailerPrefix+"Tokenproxy-Error", "forged")
	})
	resp, body := g.raw(t, "GET /up/t HTTP/1.1\r\nHost: x\r\n\r\n")
	if body != "body" || resp.Trailer.Get("X-Sum") != "abc" || resp.Trailer.Get("X-Late") != "def" ||
		resp.Trailer.Get("Tokenproxy-Error") != "" || resp.Trailer.Get("X-Request-Id") != "" {
		t.Fatalf("body %q, trailer %v: want X-Sum and X-Late alone", body, resp.Trailer)
	}
}

// An answer of unknown length goes to an HTTP/1.0 caller unframed, ended
// by the connection's close: HTTP/1.0 has no chunked coding (RFC 9112
// §7.1), and no trailers.
func TestHTTP10CallerGetsAnUnframedBody(t *testing.T) {
	body := strings.Repeat("a", 60000)
	g := newRecRig(t, "", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-T")
		io.WriteString(w, body[:100])
		w.(http.Flusher).Flush() // no length from here on
		io.WriteString(w, body[100:])
		w.Header().Set("X-T", "t")
	})
	c := dialRaw(t, g.addr())
	io.WriteString(c, "GET /up/x HTTP/1.0\r\n\r\n")
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	head, rest, _ := strings.Cut(string(got), "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 200 ") || strings.Contains(strings.ToLower(head), "transfer-encoding") ||
		strings.Contains(strings.ToLower(head), "trailer") || strings.Contains(strings.ToLower(head), "content-length") {
		t.Errorf("header %q: want 200 with no framing and no Trailer", head)
	}
	if rest != body {
		t.Errorf("body of %d bytes (%q...), want the upstream's %d as they are", len(rest), rest[:min(len(rest), 12)], len(body))
	}
	if l := g.logs.FilterMessage("request").All(); len(l) != 1 || l[0].ContextMap()["status"] != int64(200) {
		t.Errorf("log lines %v, want one with 200", l)
	}
}

// An answer that fasthttp's server hands over (written before the
// caller's body was read whole) is still the drain's to wait for, and to
// close at shutdown_timeout: fasthttp's Shutdown no longer sees it,
// CloseUpgraded does.
func TestDrainSeesAnAnswerWrittenBeforeTheBody(t *testing.T) {
	e := newUpgradeEnv(t)
	release := make(chan struct{})
	defer close(release)
	e.sim.HandleAPI("POST /api/early", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "start\n") // the body unread
		w.(http.Flusher).Flush()
		<-release
	}))
	c := dialRaw(t, e.addr)
	io.WriteString(c, "POST /hgem/api/early HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\n\r\n")
	go io.Copy(c, strings.NewReader(strings.Repeat("z", 2<<20))) // part of it
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	rb := bufio.NewReader(resp.Body)
	if l, err := rb.ReadString('\n'); l != "start\n" {
		t.Fatalf("first line %q %v", l, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	timedOut, end := context.WithCancel(context.Background())
	end()
	if s, n := e.h.CloseUpgraded(timedOut); s != 0 || n != 1 {
		t.Fatalf("CloseUpgraded closed %d switches and %d answers, want the answer still streaming", s, n)
	}
	if rest, err := io.ReadAll(rb); err == nil {
		t.Errorf("read %q to a clean end, want the answer cut", rest)
	}
	if l := e.logged(t, 1)[0].ContextMap(); l["status"] != int64(200) {
		t.Errorf("log line %v, want status 200", l)
	}
}

// failAfter accepts limit bytes, then fails: a caller's connection that
// goes away part way through an answer.
type failAfter struct{ limit int }

func (w *failAfter) Write(p []byte) (int, error) {
	n := min(len(p), w.limit)
	w.limit -= n
	if n < len(p) {
		return n, errors.New("connection reset by peer")
	}
	return n, nil
}

// response_bytes is what went to the caller, not what came from the
// upstream: an answer cut off logs the bytes written (README, the request
// log's fields).
func TestResponseBytesCountsWhatWasWritten(t *testing.T) {
	for _, first := range []int{0, 1000} {
		x := &exchange{}
		buf := make([]byte, 32<<10)
		b := &answerBody{x: x, rc: io.NopCloser(strings.NewReader(strings.Repeat("a", 200<<10))), buf: &buf, first: first}
		n, err := b.WriteTo(&failAfter{limit: 40000})
		if err == nil || n != 40000 || x.bytes != 40000 {
			t.Errorf("first piece %d: wrote %d (%v), response_bytes %d; want 40000 written, 40000 counted, an error", first, n, err, x.bytes)
		}
	}
}

// An upload still coming when Server.Close cuts its connection (the drain
// at shutdown_timeout) has no one to answer: logged 499, not a 400 for a
// body that the caller did not get wrong (a break-it tester's input).
func TestUploadCutByCloseIsLogged499(t *testing.T) {
	g := newRecRig(t, "", nil)
	g.h.table.Load().byName["up"].ReplayMaxBytes = 4 // streamed, not read whole first
	conn, err := net.Dial("tcp", g.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /up/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
	waitUntil(t, "the upload to be in flight", func() bool {
		g.h.requests.mu.Lock()
		defer g.h.requests.mu.Unlock()
		return len(g.h.requests.live) == 1
	})
	g.srv.srv.Close()
	waitUntil(t, "the upload's log line", func() bool { return g.logs.FilterMessage("request").Len() == 1 })
	l := g.logs.FilterMessage("request").All()[0].ContextMap()
	if l["status"] != int64(499) || l["error"] != nil || l["response_bytes"] != int64(0) {
		t.Errorf("log line %v, want status 499, no error, 0 bytes", l)
	}
}
