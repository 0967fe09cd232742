package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// The fault suite: the real binary against the simulators, with faults on
// the way (faultProxy) or in the vendor's answers (vendorsim.Fault). Every
// upstream here has token_timeout 1s and timeout 2s unless a test says
// otherwise, so that the bounds below are short.
const (
	tokenTimeout   = time.Second
	apiTimeout     = 2 * time.Second
	boundSlack     = 2 * time.Second // allowed on top of the timeout that applies
	recoveryBound  = 12 * time.Second
	goroutineSlack = 4
)

// noLeaks checks, when t ends and after its other cleanups, that the test
// process has no goroutine left of those it started: fault proxies,
// simulators' servers, clients.
func noLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		client.CloseIdleConnections()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.Now().Add(10 * time.Second); goleak.Find(ignore) != nil && time.Now().Before(deadline); {
			<-tick.C
		}
		goleak.VerifyNone(t, ignore)
	})
}

// quick never keeps a connection, so that tokenproxy holds none of ours
// between requests and its goroutine count means something.
var quick = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// keepAlive is a client for bursts; its connections are closed when t ends.
func keepAlive(t *testing.T) *http.Client {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}
}

// outcome is one caller request, timed; err is a transport or body error.
type outcome struct {
	status int
	header http.Header
	body   []byte
	err    error
	took   time.Duration
	end    time.Time
}

func (o outcome) String() string {
	if o.status == 0 {
		return fmt.Sprintf("error %v after %s", o.err, o.took.Round(time.Millisecond))
	}
	s := strings.TrimSpace(fmt.Sprintf("%d %s", o.status, o.header.Get("Tokenproxy-Error"))) + " after " + o.took.Round(time.Millisecond).String()
	if o.err != nil {
		s += fmt.Sprintf(" (body: %v)", o.err)
	}
	return s
}

// send makes one request and reads the whole answer.
func send(c *http.Client, method, url, body string) outcome {
	start := time.Now()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return outcome{err: err}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return outcome{err: err, took: time.Since(start), end: time.Now()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return outcome{status: resp.StatusCode, header: resp.Header, body: b, err: err, took: time.Since(start), end: time.Now()}
}

// sendAPI calls kind's usual API endpoint through p.
func sendAPI(c *http.Client, p *proc, kind string) outcome {
	a := apiPath[kind]
	return send(c, a.method, p.data+"/"+kind+a.path, a.body)
}

// burst has workers call kind's API through p until the deadline.
func burst(c *http.Client, p *proc, kind string, workers int, until time.Time) []outcome {
	var mu sync.Mutex
	var outs []outcome
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(until) {
				o := sendAPI(c, p, kind)
				mu.Lock()
				outs = append(outs, o)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return outs
}

// proxied is kind's entry with its API and token endpoints reached through
// the given fault proxies (TLS passes through them, and the simulators'
// certificate is valid for 127.0.0.1).
func (e *env) proxied(kind string, api, token *faultProxy, edits ...func(*config.Upstream)) config.Upstream {
	u := e.upstream(kind, edits...)
	u.BaseURL = "https://" + api.addr()
	u.TokenURL = "https://" + token.addr() + e.vendors[kind].sim.TokenPath()
	return u
}

// configOf is the suite's config around upstreams: debug logs, and a
// shutdown_timeout of 5s.
func configOf(us config.Upstreams) config.Config {
	c := newConfig()
	c.LogLevel, c.ShutdownTimeout.Duration, c.Upstreams = "debug", 5*time.Second, us
	return c
}

// short sets the per-upstream timeouts of this suite.
func short(u *config.Upstream) {
	u.TokenTimeout.Duration, u.Timeout.Duration = tokenTimeout, apiTimeout
}

// metric reads one sample from p's /metrics, by name and labels as
// Prometheus prints them ({a="x",b="y"}, sorted); -1 when absent.
func metric(t *testing.T, p *proc, series string) float64 {
	t.Helper()
	o := send(quick, "GET", p.admin+"/metrics", "")
	if o.status != 200 {
		t.Fatalf("/metrics: %v", o)
	}
	sc := bufio.NewScanner(strings.NewReader(string(o.body)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("/metrics: %s: %v", sc.Text(), err)
			}
			return f
		}
	}
	return -1
}

func goroutines(t *testing.T, p *proc) int {
	t.Helper()
	n := metric(t, p, "go_goroutines")
	if n < 0 {
		t.Fatal("/metrics has no go_goroutines")
	}
	return int(n)
}

// upstreamStatus is one upstream's entry in /status.
type upstreamStatus struct {
	State      string  `json:"state"`
	RefreshAt  *string `json:"refresh_at"`
	Generation uint64  `json:"token_generation"`
	LastError  string  `json:"last_error"`
}

func statusOf(t *testing.T, p *proc, name string) upstreamStatus {
	t.Helper()
	o := send(quick, "GET", p.admin+"/status", "")
	var s struct {
		Upstreams map[string]upstreamStatus `json:"upstreams"`
	}
	if o.status != 200 || json.Unmarshal(o.body, &s) != nil {
		t.Fatalf("/status: %v: %s", o, o.body)
	}
	return s.Upstreams[name]
}

// alive checks that p still runs and answers /healthz.
func alive(t *testing.T, p *proc) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("tokenproxy exited: %v\n%s", p.waitErr, p.out.String())
	default:
	}
	if o := send(quick, "GET", p.admin+"/healthz", ""); o.status != 200 {
		t.Fatalf("/healthz: %v", o)
	}
}

// stopClean sends SIGTERM and wants exit code 0 within 10s, and no race report.
func stopClean(t *testing.T, p *proc) {
	t.Helper()
	alive(t, p)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitExit(t, 10*time.Second, "tokenproxy still runs 10s after SIGTERM")
	if p.waitErr != nil || strings.Contains(p.out.String(), "WARNING: DATA RACE") {
		t.Fatalf("tokenproxy exited with %v after SIGTERM, want 0:\n%s", p.waitErr, p.out.String())
	}
}

// checkProxyError checks an answer tokenproxy made itself (CONTRACT.md §4).
func checkProxyError(t *testing.T, o outcome, status int, code, upstream string) {
	t.Helper()
	if o.err != nil {
		t.Fatalf("want %d %s, got %v", status, code, o)
	}
	wantError(t, &response{Response: &http.Response{StatusCode: o.status, Header: o.header}, body: o.body}, status, code, upstream)
	if ra := o.header.Get("Retry-After"); status == 503 {
		if n, err := strconv.Atoi(ra); err != nil || n < 1 {
			t.Fatalf("503 with Retry-After %q, want whole seconds >= 1", ra)
		}
	}
}

// rig is one tokenproxy in front of one simulator, with a fault proxy on
// the way to its API and another on the way to its token endpoint.
type rig struct {
	e          *env
	kind       string
	v          *vendor
	api, token *faultProxy
	p          *proc
}

func newRig(t *testing.T, kind string, prep func(*vendor)) *rig {
	t.Helper()
	e := newEnv(t)
	v := e.vendors[kind]
	if prep != nil {
		prep(v)
	}
	target := v.srv.Listener.Addr().String()
	r := &rig{e: e, kind: kind, v: v, api: newFaultProxy(t, target), token: newFaultProxy(t, target)}
	r.p = e.start(configOf(config.Upstreams{kind: e.proxied(kind, r.api, r.token, short)}))
	return r
}

// faultCase is one fault, at the network (net) or in the vendor's answers
// (sim), and what a caller must see while it lasts.
type faultCase struct {
	name, kind string
	net        *netFault
	sim        *vendorsim.Fault
	// token: the fault is on the way to the token endpoint, so that it
	// shows once the token in hand is gone (the first one lives 2s).
	token  bool
	prep   func(v *vendor) // before tokenproxy starts
	path   string          // a GET instead of apiPath[kind]
	want   func(t *testing.T, o outcome, name string)
	within time.Duration // longest a caller may wait during the fault
}

func (c faultCase) on(r *rig) {
	switch {
	case c.net != nil && c.token:
		r.token.set(*c.net)
	case c.net != nil:
		r.api.set(*c.net)
	case c.token:
		r.v.sim.SetTokenFault(c.sim)
	default:
		r.v.sim.SetAPIFault(c.sim)
	}
}

func (c faultCase) off(r *rig) {
	switch {
	case c.net != nil:
		r.token.set(netFault{})
		r.api.set(netFault{})
	case c.token:
		r.v.sim.SetTokenFault(nil)
	default:
		r.v.sim.SetAPIFault(nil)
	}
}

func proxyError(status int, code string, inMessage ...string) func(*testing.T, outcome, string) {
	return func(t *testing.T, o outcome, name string) {
		t.Helper()
		checkProxyError(t, o, status, code, name)
		for _, s := range inMessage {
			if !strings.Contains(string(o.body), s) {
				t.Errorf("message %s does not say %q", o.body, s)
			}
		}
	}
}

func served(t *testing.T, o outcome, _ string) {
	t.Helper()
	if o.status != 200 || o.err != nil {
		t.Fatalf("want 200, got %v: %s", o, o.body)
	}
}

// vendorAnswer wants the vendor's own answer, passed through unchanged.
func vendorAnswer(status int, header, value, body string) func(*testing.T, outcome, string) {
	return func(t *testing.T, o outcome, _ string) {
		t.Helper()
		if o.err != nil || o.status != status || o.header.Get("Tokenproxy-Error") != "" {
			t.Fatalf("want the vendor's %d passed through, got %v: %s", status, o, o.body)
		}
		if header != "" && o.header.Get(header) != value {
			t.Errorf("%s %q, want %q", header, o.header.Get(header), value)
		}
		if body != "" && string(o.body) != body {
			t.Errorf("body %q, want %q", o.body, body)
		}
	}
}

// cutShort wants an answer the caller can tell is incomplete. Once
// tokenproxy has the upstream's headers it is committed to them, and a body
// cut short is passed on as a connection closed early: after some of the
// body, or before anything reached the caller when the cut came while the
// headers were still in tokenproxy's buffer. A cut before the upstream's
// headers arrived is an unreachable upstream.
func cutShort(t *testing.T, o outcome, name string) {
	t.Helper()
	switch {
	case o.status == 502:
		checkProxyError(t, o, 502, "upstream_unreachable", name)
	case o.err == nil:
		t.Fatalf("want an answer cut short, got a whole one: %v (%d bytes)", o, len(o.body))
	case o.status != 0 && o.status != 200:
		t.Fatalf("want an answer cut short, got %v", o)
	}
}

const bigBody = 512 << 10

func withBig(v *vendor) {
	v.sim.HandleAPI("GET /api/big", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(bigBody))
		w.Write([]byte(strings.Repeat("x", bigBody)))
	}))
}

func TestFaults(t *testing.T) {
	tokenBound := tokenTimeout + boundSlack
	apiBound := apiTimeout + boundSlack
	retryAfter := func(s string) http.Header { return http.Header{"Retry-After": {s}} }
	unavailable := proxyError(503, "credentials_unavailable")
	cases := []faultCase{
		// The network to the API.
		{name: "api latency 100ms", kind: "hgem", net: &netFault{kind: addLatency, latency: 100 * time.Millisecond},
			want: served, within: apiTimeout},
		{name: "api latency beyond timeout", kind: "prominsight", net: &netFault{kind: addLatency, latency: 3 * time.Second},
			want: proxyError(504, "upstream_timeout"), within: apiBound},
		{name: "api hang", kind: "inspera", net: &netFault{kind: hangConn},
			want: proxyError(504, "upstream_timeout"), within: apiBound},
		{name: "api reset", kind: "prodoscore", net: &netFault{kind: resetConn},
			want: proxyError(502, "upstream_unreachable"), within: apiBound},
		{name: "api cut mid-body", kind: "hgem", net: &netFault{kind: cutConn, cutAfter: bigBody / 2},
			prep: withBig, path: "/api/big", want: cutShort, within: apiBound},
		// The network to the token endpoint.
		{name: "token latency 50ms", kind: "inspera", token: true, net: &netFault{kind: addLatency, latency: 50 * time.Millisecond},
			want: served, within: tokenBound},
		{name: "token latency beyond token_timeout", kind: "hgem", token: true, net: &netFault{kind: addLatency, latency: 1500 * time.Millisecond},
			want: proxyError(503, "credentials_unavailable", "did not answer within 1s"), within: tokenBound},
		{name: "token hang", kind: "prominsight", token: true, net: &netFault{kind: hangConn}, want: unavailable, within: tokenBound},
		{name: "token reset", kind: "hgem", token: true, net: &netFault{kind: resetConn}, want: unavailable, within: tokenBound},
		{name: "token cut", kind: "prodoscore", token: true, net: &netFault{kind: cutConn, cutAfter: 40}, want: unavailable, within: tokenBound},
		// The vendor's API misbehaves: its answers reach the caller as they are.
		{name: "api 500", kind: "prodoscore", sim: &vendorsim.Fault{Status: 500},
			want: vendorAnswer(500, "", "", ""), within: apiTimeout},
		{name: "api 429 Retry-After", kind: "hgem", sim: &vendorsim.Fault{Status: 429, Header: retryAfter("7")},
			want: vendorAnswer(429, "Retry-After", "7", ""), within: apiTimeout},
		{name: "api malformed JSON", kind: "inspera", sim: &vendorsim.Fault{Malformed: true},
			want: vendorAnswer(200, "", "", `{"access_token": "half a token`), within: apiTimeout},
		{name: "api truncated body", kind: "prominsight", sim: &vendorsim.Fault{Truncate: true}, want: cutShort, within: apiBound},
		{name: "api hang at the vendor", kind: "hgem", sim: &vendorsim.Fault{Hang: true},
			want: proxyError(504, "upstream_timeout"), within: apiBound},
		// The vendor's token endpoint misbehaves.
		{name: "token 500", kind: "inspera", token: true, sim: &vendorsim.Fault{Status: 500},
			want: proxyError(502, "token_endpoint_error", "Internal error authenticating user"), within: tokenBound},
		{name: "token 500 oauth2", kind: "hgem", token: true, sim: &vendorsim.Fault{Status: 500},
			want: proxyError(502, "token_endpoint_error", "server_error"), within: tokenBound},
		{name: "token 429 Retry-After", kind: "prodoscore", token: true, sim: &vendorsim.Fault{Status: 429, Header: retryAfter("2")},
			want: unavailable, within: tokenBound},
		{name: "token 409 conflict", kind: "inspera", token: true, sim: &vendorsim.Fault{Status: 409},
			want: proxyError(503, "credentials_unavailable", "Multiple tokens for user"), within: tokenBound},
		{name: "token malformed JSON", kind: "prominsight", token: true, sim: &vendorsim.Fault{Malformed: true},
			want: proxyError(502, "token_endpoint_error"), within: tokenBound},
		{name: "token truncated", kind: "inspera", token: true, sim: &vendorsim.Fault{Truncate: true}, want: unavailable, within: tokenBound},
		{name: "token truncated oauth2", kind: "hgem", token: true, sim: &vendorsim.Fault{Truncate: true}, want: unavailable, within: tokenBound},
		{name: "slow token endpoint", kind: "prodoscore", token: true, sim: &vendorsim.Fault{Delay: 3 * time.Second},
			want: proxyError(503, "credentials_unavailable", "did not answer within 1s"), within: tokenBound},
	}
	// Each case has its own tokenproxy and simulators, so they run side by
	// side (-parallel, GOMAXPROCS by default); the leak check of the test
	// process waits for them all.
	noLeaks(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			runFault(t, c)
		})
	}
}

// runFault: a fresh tokenproxy in front of one simulator; a baseline; the
// fault on; callers get the documented answer within the bound; the fault
// off; requests succeed again; goroutines back to the baseline; a clean exit.
func runFault(t *testing.T, c faultCase) {
	prep := c.prep
	if c.token {
		prep = func(v *vendor) { v.sim.SetTokenLifetime(2 * time.Second) }
	}
	r := newRig(t, c.kind, prep)
	p := r.p
	method, url, body := "GET", p.data+"/"+c.kind+c.path, ""
	if c.path == "" {
		a := apiPath[c.kind]
		method, url, body = a.method, p.data+"/"+c.kind+a.path, a.body
	}
	waitFor(t, 20*time.Second, "a first answer", func() bool { return send(quick, method, url, body).status == 200 })
	base := goroutines(t, p)

	c.on(r)
	if c.token {
		// Tokens minted from now on live long, so that the suite ends calm;
		// the 2s one in hand runs out under the fault.
		gen := statusOf(t, p, c.kind).Generation
		r.v.sim.SetTokenLifetime(time.Hour)
		waitFor(t, 10*time.Second, "the token in hand to be replaced or gone", func() bool {
			s := statusOf(t, p, c.kind)
			return s.State != "ready" || s.Generation != gen
		})
	}
	const callers = 8 // more than goroutineSlack, so that a goroutine left per request shows
	n := callers
	if c.path != "" {
		n = 1 // one body to cut: several would share the cut
	}
	outs := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Go(func() { outs[i] = send(quick, method, url, body) })
	}
	wg.Wait()
	var slowest time.Duration
	for _, o := range outs {
		c.want(t, o, c.kind)
		slowest = max(slowest, o.took)
	}
	if slowest > c.within {
		t.Errorf("a caller waited %s under the fault, want at most %s", slowest, c.within)
	}
	alive(t, p)

	c.off(r)
	cleared := time.Now()
	waitFor(t, recoveryBound, "requests to succeed after the fault cleared", func() bool {
		o := send(quick, method, url, body)
		return o.status == 200 && o.err == nil
	})
	recovered := time.Since(cleared)
	var now int
	waitFor(t, 15*time.Second, fmt.Sprintf("goroutines back near the baseline of %d", base), func() bool {
		now = goroutines(t, p)
		return now <= base+goroutineSlack
	})
	t.Logf("%s: callers under the fault: %v; recovered %s after the fault cleared; goroutines %d -> %d; token calls %d",
		c.name, outs, recovered.Round(time.Millisecond), base, now, r.v.sim.TokenCalls())
	stopClean(t, p)
}

// TestFaultOneVendorDoesNotSlowOthers: while HGEM's token endpoint hangs
// and HGEM's callers wait on it, the three others answer as fast as ever.
func TestFaultOneVendorDoesNotSlowOthers(t *testing.T) {
	noLeaks(t)
	e := newEnv(t)
	hgem := e.vendors["hgem"].sim
	hgem.SetTokenFault(&vendorsim.Fault{Hang: true})
	others := []string{"prominsight", "inspera", "prodoscore"}
	cfg := configOf(config.Upstreams{"hgem": e.upstream("hgem", func(u *config.Upstream) {
		u.TokenTimeout.Duration, u.Timeout.Duration = 20*time.Second, 2*time.Second
	})})
	for _, k := range others {
		cfg.Upstreams[k] = e.upstream(k, short)
	}
	p := e.start(cfg)
	waitFor(t, 20*time.Second, "the other three to be ready", func() bool {
		for _, k := range others {
			if statusOf(t, p, k).State != "ready" {
				return false
			}
		}
		return hgem.TokenCalls() == 1
	})

	// The others' latency, before HGEM's callers pile up.
	measure := func() (p50, worst time.Duration) {
		var all []time.Duration
		for range 15 {
			for _, k := range others {
				o := sendAPI(quick, p, k)
				if o.status != 200 || o.err != nil {
					t.Fatalf("%s: %v", k, o)
				}
				all = append(all, o.took)
			}
		}
		slices.Sort(all)
		return all[len(all)/2], all[len(all)-1]
	}
	calm50, calmMax := measure()

	hung := make([]outcome, 8)
	var wg sync.WaitGroup
	for i := range hung {
		wg.Go(func() { hung[i] = sendAPI(quick, p, "hgem") })
	}
	waitFor(t, 10*time.Second, "8 HGEM callers waiting on the hanging token request", func() bool {
		return metric(t, p, `tokenproxy_token_waits_coalesced_total{upstream="hgem"}`) == float64(len(hung))
	})
	during50, duringMax := measure()
	measured := time.Now()
	hgem.SetTokenFault(nil) // releases the hanging token request: it now succeeds
	wg.Wait()
	for _, o := range hung {
		if o.status != 200 || o.end.Before(measured) {
			t.Fatalf("an HGEM caller got %v, ending before the hang was released", o)
		}
	}
	if n := hgem.TokenCalls(); n != 1 {
		t.Errorf("HGEM saw %d token requests, want the one that hung", n)
	}
	t.Logf("others' latency: p50 %s max %s before; p50 %s max %s while 8 HGEM callers waited on a hanging token request",
		calm50, calmMax, during50, duringMax)
	if duringMax > time.Second || during50 > calm50+250*time.Millisecond {
		t.Errorf("the others slowed while HGEM hung: p50 %s max %s (before: p50 %s max %s)", during50, duringMax, calm50, calmMax)
	}
	stopClean(t, p)
}

// TestFaultInsperaConflictBacksOff: Inspera's 409 "Multiple tokens for user"
// gives callers 503 with Retry-After, a warning from the broker and a
// metric, and a burst of callers does not make the broker ask again.
func TestFaultInsperaConflictBacksOff(t *testing.T) {
	noLeaks(t)
	e := newEnv(t)
	ins := e.vendors["inspera"].sim
	ins.SetTokenFault(&vendorsim.Fault{Status: 409})
	p := e.start(configOf(config.Upstreams{"inspera": e.upstream("inspera", short)}))
	waitFor(t, 20*time.Second, "the conflict", func() bool { return statusOf(t, p, "inspera").State == "error" })

	before := ins.TokenCalls()
	outs := burst(keepAlive(t), p, "inspera", 8, time.Now().Add(1500*time.Millisecond))
	burstCalls := ins.TokenCalls() - before
	var worst time.Duration
	for _, o := range outs {
		worst = max(worst, o.took)
		if o.status == 200 {
			continue // the backoff ran out and the retry, still refused or not, is allowed
		}
		checkProxyError(t, o, 503, "credentials_unavailable", "inspera")
		if n, _ := strconv.Atoi(o.header.Get("Retry-After")); n > 5 {
			t.Fatalf("Retry-After %d after a first conflict, whose backoff is at most 5s", n)
		}
	}
	if before > 2 || burstCalls > 1 {
		t.Errorf("%d token requests before and %d during a burst of %d callers: want a backoff, not a loop", before, burstCalls, len(outs))
	}
	if !p.logged("token fetch failed", map[string]any{"level": "warn", "logger": "broker", "upstream": "inspera", "reason": "conflict"}) {
		t.Error("no warning from the broker with reason conflict")
	}
	if n := metric(t, p, `tokenproxy_token_fetch_failures_total{reason="conflict",upstream="inspera"}`); n < 1 {
		t.Errorf("tokenproxy_token_fetch_failures_total{conflict} = %v", n)
	}

	ins.SetTokenFault(nil)
	cleared := time.Now()
	waitFor(t, 2*time.Minute+10*time.Second, "recovery after the conflict", func() bool { return sendAPI(quick, p, "inspera").status == 200 })
	t.Logf("%d callers in 1.5s, slowest %s; token requests: %d before the burst, %d during, %d in all; recovered %s after the conflict cleared",
		len(outs), worst.Round(time.Millisecond), before, burstCalls, ins.TokenCalls(), time.Since(cleared).Round(time.Millisecond))
	stopClean(t, p)
}

// TestFaultRetryAfterHonoured: a 429 with Retry-After: 3 from the token
// endpoint holds the next token request back for 3s, however hard callers
// push meanwhile.
func TestFaultRetryAfterHonoured(t *testing.T) {
	noLeaks(t)
	e := newEnv(t)
	sim := e.vendors["hgem"].sim
	sim.SetTokenFault(&vendorsim.Fault{Status: 429, Header: http.Header{"Retry-After": {"3"}}, Count: 1})
	p := e.start(configOf(config.Upstreams{"hgem": e.upstream("hgem", short)}))

	// When the broker took the 429 in, by its own log line.
	var failed time.Time
	waitFor(t, 20*time.Second, "the 429 to be logged", func() bool {
		for _, l := range p.logLines() {
			if l["msg"] == "token fetch failed" && l["reason"] == "rate_limited" {
				ts, err := time.Parse("2006-01-02T15:04:05.000Z0700", l["ts"].(string))
				if err != nil {
					t.Fatal(err)
				}
				failed = ts
				return true
			}
		}
		return false
	})

	c := keepAlive(t)
	var (
		mu      sync.Mutex
		outs    []outcome
		retried time.Time // when a second token request was first seen
	)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				o := sendAPI(c, p, "hgem")
				mu.Lock()
				outs = append(outs, o)
				mu.Unlock()
			}
		})
	}
	waitFor(t, 10*time.Second, "the retry after Retry-After", func() bool {
		if sim.TokenCalls() >= 2 {
			retried = time.Now()
			return true
		}
		return false
	})
	close(done)
	wg.Wait()

	after := retried.Sub(failed)
	t.Logf("second token request seen %s after the 429; %d callers meanwhile", after.Round(time.Millisecond), len(outs))
	if after < 3*time.Second-100*time.Millisecond {
		t.Errorf("token endpoint asked again %s after a 429 with Retry-After: 3", after)
	}
	if after > 3*time.Second+boundSlack {
		t.Errorf("token endpoint asked again only %s after a 429 with Retry-After: 3", after)
	}
	for _, o := range outs {
		if o.status == 200 {
			continue
		}
		checkProxyError(t, o, 503, "credentials_unavailable", "hgem")
		if n, _ := strconv.Atoi(o.header.Get("Retry-After")); n > 3 {
			t.Errorf("Retry-After %d, want at most the vendor's 3", n)
		}
	}
	waitFor(t, 5*time.Second, "recovery", func() bool { return sendAPI(quick, p, "hgem").status == 200 })
	if n := sim.TokenCalls(); n != 2 {
		t.Errorf("%d token requests, want the 429 and one retry", n)
	}
	if n := metric(t, p, `tokenproxy_token_fetch_failures_total{reason="rate_limited",upstream="hgem"}`); n != 1 {
		t.Errorf("tokenproxy_token_fetch_failures_total{rate_limited} = %v, want 1", n)
	}
	stopClean(t, p)
}

// TestFaultCallerGivingUpKeepsFetch: a caller that goes away while a token
// request is slow does not cancel it for the callers still waiting.
func TestFaultCallerGivingUpKeepsFetch(t *testing.T) {
	impatient := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	// Two callers wait on one slow token request: the first gives up.
	patient := func(u *config.Upstream) { u.TokenTimeout.Duration = 10 * time.Second }
	twoCallers := func(t *testing.T, p *proc, sim *vendorsim.Server, calls int) {
		t.Helper()
		waitFor(t, 10*time.Second, "the slow token request", func() bool { return sim.TokenCalls() == calls+1 })
		var first, second outcome
		var wg sync.WaitGroup
		wg.Go(func() { first = sendAPI(impatient, p, "prominsight") })
		wg.Go(func() { second = sendAPI(quick, p, "prominsight") })
		wg.Wait()
		if first.err == nil {
			t.Fatalf("the impatient caller got %v; the token request was not slow", first)
		}
		if second.status != 200 || second.err != nil {
			t.Fatalf("the patient caller got %v: %s", second, second.body)
		}
		reqs := answeredTokenRequests(t, sim, 0)
		if len(reqs) != calls+1 || reqs[calls].Status != 200 {
			t.Fatalf("token requests %+v: want one more, answered 200", reqs)
		}
		t.Logf("first caller gave up after %s; second got 200 after %s; %d token request", first.took.Round(time.Millisecond), second.took.Round(time.Millisecond), len(reqs)-calls)
	}
	t.Run("first token", func(t *testing.T) {
		noLeaks(t)
		e := newEnv(t)
		sim := e.vendors["prominsight"].sim
		sim.SetTokenFault(&vendorsim.Fault{Delay: 2 * time.Second, Count: 1})
		p := e.start(configOf(config.Upstreams{"prominsight": e.upstream("prominsight", patient)}))
		twoCallers(t, p, sim, 0)
		stopClean(t, p)
	})
	t.Run("after a 401", func(t *testing.T) {
		noLeaks(t)
		e := newEnv(t)
		sim := e.vendors["prominsight"].sim
		p := e.start(configOf(config.Upstreams{"prominsight": e.upstream("prominsight", patient)}))
		p.ready(t)
		sim.RevokeAll()
		sim.SetTokenFault(&vendorsim.Fault{Delay: 2 * time.Second, Count: 1})
		// The first caller meets the 401, drops the token and waits for a new one.
		var wg sync.WaitGroup
		var first outcome
		wg.Go(func() { first = sendAPI(impatient, p, "prominsight") })
		twoCallers(t, p, sim, 1)
		wg.Wait()
		if first.err == nil {
			t.Errorf("the caller that met the 401 got %v before the token came", first)
		}
		stopClean(t, p)
	})
}

// TestFaultBurstAcrossRefresh: callers hammering across the moment of a
// background refresh cause no fetch besides that refresh, never wait for
// it, and never carry an expired token.
func TestFaultBurstAcrossRefresh(t *testing.T) {
	noLeaks(t)
	e := newEnv(t)
	sim := e.vendors["prominsight"].sim
	sim.SetTokenLifetime(4 * time.Second)
	p := e.start(configOf(config.Upstreams{"prominsight": e.upstream("prominsight", short)}))
	p.ready(t)
	s := statusOf(t, p, "prominsight")
	if s.RefreshAt == nil {
		t.Fatal("/status has no refresh_at")
	}
	at, err := time.Parse(time.RFC3339, *s.RefreshAt)
	if err != nil {
		t.Fatal(err)
	}
	// refresh_at has whole seconds: the refresh falls in [at, at+1s).
	from, until := at.Add(-500*time.Millisecond), at.Add(1500*time.Millisecond)
	waitFor(t, 5*time.Second, "the burst's start", func() bool { return !time.Now().Before(from) })
	before, gen := sim.TokenCalls(), statusOf(t, p, "prominsight").Generation
	if gen != s.Generation {
		t.Fatalf("the refresh came before the burst (generation %d, then %d)", s.Generation, gen)
	}
	outs := burst(keepAlive(t), p, "prominsight", 16, until)
	extra := sim.TokenCalls() - before
	var worst time.Duration
	for _, o := range outs {
		if o.status != 200 || o.err != nil {
			t.Fatalf("a caller got %v: %s", o, o.body)
		}
		worst = max(worst, o.took)
	}
	for _, r := range sim.APIRequests() {
		if r.Status != 200 {
			t.Fatalf("the vendor answered %d: an expired or unknown token was sent", r.Status)
		}
	}
	t.Logf("%d callers across the refresh: %d token request(s), slowest caller %s", len(outs), extra, worst.Round(time.Millisecond))
	if extra != 1 {
		t.Errorf("%d token requests across the refresh moment, want the refresh alone", extra)
	}
	stopClean(t, p)
}
