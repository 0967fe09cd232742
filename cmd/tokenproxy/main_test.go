package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// tokenproxy runs the command line in-process and returns its exit code,
// stdout and stderr.
func tokenproxy(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestHelpAfterEveryCommand(t *testing.T) {
	t.Setenv("TOKENPROXY_CONFIG", "")
	for _, c := range commands {
		for _, args := range [][]string{
			{c.name, "--help"}, {c.name, "-h"}, {c.name, "-help"},
			{"help", c.name},
			{c.name, "--config", "x.yaml", "--help"}, // help wins over everything else given
		} {
			if c.name == "help" && len(args) == 2 && args[1] == "help" {
				continue
			}
			if args[1] == "--config" && find(args[0]).name != "validate" {
				args = []string{c.name, "--help"}
			}
			code, stdout, stderr := tokenproxy(t, args...)
			if code != 0 || !strings.HasPrefix(stdout, "usage: tokenproxy "+c.name) || stderr != "" {
				t.Errorf("%v: exit %d, stdout %q, stderr %q; want 0 and the usage of %s on stdout", args, code, stdout, stderr, c.name)
			}
		}
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, stdout, stderr := tokenproxy(t, args...)
		if code != 0 || !strings.HasPrefix(stdout, "usage: tokenproxy COMMAND") || stderr != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
}

// Usage mistakes, each with the exact message on stderr and exit 2.
func TestUsageMistakes(t *testing.T) {
	t.Setenv("TOKENPROXY_CONFIG", "")
	cases := []struct {
		args []string
		want string // first line of stderr
	}{
		{[]string{"valdate"}, `tokenproxy: unknown command "valdate"; did you mean "validate"?`},
		{[]string{"chek", "--config", "x"}, `tokenproxy: unknown command "chek"; did you mean "check"?`},
		{[]string{"deploy"}, `tokenproxy: unknown command "deploy"`},
		{[]string{"--config", "x.yaml"}, `tokenproxy: unknown command "--config"`},
		{[]string{"validate", "--config", "f.yaml", "extra"}, `tokenproxy validate: unexpected argument "extra": validate takes none`},
		{[]string{"validate", "f.yaml"}, `tokenproxy validate: unexpected argument "f.yaml": validate takes none; the config file goes after --config (tokenproxy validate --config f.yaml)`},
		{[]string{"check", "f.yaml"}, `tokenproxy check: unexpected argument "f.yaml": check takes none; the config file goes after --config (tokenproxy check --config f.yaml)`},
		{[]string{"run", "--config", "f.yaml", "now"}, `tokenproxy run: unexpected argument "now": run takes none`},
		{[]string{"dev", "now"}, `tokenproxy dev: unexpected argument "now": dev takes none`},
		{[]string{"version", "now"}, `tokenproxy version: unexpected argument "now": version takes none`},
		{[]string{"validate", "--config", "f.yaml", "--", "--help"}, `tokenproxy validate: unexpected argument "--help": validate takes none`},
		{[]string{"help", "valdate"}, `tokenproxy help: unknown command "valdate"; did you mean "validate"?`},
		{[]string{"help", "run", "dev"}, `tokenproxy help: unexpected argument "dev": help takes one command`},
		{[]string{"validate", "--confg", "f.yaml"}, `tokenproxy validate: unknown flag "--confg"; did you mean "--config"?`},
		{[]string{"validate", "--ofline"}, `tokenproxy validate: unknown flag "--ofline"; did you mean "--offline"?`},
		{[]string{"dev", "--token-lifetime", "soon"}, `tokenproxy dev: invalid value "soon" for flag -token-lifetime: parse error`},
		{[]string{"validate"}, `tokenproxy validate: --config FILE is required (or set TOKENPROXY_CONFIG)`},
		{[]string{"check"}, `tokenproxy check: --config FILE is required (or set TOKENPROXY_CONFIG)`},
		{[]string{"run"}, `tokenproxy run: --config FILE is required (or set TOKENPROXY_CONFIG)`},
	}
	for _, c := range cases {
		code, stdout, stderr := tokenproxy(t, c.args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != 2 || first != c.want || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and first line:\n%s", c.args, code, stdout, stderr, c.want)
		}
	}
	if code, _, _ := tokenproxy(t); code != 2 {
		t.Errorf("no command: exit %d, want 2", code)
	}
}

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const hgemBlock = "upstreams:\n  hgem:\n    type: hgem\n    base_url: https://results-api.hgem.com\n    credentials: file:secrets/hgem.json\n"

// vaultFromEnv is a config that takes Vault's address and token from the
// environment, as CI lints it without them.
const vaultFromEnv = "secrets:\n  vault:\n    auth: {method: token}\nupstreams:\n  hgem:\n    type: hgem\n    base_url: https://results-api.hgem.com\n    credentials: vault:secret/hgem\n"

// validate names the file, key path and lines of every mistake, reads what
// the config points to relative to the config's directory, and with
// --offline reads none of it.
func TestValidate(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, text string
		args       []string
		code       int
		stdout     string
		stderr     string // F is the config file
	}{
		{"valid, credentials beside the config", hgemBlock, nil, 0,
			"F: valid (1 upstreams)\n", ""},
		{"credentials missing", strings.Replace(hgemBlock, "secrets/hgem.json", "secrets/none.json", 1), nil, 2,
			"", "upstreams.hgem.credentials: file:D/secrets/none.json: open D/secrets/none.json: no such file or directory (line 5)\n"},
		{"credentials missing, offline", strings.Replace(hgemBlock, "secrets/hgem.json", "secrets/none.json", 1), []string{"--offline"}, 0,
			"F: valid (1 upstreams; credentials and files it points to not read (--offline))\n", ""},
		{"credentials incomplete", strings.Replace(hgemBlock, "secrets/hgem.json", "secrets/partial.json", 1), nil, 2,
			"", "upstreams.hgem.credentials: file:D/secrets/partial.json: missing key client_secret (line 5)\n"},
		{"credentials file with a nested value", strings.Replace(hgemBlock, "secrets/hgem.json", "secrets/nested.yaml", 1), nil, 2,
			"", "upstreams.hgem.credentials: file:D/secrets/nested.yaml: key client_secret, on line 3 of the file: the value is an object, not a string (line 5)\n"},
		{"ca_file not PEM", hgemBlock + "    ca_file: secrets/hgem.json\n", nil, 2,
			"", "upstreams.hgem.ca_file: D/secrets/hgem.json: no PEM certificate in it (line 6)\n"},
		{"ca_file not PEM, offline", hgemBlock + "    ca_file: secrets/hgem.json\n", []string{"--offline"}, 0,
			"F: valid (1 upstreams; credentials and files it points to not read (--offline))\n", ""},
		{"offline still checks the config", "listen: 127.0.0.1:9901\n" + hgemBlock + hgemBlock[len("upstreams:\n"):], []string{"--offline"}, 2,
			"", "upstreams.hgem: written twice, on lines 3 and 7; keep one\n" +
				"listen: \"127.0.0.1:9901\" and admin_listen \"127.0.0.1:9901\" are the same address; the data and admin planes need one each (line 1)\n"},
		{"relies on $VAULT_ADDR and $VAULT_TOKEN, here unset", vaultFromEnv, nil, 2,
			"", "secrets.vault.address: required (or set $VAULT_ADDR) (line 2, under secrets.vault)\n" +
				"secrets.vault.auth.token_file: required for method token when $VAULT_TOKEN is not set (line 3, under secrets.vault.auth)\n"},
		{"relies on $VAULT_ADDR and $VAULT_TOKEN, offline", vaultFromEnv, []string{"--offline"}, 0,
			"F: valid (1 upstreams; credentials and files it points to not read (--offline))\n",
			"secrets.vault.address: warning: not in the file; $VAULT_ADDR must be set where tokenproxy runs\n" +
				"secrets.vault.auth.token_file: warning: not in the file; $VAULT_TOKEN must be set where tokenproxy runs\n"},
		{"syntax", "upstreams:\n  hgem:\n    type: hgem\n   base_url: https://x\n", nil, 2,
			"", "F:4: not valid YAML: did not find expected key\n"},
		{"warning", "listen: 0.0.0.0:8080\n" + hgemBlock, nil, 0,
			"F: valid (1 upstreams)\n", "listen: warning: 0.0.0.0:8080 is not a loopback address: anything that reaches it can call the upstreams with their credentials (line 1)\n"},
		{"two upstreams at one host", hgemBlock + "  hgem-2:\n    type: hgem\n    base_url: https://results-api.hgem.com/\n    credentials: file:secrets/hgem.json\n", nil, 0,
			"F: valid (2 upstreams)\n", "upstreams.hgem-2.base_url: warning: upstreams hgem and hgem-2 have the same host and path: forward-proxy requests (HTTP_PROXY) for results-api.hgem.com at any path all reach hgem, the first by name; hgem-2 gets them only by route (/hgem-2/...) (lines 8 and 4)\n"},
		{"a port out of range", strings.Replace(hgemBlock, "hgem.com", "hgem.com:99999", 1), nil, 2,
			"", "upstreams.hgem.base_url: port 99999 is out of range; a port is 1 to 65535 (or none, for the scheme's default) (line 4)\n"},
	}
	write(t, dir, "secrets/hgem.json", `{"api_key": "k", "client_id": "i", "client_secret": "s"}`)
	write(t, dir, "secrets/partial.json", `{"api_key": "k", "client_id": "i"}`)
	write(t, dir, "secrets/nested.yaml", "api_key: k\nclient_id: i\nclient_secret:\n  value: s\n")
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("VAULT_TOKEN", "")
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := write(t, dir, "config"+string(rune('a'+i))+".yaml", c.text)
			code, stdout, stderr := tokenproxy(t, append([]string{"validate", "--config", path}, c.args...)...)
			stdout = strings.ReplaceAll(stdout, path, "F")
			stderr = strings.ReplaceAll(strings.ReplaceAll(stderr, path, "F"), dir, "D")
			if code != c.code || stdout != c.stdout || stderr != c.stderr {
				t.Errorf("exit %d\nstdout %q\nstderr %q\nwant exit %d\nstdout %q\nstderr %q", code, stdout, stderr, c.code, c.stdout, c.stderr)
			}
		})
	}
}

func TestValidateNamesAMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nosuch.yaml")
	code, _, stderr := tokenproxy(t, "validate", "--config", path)
	if want := path + ": cannot read the config: no such file or directory\n"; code != 2 || stderr != want {
		t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, want)
	}
	code, _, stderr = tokenproxy(t, "check", "--config", path)
	if want := path + ": cannot read the config: no such file or directory\n"; code != 2 || stderr != want {
		t.Errorf("check: exit %d, stderr %q; want 2 and %q", code, stderr, want)
	}
}

func TestVersionIsStamped(t *testing.T) {
	defer func(v, c, d string) { version, commit, date = v, c, d }(version, commit, date)
	version, commit, date = "v1.2.3", "0123abc", "2026-01-02T03:04:05Z"
	code, stdout, _ := tokenproxy(t, "version")
	if want := "tokenproxy v1.2.3 (commit 0123abc, built 2026-01-02T03:04:05Z)\n"; code != 0 || stdout != want {
		t.Errorf("exit %d, %q; want %q", code, stdout, want)
	}
	if _, out, _ := tokenproxy(t, "--version"); out != stdout {
		t.Errorf("--version printed %q, version %q", out, stdout)
	}
}

func TestVersionFallsBackToBuildInfo(t *testing.T) {
	vcs := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "fedcba9876"}, {Key: "vcs.time", Value: "2026-02-03T04:05:06Z"}, {Key: "vcs.modified", Value: "true"}}}
	cases := []struct {
		stamped buildInfo
		bi      *debug.BuildInfo
		want    buildInfo
	}{
		{buildInfo{}, vcs, buildInfo{"", "fedcba9876-dirty", "2026-02-03T04:05:06Z"}},
		{buildInfo{"v1", "abc", "today"}, vcs, buildInfo{"v1", "abc", "today"}},
		{buildInfo{}, &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, buildInfo{"v1.4.0", "", ""}},
		{buildInfo{}, &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, buildInfo{}},
	}
	for _, c := range cases {
		if got := c.stamped.fill(c.bi); got != c.want {
			t.Errorf("%+v with %v: %+v, want %+v", c.stamped, c.bi.Settings, got, c.want)
		}
	}
	defer func(v, c, d string) { version, commit, date = v, c, d }(version, commit, date)
	version, commit, date = "", "", ""
	b := build()
	for _, f := range []string{b.version, b.commit, b.date} {
		if f == "" {
			t.Errorf("build() = %+v: an empty field, want \"unknown\" or a value", b)
		}
	}
}

// dev's flags are its config: their mistakes are usage errors named by the
// flag, found before any simulator starts (exit 2).
func TestDevFlagMistakes(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "nonsense"}, `tokenproxy dev: --listen: "nonsense" is not host:port` + "\n"},
		{[]string{"--listen", "localhost:39903", "--admin-listen", "127.0.0.1:39903"},
			`tokenproxy dev: --listen: "localhost:39903" and --admin-listen "127.0.0.1:39903" are the same address; the data and admin planes need one each` + "\n"},
		{[]string{"--log-level", "loud"}, `tokenproxy dev: --log-level: "loud" is not one of debug, info, warn, error` + "\n"},
		{[]string{"--token-lifetime", "-1s"}, "tokenproxy dev: --token-lifetime: -1s is not a lifetime; give a positive duration such as 30s\n"},
	}
	for _, c := range cases {
		code, stdout, stderr := tokenproxy(t, append([]string{"dev"}, c.args...)...)
		if code != 2 || stdout != "" || stderr != c.want {
			t.Errorf("dev %v: exit %d, stdout %q, stderr %q; want 2 and %q", c.args, code, stdout, stderr, c.want)
		}
	}
}
