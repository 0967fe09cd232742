package e2e

// What an operator sees (issue 11): metrics that can alert from the first
// event, request ids that join a caller's log to tokenproxy's and the
// vendor's, spans sent to a collector, and logs for a person at a terminal.

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// The codes of tokenproxy_proxy_errors_total's zero series (CONTRACT.md §5).
var (
	upstreamErrorCodes   = []string{"path_not_allowed", "token_endpoint_error", "upstream_unreachable", "credentials_unavailable", "upstream_timeout", "bad_request"}
	noUpstreamErrorCodes = []string{"unknown_upstream", "host_not_allowed", "connect_not_supported", "bad_request"}
	failureReasons       = []string{"refused", "conflict", "rate_limited", "server_error", "network", "timeout", "malformed"}
	sharedResults        = []string{"hit", "waited", "minted", "local", "error"}
)

// Every series whose labels are known at start is in the first scrape, at
// 0 where no event can have happened yet (both token endpoints hang), so
// that increase() sees the first event: here, the first re-auth.
func TestZeroSeriesAtFirstScrape(t *testing.T) {
	v := newVaultEnv(t)
	v.seed(t)
	for _, k := range []string{"hgem", "inspera"} {
		v.vendors[k].sim.SetTokenFault(&vendorsim.Fault{Hang: true})
	}
	// hgem shares its token through Vault, inspera keeps its own.
	cfg := v.fleetConfig(vaultKV2Route("hgem"), vaultKV2Route("inspera"))
	edit(cfg, "inspera", func(u *config.Upstream) { u.Shared = new(bool) }) // shared: false
	p := v.start(cfg)
	m := scrapeMetrics(t, p)

	type series struct {
		name   string
		labels []string
	}
	var zero, present []series
	for _, up := range []string{"hgem", "inspera"} {
		for _, r := range []string{"success", "error"} {
			zero = append(zero, series{"tokenproxy_token_fetches_total", []string{"upstream", up, "result", r}})
			present = append(present, series{"tokenproxy_secret_reads_total", []string{"upstream", up, "source", "vault", "result", r}})
		}
		for _, code := range upstreamErrorCodes {
			zero = append(zero, series{"tokenproxy_proxy_errors_total", []string{"upstream", up, "error", code}})
		}
		for _, reason := range failureReasons {
			zero = append(zero, series{"tokenproxy_token_fetch_failures_total", []string{"upstream", up, "reason", reason}})
		}
		for _, name := range []string{"tokenproxy_upstream_reauth_total", "tokenproxy_replays_total", "tokenproxy_token_waits_coalesced_total",
			"tokenproxy_requests_in_flight", "tokenproxy_request_duration_seconds", "tokenproxy_token_fetch_duration_seconds",
			"tokenproxy_token_fetch_consecutive_failures", "tokenproxy_upstream_ready"} {
			zero = append(zero, series{name, []string{"upstream", up}})
		}
	}
	for _, code := range noUpstreamErrorCodes {
		zero = append(zero, series{"tokenproxy_proxy_errors_total", []string{"upstream", "", "error", code}})
	}
	for _, r := range sharedResults {
		zero = append(zero, series{"tokenproxy_shared_token_total", []string{"upstream", "hgem", "result", r}})
	}
	for _, r := range []string{"success", "error"} {
		zero = append(zero, series{"tokenproxy_config_reloads_total", []string{"result", r}})
		present = append(present, series{"tokenproxy_vault_logins_total", []string{"result", r}},
			series{"tokenproxy_vault_renewals_total", []string{"result", r}})
	}
	for _, s := range zero {
		if got, ok := m.value(s.name, s.labels...); !ok || got != 0 {
			t.Errorf("first scrape: %s%v = %v (present %v), want 0", s.name, s.labels, got, ok)
		}
	}
	for _, s := range present {
		if _, ok := m.value(s.name, s.labels...); !ok {
			t.Errorf("first scrape: no %s%v", s.name, s.labels)
		}
	}
	if got := m.series("tokenproxy_shared_token_total"); len(got) != len(sharedResults) {
		t.Errorf("shared token series %q, want hgem's alone (inspera does not share)", got)
	}
	if got, _ := m.value("tokenproxy_config_last_reload_successful"); got != 1 {
		t.Errorf("tokenproxy_config_last_reload_successful %v at start, want 1", got)
	}

	// The first re-auth of inspera moves its series from 0 to 1.
	for _, k := range []string{"hgem", "inspera"} {
		v.vendors[k].sim.SetTokenFault(nil)
	}
	p.ready(t)
	if r := vaultCall(t, p, "inspera", "inspera"); r.StatusCode != 200 {
		t.Fatalf("inspera: %d %s", r.StatusCode, r.body)
	}
	v.vendors["inspera"].sim.RevokeAll()
	if r := vaultCall(t, p, "inspera", "inspera"); r.StatusCode != 200 {
		t.Fatalf("inspera after its token was revoked: %d %s", r.StatusCode, r.body)
	}
	if got, _ := scrapeMetrics(t, p).value("tokenproxy_upstream_reauth_total", "upstream", "inspera"); got != 1 {
		t.Errorf("inspera's re-auths %v after one 401, want 1", got)
	}
}

// A 503 that tokenproxy makes is told from a vendor's 503: both are in
// tokenproxy_requests_total, only the first in tokenproxy_proxy_errors_total.
// Beside it: secret reads by upstream, consecutive failures and the next
// attempt, requests in flight, and the last reload's result.
func TestMetricsTellProxyErrorsFromVendorErrors(t *testing.T) {
	e := newEnv(t)
	hgem, inspera, prodo := e.vendors["hgem"], e.vendors["inspera"], e.vendors["prodoscore"]
	prodo.sim.SetTokenFault(&vendorsim.Fault{Status: 503, Count: 1})
	slowRoute(t, inspera)
	release := slowRoute(t, hgem)
	cfg := e.config("hgem", "inspera", "prodoscore", "prominsight")
	edit(cfg, "inspera", func(u *config.Upstream) { u.Timeout.Duration = time.Second })
	edit(cfg, "prominsight", func(u *config.Upstream) { u.Credentials = "file:" + filepath.Join(e.dir, "missing.json") })
	path := e.writeConfig("metrics.yaml", cfg)
	p := e.startArgs("run", "--config", path)
	waitFor(t, 20*time.Second, "hgem, inspera and prodoscore tokens", func() bool {
		m := scrapeMetrics(t, p)
		for _, up := range []string{"hgem", "inspera", "prodoscore"} {
			if v, _ := m.value("tokenproxy_upstream_ready", "upstream", up); v != 1 {
				return false
			}
		}
		return true
	})

	// Answers tokenproxy makes, one of each.
	wantError(t, get(t, p.data+"/nosuch/x"), 404, "unknown_upstream", "")
	wantError(t, get(t, p.data+"/hgem/a/../b"), 400, "bad_request", "hgem")
	wantError(t, rawOnce(t, p, rawGET("http://elsewhere.invalid/x", "elsewhere.invalid")), 403, "host_not_allowed", "")
	wantError(t, rawOnce(t, p, "CONNECT elsewhere.invalid:443 HTTP/1.1\r\nHost: elsewhere.invalid:443\r\n\r\n"), 405, "connect_not_supported", "")
	wantError(t, get(t, p.data+"/prominsight/api/v1/x"), 503, "credentials_unavailable", "prominsight")
	wantError(t, get(t, p.data+"/inspera/api/slow"), 504, "upstream_timeout", "inspera")
	// And the vendor's own 503, passed through.
	hgem.sim.SetAPIFault(&vendorsim.Fault{Status: 503, Count: 1})
	if r := call(t, p, "hgem"); r.StatusCode != 503 || r.Header.Get("Tokenproxy-Error") != "" {
		t.Fatalf("hgem's own 503: %d %q", r.StatusCode, r.Header.Get("Tokenproxy-Error"))
	}

	// One request held by the upstream is in flight, and then no more.
	slow := startSlow(t, p, hgem)
	waitFor(t, 10*time.Second, "one hgem request in flight", func() bool {
		v, _ := scrapeMetrics(t, p).value("tokenproxy_requests_in_flight", "upstream", "hgem")
		return v == 1
	})
	release()
	if r := <-slow; r == nil || r.StatusCode != 200 {
		t.Fatalf("the slow request: %v", r)
	}

	m := scrapeMetrics(t, p)
	wantErrs := []string{"error=bad_request,upstream=hgem: 1", "error=connect_not_supported,upstream=: 1",
		"error=credentials_unavailable,upstream=prominsight: 1", "error=host_not_allowed,upstream=: 1",
		"error=unknown_upstream,upstream=: 1", "error=upstream_timeout,upstream=inspera: 1"}
	if got := m.nonzero("tokenproxy_proxy_errors_total"); !slices.Equal(got, wantErrs) {
		t.Errorf("tokenproxy_proxy_errors_total:\n got %q\nwant %q", got, wantErrs)
	}
	for _, s := range [][]string{{"hgem", "503"}, {"prominsight", "503"}, {"inspera", "504"}, {"", "404"}, {"", "403"}, {"", "405"}, {"hgem", "400"}} {
		if v, _ := m.value("tokenproxy_requests_total", "upstream", s[0], "code", s[1]); v != 1 {
			t.Errorf("tokenproxy_requests_total{upstream=%q,code=%s} = %v, want 1", s[0], s[1], v)
		}
	}
	if v, _ := m.value("tokenproxy_requests_in_flight", "upstream", "hgem"); v != 0 {
		t.Errorf("%v hgem requests in flight after all ended", v)
	}
	if v, _ := m.value("tokenproxy_secret_reads_total", "upstream", "prominsight", "source", "file", "result", "error"); v < 1 {
		t.Errorf("prominsight's failed reads: %v", v)
	}
	if v, _ := m.value("tokenproxy_secret_reads_total", "upstream", "hgem", "source", "file", "result", "error"); v != 0 {
		t.Errorf("hgem's failed reads: %v", v)
	}
	// prodoscore failed once and then succeeded: 0 failures in a row now;
	// each ready upstream's next request is its refresh, before its token
	// expires, at 67.5 to 75% of the token's life.
	now := float64(time.Now().Unix())
	for _, up := range []string{"hgem", "inspera", "prodoscore"} {
		if v, ok := m.value("tokenproxy_token_fetch_consecutive_failures", "upstream", up); !ok || v != 0 {
			t.Errorf("%s: %v failures in a row, want 0", up, v)
		}
		expiry, _ := m.value("tokenproxy_token_expiry_timestamp_seconds", "upstream", up)
		age, _ := m.value("tokenproxy_token_age_seconds", "upstream", up)
		life := expiry - (now - age)
		if v, ok := m.value("tokenproxy_token_next_attempt_timestamp_seconds", "upstream", up); !ok || v < now-age+0.6*life || v > expiry-0.2*life {
			t.Errorf("%s: next attempt at %v, want at 67.5-75%% of the token's life, %v to %v", up, v, now-age, expiry)
		}
	}
	if v, _ := m.value("tokenproxy_token_fetches_total", "upstream", "prodoscore", "result", "error"); v != 1 {
		t.Errorf("prodoscore's failed fetches: %v, want 1", v)
	}

	// A rejected reload sets the gauge to 0, an accepted one back to 1,
	// with a newer success time.
	before, _ := m.value("tokenproxy_config_last_reload_success_timestamp_seconds")
	nosuch := newConfig()
	unknown := config.DefaultUpstream()
	unknown.Type = "nosuch"
	nosuch.Upstreams["nosuch"] = unknown
	e.writeConfig("metrics.yaml", nosuch)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the rejected reload", func() bool {
		v, _ := scrapeMetrics(t, p).value("tokenproxy_config_last_reload_successful")
		return v == 0
	})
	e.writeConfig("metrics.yaml", cfg)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the accepted reload", func() bool {
		v, _ := scrapeMetrics(t, p).value("tokenproxy_config_last_reload_successful")
		return v == 1
	})
	m = scrapeMetrics(t, p)
	if after, _ := m.value("tokenproxy_config_last_reload_success_timestamp_seconds"); after <= before {
		t.Errorf("success time %v after an accepted reload, was %v", after, before)
	}
	if got := m.series("tokenproxy_config_reloads_total"); !slices.Equal(got, []string{"result=error: 1", "result=success: 1"}) {
		t.Errorf("tokenproxy_config_reloads_total: %q", got)
	}
}

// X-Request-Id (CONTRACT.md §3): generated when absent, the caller's when
// valid, sent to the upstream, returned exactly once (on tokenproxy's own
// errors too), the upstream's own replaced and logged.
func TestRequestIDEndToEnd(t *testing.T) {
	e := newEnv(t)
	hgem := e.vendors["hgem"]
	hgem.sim.HandleAPI("GET /api/own-id", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "vendor-own-id-1")
		io.WriteString(w, "{}")
	}))
	p := e.start(e.config("hgem"))
	p.ready(t)
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

	lineOf := func(id string) map[string]any {
		t.Helper()
		var found map[string]any
		waitFor(t, 10*time.Second, "the log line of "+id, func() bool {
			if ls := p.linesWith("request", map[string]any{"request_id": id}); len(ls) > 0 {
				found = ls[0]
				return true
			}
			return false
		})
		return found
	}
	one := func(r *response) string {
		t.Helper()
		ids := r.Header.Values("X-Request-Id")
		if len(ids) != 1 {
			t.Fatalf("X-Request-Id %q, want exactly one", ids)
		}
		return ids[0]
	}
	seen := func() string {
		reqs := hgem.sim.APIRequests()
		return strings.Join(reqs[len(reqs)-1].Header.Values("X-Request-Id"), ",")
	}

	// None sent: one is made, and goes everywhere.
	id := one(call(t, p, "hgem"))
	if !uuid.MatchString(id) || seen() != id {
		t.Errorf("generated id %q, the simulator saw %q", id, seen())
	}
	lineOf(id)
	// The caller's, kept.
	if got := one(call(t, p, "hgem", "X-Request-Id", "caller-7/a:b")); got != "caller-7/a:b" || seen() != got {
		t.Errorf("caller's id came back as %q, the simulator saw %q", got, seen())
	}
	lineOf("caller-7/a:b")
	// Too long: replaced.
	if got := one(call(t, p, "hgem", "X-Request-Id", strings.Repeat("y", 129))); !uuid.MatchString(got) {
		t.Errorf("a 129-character id came back as %q, want a new one", got)
	}
	// The upstream's own: replaced, and logged.
	r := get(t, p.data+"/hgem/api/own-id", "X-Request-Id", "caller-8")
	if got := one(r); got != "caller-8" {
		t.Errorf("with the upstream's own id, the caller got %q", got)
	}
	if l := lineOf("caller-8"); l["upstream_request_id"] != "vendor-own-id-1" {
		t.Errorf("upstream_request_id %v", l["upstream_request_id"])
	}
	// tokenproxy's own answer.
	r = get(t, p.data+"/nosuch/x", "X-Request-Id", "caller-9")
	wantError(t, r, 404, "unknown_upstream", "")
	if got := one(r); got != "caller-9" {
		t.Errorf("an error answer carries X-Request-Id %q", got)
	}
	if l := lineOf("caller-9"); l["error"] != "unknown_upstream" || l["token"] != nil {
		t.Errorf("error's log line: %v", l)
	}
}

// otlpReceiver is an OTLP/HTTP collector on loopback that keeps what it
// receives.
type otlpReceiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	raw  []byte
	reqs []*collectortrace.ExportTraceServiceRequest
}

func newOTLPReceiver(t *testing.T, e *env) *otlpReceiver {
	o := &otlpReceiver{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		req := &collectortrace.ExportTraceServiceRequest{}
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || err != nil || proto.Unmarshal(b, req) != nil {
			t.Errorf("the collector got %s %s %q (%v)", r.Method, r.URL.Path, r.Header.Get("Content-Type"), err)
			w.WriteHeader(400)
			return
		}
		o.mu.Lock()
		o.raw = append(o.raw, b...)
		o.reqs = append(o.reqs, req)
		o.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(o.srv.Close)
	// The canary search of the env covers what was sent here, decoded too.
	e.outputs = append(e.outputs, func() []byte {
		o.mu.Lock()
		defer o.mu.Unlock()
		text := slices.Clone(o.raw)
		for _, r := range o.reqs {
			text = append(text, prototext.Format(r)...)
		}
		return text
	})
	return o
}

// spans are every span received, by kind and name ("SERVER GET /hgem/*").
func (o *otlpReceiver) spans() map[string][]*tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string][]*tracepb.Span{}
	for _, r := range o.reqs {
		for _, rs := range r.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					k := strings.TrimPrefix(s.GetKind().String(), "SPAN_KIND_") + " " + s.GetName()
					out[k] = append(out[k], s)
				}
			}
		}
	}
	return out
}

func attrOf(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			v := kv.GetValue()
			if v.GetStringValue() != "" {
				return v.GetStringValue()
			}
			return fmt.Sprint(v.GetIntValue())
		}
	}
	return ""
}

// Spans reach an OTLP/HTTP collector: the request's, continuing the
// caller's trace, with a token wait and the upstream call under it, whose
// traceparent the vendor got; a replay after a 401 is a second call. The
// env's canary search covers every byte sent to the collector.
func TestTracingToACollector(t *testing.T) {
	e := newEnv(t)
	col := newOTLPReceiver(t, e)
	hgem := e.vendors["hgem"]
	cfg := e.config("hgem")
	tracing := config.DefaultTracing()
	tracing.Endpoint, tracing.ServiceName = col.srv.URL, "edge-proxy"
	cfg.Tracing = &tracing
	p := e.start(cfg)
	p.ready(t)
	const trace, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	for i := range 2 {
		if i == 1 {
			hgem.sim.RevokeAll() // the second call is replayed
		}
		r := get(t, p.data+"/hgem/api/visits?q="+canary("query", "q"), "Traceparent", "00-"+trace+"-"+parent+"-01",
			"Authorization", "Bearer "+canary("caller", "auth"), "X-Request-Id", fmt.Sprintf("traced-%d", i))
		if r.StatusCode != 200 {
			t.Fatalf("call %d: %d %s", i, r.StatusCode, r.body)
		}
	}
	wantError(t, get(t, p.data+"/nosuch/x"), 404, "unknown_upstream", "")
	stopClean(t, p) // flushes the last batch

	spans := col.spans()
	servers, waits, clients := spans["SERVER GET /hgem/*"], spans["INTERNAL token wait"], spans["CLIENT GET"]
	if len(servers) != 2 || len(waits) != 3 || len(clients) != 3 || len(spans["SERVER GET"]) != 1 || len(spans) != 4 {
		t.Fatalf("spans %v: want 2 hgem requests, 3 token waits and 3 upstream calls (one more each for the replay), and the unknown upstream's request", keys(spans))
	}
	if s := spans["SERVER GET"][0]; attrOf(s, "tokenproxy.error") != "unknown_upstream" || attrOf(s, "http.response.status_code") != "404" {
		t.Errorf("the unknown upstream's span: %v", s.GetAttributes())
	}
	for _, s := range servers {
		if got := fmt.Sprintf("%x", s.GetTraceId()); got != trace || fmt.Sprintf("%x", s.GetParentSpanId()) != parent {
			t.Errorf("request span in trace %s under %x, want the caller's", got, s.GetParentSpanId())
		}
		if attrOf(s, "http.route") != "/hgem/*" || attrOf(s, "url.path") != "/hgem/api/visits" || !strings.HasPrefix(attrOf(s, "tokenproxy.request_id"), "traced-") {
			t.Errorf("request span attributes %v", s.GetAttributes())
		}
	}
	// Every traceparent the simulator got names one of the upstream-call spans.
	ids := map[string]bool{}
	for _, s := range clients {
		ids[fmt.Sprintf("00-%x-%x-01", s.GetTraceId(), s.GetSpanId())] = true
	}
	reqs := hgem.sim.APIRequests()
	for _, r := range reqs {
		if tp := r.Header.Get("Traceparent"); !ids[tp] {
			t.Errorf("the simulator got traceparent %q, no upstream-call span's", tp)
		}
	}
	if len(reqs) != 3 || reqs[1].Status != 401 {
		t.Errorf("the simulator saw %d requests, want a call, a 401 and its replay", len(reqs))
	}
	if !p.logged("tracing on", map[string]any{"endpoint": col.srv.URL + "/v1/traces"}) {
		t.Error(`no "tracing on" log line naming the collector`)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if !strings.Contains(prototext.Format(col.reqs[0]), "edge-proxy") {
		t.Error("the spans' resource does not name service edge-proxy")
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// On a terminal the log is for a person (zap's console lines); anywhere
// else, JSON lines. script(1) gives `tokenproxy check` a terminal.
func TestConsoleLogsOnATerminal(t *testing.T) {
	e := newEnv(t)
	path := e.writeConfig("check.yaml", e.config("hgem"))
	out, err := exec.Command("script", "-qec", binary+" check --config "+path, "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("script: %v\n%s", err, out)
	}
	text := string(out)
	if !strings.Contains(text, "hgem: ok") || !regexp.MustCompile(`Z\t\S*INFO\S*\tbroker\ttoken obtained\t\{"upstream": "hgem"`).MatchString(text) {
		t.Errorf("on a terminal, want console lines (time, level, logger, message, fields):\n%s", text)
	}
	if strings.Contains(text, `{"level"`) {
		t.Errorf("JSON lines on a terminal:\n%s", text)
	}
	checkNoSecretIn(t, e, "the console log", out)
	// The same without a terminal: JSON.
	pipe, _ := exec.Command(binary, "check", "--config", path).CombinedOutput()
	if !strings.Contains(string(pipe), `{"level":"info"`) {
		t.Errorf("without a terminal, want JSON lines:\n%s", pipe)
	}
}

// Across a reload, an upstream added gets its zero series at once and one
// removed loses all of its own.
func TestReloadAddsAndForgetsZeroSeries(t *testing.T) {
	e := newEnv(t)
	path := e.writeConfig("reload.yaml", e.config("hgem"))
	p := e.startArgs("run", "--config", path)
	p.ready(t)
	if r := call(t, p, "hgem"); r.StatusCode != 200 {
		t.Fatalf("hgem: %d", r.StatusCode)
	}
	e.writeConfig("reload.yaml", e.config("inspera"))
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the reload", func() bool {
		v, _ := scrapeMetrics(t, p).value("tokenproxy_config_reloads_total", "result", "success")
		return v == 1
	})
	m := scrapeMetrics(t, p)
	for name, mf := range m {
		for _, s := range mf.GetMetric() {
			if labelsOf(s)["upstream"] == "hgem" {
				t.Errorf("%s%v: the removed upstream's series is still there", name, labelsOf(s))
			}
		}
	}
	for _, code := range upstreamErrorCodes {
		if _, ok := m.value("tokenproxy_proxy_errors_total", "upstream", "inspera", "error", code); !ok {
			t.Errorf("no zero series of inspera's %s after the reload added it", code)
		}
	}
	for _, r := range []string{"success", "error"} {
		if _, ok := m.value("tokenproxy_secret_reads_total", "upstream", "inspera", "source", "file", "result", r); !ok {
			t.Errorf("no secret reads series of inspera (%s)", r)
		}
	}
	if v, ok := m.value("tokenproxy_upstream_reauth_total", "upstream", "inspera"); !ok || v != 0 {
		t.Errorf("inspera's re-auths: %v %v, want a series at 0", v, ok)
	}
}
