package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/testlog"
	vendordesc "github.com/tokenproxy/tokenproxy/internal/vendor"
)

// The generic types (docs/adding-an-api.md) against the real binary: an
// API described only in the config, with no code for it.

// type oauth2 against the simulators: HGEM as an RFC 6749 client
// credentials server with client_secret in the body and an API key header
// on both sides, and Prodoscore's Keycloak as a public client's password
// grant whose refresh tokens rotate.
func TestOAuth2AgainstSimulators(t *testing.T) {
	e := newEnv(t)
	hg, kc := e.vendors["hgem"], e.vendors["prodoscore"]
	kc.sim.SetTokenLifetime(3 * time.Second) // refreshed at about 2 s
	// The simulators' entries (base_url, credentials, CA), as type oauth2.
	cfg := newConfig()
	cfg.LogLevel = "debug"
	cfg.Upstreams["results"] = e.upstream("hgem", func(u *config.Upstream) {
		u.Type, u.TokenURL, u.Scope = "oauth2", hg.url()+"/connect/token", "hgem-results-api visits/standard.read"
		apiKey := map[string]string{"hgem-api-key": "{credential api_key}"}
		u.OAuth2 = &vendordesc.OAuth2{AuthStyle: "body", TokenHeaders: apiKey, Headers: apiKey}
	})
	cfg.Upstreams["keycloak"] = e.upstream("prodoscore", func(u *config.Upstream) {
		u.Type, u.OAuth2 = "oauth2", &vendordesc.OAuth2{Grant: "password", AuthStyle: "none"}
	})
	p := e.start(cfg)
	p.ready(t)

	r := get(t, p.data+"/results/api/visits", "hgem-api-key", "caller-key", "Authorization", "Bearer caller")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("results: %d %s", r.StatusCode, r.body)
	}
	seen := hg.sim.APIRequests()
	last := seen[len(seen)-1].Header
	if k := last.Values("Hgem-Api-Key"); len(k) != 1 || k[0] != hg.creds["api_key"] {
		t.Errorf("the API got hgem-api-key %d times, or not the configured key", len(k))
	}
	if a := last.Values("Authorization"); len(a) != 1 || !slices.Contains(hg.sim.Tokens(), strings.TrimPrefix(a[0], "Bearer ")) {
		t.Errorf("the API got %d Authorization headers, or not the issued token", len(a))
	}
	form := hg.sim.TokenRequestsSeen()[0]
	if form.Header.Get("Authorization") != "" || !strings.Contains(string(form.Body), "scope=hgem-results-api+visits%2Fstandard.read") {
		t.Errorf("token request: Basic %t, body without the scope", form.Header.Get("Authorization") != "")
	}

	if r := get(t, p.data+"/keycloak/api/v1/employees"); r.StatusCode != http.StatusOK {
		t.Fatalf("keycloak: %d %s", r.StatusCode, r.body)
	}
	// The refresh grant, then the next with the rotated refresh token.
	waitFor(t, 20*time.Second, "two refresh grants", func() bool {
		n := 0
		for _, tr := range kc.sim.TokenRequests() {
			if tr.Grant == "refresh_token" && tr.Status == http.StatusOK {
				n++
			}
		}
		return n >= 2
	})
	for _, tr := range answeredTokenRequests(t, kc.sim, 0) {
		if tr.Status != http.StatusOK {
			t.Errorf("a token request was refused: %+v (a rotated refresh token presented twice?)", tr)
		}
	}
	if r := get(t, p.data+"/keycloak/api/v1/employees"); r.StatusCode != http.StatusOK {
		t.Fatalf("keycloak after refreshes: %d %s", r.StatusCode, r.body)
	}
}

// type oauth2 against a real OAuth 2 server: oidc-provider under node,
// client credentials with HTTP Basic client authentication (the default
// auth_style) and a scope; its own API accepts only tokens it issued.
func TestOAuth2AgainstOIDCProvider(t *testing.T) {
	e := newEnv(t)
	dir, _ := filepath.Abs("testdata/oidc")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "oidc-provider")); err != nil {
		t.Fatalf("oidc-provider is not installed: run `npm ci --prefix e2e/testdata/oidc` (scripts/test.sh does): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is needed for the real OAuth 2 server: %v", err)
	}
	id, secret := canary("oidc", "client_id"), canary("oidc", "client_secret")
	e.secrets = append(e.secrets, id, secret)
	out := &testlog.Buffer{}
	cmd := exec.Command(node, filepath.Join(dir, "server.js"))
	cmd.Env = append(os.Environ(), "OIDC_CLIENT_ID="+id, "OIDC_CLIENT_SECRET="+secret)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := func(key string) []map[string]any {
		var ms []map[string]any
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m[key] != nil {
				ms = append(ms, m)
			}
		}
		return ms
	}
	waitFor(t, 30*time.Second, "oidc-provider to listen", func() bool { return len(lines("issuer")) > 0 })
	issuer := lines("issuer")[0]["issuer"].(string)

	creds := e.writeJSON("oidc.json", map[string]string{"client_id": id, "client_secret": secret})
	idp := config.DefaultUpstream()
	idp.Type, idp.BaseURL, idp.TokenURL, idp.Scope, idp.Credentials = "oauth2", issuer, issuer+"/token", "api:read", "file:"+creds
	cfg := newConfig()
	cfg.LogLevel = "debug"
	cfg.Upstreams["idp"] = idp
	p := e.start(cfg)
	p.ready(t)
	for range 3 {
		r := get(t, p.data+"/idp/api/whoami", "Authorization", "Bearer caller")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("whoami: %d %s", r.StatusCode, r.body)
		}
		m := r.json(t)
		if m["client_id"] != id || m["scope"] != "api:read" {
			t.Fatalf("whoami answered for another client or scope (scope %v)", m["scope"])
		}
	}
	if n := len(lines("issued")); n != 1 {
		t.Errorf("oidc-provider issued %d tokens, want 1", n)
	}

	// Wrong client secret: the server's refusal, with its RFC 6749 code.
	bad := e.writeJSON("oidc-bad.json", map[string]string{"client_id": id, "client_secret": secret + "-wrong"})
	e.secrets = append(e.secrets, secret+"-wrong")
	idp.Scope, idp.Credentials = "", "file:"+bad
	cfg = newConfig()
	cfg.Upstreams["idp"] = idp
	q := e.start(cfg)
	waitFor(t, 20*time.Second, "the refusal", func() bool { return len(lines("refused")) > 0 })
	m := wantError(t, get(t, q.data+"/idp/api/whoami"), http.StatusBadGateway, "token_endpoint_error", "idp")
	if !strings.Contains(m["message"].(string), "invalid_client") {
		t.Errorf("message %q does not name invalid_client", m["message"])
	}
}

// weather is an API that takes a static key in X-Api-Key and has no token
// endpoint at all.
type weather struct {
	mu   sync.Mutex
	key  string
	seen []http.Header
}

func (w *weather) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, r.Header.Clone())
	if k := r.Header.Values("X-Api-Key"); len(k) != 1 || k[0] != w.key || r.URL.Path != "/v1/forecast" {
		http.Error(rw, `{"error": "bad key"}`, http.StatusUnauthorized)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.Write([]byte(`{"forecast": "sun"}`))
}

// type static: the key from the credentials on every call, the caller's
// copies gone, nothing asked of any token endpoint, and a rotated key in
// use once the credentials are read again.
func TestStaticUpstream(t *testing.T) {
	e := newEnv(t)
	key1, key2 := canary("weather", "api_key"), canary("weather", "api_key")
	e.secrets = append(e.secrets, key1, key2)
	api := &weather{key: key1}
	srv := httptest.NewTLSServer(api)
	t.Cleanup(srv.Close)
	creds := e.writeJSON("weather.json", map[string]string{"api_key": key1})
	w := config.DefaultUpstream()
	w.Type, w.BaseURL, w.Credentials, w.CAFile = "static", srv.URL, "file:"+creds, e.caFile
	w.Static = &vendordesc.Static{Headers: map[string]string{"X-Api-Key": "{credential api_key}"}}
	cfg := newConfig()
	cfg.LogLevel, cfg.Secrets.PollInterval.Duration = "debug", 200*time.Millisecond
	cfg.Upstreams["weather"] = w
	p := e.start(cfg)
	p.ready(t)
	r := get(t, p.data+"/weather/v1/forecast", "X-Api-Key", "caller", "Authorization", "Bearer caller", "x-api-key", "again")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("forecast: %d %s", r.StatusCode, r.body)
	}
	api.mu.Lock()
	h := api.seen[len(api.seen)-1]
	n := len(api.seen)
	api.mu.Unlock()
	if k := h.Values("X-Api-Key"); len(k) != 1 || k[0] != key1 || h.Get("Authorization") != "" {
		t.Errorf("the API got %d X-Api-Key values (the configured one: %t) and Authorization %t", len(k), len(k) == 1 && k[0] == key1, h.Get("Authorization") != "")
	}
	if n != 1 {
		t.Errorf("the API saw %d requests, want only the call (no token endpoint)", n)
	}
	st := get(t, p.admin+"/status").json(t)["upstreams"].(map[string]any)["weather"].(map[string]any)
	if st["state"] != "ready" || st["type"] != "static" {
		t.Errorf("status %v", st)
	}

	// Rotation: the API takes only the new key. A 401 goes back as the API
	// sent it, without a replay (a static token is the credentials: another
	// would be the same) and without counting a re-mint; the credentials
	// are read again, and the new key is in use once the file has it.
	api.mu.Lock()
	api.key = key2
	before := len(api.seen)
	api.mu.Unlock()
	if r := do(t, http.MethodPost, p.data+"/weather/v1/forecast", strings.NewReader("body")); r.StatusCode != http.StatusUnauthorized || r.Header.Get("Tokenproxy-Error") != "" {
		t.Fatalf("with the old key: %d %q, want the API's own 401", r.StatusCode, r.Header.Get("Tokenproxy-Error"))
	}
	api.mu.Lock()
	asked := len(api.seen) - before
	api.mu.Unlock()
	if asked != 1 {
		t.Errorf("the API was asked %d times for one request answered 401, want 1 (no replay)", asked)
	}
	if n := metric(t, p, `tokenproxy_upstream_reauth_total{upstream="weather"}`); n != 0 {
		t.Errorf("reauth counted %v for a static upstream", n)
	}
	e.writeJSON("weather.json", map[string]string{"api_key": key2})
	waitFor(t, 20*time.Second, "the rotated key", func() bool {
		return get(t, p.data+"/weather/v1/forecast").StatusCode == http.StatusOK
	})
}

// ledger simulates the fifth API of configs/custom-example.yaml: a JSON
// key id and secret for {"result": {"jwt", "ttl"}}, then
// "Authorization: Token <jwt>" and X-Api-Key on every call.
type ledger struct {
	keyID, secret string

	mu         sync.Mutex
	issued     []string
	tokenCalls int
	seen       []http.Header
}

func (l *ledger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/v2/auth/session":
		l.tokenCalls++
		var body map[string]string
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
			json.NewDecoder(r.Body).Decode(&body) != nil || body["keyId"] != l.keyID || body["secret"] != l.secret || len(body) != 2 {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error": {"code": "bad_key", "message": "unknown key or secret"}}`))
			return
		}
		b := make([]byte, 24)
		rand.Read(b)
		tok := "ldg_" + base64.RawURLEncoding.EncodeToString(b)
		l.issued = append(l.issued, tok)
		fmt.Fprintf(w, `{"result": {"jwt": %q, "ttl": "3600"}}`, tok)
	case "/v2/entries":
		l.seen = append(l.seen, r.Header.Clone())
		auth, keys := r.Header.Values("Authorization"), r.Header.Values("X-Api-Key")
		if len(auth) != 1 || !slices.Contains(l.issued, strings.TrimPrefix(auth[0], "Token ")) || !strings.HasPrefix(auth[0], "Token ") ||
			len(keys) != 1 || keys[0] != l.keyID {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error": {"code": "unauthorized"}}`))
			return
		}
		w.Write([]byte(`{"entries": [{"id": 1, "amount": "12.50"}]}`))
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// configs/custom-example.yaml as shipped, pointed at its simulator: the
// fifth API works from the YAML alone, and a wrong secret is the API's
// refusal in its own words.
func TestCustomExampleConfig(t *testing.T) {
	e := newEnv(t)
	api := &ledger{keyID: canary("ledger", "key_id"), secret: canary("ledger", "key_secret")}
	e.secrets = append(e.secrets, api.keyID, api.secret)
	srv := httptest.NewTLSServer(api)
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		api.mu.Lock()
		e.secrets = append(e.secrets, api.issued...)
		api.mu.Unlock()
	})

	example, err := config.Load("../configs/custom-example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	example.Listen, example.AdminListen, example.LogLevel = "127.0.0.1:0", "127.0.0.1:0", "debug"
	u := example.Upstreams["ledger"]
	u.BaseURL, u.TokenURL, u.CAFile = srv.URL+"/v2", "", e.caFile
	u.Credentials = "file:" + e.writeJSON("ledger.json", map[string]string{"key_id": api.keyID, "key_secret": api.secret})
	wrong := u
	wrong.Credentials = "file:" + e.writeJSON("ledger-wrong.json", map[string]string{"key_id": api.keyID, "key_secret": "wrong-" + api.secret})
	example.Upstreams = config.Upstreams{"ledger": u, "ledger-wrong": wrong}
	p := e.start(*example)
	waitFor(t, 20*time.Second, "the ledger's token", func() bool {
		return get(t, p.admin+"/readyz?upstream=ledger").StatusCode == http.StatusOK
	})

	r := get(t, p.data+"/ledger/entries", "Authorization", "Bearer caller", "X-Api-Key", "caller")
	if r.StatusCode != http.StatusOK || !strings.Contains(string(r.body), "12.50") {
		t.Fatalf("entries: %d %s", r.StatusCode, r.body)
	}
	api.mu.Lock()
	h, calls, issued := api.seen[len(api.seen)-1], api.tokenCalls, slices.Clone(api.issued)
	api.mu.Unlock()
	if a := h.Values("Authorization"); len(a) != 1 || a[0] != "Token "+issued[0] {
		t.Errorf("the API got %d Authorization values, or not Token <the issued jwt>", len(a))
	}
	if k := h.Values("X-Api-Key"); len(k) != 1 || k[0] != api.keyID {
		t.Errorf("the API got %d X-Api-Key values, or not the key id", len(k))
	}
	// One for ledger, at least one refused for ledger-wrong.
	if calls < 2 || len(issued) != 1 {
		t.Errorf("%d token calls, %d tokens issued; want one token", calls, len(issued))
	}
	m := wantError(t, get(t, p.data+"/ledger-wrong/entries"), http.StatusBadGateway, "token_endpoint_error", "ledger-wrong")
	if msg := m["message"].(string); !strings.Contains(msg, "bad_key") || !strings.Contains(msg, "unknown key or secret") {
		t.Errorf("message %q lacks the API's code and description", msg)
	}
}

// `tokenproxy validate` names a description's mistakes by key path and
// line, as it does every other key.
func TestValidateGenericTypes(t *testing.T) {
	e := newEnv(t)
	// Mistyped keys: the text is the subject.
	path := e.write("bad.yaml", []byte(`upstreams:
  ledger:
    type: custom
    base_url: https://api.ledger.example
    credentials: env:LEDGER
    custom:
      token:
        url: /auth/session
        fields: {keyId: "{credential key_id}"}
      answer: {acess_token: result.jwt}
      headers:
        Authorization: "Token {token}"
        Proxy-Authorization: "{credential key_id}"
`))
	cmd := exec.Command(binary, "validate", "--config", path, "--offline")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	for _, want := range []string{
		`upstreams.ledger.custom.answer.acess_token: unknown key (line 10); did you mean "access_token"?`,
		"upstreams.ledger.custom.answer.access_token: required",
		"upstreams.ledger.custom.headers.Proxy-Authorization: Proxy-Authorization is read by an HTTP proxy on the way, so its value would reach a host other than the upstream's (line 13)",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
}
