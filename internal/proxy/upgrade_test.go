package proxy

import (
	"bufio"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/upstream"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// simTokens mints tokens from the simulator through the real adapter, as
// the broker would, without the broker's cache: once the current
// generation is invalidated, the next Token mints anew.
type simTokens struct {
	ad    *upstream.Adapter
	creds secrets.Credentials

	mu    sync.Mutex
	cur   broker.Token // Gen 0: none held
	mints int
}

func (s *simTokens) Token(ctx context.Context) (broker.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.Gen != 0 {
		return s.cur, nil
	}
	tok, err := s.ad.Fetch(ctx, s.creds, "")
	if err != nil {
		return broker.Token{}, err
	}
	s.mints++
	tok.Gen, tok.Header = uint64(s.mints), s.ad.Header(tok.AccessToken, s.creds)
	s.cur = tok
	return tok, nil
}

func (s *simTokens) Invalidate(gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.Gen != gen {
		return false
	}
	s.cur = broker.Token{}
	return true
}

func (s *simTokens) minted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mints
}

// upgradeEnv is an HGEM simulator served over HTTPS with HTTP/2 on offer,
// as the vendors' hosts do, and a data plane in front of it.
type upgradeEnv struct {
	sim    *vendorsim.Server
	up     *httptest.Server
	creds  map[string]string
	tokens *simTokens
	h      *Handler
	srv    *Server
	addr   string // host:port of the data plane
	logs   *observer.ObservedLogs
}

func newUpgradeEnv(t *testing.T) *upgradeEnv {
	t.Helper()
	creds := map[string]string{"api_key": "sim-key", "client_id": "sim-client", "client_secret": "sim-secret"}
	sim, err := vendorsim.New(vendorsim.HGEM, creds)
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewUnstartedServer(sim)
	up.EnableHTTP2 = true
	up.StartTLS()
	t.Cleanup(up.Close)
	t.Cleanup(sim.Close)

	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	// The transports the daemon builds: HTTP/2 included for tokens, and the
	// data plane's own client for API calls and upgrades.
	tr, err := upstream.Transport(ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	ad, err := upstream.New(config.Upstream{Type: "hgem", TokenURL: up.URL + "/connect/token"}, upstream.TokenClient(tr, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse(up.URL)
	e := &upgradeEnv{sim: sim, up: up, creds: creds}
	e.tokens = &simTokens{ad: ad, creds: secrets.NewCredentials(creds, "1")}
	api := NewClient(tr)
	t.Cleanup(api.CloseIdleConnections)
	route := &Route{Name: "hgem", Base: base, KeyHeaders: ad.KeyHeaders(), Tokens: e.tokens, Transport: api,
		Timeout: 10 * time.Second, ReplayMaxBytes: 1 << 20}
	core, logs := observer.New(zap.InfoLevel)
	e.logs = logs
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	e.h = New(NewTable([]*Route{route}), e.addr, nil, zap.New(core))
	e.srv = e.h.Server(ServerOptions{})
	go e.srv.Serve(ln)
	t.Cleanup(e.srv.Close)
	return e
}

// dial opens a WebSocket to the simulator's echo through the data plane,
// sending the given headers as a caller would.
func (e *upgradeEnv) dial(t *testing.T, ctx context.Context, h http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, "ws://"+e.addr+"/hgem"+vendorsim.UpgradePath, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		var body []byte
		if resp != nil {
			body, _ = io.ReadAll(resp.Body)
		}
		t.Fatalf("dial: %v: %s", err, body)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(1 << 20)
	return c
}

// ended waits until the simulator's handler of its i-th API request has
// returned, which for a switched connection is when that connection closed.
func (e *upgradeEnv) ended(t *testing.T, i int) vendorsim.Request {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if reqs := e.sim.APIRequests(); len(reqs) > i && reqs[i].Status != 0 {
			return reqs[i]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the simulator's request %d never ended", i)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with the deadline above
	}
}

// logged waits for the data plane's log line of a request to appear.
func (e *upgradeEnv) logged(t *testing.T, n int) []observer.LoggedEntry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := e.logs.FilterMessage("request").All(); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d request log lines", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func echo(t *testing.T, ctx context.Context, c *websocket.Conn, msgs ...string) {
	t.Helper()
	for i, m := range msgs {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatalf("write message %d (%d bytes): %v", i, len(m), err)
		}
		if _, got, err := c.Read(ctx); err != nil || string(got) != m {
			t.Fatalf("echo of message %d (%d bytes): %d bytes, equal %v, %v", i, len(m), len(got), string(got) == m, err)
		}
	}
}

func TestUpgradeWebSocketInjectsAndEchoes(t *testing.T) {
	e := newUpgradeEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	caller := http.Header{"Authorization": {"Bearer caller-token"}, "Hgem-Api-Key": {"caller-key"},
		"Proxy-Authorization": {"Basic Y2FsbGVy"}}
	c := e.dial(t, ctx, caller)
	echo(t, ctx, c, "one", strings.Repeat("x", 100<<10), "three")
	if err := c.Write(ctx, websocket.MessageBinary, []byte{0, 1, 2, 255}); err != nil {
		t.Fatal(err)
	}
	if typ, got, err := c.Read(ctx); err != nil || typ != websocket.MessageBinary || string(got) != "\x00\x01\x02\xff" {
		t.Fatalf("binary echo: %v %q %v", typ, got, err)
	}

	// The caller closes; the simulator's side ends too.
	c.Close(websocket.StatusNormalClosure, "done")
	got := e.ended(t, 0)
	if got.Status != http.StatusSwitchingProtocols {
		t.Fatalf("the simulator answered %d", got.Status)
	}
	tok := e.tokens.cur.AccessToken
	if a := got.Header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+tok {
		t.Errorf("the simulator saw Authorization %q, want only the minted token", a)
	}
	if k := got.Header.Values("Hgem-Api-Key"); len(k) != 1 || k[0] != e.creds["api_key"] {
		t.Errorf("the simulator saw hgem-api-key %q, want only the configured key", k)
	}
	if got.Header.Get("Proxy-Authorization") != "" || got.Header.Get("Upgrade") != "websocket" {
		t.Errorf("the simulator saw Proxy-Authorization %q, Upgrade %q", got.Header.Get("Proxy-Authorization"), got.Header.Get("Upgrade"))
	}
	l := e.logged(t, 1)[0].ContextMap()
	if l["status"] != int64(101) || l["upstream"] != "hgem" || l["token"] != "fresh" {
		t.Errorf("log line %v, want status 101, upstream hgem, a fresh token", l)
	}
}

func TestUpgradeUpstreamCloses(t *testing.T) {
	e := newUpgradeEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := e.dial(t, ctx, nil)
	echo(t, ctx, c, "hello")
	c.Write(ctx, websocket.MessageText, []byte("close"))
	_, _, err := c.Read(ctx)
	if s := websocket.CloseStatus(err); s != websocket.StatusNormalClosure {
		t.Fatalf("after the simulator closed: %v, want its normal closure", err)
	}
	e.ended(t, 0)
	e.logged(t, 1)
}

// rawUpgrade asks to switch a connection to the simulator's line echo (or
// the Upgrade given in extra) through the data plane: an Upgrade other than
// websocket, which Go's transport would send over HTTP/2 when the upstream
// offers it.
func rawUpgrade(t *testing.T, addr, target string, extra ...string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn := dialRaw(t, addr)
	req := "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nAuthorization: Bearer caller-token\r\n"
	proto := "Upgrade: line-echo\r\n"
	for _, h := range extra {
		if strings.HasPrefix(h, "Upgrade:") {
			proto = ""
		}
		req += h + "\r\n"
	}
	req += proto
	io.WriteString(conn, req+"\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return conn, br, resp
}

func TestUpgradeOtherProtocolOverHTTP1(t *testing.T) {
	e := newUpgradeEnv(t)
	// Warm an HTTP/2 connection to the upstream, as API calls would.
	if resp, err := http.Get("http://" + e.addr + "/hgem/api/visits"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("API call: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	conn, br, resp := rawUpgrade(t, e.addr, "/hgem"+vendorsim.UpgradePath)
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "line-echo" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("got %d %q %s, want 101 to line-echo", resp.StatusCode, resp.Header.Get("Tokenproxy-Error"), b)
	}
	echoThenHalfClose(t, conn, br)
	if r := e.ended(t, 1); r.Status != 101 || r.Header.Get("Authorization") != "Bearer "+e.tokens.cur.AccessToken {
		t.Fatalf("the simulator saw %d with another Authorization", r.Status)
	}
}

// echoThenHalfClose has a line echoed through a switched connection, then
// half-closes it: the upstream sees the end and closes too.
func echoThenHalfClose(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	io.WriteString(conn, "ping\n")
	if l, err := br.ReadString('\n'); l != "ping\n" {
		t.Fatalf("echo: %q %v", l, err)
	}
	conn.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil {
		t.Fatalf("after the caller closed: %q %v, want EOF", rest, err)
	}
}

// dialRaw is a connection to addr for a request written by hand, closed
// when the test ends, that gives up after 20 s.
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	return conn
}

// Bytes of the new protocol sent right behind the request, in the same
// write, reach the upstream: net/http has read them into the hijacked
// connection's buffer, which ReverseProxy alone would not copy.
func TestUpgradeKeepsBytesSentWithTheRequest(t *testing.T) {
	e := newUpgradeEnv(t)
	conn := dialRaw(t, e.addr)
	io.WriteString(conn, "GET /hgem"+vendorsim.UpgradePath+" HTTP/1.1\r\nHost: "+e.addr+
		"\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\n\r\nearly\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("got %v %v, want 101", resp, err)
	}
	if l, err := br.ReadString('\n'); l != "early\n" {
		t.Fatalf("echo of the bytes sent with the request: %q %v", l, err)
	}
	io.WriteString(conn, "late\n")
	if l, err := br.ReadString('\n'); l != "late\n" {
		t.Fatalf("echo after them: %q %v", l, err)
	}
}

// An HTTP/1.0 request's Upgrade is ignored (RFC 9110 §7.8): the upstream
// is asked for no switch, and the caller gets no 101.
func TestUpgradeIgnoredOnHTTP10(t *testing.T) {
	e := newUpgradeEnv(t)
	conn := dialRaw(t, e.addr)
	io.WriteString(conn, "GET /hgem"+vendorsim.UpgradePath+" HTTP/1.0\r\nHost: "+e.addr+
		"\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "" {
		t.Fatalf("HTTP/1.0 request with Upgrade: got %d, Upgrade %q; want no switch", resp.StatusCode, resp.Header.Get("Upgrade"))
	}
}

func TestUpgradeReplaysAfter401(t *testing.T) {
	e := newUpgradeEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	old, err := e.tokens.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.sim.Revoke(old.AccessToken)
	c := e.dial(t, ctx, nil)
	echo(t, ctx, c, "after a replay")
	c.Close(websocket.StatusNormalClosure, "")
	if first := e.ended(t, 0); first.Status != 401 || first.Header.Get("Authorization") != "Bearer "+old.AccessToken {
		t.Fatalf("first attempt: %d, want 401 with the revoked token", first.Status)
	}
	if second := e.ended(t, 1); second.Status != 101 || second.Header.Get("Authorization") == "Bearer "+old.AccessToken {
		t.Fatalf("replay: %d, want 101 with a new token", second.Status)
	}
	if n := e.tokens.minted(); n != 2 {
		t.Fatalf("%d tokens minted, want 2", n)
	}
	if l := e.logged(t, 1)[0].ContextMap(); l["status"] != int64(101) || l["token"] != "replayed" {
		t.Errorf("log line %v, want status 101 and a replayed token", l)
	}
}

func TestUpgradeClosedWhenShutdownTimeoutEnds(t *testing.T) {
	e := newUpgradeEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := e.dial(t, ctx, nil)
	echo(t, ctx, c, "before")
	// The server's shutdown does not wait for a hijacked connection...
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	echo(t, ctx, c, "after Shutdown")
	// ...CloseUpgraded does, until its context (shutdown_timeout) ends.
	timeout, endTimeout := context.WithCancel(context.Background())
	closed := make(chan int, 1)
	go func() { n, _ := e.h.CloseUpgraded(timeout); closed <- n }()
	echo(t, ctx, c, "while shutdown_timeout runs")
	select {
	case n := <-closed:
		t.Fatalf("CloseUpgraded returned %d with the connection open and its context live", n)
	default:
	}
	endTimeout()
	select {
	case n := <-closed:
		if n != 1 {
			t.Fatalf("CloseUpgraded closed %d connections, want 1", n)
		}
	case <-ctx.Done():
		t.Fatal("CloseUpgraded did not return after its context ended")
	}
	if _, _, err := c.Read(ctx); err == nil || websocket.CloseStatus(err) != -1 || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read after shutdown: %v, want the connection cut", err)
	}
	e.ended(t, 0)
	if l := e.logged(t, 1)[0].ContextMap(); l["status"] != int64(101) {
		t.Errorf("log line %v, want status 101", l)
	}
}

func TestUpgradeClosedByCallerDuringShutdown(t *testing.T) {
	e := newUpgradeEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := e.dial(t, ctx, nil)
	echo(t, ctx, c, "before")
	closed := make(chan int, 1)
	go func() { n, _ := e.h.CloseUpgraded(ctx); closed <- n }()
	c.Close(websocket.StatusNormalClosure, "bye")
	select {
	case n := <-closed:
		if n != 0 {
			t.Fatalf("CloseUpgraded closed %d connections, want 0: the caller had closed its own", n)
		}
	case <-ctx.Done():
		t.Fatal("CloseUpgraded still waiting after the only connection closed")
	}
	if n, _ := e.h.CloseUpgraded(ctx); n != 0 {
		t.Fatalf("nothing open, yet CloseUpgraded closed %d", n)
	}
}

// Upgrade requests take the same route, path checks, forward-proxy rules
// and Location rewriting as any other request.
func TestUpgradeRequestsAreRoutedLikeAnyOther(t *testing.T) {
	e := newUpgradeEnv(t)
	e.sim.HandleAPI("GET /api/upgrade/moved", http.RedirectHandler(e.up.URL+vendorsim.UpgradePath+"?from=moved", http.StatusTemporaryRedirect))
	e.sim.HandleAPI("GET /api/upgrade/other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "not-what-was-asked")
		w.WriteHeader(http.StatusSwitchingProtocols)
	}))
	upgrade := []string{"Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="}

	for _, tc := range []struct {
		name, target string
		extra        []string
		status       int
		code         string
	}{
		{"dot segment", "/hgem/api/../connect/token", nil, 400, "bad_request"},
		{"encoded slash", "/hgem/api%2F..%2Fconnect/token", nil, 400, "bad_request"},
		{"unknown upstream", "/nope" + vendorsim.UpgradePath, nil, 404, "unknown_upstream"},
		{"another host in forward-proxy form", "http://127.0.0.2:1" + vendorsim.UpgradePath, nil, 403, "host_not_allowed"},
		{"a protocol name that is not ASCII", "/hgem" + vendorsim.UpgradePath, []string{"Upgrade: w\xe9bsocket"}, 400, "bad_request"},
		{"the upstream switches to another protocol", "/hgem/api/upgrade/other", nil, 502, "upstream_unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.sim.APIRequests())
			_, _, resp := rawUpgrade(t, e.addr, tc.target, append(upgrade, tc.extra...)...)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get("Tokenproxy-Error") != tc.code || !strings.Contains(string(b), `"error":"`+tc.code+`"`) {
				t.Fatalf("got %d %q %s, want %d %s", resp.StatusCode, resp.Header.Get("Tokenproxy-Error"), b, tc.status, tc.code)
			}
			if tc.status < 500 && len(e.sim.APIRequests()) != before {
				t.Fatalf("a refused upgrade reached the simulator")
			}
		})
	}

	t.Run("redirect", func(t *testing.T) {
		_, _, resp := rawUpgrade(t, e.addr, "/hgem/api/upgrade/moved", upgrade...)
		want := "http://" + e.addr + "/hgem" + vendorsim.UpgradePath + "?from=moved"
		if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != want {
			t.Fatalf("got %d Location %q, want 307 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
		}
	})

	t.Run("forward-proxy form", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		proxyURL, _ := url.Parse("http://" + e.addr)
		hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
		c, _, err := websocket.Dial(ctx, "ws://"+e.up.Listener.Addr().String()+vendorsim.UpgradePath,
			&websocket.DialOptions{HTTPClient: hc, HTTPHeader: http.Header{"Authorization": {"Bearer caller"}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		echo(t, ctx, c, "through HTTP_PROXY")
	})
}

// switchUpstream is an upstream's answer to an upgrade: a 101 whose
// Connection field is connection, then serve on the switched connection,
// which is closed when serve returns.
func switchUpstream(w http.ResponseWriter, r *http.Request, connection string, serve func(net.Conn, *bufio.ReadWriter)) {
	w.Header().Set("Connection", connection)
	w.Header().Set("Upgrade", r.Header.Get("Upgrade"))
	w.WriteHeader(http.StatusSwitchingProtocols)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	serve(conn, brw)
}

// switchAndEcho switches (switchUpstream), then echoes every byte of the
// new protocol until the proxy closes.
func switchAndEcho(w http.ResponseWriter, r *http.Request, connection string) {
	switchUpstream(w, r, connection, func(conn net.Conn, brw *bufio.ReadWriter) { io.Copy(conn, brw) })
}

// fasthttp's server closes a connection it has marked to close after the
// answer, without running a hijack handler: the caller's Connection:
// close, an upstream's 101 that says close, a shutdown begun. Each switch
// must still be carried, and end.
func TestUpgradeSwitchesWhateverMarksTheConnectionToClose(t *testing.T) {
	e := newUpgradeEnv(t)
	e.sim.HandleAPI("GET /api/upgrade/closing", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Hop", "upstream-hop")
		switchAndEcho(w, r, "Upgrade, close, X-Hop")
	}))
	switched := func(t *testing.T, conn net.Conn, br *bufio.Reader, resp *http.Response, n int) {
		t.Helper()
		if resp.StatusCode != 101 {
			t.Fatalf("got %d, want 101", resp.StatusCode)
		}
		if c := resp.Header.Values("Connection"); len(c) != 1 || c[0] != "Upgrade" || resp.Header.Get("X-Hop") != "" {
			t.Errorf("the caller's 101 says Connection %q, X-Hop %q; want Upgrade alone", c, resp.Header.Get("X-Hop"))
		}
		echoThenHalfClose(t, conn, br)
		if l := e.logged(t, n)[n-1].ContextMap(); l["status"] != int64(101) {
			t.Errorf("log line %v, want status 101", l)
		}
	}
	t.Run("the caller's Connection: close", func(t *testing.T) {
		conn, br, resp := rawUpgrade(t, e.addr, "/hgem"+vendorsim.UpgradePath, "Connection: close")
		switched(t, conn, br, resp, 1)
	})
	t.Run("the upstream's Connection: close", func(t *testing.T) {
		conn, br, resp := rawUpgrade(t, e.addr, "/hgem/api/upgrade/closing")
		switched(t, conn, br, resp, 2)
	})
	if n, _ := e.h.CloseUpgraded(context.Background()); n != 0 {
		t.Fatalf("CloseUpgraded closed %d, want every switch ended", n)
	}
}

func TestUpgradeAnsweredWhileDraining(t *testing.T) {
	e := newUpgradeEnv(t)
	entered, release := make(chan struct{}), make(chan struct{})
	e.sim.HandleAPI("GET /api/upgrade/held", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		switchAndEcho(w, r, "Upgrade")
	}))
	// An idle connection: Shutdown closes it once it has begun.
	probe := dialRaw(t, e.addr)
	io.WriteString(probe, "GET /hgem/api/visits HTTP/1.1\r\nHost: x\r\n\r\n")
	pbr := bufio.NewReader(probe)
	if resp, err := http.ReadResponse(pbr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("probe: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}

	conn := dialRaw(t, e.addr)
	io.WriteString(conn, "GET /hgem/api/upgrade/held HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\n\r\n")
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- e.srv.Shutdown(ctx) }()
	if _, err := pbr.ReadByte(); err == nil {
		t.Fatal("the idle connection got bytes, want it closed by Shutdown")
	}
	close(release)

	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("got %v %v, want 101", resp, err)
	}
	io.WriteString(conn, "ping\n")
	if l, err := br.ReadString('\n'); l != "ping\n" {
		t.Fatalf("echo while draining: %q %v", l, err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ended, end := context.WithCancel(context.Background())
	end()
	if n, _ := e.h.CloseUpgraded(ended); n != 1 {
		t.Fatalf("CloseUpgraded closed %d, want the switched connection", n)
	}
	// The switch has ended, log line and all: nothing is left for the
	// drain's last step to count as a request cut off.
	if n := e.h.EndRequests(ended); n != 0 {
		t.Errorf("EndRequests ended %d after the only switch was closed, want 0", n)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the switched connection is still open after CloseUpgraded")
	}
	if l := e.logged(t, 2)[1].ContextMap(); l["status"] != int64(101) {
		t.Errorf("log line %v, want status 101", l)
	}
}

// A switch that never ends by itself (its handler never ran) holds
// CloseUpgraded for endWait, not for ever.
func TestCloseUpgradedBoundsItsWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := upgrades{live: map[*upgrade]struct{}{}}
		u.add(func() {}) // never stopped
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		if n, _ := u.close(ctx); n != 1 {
			t.Errorf("closed %d, want 1", n)
		}
		if d := time.Since(start); d != endWait {
			t.Errorf("returned after %s, want endWait (%s)", d, endWait)
		}
	})
}

// A caller that half-closes a switched connection has said all it will
// send, not that it has gone: the upstream's reply to that end still
// reaches it, also from an upstream slower than watchAfter to switch
// (the watch for a caller gone was on when the switch began).
func TestUpgradeCallerHalfCloseKeepsTheUpstreamsReply(t *testing.T) {
	e := newUpgradeEnv(t)
	e.sim.HandleAPI("GET /api/upgrade/slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * watchAfter) // a slow upstream, not a wait for an event
		switchUpstream(w, r, "Upgrade", func(conn net.Conn, brw *bufio.ReadWriter) {
			b, _ := io.ReadAll(brw) // to the caller's half-close
			io.WriteString(conn, "got "+strconv.Itoa(len(b))+" bytes\n")
		})
	}))
	for i := range 3 {
		conn, br, resp := rawUpgrade(t, e.addr, "/hgem/api/upgrade/slow")
		if resp.StatusCode != 101 {
			t.Fatalf("got %d, want 101", resp.StatusCode)
		}
		conn.(*net.TCPConn).CloseWrite()
		if rest, err := io.ReadAll(br); string(rest) != "got 0 bytes\n" || err != nil {
			t.Fatalf("try %d: after the caller's half-close: %q %v, want the upstream's reply", i, rest, err)
		}
	}
}

// A request that asks to switch after CloseUpgraded has stopped waiting
// is ended at once, not left open past it.
func TestUpgradeAddedAfterCloseUpgradedIsClosed(t *testing.T) {
	u := upgrades{live: map[*upgrade]struct{}{}}
	var stop func()
	_, stop = u.add(func() { go stop() }) // its handler ends once it is cancelled
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, _ := u.close(ctx); n != 1 {
		t.Fatalf("closed %d, want 1", n)
	}
	late, end := context.WithCancel(context.Background())
	defer end()
	if up, _ := u.add(end); late.Err() == nil || !up.closed {
		t.Errorf("a request added after close: cancelled %v, closed %v; want both", late.Err() != nil, up.closed)
	}
}
