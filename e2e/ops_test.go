package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// Operability (CONTRACT.md §1, §5, §6): metrics, readiness, status,
// draining on SIGTERM, reloading on SIGHUP, and the request log.

// families is one scrape of /metrics, parsed by Prometheus's own parser.
type families map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, p *proc) families {
	t.Helper()
	r := get(t, p.admin+"/metrics")
	if r.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", r.StatusCode, r.body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return mfs
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// value is the sample of family name whose labels are exactly kv (name,
// value, ...): a counter's or gauge's value, a histogram's count.
func (f families) value(name string, kv ...string) (float64, bool) {
	want := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		want[kv[i]] = kv[i+1]
	}
	for _, m := range f[name].GetMetric() {
		got := labelsOf(m)
		if len(got) != len(want) {
			continue
		}
		match := true
		for k, v := range want {
			match = match && got[k] == v
		}
		if match {
			return valueOf(m)
		}
	}
	return 0, false
}

// series renders every sample of a family as "label=value,...: value",
// sorted, for exact comparison.
func (f families) series(name string) []string {
	return f.seriesWhere(name, func(float64) bool { return true })
}

// nonzero is series without the samples at 0, such as the series every
// upstream has from the first scrape (CONTRACT.md §5).
func (f families) nonzero(name string) []string {
	return f.seriesWhere(name, func(v float64) bool { return v != 0 })
}

func (f families) seriesWhere(name string, keep func(float64) bool) []string {
	var out []string
	for _, m := range f[name].GetMetric() {
		if v, _ := valueOf(m); !keep(v) {
			continue
		}
		l := labelsOf(m)
		keys := make([]string, 0, len(l))
		for k := range l {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, k+"="+l[k])
		}
		v, _ := valueOf(m)
		out = append(out, strings.Join(parts, ",")+": "+formatFloat(v))
	}
	sort.Strings(out)
	return out
}

// valueOf is a counter's or gauge's value, or a histogram's count.
func valueOf(m *dto.Metric) (float64, bool) {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount()), true
	}
	return 0, false
}

func formatFloat(v float64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestMetricsAfterKnownTraffic(t *testing.T) {
	e := newEnv(t)
	hgem, inspera, prodo := e.vendors["hgem"], e.vendors["inspera"], e.vendors["prodoscore"]
	const lifetime = 2 * time.Hour // none of the vendors' defaults
	for _, v := range []*vendor{hgem, inspera, prodo} {
		v.sim.SetTokenLifetime(lifetime)
	}
	inspera.sim.SetTokenFault(&vendorsim.Fault{Hang: true})
	prodo.sim.SetTokenFault(&vendorsim.Fault{Status: 503, Count: 1})
	path := e.writeConfig("metrics.yaml", e.config("hgem", "inspera", "prodoscore"))
	p := e.startArgs("run", "--config", path)

	// Two callers arrive while inspera's first token request hangs: both
	// wait for that one fetch.
	waitFor(t, 20*time.Second, "inspera's first token request", func() bool { return inspera.sim.TokenCalls() == 1 })
	statuses := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := client.Get(p.data + "/inspera" + apiPath["inspera"].path)
			if err != nil {
				statuses <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	waitFor(t, 20*time.Second, "two coalesced waits", func() bool {
		v, _ := scrapeMetrics(t, p).value("tokenproxy_token_waits_coalesced_total", "upstream", "inspera")
		return v == 2
	})
	inspera.sim.SetTokenFault(nil)
	for range 2 {
		if s := <-statuses; s != 200 {
			t.Fatalf("a caller waiting for inspera's token got %d", s)
		}
	}
	p.ready(t) // prodoscore too, after its failed first fetch and a backoff

	for range 3 {
		if r := call(t, p, "hgem"); r.StatusCode != 200 {
			t.Fatalf("hgem: %d %s", r.StatusCode, r.body)
		}
	}
	wantError(t, get(t, p.data+"/nosuch/x"), 404, "unknown_upstream", "")
	hgem.sim.RevokeAll()
	before := len(hgem.sim.APIRequests())
	if r := call(t, p, "hgem"); r.StatusCode != 200 {
		t.Fatalf("hgem after RevokeAll: %d %s", r.StatusCode, r.body)
	}
	if reqs := hgem.sim.APIRequests()[before:]; len(reqs) != 2 || reqs[0].Status != 401 {
		t.Fatalf("hgem saw %d requests, want a 401 and its replay", len(reqs))
	}
	// An unchanged config reloaded: counted, nothing else moves.
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the reload", func() bool {
		v, _ := scrapeMetrics(t, p).value("tokenproxy_config_reloads_total", "result", "success")
		return v == 1
	})

	m := scrapeMetrics(t, p)
	now := float64(time.Now().UnixMilli()) / 1000
	life := lifetime.Seconds()

	types := map[string]dto.MetricType{
		"tokenproxy_requests_total":                 dto.MetricType_COUNTER,
		"tokenproxy_request_duration_seconds":       dto.MetricType_HISTOGRAM,
		"tokenproxy_token_fetches_total":            dto.MetricType_COUNTER,
		"tokenproxy_token_fetch_duration_seconds":   dto.MetricType_HISTOGRAM,
		"tokenproxy_token_expiry_timestamp_seconds": dto.MetricType_GAUGE,
		"tokenproxy_upstream_reauth_total":          dto.MetricType_COUNTER,
		"tokenproxy_secret_reads_total":             dto.MetricType_COUNTER,
		"tokenproxy_build_info":                     dto.MetricType_GAUGE,
		"tokenproxy_token_age_seconds":              dto.MetricType_GAUGE,
		"tokenproxy_token_expiry_seconds":           dto.MetricType_GAUGE,
		"tokenproxy_replays_total":                  dto.MetricType_COUNTER,
		"tokenproxy_token_waits_coalesced_total":    dto.MetricType_COUNTER,
		"tokenproxy_config_reloads_total":           dto.MetricType_COUNTER,
		"tokenproxy_upstream_ready":                 dto.MetricType_GAUGE,
		"tokenproxy_token_fetch_failures_total":     dto.MetricType_COUNTER,
	}
	for name, typ := range types {
		switch mf := m[name]; {
		case mf == nil:
			t.Errorf("/metrics has no %s", name)
		case mf.GetType() != typ:
			t.Errorf("%s is a %s, want a %s", name, mf.GetType(), typ)
		}
	}

	// Counted exactly: every series of these families that moved, and its
	// value (the others are at 0 from the start).
	exact := map[string][]string{
		// A replay is not a second request; the unknown upstream has none.
		"tokenproxy_requests_total":                {"code=200,upstream=hgem: 4", "code=200,upstream=inspera: 2", "code=404,upstream=: 1"},
		"tokenproxy_request_duration_seconds":      {"upstream=: 1", "upstream=hgem: 4", "upstream=inspera: 2"},
		"tokenproxy_token_fetches_total":           {"result=error,upstream=prodoscore: 1", "result=success,upstream=hgem: 2", "result=success,upstream=inspera: 1", "result=success,upstream=prodoscore: 1"},
		"tokenproxy_token_fetch_duration_seconds":  {"upstream=hgem: 2", "upstream=inspera: 1", "upstream=prodoscore: 2"},
		"tokenproxy_upstream_reauth_total":         {"upstream=hgem: 1"},
		"tokenproxy_replays_total":                 {"upstream=hgem: 1"},
		"tokenproxy_token_fetch_failures_total":    {"reason=server_error,upstream=prodoscore: 1"},
		"tokenproxy_config_reloads_total":          {"result=success: 1"},
		"tokenproxy_upstream_ready":                {"upstream=hgem: 1", "upstream=inspera: 1", "upstream=prodoscore: 1"},
		"tokenproxy_proxy_errors_total":            {"error=unknown_upstream,upstream=: 1"},
		"tokenproxy_requests_in_flight":            nil,
		"tokenproxy_config_last_reload_successful": {": 1"},
	}
	for name, want := range exact {
		if got := m.nonzero(name); !slices.Equal(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", name, got, want)
		}
	}
	for _, name := range []string{"tokenproxy_request_duration_seconds", "tokenproxy_token_fetch_duration_seconds"} {
		for _, s := range m[name].GetMetric() {
			if h := s.GetHistogram(); h.GetSampleCount() > 0 && h.GetSampleSum() <= 0 || len(h.GetBucket()) == 0 {
				t.Errorf("%s%v: sum %v over %d buckets", name, labelsOf(s), h.GetSampleSum(), len(h.GetBucket()))
			}
		}
	}
	// hgem's 401 dropped its token; the caller and the background refresher
	// may race to start the new fetch, so hgem may have one coalesced wait.
	coalesced := m.nonzero("tokenproxy_token_waits_coalesced_total")
	if !slices.Equal(coalesced, []string{"upstream=inspera: 2"}) && !slices.Equal(coalesced, []string{"upstream=hgem: 1", "upstream=inspera: 2"}) {
		t.Errorf("tokenproxy_token_waits_coalesced_total: %q, want inspera 2 (and hgem at most 1)", coalesced)
	}

	// Each upstream read its own file.
	reads := m.nonzero("tokenproxy_secret_reads_total")
	for _, up := range []string{"hgem", "inspera", "prodoscore"} {
		if v, _ := m.value("tokenproxy_secret_reads_total", "source", "file", "result", "success", "upstream", up); v < 1 || len(reads) != 3 {
			t.Errorf("tokenproxy_secret_reads_total: %q, want only source=file,result=success, at least 1 per upstream", reads)
		}
	}

	out, err := exec.Command(binary, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	// "tokenproxy <version> (commit <commit>, built <date>)"
	version, revision := "", ""
	if f := strings.Fields(string(out)); len(f) > 3 && f[0] == "tokenproxy" {
		version, revision = f[1], strings.TrimSuffix(f[3], ",")
	}
	want := "goversion=" + runtime.Version() + ",revision=" + revision + ",version=" + version + ": 1"
	if got := m.series("tokenproxy_build_info"); !slices.Equal(got, []string{want}) || version == "" {
		t.Errorf("tokenproxy_build_info: %q, want %q", got, want)
	}

	for _, up := range []string{"hgem", "inspera", "prodoscore"} {
		// Every token was fetched during this test, its lifetime counted
		// from when it was asked for.
		if v, ok := m.value("tokenproxy_token_expiry_timestamp_seconds", "upstream", up); !ok || v > now+life+1 || v < now+life-120 {
			t.Errorf("%s: token expiry timestamp %v, want about now+%s (%v)", up, v, lifetime, now+life)
		}
		if v, ok := m.value("tokenproxy_token_expiry_seconds", "upstream", up); !ok || v > life || v < life-120 {
			t.Errorf("%s: token expiry in %vs, want about %v", up, v, life)
		}
		if v, ok := m.value("tokenproxy_token_age_seconds", "upstream", up); !ok || v < 0 || v > 120 {
			t.Errorf("%s: token age %vs, want between 0 and the test's length", up, v)
		}
	}
}

// readyDoc is /readyz's body, decoded strictly enough to see its shape.
func readyDoc(t *testing.T, r *response) (bool, map[string]map[string]json.RawMessage) {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &top); err != nil {
		t.Fatalf("/readyz: not JSON: %s", r.body)
	}
	var ready bool
	var ups map[string]map[string]json.RawMessage
	if json.Unmarshal(top["ready"], &ready) != nil || json.Unmarshal(top["upstreams"], &ups) != nil {
		t.Fatalf("/readyz: want {ready, upstreams}: %s", r.body)
	}
	for k := range top {
		if k != "ready" && k != "upstreams" && k != "draining" {
			t.Errorf("/readyz: unexpected key %q", k)
		}
	}
	for name, u := range ups {
		var b bool
		var reason string
		if len(u) != 2 || json.Unmarshal(u["ready"], &b) != nil || json.Unmarshal(u["reason"], &reason) != nil || reason == "" {
			t.Errorf("/readyz: upstream %s is not {ready, reason}: %s", name, r.body)
		}
	}
	return ready, ups
}

func upstreamReady(t *testing.T, u map[string]json.RawMessage) (bool, string) {
	t.Helper()
	var ready bool
	var reason string
	json.Unmarshal(u["ready"], &ready)
	json.Unmarshal(u["reason"], &reason)
	return ready, reason
}

func TestReadyzUntilEveryUpstreamHasAToken(t *testing.T) {
	e := newEnv(t)
	inspera := e.vendors["inspera"]
	inspera.sim.SetTokenFault(&vendorsim.Fault{Hang: true})
	cfg := e.config("hgem", "inspera")
	cfg.LogLevel = "debug"
	p := e.start(cfg)

	var r *response
	waitFor(t, 20*time.Second, "hgem ready while inspera's token hangs", func() bool {
		r = get(t, p.admin+"/readyz")
		_, ups := readyDoc(t, r)
		ok, _ := upstreamReady(t, ups["hgem"])
		return ok
	})
	ready, ups := readyDoc(t, r)
	insReady, insReason := upstreamReady(t, ups["inspera"])
	if r.StatusCode != 503 || ready || len(ups) != 2 || insReady || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/readyz while inspera has no token: %d %s", r.StatusCode, r.body)
	}
	t.Logf("inspera not ready: %s", insReason)
	if r := get(t, p.admin+"/healthz"); r.StatusCode != 200 {
		t.Errorf("/healthz: %d", r.StatusCode)
	}
	if r := call(t, p, "hgem"); r.StatusCode != 200 {
		t.Errorf("hgem while inspera is not ready: %d", r.StatusCode)
	}

	inspera.sim.SetTokenFault(nil)
	waitFor(t, 20*time.Second, "/readyz 200", func() bool { return get(t, p.admin+"/readyz").StatusCode == 200 })
	r = get(t, p.admin+"/readyz")
	ready, ups = readyDoc(t, r)
	if r.StatusCode != 200 || !ready || len(ups) != 2 {
		t.Fatalf("/readyz: %d %s", r.StatusCode, r.body)
	}
	for name, u := range ups {
		if ok, reason := upstreamReady(t, u); !ok || !strings.Contains(reason, "valid until") {
			t.Errorf("/readyz %s: ready %v, reason %q", name, ok, reason)
		}
	}
}

func TestStatusJSONAndPage(t *testing.T) {
	e := newEnv(t)
	// PROMinsight refuses the credentials with a message that holds markup.
	e.vendors["prominsight"].sim.SetTokenFault(&vendorsim.Fault{Status: 401,
		Body: `{"success":false,"error":"<script>alert(1)</script> Invalid credentials"}`})
	cfg := e.config("hgem", "prominsight")
	cfg.LogLevel = "debug"
	p := e.start(cfg)

	var ups map[string]map[string]any
	var body []byte
	waitFor(t, 20*time.Second, "hgem ready and prominsight refused", func() bool {
		r := get(t, p.admin+"/status")
		var doc struct {
			Upstreams map[string]map[string]any `json:"upstreams"`
		}
		if r.StatusCode != 200 || json.Unmarshal(r.body, &doc) != nil {
			t.Fatalf("/status: %d %s", r.StatusCode, r.body)
		}
		ups, body = doc.Upstreams, r.body
		return ups["hgem"]["state"] == "ready" && ups["prominsight"]["state"] == "error"
	})
	now := time.Now()
	for name, u := range ups {
		for _, k := range []string{"type", "state", "token_expires_at", "last_fetch_at", "last_fetch_result", "last_error", "credential_version"} {
			if _, ok := u[k]; !ok {
				t.Errorf("/status %s has no %s: %v", name, k, u)
			}
		}
		if u["type"] != name {
			t.Errorf("/status %s: type %v", name, u["type"])
		}
		if v, _ := u["credential_version"].(string); v == "" {
			t.Errorf("/status %s: no credential_version", name)
		}
		at, _ := u["last_fetch_at"].(string)
		if ts, err := time.Parse(time.RFC3339, at); err != nil || ts.Before(now.Add(-2*time.Minute)) || ts.After(now.Add(time.Second)) {
			t.Errorf("/status %s: last_fetch_at %q", name, at)
		}
	}
	h := ups["hgem"]
	exp, _ := h["token_expires_at"].(string)
	if ts, err := time.Parse(time.RFC3339, exp); err != nil || ts.Sub(now) < 58*time.Minute || ts.Sub(now) > time.Hour+time.Second {
		t.Errorf("/status hgem: token_expires_at %q, want RFC 3339 about an hour from now", exp)
	}
	if h["last_fetch_result"] != "success" || h["last_error"] != "" {
		t.Errorf("/status hgem: %v", h)
	}
	pi := ups["prominsight"]
	if pi["last_fetch_result"] != "error" || !strings.Contains(pi["last_error"].(string), "Invalid credentials") || pi["token_expires_at"] != nil {
		t.Errorf("/status prominsight: %v", pi)
	}
	checkNoSecretIn(t, e, "/status", body)

	r := get(t, p.admin+"/status", "Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")
	page := string(r.body)
	if r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/status as HTML: %d %q", r.StatusCode, r.Header.Get("Content-Type"))
	}
	for _, want := range []string{"hgem", "prominsight", "Invalid credentials", "&lt;script&gt;"} {
		if !strings.Contains(page, want) {
			t.Errorf("the status page does not show %q", want)
		}
	}
	if strings.Contains(strings.ToLower(page), "<script") {
		t.Error("the status page holds a <script> element")
	}
	checkNoSecretIn(t, e, "the status page", r.body)
}

// checkNoSecretIn fails when b holds a credential or an issued token.
func checkNoSecretIn(t *testing.T, e *env, what string, b []byte) {
	t.Helper()
	for _, v := range e.vendors {
		for k, c := range v.creds {
			if bytes.Contains(b, []byte(c)) {
				t.Errorf("%s holds %s's %s", what, v.kind, k)
			}
		}
		for _, tok := range v.sim.Tokens() {
			if bytes.Contains(b, []byte(tok)) {
				t.Errorf("%s holds a %s token", what, v.kind)
			}
		}
	}
}

// slowRoute adds GET /api/slow to hgem: it answers "done" once release is
// closed (or gives up when the request goes away).
func slowRoute(t *testing.T, v *vendor) (release func()) {
	ch := make(chan struct{})
	var closed bool
	release = func() {
		if !closed {
			closed = true
			close(ch)
		}
	}
	// Registered after newEnv's cleanups, so run before the simulator stops.
	t.Cleanup(release)
	v.sim.HandleAPI("GET /api/slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-ch:
			io.WriteString(w, "done")
		case <-r.Context().Done():
		}
	}))
	return release
}

// noKeepAlive makes every request on a new connection, so that a request
// sent while draining shows whether the listener still accepts.
var noKeepAlive = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// startSlow sends GET /hgem/api/slow and waits until the upstream holds it.
func startSlow(t *testing.T, p *proc, v *vendor) <-chan *response {
	t.Helper()
	done := make(chan *response, 1)
	go func() {
		resp, err := noKeepAlive.Get(p.data + "/hgem/api/slow")
		if err != nil {
			done <- nil
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			done <- nil
			return
		}
		done <- &response{Response: resp, body: b}
	}()
	waitFor(t, 20*time.Second, "the slow request to reach the upstream", func() bool {
		for _, r := range v.sim.APIRequests() {
			if r.Path == "/api/slow" {
				return true
			}
		}
		return false
	})
	return done
}

func exitCode(p *proc) int {
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	if p.waitErr != nil {
		return -1
	}
	return 0
}

// waitDraining waits until p's /readyz answers 503, for at most within.
func waitDraining(t *testing.T, p *proc, within time.Duration) {
	t.Helper()
	waitFor(t, within, "/readyz 503 after SIGTERM", func() bool {
		resp, err := noKeepAlive.Get(p.admin + "/readyz")
		if err != nil {
			t.Fatalf("/readyz during the drain delay: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode == 503
	})
}

func TestSIGTERMDrainsThenFinishesInFlight(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	release := slowRoute(t, v)
	const drainDelay = 2 * time.Second
	cfg := e.config("hgem")
	cfg.DrainDelay.Duration, cfg.ShutdownTimeout.Duration = drainDelay, 10*time.Second
	p := e.start(cfg)
	p.ready(t)
	slow := startSlow(t, p, v)

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	// Readiness goes first, well within the drain delay.
	waitDraining(t, p, drainDelay)
	r := get(t, p.admin+"/readyz")
	if ready, _ := readyDoc(t, r); ready || !bytes.Contains(r.body, []byte(`"draining": true`)) {
		t.Errorf("/readyz while draining: %s", r.body)
	}
	// The data listener still takes new connections during drain_delay.
	resp, err := noKeepAlive.Get(p.data + "/hgem/api/visits")
	if err != nil {
		t.Fatalf("a request during drain_delay: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("a request during drain_delay: %d", resp.StatusCode)
	}
	if time.Since(start) >= drainDelay {
		t.Logf("warning: the request during drain_delay finished %s after SIGTERM", time.Since(start))
	}

	// Then the listener closes, while the request in flight goes on.
	dataAddr := strings.TrimPrefix(p.data, "http://")
	waitFor(t, 15*time.Second, "the data listener to close", func() bool {
		c, err := net.DialTimeout("tcp", dataAddr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if d := time.Since(start); d < drainDelay {
		t.Errorf("the data listener closed %s after SIGTERM, before drain_delay", d)
	}
	select {
	case <-p.exited:
		t.Fatalf("exited with a request in flight: %v", p.waitErr)
	default:
	}
	if r := get(t, p.admin+"/readyz"); r.StatusCode != 503 {
		t.Errorf("/readyz after the listener closed: %d, want 503 until exit", r.StatusCode)
	}

	release()
	if r := <-slow; r == nil || r.StatusCode != 200 || string(r.body) != "done" {
		t.Fatalf("the request in flight at SIGTERM: %v", r)
	}
	p.waitExit(t, 15*time.Second, "no exit after the last request finished")
	if c := exitCode(p); c != 0 {
		t.Fatalf("exit code %d, want 0:\n%s", c, p.out.String())
	}
	t.Logf("stopped %s after SIGTERM", time.Since(start))
	if !p.logged("stopped", map[string]any{"exit_code": 0}) {
		t.Error(`no "stopped" log line with exit_code 0`)
	}
}

func TestSIGTERMPastShutdownTimeout(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	slowRoute(t, v) // never released while the proxy runs
	cfg := e.config("hgem")
	cfg.ShutdownTimeout.Duration = time.Second
	p := e.start(cfg)
	p.ready(t)
	slow := startSlow(t, p, v)

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitExit(t, 20*time.Second, "no exit within 20s of SIGTERM with a 1s shutdown_timeout")
	d := time.Since(start)
	if c := exitCode(p); c != 1 {
		t.Fatalf("exit code %d, want 1 with a request still in flight:\n%s", c, p.out.String())
	}
	if d < time.Second {
		t.Errorf("exited %s after SIGTERM, before shutdown_timeout", d)
	}
	if r := <-slow; r != nil && r.StatusCode == 200 && string(r.body) == "done" {
		t.Error("the request cut off at shutdown_timeout was answered in full")
	}
	if !p.logged("requests still in flight at shutdown_timeout; closing them", nil) {
		t.Error("no log line says requests were cut off")
	}
	// The request cut off is still logged, once, before the process exits.
	if n := len(p.linesWith("request", map[string]any{"path": "/hgem/api/slow"})); n != 1 {
		t.Errorf("%d request log lines for the request cut off at shutdown_timeout, want 1:\n%s", n, p.out.String())
	}
	if !p.logged("requests ended at shutdown_timeout", map[string]any{"requests": 1}) {
		t.Error(`no "requests ended at shutdown_timeout" line counting 1`)
	}
	t.Logf("exited %s after SIGTERM", d)
}

// An HTTP/1.0 caller's answer of unknown length goes out on a taken-over
// connection, its end the connection's close. Still streaming at
// shutdown_timeout, it is cut off like any request: exit code 1, a warning
// that counts it, and its one log line with the bytes that went out.
func TestSIGTERMCutsAnHTTP10StreamPastShutdownTimeout(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	v.sim.HandleAPI("GET /api/stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		piece := bytes.Repeat([]byte("s"), 1024)
		for {
			if _, err := w.Write(piece); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-stop:
				return
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}))
	cfg := e.config("hgem")
	cfg.ShutdownTimeout.Duration = time.Second
	p := e.start(cfg)
	p.ready(t)

	c, err := net.Dial("tcp", strings.TrimPrefix(p.data, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /hgem/api/stream HTTP/1.0\r\nHost: x\r\n\r\n")
	got := make(chan int, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		got <- int(n)
	}()
	waitFor(t, 20*time.Second, "the stream to reach the upstream", func() bool {
		for _, r := range v.sim.APIRequests() {
			if r.Path == "/api/stream" {
				return true
			}
		}
		return false
	})
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitExit(t, 20*time.Second, "no exit within 20s of SIGTERM with a 1s shutdown_timeout")
	if c := exitCode(p); c != 1 {
		t.Errorf("exit code %d, want 1 with an answer cut off:\n%s", c, p.out.String())
	}
	if !p.logged("answers still being written at shutdown_timeout; closed", map[string]any{"answers": 1}) {
		t.Error(`no warning counting the answer cut off`)
	}
	if p.logged("upgraded connections closed at shutdown_timeout", nil) {
		t.Error("the answer was counted as an upgraded connection")
	}
	select {
	case n := <-got:
		lines := p.linesWith("request", map[string]any{"path": "/hgem/api/stream"})
		if len(lines) != 1 {
			t.Fatalf("%d request log lines for the stream, want 1", len(lines))
		}
		// What went out is at least what the caller read (the rest may
		// have died in the socket's buffers).
		if b, _ := lines[0]["response_bytes"].(float64); n <= 0 || int(b) < n {
			t.Errorf("response_bytes %v, the caller read %d bytes of the body", lines[0]["response_bytes"], n)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the caller's connection still open 20 s after the exit")
	}
}

// A SIGHUP during drain_delay reloads, as before the drain; it is not the
// second signal that cuts the delay short.
func TestSIGHUPDuringDrainDelayReloads(t *testing.T) {
	e := newEnv(t)
	const drainDelay = 3 * time.Second
	cfg := e.config("hgem")
	cfg.DrainDelay.Duration, cfg.ShutdownTimeout.Duration = drainDelay, 5*time.Second
	p := e.start(cfg)
	p.ready(t)

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	waitDraining(t, p, drainDelay)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, drainDelay, "a reload after the SIGHUP", func() bool { return p.logged("config reloaded", nil) })
	// Still serving: the delay goes on.
	resp, err := noKeepAlive.Get(p.data + "/hgem/api/visits")
	if err != nil {
		t.Fatalf("a request after the SIGHUP, during drain_delay: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("a request after the SIGHUP, during drain_delay: %d, want 200", resp.StatusCode)
	}
	p.waitExit(t, 20*time.Second, "no exit within 20s of SIGTERM")
	if d := time.Since(start); d < drainDelay {
		t.Errorf("exited %s after SIGTERM, before drain_delay (%s): the SIGHUP cut it short", d, drainDelay)
	}
	if c := exitCode(p); c != 0 {
		t.Errorf("exit code %d, want 0", c)
	}
}

// statusOfAll is /status's upstreams.
func statusOfAll(t *testing.T, p *proc) map[string]map[string]any {
	t.Helper()
	r := get(t, p.admin+"/status")
	var doc struct {
		Upstreams map[string]map[string]any `json:"upstreams"`
	}
	if r.StatusCode != 200 || json.Unmarshal(r.body, &doc) != nil {
		t.Fatalf("/status: %d %s", r.StatusCode, r.body)
	}
	return doc.Upstreams
}

// tokenUsed calls kind through p and returns the bearer token its vendor saw.
func tokenUsed(t *testing.T, p *proc, v *vendor) string {
	t.Helper()
	if r := call(t, p, v.kind); r.StatusCode != 200 {
		t.Fatalf("%s: %d %s", v.kind, r.StatusCode, r.body)
	}
	return lastAPI(t, v).Header.Get("Authorization")
}

func countLogged(p *proc, msg string) int {
	n := 0
	for _, l := range p.logLines() {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

func TestSIGHUPReloadKeepsWarmTokens(t *testing.T) {
	e := newEnv(t)
	kinds := []string{"hgem", "inspera", "prominsight"}
	configWith := func(level string, insperaTimeout time.Duration) config.Config {
		c := e.config("hgem", "inspera", "prominsight")
		c.LogLevel = level
		edit(c, "inspera", func(u *config.Upstream) { u.Timeout.Duration = insperaTimeout })
		return c
	}
	path := e.writeConfig("reload.yaml", configWith("info", config.DefaultTimeout))
	p := e.startArgs("run", "--config", path)
	p.ready(t)

	tokens, calls := map[string]string{}, map[string]int{}
	gens := map[string]any{}
	st := statusOfAll(t, p)
	for _, k := range kinds {
		tokens[k] = tokenUsed(t, p, e.vendors[k])
		calls[k] = e.vendors[k].sim.TokenCalls()
		gens[k] = st[k]["token_generation"]
	}
	reloads := func(result string) float64 {
		v, _ := scrapeMetrics(t, p).value("tokenproxy_config_reloads_total", "result", result)
		return v
	}

	// 1. inspera's settings change, and log_level goes to warn.
	e.writeConfig("reload.yaml", configWith("warn", 45*time.Second))
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the reload", func() bool { return reloads("success") == 1 })
	waitFor(t, 20*time.Second, "inspera's new token", func() bool {
		return e.vendors["inspera"].sim.TokenCalls() == calls["inspera"]+1 && statusOfAll(t, p)["inspera"]["state"] == "ready"
	})
	st = statusOfAll(t, p)
	for _, k := range kinds {
		tok := tokenUsed(t, p, e.vendors[k])
		if k == "inspera" {
			if tok == tokens[k] {
				t.Error("inspera's settings changed but it kept its token")
			}
			continue
		}
		if n := e.vendors[k].sim.TokenCalls(); n != calls[k] || tok != tokens[k] || st[k]["token_generation"] != gens[k] {
			t.Errorf("%s did not change but lost its token: %d token requests (was %d), generation %v (was %v), same token %v",
				k, n, calls[k], st[k]["token_generation"], gens[k], tok == tokens[k])
		}
	}
	tokens["inspera"], calls["inspera"] = tokenUsed(t, p, e.vendors["inspera"]), e.vendors["inspera"].sim.TokenCalls()

	// 2. A config that does not validate: rejected, the running one stays.
	// A key no config has is a matter of the text: a line after the rest.
	e.write("reload.yaml", append(yamlOf(t, configWith("loud", 45*time.Second)), "not_a_key: 1\n"...))
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the rejection", func() bool {
		return reloads("error") == 1 && p.logged("config reload rejected; the running config stays", nil)
	})
	for _, k := range kinds {
		if tok := tokenUsed(t, p, e.vendors[k]); tok != tokens[k] || e.vendors[k].sim.TokenCalls() != calls[k] {
			t.Errorf("%s changed token after a rejected reload", k)
		}
	}
	c := configStatus(t, p)
	if msg, _ := c["last_reload_error"].(string); c["last_reload_result"] != "error" || !strings.Contains(msg, "log_level") || c["path"] != path {
		t.Errorf("/status config after a rejected reload: %v", c)
	}

	// 3. Back to a valid config at debug: only the log level changes. Its
	// "config reloaded" line is the first: the reload to warn logged none.
	e.writeConfig("reload.yaml", configWith("debug", 45*time.Second))
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, `"config reloaded" at debug`, func() bool { return countLogged(p, "config reloaded") > 0 })
	if n := countLogged(p, "config reloaded"); n != 1 || reloads("success") != 2 {
		t.Errorf(`%d "config reloaded" lines after reloads at warn then debug, want 1 (the one at warn suppressed)`, n)
	}
	for _, k := range kinds {
		if tok := tokenUsed(t, p, e.vendors[k]); tok != tokens[k] || e.vendors[k].sim.TokenCalls() != calls[k] {
			t.Errorf("%s changed token on a reload that changed only log_level", k)
		}
	}
	if c = configStatus(t, p); c["last_reload_result"] != "success" || c["last_reload_error"] != "" {
		t.Errorf("/status config after a reload: %v", c)
	}

	// 4. A level set at /loglevel outlives a reload that leaves log_level
	// as it was.
	if r := do(t, "PUT", p.admin+"/loglevel", strings.NewReader("level=warn"), "Content-Type", "application/x-www-form-urlencoded"); r.StatusCode != 200 {
		t.Fatalf("PUT /loglevel: %d %s", r.StatusCode, r.body)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the fourth reload", func() bool { return reloads("success") == 3 })
	if r := get(t, p.admin+"/loglevel"); strings.TrimSpace(string(r.body)) != `{"level":"warn"}` {
		t.Errorf("after a reload that left log_level alone: %s, want the level set at /loglevel", r.body)
	}
	if !p.logged("log level changed at /loglevel", map[string]any{"from": "debug", "to": "warn"}) {
		t.Error("the change at /loglevel was not logged")
	}
}

// configStatus is /status's config section.
func configStatus(t *testing.T, p *proc) map[string]any {
	t.Helper()
	var doc struct {
		Config map[string]any `json:"config"`
	}
	if r := get(t, p.admin+"/status"); json.Unmarshal(r.body, &doc) != nil {
		t.Fatalf("/status: %s", r.body)
	}
	return doc.Config
}

func TestRequestLogLines(t *testing.T) {
	e := newEnv(t)
	p := e.start(e.allUpstreams()) // log_level: debug
	p.ready(t)
	secret := canary("query", "q")
	hgem := e.vendors["hgem"]
	simHost := hostOf(t, hgem.url())

	type line struct {
		upstream, method, path string
		status                 int
		token                  string // "" when the request never got one: not logged
		error                  string // the Tokenproxy-Error code, when tokenproxy answered
		id                     string // X-Request-Id the caller got back
	}
	want := []line{}
	expect := func(r *response, l line) {
		t.Helper()
		if r.StatusCode != l.status {
			t.Fatalf("%s %s: %d %s", l.method, l.path, r.StatusCode, r.body)
		}
		if ids := r.Header.Values("X-Request-Id"); len(ids) == 1 {
			l.id = ids[0]
		} else {
			t.Errorf("%s %s: X-Request-Id %q, want exactly one", l.method, l.path, ids)
		}
		l.error = r.Header.Get("Tokenproxy-Error")
		want = append(want, l)
	}
	expect(get(t, p.data+"/hgem/api/visits?q="+secret+"&page=1"), line{upstream: "hgem", method: "GET", path: "/hgem/api/visits", status: 200, token: "fresh"})
	expect(do(t, "POST", p.data+"/prominsight/api/v1/tests/sessions?q="+secret, strings.NewReader(`{"test_code":"T1","limit":1}`), "Content-Type", "application/json"),
		line{upstream: "prominsight", method: "POST", path: "/prominsight/api/v1/tests/sessions", status: 200, token: "fresh"})
	expect(get(t, p.data+"/nosuch/thing?q="+secret), line{upstream: "", method: "GET", path: "/nosuch/thing", status: 404})
	expect(get(t, p.data+"/hgem/a/../b?q="+secret), line{upstream: "hgem", method: "GET", path: "/hgem/a/../b", status: 400})
	hgem.sim.RevokeAll()
	expect(get(t, p.data+"/hgem/api/visits/1001?q="+secret), line{upstream: "hgem", method: "GET", path: "/hgem/api/visits/1001", status: 200, token: "replayed"})
	expect(rawOnce(t, p, rawGET("http://"+simHost+"/api/visits?q="+secret, simHost)),
		line{upstream: "hgem", method: "GET", path: "http://" + simHost + "/api/visits", status: 200, token: "fresh"})
	// A last request whose line, once written, follows every line above.
	expect(call(t, p, "inspera"), line{upstream: "inspera", method: "GET", path: "/inspera" + apiPath["inspera"].path, status: 200, token: "fresh"})
	waitFor(t, 10*time.Second, "the last request's log line", func() bool {
		return p.logged("request", map[string]any{"upstream": "inspera"})
	})

	got := p.linesWith("request", nil)
	if len(got) != len(want) {
		t.Errorf("%d request lines for %d requests", len(got), len(want))
	}
	for _, w := range want {
		n := 0
		for _, l := range got {
			if l["upstream"] == w.upstream && l["method"] == w.method && l["path"] == w.path {
				n++
				token, _ := l["token"].(string)
				errCode, _ := l["error"].(string)
				if l["level"] != "info" || l["status"] != float64(w.status) || token != w.token || errCode != w.error || l["request_id"] != w.id {
					t.Errorf("%s %s: level %v status %v token %q error %q request_id %v, want info %d %q %q %q",
						w.method, w.path, l["level"], l["status"], token, errCode, l["request_id"], w.status, w.token, w.error, w.id)
				}
				if _, ok := l["token"]; ok && w.token == "" {
					t.Errorf("%s %s: token %v logged for a request that got none", w.method, w.path, l["token"])
				}
				proxied := w.token != ""
				for _, k := range []string{"token_wait", "upstream_latency"} {
					if d, ok := l[k].(float64); ok != proxied || d < 0 {
						t.Errorf("%s %s: %s %v, want a duration only when the upstream was called", w.method, w.path, k, l[k])
					}
				}
				if b, ok := l["response_bytes"].(float64); !ok || b <= 0 {
					t.Errorf("%s %s: response_bytes %v", w.method, w.path, l["response_bytes"])
				}
				if d, ok := l["duration"].(float64); !ok || d < 0 || math.IsNaN(d) {
					t.Errorf("%s %s: duration %v", w.method, w.path, l["duration"])
				}
			}
		}
		if n != 1 {
			t.Errorf("%s %s: %d log lines, want exactly 1", w.method, w.path, n)
		}
	}
	if strings.Contains(p.out.String(), secret) {
		t.Error("a query string reached the log")
	}
}

// An idle tokenproxy runs on one P (internal/procs): the scheduler's
// default of one P per core costs a sidecar CPU at low request rates.
// Going back to the default under load is internal/procs' unit test. The
// wait reads the process's log, not /metrics: scraping every 10 ms would
// keep it busy.
//
// A process started just before it with GOMAXPROCS set keeps that value:
// by the time the second has gone to one P, the first has been idle
// longer.
func TestIdleProcessRunsOnOneP(t *testing.T) {
	e := newEnv(t)
	c := e.config("hgem")
	c.LogLevel = "debug"
	fixed := e.launchEnv([]string{"GOMAXPROCS=2"}, "run", "--config", e.writeConfig("fixed.yaml", c))
	fixed.waitListening(t)
	p := e.start(c)
	waitFor(t, 30*time.Second, "a log line saying GOMAXPROCS is 1", func() bool {
		return p.logged("GOMAXPROCS changed", map[string]any{"gomaxprocs": 1})
	})
	if v, ok := scrapeMetrics(t, p).value("go_sched_gomaxprocs_threads"); !ok || v != 1 {
		t.Fatalf("go_sched_gomaxprocs_threads = %v (found: %v), want 1", v, ok)
	}
	if v, ok := scrapeMetrics(t, fixed).value("go_sched_gomaxprocs_threads"); !ok || v != 2 || fixed.logged("GOMAXPROCS changed", nil) {
		t.Fatalf("with GOMAXPROCS=2: go_sched_gomaxprocs_threads = %v (found: %v), want 2 and no change logged", v, ok)
	}
}
