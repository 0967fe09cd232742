package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/testlog"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// The command line (CONTRACT.md §1) as a user meets it: help, usage
// mistakes, validate and its --offline, relative paths, check, version.

// result is a finished run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

// cli runs the binary to its end in dir (the test's directory when ""),
// within a minute, and keeps its output for the canary search.
func (e *env) cli(dir string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := &proc{t: e.t, out: &testlog.Buffer{}, exited: make(chan struct{}), raceChecked: true}
	close(p.exited)
	e.procs = append(e.procs, p)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = orDefault(dir, e.dir)
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&stdout, p.out), io.MultiWriter(&stderr, p.out)
	cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1", "TOKENPROXY_CONFIG=")
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		e.t.Fatalf("tokenproxy %v: %v", args, err)
	}
	if ctx.Err() != nil {
		e.t.Fatalf("tokenproxy %v did not end within a minute", args)
	}
	if strings.Contains(p.out.String(), "WARNING: DATA RACE") {
		e.t.Errorf("data race in tokenproxy %v:\n%s", args, p.out.String())
	}
	return r
}

func orDefault(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestCLIHelpAfterEveryCommand(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"run", "validate", "check", "dev", "version", "help"} {
		for _, flag := range []string{"--help", "-h"} {
			r := e.cli("", name, flag)
			if r.code != 0 || !strings.HasPrefix(r.stdout, "usage: tokenproxy "+name) || r.stderr != "" {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want 0 and its usage on stdout", name, flag, r.code, r.stdout, r.stderr)
			}
		}
	}
	r := e.cli("", "check", "--config", "nosuch.yaml", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "--config FILE") || !strings.Contains(r.stdout, "token_timeout") {
		t.Errorf("check --config F --help: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestCLIUsageMistakes(t *testing.T) {
	e := newEnv(t)
	path := e.writeConfig("ok.yaml", e.allUpstreams())
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"validate", "--config", path, "extra"}, `tokenproxy validate: unexpected argument "extra": validate takes none` + "\n"},
		{[]string{"validate", path}, fmt.Sprintf(`tokenproxy validate: unexpected argument %q: validate takes none; the config file goes after --config (tokenproxy validate --config %s)`+"\n", path, path)},
		{[]string{"check", "--config", path, "now"}, `tokenproxy check: unexpected argument "now": check takes none` + "\n"},
		{[]string{"valdate", "--config", path}, `tokenproxy: unknown command "valdate"; did you mean "validate"?`},
		{[]string{"chekc"}, `tokenproxy: unknown command "chekc"; did you mean "check"?`},
		{[]string{"validate", "--conifg", path}, `tokenproxy validate: unknown flag "--conifg"; did you mean "--config"?`},
	}
	for _, c := range cases {
		r := e.cli("", c.args...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, c.want) || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and stderr starting %q", c.args, r.code, r.stdout, r.stderr, c.want)
		}
	}
}

// Each config mistake is reported with the file, the key path and the
// lines where it is; validate exits 2.
func TestCLIValidateNamesMistakes(t *testing.T) {
	e := newEnv(t)
	// Their subject is the text: the configs are text.
	hgem := "upstreams:\n" + e.upstreamYAML("hgem")
	cases := []struct {
		name, text string
		want       string // all of stderr; F is the file
	}{
		{"key twice", hgem + "upstreams:\n" + e.upstreamYAML("inspera"),
			"upstreams: written twice, on lines 1 and 7; keep one\n"},
		{"indentation", "upstreams:\n  hgem:\n    type: hgem\n   base_url: https://x\n",
			"F:4: not valid YAML: did not find expected key\n"},
		{"tab", "upstreams:\n  hgem:\n\ttype: hgem\n",
			"F:3: not valid YAML: a tab in the indentation; YAML indents with spaces only\n"},
		{"listen is admin_listen", "listen: localhost:9901\n" + hgem,
			"listen: \"localhost:9901\" and admin_listen \"127.0.0.1:9901\" are the same address; the data and admin planes need one each (line 1)\n"},
		{"unknown key", "listne: 127.0.0.1:8080\n" + hgem,
			"listne: unknown key (line 1); did you mean \"listen\"?\n"},
	}
	for _, c := range cases {
		path := e.write("mistake.yaml", []byte(c.text))
		r := e.cli("", "validate", "--config", path)
		if got := strings.ReplaceAll(r.stderr, path, "F"); r.code != 2 || got != c.want {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant exit 2 and:\n%s", c.name, r.code, got, c.want)
		}
	}
}

// A config beside its credentials, with relative file: paths, is used
// as it is from any working directory; validate --offline reads none of
// the files it points to.
func TestCLIRelativePathsAndOffline(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.dir, "deploy")
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(e.dir, "hgem.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets", "hgem.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Upstreams = config.Upstreams{"hgem": e.upstream("hgem", func(u *config.Upstream) { u.Credentials = "file:secrets/hgem.json" })}
	text := yamlOf(t, cfg)
	path := filepath.Join(dir, "tokenproxy.yaml")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()

	if r := e.cli(elsewhere, "validate", "--config", path); r.code != 0 || r.stdout != path+": valid (1 upstreams)\n" {
		t.Errorf("validate from elsewhere: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r := e.cli(elsewhere, "check", "--config", path)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "hgem: ok, token valid until ") {
		t.Errorf("check from elsewhere: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// Without its secrets (as in CI), validate fails and --offline passes.
	if err := os.Remove(filepath.Join(dir, "secrets", "hgem.json")); err != nil {
		t.Fatal(err)
	}
	r = e.cli(elsewhere, "validate", "--config", path)
	want := fmt.Sprintf("upstreams.hgem.credentials: file:%s: open %[1]s: no such file or directory (line %d)\n",
		filepath.Join(dir, "secrets", "hgem.json"), lineWith(t, text, "credentials: file:secrets/hgem.json"))
	if r.code != 2 || r.stderr != want {
		t.Errorf("validate without secrets: exit %d, stderr %q; want 2 and %q", r.code, r.stderr, want)
	}
	r = e.cli(elsewhere, "validate", "--offline", "--config", path)
	if r.code != 0 || !strings.HasPrefix(r.stdout, path+": valid (1 upstreams; ") || r.stderr != "" {
		t.Errorf("validate --offline: exit %d, stdout %q, stderr %q; want 0", r.code, r.stdout, r.stderr)
	}
}

var checkLine = regexp.MustCompile(`^([a-z0-9-]+): ok, token valid until (\S+)$`)

// holdPorts listens on n loopback ports and returns their addresses; the
// listeners stay open until the test ends, so that a process that tried to
// bind them would fail.
func holdPorts(t *testing.T, n int) []string {
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

func TestCheckFetchesOneTokenPerUpstream(t *testing.T) {
	e := newEnv(t)
	// The configured ports are held by the test: check must never bind them.
	ports := holdPorts(t, 2)
	cfg := e.allUpstreams()
	cfg.Listen, cfg.AdminListen = ports[0], ports[1]
	path := e.writeConfig("check.yaml", cfg)
	before := time.Now()
	r := e.cli("", "check", "--config", path)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	want := []string{"hgem", "inspera", "prodoscore", "prominsight"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want one per upstream:\n%s", len(lines), r.stdout)
	}
	for i, l := range lines {
		m := checkLine.FindStringSubmatch(l)
		if m == nil || m[1] != want[i] {
			t.Errorf("line %q, want %q: ok, token valid until <RFC 3339>", l, want[i])
			continue
		}
		until, err := time.Parse(time.RFC3339, m[2])
		if err != nil || !until.After(before.Add(30*time.Minute)) {
			t.Errorf("%s: valid until %q (%v), want an RFC 3339 time about an hour ahead", m[1], m[2], err)
		}
	}
	for kind, v := range e.vendors {
		if n := v.sim.TokenCalls(); n != 1 {
			t.Errorf("%s: %d token requests, want 1", kind, n)
		}
		if n := v.sim.APICalls(); n != 0 {
			t.Errorf("%s: %d API calls, want none", kind, n)
		}
	}
}

func TestCheckNamesEveryFailure(t *testing.T) {
	e := newEnv(t)
	// hgem refuses the credentials; inspera's lack a key; prominsight's
	// token endpoint never answers within its token_timeout.
	e.vendors["hgem"].sim.SetCredentials(map[string]string{"api_key": "a", "client_id": "b", "client_secret": "c"})
	e.writeJSON("inspera.json", map[string]string{"client_id": e.vendors["inspera"].creds["client_id"]})
	e.vendors["prominsight"].sim.SetTokenFault(&vendorsim.Fault{Hang: true})
	cfg := config.Defaults()
	cfg.Upstreams = config.Upstreams{}
	for _, k := range []string{"hgem", "inspera", "prominsight", "prodoscore"} {
		cfg.Upstreams[k] = e.upstream(k)
	}
	edit(cfg, "prominsight", func(u *config.Upstream) { u.TokenTimeout.Duration = 500 * time.Millisecond })
	path := e.writeConfig("check.yaml", cfg)
	r := e.cli("", "check", "--config", path)
	want := []string{
		"hgem: token endpoint refused the credentials: HTTP 401, invalid_client",
		"inspera: credentials unavailable: file:" + filepath.Join(e.dir, "inspera.json") + ": missing key api_key",
		"prodoscore: ok, token valid until ",
		"prominsight: no token within token_timeout (500ms): the token endpoint did not answer in time",
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 1 || len(lines) != len(want) {
		t.Fatalf("exit %d, stdout:\n%s\nwant exit 1 and %d lines", r.code, r.stdout, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %q, want it to start %q", lines[i], w)
		}
	}
	if n := e.vendors["inspera"].sim.TokenCalls(); n != 0 {
		t.Errorf("inspera: %d token requests with incomplete credentials", n)
	}
}

func TestCheckRefusesABadConfig(t *testing.T) {
	e := newEnv(t)
	path := e.write("bad.yaml", []byte("upstreams:\n"+e.upstreamYAML("hgem")+"    token_timout: 1s\n"))
	r := e.cli("", "check", "--config", path)
	if r.code != 2 || r.stdout != "" || !strings.HasPrefix(r.stderr, `upstreams.hgem.token_timout: unknown key (line 7); did you mean "token_timeout"?`) {
		t.Errorf("exit %d, stdout %q, stderr %q; want 2 and the key on stderr", r.code, r.stdout, r.stderr)
	}
	if n := e.vendors["hgem"].sim.TokenCalls(); n != 0 {
		t.Errorf("%d token requests for a bad config", n)
	}
}

// The three -X flags the Dockerfile passes are the ones version prints.
func TestVersionIsStampedAtBuild(t *testing.T) {
	e := newEnv(t)
	bin := filepath.Join(t.TempDir(), "tokenproxy")
	ld := "-X main.version=v9.8.7 -X main.commit=0123456789abcdef -X main.date=2026-03-04T05:06:07Z"
	if out, err := exec.Command("go", "build", "-ldflags", ld, "-o", bin, "../cmd/tokenproxy").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if want := "tokenproxy v9.8.7 (commit 0123456789abcdef, built 2026-03-04T05:06:07Z)\n"; err != nil || string(out) != want {
		t.Errorf("version: %q (%v), want %q", out, err, want)
	}
	// The unstamped binary still says something for each.
	r := e.cli("", "version")
	if r.code != 0 || !regexp.MustCompile(`^tokenproxy \S+ \(commit \S+, built \S+\)\n$`).MatchString(r.stdout) {
		t.Errorf("unstamped version: exit %d, %q", r.code, r.stdout)
	}
}

// check logs in to Vault as the daemon does (AppRole from files) and reads
// every upstream's credentials there; a missing secret is named.
func TestCheckWithVault(t *testing.T) {
	v := newVaultEnv(t)
	v.seed(t)
	routes := append(vaultKV2Routes(), vaultRoute{"missing", "hgem", "vault:secret/tokenproxy/missing"})
	path := v.writeConfig("check-vault.yaml", v.vaultConfig(time.Minute, v.approle(), routes...))
	r := v.cli("", "check", "--config", path)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	want := []string{"hgem: ok, ", "inspera: ok, ", "missing: credentials unavailable: vault:secret/tokenproxy/missing at " + v.srv.Addr() + ": no secret there", "prodoscore: ok, ", "prominsight: ok, "}
	if r.code != 1 || len(lines) != len(want) {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s\nwant exit 1 and %d lines", r.code, r.stdout, r.stderr, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %q, want it to start %q", lines[i], w)
		}
	}
}
