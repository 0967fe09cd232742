package e2e

// End-to-end tests of tokenproxy's Vault credentials: the real binary against
// a real `vault server -dev` (internal/vaulttest) and the vendor simulators,
// all on 127.0.0.1. A test that cannot have Vault fails; none is skipped.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vaulttest"
)

// vaultKinds are the four vendors, each read from secret/tokenproxy/<kind>.
var vaultKinds = []string{"prominsight", "inspera", "hgem", "prodoscore"}

// vaultEnv is a test's simulators (env), its Vault dev server, and the Vault
// secrets that tokenproxy must never write anywhere.
type vaultEnv struct {
	*env
	srv      *vaulttest.Server
	root     *api.Client
	roleID   string // custom AppRole ids, so the files stay valid across a Vault restart
	secretID string
	roleFile string
	sidFile  string
	secrets  []string // searched for in every process's output on cleanup
}

func newVaultEnv(t *testing.T) *vaultEnv {
	t.Helper()
	e := newEnv(t)
	srv := vaulttest.Start(t)
	v := &vaultEnv{env: e, srv: srv, root: srv.Client(),
		roleID: vaultCanary("role-id"), secretID: vaultCanary("secret-id")}
	v.roleFile = e.write("role_id", []byte(v.roleID+"\n"))
	v.sidFile = e.write("secret_id", []byte(v.secretID+"\n"))
	// Service and batch tokens carry these prefixes; the root token does not.
	v.secrets = append(v.secrets, srv.RootToken(), v.roleID, v.secretID, "hvs.", "hvb.")
	// Registered before any proxy starts, so it runs after their stop (cleanups
	// run last-in first-out); stop them here anyway, to read their whole output.
	t.Cleanup(func() {
		for _, p := range e.procs {
			p.stop()
		}
		for _, p := range e.procs {
			out := p.out.String()
			for _, s := range v.secrets {
				if strings.Contains(out, s) {
					t.Errorf("tokenproxy's output holds a Vault secret or a credential (%.24s...)", s)
				}
			}
		}
	})
	return v
}

// vaultCanary is a distinctive value to search output for.
func vaultCanary(what string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return "CANARY-" + what + "-" + hex.EncodeToString(b)
}

// seed fills an empty Vault: the four vendors' credentials in KV v2 at
// secret/tokenproxy/<kind>, Inspera's also in a KV v1 mount at
// kv1/tokenproxy/inspera, the policy of deploy/vault/policy.hcl extended to
// that v1 path, and the AppRole "tokenproxy" with the env's custom ids.
func (v *vaultEnv) seed(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, kind := range vaultKinds {
		v.putKV2(t, kind, v.vendors[kind].creds)
	}
	if err := v.root.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatalf("mounting kv1: %v", err)
	}
	v.vaultWrite(t, "kv1/tokenproxy/inspera", vaultAny(v.vendors["inspera"].creds))
	policy, err := os.ReadFile("../deploy/vault/policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	policy = append(policy, "\npath \"kv1/tokenproxy/*\" {\n  capabilities = [\"read\"]\n}\n"...)
	if err := v.root.Sys().PutPolicyWithContext(ctx, "tokenproxy", string(policy)); err != nil {
		t.Fatalf("policy: %v", err)
	}
	if err := v.root.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatalf("enabling approle: %v", err)
	}
	v.vaultWrite(t, "auth/approle/role/tokenproxy", map[string]any{"token_policies": "tokenproxy", "token_ttl": "1h", "token_max_ttl": "24h"})
	v.vaultWrite(t, "auth/approle/role/tokenproxy/role-id", map[string]any{"role_id": v.roleID})
	v.vaultWrite(t, "auth/approle/role/tokenproxy/custom-secret-id", map[string]any{"secret_id": v.secretID})
}

// putKV2 writes secret/tokenproxy/<name> and returns its new version.
func (v *vaultEnv) putKV2(t *testing.T, name string, data map[string]string) int {
	t.Helper()
	return v.putKV2Any(t, name, vaultAny(data))
}

func (v *vaultEnv) putKV2Any(t *testing.T, name string, data map[string]any) int {
	t.Helper()
	s, err := v.root.KVv2("secret").Put(context.Background(), "tokenproxy/"+name, data)
	if err != nil {
		t.Fatalf("put secret/tokenproxy/%s: %v", name, err)
	}
	return s.VersionMetadata.Version
}

func (v *vaultEnv) vaultWrite(t *testing.T, path string, data map[string]any) {
	t.Helper()
	if _, err := v.root.Logical().Write(path, data); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func vaultAny(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, x := range m {
		out[k] = x
	}
	return out
}

// approle is the Vault login with the env's AppRole files.
func (v *vaultEnv) approle() config.VaultAuth {
	return config.VaultAuth{Method: "approle", RoleIDFile: v.roleFile, SecretIDFile: v.sidFile}
}

// vaultRoute is one upstream of a Vault test: its route name, type and reference.
type vaultRoute struct{ name, kind, ref string }

func vaultKV2Route(kind string) vaultRoute {
	return vaultRoute{kind, kind, "vault:secret/tokenproxy/" + kind}
}

func vaultKV2Routes() []vaultRoute {
	var out []vaultRoute
	for _, k := range vaultKinds {
		out = append(out, vaultKV2Route(k))
	}
	return out
}

// vaultConfig is a tokenproxy config reading its credentials from this
// Vault, polled every poll, logging in with auth; debug logs, and a
// shutdown_timeout of 5s.
func (v *vaultEnv) vaultConfig(poll time.Duration, auth config.VaultAuth, routes ...vaultRoute) config.Config {
	c := newConfig()
	c.LogLevel, c.ShutdownTimeout.Duration = "debug", 5*time.Second
	vault := config.DefaultVault()
	vault.Address, vault.PollInterval.Duration, vault.Auth = v.srv.Addr(), poll, auth
	c.Secrets.Vault = &vault
	for _, r := range routes {
		c.Upstreams[r.name] = v.upstream(r.kind, func(u *config.Upstream) { u.Credentials = r.ref })
	}
	return c
}

// vaultCall sends kind's usual API call to route.
func vaultCall(t *testing.T, p *proc, route, kind string) *response {
	t.Helper()
	a := apiPath[kind]
	var body io.Reader
	var header []string
	if a.body != "" {
		body = strings.NewReader(a.body)
		header = []string{"Content-Type", "application/json"}
	}
	return do(t, a.method, p.data+"/"+route+a.path, body, header...)
}

// vaultTryCall is call for a goroutine other than the test's: it never fails the
// test itself.
func vaultTryCall(p *proc, kind string) (int, string, error) {
	a := apiPath[kind]
	req, err := http.NewRequest(a.method, p.data+"/"+kind+a.path, strings.NewReader(a.body))
	if err != nil {
		return 0, "", err
	}
	if a.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// vaultTrickle sends a steady stream of requests to kinds, one after another,
// until stop; every answer other than 200 is kept.
type vaultTrickle struct {
	mu       sync.Mutex
	ok       int
	failures []string
	stopped  chan struct{}
	done     chan struct{}
}

func startVaultTrickle(p *proc, kinds ...string) *vaultTrickle {
	tr := &vaultTrickle{stopped: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		tick := time.NewTicker(15 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-tr.stopped:
				return
			case <-tick.C:
			}
			kind := kinds[i%len(kinds)]
			status, body, err := vaultTryCall(p, kind)
			tr.mu.Lock()
			if err != nil || status != 200 {
				tr.failures = append(tr.failures, fmt.Sprintf("%s: %d %v %.300s", kind, status, err, body))
			} else {
				tr.ok++
			}
			tr.mu.Unlock()
		}
	}()
	return tr
}

func (tr *vaultTrickle) oks() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.ok
}

// stop ends the stream and returns how many requests succeeded and the failures.
func (tr *vaultTrickle) stop() (int, []string) {
	close(tr.stopped)
	<-tr.done
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.ok, tr.failures
}

// status is /status's upstreams.
func (p *proc) vaultStatus(t *testing.T) map[string]map[string]any {
	t.Helper()
	r := get(t, p.admin+"/status")
	if r.StatusCode != 200 {
		t.Fatalf("/status: %d %s", r.StatusCode, r.body)
	}
	out := map[string]map[string]any{}
	for name, u := range r.json(t)["upstreams"].(map[string]any) {
		out[name] = u.(map[string]any)
	}
	return out
}

// metric sums the samples of a metric whose labels include the given
// name/value pairs.
func (p *proc) vaultMetric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	r := get(t, p.admin+"/metrics")
	sum := 0.0
	for _, line := range strings.Split(string(r.body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series, value := line[:i], line[i+1:]
		n, lbl, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		match := true
		for j := 0; j+1 < len(labels); j += 2 {
			match = match && (strings.Contains(lbl, ","+labels[j]+`="`+labels[j+1]+`"`) ||
				strings.HasPrefix(lbl, labels[j]+`="`+labels[j+1]+`"`))
		}
		if f, err := strconv.ParseFloat(value, 64); match && err == nil {
			sum += f
		}
	}
	return sum
}

func (p *proc) vaultReads(t *testing.T, result string) float64 {
	t.Helper()
	return p.vaultMetric(t, "tokenproxy_secret_reads_total", "source", "vault", "result", result)
}

// logins is (successful, failed) Vault logins so far.
func (p *proc) vaultLogins(t *testing.T) (int, int) {
	t.Helper()
	return int(p.vaultMetric(t, "tokenproxy_vault_logins_total", "result", "success")),
		int(p.vaultMetric(t, "tokenproxy_vault_logins_total", "result", "error"))
}

// vaultCredsErrLogged reports whether a log line says upstream's
// credentials at ref could not be used, with an error holding want.
func (p *proc) vaultCredsErrLogged(upstream, ref, want string) bool {
	for _, l := range p.logLines() {
		if l["msg"] == "credentials unavailable; keeping the last good ones if any" && l["upstream"] == upstream &&
			l["credentials"] == ref && strings.Contains(fmt.Sprint(l["error"]), want) {
			return true
		}
	}
	return false
}

// vaultTokenSeen reports whether the simulator answered 200 to a token request
// carrying the value.
func vaultTokenSeen(v *vendor, value string) bool {
	for _, r := range v.sim.TokenRequestsSeen() {
		if r.Status == 200 && strings.Contains(string(r.Body), value) {
			return true
		}
	}
	return false
}

// TestVaultAllUpstreamsKVv2AndKVv1AppRole: four upstreams from KV v2 and one
// from a KV v1 mount, logging in with AppRole under deploy/vault/policy.hcl.
func TestVaultAllUpstreamsKVv2AndKVv1AppRole(t *testing.T) {
	v := newVaultEnv(t)
	v.seed(t)
	routes := append(vaultKV2Routes(), vaultRoute{"inspera-kv1", "inspera", "vault:kv1/tokenproxy/inspera"})
	p := v.start(v.vaultConfig(time.Minute, v.approle(), routes...))
	p.ready(t)

	for _, r := range routes {
		if resp := vaultCall(t, p, r.name, r.kind); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", r.name, resp.StatusCode, resp.body)
		}
	}
	// Two upstreams read the same Inspera credentials: both fetched a token.
	if n := v.vendors["inspera"].sim.TokenCalls(); n != 2 {
		t.Errorf("inspera: %d token requests for two upstreams, want 2", n)
	}
	st := p.vaultStatus(t)
	for _, r := range routes[:4] {
		if got := st[r.name]["credential_version"]; got != "1" {
			t.Errorf("%s: credential_version %v, want the KV v2 version 1", r.name, got)
		}
	}
	if got, _ := st["inspera-kv1"]["credential_version"].(string); !strings.HasPrefix(got, "hmac-sha256:") {
		t.Errorf("inspera-kv1: credential_version %q, want a content fingerprint", got)
	}
	if ok, failed := p.vaultLogins(t); ok != 1 || failed != 0 {
		t.Errorf("Vault logins: %d successful, %d failed; want exactly one", ok, failed)
	}
	if n := p.vaultReads(t, "success"); n < 5 {
		t.Errorf("%v successful Vault reads, want at least one per upstream", n)
	}
	if n := p.vaultReads(t, "error"); n != 0 {
		// A read before the first login ends fails; the watch retries within a second.
		t.Logf("%v failed Vault reads at start (before the first login)", n)
	}
}

// TestVaultTokenFile logs in with a token from token_file.
func TestVaultTokenFile(t *testing.T) {
	v := newVaultEnv(t)
	v.seed(t)
	tok, err := v.root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"tokenproxy"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	v.secrets = append(v.secrets, tok.Auth.ClientToken)
	file := v.env.write("vault-token", []byte(tok.Auth.ClientToken+"\n"))
	p := v.start(v.vaultConfig(time.Minute, config.VaultAuth{Method: "token", TokenFile: file},
		vaultKV2Route("hgem"), vaultRoute{"inspera-kv1", "inspera", "vault:kv1/tokenproxy/inspera"}))
	p.ready(t)
	if r := vaultCall(t, p, "hgem", "hgem"); r.StatusCode != 200 {
		t.Fatalf("hgem: %d %s", r.StatusCode, r.body)
	}
	if r := vaultCall(t, p, "inspera-kv1", "inspera"); r.StatusCode != 200 {
		t.Fatalf("inspera-kv1: %d %s", r.StatusCode, r.body)
	}
	if ok, failed := p.vaultLogins(t); ok != 1 || failed != 0 {
		t.Errorf("Vault logins: %d successful, %d failed; want one", ok, failed)
	}

	// The admin plane shows the login and the token file's path, never the
	// token read from it.
	var doc struct {
		Vault struct {
			LoggedIn        bool   `json:"logged_in"`
			Method          string `json:"method"`
			TokenTTLSeconds *int   `json:"token_ttl_seconds"`
		} `json:"vault"`
	}
	status := get(t, p.admin+"/status")
	if err := json.Unmarshal(status.body, &doc); err != nil || !doc.Vault.LoggedIn || doc.Vault.Method != "token" ||
		doc.Vault.TokenTTLSeconds == nil || *doc.Vault.TokenTTLSeconds < 3500 || *doc.Vault.TokenTTLSeconds > 3600 {
		t.Errorf("/status vault: %+v (%v)", doc.Vault, err)
	}
	cfg := get(t, p.admin+"/config", "Accept", "application/yaml")
	if !strings.Contains(string(cfg.body), "token_file: "+file) {
		t.Errorf("/config should name the token file:\n%s", cfg.body)
	}
	page := get(t, p.admin+"/status", "Accept", "text/html")
	for _, out := range []*response{status, cfg, page, get(t, p.admin+"/config"), get(t, p.admin+"/")} {
		for _, secret := range v.secrets {
			if strings.Contains(string(out.body), secret) {
				t.Errorf("%s holds a Vault secret or token (%.24s...)", out.Request.URL.Path, secret)
			}
		}
	}
}

// TestVaultRotationPickedUpWithoutAFailedRequest rotates HGEM's credentials at
// the vendor and in Vault under a steady trickle of requests.
func TestVaultRotationPickedUpWithoutAFailedRequest(t *testing.T) {
	const poll = 500 * time.Millisecond
	v := newVaultEnv(t)
	v.seed(t)
	p := v.start(v.vaultConfig(poll, v.approle(), vaultKV2Routes()...))
	p.ready(t)
	hgem := v.vendors["hgem"]
	oldGen := p.vaultStatus(t)["hgem"]["token_generation"].(float64)
	oldTokens := len(hgem.sim.Tokens())

	tr := startVaultTrickle(p, "hgem", "hgem", "prominsight")
	waitFor(t, 10*time.Second, "the first requests of the trickle", func() bool { return tr.oks() >= 5 })

	// The vendor first: it accepts only the new client credentials from now
	// on, and the tokens it issued keep working until they expire. (The
	// simulator checks hgem-api-key against its current api_key on every API
	// call, so a new api_key would fail requests on the old one at once
	// whatever the proxy does; TestVaultRefusalRereadsAtOnce rotates it.)
	newCreds := map[string]string{"api_key": hgem.creds["api_key"]}
	for _, k := range []string{"client_id", "client_secret"} {
		newCreds[k] = vaultCanary("hgem-rotated-" + strings.ReplaceAll(k, "_", ""))
		v.secrets = append(v.secrets, newCreds[k])
	}
	hgem.sim.SetCredentials(newCreds)
	// Then Vault: version 2.
	if n := v.putKV2(t, "hgem", newCreds); n != 2 {
		t.Fatalf("put version %d, want 2", n)
	}
	written := time.Now()

	var picked, minted time.Duration
	waitFor(t, 10*time.Second, "credential_version 2 in /status", func() bool {
		if p.vaultStatus(t)["hgem"]["credential_version"] == "2" {
			picked = time.Since(written)
			return true
		}
		return false
	})
	waitFor(t, 10*time.Second, "a token minted from the new credentials", func() bool {
		st := p.vaultStatus(t)["hgem"]
		if st["token_generation"].(float64) > oldGen && vaultTokenSeen(hgem, newCreds["client_secret"]) {
			minted = time.Since(written)
			return true
		}
		return false
	})
	// Keep the trickle going until requests have gone out on the new token.
	after := tr.oks()
	waitFor(t, 10*time.Second, "requests on the new token", func() bool { return tr.oks() >= after+10 })
	ok, failures := tr.stop()
	t.Logf("rotation: version 2 in /status %s after the write to Vault (poll_interval %s); new token %s after; %d requests, %d failed",
		picked.Round(time.Millisecond), poll, minted.Round(time.Millisecond), ok, len(failures))
	if len(failures) > 0 {
		t.Fatalf("%d requests failed during the rotation, first: %s", len(failures), failures[0])
	}
	if picked > 4*poll+time.Second {
		t.Errorf("the new version took %s to be picked up with poll_interval %s", picked, poll)
	}

	// The vendor saw exactly one new token request, with the new credentials,
	// and every API call was answered 200: the old token served until the new
	// one was in hand, and then the new one served.
	reqs := hgem.sim.TokenRequestsSeen()
	if n := len(hgem.sim.Tokens()) - oldTokens; n != 1 {
		t.Errorf("%d new HGEM tokens, want 1", n)
	}
	last := reqs[len(reqs)-1]
	if last.Status != 200 || last.Header.Get("hgem-api-key") != newCreds["api_key"] ||
		!strings.Contains(string(last.Body), "client_id="+newCreds["client_id"]) {
		t.Errorf("the last HGEM token request (status %d) did not carry the new credentials", last.Status)
	}
	api := hgem.sim.APIRequests()
	for i, r := range api {
		if r.Status != 200 {
			t.Fatalf("HGEM API request %d of %d answered %d", i, len(api), r.Status)
		}
	}
	tokens := hgem.sim.Tokens()
	if got := strings.TrimPrefix(api[len(api)-1].Header.Get("Authorization"), "Bearer "); got != tokens[len(tokens)-1] {
		t.Error("the last HGEM API request did not carry the token minted from the new credentials")
	}
	for _, kind := range []string{"prominsight", "inspera", "prodoscore"} {
		if n := v.vendors[kind].sim.TokenCalls(); n != 1 {
			t.Errorf("%s: %d token requests, want 1 (its credentials did not change)", kind, n)
		}
	}
}

// TestVaultRefusalRereadsAtOnce: with an hour between polls, a refusal by the
// vendor makes tokenproxy read Vault again at once.
func TestVaultRefusalRereadsAtOnce(t *testing.T) {
	v := newVaultEnv(t)
	v.seed(t)
	p := v.start(v.vaultConfig(time.Hour, v.approle(), vaultKV2Routes()...))
	p.ready(t)
	hgem := v.vendors["hgem"]
	reads := p.vaultReads(t, "success")
	calls := hgem.sim.TokenCalls()

	newCreds := map[string]string{}
	for _, k := range []string{"api_key", "client_id", "client_secret"} {
		newCreds[k] = vaultCanary("hgem-refused-" + strings.ReplaceAll(k, "_", ""))
		v.secrets = append(v.secrets, newCreds[k])
	}
	// Rotated at the vendor, with every token revoked, and then in Vault.
	hgem.sim.SetCredentials(newCreds)
	hgem.sim.RevokeAll()
	v.putKV2(t, "hgem", newCreds)

	start := time.Now()
	first := call(t, p, "hgem")
	var firstOK time.Duration
	waitFor(t, 15*time.Second, "a request to succeed after the refusal", func() bool {
		if call(t, p, "hgem").StatusCode == 200 {
			firstOK = time.Since(start)
			return true
		}
		return false
	})
	t.Logf("refusal: first request %d %q; first 200 %s after the rotation (poll_interval 1h)",
		first.StatusCode, first.Header.Get("Tokenproxy-Error"), firstOK.Round(time.Millisecond))
	// The first request finds its token revoked; the new token it would be
	// replayed with cannot be had yet: the vendor's 401 goes back (or a 502
	// when the refusal is already known).
	switch first.StatusCode {
	case 401:
		if first.Header.Get("Tokenproxy-Error") != "" {
			t.Errorf("first request: a 401 made by tokenproxy: %s", first.body)
		}
	case 502:
		wantError(t, first, 502, "token_endpoint_error", "hgem")
	default:
		t.Errorf("first request: %d %s, want the vendor's 401 or a 502", first.StatusCode, first.body)
	}
	if firstOK > 10*time.Second {
		t.Errorf("recovered after %s", firstOK)
	}

	refused := false
	for _, r := range hgem.sim.TokenRequestsSeen()[calls:] {
		if r.Status != 200 && strings.Contains(string(r.Body), v.vendors["hgem"].creds["client_secret"]) {
			refused = true
		}
	}
	if !refused {
		t.Error("the vendor saw no refused token request with the old credentials")
	}
	if !vaultTokenSeen(hgem, newCreds["client_secret"]) {
		t.Error("the vendor saw no token request with the new credentials")
	}
	if got := p.vaultStatus(t)["hgem"]["credential_version"]; got != "2" {
		t.Errorf("credential_version %v, want 2", got)
	}
	if n := p.vaultReads(t, "success") - reads; n < 1 || n > 3 {
		t.Errorf("%v Vault reads after the refusal, want one or two (a kick, not a storm)", n)
	}
}

// TestVaultOutageKeepsServingAndRecovers stops Vault under traffic, then
// brings it back empty and seeds it again.
func TestVaultOutageKeepsServingAndRecovers(t *testing.T) {
	const lifetime = 4 * time.Second
	v := newVaultEnv(t)
	v.seed(t)
	for _, k := range vaultKinds {
		v.vendors[k].sim.SetTokenLifetime(lifetime)
	}
	routes := append(vaultKV2Routes(), vaultRoute{"inspera-kv1", "inspera", "vault:kv1/tokenproxy/inspera"})
	p := v.start(v.vaultConfig(500*time.Millisecond, v.approle(), routes...))
	p.ready(t)
	kv1Version := p.vaultStatus(t)["inspera-kv1"]["credential_version"]

	checkServing := func() {
		t.Helper()
		for _, r := range routes {
			if resp := vaultCall(t, p, r.name, r.kind); resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", r.name, resp.StatusCode, resp.body)
			}
		}
		if r := get(t, p.admin+"/readyz"); r.StatusCode != 200 {
			t.Fatalf("/readyz %d: %s", r.StatusCode, r.body)
		}
	}
	checkServing()
	calls := map[string]int{}
	for _, k := range vaultKinds {
		calls[k] = v.vendors[k].sim.TokenCalls()
	}
	errs := p.vaultReads(t, "error")

	v.srv.Stop()
	stopped := time.Now()
	requests := 0
	waitFor(t, 30*time.Second, "a token refresh of every upstream and failed reads while Vault is down", func() bool {
		checkServing()
		requests += len(routes)
		for _, k := range vaultKinds {
			if v.vendors[k].sim.TokenCalls() <= calls[k] {
				return false
			}
		}
		return p.vaultReads(t, "error") > errs
	})
	// A few more refreshes' worth of traffic for the upstream with a
	// refresh-token-less grant, on the same last good secrets.
	hgemCalls := v.vendors["hgem"].sim.TokenCalls()
	waitFor(t, 30*time.Second, "a second HGEM refresh while Vault is down", func() bool {
		checkServing()
		requests += len(routes)
		return v.vendors["hgem"].sim.TokenCalls() > hgemCalls
	})
	for _, k := range vaultKinds {
		for i, r := range answeredTokenRequests(t, v.vendors[k].sim, calls[k]) {
			if r.Status != 200 {
				t.Errorf("%s: token request %d during the outage answered %d", k, i, r.Status)
			}
		}
	}
	outage := time.Since(stopped)
	errsDuring := p.vaultReads(t, "error") - errs
	if st := p.vaultStatus(t)["hgem"]; !strings.Contains(fmt.Sprint(st["last_error"]), "vault:secret/tokenproxy/hgem") {
		t.Errorf("/status hgem last_error %q does not name the failing reference", st["last_error"])
	}
	okBefore, failedBefore := p.vaultLogins(t)

	v.srv.Restart() // same port and root token, empty storage
	v.seed(t)
	restarted := time.Now()
	reads := p.vaultReads(t, "success")
	var recovered time.Duration
	waitFor(t, 30*time.Second, "Vault reads to succeed again", func() bool {
		checkServing()
		if p.vaultReads(t, "success") > reads {
			recovered = time.Since(restarted)
			return true
		}
		return false
	})
	// Several more polls: the reads go on succeeding, and no login storm.
	reads = p.vaultReads(t, "success")
	waitFor(t, 30*time.Second, "two more rounds of successful reads", func() bool {
		checkServing()
		return p.vaultReads(t, "success") >= reads+2*float64(len(routes))
	})
	ok, failed := p.vaultLogins(t)
	t.Logf("outage: %s down, %d requests all 200, /readyz 200 throughout, %v failed Vault reads; "+
		"after the restart reads recovered in %s; Vault logins %d ok + %d failed before the restart, %d ok + %d failed in all",
		outage.Round(time.Millisecond), requests, errsDuring, recovered.Round(time.Millisecond), okBefore, failedBefore, ok, failed)
	if ok > 3 || ok+failed > 6 {
		t.Errorf("Vault logins: %d successful and %d failed around one restart; want a handful at most", ok, failed)
	}
	for _, r := range routes {
		// Re-seeded with the same values, the secrets are at version 1 again
		// (the same fingerprint for KV v1): nothing changed, so no token is
		// minted for it.
		k := r.name
		want := "1"
		if k == "inspera-kv1" {
			want = kv1Version.(string)
		}
		st := p.vaultStatus(t)[k]
		if got := st["credential_version"]; got != want {
			t.Errorf("%s: credential_version %v after the restart, want %s", k, got, want)
		}
		// The outage is over: /status must not go on reporting it.
		if le := st["last_error"]; le != "" {
			t.Errorf("%s: /status last_error %q after reads recovered, want none", k, le)
		}
	}
}

// TestVaultDownAtStart starts tokenproxy before Vault.
func TestVaultDownAtStart(t *testing.T) {
	v := newVaultEnv(t)
	// A port for Vault: start it, note its address, stop it; Restart brings
	// it back on the same port later.
	v.srv.Stop()
	began := time.Now()
	p := v.start(v.vaultConfig(500*time.Millisecond, v.approle(), vaultKV2Routes()...))
	listening := time.Since(began)

	for _, kind := range vaultKinds {
		start := time.Now()
		r := call(t, p, kind)
		took := time.Since(start)
		m := wantError(t, r, 503, "credentials_unavailable", kind)
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", kind)
		}
		if took > 3*time.Second {
			t.Errorf("%s: the 503 took %s", kind, took)
		}
		if kind == "hgem" {
			t.Logf("Vault down at start: listening after %s; 503 in %s: %s (Retry-After %s)",
				listening.Round(time.Millisecond), took.Round(time.Millisecond), m["message"], r.Header.Get("Retry-After"))
		}
	}
	var rz *response
	waitFor(t, 10*time.Second, "/readyz to name the failing Vault reference", func() bool {
		rz = get(t, p.admin+"/readyz")
		if rz.StatusCode != 503 {
			t.Fatalf("/readyz %d with Vault down: %s", rz.StatusCode, rz.body)
		}
		ups := rz.json(t)["upstreams"].(map[string]any)
		for _, kind := range vaultKinds {
			u := ups[kind].(map[string]any)
			reason := fmt.Sprint(u["reason"])
			if u["ready"] != false || !strings.Contains(reason, "credentials unavailable") ||
				!strings.Contains(reason, "vault:secret/tokenproxy/"+kind) {
				return false
			}
		}
		return true
	})
	t.Logf("/readyz with Vault down: 503, hgem: %v", rz.json(t)["upstreams"].(map[string]any)["hgem"])

	v.srv.Restart()
	v.seed(t)
	up := time.Now()
	p.ready(t)
	t.Logf("ready %s after Vault came up", time.Since(up).Round(time.Millisecond))
	for _, kind := range vaultKinds {
		if r := call(t, p, kind); r.StatusCode != 200 {
			t.Fatalf("%s: %d %s", kind, r.StatusCode, r.body)
		}
	}
	ok, failed := p.vaultLogins(t)
	t.Logf("Vault logins: %d ok, %d failed", ok, failed)
	if ok != 1 {
		t.Errorf("%d successful Vault logins, want 1", ok)
	}
}

// TestVaultBadSecretKeepsLastGood writes unusable versions of a secret: each
// is logged by path and key, never by value, and the last good version stays
// in use, for new tokens too.
func TestVaultBadSecretKeepsLastGood(t *testing.T) {
	v := newVaultEnv(t)
	v.seed(t)
	// Every case revokes the token in hand and wants a new one at once:
	// reauth_min_interval is kept short (TestReauthBounded covers the bound).
	cfg := v.vaultConfig(300*time.Millisecond, v.approle(), vaultKV2Routes()...)
	everyUpstream(cfg, func(u *config.Upstream) { u.ReauthMinInterval.Duration = time.Millisecond })
	p := v.start(cfg)
	p.ready(t)
	hgem := v.vendors["hgem"]
	good := hgem.creds
	const ref = "vault:secret/tokenproxy/hgem"

	bad := func(key string) string {
		c := vaultCanary("bad-" + strings.ReplaceAll(key, "_", ""))
		v.secrets = append(v.secrets, c)
		return c
	}
	cases := []struct {
		name string
		data map[string]any
		want string // in the logged error
	}{
		{"missing key", map[string]any{"api_key": bad("api_key"), "client_id": bad("client_id")}, "missing key client_secret"},
		{"CR LF", map[string]any{"api_key": bad("api_key") + "\r\nX-Evil: 1", "client_id": good["client_id"], "client_secret": good["client_secret"]},
			"key api_key holds a CR, LF or NUL character"},
		{"LF", map[string]any{"api_key": good["api_key"], "client_id": bad("client_id") + "\n", "client_secret": good["client_secret"]},
			"key client_id holds a CR, LF or NUL character"},
		{"NUL", map[string]any{"api_key": good["api_key"], "client_id": good["client_id"], "client_secret": bad("client_secret") + "\x00"},
			"key client_secret holds a CR, LF or NUL character"},
		{"object", map[string]any{"api_key": map[string]any{"inner": bad("nested")}, "client_id": good["client_id"], "client_secret": good["client_secret"]},
			"key api_key holds an object"},
	}
	for i, c := range cases {
		version := v.putKV2Any(t, "hgem", c.data)
		if version != i+2 {
			t.Fatalf("%s: put version %d, want %d", c.name, version, i+2)
		}
		written := time.Now()
		waitFor(t, 10*time.Second, c.name+": a log line naming the path and key", func() bool {
			return p.vaultCredsErrLogged("hgem", ref, ref) && p.vaultCredsErrLogged("hgem", ref, c.want)
		})
		t.Logf("%s (version %d): logged %s after the write", c.name, version, time.Since(written).Round(time.Millisecond))
		// A new token is minted from the last good credentials.
		hgem.sim.RevokeAll()
		if r := call(t, p, "hgem"); r.StatusCode != 200 {
			t.Fatalf("%s: %d %s", c.name, r.StatusCode, r.body)
		}
		st := p.vaultStatus(t)["hgem"]
		if st["credential_version"] != "1" || st["state"] != "ready" {
			t.Fatalf("%s: /status credential_version %v state %v, want 1 and ready", c.name, st["credential_version"], st["state"])
		}
		if le := fmt.Sprint(st["last_error"]); !strings.Contains(le, c.want) {
			t.Errorf("%s: /status last_error %q, want it to name the problem", c.name, le)
		}
	}
	if rz := get(t, p.admin+"/readyz"); rz.StatusCode != 200 {
		t.Errorf("/readyz %d with a bad latest version and a good token: %s", rz.StatusCode, rz.body)
	}
	for i, r := range answeredTokenRequests(t, hgem.sim, 0) {
		if r.Status != 200 {
			t.Errorf("token request %d answered %d: the bad credentials were used", i, r.Status)
		}
	}

	// A good version again is taken up.
	want := strconv.Itoa(v.putKV2(t, "hgem", good))
	waitFor(t, 10*time.Second, "the good version "+want, func() bool {
		return p.vaultStatus(t)["hgem"]["credential_version"] == want
	})
	if r := call(t, p, "hgem"); r.StatusCode != 200 {
		t.Fatalf("after a good version: %d %s", r.StatusCode, r.body)
	}
}
