package e2e

import (
	"bytes"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// The readiness a deployment chooses between (CONTRACT.md §5 and its
// extension): /readyz needs every upstream, /readyz?upstream=<name> the
// named ones, /readyz/process only a serving, non-draining process. With one
// vendor's token endpoint down, a pod probed on /readyz/process stays in its
// Service and keeps serving the other vendors.
func TestReadinessWithOneVendorDown(t *testing.T) {
	e := newEnv(t)
	inspera := e.vendors["inspera"]
	inspera.sim.SetTokenFault(&vendorsim.Fault{Hang: true})
	cfg := e.config("hgem", "inspera")
	cfg.DrainDelay.Duration = 30 * time.Second
	edit(cfg, "inspera", func(u *config.Upstream) { u.TokenTimeout.Duration = time.Second })
	p := e.start(cfg)

	waitFor(t, 20*time.Second, "hgem ready while inspera's token endpoint hangs", func() bool {
		return get(t, p.admin+"/readyz?upstream=hgem").StatusCode == http.StatusOK
	})
	for _, c := range []struct {
		path   string
		status int
	}{
		{"/readyz", 503},
		{"/readyz?upstream=inspera", 503},
		{"/readyz?upstream=hgem&upstream=inspera", 503},
		{"/readyz?upstream=hgem", 200},
		{"/readyz/process", 200},
		{"/readyz?upstream=hgme", 404},
	} {
		if r := get(t, p.admin+c.path); r.StatusCode != c.status {
			t.Errorf("%s: %d %s, want %d", c.path, r.StatusCode, r.body, c.status)
		}
	}
	r := get(t, p.admin+"/readyz?upstream=hgem")
	if ready, ups := readyDoc(t, r); !ready || len(ups) != 1 || ups["hgem"] == nil {
		t.Errorf("/readyz?upstream=hgem: %s, want hgem alone", r.body)
	}
	if r := call(t, p, "hgem"); r.StatusCode != 200 {
		t.Errorf("hgem while inspera is down: %d %s", r.StatusCode, r.body)
	}
	wantError(t, call(t, p, "inspera"), 503, "credentials_unavailable", "inspera")

	// Draining takes the process readiness down at once, while the data
	// plane still serves for drain_delay.
	p.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 10*time.Second, "/readyz/process 503 after SIGTERM", func() bool {
		return get(t, p.admin+"/readyz/process").StatusCode == http.StatusServiceUnavailable
	})
	if r := get(t, p.admin+"/readyz/process"); !bytes.Contains(r.body, []byte(`"draining": true`)) {
		t.Errorf("/readyz/process while draining: %s", r.body)
	}
	if r := get(t, p.admin+"/readyz?upstream=hgem"); r.StatusCode != 503 {
		t.Errorf("/readyz?upstream=hgem while draining: %d", r.StatusCode)
	}
	if r := call(t, p, "hgem"); r.StatusCode != 200 {
		t.Errorf("hgem during drain_delay: %d", r.StatusCode)
	}
	p.cmd.Process.Signal(syscall.SIGTERM) // a second signal cuts drain_delay short
	p.waitExit(t, 20*time.Second, "no exit after the second SIGTERM")
	if c := exitCode(p); c != 0 {
		t.Errorf("exit code %d, want 0", c)
	}
}
