package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
)

// validateOut runs `tokenproxy validate` on path and returns its exit code
// and stderr.
func validateOut(t *testing.T, path string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, "validate", "--config", path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, stderr.String()
}

// A reload rejects whatever validate rejects on this machine, with
// validate's own words and line: credentials that cannot be read (a file
// not there, a key missing, an environment variable unset) and a CA
// bundle not there. The running config keeps serving with its warm token.
func TestReloadRejectsWhatValidateRejects(t *testing.T) {
	e := newEnv(t)
	good := e.config("hgem", "inspera")
	path := e.writeConfig("reload.yaml", good)
	p := e.startArgs("run", "--config", path)
	p.ready(t)
	hgem := e.vendors["hgem"]
	token, calls := tokenUsed(t, p, hgem), hgem.sim.TokenCalls()
	partial := e.writeJSON("partial.json", map[string]string{"client_id": canary("hgem", "client_id")})

	for i, c := range []struct {
		name, key string
		edit      func(*config.Upstream)
		say       string // in validate's message
		value     string // on the key's line alone
	}{
		{"a credentials file not there", "credentials",
			func(u *config.Upstream) { u.Credentials = "file:" + filepath.Join(e.dir, "nothere.json") }, "nothere.json", "nothere.json"},
		{"a credentials file without a key the type needs", "credentials",
			func(u *config.Upstream) { u.Credentials = "file:" + partial }, "client_secret", "partial.json"},
		{"an environment variable unset", "credentials",
			func(u *config.Upstream) { u.Credentials = "env:NOPE_HGEM" }, "NOPE_HGEM", "NOPE_HGEM"},
		{"a CA bundle not there", "ca_file",
			func(u *config.Upstream) { u.CAFile = filepath.Join(e.dir, "nothere.pem") }, "nothere.pem", "nothere.pem"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad := e.config("hgem", "inspera")
			edit(bad, "hgem", c.edit)
			text := yamlOf(t, bad)
			e.write("reload.yaml", text)
			code, out := validateOut(t, path)
			want := strings.TrimSpace(out)
			line := fmt.Sprintf("(line %d)", lineWith(t, text, c.value))
			if code != 2 || !strings.HasPrefix(want, "upstreams.hgem."+c.key+": ") || !strings.Contains(want, c.say) ||
				!strings.Contains(want, line) || strings.Contains(want, "\n") {
				t.Fatalf("validate: exit %d, %q: want 2 and one line on upstreams.hgem.%s naming %s, %s", code, want, c.key, c.say, line)
			}

			p.cmd.Process.Signal(syscall.SIGHUP)
			waitFor(t, 20*time.Second, "the rejected reload", func() bool {
				v, _ := scrapeMetrics(t, p).value("tokenproxy_config_reloads_total", "result", "error")
				return v == float64(i+1)
			})
			if v, _ := scrapeMetrics(t, p).value("tokenproxy_config_last_reload_successful"); v != 0 {
				t.Errorf("tokenproxy_config_last_reload_successful %v after a rejected reload, want 0", v)
			}
			if st := configStatus(t, p); st["last_reload_result"] != "error" || st["last_reload_error"] != want {
				t.Errorf("/status config: %v\nwant last_reload_error %q, as validate says", st, want)
			}
			if !p.logged("config reload rejected; the running config stays", map[string]any{"error": want}) {
				t.Errorf("no rejection logged with validate's words %q", want)
			}
			if tok := tokenUsed(t, p, hgem); tok != token || hgem.sim.TokenCalls() != calls {
				t.Errorf("hgem changed token after a rejected reload")
			}
			if st := statusOfAll(t, p)["hgem"]; st["state"] != "ready" {
				t.Errorf("hgem after a rejected reload: %v", st)
			}
		})
	}
	if countLogged(p, "config reloaded") != 0 {
		t.Error(`a rejected reload logged "config reloaded"`)
	}

	// Another file with the same credentials: accepted.
	e.writeJSON("hgem2.json", hgem.creds)
	edit(good, "hgem", func(u *config.Upstream) { u.Credentials = "file:" + filepath.Join(e.dir, "hgem2.json") })
	e.writeConfig("reload.yaml", good)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the accepted reload", func() bool {
		v, _ := scrapeMetrics(t, p).value("tokenproxy_config_last_reload_successful")
		return v == 1
	})
}

// Start-up makes validate's checks too: a CA bundle not there is a bad
// config (exit 2, in validate's words); credentials that cannot be read do
// not stop the process (CONTRACT.md §1) and are logged in validate's words,
// as a reload that keeps that upstream as it is logs them.
func TestStartupChecksAsValidate(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("hgem", "inspera")
	edit(cfg, "inspera", func(u *config.Upstream) { u.CAFile = filepath.Join(e.dir, "nothere.pem") })
	path := e.writeConfig("start.yaml", cfg)
	_, out := validateOut(t, path)
	want := strings.TrimSpace(out)
	p := e.launch("run", "--config", path)
	<-p.exited
	if c := exitCode(p); c != 2 || !p.logged("cannot start", map[string]any{"error": want}) {
		t.Errorf("a CA bundle not there at start: exit %d, want 2 and %q logged:\n%s", c, want, p.out.String())
	}

	cfg = e.config("hgem", "inspera")
	edit(cfg, "inspera", func(u *config.Upstream) { u.Credentials = "file:" + filepath.Join(e.dir, "nothere.json") })
	path = e.writeConfig("start.yaml", cfg)
	_, out = validateOut(t, path)
	want = strings.TrimSpace(out)
	p = e.startArgs("run", "--config", path)
	waitFor(t, 20*time.Second, "hgem's token", func() bool { return call(t, p, "hgem").StatusCode == 200 })
	wantError(t, call(t, p, "inspera"), 503, "credentials_unavailable", "inspera")
	if !strings.Contains(want, "(line ") ||
		!p.logged("credentials unavailable at start; the upstream answers 503 until they can be read", map[string]any{"problem": want}) {
		t.Errorf("credentials not there at start: want %q logged:\n%s", want, p.out.String())
	}

	// A reload that leaves inspera as it is, as a revert to the config in
	// force does, is not rejected for what the running config has too.
	cfg.LogLevel = "warn"
	e.writeConfig("start.yaml", cfg)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the reload", func() bool {
		v, _ := scrapeMetrics(t, p).value("tokenproxy_config_reloads_total", "result", "success")
		return v == 1
	})
	if !p.logged("not rejected: the config in force has this problem too", map[string]any{"problem": want}) {
		t.Errorf("the problem the running config has too was not logged as %q", want)
	}
	if get(t, p.admin+"/config").json(t)["log_level"] != "warn" {
		t.Error("the reload was not applied")
	}
}

// A setting that only a restart applies stays in /config at its running
// value after a reload that changes it, and every reload of that file says
// again that a change is pending; a setting a reload applies shows its new
// value.
func TestReloadShowsRestartOnlySettingsInForce(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("hgem")
	path := e.writeConfig("reload.yaml", cfg)
	p := e.startArgs("run", "--config", path)
	p.ready(t)
	before := get(t, p.admin+"/config").json(t)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unused := l.Addr().String()
	l.Close()
	changed := cfg
	changed.Listen, changed.AdminListen = unused, "127.0.0.1:1"
	changed.ReadHeaderTimeout.Duration = 7 * time.Second
	tr := config.DefaultTracing()
	tr.Endpoint = "http://127.0.0.1:1"
	changed.Tracing = &tr
	changed.LogLevel = "debug"
	e.writeConfig("reload.yaml", changed)
	pending := []any{"listen", "admin_listen", "read_header_timeout", "tracing"}
	for n := 1; n <= 2; n++ {
		p.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, 20*time.Second, fmt.Sprintf("reload %d", n), func() bool {
			v, _ := scrapeMetrics(t, p).value("tokenproxy_config_reloads_total", "result", "success")
			return v == float64(n)
		})
		if got := countLogged(p, "changes to these settings take effect only at restart"); got != n {
			t.Errorf("after reload %d: %d warnings of settings pending a restart, want %d", n, got, n)
		}
	}
	if !p.logged("changes to these settings take effect only at restart", map[string]any{"keys": pending}) {
		t.Errorf("no warning names %v", pending)
	}
	after := get(t, p.admin+"/config").json(t)
	for _, k := range []string{"listen", "admin_listen", "read_header_timeout", "tracing"} {
		if fmt.Sprint(after[k]) != fmt.Sprint(before[k]) {
			t.Errorf("/config %s: %v after a reload, want the running %v", k, after[k], before[k])
		}
	}
	if after["log_level"] != "debug" {
		t.Errorf("/config log_level %v after a reload to debug", after["log_level"])
	}
	if r := call(t, p, "hgem"); r.StatusCode != 200 {
		t.Errorf("hgem on the running listener: %d", r.StatusCode)
	}
	if c, err := net.Dial("tcp", unused); err == nil {
		c.Close()
		t.Errorf("%s, the pending listen, accepts connections", unused)
	}
}

// An upstream rebuilt by a reload (its credentials changed) keeps every
// series and count of every family with an upstream label: none goes
// backwards.
func TestReloadKeepsCountsOfARebuiltUpstream(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("hgem", "inspera")
	// Not there at start: counted as failed reads, and the upstream waits.
	missing := filepath.Join(e.dir, "later.json")
	edit(cfg, "hgem", func(u *config.Upstream) { u.Credentials = "file:" + missing })
	path := e.writeConfig("reload.yaml", cfg)
	p := e.startArgs("run", "--config", path)
	wantError(t, call(t, p, "hgem"), 503, "credentials_unavailable", "hgem")

	var last families
	reload := func(n int, ref string) {
		t.Helper()
		edit(cfg, "hgem", func(u *config.Upstream) { u.Credentials = ref })
		e.writeConfig("reload.yaml", cfg)
		p.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, 20*time.Second, fmt.Sprintf("reload %d", n), func() bool {
			v, _ := scrapeMetrics(t, p).value("tokenproxy_config_reloads_total", "result", "success")
			return v == float64(n)
		})
		waitFor(t, 20*time.Second, "hgem after the reload", func() bool { return call(t, p, "hgem").StatusCode == 200 })
		m := scrapeMetrics(t, p)
		for _, s := range last.upstreamSeries("hgem") {
			if v, _ := m.value(s.family, s.kv...); v < s.value {
				t.Errorf("reload %d: %s %v: %v, was %v", n, s.family, s.kv, v, s.value)
			}
		}
		last = m
	}
	last = scrapeMetrics(t, p)
	if v, _ := last.value("tokenproxy_secret_reads_total", "upstream", "hgem", "source", "file", "result", "error"); v < 1 {
		t.Fatalf("hgem's failed reads at start: %v", v)
	}
	if len(last.upstreamSeries("hgem")) < 10 {
		t.Fatalf("only %d series of hgem", len(last.upstreamSeries("hgem")))
	}
	reload(1, "file:"+filepath.Join(e.dir, "hgem.json"))
	e.writeJSON("hgem2.json", e.vendors["hgem"].creds)
	reload(2, "file:"+filepath.Join(e.dir, "hgem2.json"))
	if v, _ := last.value("tokenproxy_secret_reads_total", "upstream", "hgem", "source", "file", "result", "error"); v < 1 {
		t.Errorf("hgem's failed reads after two reloads: %v", v)
	}
}

type sample struct {
	family string
	kv     []string
	value  float64
}

// upstreamSeries is every counter and histogram sample labelled with
// upstream (gauges go up and down by nature).
func (f families) upstreamSeries(upstream string) []sample {
	var out []sample
	for name, mf := range f {
		for _, m := range mf.GetMetric() {
			l := labelsOf(m)
			if l["upstream"] != upstream || m.Gauge != nil {
				continue
			}
			var kv []string
			for k, v := range l {
				kv = append(kv, k, v)
			}
			v, _ := valueOf(m)
			out = append(out, sample{name, kv, v})
		}
	}
	return out
}

// Only a problem of what the config points to on this machine (a file an
// unchanged upstream reads) may pass a reload as one the running config has
// too; a problem of the file's own text never does. Here removing the
// sharing section leaves `shared: false` on an upstream that is otherwise
// unchanged: validate refuses it, and so must the reload.
func TestReloadNeverExcusesTheFilesOwnProblems(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("hgem")
	// Vault is needed by sharing's validation, not by hgem's file:
	// credentials: an address where nothing listens does.
	v, sh := config.DefaultVault(), config.DefaultSharing()
	v.Address = "http://127.0.0.1:1"
	v.Auth = config.VaultAuth{Method: "token", TokenFile: e.write("vault-token", []byte("not-a-token"))}
	sh.Vault.Path = "secret/tokenproxy/shared"
	cfg.Secrets.Vault, cfg.Sharing = &v, &sh
	edit(cfg, "hgem", func(u *config.Upstream) { no := false; u.Shared = &no })
	path := e.writeConfig("share.yaml", cfg)
	p := e.startArgs("run", "--config", path)
	waitFor(t, 20*time.Second, "hgem's token", func() bool { return call(t, p, "hgem").StatusCode == 200 })
	hgem := e.vendors["hgem"]
	token, calls := tokenUsed(t, p, hgem), hgem.sim.TokenCalls()

	cfg.Sharing = nil
	e.writeConfig("share.yaml", cfg)
	code, out := validateOut(t, path)
	want := strings.TrimSpace(out)
	if code != 2 || !strings.HasPrefix(want, "upstreams.hgem.shared: ") {
		t.Fatalf("validate: exit %d, %q: want 2 on upstreams.hgem.shared", code, want)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the rejected reload", func() bool {
		v, _ := scrapeMetrics(t, p).value("tokenproxy_config_reloads_total", "result", "error")
		return v == 1
	})
	if st := configStatus(t, p); st["last_reload_error"] != want {
		t.Errorf("/status config: %v\nwant last_reload_error %q, as validate says", st, want)
	}
	if countLogged(p, "not rejected: the config in force has this problem too") != 0 {
		t.Error("the file's own problem was excused as one the running config has")
	}
	if tok := tokenUsed(t, p, hgem); tok != token || hgem.sim.TokenCalls() != calls {
		t.Errorf("hgem changed token after a rejected reload")
	}
}

// A reload that changes only how often file: credentials are re-read keeps
// every upstream's cache and warm token (CONTRACT.md §1): a new cache would
// mint a token that a one-live-token vendor refuses while the first lives.
// It also says again what validate warns of.
func TestReloadOfPollIntervalKeepsTokens(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("hgem", "inspera")
	path := e.writeConfig("poll.yaml", cfg)
	p := e.startArgs("run", "--config", path)
	p.ready(t)
	hgem := e.vendors["hgem"]
	token, calls := tokenUsed(t, p, hgem), hgem.sim.TokenCalls()

	cfg.Secrets.PollInterval = config.Duration{Duration: 7 * time.Second}
	// A second upstream on hgem's base_url: validate and run warn of it,
	// and so must a reload.
	cfg.Upstreams["hgem-dup"] = cfg.Upstreams["hgem"]
	e.writeConfig("poll.yaml", cfg)
	_, out := validateOut(t, path)
	if !strings.Contains(out, "hgem and hgem-dup") {
		t.Fatalf("validate printed %q, want the shared-host warning", out)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the reload", func() bool { return countLogged(p, "config reloaded") == 1 })
	waitFor(t, 10*time.Second, "the warning after the reload", func() bool {
		for _, l := range p.logLines() {
			if msg, _ := l["msg"].(string); l["level"] == "warn" && strings.Contains(msg, "hgem and hgem-dup") {
				return true
			}
		}
		return false
	})
	if tok := tokenUsed(t, p, hgem); tok != token {
		t.Errorf("hgem changed token on a reload of poll_interval alone")
	}
	// hgem-dup is new and mints its own (in the background: wait until
	// every upstream holds a token); hgem made no new token request.
	p.ready(t)
	if got := hgem.sim.TokenCalls(); got != calls+1 {
		t.Errorf("hgem's token endpoint saw %d requests after the reload, want %d (hgem-dup's first token only)", got, calls+1)
	}
}
