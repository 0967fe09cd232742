package e2e

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
)

// What an operator meets at the admin plane and in messages: the level
// endpoint says it answers JSON, /status names the config by its absolute
// path, and a token endpoint that redirects is told from one that refuses.

func TestLogLevelAnswersJSON(t *testing.T) {
	e := newEnv(t)
	p := e.start(e.config("hgem"))
	for _, r := range []*response{
		get(t, p.admin+"/loglevel"),
		do(t, http.MethodPut, p.admin+"/loglevel", strings.NewReader(`{"level":"warn"}`), "Content-Type", "application/json"),
		do(t, http.MethodPut, p.admin+"/loglevel", strings.NewReader(`{"level":"loud"}`), "Content-Type", "application/json"),
	} {
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s /loglevel: %d with Content-Type %q, want application/json: %s", r.Request.Method, r.StatusCode, ct, r.body)
		}
	}
}

// Started with a relative --config, tokenproxy shows the file's absolute
// path in /status, and reads that file again on SIGHUP.
func TestStatusConfigPathIsAbsolute(t *testing.T) {
	e := newEnv(t)
	abs := e.writeConfig("g1.yaml", e.config("hgem"))
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, abs)
	if err != nil || filepath.IsAbs(rel) {
		t.Fatalf("no relative path to %s from %s: %v", abs, wd, err)
	}
	p := e.startArgs("run", "--config", rel)
	if got := configStatus(t, p)["path"]; got != abs {
		t.Errorf("/status config.path %v, want %s", got, abs)
	}
}

// A token endpoint that answers with a redirect (a token_url on http that
// should be https, a missing slash) is reported as a redirect to a host,
// never as refused credentials, and retried on the short backoff of an
// unusable answer; the redirect is not followed, and its path and query,
// which may hold what was sent, are not shown.
func TestTokenEndpointRedirectIsNotARefusal(t *testing.T) {
	e := newEnv(t)
	var elsewhere, asked atomic.Int32
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(other.Close)
	front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Redirect(w, r, other.URL+"/oauth/token/?next=hidden-path-part", http.StatusMovedPermanently)
	}))
	front.Config.ErrorLog = discardLog
	t.Cleanup(front.Close)
	hgem := e.vendors["hgem"]
	cfg := e.config("hgem")
	cfg.LogLevel = "debug"
	edit(cfg, "hgem", func(u *config.Upstream) { u.TokenURL = front.URL + "/connect/token" })
	p := e.start(cfg)

	want := "a redirect to " + other.URL + ": token_url must be the token endpoint itself"
	waitFor(t, 20*time.Second, "the redirect in /status", func() bool {
		return strings.Contains(statusOfAll(t, p)["hgem"]["last_error"].(string), want)
	})
	st := statusOfAll(t, p)["hgem"]
	if le := st["last_error"].(string); strings.Contains(le, "refused") || strings.Contains(le, "hidden-path-part") {
		t.Errorf("/status last_error %q: a redirect reported as a refusal, or its path shown", le)
	}
	m := wantError(t, call(t, p, "hgem"), http.StatusBadGateway, "token_endpoint_error", "hgem")
	if msg := m["message"].(string); !strings.Contains(msg, want) || strings.Contains(msg, "hidden-path-part") {
		t.Errorf("502 message %q, want it to hold %q and no path", msg, want)
	}
	if !p.logged("token fetch failed", map[string]any{"reason": "malformed"}) || p.logged("token fetch failed", map[string]any{"reason": "refused"}) {
		t.Error("the redirect was not logged as an unusable answer (malformed), or was logged as refused")
	}
	// A refusal waits 15 s or more before the next try; an unusable
	// answer a second or two.
	waitFor(t, 10*time.Second, "a second token request on the short backoff", func() bool { return asked.Load() >= 2 })
	if n := elsewhere.Load(); n != 0 || hgem.sim.TokenCalls() != 0 {
		t.Errorf("the redirect was followed: %d requests elsewhere, %d at the vendor", n, hgem.sim.TokenCalls())
	}
}
