package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

const minimal = `
upstreams:
  hgem:
    type: hgem
    base_url: https://results-api.hgem.com/
    credentials: env:HGEM
`

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Upstreams["hgem"]
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, "127.0.0.1:8080"},
		{"admin_listen", cfg.AdminListen, "127.0.0.1:9901"},
		{"log_level", cfg.LogLevel, "info"},
		{"shutdown_timeout", cfg.ShutdownTimeout.Duration, 20 * time.Second},
		{"token_url", u.TokenURL, "https://results-api.hgem.com/connect/token"},
		{"timeout", u.Timeout.Duration, 30 * time.Second},
		{"token_timeout", u.TokenTimeout.Duration, 10 * time.Second},
		{"refresh_fraction", u.RefreshFraction, 0.75},
		{"replay_max_bytes", u.ReplayMaxBytes, int64(1 << 20)},
		{"max_connections", u.MaxConnections, int64(64)},
		{"read_header_timeout", cfg.ReadHeaderTimeout.Duration, 10 * time.Second},
		{"poll_interval", cfg.PollInterval("file"), time.Minute},
		{"admin_pprof", cfg.AdminPprof, false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestDefaultTokenURLKeepsBasePath(t *testing.T) {
	for typ, want := range map[string]string{
		"prominsight": "https://h.example/tenant/api/v1/auth/token",
		"inspera":     "https://h.example/tenant/api/authenticate/token/",
		"hgem":        "https://h.example/tenant/connect/token",
		"prodoscore":  "",
	} {
		if got := DefaultTokenURL(typ, "https://h.example/tenant/"); got != want {
			t.Errorf("%s: %q, want %q", typ, got, want)
		}
	}
}

// problems parses text and returns its problems as "path: msg" lines.
func problems(t *testing.T, text string) []string {
	t.Helper()
	_, err := Parse([]byte(text))
	var ps *Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want problems, got %v", err)
	}
	return strings.Split(ps.Error(), "\n")
}

// sameLines fails t unless got is want, line for line, showing both under
// what ("problems", "warnings").
func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// wantProblems parses text and checks that it has exactly as many problems
// as want, each starting with one of want's prefixes; it returns them.
func wantProblems(t *testing.T, text string, want []string) []string {
	t.Helper()
	got := problems(t, text)
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, w)
		}
		if !found {
			t.Errorf("no problem starts with %q:\n%s", w, strings.Join(got, "\n"))
		}
	}
	return got
}

func TestProblemsNameTheirKeyPath(t *testing.T) {
	cases := []struct {
		name, text string
		want       []string // line prefixes
	}{
		{"unknown keys everywhere", `
listne: x
secrets: {vault: {adress: x, auth: {method: token, token_file: /t}}}
upstreams:
  hgem: {type: hgem, base_url: "https://x", credentials: "env:H", scop: y}
`, []string{"listne: unknown key (line 2)", "secrets.vault.adress: unknown key", "upstreams.hgem.scop: unknown key",
			"secrets.vault.address: required"}},
		{"mistyped values", `
shutdown_timeout: soon
upstreams:
  hgem: {type: hgem, base_url: "https://x", credentials: "env:H", timeout: [1], refresh_fraction: lots, replay_max_bytes: 1.5}
`, []string{"shutdown_timeout: \"soon\" is not a duration", "upstreams.hgem.timeout: must be a duration",
			"upstreams.hgem.refresh_fraction: must be a number", "upstreams.hgem.replay_max_bytes: must be a whole number"}},
		{"per type checks", `
upstreams:
  h: {type: hgem, base_url: "https://x", credentials: "env:H", scope: "visits/standard.read"}
  p: {type: prodoscore, base_url: "https://x", credentials: "env:P"}
  q: {type: quux, base_url: "https://x", credentials: "env:Q"}
`, []string{"upstreams.h.scope: must contain hgem-results-api", "upstreams.p.token_url: required for type prodoscore",
			"upstreams.q.type: \"quux\" is not one of"}},
		{"a missing base_url is one problem, not one more on the token_url built on it", `
upstreams:
  a: {type: hgem, credentials: "env:A"}
  o: {type: oauth2, credentials: "env:O"}
`, []string{"upstreams.a.base_url: required", "upstreams.o.base_url: required", "upstreams.o.token_url: required for type oauth2"}},
		{"urls", `
upstreams:
  a: {type: hgem, base_url: "http://results-api.hgem.com", credentials: "env:A"}
  b: {type: hgem, base_url: "/relative", credentials: "env:A"}
  c: {type: hgem, base_url: "https://u:p@x", credentials: "env:A"}
  d: {type: hgem, base_url: "https://x/?q=1", credentials: "env:A"}
  e: {type: hgem, base_url: "http://127.0.0.1:9000", credentials: "env:A"}
  f: {type: hgem, base_url: "http://localhost:9000", credentials: "env:A"}
`, []string{"upstreams.a.base_url: must use https", "upstreams.b.base_url: \"/relative\" is not an absolute URL",
			"upstreams.c.base_url: must not carry user info", "upstreams.d.base_url: must not have a query"}},
		{"credentials references", `
upstreams:
  a: {type: hgem, base_url: "https://x", credentials: "s3cr3t-value"}
  b: {type: hgem, base_url: "https://x", credentials: "vault:secret"}
  c: {type: hgem, base_url: "https://x", credentials: "env:1X"}
  d: {type: hgem, base_url: "https://x", credentials: "vault:secret/hgem"}
  Bad_Name: {type: hgem, base_url: "https://x", credentials: "file:/c.json"}
`, []string{"upstreams.Bad_Name: route name must match", "upstreams.a.credentials: must be a reference",
			"upstreams.b.credentials: vault reference must be", "upstreams.c.credentials: env reference",
			"upstreams.d.credentials: starts with vault:, but there is no secrets.vault section"}},
		{"vault auth", `
secrets:
  vault: {address: "https://v:8200", auth: {method: approle}}
upstreams:
  d: {type: hgem, base_url: "https://x", credentials: "vault:secret/hgem"}
`, []string{"secrets.vault.auth.role_id_file: required", "secrets.vault.auth.secret_id_file: required"}},
		{"listeners and levels", `
listen: "8080"
admin_listen: "127.0.0.1:99999"
log_level: loud
upstreams: {}
`, []string{"listen: \"8080\" is not host:port", "admin_listen: \"127.0.0.1:99999\" has no valid port",
			"log_level: \"loud\" is not one of", "upstreams: at least one upstream is required"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := wantProblems(t, tc.text, tc.want)
			for _, g := range got {
				if strings.Contains(g, "s3cr3t") {
					t.Errorf("a problem echoes a credentials value: %s", g)
				}
			}
		})
	}
}

func TestNotAConfig(t *testing.T) {
	for _, text := range []string{"", "- a\n- b\n", "upstreams: [\n", "42"} {
		if _, err := Parse([]byte(text)); err == nil {
			t.Errorf("%q parsed", text)
		}
	}
}

func TestWarningsForNonLoopbackListeners(t *testing.T) {
	cfg, err := Parse([]byte("listen: 0.0.0.0:8080\nadmin_listen: '[::1]:9901'\n" + minimal))
	if err != nil {
		t.Fatal(err)
	}
	ws := cfg.Warnings()
	if len(ws) != 1 || ws[0].Path != "listen" {
		t.Fatalf("warnings %v, want one for listen", ws)
	}
}

// FuzzParse feeds arbitrary bytes to the config loader: it must never panic,
// whatever it accepts must validate with its relative paths resolved, and
// whatever it refuses must say where.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte("listen: 127.0.0.1:0\nupstreams:\n  p: {type: prodoscore, base_url: 'https://a', token_url: 'https://b', credentials: 'file:/x'}\n"))
	f.Add([]byte("upstreams: &a {x: *a}\n"))
	f.Add([]byte("secrets: {vault: {address: 'https://v', auth: {method: kubernetes, role: r}}}\n"))
	f.Add([]byte("upstreams:\n  h: {type: hgem, base_url: 'https://a', credentials: 'file:h.json', ca_file: ca.pem}\n  h: {}\n"))
	f.Add([]byte("upstreams:\n  h:\n    type: hgem\n   base_url: x\n"))
	f.Add([]byte("upstreams:\n\th: {}\n"))
	f.Add([]byte("listen: 'x\n"))
	f.Add([]byte("listen: x\n---\nlisten: y\n"))
	f.Add([]byte("listen: localhost:9\nadmin_listen: '[::]:9'\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, ps := parse("f.yaml", "/cfg", b)
		if len(ps) == 0 {
			if ps := cfg.Validate(); len(ps) > 0 {
				t.Fatalf("accepted a config with problems: %v", ps)
			}
			for name, u := range cfg.Upstreams {
				if p, ok := strings.CutPrefix(u.Credentials, "file:"); ok && !strings.HasPrefix(p, "/") {
					t.Fatalf("upstream %s: credentials %q not resolved against the config's directory", name, u.Credentials)
				}
			}
			return
		}
		for _, p := range ps {
			if p.Path == "" || p.Msg == "" {
				t.Fatalf("a problem without a location or a message: %#v", p)
			}
		}
	})
}

// Redacted hides user info in URLs (which validation refuses; a config
// built in code may hold it), and is a copy: changing it leaves the running
// config alone.
func TestRedacted(t *testing.T) {
	cfg, err := Parse([]byte(`
secrets:
  vault:
    address: https://vault.example:8200
    auth: {method: token, token_file: /run/vault-token}
sharing:
  vault: {path: secret/tokenproxy/shared}
upstreams:
  hgem:
    type: hgem
    base_url: https://results-api.hgem.com/
    credentials: vault:secret/tokenproxy/hgem
    shared: true
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Secrets.Vault.Address = "https://ops:CANARY-pass@vault.example:8200"
	r := cfg.Redacted()
	if got := r.Secrets.Vault.Address; got != "https://REDACTED@vault.example:8200" {
		t.Errorf("vault address shown as %q", got)
	}
	if r.Secrets.Vault.Auth.TokenFile != "/run/vault-token" || r.Upstreams["hgem"].Credentials != "vault:secret/tokenproxy/hgem" {
		t.Errorf("references and paths must stay: %+v %+v", r.Secrets.Vault.Auth, r.Upstreams["hgem"])
	}
	*r.Upstreams["hgem"].Shared = false
	r.Sharing.Lease.Duration = time.Hour
	r.Upstreams["inspera"] = Upstream{}
	if !*cfg.Upstreams["hgem"].Shared || cfg.Sharing.Lease.Duration == time.Hour || len(cfg.Upstreams) != 1 ||
		!strings.Contains(cfg.Secrets.Vault.Address, "CANARY") {
		t.Error("changing the redacted copy changed the config")
	}
	for raw, want := range map[string]string{
		"https://vault.example":           "https://vault.example",
		"https://u@vault.example":         "https://REDACTED@vault.example",
		"https://u:p@vault.example/x?y=1": "https://REDACTED@vault.example/x?y=1",
		"%zz://u:p@host":                  "REDACTED",
		"":                                "",
	} {
		if got := RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}
