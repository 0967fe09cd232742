package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// apiPath is one API call per vendor that the simulators answer with 200.
var apiPath = map[string]struct{ method, path, body string }{
	"prominsight": {"POST", "/api/v1/tests/sessions", `{"test_code":"T1","limit":10}`},
	"inspera":     {"GET", "/api/v1/test/12312312", ""},
	"hgem":        {"GET", "/api/visits", ""},
	"prodoscore":  {"GET", "/api/v1/employees", ""},
}

func call(t *testing.T, p *proc, kind string, header ...string) *response {
	t.Helper()
	a := apiPath[kind]
	var body io.Reader
	if a.body != "" {
		body = strings.NewReader(a.body)
		header = append(header, "Content-Type", "application/json")
	}
	return do(t, a.method, p.data+"/"+kind+a.path, body, header...)
}

func lastAPI(t *testing.T, v *vendor) vendorsim.Request {
	t.Helper()
	reqs := v.sim.APIRequests()
	if len(reqs) == 0 {
		t.Fatalf("%s saw no API request", v.kind)
	}
	return reqs[len(reqs)-1]
}

func TestInjectsEachVendorsHeaders(t *testing.T) {
	e := newEnv(t)
	p := e.start(e.allUpstreams())
	p.ready(t)
	for kind, v := range e.vendors {
		t.Run(kind, func(t *testing.T) {
			// Whatever credentials the caller sends are replaced, never appended.
			r := call(t, p, kind,
				"Authorization", "Bearer caller-token",
				"Proxy-Authorization", "Basic Y2FsbGVyOnB3",
				"hgem-api-key", "caller-key",
				"code", "caller-code",
				"Connection", "Authorization, hgem-api-key",
				"X-Forwarded-For", "203.0.113.7")
			if r.StatusCode != 200 {
				t.Fatalf("status %d: %s", r.StatusCode, r.body)
			}
			got := lastAPI(t, v)
			auth := got.Header.Values("Authorization")
			if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") || !contains(v.sim.Tokens(), strings.TrimPrefix(auth[0], "Bearer ")) {
				t.Fatalf("Authorization at the vendor: %q", auth)
			}
			wantKey := []string(nil)
			if kind == "hgem" {
				wantKey = []string{v.creds["api_key"]}
			}
			if keys := got.Header.Values("Hgem-Api-Key"); fmt.Sprint(keys) != fmt.Sprint(wantKey) {
				t.Fatalf("hgem-api-key at the vendor: %d values, want %d", len(keys), len(wantKey))
			}
			for _, h := range []string{"Proxy-Authorization", "X-Forwarded-For"} {
				if got.Header.Get(h) != "" {
					t.Fatalf("%s reached the vendor", h)
				}
			}
			if kind == "inspera" && got.Header.Get("Code") != "" {
				t.Fatal("the caller's code header reached Inspera")
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestPassesPathQueryAndResponseThrough(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	v.sim.HandleAPI("GET /v2/echo/{rest...}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Vendor", "kept")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprintf(w, "%s?%s", r.URL.EscapedPath(), r.URL.RawQuery)
	}))
	// base_url has a path: it stays as a prefix.
	cfg := e.allUpstreams()
	edit(cfg, "hgem", func(u *config.Upstream) { u.BaseURL, u.TokenURL = v.url()+"/v2", v.url()+"/connect/token" })
	p := e.start(cfg)
	r := get(t, p.data+"/hgem/echo/a%20b/c;d?z=1&a=%2F&a=2&empty=&flag")
	if r.StatusCode != http.StatusTeapot || r.Header.Get("X-Vendor") != "kept" {
		t.Fatalf("status %d header %q", r.StatusCode, r.Header.Get("X-Vendor"))
	}
	if want := "/v2/echo/a%20b/c;d?z=1&a=%2F&a=2&empty=&flag"; string(r.body) != want {
		t.Fatalf("the vendor saw %q, want %q", r.body, want)
	}
}

func TestColdStartFetchesOncePerUpstream(t *testing.T) {
	e := newEnv(t)
	for _, v := range e.vendors {
		// The first token request is slow, so that every caller arrives while it is in flight.
		v.sim.SetTokenFault(&vendorsim.Fault{Delay: 2 * time.Second, Count: 1})
	}
	p := e.start(e.allUpstreams())
	var wg sync.WaitGroup
	statuses := make(chan string, 2000)
	for kind := range e.vendors {
		for range 500 {
			wg.Go(func() {
				a := apiPath[kind]
				req, _ := http.NewRequest(a.method, p.data+"/"+kind+a.path, strings.NewReader(a.body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				statuses <- fmt.Sprintf("%d %s", resp.StatusCode, b)
			})
		}
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if !strings.HasPrefix(s, "200 ") {
			t.Fatalf("a caller got %s", s)
		}
	}
	for kind, v := range e.vendors {
		if n := v.sim.TokenCalls(); n != 1 {
			t.Errorf("%s: %d token requests for 500 cold callers, want 1", kind, n)
		}
	}
}

func TestRefreshesBeforeExpiry(t *testing.T) {
	e := newEnv(t)
	for _, v := range e.vendors {
		v.sim.SetTokenLifetime(3 * time.Second)
	}
	p := e.start(e.allUpstreams())
	p.ready(t)
	// Requests over about three lifetimes: every one finds a valid token.
	deadline := time.Now().Add(9 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		for kind := range e.vendors {
			if r := call(t, p, kind); r.StatusCode != 200 {
				t.Fatalf("%s: %d after %d requests: %s", kind, r.StatusCode, n, r.body)
			}
			n++
		}
	}
	for kind, v := range e.vendors {
		// 9s of 3s tokens refreshed at 67.5–75% of their life: 4 to 6 fetches, never one per request.
		if c := v.sim.TokenCalls(); c < 3 || c > 7 {
			t.Errorf("%s: %d token requests over 9s of 3s tokens (%d requests in all)", kind, c, n)
		}
		for _, r := range v.sim.APIRequests() {
			if r.Status != 200 {
				t.Fatalf("%s answered %d: an expired token was injected", kind, r.Status)
			}
		}
	}
	if kind := "prodoscore"; true {
		grants := map[string]int{}
		for _, r := range e.vendors[kind].sim.TokenRequests() {
			grants[r.Grant]++
		}
		if grants["password"] != 1 || grants["refresh_token"] < 2 {
			t.Errorf("prodoscore grants %v: want one password grant, then refresh tokens", grants)
		}
	}
}

func TestReplaysOnceAfter401(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	v.sim.HandleAPI("POST /api/upload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	}))
	// The subtests revoke tokens one after another: reauth_min_interval is
	// kept short so that each 401 may re-mint (TestReauthBounded covers it).
	p := e.start(configOf(config.Upstreams{"hgem": e.upstream("hgem", func(u *config.Upstream) {
		u.ReauthMinInterval.Duration = time.Millisecond
	})}))
	p.ready(t)

	t.Run("revoked token", func(t *testing.T) {
		v.sim.RevokeAll()
		before, calls := v.sim.TokenCalls(), len(v.sim.APIRequests())
		body := bytes.Repeat([]byte("x"), 10_000)
		r := do(t, "POST", p.data+"/hgem/api/upload", bytes.NewReader(body))
		if r.StatusCode != 200 || string(r.body) != "10000" {
			t.Fatalf("got %d %s, want the replay's 200 with the whole body", r.StatusCode, r.body)
		}
		reqs := v.sim.APIRequests()[calls:]
		if len(reqs) != 2 || reqs[0].Status != 401 || reqs[1].Status != 200 || !bytes.Equal(reqs[1].Body, body) {
			t.Fatalf("the vendor saw %d requests; want a 401 then a replay with the same body", len(reqs))
		}
		if v.sim.TokenCalls() != before+1 {
			t.Fatalf("%d new token requests, want 1", v.sim.TokenCalls()-before)
		}
	})
	t.Run("second 401 goes back", func(t *testing.T) {
		v.sim.SetAPIFault(&vendorsim.Fault{Status: 401, Count: 2})
		calls := len(v.sim.APIRequests())
		r := get(t, p.data+"/hgem/api/visits")
		if r.StatusCode != 401 || r.Header.Get("Tokenproxy-Error") != "" {
			t.Fatalf("got %d, want the vendor's own 401", r.StatusCode)
		}
		if n := len(v.sim.APIRequests()) - calls; n != 2 {
			t.Fatalf("%d attempts, want 2 (one replay only)", n)
		}
	})
	t.Run("no new token to replay with", func(t *testing.T) {
		// The token was revoked and the token endpoint now fails: the caller
		// learns why, rather than getting a 401 about a token it never saw.
		v.sim.RevokeAll()
		v.sim.SetTokenFault(&vendorsim.Fault{Status: 500, Count: 1})
		wantError(t, get(t, p.data+"/hgem/api/visits"), 502, "token_endpoint_error", "hgem")
		waitFor(t, 10*time.Second, "recovery after the backoff", func() bool {
			return get(t, p.data+"/hgem/api/visits").StatusCode == 200
		})
	})
	t.Run("large body is not replayed", func(t *testing.T) {
		v.sim.RevokeAll()
		calls := len(v.sim.APIRequests())
		r := do(t, "POST", p.data+"/hgem/api/upload", bytes.NewReader(bytes.Repeat([]byte("y"), 2<<20)))
		if r.StatusCode != 401 {
			t.Fatalf("got %d, want the 401 passed through for a 2 MiB body", r.StatusCode)
		}
		if n := len(v.sim.APIRequests()) - calls; n != 1 {
			t.Fatalf("%d attempts for a body over the replay limit, want 1", n)
		}
		// The refused token was dropped all the same (found by a new user:
		// uploads kept failing with a dead token): the next request has a
		// new one at once, without a 401 of its own.
		calls = len(v.sim.APIRequests())
		if r := get(t, p.data+"/hgem/api/visits"); r.StatusCode != 200 {
			t.Fatalf("next request: %d", r.StatusCode)
		}
		if n := len(v.sim.APIRequests()) - calls; n != 1 {
			t.Fatalf("the next request took %d attempts, want 1: the refused token was kept", n)
		}
	})
}

func TestErrorContract(t *testing.T) {
	e := newEnv(t)
	// prominsight: wrong secret; inspera: a file missing api_key; prodoscore: a
	// token endpoint that is down; hgem: an API host that is down.
	e.writeJSON("prominsight.json", map[string]string{"client_id": e.vendors["prominsight"].creds["client_id"], "client_secret": "CANARY-wrong-secret-0001"})
	e.writeJSON("inspera.json", map[string]string{"client_id": e.vendors["inspera"].creds["client_id"]})
	cfg := e.allUpstreams()
	down := closedURL(t)
	edit(cfg, "prodoscore", func(u *config.Upstream) { u.TokenURL = down + e.vendors["prodoscore"].sim.TokenPath() })
	cfg.Upstreams["hgemdown"] = e.upstream("hgem", func(u *config.Upstream) {
		u.BaseURL, u.TokenURL = down, e.vendors["hgem"].url()+"/connect/token"
	})
	cfg.Upstreams["slow"] = e.upstream("hgem", func(u *config.Upstream) { u.Timeout.Duration = 300 * time.Millisecond })
	hang := make(chan struct{})
	defer close(hang)
	e.vendors["hgem"].sim.HandleAPI("GET /api/slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	// An upstream's own Tokenproxy-Error would pass for tokenproxy's answer.
	e.vendors["hgem"].sim.HandleAPI("GET /api/impostor", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Tokenproxy-Error", "credentials_unavailable")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	p := e.start(cfg)
	waitFor(t, 20*time.Second, "the hgem token", func() bool { return get(t, p.data+"/hgem/api/visits").StatusCode == 200 })

	m := wantError(t, call(t, p, "prominsight"), 502, "token_endpoint_error", "prominsight")
	if msg := m["message"].(string); !strings.Contains(msg, "Invalid credentials") {
		t.Errorf("message %q does not name the vendor's error", msg)
	}
	r := call(t, p, "inspera")
	m = wantError(t, r, 503, "credentials_unavailable", "inspera")
	if r.Header.Get("Retry-After") == "" || !strings.Contains(m["message"].(string), "api_key") {
		t.Errorf("Retry-After %q, message %q: want both, naming the missing key", r.Header.Get("Retry-After"), m["message"])
	}
	r = call(t, p, "prodoscore")
	wantError(t, r, 503, "credentials_unavailable", "prodoscore")
	if r.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After on 503")
	}
	wantError(t, get(t, p.data+"/hgemdown/api/visits"), 502, "upstream_unreachable", "hgemdown")
	start := time.Now()
	wantError(t, get(t, p.data+"/slow/api/slow"), 504, "upstream_timeout", "slow")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("504 after %s with a 300ms timeout", d)
	}
	wantError(t, get(t, p.data+"/nosuch/x"), 404, "unknown_upstream", "")
	wantError(t, get(t, p.data+"/hgem/a/../../etc"), 400, "bad_request", "hgem")
	if r := get(t, p.data+"/hgem/api/impostor"); r.StatusCode != 503 || r.Header.Get("Tokenproxy-Error") != "" {
		t.Errorf("the vendor's own 503: %d with Tokenproxy-Error %q, want 503 without it (only tokenproxy's answers carry it)", r.StatusCode, r.Header.Get("Tokenproxy-Error"))
	}

	// The readiness endpoint names what is wrong, and the healthy upstream serves.
	rz := get(t, p.admin+"/readyz")
	if rz.StatusCode != 503 {
		t.Fatalf("/readyz %d with broken upstreams", rz.StatusCode)
	}
	ups := rz.json(t)["upstreams"].(map[string]any)
	if ins := ups["inspera"].(map[string]any); ins["ready"] != false || !strings.Contains(ins["reason"].(string), "api_key") {
		t.Errorf("/readyz inspera: %v", ins)
	}
	if h := ups["hgem"].(map[string]any); h["ready"] != true {
		t.Errorf("/readyz hgem: %v", h)
	}
	if !p.logged("credentials unavailable; keeping the last good ones if any", map[string]any{"upstream": "inspera"}) {
		t.Error("no log line names the inspera credentials problem")
	}
}

// closedURL is an https URL on a loopback port nothing listens on.
func closedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	return "https://" + l.Addr().String()
}

func TestValidate(t *testing.T) {
	e := newEnv(t)
	run := func(cfg string) (int, string) {
		path := e.write("v.yaml", []byte(cfg))
		out, err := exec.Command(binary, "validate", "--config", path).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	if code, out := run(string(yamlOf(t, e.allUpstreams()))); code != 0 {
		t.Fatalf("valid config: exit %d: %s", code, out)
	}
	e.writeJSON("partial.json", map[string]string{"client_id": "x"})
	code, out := run(`listen: 127.0.0.1:8080
log_level: loud
upstreams:
  hgem:
    type: hgem
    base_url: http://results-api.hgem.com
    scope: visits/standard.read
    credentials: file:` + e.dir + `/partial.json
    scop: typo
    timeout: soon
  pd:
    type: prodoscore
    base_url: https://api.ag.prodoscore.com
    credentials: hunter2
`)
	// Every problem at once, one per line, each starting with its key path.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, want := range []string{"log_level:", "upstreams.hgem.scop: unknown key", "upstreams.hgem.timeout:",
		"upstreams.hgem.base_url:", "upstreams.hgem.scope:", "upstreams.hgem.credentials: file:" + e.dir + "/partial.json: missing key api_key, client_secret",
		"upstreams.pd.token_url:", "upstreams.pd.credentials:"} {
		found := false
		for _, l := range lines {
			found = found || strings.HasPrefix(l, want)
		}
		if !found {
			t.Errorf("no line starts with %q:\n%s", want, out)
		}
	}
	if code != 2 || strings.Contains(out, "hunter2") {
		t.Errorf("exit %d; output:\n%s", code, out)
	}
}
