package secrets

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/testlog"
	"github.com/tokenproxy/tokenproxy/internal/vaulttest"
	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

// Every test here talks to a real Vault dev server on 127.0.0.1.

const vaultWaitLimit = 30 * time.Second

var vaultHGEMValues = map[string]any{
	"api_key":       "CANARY-hgem-api-key-7f3a",
	"client_id":     "CANARY-hgem-client-id-19bc",
	"client_secret": "CANARY-hgem-client-secret-c0de",
}

func TestVaultReadsKVv2AndKVv1(t *testing.T) {
	srv, root := startVault(t)
	ctx := context.Background()
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	if err := root.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	vaultWrite(t, root, "kv1/tokenproxy/inspera", map[string]any{"client_id": "CANARY-kv1-id", "api_key": "CANARY-kv1-key"})
	h := runVault(t, srv, vaultTokenAuth(t, srv.RootToken()))

	c := h.readOK(t, "secret/tokenproxy/hgem")
	if c.Version() != "1" || c.Get("api_key") != vaultHGEMValues["api_key"] || len(c.Keys()) != 3 {
		t.Fatalf("KV v2 read: got %v api_key ok=%v", c, c.Get("api_key") == vaultHGEMValues["api_key"])
	}
	vaultPutKV2(t, root, "tokenproxy/hgem", map[string]any{"api_key": "CANARY-v2", "client_id": "x", "client_secret": "y"})
	if c := h.readOK(t, "secret/tokenproxy/hgem"); c.Version() != "2" || c.Get("api_key") != "CANARY-v2" {
		t.Fatalf("KV v2 after a write: got %v, want version 2", c)
	}

	v1 := h.readOK(t, "kv1/tokenproxy/inspera")
	if !strings.HasPrefix(v1.Version(), "hmac-sha256:") || v1.Get("api_key") != "CANARY-kv1-key" {
		t.Fatalf("KV v1 read: got %v, want a content fingerprint as version", v1)
	}
	if again := h.readOK(t, "kv1/tokenproxy/inspera"); again.Version() != v1.Version() {
		t.Fatalf("KV v1 fingerprint changed without a change: %s, then %s", v1.Version(), again.Version())
	}
	vaultWrite(t, root, "kv1/tokenproxy/inspera", map[string]any{"client_id": "CANARY-kv1-id", "api_key": "CANARY-kv1-key2"})
	if changed := h.readOK(t, "kv1/tokenproxy/inspera"); changed.Version() == v1.Version() {
		t.Fatalf("KV v1 fingerprint did not change with the content: %s", changed.Version())
	}

	// Numbers and booleans are taken as their JSON text.
	vaultWrite(t, root, "secret/data/tokenproxy/typed", map[string]any{"data": map[string]any{"port": 8443, "ratio": 1.5, "on": true, "s": "x"}})
	typed := h.readOK(t, "secret/tokenproxy/typed")
	if typed.Get("port") != "8443" || typed.Get("ratio") != "1.5" || typed.Get("on") != "true" {
		t.Fatalf("typed values: port=%q ratio=%q on=%q", typed.Get("port"), typed.Get("ratio"), typed.Get("on"))
	}

	// Objects, arrays and null are refused, naming the key and path, never the value.
	for key, val := range map[string]any{"nested": map[string]any{"inner": "CANARY-nested"}, "list": []any{"CANARY-list"}, "nothing": nil} {
		vaultWrite(t, root, "secret/data/tokenproxy/bad", map[string]any{"data": map[string]any{"ok": "CANARY-ok", key: val}})
		_, err := h.read(ctx, "secret/tokenproxy/bad")
		if err == nil || !strings.Contains(err.Error(), "key "+key) || !strings.Contains(err.Error(), "vault:secret/tokenproxy/bad at "+srv.Addr()) {
			t.Errorf("%s: got error %v, want one naming the key and path", key, err)
		}
	}

	for _, missing := range []string{"secret/tokenproxy/nothing-here", "nomount/tokenproxy/x"} {
		if _, err := h.read(ctx, missing); err == nil || !strings.Contains(err.Error(), "vault:"+missing) {
			t.Errorf("%s: got %v, want an error naming the path", missing, err)
		}
	}
	// A deleted latest version is an error too.
	if err := root.KVv2("secret").Delete(ctx, "tokenproxy/hgem"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.read(ctx, "secret/tokenproxy/hgem"); err == nil {
		t.Error("read of a deleted secret succeeded")
	}
}

// A read waits for the first login attempt, so that a start does not begin
// with a spurious failure; a caller's deadline bounds the wait, and a failed
// login is reported as such.
func TestVaultReadWaitsForTheFirstLogin(t *testing.T) {
	srv, root := startVault(t)
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	v, err := NewVault(&config.Vault{Address: srv.Addr(), Auth: vaultTokenAuth(t, srv.RootToken())}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = v.Secret("secret/tokenproxy/hgem").Read(ctx)
	if err == nil || !strings.Contains(err.Error(), "vault: not logged in: ") || time.Since(start) > 2*time.Second {
		t.Fatalf("before any login: got %v after %s, want not-logged-in once the deadline passed", err, time.Since(start))
	}

	// With Run started at the same moment, the very first read succeeds.
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { v.Run(runCtx); close(done) }()
	defer func() { stop(); <-done }()
	if _, err := v.Secret("secret/tokenproxy/hgem").Read(context.Background()); err != nil {
		t.Fatalf("first read alongside the first login: %v", err)
	}

	bad, _ := NewVault(&config.Vault{Address: srv.Addr(), Auth: vaultTokenAuth(t, "not-a-token")}, zap.NewNop())
	badCtx, stopBad := context.WithCancel(context.Background())
	badDone := make(chan struct{})
	go func() { bad.Run(badCtx); close(badDone) }()
	defer func() { stopBad(); <-badDone }()
	if _, err := bad.Secret("secret/tokenproxy/hgem").Read(context.Background()); err == nil || !strings.Contains(err.Error(), "vault: not logged in: token login") {
		t.Fatalf("after a failed first login: %v", err)
	}
	if s := bad.State(); s.LoggedIn || !strings.HasPrefix(s.Error, "token login at ") || !s.LastLogin.IsZero() || !s.TokenExpiresAt.IsZero() || s.Method != "token" {
		t.Fatalf("state after a failed login: %+v", s)
	}
	if s := v.State(); !s.LoggedIn || s.Error != "" || s.LastLogin.IsZero() || !s.TokenExpiresAt.IsZero() || s.Address != srv.Addr() {
		t.Fatalf("state logged in with the root token (no TTL): %+v", s)
	}
}

func TestVaultTokenLogin(t *testing.T) {
	srv, root := startVault(t)
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	if err := root.Sys().PutPolicy("tokenproxy", vaultPolicyHCL(t)); err != nil {
		t.Fatal(err)
	}

	t.Run("VAULT_TOKEN", func(t *testing.T) {
		t.Setenv("VAULT_TOKEN", srv.RootToken())
		h := runVault(t, srv, config.VaultAuth{Method: "token", Mount: "token"})
		h.readOK(t, "secret/tokenproxy/hgem")
	})

	t.Run("token_file is read again after the token is revoked", func(t *testing.T) {
		child := func() string {
			s, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"tokenproxy"}, TTL: "1h"})
			if err != nil {
				t.Fatal(err)
			}
			return s.Auth.ClientToken
		}
		first := child()
		a := vaultTokenAuth(t, first)
		h := runVault(t, srv, a)
		h.readOK(t, "secret/tokenproxy/hgem")
		vaultWriteFile(t, a.TokenFile, child()+"\n")
		if err := root.Auth().Token().RevokeOrphan(first); err != nil {
			t.Fatal(err)
		}
		h.readOK(t, "secret/tokenproxy/hgem")
		if n := h.logins.Load(); n != 2 {
			t.Errorf("%d logins, want 2", n)
		}
	})

	t.Run("VAULT_TOKEN is ignored by other methods", func(t *testing.T) {
		t.Setenv("VAULT_TOKEN", srv.RootToken())
		dir := t.TempDir()
		a := config.VaultAuth{Method: "approle", Mount: "approle", RoleIDFile: filepath.Join(dir, "none"), SecretIDFile: filepath.Join(dir, "none")}
		h := runVault(t, srv, a)
		if h.v.client.Token() != "" || h.v.login.Token() != "" {
			t.Fatal("the Vault client took its token from $VAULT_TOKEN")
		}
		vaultWaitFor(t, "a failed login", func() bool { return h.loginErrs.Load() > 0 })
		_, err := h.read(context.Background(), "secret/tokenproxy/hgem")
		if err == nil || !strings.Contains(err.Error(), "not logged in") {
			t.Fatalf("got %v, want not logged in", err)
		}
	})
}

func TestVaultTLSTrustsOnlyCAFile(t *testing.T) {
	vaultCheckLeaks(t)
	srv := vaulttest.StartTLS(t)
	vaultPutKV2(t, srv.Client(), "tokenproxy/hgem", vaultHGEMValues)
	// The environment must not change what is trusted.
	t.Setenv("VAULT_CACERT", srv.CAFile())
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	t.Setenv("VAULT_NAMESPACE", "elsewhere")

	h := runVault(t, srv, vaultTokenAuth(t, srv.RootToken()))
	h.readOK(t, "secret/tokenproxy/hgem")
	if ns := h.v.client.Namespace(); ns != "" {
		t.Errorf("namespace %q taken from $VAULT_NAMESPACE", ns)
	}

	cfg := &config.Vault{Address: srv.Addr(), Namespace: "team-a", Auth: vaultTokenAuth(t, srv.RootToken())}
	untrusting := runVaultConfig(t, srv, cfg)
	if ns := untrusting.v.client.Namespace(); ns != "team-a" {
		t.Errorf("namespace %q, want team-a from the config", ns)
	}
	vaultWaitFor(t, "a failed login", func() bool { return untrusting.loginErrs.Load() > 0 })
	_, err := untrusting.read(context.Background(), "secret/tokenproxy/hgem")
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without ca_file: got %v, want a certificate error", err)
	}
}

func TestVaultAppRoleWithThePolicy(t *testing.T) {
	srv, root := startVault(t)
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	vaultPutKV2(t, root, "other/secret", map[string]any{"k": "CANARY-other"})
	a := vaultSetupAppRole(t, root, map[string]any{"token_ttl": "1h"})
	h := runVault(t, srv, a)
	h.readOK(t, "secret/tokenproxy/hgem")

	// The policy (deploy/vault/policy.hcl) covers secret/tokenproxy/* only.
	// A 403 there is the policy's doing, not a dead token: no new login.
	for range 5 {
		_, err := h.read(context.Background(), "secret/other/secret")
		if vaultStatus(err) != http.StatusForbidden || !strings.Contains(err.Error(), "vault:secret/other/secret") {
			t.Fatalf("read outside the policy: got %v, want 403 naming the path", err)
		}
	}
	h.readOK(t, "secret/tokenproxy/hgem")
	if n := h.logins.Load(); n != 1 {
		t.Errorf("%d logins after reads the policy refuses, want 1", n)
	}
}

// TestVaultTokenLifetime runs three token kinds side by side on one server
// and keeps reading past several of their TTLs.
func TestVaultTokenLifetime(t *testing.T) {
	srv, root := startVault(t)
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	vaultSetupAppRole(t, root, map[string]any{})
	cases := []struct {
		name     string
		role     map[string]any
		renewals int32 // at least
		logins   int32 // at least; exactly when renewals > 0
		h        *vaultHarness
	}{
		{name: "renewable", role: map[string]any{"token_ttl": "2s", "token_max_ttl": "1h"}, renewals: 3, logins: 1},
		{name: "max-ttl", role: map[string]any{"token_ttl": "2s", "token_max_ttl": "3s"}, logins: 3},
		// Batch tokens are not renewable, and count their TTL from a creation
		// time in whole seconds: a short one can end up to a second early.
		{name: "batch", role: map[string]any{"token_type": "batch", "token_ttl": "6s"}, logins: 2},
	}
	for i := range cases {
		cases[i].h = runVault(t, srv, vaultAddAppRole(t, root, cases[i].name, cases[i].role))
	}
	start := time.Now()
	vaultWaitFor(t, "reads past several token TTLs", func() bool {
		done := time.Since(start) > 6500*time.Millisecond
		for _, c := range cases {
			_, err := c.h.read(context.Background(), "secret/tokenproxy/hgem")
			if err != nil && c.h.logins.Load() > 0 {
				t.Fatalf("%s: read failed %s after the first login: %v", c.name, time.Since(start), err)
			}
			done = done && err == nil && c.h.renewals.Load() >= c.renewals && c.h.logins.Load() >= c.logins
		}
		return done
	})
	for _, c := range cases {
		if n := c.h.logins.Load(); c.renewals > 0 && n != c.logins {
			t.Errorf("%s: %d logins, want %d", c.name, n, c.logins)
		}
		s, now := c.h.v.State(), time.Now()
		// The token ends within its TTL from the last login or renewal (the
		// TTL Vault gives may be rounded down, never up).
		if !s.LoggedIn || s.LastLogin.IsZero() || s.TokenExpiresAt.Before(now.Add(-time.Second)) || s.TokenExpiresAt.After(now.Add(6*time.Second)) {
			t.Errorf("%s: state %+v", c.name, s)
		}
		// Batch tokens are never renewed; the others are renewable.
		if batch := c.name == "batch"; batch != s.LastRenewal.IsZero() || batch == s.Renewable {
			t.Errorf("%s: last renewal %s, renewable %v", c.name, s.LastRenewal, s.Renewable)
		}
	}
}

func TestVaultLogsInAgainAfterRevocation(t *testing.T) {
	srv, root := startVault(t)
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	h := runVault(t, srv, vaultSetupAppRole(t, root, map[string]any{"token_ttl": "1h"}))
	h.readOK(t, "secret/tokenproxy/hgem")
	if err := root.Auth().Token().RevokeOrphan(h.v.client.Token()); err != nil {
		t.Fatal(err)
	}
	h.readOK(t, "secret/tokenproxy/hgem")
	if n := h.logins.Load(); n != 2 {
		t.Errorf("%d logins, want 2 (one re-login, no storm)", n)
	}
}

func TestVaultKubernetesLoginRereadsTheJWT(t *testing.T) {
	srv, root := startVault(t)
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	k8s := newVaultTokenReviewer(t)
	jwt1, jwt2 := k8s.jwt(t, "one"), k8s.jwt(t, "two")
	k8s.accept(jwt1)

	if err := root.Sys().EnableAuthWithOptions("kubernetes", &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	vaultWrite(t, root, "auth/kubernetes/config", map[string]any{
		"kubernetes_host":      k8s.srv.URL,
		"kubernetes_ca_cert":   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k8s.srv.Certificate().Raw})),
		"disable_local_ca_jwt": true,
		"token_reviewer_jwt":   vaultReviewerJWT,
	})
	if err := root.Sys().PutPolicy("tokenproxy", vaultPolicyHCL(t)); err != nil {
		t.Fatal(err)
	}
	vaultWrite(t, root, "auth/kubernetes/role/tokenproxy", map[string]any{
		"bound_service_account_names":      "tokenproxy",
		"bound_service_account_namespaces": "tokenproxy",
		"token_policies":                   "tokenproxy",
		"token_ttl":                        "1h",
	})
	jwtFile := filepath.Join(t.TempDir(), "token")
	vaultWriteFile(t, jwtFile, jwt1)
	h := runVault(t, srv, config.VaultAuth{Method: "kubernetes", Mount: "kubernetes", Role: "tokenproxy", JWTFile: jwtFile})
	h.secrets = append(h.secrets, jwt1, jwt2, vaultReviewerJWT)
	h.readOK(t, "secret/tokenproxy/hgem")
	if n := k8s.reviews(jwt1); n != 1 {
		t.Fatalf("%d reviews of the first JWT, want 1", n)
	}

	// Kubernetes rotates the token on disk; the old one stops working.
	vaultWriteFile(t, jwtFile, jwt2)
	k8s.accept(jwt2)
	if err := root.Auth().Token().RevokeOrphan(h.v.client.Token()); err != nil {
		t.Fatal(err)
	}
	h.readOK(t, "secret/tokenproxy/hgem")
	if n1, n2 := k8s.reviews(jwt1), k8s.reviews(jwt2); n1 != 1 || n2 != 1 {
		t.Fatalf("reviews: first JWT %d, second %d; want 1 and 1 (the file is read at each login)", n1, n2)
	}
	if n := k8s.refused.Load(); n != 0 {
		t.Errorf("%d refused reviews, want 0", n)
	}

	// A JWT Kubernetes refuses: the login fails and says so, without the JWT.
	k8s.accept("")
	if err := root.Auth().Token().RevokeOrphan(h.v.client.Token()); err != nil {
		t.Fatal(err)
	}
	vaultWaitFor(t, "a refused login", func() bool {
		h.read(context.Background(), "secret/tokenproxy/hgem") // finds the token revoked
		return h.loginErrs.Load() > 0
	})
	if _, err := h.read(context.Background(), "secret/tokenproxy/hgem"); err == nil || !strings.Contains(err.Error(), "kubernetes login at "+srv.Addr()) {
		t.Fatalf("got %v, want a not-logged-in error naming the kubernetes login", err)
	}
}

func TestVaultRotationAndBadVersionsThroughWatch(t *testing.T) {
	srv, root := startVault(t)
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	h := runVault(t, srv, vaultSetupAppRole(t, root, map[string]any{"token_ttl": "1h"}))

	ref := "vault:secret/tokenproxy/hgem"
	w := NewWatch(h.v.Secret("secret/tokenproxy/hgem"), keysOf("hgem"), ref, 200*time.Millisecond)
	changes, errs := make(chan Credentials, 10), make(chan error, 100)
	w.OnChange = func(c Credentials) { changes <- c }
	w.OnError = func(err error) {
		h.rec.Note(err)
		select {
		case errs <- err:
		default:
		}
	}
	stop := vaultRunInBackground(t, w.Run)
	defer stop()

	next := func(want string) {
		t.Helper()
		select {
		case c := <-changes:
			if c.Version() != want {
				t.Fatalf("OnChange with version %s, want %s", c.Version(), want)
			}
		case <-time.After(vaultWaitLimit):
			t.Fatalf("no OnChange with version %s", want)
		}
	}
	next("1")
	vaultPutKV2(t, root, "tokenproxy/hgem", map[string]any{"api_key": "CANARY-rotated", "client_id": "CANARY-id2", "client_secret": "CANARY-s2"})
	next("2")

	for _, bad := range []struct {
		values map[string]any
		key    string
	}{
		{map[string]any{"api_key": "CANARY-a3", "client_id": "CANARY-i3"}, "client_secret"},
		{map[string]any{"api_key": "CANARY-a4\r\nX-Evil: 1", "client_id": "CANARY-i4", "client_secret": "CANARY-s4"}, "api_key"},
		{map[string]any{"api_key": "CANARY-a5", "client_id": "CANARY-i5\n", "client_secret": "CANARY-s5"}, "client_id"},
		{map[string]any{"api_key": "CANARY-a6", "client_id": "CANARY-i6", "client_secret": "CANARY-s6\x00"}, "client_secret"},
	} {
		vaultDrain(errs)
		vaultPutKV2(t, root, "tokenproxy/hgem", bad.values)
		select {
		case err := <-errs:
			if !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), bad.key) {
				t.Fatalf("OnError %q, want the reference and key %s named", err, bad.key)
			}
		case c := <-changes:
			t.Fatalf("OnChange with unusable credentials %v", c)
		case <-time.After(vaultWaitLimit):
			t.Fatalf("no OnError for a secret with a bad %s", bad.key)
		}
	}
	vaultPutKV2(t, root, "tokenproxy/hgem", map[string]any{"api_key": "CANARY-a7", "client_id": "CANARY-i7", "client_secret": "CANARY-s7"})
	next("7")
}

func TestVaultOutageAndRestart(t *testing.T) {
	srv, root := startVault(t)
	seed := func() config.VaultAuth {
		vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
		return vaultSetupAppRole(t, root, map[string]any{"token_ttl": "1h"})
	}
	a := seed()
	h := runVault(t, srv, a)
	h.readOK(t, "secret/tokenproxy/hgem")

	srv.Stop()
	for range 3 {
		start := time.Now()
		_, err := h.read(context.Background(), "secret/tokenproxy/hgem")
		if err == nil || !strings.Contains(err.Error(), srv.Addr()) {
			t.Fatalf("read with Vault down: got %v, want an error naming the address", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("read with Vault down took %s, want a fast failure", d)
		}
	}

	srv.Restart() // empty storage: the token, the role and the secret are gone
	b := seed()
	vaultCopyFile(t, b.RoleIDFile, a.RoleIDFile)
	vaultCopyFile(t, b.SecretIDFile, a.SecretIDFile)
	h.readOK(t, "secret/tokenproxy/hgem")
	if n := h.loginErrs.Load() + h.logins.Load(); n > 8 {
		t.Errorf("%d login attempts around one restart, want a few", n)
	}
}

// TestVaultLeaksNothing drives the error paths with distinctive values and
// checks that none reach a log line or an error. (Every test also checks its
// own log and errors on cleanup.)
func TestVaultLeaksNothing(t *testing.T) {
	srv, root := startVault(t)
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	a := vaultSetupAppRole(t, root, map[string]any{"token_ttl": "1h"})
	const roleID, secretID = "CANARY-role-id-5e1f", "CANARY-secret-id-a9d2"
	vaultWrite(t, root, "auth/approle/role/tokenproxy/role-id", map[string]any{"role_id": roleID})
	vaultWrite(t, root, "auth/approle/role/tokenproxy/custom-secret-id", map[string]any{"secret_id": secretID})
	vaultWriteFile(t, a.RoleIDFile, roleID)
	vaultWriteFile(t, a.SecretIDFile, "CANARY-wrong-secret-id")

	h := runVault(t, srv, a)
	h.secrets = append(h.secrets, roleID, secretID, "CANARY-wrong-secret-id")
	vaultWaitFor(t, "a refused login", func() bool { return h.loginErrs.Load() > 0 })
	if _, err := h.read(context.Background(), "secret/tokenproxy/hgem"); err == nil {
		t.Fatal("read with a wrong secret_id succeeded")
	}
	vaultWriteFile(t, a.SecretIDFile, secretID)
	h.readOK(t, "secret/tokenproxy/hgem")

	// Bad values, bad types, a revoked token, an outage.
	vaultPutKV2(t, root, "tokenproxy/hgem", map[string]any{"api_key": map[string]any{"k": "CANARY-object"}, "x": "CANARY-x"})
	h.read(context.Background(), "secret/tokenproxy/hgem")
	vaultPutKV2(t, root, "tokenproxy/hgem", map[string]any{"api_key": "CANARY-crlf\r\n", "client_id": "CANARY-i", "client_secret": "CANARY-s"})
	c := h.readOK(t, "secret/tokenproxy/hgem")
	h.rec.Note(Check(keysOf("hgem"), c))
	h.rec.Note(Check(keysOf("prodoscore"), c))
	if err := root.Auth().Token().RevokeOrphan(h.v.client.Token()); err != nil {
		t.Fatal(err)
	}
	h.readOK(t, "secret/tokenproxy/hgem")
	srv.Stop()
	h.read(context.Background(), "secret/tokenproxy/hgem")
	if !strings.Contains(h.rec.Log.String(), `"vault login failed"`) {
		t.Errorf("the failed login was not logged:\n%s", h.rec.Log.String())
	}
}

func TestVaultSetupScriptAndPolicy(t *testing.T) {
	srv, root := startVault(t)
	out := t.TempDir()
	k8s := newVaultTokenReviewer(t)
	caFile := filepath.Join(out, "k8s-ca.pem")
	vaultWriteFile(t, caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k8s.srv.Certificate().Raw})))
	setup := func() {
		cmd := exec.Command("sh", "../../deploy/vault/setup.sh")
		cmd.Env = append(os.Environ(), "VAULT="+vaulttest.Binary(), "VAULT_ADDR="+srv.Addr(),
			"VAULT_TOKEN="+srv.RootToken(), "OUT_DIR="+out, "HOME="+t.TempDir(),
			"K8S_HOST="+k8s.srv.URL, "K8S_CA_FILE="+caFile)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("setup.sh: %v\n%s", err, b)
		}
	}
	setup()
	// A second run changes nothing an operator has set since.
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	setup()
	a := config.VaultAuth{Method: "approle", Mount: "approle", RoleIDFile: filepath.Join(out, "role_id"), SecretIDFile: filepath.Join(out, "secret_id")}
	h := runVault(t, srv, a)
	for _, typ := range vendor.Builtins {
		c := h.readOK(t, "secret/tokenproxy/"+typ)
		if err := Check(keysOf(typ), c); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
	if c := h.readOK(t, "secret/tokenproxy/hgem"); c.Get("api_key") != vaultHGEMValues["api_key"] {
		t.Error("a second run of setup.sh overwrote secret/tokenproxy/hgem")
	}
	role, err := root.Logical().Read("auth/kubernetes/role/tokenproxy")
	if err != nil || role == nil {
		t.Fatalf("the kubernetes role: %v", err)
	}
	// The example config names the same secrets.
	cfg, err := config.Load("../../configs/vault.yaml")
	if err != nil {
		t.Fatalf("configs/vault.yaml: %v", err)
	}
	for name, u := range cfg.Upstreams {
		src, err := Open(u.Credentials, h.v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c, err := src.Read(context.Background())
		if err != nil || Check(u.RequiredKeys(), c) != nil {
			t.Errorf("%s (%s): %v %v", name, u.Credentials, err, Check(u.RequiredKeys(), c))
		}
	}
}

// --- helpers ---

// vaultHarness is one Vault under test, with what it logged and what it counted.
type vaultHarness struct {
	v                           *Vault
	logins, loginErrs, renewals atomic.Int32
	secrets                     []string // must never appear in logs or errors
	rec                         testlog.Record
}

func startVault(t *testing.T) (*vaulttest.Server, *api.Client) {
	t.Helper()
	vaultCheckLeaks(t)
	srv := vaulttest.Start(t)
	return srv, srv.Client()
}

// vaultCheckLeaks, called first, checks after every other cleanup (the Vault
// server's stop included) that the test left no goroutine behind.
func vaultCheckLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// runVault starts Run; on cleanup it stops it and checks that nothing
// secret was logged or put in an error.
func runVault(t *testing.T, srv *vaulttest.Server, a config.VaultAuth) *vaultHarness {
	t.Helper()
	return runVaultConfig(t, srv, &config.Vault{Address: srv.Addr(), CAFile: srv.CAFile(), Auth: a})
}

func runVaultConfig(t *testing.T, srv *vaulttest.Server, cfg *config.Vault) *vaultHarness {
	t.Helper()
	h := &vaultHarness{secrets: []string{srv.RootToken(), "hvs.", "hvb.", "CANARY"}}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), &h.rec.Log, zapcore.DebugLevel)
	v, err := NewVault(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	h.v = v
	v.OnLogin = func(err error) {
		if err != nil {
			h.rec.Note(err)
			h.loginErrs.Add(1)
		} else {
			h.logins.Add(1)
		}
	}
	v.OnRenew = func(err error) {
		if err == nil {
			h.renewals.Add(1)
		}
		h.rec.Note(err)
	}
	stop := vaultRunInBackground(t, v.Run)
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("tokenproxy's log:\n%s", h.rec.Log.String())
		}
		h.rec.Hidden(t, h.secrets)
	})
	return h
}

func (h *vaultHarness) read(ctx context.Context, path string) (Credentials, error) {
	c, err := h.v.Secret(path).Read(ctx)
	h.rec.Note(err)
	return c, err
}

// readOK waits until a read of path succeeds (logins are asynchronous).
func (h *vaultHarness) readOK(t *testing.T, path string) Credentials {
	t.Helper()
	var c Credentials
	var err error
	vaultWaitFor(t, "a read of "+path, func() bool {
		c, err = h.read(context.Background(), path)
		return err == nil
	})
	return c
}

// vaultWaitFor polls cond until it holds; it fails the test after vaultWaitLimit.
func vaultWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(vaultWaitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// vaultRunInBackground runs f until the returned stop (also a cleanup) cancels it
// and f returns.
func vaultRunInBackground(t *testing.T, f func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f(ctx) }()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(vaultWaitLimit):
			t.Errorf("still running %s after its context ended", vaultWaitLimit)
		}
	}
	t.Cleanup(stop)
	return stop
}

func vaultTokenAuth(t *testing.T, token string) config.VaultAuth {
	f := filepath.Join(t.TempDir(), "token")
	vaultWriteFile(t, f, token+"\n")
	return config.VaultAuth{Method: "token", Mount: "token", TokenFile: f}
}

// vaultSetupAppRole enables AppRole and adds the role "tokenproxy" holding the
// policy in deploy/vault/policy.hcl.
func vaultSetupAppRole(t *testing.T, root *api.Client, role map[string]any) config.VaultAuth {
	t.Helper()
	if err := root.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicy("tokenproxy", vaultPolicyHCL(t)); err != nil {
		t.Fatal(err)
	}
	return vaultAddAppRole(t, root, "tokenproxy", role)
}

// vaultAddAppRole adds a role with that policy and writes its role_id and
// secret_id to files.
func vaultAddAppRole(t *testing.T, root *api.Client, name string, role map[string]any) config.VaultAuth {
	t.Helper()
	role["token_policies"] = "tokenproxy"
	vaultWrite(t, root, "auth/approle/role/"+name, role)
	rid, err := root.Logical().Read("auth/approle/role/" + name + "/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().Write("auth/approle/role/"+name+"/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a := config.VaultAuth{Method: "approle", Mount: "approle", RoleIDFile: filepath.Join(dir, "role_id"), SecretIDFile: filepath.Join(dir, "secret_id")}
	vaultWriteFile(t, a.RoleIDFile, rid.Data["role_id"].(string))
	vaultWriteFile(t, a.SecretIDFile, sid.Data["secret_id"].(string)+"\n")
	return a
}

func vaultPolicyHCL(t *testing.T) string {
	b, err := os.ReadFile("../../deploy/vault/policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func vaultPutKV2(t *testing.T, root *api.Client, path string, data map[string]any) {
	t.Helper()
	if _, err := root.KVv2("secret").Put(context.Background(), path, data); err != nil {
		t.Fatalf("put secret/%s: %v", path, err)
	}
}

func vaultWrite(t *testing.T, root *api.Client, path string, data map[string]any) {
	t.Helper()
	if _, err := root.Logical().Write(path, data); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func vaultWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func vaultCopyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	vaultWriteFile(t, to, string(b))
}

func vaultDrain(ch chan error) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// vaultTokenReviewer stands in for the Kubernetes API server: Vault's kubernetes
// auth method sends it TokenReviews, and it approves only the JWT it is told to.
type vaultTokenReviewer struct {
	srv     *httptest.Server
	key     *ecdsa.PrivateKey
	refused atomic.Int32

	mu       sync.Mutex
	accepted string
	seen     map[string]int
}

const vaultReviewerJWT = "CANARY-reviewer-jwt"

func newVaultTokenReviewer(t *testing.T) *vaultTokenReviewer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := &vaultTokenReviewer{key: key, seen: map[string]int{}}
	k.srv = httptest.NewTLSServer(http.HandlerFunc(k.serve))
	t.Cleanup(k.srv.Close)
	return k
}

func (k *vaultTokenReviewer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" ||
		r.Header.Get("Authorization") != "Bearer "+vaultReviewerJWT {
		http.Error(w, "unexpected request", http.StatusUnauthorized)
		return
	}
	var review struct {
		Spec struct {
			Token     string   `json:"token"`
			Audiences []string `json:"audiences"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	k.mu.Lock()
	k.seen[review.Spec.Token]++
	ok := review.Spec.Token != "" && review.Spec.Token == k.accepted
	k.mu.Unlock()
	// As the API server does: a token is valid only for audiences it was
	// minted for, and the answer names the ones asked for that it has.
	auds := jwtAudiences(review.Spec.Token)
	if len(review.Spec.Audiences) > 0 {
		auds = slices.DeleteFunc(auds, func(a string) bool { return !slices.Contains(review.Spec.Audiences, a) })
		ok = ok && len(auds) > 0
	}
	status := map[string]any{"authenticated": false, "error": "token is not valid"}
	if ok {
		status = map[string]any{"authenticated": true, "audiences": auds, "user": map[string]any{
			"username": "system:serviceaccount:tokenproxy:tokenproxy", "uid": "sa-uid-1"}}
	} else {
		k.refused.Add(1)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
}

func (k *vaultTokenReviewer) accept(jwt string) {
	k.mu.Lock()
	k.accepted = jwt
	k.mu.Unlock()
}

func (k *vaultTokenReviewer) reviews(jwt string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.seen[jwt]
}

// jwt makes a service-account token as Kubernetes would. Vault parses it
// (without checking the signature, having no keys) before the TokenReview,
// so it must be a well-formed ES256 JWS with the service-account claims.
func (k *vaultTokenReviewer) jwt(t *testing.T, id string) string {
	return k.jwtFor(t, id)
}

// jwtFor is jwt for the given audiences (an "aud" claim), as a projected
// service-account token is.
func (k *vaultTokenReviewer) jwtFor(t *testing.T, id string, audiences ...string) string {
	claims := map[string]any{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:tokenproxy:tokenproxy",
		"jti":                                    "CANARY-jwt-" + id,
		"kubernetes.io/serviceaccount/namespace": "tokenproxy",
		"kubernetes.io/serviceaccount/service-account.name": "tokenproxy",
		"kubernetes.io/serviceaccount/service-account.uid":  "sa-uid-1",
		"kubernetes.io/serviceaccount/secret.name":          "tokenproxy-token",
	}
	if audiences != nil {
		claims["aud"] = audiences
	}
	payload, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload)
	sum := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, k.key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + enc.EncodeToString(sig)
}

// jwtAudiences is the "aud" claim of a JWT made by jwtFor (none when it has
// none or is no such JWT).
func jwtAudiences(jwt string) []string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var claims struct {
		Aud []string `json:"aud"`
	}
	json.Unmarshal(b, &claims)
	return claims.Aud
}
