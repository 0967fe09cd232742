package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

// A vendor's default scope is the setting in force when none is written, so
// that /config shows what is sent (VENDORS.md: PROMinsight's session.read).
func TestScopeDefaultComesFromTheVendor(t *testing.T) {
	cfg, err := Parse([]byte(`
upstreams:
  p: {type: prominsight, base_url: "https://p", credentials: "env:P"}
  q: {type: prominsight, base_url: "https://p", credentials: "env:P", scope: "session.read session.write"}
  h: {type: hgem, base_url: "https://h", credentials: "env:H"}
`))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"p": "session.read", "q": "session.read session.write", "h": ""} {
		if got := cfg.Upstreams[name].Scope; got != want {
			t.Errorf("%s: scope %q, want %q", name, got, want)
		}
	}
}

// An explicit value is decoded over the default and then honoured or
// refused, never replaced by it (STYLE.md 12). Each key's zero, one way or
// the other, as configs/all.yaml documents it.
func TestExplicitZeroHonoured(t *testing.T) {
	cfg, err := Parse([]byte(`
drain_delay: 0s
upstreams:
  hgem:
    type: hgem
    base_url: https://results-api.hgem.com/
    credentials: env:HGEM
    replay_max_bytes: 0
    max_connections: 0
    reauth_min_interval: 0s
tracing: {endpoint: "http://127.0.0.1:4318", sample_ratio: 0}
`))
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Upstreams["hgem"]
	for _, c := range []struct {
		key string
		got any
	}{
		{"drain_delay", cfg.DrainDelay.Duration},
		{"upstreams.hgem.replay_max_bytes", u.ReplayMaxBytes},
		{"upstreams.hgem.max_connections", u.MaxConnections},
		{"upstreams.hgem.reauth_min_interval", u.ReauthMinInterval.Duration},
		{"tracing.sample_ratio", cfg.Tracing.SampleRatio},
	} {
		if c.got != reflect.Zero(reflect.TypeOf(c.got)).Interface() {
			t.Errorf("%s: 0 written, %v in force", c.key, c.got)
		}
	}
	// What is not zero kept its default.
	if u.Timeout.Duration != DefaultTimeout || u.RefreshFraction != DefaultRefreshFraction || cfg.ShutdownTimeout.Duration != DefaultShutdownTimeout {
		t.Errorf("defaults lost: timeout %s, refresh_fraction %v, shutdown_timeout %s", u.Timeout, u.RefreshFraction, cfg.ShutdownTimeout)
	}
}

// A zero that would mean "no limit" to net/http, or a poll that never
// rests, is refused on its key path; so is an empty value where the empty
// string has no meaning. One key at a time, each the only problem.
func TestExplicitZeroRefused(t *testing.T) {
	const up = "upstreams:\n  h: {type: hgem, base_url: 'https://h', credentials: 'env:H', %s}\n"
	const vault = "secrets:\n  vault: {address: 'https://v:8200', auth: {method: kubernetes, role: r}, %s}\n"
	const trace = "tracing: {endpoint: 'http://127.0.0.1:4318', %s}\n"
	const share = "sharing: {vault: {path: secret/shared}, %s}\n"
	plain := fmt.Sprintf(up, "scope: hgem-results-api")
	cases := []struct{ text, want string }{
		{"shutdown_timeout: 0s\n" + plain, "shutdown_timeout: must be positive (line 1)"},
		{"read_header_timeout: 0s\n" + plain, "read_header_timeout: must be positive (line 1)"},
		{"secrets: {poll_interval: 0s}\n" + plain, "secrets.poll_interval: must be positive (line 1)"},
		{fmt.Sprintf(up, "timeout: 0s"), "upstreams.h.timeout: must be positive (line 2)"},
		{fmt.Sprintf(up, "token_timeout: 0s"), "upstreams.h.token_timeout: must be positive (line 2)"},
		{fmt.Sprintf(up, "refresh_fraction: 0"), "upstreams.h.refresh_fraction: must be between 0.1 and 0.95 (line 2)"},
		{fmt.Sprintf(vault, "poll_interval: 0s") + plain, "secrets.vault.poll_interval: must be positive (line 2)"},
		{fmt.Sprintf(vault, "poll_interval: 1s") + fmt.Sprintf(share, "lease: 0s") + plain, "sharing.lease: must be positive (line 3)"},
		{fmt.Sprintf(vault, "poll_interval: 1s") + fmt.Sprintf(share, "on_store_unavailable: ''") + plain,
			`sharing.on_store_unavailable: "" is not one of local, fail (line 3)`},
		{fmt.Sprintf(trace, "service_name: ''") + plain, "tracing.service_name: must not be empty (leave the key out for tokenproxy) (line 1)"},
		{"listen: ''\n" + plain, `listen: "" is not host:port (line 1)`},
		{"log_level: ''\n" + plain, `log_level: "" is not one of debug, info, warn, error (line 1)`},
	}
	for _, tc := range cases {
		got := problems(t, tc.text)
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s\nproblems:\n  %s\nwant:\n  %s", tc.text, strings.Join(got, "\n  "), tc.want)
		}
	}
}

// A key written with no value is a key left out: its default stays.
func TestNoValueKeepsDefault(t *testing.T) {
	cfg, err := Parse([]byte(`
shutdown_timeout:
secrets: {poll_interval: }
tracing: {endpoint: "http://127.0.0.1:4318", sample_ratio: }
upstreams:
  hgem: {type: hgem, base_url: "https://h", credentials: "env:H", timeout: , refresh_fraction: , max_connections: }
`))
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Upstreams["hgem"]
	if cfg.ShutdownTimeout.Duration != DefaultShutdownTimeout || cfg.Secrets.PollInterval.Duration != DefaultPollInterval ||
		cfg.Tracing.SampleRatio != DefaultSampleRatio || u.Timeout.Duration != DefaultTimeout ||
		u.RefreshFraction != DefaultRefreshFraction || u.MaxConnections != DefaultMaxConnections {
		t.Errorf("a key with no value lost its default: %+v %+v", cfg, u)
	}
}

// secrets.vault.address defaults to $VAULT_ADDR as read with the file; an
// empty one written over it is refused, not replaced by it.
func TestVaultAddressFromEnvironment(t *testing.T) {
	t.Setenv("VAULT_ADDR", "https://from-env:8200")
	const text = "secrets:\n  vault: {%sauth: {method: kubernetes, role: r}}\nupstreams:\n  h: {type: hgem, base_url: 'https://h', credentials: 'vault:secret/h'}\n"
	cfg, err := Parse([]byte(fmt.Sprintf(text, "")))
	if err != nil {
		t.Fatal(err)
	}
	if v := cfg.Secrets.Vault; v.Address != "https://from-env:8200" || v.Auth.Mount != "kubernetes" || v.Auth.JWTFile != DefaultJWTFile {
		t.Errorf("vault defaults: %+v", v)
	}
	cfg, err = Parse([]byte(fmt.Sprintf(text, "address: 'https://v:8200', ")))
	if err != nil || cfg.Secrets.Vault.Address != "https://v:8200" {
		t.Errorf("a written address: %v %+v", err, cfg)
	}
	got := problems(t, fmt.Sprintf(text, "address: '', "))
	if want := "secrets.vault.address: must not be empty (leave the key out to use $VAULT_ADDR) (line 2)"; len(got) != 1 || got[0] != want {
		t.Errorf("problems %q, want %q", got, want)
	}
}

// Defaults that depend on other keys are derived for an empty value, as
// yaml.Marshal writes one, and relative paths still resolve against the
// file's directory around them.
func TestDerivedDefaults(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokenproxy.yaml")
	text := `
secrets:
  vault: {address: "https://v:8200", auth: {method: approle, mount: "", role_id_file: role, secret_id_file: /abs/secret}}
upstreams:
  p: {type: prominsight, base_url: "https://p/t/", token_url: "", scope: "", credentials: "file:p.json"}
`
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, u := cfg.Secrets.Vault.Auth, cfg.Upstreams["p"]
	for _, c := range []struct{ key, got, want string }{
		{"auth.mount", a.Mount, "approle"},
		{"auth.jwt_file", a.JWTFile, ""},
		{"auth.role_id_file", a.RoleIDFile, filepath.Join(dir, "role")},
		{"auth.secret_id_file", a.SecretIDFile, "/abs/secret"},
		{"token_url", u.TokenURL, "https://p/t/api/v1/auth/token"},
		{"scope", u.Scope, "session.read"},
		{"credentials", u.Credentials, "file:" + filepath.Join(dir, "p.json")},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.key, c.got, c.want)
		}
	}
}

// A config marshalled back (as /config shows it, or as code that builds
// one from Defaults and DefaultUpstream writes it) loads as itself, its
// explicit zeros included.
func TestMarshalledConfigLoadsBack(t *testing.T) {
	cfg := Defaults()
	u := DefaultUpstream()
	u.Type, u.BaseURL, u.Credentials = "hgem", "https://h", "env:H"
	u.ReplayMaxBytes, u.MaxConnections, u.ReauthMinInterval.Duration = 0, 0, 0
	cfg.Upstreams = Upstreams{"h": u}
	cfg.DrainDelay.Duration = 0
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	want := u
	want.TokenURL = "https://h/connect/token"
	if got := back.Upstreams["h"]; !reflect.DeepEqual(got, want) {
		t.Errorf("loaded back as\n  %+v\nwant\n  %+v", got, want)
	}
}

// Code that builds a config (the e2e tests) starts from Defaults and the
// sections' and entries' defaults, sets what it needs and marshals it with
// yaml.v3: what that writes parses back as the same config, every section,
// every kind of upstream and explicit zeros included, with the defaults
// that depend on other keys derived as for a file that leaves them out.
func TestDefaultsMarshalParseRoundTrip(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	build := func() Config {
		cfg := Defaults()
		cfg.Listen, cfg.AdminListen, cfg.LogLevel = "127.0.0.1:0", "127.0.0.1:0", "debug"
		cfg.DrainDelay.Duration = 2 * time.Second
		cfg.AdminPprof = true
		vault := DefaultVault()
		vault.Address = "https://vault.example:8200"
		vault.Auth = VaultAuth{Method: "approle", RoleIDFile: "/run/role_id", SecretIDFile: "/run/secret_id"}
		cfg.Secrets.Vault = &vault
		sharing := DefaultSharing()
		sharing.Vault.Path = "secret/tokenproxy/shared"
		cfg.Sharing = &sharing
		tracing := DefaultTracing()
		tracing.Endpoint = "http://127.0.0.1:4318"
		cfg.Tracing = &tracing

		cfg.Upstreams = Upstreams{}
		entry := func(typ, base string) Upstream {
			u := DefaultUpstream()
			u.Type, u.BaseURL, u.Credentials = typ, base, "vault:secret/tokenproxy/"+typ
			return u
		}
		for _, typ := range []string{"prominsight", "inspera", "hgem"} {
			cfg.Upstreams[typ] = entry(typ, "https://"+typ+".example")
		}
		p := entry("prodoscore", "https://api.prodoscore.example")
		p.TokenURL, p.CAFile = "https://auth.prodoscore.example/realms/p/protocol/openid-connect/token", "/etc/ca.pem"
		cfg.Upstreams["prodoscore"] = p
		zeros := entry("hgem", "https://hgem.example/v2")
		zeros.ReplayMaxBytes, zeros.MaxConnections, zeros.ReauthMinInterval.Duration = 0, 0, 0
		unshared := false
		zeros.Shared = &unshared
		cfg.Upstreams["zeros"] = zeros
		o := entry("oauth2", "https://api.example")
		o.TokenURL, o.Scope, o.Audience = "https://idp.example/token", "api:read", "https://api.example"
		o.OAuth2 = &vendor.OAuth2{Grant: "password", AuthStyle: "body", Params: map[string]string{"resource": "api"},
			Headers: map[string]string{"X-Api-Key": "{credential api_key}"}}
		cfg.Upstreams["idp"] = o
		s := entry("static", "https://weather.example")
		s.Static = &vendor.Static{Headers: map[string]string{"X-Api-Key": "{credential api_key}"}}
		cfg.Upstreams["weather"] = s
		c := entry("custom", "https://api.ledger.example/v2")
		c.Custom = &vendor.Description{
			Token: &vendor.Request{URL: "/auth/session", Body: vendor.BodyJSON,
				Fields: map[string]string{"keyId": "{credential key_id}", "secret": "{credential key_secret}"}},
			Answer:  vendor.Answer{AccessToken: "result.jwt", ExpiresIn: "result.ttl"},
			Headers: map[string]string{"Authorization": "Token {token}"},
		}
		cfg.Upstreams["ledger"] = c
		return cfg
	}
	b, err := yaml.Marshal(build())
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	got.lines = nil
	want := build()
	want.derive()
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("parsed back as\n  %+v\nwant\n  %+v\nfrom:\n%s", *got, want, b)
	}
	// What derive filled in is there: the round trip compares something.
	h, p := got.Upstreams["hgem"], got.Upstreams["prominsight"]
	if h.TokenURL != "https://hgem.example/connect/token" || p.Scope != "session.read" || got.Secrets.Vault.Auth.Mount != "approle" {
		t.Errorf("derived defaults missing: token_url %q scope %q mount %q", h.TokenURL, p.Scope, got.Secrets.Vault.Auth.Mount)
	}
}

// secrets.vault.address never carries user info, written or from
// $VAULT_ADDR: every message naming the address would show it. No problem
// quotes it, a malformed address included.
func TestVaultAddressWithUserInfoRefused(t *testing.T) {
	const text = "secrets:\n  vault: {%sauth: {method: token, token_file: /t}}\nupstreams:\n  h: {type: hgem, base_url: 'https://h', credentials: 'vault:secret/h'}\n"
	cases := []struct{ env, address, want string }{
		{"", "http://vaultuser:VAULTPASSCANARY@127.0.0.1:27821",
			"secrets.vault.address: the address must not carry user info (a name or password before @): Vault reads none from its address, and every message naming it would show it; log in with auth (line 2)"},
		{"", "https://VAULTPASSCANARY@vault.example:8200",
			"secrets.vault.address: the address must not carry user info (a name or password before @): Vault reads none from its address, and every message naming it would show it; log in with auth (line 2)"},
		{"https://vaultuser:VAULTPASSCANARY@vault.example:8200", "",
			"secrets.vault.address: $VAULT_ADDR must not carry user info (a name or password before @): Vault reads none from its address, and every message naming it would show it; log in with auth (line 2, under secrets.vault)"},
		{"", "ftp://vaultuser:VAULTPASSCANARY@vault.example",
			`secrets.vault.address: the address "ftp://REDACTED@vault.example" is not an http(s) URL (line 2)`},
		{"", "http://vaultuser:VAULT PASSCANARY@vault.example",
			`secrets.vault.address: the address "REDACTED" is not an http(s) URL (line 2)`},
		{"http://vaultuser:VAULT PASSCANARY@vault.example", "",
			`secrets.vault.address: $VAULT_ADDR "REDACTED" is not an http(s) URL (line 2, under secrets.vault)`},
	}
	for _, c := range cases {
		t.Setenv("VAULT_ADDR", c.env)
		written := ""
		if c.address != "" {
			written = "address: '" + c.address + "', "
		}
		got := problems(t, fmt.Sprintf(text, written))
		if len(got) != 1 || got[0] != c.want {
			t.Errorf("address %q, $VAULT_ADDR %q: problems\n%q\nwant\n%q", c.address, c.env, got, c.want)
		}
		for _, g := range got {
			if strings.Contains(g, "PASSCANARY") || strings.Contains(g, "vaultuser") {
				t.Errorf("a problem shows the address's user info: %s", g)
			}
		}
	}
}
