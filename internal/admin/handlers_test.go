package admin

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// fixture is a Server with every source set, as the daemon builds it.
type fixture struct {
	s     *Server
	srv   *httptest.Server
	level zap.AtomicLevel
	mu    sync.Mutex
	info  ConfigInfo
	vault *secrets.VaultState
	ups   []Upstream
}

func (f *fixture) setConfig(info ConfigInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.info = info
}

// newFixture serves hgem (ready, with history) and prominsight (refused)
// with a Vault login, and cfg as the config in force.
func newFixture(t *testing.T, cfg *config.Config) *fixture {
	t.Helper()
	now := time.Now()
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenproxy_requests_total"}, []string{"upstream", "code"})
	proxyErrors := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenproxy_proxy_errors_total"}, []string{"upstream", "error"})
	reg.MustRegister(requests, proxyErrors)
	requests.WithLabelValues("hgem", "200").Add(7)
	requests.WithLabelValues("hgem", "404").Add(1)
	requests.WithLabelValues("prominsight", "502").Add(2)
	requests.WithLabelValues("prominsight", "200") // zero: not shown
	proxyErrors.WithLabelValues("prominsight", "token_endpoint_error").Add(2)
	proxyErrors.WithLabelValues("hgem", "upstream_timeout") // zero

	refusal := "prominsight: token endpoint refused the credentials: HTTP 401, invalid_client"
	hgemEvents := []broker.Event{
		{Kind: broker.EventMinted, At: now.Add(-3 * time.Hour), Until: now.Add(-2 * time.Hour), Source: "vendor"},
		{Kind: broker.EventMinted, At: now.Add(-50 * time.Minute), Until: now.Add(10 * time.Minute), Source: "vendor"},
		{Kind: broker.EventRefreshed, At: now.Add(-5 * time.Minute), Until: now.Add(55 * time.Minute), Source: "vendor"},
	}
	f := &fixture{level: zap.NewAtomicLevelAt(zapcore.InfoLevel)}
	f.ups = []Upstream{
		{Type: "hgem", Credentials: "vault:secret/tokenproxy/hgem", BaseHost: "results-api.hgem.com", TokenHost: "results-api.hgem.com",
			State: broker.State{Name: "hgem", Ready: true, State: "ready", TokenObtainedAt: now.Add(-5 * time.Minute),
				TokenExpiresAt: now.Add(55 * time.Minute), NextAttemptAt: now.Add(40 * time.Minute), LastFetchAt: now.Add(-5 * time.Minute),
				LastFetchResult: "success", CredentialVersion: "3"},
			Events: func(since time.Time) []broker.Event {
				var out []broker.Event
				for _, e := range hgemEvents {
					if !e.At.Before(since) {
						out = append(out, e)
					}
				}
				return out
			}},
		{Type: "prominsight", Credentials: "file:/etc/tokenproxy/prominsight.json", BaseHost: "api.prominsight.example", TokenHost: "api.prominsight.example",
			State: broker.State{Name: "prominsight", State: "error", Reason: refusal, LastError: refusal, LastFetchAt: now.Add(-time.Second),
				LastFetchResult: "error", Failures: 2, NextAttemptAt: now.Add(29 * time.Second)},
			Events: func(time.Time) []broker.Event {
				return []broker.Event{{Kind: broker.EventFailed, At: now.Add(-time.Second), Until: now.Add(29 * time.Second), Reason: "refused"}}
			}},
	}
	f.vault = &secrets.VaultState{Address: "https://ops:CANARY-userinfo@vault.internal:8200", Method: "approle", AuthMount: "approle",
		LoggedIn: true, LastLogin: now.Add(-10 * time.Minute), LastRenewal: now.Add(-time.Minute), TokenExpiresAt: now.Add(time.Hour), Renewable: true}
	f.info = ConfigInfo{Path: "/etc/tokenproxy/tokenproxy.yaml", Config: cfg, LoadedAt: now.Add(-time.Hour)}
	f.s = &Server{
		Upstreams: func() []Upstream { return f.ups },
		Draining:  &atomic.Bool{},
		Gatherer:  reg,
		Version:   "v1.2.3",
		Vault:     func() *secrets.VaultState { return f.vault },
		Config: func() ConfigInfo {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.info
		},
		LogLevel: f.level,
	}
	f.srv = httptest.NewServer(f.s.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

// loadConfig parses text as the config file in dir would be.
func loadConfig(t *testing.T, dir, text string) *config.Config {
	t.Helper()
	path := filepath.Join(dir, "tokenproxy.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

const hgemOnly = `
admin_listen: 127.0.0.1:9901
upstreams:
  hgem:
    type: hgem
    base_url: https://results-api.hgem.com
    credentials: file:hgem.json
`

type exchange struct {
	status int
	header http.Header
	body   string
}

func (f *fixture) do(t *testing.T, method, path string, body io.Reader, header ...string) exchange {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return exchange{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestHeadOnEveryGet walks every route: each GET also answers HEAD with
// the same status and headers and no body, and the index lists it.
func TestHeadOnEveryGet(t *testing.T) {
	cfg := loadConfig(t, t.TempDir(), hgemOnly+"admin_pprof: true\n")
	f := newFixture(t, cfg)
	index := f.do(t, "GET", "/", nil).body
	var paths []string
	chi.Walk(f.s.router(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if method == http.MethodGet {
			paths = append(paths, route)
		}
		return nil
	})
	if len(paths) < 12 {
		t.Fatalf("only %d GET routes: %v", len(paths), paths)
	}
	var wg sync.WaitGroup
	for _, route := range paths {
		path := strings.ReplaceAll(route, "{profile}", "heap")
		switch path {
		case "/debug/pprof/profile", "/debug/pprof/trace":
			path += "?seconds=1" // 30s by default
		}
		if !strings.Contains(index, " "+route+" ") && route != "/" && !strings.HasPrefix(route, "/debug/pprof/") {
			t.Errorf("the index does not list %s:\n%s", route, index)
		}
		// The CPU profile allows one at a time: GET then HEAD, beside the others.
		wg.Go(func() {
			get := f.do(t, "GET", path, nil)
			head := f.do(t, "HEAD", path, nil)
			// /readyz is 503: prominsight has no token.
			if (get.status != http.StatusOK && path != "/readyz") || head.status != get.status {
				t.Errorf("%s: GET %d, HEAD %d; want the same, 200", path, get.status, head.status)
			}
			if head.body != "" || get.body == "" {
				t.Errorf("%s: HEAD body %q, GET body %d bytes", path, head.body, len(get.body))
			}
			if g, h := get.header.Get("Content-Type"), head.header.Get("Content-Type"); g != h || g == "" {
				t.Errorf("%s: Content-Type GET %q, HEAD %q", path, g, h)
			}
		})
	}
	wg.Wait()
	if !strings.Contains(index, "/debug/pprof/") {
		t.Errorf("with admin_pprof: true the index should list /debug/pprof/:\n%s", index)
	}
	// A method no route has is refused, HEAD aside.
	if r := f.do(t, "POST", "/status", nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: %d", r.status)
	}
}

// TestPprofOffByDefault: the profiler is served only while the config in
// force says admin_pprof: true, and only then listed.
func TestPprofOffByDefault(t *testing.T) {
	dir := t.TempDir()
	cfg := loadConfig(t, dir, hgemOnly)
	if cfg.AdminPprof {
		t.Fatal("admin_pprof defaults to true")
	}
	f := newFixture(t, cfg)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
		if r := f.do(t, "GET", path, nil); r.status != http.StatusNotFound || !strings.Contains(r.body, "admin_pprof") {
			t.Errorf("%s with admin_pprof off: %d %q", path, r.status, r.body)
		}
	}
	if idx := f.do(t, "GET", "/", nil).body; strings.Contains(idx, "pprof") {
		t.Errorf("the index lists the profiler while it is off:\n%s", idx)
	}
	// A reload that turns it on takes effect without a restart.
	f.setConfig(ConfigInfo{Config: loadConfig(t, dir, hgemOnly+"admin_pprof: true\n")})
	if r := f.do(t, "GET", "/debug/pprof/heap?debug=1", nil); r.status != http.StatusOK || !strings.Contains(r.body, "heap profile") {
		t.Errorf("/debug/pprof/heap with admin_pprof on: %d %.100q", r.status, r.body)
	}
}

// TestConfigShowsReferencesNeverValues: /config is the config after
// defaults, paths and references as written, nothing read from the files
// they name, and a URL's user info hidden; its YAML loads back.
func TestConfigShowsReferencesNeverValues(t *testing.T) {
	dir := t.TempDir()
	const fileSecret = "hvs.CANARY-token-in-the-file"
	tokenFile := filepath.Join(dir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte(fileSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hgem.json"), []byte(`{"api_key":"CANARY-api-key"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_TOKEN", "hvs.CANARY-env-token")
	text := hgemOnly + `
secrets:
  vault:
    address: https://vault.internal:8200
    auth: {method: token, token_file: vault-token}
`
	cfg := loadConfig(t, dir, text)
	// Validation refuses user info in the address; /config hides it all the
	// same, should a config ever hold it.
	cfg.Secrets.Vault.Address = "https://ops:CANARY-userinfo@vault.internal:8200"
	f := newFixture(t, cfg)

	r := f.do(t, "GET", "/config", nil)
	var doc map[string]any
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(r.body), &doc) != nil {
		t.Fatalf("/config: %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	y := f.do(t, "GET", "/config", nil, "Accept", "application/yaml")
	if y.status != 200 || y.header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("/config as YAML: %d %q", y.status, y.header.Get("Content-Type"))
	}
	for _, out := range []string{r.body, y.body} {
		for _, secret := range []string{fileSecret, "CANARY-api-key", "CANARY-env-token", "CANARY-userinfo"} {
			if strings.Contains(out, secret) {
				t.Errorf("/config shows %q:\n%s", secret, out)
			}
		}
		for _, want := range []string{tokenFile, "file:" + filepath.Join(dir, "hgem.json"), "https://REDACTED@vault.internal:8200",
			"https://results-api.hgem.com/connect/token", "refresh_fraction", "admin_pprof"} {
			if !strings.Contains(out, want) {
				t.Errorf("/config does not show %q:\n%s", want, out)
			}
		}
	}
	up := doc["upstreams"].(map[string]any)["hgem"].(map[string]any)
	if up["token_timeout"] != "10s" || up["max_connections"] != float64(64) || doc["log_level"] != "info" {
		t.Errorf("defaults not shown as the file would write them: %v", doc)
	}

	// The YAML is a config: it loads back to the one in force (the address
	// aside, which it hides).
	plain := loadConfig(t, dir, hgemOnly)
	f.setConfig(ConfigInfo{Config: plain})
	back, err := config.Parse([]byte(f.do(t, "GET", "/config", nil, "Accept", "text/yaml").body))
	if err != nil {
		t.Fatalf("/config's YAML does not load: %v", err)
	}
	// Where each key sat in the file differs, which is no part of the config.
	if diff := cmp.Diff(plain, back, cmpopts.IgnoreUnexported(config.Config{})); diff != "" {
		t.Errorf("/config's YAML loads otherwise (-in force +loaded):\n%s", diff)
	}
}

// TestLogLevel: GET shows the level, PUT changes it (as a form or JSON),
// a bad level changes nothing; every answer is JSON, and says so.
func TestLogLevel(t *testing.T) {
	f := newFixture(t, loadConfig(t, t.TempDir(), hgemOnly))
	json := func(r exchange) bool { return r.header.Get("Content-Type") == "application/json" }
	if r := f.do(t, "GET", "/loglevel", nil); r.status != 200 || strings.TrimSpace(r.body) != `{"level":"info"}` || !json(r) {
		t.Fatalf("GET /loglevel: %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if r := f.do(t, "HEAD", "/loglevel", nil); r.status != 200 || !json(r) {
		t.Fatalf("HEAD /loglevel: %d %q", r.status, r.header.Get("Content-Type"))
	}
	if r := f.do(t, "PUT", "/loglevel", strings.NewReader("level=debug"), "Content-Type", "application/x-www-form-urlencoded"); r.status != 200 || f.level.Level() != zapcore.DebugLevel || !json(r) {
		t.Fatalf("PUT level=debug: %d %q %s; level %s", r.status, r.header.Get("Content-Type"), r.body, f.level.Level())
	}
	if r := f.do(t, "PUT", "/loglevel", strings.NewReader(`{"level":"warn"}`), "Content-Type", "application/json"); r.status != 200 || f.level.Level() != zapcore.WarnLevel {
		t.Fatalf("PUT {level: warn}: %d %s; level %s", r.status, r.body, f.level.Level())
	}
	if r := f.do(t, "PUT", "/loglevel", strings.NewReader(`{"level":"loud"}`), "Content-Type", "application/json"); r.status != 400 || f.level.Level() != zapcore.WarnLevel || !json(r) {
		t.Fatalf("PUT a bad level: %d %q %s; level %s", r.status, r.header.Get("Content-Type"), r.body, f.level.Level())
	}
	if r := f.do(t, "POST", "/loglevel", strings.NewReader("level=error")); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("POST /loglevel: %d", r.status)
	}
}

// TestWritesFromLoopbackOnly: with admin_listen on every address, anyone who
// reaches the port reads, but only a caller on a loopback address changes
// anything; the others get 403 in the shape of CONTRACT.md §4, on every
// route and method but GET and HEAD, and nothing changes.
func TestWritesFromLoopbackOnly(t *testing.T) {
	f := newFixture(t, loadConfig(t, t.TempDir(), hgemOnly+"admin_pprof: true\n"))
	h := f.s.Handler()
	serve := func(method, target, from string, header ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, target, strings.NewReader(`{"level":"error"}`))
		r.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		r.RemoteAddr = from
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, from := range []string{"10.1.2.3:40000", "[2001:db8::7]:40000", "192.168.0.1:1", "[::ffff:10.0.0.1]:5", "0.0.0.0:1", "not-an-address"} {
		w := serve(http.MethodPut, "/loglevel", from, "X-Forwarded-For", "127.0.0.1", "X-Real-Ip", "127.0.0.1")
		var body map[string]string
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != http.StatusForbidden ||
			w.Header().Get("Tokenproxy-Error") != "host_not_allowed" || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") ||
			body["error"] != "host_not_allowed" || body["upstream"] != "" || !strings.Contains(body["message"], "PUT /loglevel is accepted only from a loopback address") {
			t.Errorf("PUT /loglevel from %s: %d %v %q (%v), want 403 host_not_allowed naming the rule", from, w.Code, w.Header(), w.Body, err)
		}
		if host, _, err := net.SplitHostPort(from); err == nil && !strings.Contains(body["message"], "came from "+host+":") {
			t.Errorf("PUT /loglevel from %s: the message does not name the caller: %q", from, body["message"])
		}
		if f.level.Level() != zapcore.InfoLevel {
			t.Fatalf("PUT /loglevel from %s changed the level to %s", from, f.level.Level())
		}
	}
	// Every route's other methods, and methods no route has.
	var writes [][2]string
	chi.Walk(f.s.router(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if method != http.MethodGet && method != http.MethodHead {
			writes = append(writes, [2]string{method, route})
		}
		return nil
	})
	if len(writes) < 2 {
		t.Fatalf("the routes that are not GET: %v, want at least PUT /loglevel and POST /debug/pprof/symbol", writes)
	}
	writes = append(writes, [2]string{"POST", "/status"}, [2]string{"DELETE", "/loglevel"}, [2]string{"PATCH", "/"}, [2]string{"OPTIONS", "/metrics"})
	for _, mr := range writes {
		if w := serve(mr[0], mr[1], "10.1.2.3:40000"); w.Code != http.StatusForbidden || w.Header().Get("Tokenproxy-Error") != "host_not_allowed" {
			t.Errorf("%s %s from 10.1.2.3: %d, want 403", mr[0], mr[1], w.Code)
		}
	}
	// Reading stays open.
	for _, path := range []string{"/loglevel", "/status", "/readyz/process", "/metrics", "/config", "/debug/pprof/cmdline"} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			if w := serve(method, path, "10.1.2.3:40000"); w.Code != http.StatusOK {
				t.Errorf("%s %s from 10.1.2.3: %d, want 200", method, path, w.Code)
			}
		}
	}
	// From the host, and through kubectl port-forward (the pod's loopback).
	for i, from := range []string{"127.0.0.1:40000", "127.9.8.7:1", "[::1]:40000", "[::ffff:127.0.0.1]:40000"} {
		want := []zapcore.Level{zapcore.DebugLevel, zapcore.WarnLevel, zapcore.ErrorLevel, zapcore.InfoLevel}[i]
		r := httptest.NewRequest(http.MethodPut, "/loglevel", strings.NewReader(`{"level":"`+want.String()+`"}`))
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = from
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK || f.level.Level() != want {
			t.Errorf("PUT /loglevel %s from %s: %d %s; level %s", want, from, w.Code, w.Body, f.level.Level())
		}
	}
}

// TestIndexByAccept: a page for a browser, plain text for the rest.
func TestIndexByAccept(t *testing.T) {
	f := newFixture(t, loadConfig(t, t.TempDir(), hgemOnly))
	plain := f.do(t, "GET", "/", nil)
	html := f.do(t, "GET", "/", nil, "Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	if !strings.HasPrefix(plain.header.Get("Content-Type"), "text/plain") || !strings.HasPrefix(html.header.Get("Content-Type"), "text/html") {
		t.Fatalf("Content-Types %q and %q", plain.header.Get("Content-Type"), html.header.Get("Content-Type"))
	}
	for _, path := range []string{"/status", "/readyz", "/readyz/process", "/healthz", "/metrics", "/config", "/loglevel"} {
		if !strings.Contains(plain.body, path) || !strings.Contains(html.body, `href="`+path+`"`) {
			t.Errorf("the index does not list %s", path)
		}
	}
	if strings.Contains(plain.body, "<") {
		t.Errorf("the plain index holds markup:\n%s", plain.body)
	}
}

// TestMetricsNegotiatesOpenMetrics: OpenMetrics for a scraper that asks
// for it, the text format otherwise.
func TestMetricsNegotiatesOpenMetrics(t *testing.T) {
	f := newFixture(t, loadConfig(t, t.TempDir(), hgemOnly))
	text := f.do(t, "GET", "/metrics", nil)
	om := f.do(t, "GET", "/metrics", nil, "Accept", "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5")
	if ct := text.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("plain scrape: Content-Type %q", ct)
	}
	if ct := om.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text; version=1.0.0") || !strings.HasSuffix(strings.TrimSpace(om.body), "# EOF") {
		t.Errorf("OpenMetrics scrape: Content-Type %q, body ends %q", ct, om.body[max(len(om.body)-20, 0):])
	}
}

// TestHealthzAndOptionalSources: /healthz is liveness, so it stays 200
// while draining, when readiness does not; a Server with only its required
// sources serves what needs nothing more and leaves the rest unrouted; and
// /config before a config is in force says so.
func TestHealthzAndOptionalSources(t *testing.T) {
	f := newFixture(t, loadConfig(t, t.TempDir(), hgemOnly))
	f.s.Draining.Store(true)
	var health map[string]string
	if r := f.do(t, "GET", "/healthz", nil); r.status != 200 || json.Unmarshal([]byte(r.body), &health) != nil || health["status"] != "ok" {
		t.Errorf("/healthz while draining: %d %s", r.status, r.body)
	}
	if r := f.do(t, "GET", "/readyz/process", nil); r.status != http.StatusServiceUnavailable {
		t.Errorf("/readyz/process while draining: %d", r.status)
	}
	f.setConfig(ConfigInfo{})
	if r := f.do(t, "GET", "/config", nil); r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "no config loaded yet") {
		t.Errorf("/config without a config: %d %s", r.status, r.body)
	}

	bare := httptest.NewServer((&Server{Upstreams: twoUpstreams, Draining: &atomic.Bool{}, Gatherer: prometheus.NewRegistry()}).Handler())
	t.Cleanup(bare.Close)
	for path, want := range map[string]int{"/healthz": 200, "/readyz/process": 200, "/status": 200, "/metrics": 200, "/": 200,
		"/config": 404, "/loglevel": 404, "/debug/pprof/": 404} {
		resp, err := bare.Client().Get(bare.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s with the required sources only: %d %.200s, want %d", path, resp.StatusCode, b, want)
		}
		var doc struct {
			Upstreams map[string]any
			Vault     any
			Config    any
		}
		if path == "/status" && (json.Unmarshal(b, &doc) != nil || doc.Upstreams["hgem"] == nil || doc.Vault != nil || doc.Config != nil) {
			t.Errorf("/status without Vault or config: %s", b)
		}
	}
}

// TestConfigShowsExplicitZeros: the config in force is what was written,
// an explicit zero included (STYLE.md 12), and its YAML loads back to it.
func TestConfigShowsExplicitZeros(t *testing.T) {
	dir := t.TempDir()
	cfg := loadConfig(t, dir, hgemOnly+"    replay_max_bytes: 0\n    max_connections: 0\n    reauth_min_interval: 0s\n")
	f := newFixture(t, cfg)
	var doc map[string]any
	if err := json.Unmarshal([]byte(f.do(t, "GET", "/config", nil).body), &doc); err != nil {
		t.Fatal(err)
	}
	up := doc["upstreams"].(map[string]any)["hgem"].(map[string]any)
	if up["replay_max_bytes"] != float64(0) || up["max_connections"] != float64(0) || up["reauth_min_interval"] != "0s" || up["timeout"] != "30s" {
		t.Errorf("/config shows %v, want the zeros written and the defaults of the rest", up)
	}
	back, err := config.Parse([]byte(f.do(t, "GET", "/config", nil, "Accept", "application/yaml").body))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cfg, back, cmpopts.IgnoreUnexported(config.Config{})); diff != "" {
		t.Errorf("/config's YAML loads otherwise (-in force +loaded):\n%s", diff)
	}
}
