package e2e

import (
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/redact"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	vendordesc "github.com/tokenproxy/tokenproxy/internal/vendor"
)

// What a user found tokenproxy showing that it must not, each kind run
// through the real binary with canaries that the harness then searches
// for in everything the processes wrote; the HTTP answers fetched here are
// searched too.

// noCanaryIn fails when b holds any of the canaries.
func noCanaryIn(t *testing.T, what string, b []byte, canaries ...string) {
	t.Helper()
	for _, c := range canaries {
		if strings.Contains(string(b), c) {
			t.Errorf("%s holds the canary %q:\n%s", what, c, b)
		}
	}
}

// noPartIn fails when b holds any 12 bytes in a row of a secret: a
// secret half replaced, or cut short, still shows that much.
func noPartIn(t *testing.T, what string, b []byte, secrets ...string) {
	t.Helper()
	const part = 12
	for _, s := range secrets {
		for i := 0; i+part <= len(s) || i == 0; i++ {
			if w := s[i:min(i+part, len(s))]; strings.Contains(string(b), w) {
				t.Errorf("%s holds %q, part of a secret:\n%s", what, w, b)
				break
			}
		}
	}
}

// closedPort is a loopback address where nothing listens: a Vault login
// there fails.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A Vault address with user info, written or from $VAULT_ADDR, is refused
// by validate, check, run and a reload, and its user info reaches no output:
// not the problems printed, not the log, /status or /metrics.
func TestVaultAddressUserInfoNeverShown(t *testing.T) {
	e := newEnv(t)
	user, pass := canary("vault", "user"), canary("vault", "pass")
	e.secrets = append(e.secrets, user, pass)
	withUser := "http://" + user + ":" + pass + "@" + closedPort(t)
	tokenFile := e.write("vault-token", []byte("hvs.not-a-real-token"))
	// validate's configs spell the address written and left out: text.
	vaultBlock := func(address string) string {
		s := "secrets:\n  vault:\n"
		if address != "" {
			s += "    address: " + address + "\n"
		}
		return s + "    auth: {method: token, token_file: " + tokenFile + "}\n"
	}
	upstreams := "upstreams:\n" + e.upstreamYAML("inspera") +
		"  hgem:\n    type: hgem\n    base_url: " + e.vendors["hgem"].url() + "\n    credentials: vault:secret/tokenproxy/hgem\n    ca_file: " + e.caFile + "\n"

	written := e.write("written.yaml", []byte(vaultBlock(withUser)+upstreams))
	const refusal = "must not carry user info (a name or password before @): Vault reads none from its address, and every message naming it would show it; log in with auth"
	for _, cmd := range []string{"validate", "check", "run"} {
		r := e.cli("", cmd, "--config", written)
		if want := "secrets.vault.address: the address " + refusal + " (line 3)\n"; r.code != 2 || r.stdout != "" || r.stderr != want {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 2 and %q", cmd, r.code, r.stdout, r.stderr, want)
		}
	}

	t.Setenv("VAULT_ADDR", withUser)
	fromEnv := e.write("from-env.yaml", []byte(vaultBlock("")+upstreams))
	for _, cmd := range []string{"validate", "check"} {
		r := e.cli("", cmd, "--config", fromEnv)
		if want := "secrets.vault.address: $VAULT_ADDR " + refusal + " (line 2, under secrets.vault)\n"; r.code != 2 || r.stderr != want {
			t.Errorf("%s with $VAULT_ADDR: exit %d, stderr %q; want 2 and %q", cmd, r.code, r.stderr, want)
		}
	}
	t.Setenv("VAULT_ADDR", "")

	// A running proxy is sent the config by SIGHUP: rejected, and the
	// running config stays.
	cfg := e.config("inspera")
	cfg.LogLevel = "debug"
	path := e.writeConfig("reload.yaml", cfg)
	p := e.startArgs("run", "--config", path)
	p.ready(t)
	vault := config.DefaultVault()
	vault.Address, vault.Auth = withUser, config.VaultAuth{Method: "token", TokenFile: tokenFile}
	cfg.Secrets.Vault = &vault
	e.writeConfig("reload.yaml", cfg)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the reload to be rejected", func() bool {
		return p.logged("config reload rejected; the running config stays", nil)
	})
	if msg, _ := configStatus(t, p)["last_reload_error"].(string); !strings.Contains(msg, "secrets.vault.address: the address "+refusal) {
		t.Errorf("/status last_reload_error %q does not say why", msg)
	}
	if r := call(t, p, "inspera"); r.StatusCode != 200 {
		t.Errorf("inspera after the rejected reload: %d %s", r.StatusCode, r.body)
	}
	for _, path := range []string{"/status", "/metrics", "/config", "/readyz"} {
		noCanaryIn(t, path, get(t, p.admin+path).body, user, pass)
	}
	noCanaryIn(t, "the status page", get(t, p.admin+"/status", "Accept", "text/html").body, user, pass)
}

// A description that would set a header tokenproxy sets itself (the
// request id the upstream receives and may echo, the trace context) is
// refused by validate, check and run alike, with its key path and line,
// before any credential is sent anywhere.
func TestDescriptionHeadersTokenproxySetsRefused(t *testing.T) {
	e := newEnv(t)
	key := canary("static", "key")
	e.secrets = append(e.secrets, key)
	creds := e.writeJSON("static.json", map[string]string{"key": key})
	v := e.vendors["hgem"]
	s := config.DefaultUpstream()
	s.Type, s.BaseURL, s.Credentials, s.CAFile = "static", v.url(), "file:"+creds, e.caFile
	s.Static = &vendordesc.Static{Headers: map[string]string{
		"X-Api-Key": "{credential key}", "x-request-id": "{credential key}", "Baggage": "k={credential key}"}}
	cfg := config.Defaults()
	cfg.Upstreams = config.Upstreams{"s": s}
	text := yamlOf(t, cfg)
	path := e.write("static.yaml", text)
	want := fmt.Sprintf("upstreams.s.static.headers.Baggage: Baggage is the caller's W3C Baggage, passed on as sent (line %d)\n"+
		"upstreams.s.static.headers.x-request-id: X-Request-Id is tokenproxy's: the caller's id, or a new one, goes to the upstream and back (CONTRACT.md §3) (line %d)\n",
		lineWith(t, text, "Baggage:"), lineWith(t, text, "x-request-id:"))
	for _, cmd := range []string{"validate", "check", "run"} {
		if r := e.cli("", cmd, "--config", path); r.code != 2 || r.stdout != "" || r.stderr != want {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 2 and\n%s", cmd, r.code, r.stdout, r.stderr, want)
		}
	}
	if n := v.sim.APICalls(); n != 0 {
		t.Errorf("%d API calls for a refused config", n)
	}
}

// echoEndpoint is a token endpoint that refuses every request, repeating
// in its 401 what it was sent: the Authorization header and the body.
func echoEndpoint(t *testing.T) *httptest.Server {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, "invalid_client: auth=%s body=%s", r.Header.Get("Authorization"), body)
	}))
	srv.Config.ErrorLog = discardLog
	t.Cleanup(srv.Close)
	return srv
}

// A token endpoint that echoes the credentials as it received them
// (Basic's base64 of id:secret, a form-encoded body) shows them nowhere:
// not in the 502's message, /status, the status page, /metrics, /readyz or
// the log. The secret holds characters that every encoding changes.
func TestVendorEchoOfEncodedCredentialsHidden(t *testing.T) {
	e := newEnv(t)
	srv := echoEndpoint(t)
	cfg := newConfig()
	cfg.LogLevel = "debug"
	var forms []string
	for _, style := range []string{"basic", "body"} {
		id, secret := canary("echo"+style, "id"), "s+e/c r=t%é-"+canary("echo"+style, "secret")
		pair := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
		e.secrets = append(e.secrets, id, secret, pair)
		for _, s := range []string{id, secret, pair} {
			forms = append(forms, redact.Forms(s)...)
		}
		creds := e.writeJSON("echo-"+style+".json", map[string]string{"client_id": id, "client_secret": secret})
		u := config.DefaultUpstream()
		u.Type, u.BaseURL, u.TokenURL, u.Credentials, u.CAFile = "oauth2", srv.URL, srv.URL+"/token", "file:"+creds, e.caFile
		u.OAuth2 = &vendordesc.OAuth2{AuthStyle: style}
		cfg.Upstreams["echo-"+style] = u
	}
	p := e.start(cfg)
	for _, style := range []string{"basic", "body"} {
		name := "echo-" + style
		waitFor(t, 20*time.Second, name+"'s refusal", func() bool { return statusOfAll(t, p)[name]["state"] == "error" })
		r := get(t, p.data+"/"+name+"/v1/anything")
		m := wantError(t, r, http.StatusBadGateway, "token_endpoint_error", name)
		if msg := m["message"].(string); !strings.Contains(msg, "REDACTED") || !strings.Contains(msg, "invalid_client: auth=") {
			t.Errorf("%s: the message should show the echo with REDACTED in it: %s", name, msg)
		}
		noPartIn(t, name+"'s 502", r.body, forms...)
	}
	for _, path := range []string{"/status", "/metrics", "/readyz", "/config"} {
		noPartIn(t, path, get(t, p.admin+path).body, forms...)
	}
	noPartIn(t, "the status page", get(t, p.admin+"/status", "Accept", "text/html").body, forms...)
	if !p.logged("token fetch failed", map[string]any{"reason": "refused"}) {
		t.Error("no refusal in the log to search")
	}
	noPartIn(t, "the log", []byte(p.out.String()), forms...)
}

// Two replicas sharing through Vault with file: credentials (no version of
// their own) agree on the credential version they compare, so the second
// uses the first one's token; but what each shows (/status, the log) is a
// fingerprint keyed per process: different on each, and never the bare
// hash of the content, which would let a guessed credential be checked
// offline. The bare hash is kept only in the shared record in Vault.
func TestCredentialVersionShownIsKeyedPerProcess(t *testing.T) {
	v := newVaultEnv(t)
	v.seedFleet(t)
	hgem := v.vendors["hgem"]
	fleetVersion := secrets.NewCredentials(hgem.creds, "").FleetVersion()
	// The bare hash may be in no output at all.
	v.secrets = append(v.secrets, strings.TrimPrefix(fleetVersion, "sha256:"))
	cfg := v.fleetConfig(vaultRoute{"hgem", "hgem", "file:" + filepath.Join(v.dir, "hgem.json")})

	a := v.startFleet(t, 1, cfg).procs[0]
	a.ready(t)
	b := v.startFleet(t, 1, cfg).procs[0]
	b.ready(t)
	if n := hgem.sim.TokenCalls(); n != 1 {
		t.Errorf("%d token requests for two replicas with the same file: credentials, want 1 (the second uses the first one's token)", n)
	}
	if rec := v.sharedRecord(t, "hgem"); rec["credential_version"] != fleetVersion {
		t.Errorf("shared record credential_version %v, want the content's fingerprint %s", rec["credential_version"], fleetVersion)
	}
	var shown []string
	for _, p := range []*proc{a, b} {
		st := p.vaultStatus(t)["hgem"]
		s, _ := st["credential_version"].(string)
		if !strings.HasPrefix(s, "hmac-sha256:") || st["minted_by"] != a.replicaID(t) {
			t.Errorf("/status hgem: credential_version %q minted_by %v, want an hmac-sha256: fingerprint and %s", s, st["minted_by"], a.replicaID(t))
		}
		if !p.logged("credentials loaded", map[string]any{"version": s}) {
			t.Errorf("no \"credentials loaded\" line with the version /status shows, %s", s)
		}
		shown = append(shown, s)
		for _, path := range []string{"/status", "/metrics", "/config"} {
			noCanaryIn(t, path, get(t, p.admin+path).body, strings.TrimPrefix(fleetVersion, "sha256:"))
		}
		noCanaryIn(t, "the status page", get(t, p.admin+"/status", "Accept", "text/html").body, strings.TrimPrefix(fleetVersion, "sha256:"))
	}
	if shown[0] == shown[1] {
		t.Errorf("both replicas show %s: the fingerprint shown is not keyed per process", shown[0])
	}
}
