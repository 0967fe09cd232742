package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/metrics"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// observed is a data plane with metrics and a log in front of an HTTPS
// upstream that records the X-Request-Id it gets and answers as told.
type observed struct {
	h    *Handler
	srv  *testServer
	reg  *prometheus.Registry
	logs *observer.ObservedLogs
	tok  *switchTokens

	mu     sync.Mutex
	seen   []string // X-Request-Id values the upstream received, one entry per request
	parent []string // traceparent values the upstream received
}

// The token and API key switchTokens hands out, easy to find anywhere.
const (
	tokenCanary = "token-canary-7f3a9c"
	keyCanary   = "apikey-canary-51d2e8"
)

// switchTokens hands out a fixed token, or fails with err when set.
type switchTokens struct {
	mu  sync.Mutex
	err error
}

func (s *switchTokens) Token(context.Context) (broker.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return broker.Token{}, s.err
	}
	return broker.Token{AccessToken: tokenCanary, Gen: 1,
		Header: broker.Header{"Authorization": {"Bearer " + tokenCanary}, "Hgem-Api-Key": {keyCanary}}}, nil
}

func (s *switchTokens) Invalidate(uint64) bool { return false }

func (s *switchTokens) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

func newObserved(t *testing.T) *observed {
	t.Helper()
	o := &observed{reg: prometheus.NewRegistry(), tok: &switchTokens{}}
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.seen = append(o.seen, strings.Join(r.Header.Values("X-Request-Id"), ","))
		o.parent = append(o.parent, strings.Join(r.Header.Values("Traceparent"), ","))
		o.mu.Unlock()
		switch r.URL.Path {
		case "/own-id":
			w.Header().Set("X-Request-Id", "vendor-id-42")
		case "/early-hints":
			w.Header().Set("X-Request-Id", "vendor-hint-id")
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
		}
		io.WriteString(w, "hello")
	}))
	t.Cleanup(up.Close)
	base, _ := url.Parse(up.URL)
	tr := NewClient(up.Client().Transport.(*http.Transport))
	t.Cleanup(tr.CloseIdleConnections)
	route := &Route{Name: "up", Base: base, KeyHeaders: []string{"Hgem-Api-Key"}, Tokens: o.tok, Transport: tr,
		Timeout: 10 * time.Second, ReplayMaxBytes: 1 << 20}
	core, logs := observer.New(zap.InfoLevel)
	o.logs = logs
	o.h = New(NewTable([]*Route{route}), "127.0.0.1:0", metrics.New(o.reg, metrics.Build{Version: "test"}), zap.New(core))
	o.srv = newTestServer(o.h)
	t.Cleanup(o.srv.Close)
	return o
}

// get sends a request with the given X-Request-Id values and returns the
// answer's X-Request-Id values and its log line.
func (o *observed) get(t *testing.T, path string, ids ...string) (*http.Response, []string, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", o.srv.URL+path, nil)
	for _, id := range ids {
		req.Header.Add("X-Request-Id", id)
	}
	n := o.logs.FilterMessage("request").Len()
	resp, err := o.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	lines := o.logs.FilterMessage("request").All()
	if len(lines) != n+1 {
		t.Fatalf("%s: %d new request log lines, want 1", path, len(lines)-n)
	}
	return resp, resp.Header.Values("X-Request-Id"), lines[n].ContextMap()
}

func (o *observed) lastSeen() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[len(o.seen)-1]
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestRequestIDs(t *testing.T) {
	o := newObserved(t)
	long := strings.Repeat("x", 128)
	for _, tc := range []struct {
		name   string
		sent   []string
		keep   bool // the caller's value is the id
		path   string
		vendor string // the upstream's own id, logged
	}{
		{"none sent", nil, false, "/up/a", ""},
		{"caller's", []string{"caller-id-1"}, true, "/up/a", ""},
		{"128 visible characters", []string{long}, true, "/up/a", ""},
		{"printable punctuation", []string{`!"#$%&'()*+,-./:;<=>?@[\]^_{|}~`}, true, "/up/a", ""},
		{"129 characters", []string{long + "x"}, false, "/up/a", ""},
		{"a space", []string{"two words"}, false, "/up/a", ""},
		{"not ASCII", []string{"caf\u00e9"}, false, "/up/a", ""},
		{"two values", []string{"one", "two"}, false, "/up/a", ""},
		{"the upstream sends its own", []string{"caller-id-2"}, true, "/up/own-id", "vendor-id-42"},
		{"the upstream sends its own, none sent", nil, false, "/up/own-id", "vendor-id-42"},
		{"an early hint carries the upstream's", []string{"caller-id-3"}, true, "/up/early-hints", "vendor-hint-id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, got, line := o.get(t, tc.path, tc.sent...)
			if resp.StatusCode != 200 || len(got) != 1 {
				t.Fatalf("status %d, X-Request-Id %q: want 200 and exactly one", resp.StatusCode, got)
			}
			id := got[0]
			switch {
			case tc.keep && id != tc.sent[0]:
				t.Errorf("X-Request-Id %q, want the caller's %q", id, tc.sent[0])
			case !tc.keep && !uuidRE.MatchString(id):
				t.Errorf("X-Request-Id %q, want a generated UUID", id)
			}
			if seen := o.lastSeen(); seen != id {
				t.Errorf("the upstream got X-Request-Id %q, want %q", seen, id)
			}
			if line["request_id"] != id {
				t.Errorf("log line request_id %v, want %q", line["request_id"], id)
			}
			if v, ok := line["upstream_request_id"]; tc.vendor != "" && v != tc.vendor || tc.vendor == "" && ok {
				t.Errorf("log line upstream_request_id %v, want %q", v, tc.vendor)
			}
		})
	}
	if a, b := newRequestID(), newRequestID(); a == b {
		t.Errorf("two generated ids are equal: %s", a)
	}
}

// Answers tokenproxy makes itself carry the id too, and their code goes to
// the log line and tokenproxy_proxy_errors_total, once per request.
func TestProxyErrorsCountedAndLogged(t *testing.T) {
	o := newObserved(t)
	// Every series the contract lists is there before any request.
	for _, code := range UpstreamErrors {
		if n := testutil.ToFloat64(o.h.metrics.ProxyErrors.WithLabelValues("up", code)); n != 0 {
			t.Fatalf("%s: %v", code, n)
		}
	}
	if n, err := testutil.GatherAndCount(o.reg, "tokenproxy_proxy_errors_total"); err != nil || n != len(UpstreamErrors)+len(NoUpstreamErrors) {
		t.Fatalf("%d proxy error series before any request (%v), want %d", n, err, len(UpstreamErrors)+len(NoUpstreamErrors))
	}

	_, ids, line := o.get(t, "/nosuch/x", "err-id-1")
	if len(ids) != 1 || ids[0] != "err-id-1" || line["error"] != CodeUnknownUpstream || line["status"] != int64(404) {
		t.Errorf("unknown upstream: X-Request-Id %q, log %v", ids, line)
	}
	if _, ok := line["token"]; ok {
		t.Errorf("a request that got no token logged token %v", line["token"])
	}

	o.tok.fail(&broker.Error{Code: broker.CodeUnavailable, Msg: "up: no token", RetryAfter: time.Second})
	resp, ids, line := o.get(t, "/up/a")
	if len(ids) != 1 || !uuidRE.MatchString(ids[0]) || resp.Header.Get("Tokenproxy-Error") != CodeUnavailable {
		t.Errorf("no token: X-Request-Id %q, Tokenproxy-Error %q", ids, resp.Header.Get("Tokenproxy-Error"))
	}
	if line["error"] != CodeUnavailable || line["status"] != int64(503) || line["token_wait"] == nil || line["upstream_latency"] != nil {
		t.Errorf("no token: log %v, want error, token_wait and no upstream_latency", line)
	}
	if _, ok := line["token"]; ok {
		t.Errorf("a request that got no token logged token %v", line["token"])
	}
	o.tok.fail(nil)

	_, _, line = o.get(t, "/up/a")
	if _, ok := line["error"]; ok || line["token"] != "fresh" || line["response_bytes"] != int64(5) ||
		line["token_wait"] == nil || line["upstream_latency"] == nil {
		t.Errorf("a proxied request: log %v, want no error, a fresh token, 5 bytes and both timings", line)
	}

	want := map[[2]string]float64{{"", CodeUnknownUpstream}: 1, {"up", CodeUnavailable}: 1}
	for _, code := range UpstreamErrors {
		k := [2]string{"up", code}
		if got := testutil.ToFloat64(o.h.metrics.ProxyErrors.WithLabelValues(k[0], k[1])); got != want[k] {
			t.Errorf("proxy errors %v: %v, want %v", k, got, want[k])
		}
	}
	for _, code := range NoUpstreamErrors {
		k := [2]string{"", code}
		if got := testutil.ToFloat64(o.h.metrics.ProxyErrors.WithLabelValues(k[0], k[1])); got != want[k] {
			t.Errorf("proxy errors %v: %v, want %v", k, got, want[k])
		}
	}
	for code, n := range map[string]float64{"404": 1, "503": 1, "200": 1} {
		up := "up"
		if code == "404" {
			up = ""
		}
		if got := testutil.ToFloat64(o.h.metrics.Requests.WithLabelValues(up, code)); got != n {
			t.Errorf("requests %s %s: %v, want %v", up, code, got, n)
		}
	}
	if got := testutil.ToFloat64(o.h.metrics.InFlight.WithLabelValues("up")); got != 0 {
		t.Errorf("%v requests in flight after all ended", got)
	}
}

// A request in flight is counted until it ends, on the series it started
// on even when a reload removes its upstream meanwhile.
func TestRequestsInFlight(t *testing.T) {
	o := newObserved(t)
	release := make(chan struct{})
	arrived := make(chan struct{})
	slow := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
	}))
	t.Cleanup(slow.Close)
	base, _ := url.Parse(slow.URL)
	tr := NewClient(slow.Client().Transport.(*http.Transport))
	t.Cleanup(tr.CloseIdleConnections)
	o.h.SetTable(NewTable([]*Route{{Name: "slow", Base: base, KeyHeaders: []string{"Hgem-Api-Key"}, Tokens: o.tok, Transport: tr,
		Timeout: 10 * time.Second, ReplayMaxBytes: 1 << 20}}))
	g := o.h.metrics.InFlight.WithLabelValues("slow")
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := o.srv.Client().Get(o.srv.URL + "/slow/x")
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-arrived
	if v := testutil.ToFloat64(g); v != 1 {
		t.Fatalf("%v in flight while one request waits on the upstream", v)
	}
	o.h.metrics.Forget("slow")
	close(release)
	<-done
	if n, _ := testutil.GatherAndCount(o.reg, "tokenproxy_requests_in_flight"); n != 1 {
		t.Errorf("%d in-flight series after the removed upstream's request ended, want only up's", n)
	}
}

// An upgrade's 101 carries the id, and the upstream got it.
func TestRequestIDOnUpgrade(t *testing.T) {
	e := newUpgradeEnv(t)
	conn, br, resp := rawUpgrade(t, e.addr, "/hgem"+vendorsim.UpgradePath, "X-Request-Id: upgrade-id-7")
	if resp.StatusCode != 101 || len(resp.Header.Values("X-Request-Id")) != 1 || resp.Header.Get("X-Request-Id") != "upgrade-id-7" {
		t.Fatalf("101 answer: %d, X-Request-Id %q", resp.StatusCode, resp.Header.Values("X-Request-Id"))
	}
	io.WriteString(conn, "ping\n")
	if l, err := br.ReadString('\n'); l != "ping\n" {
		t.Fatalf("echo: %q %v", l, err)
	}
	conn.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, bufio.NewReader(br))
	if r := e.ended(t, 0); r.Header.Get("X-Request-Id") != "upgrade-id-7" {
		t.Errorf("the upstream got X-Request-Id %q", r.Header.Values("X-Request-Id"))
	}
	if l := e.logged(t, 1)[0].ContextMap(); l["request_id"] != "upgrade-id-7" || l["response_bytes"] != nil {
		t.Errorf("log line %v, want request_id and no response_bytes", l)
	}
}
