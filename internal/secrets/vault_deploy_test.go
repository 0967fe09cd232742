package secrets

import (
	"context"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vaulttest"
)

// deploy/vault as an operator runs it against a Vault outside the cluster:
// setup.sh's Kubernetes role takes only service-account tokens for the
// audience "vault" (the one deploy/kubernetes projects into tokenproxy
// alone), and policy.hcl gives tokenproxy the credentials to read and the
// fleet's shared tokens to read and write, and nothing more.
func TestVaultDeployKubernetesRoleAndPolicy(t *testing.T) {
	srv, root := startVault(t)
	dir := t.TempDir()
	k8s := newVaultTokenReviewer(t)
	caFile := filepath.Join(dir, "k8s-ca.pem")
	vaultWriteFile(t, caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k8s.srv.Certificate().Raw})))
	reviewerFile := filepath.Join(dir, "reviewer.jwt")
	vaultWriteFile(t, reviewerFile, vaultReviewerJWT+"\n") // as `kubectl create token` writes it
	cmd := exec.Command("sh", "../../deploy/vault/setup.sh")
	cmd.Env = append(os.Environ(), "VAULT="+vaulttest.Binary(), "VAULT_ADDR="+srv.Addr(),
		"VAULT_TOKEN="+srv.RootToken(), "OUT_DIR="+dir, "HOME="+t.TempDir(),
		"K8S_HOST="+k8s.srv.URL, "K8S_CA_FILE="+caFile, "K8S_REVIEWER_JWT_FILE="+reviewerFile)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("setup.sh: %v\n%s", err, b)
	}
	role, err := root.Logical().Read("auth/kubernetes/role/tokenproxy")
	if err != nil || role == nil {
		t.Fatalf("the kubernetes role: %v", err)
	}
	if role.Data["audience"] != "vault" {
		t.Errorf("the kubernetes role's audience is %v, want vault", role.Data["audience"])
	}
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)

	// tokenproxy's projected token logs in and reads the credentials.
	projected := k8s.jwtFor(t, "projected", "vault")
	k8s.accept(projected)
	jwtFile := filepath.Join(dir, "token")
	vaultWriteFile(t, jwtFile, projected)
	h := runVault(t, srv, config.VaultAuth{Method: "kubernetes", Mount: "kubernetes", Role: "tokenproxy", JWTFile: jwtFile})
	h.secrets = append(h.secrets, projected, vaultReviewerJWT)
	h.readOK(t, "secret/tokenproxy/hgem")

	// A pod's default token is for the API server's audience: even one the
	// API server vouches for does not log in.
	def := k8s.jwtFor(t, "default", "https://kubernetes.default.svc.cluster.local")
	k8s.accept(def)
	anon, err := root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	anon.ClearToken()
	if _, err := anon.Logical().Write("auth/kubernetes/login", map[string]any{"role": "tokenproxy", "jwt": def}); err == nil || !strings.Contains(err.Error(), "aud") {
		t.Fatalf("a login with a token for the API server's audience: %v, want refused for its audience", err)
	}
	if n := k8s.reviews(def); n != 0 {
		t.Errorf("Vault sent the wrong-audience token to the API server %d times; it should refuse it first", n)
	}

	// The policy, with the token tokenproxy gets.
	k8s.accept(projected)
	s, err := anon.Logical().Write("auth/kubernetes/login", map[string]any{"role": "tokenproxy", "jwt": projected})
	if err != nil {
		t.Fatalf("login with the projected token: %v", err)
	}
	c, _ := root.Clone()
	c.SetToken(s.Auth.ClientToken)
	h.secrets = append(h.secrets, s.Auth.ClientToken)
	ctx := context.Background()
	kv := c.KVv2("secret")
	vaultPutKV2(t, root, "elsewhere/hgem", vaultHGEMValues)
	allowed := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v, want allowed", what, err)
		}
	}
	denied := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s: %v, want permission denied", what, err)
		}
	}
	_, err = kv.Get(ctx, "tokenproxy/hgem")
	allowed("read the credentials", err)
	_, err = kv.Put(ctx, "tokenproxy/hgem", map[string]any{"api_key": "x"})
	denied("write the credentials", err)
	_, err = kv.Get(ctx, "elsewhere/hgem")
	denied("read outside secret/tokenproxy", err)
	_, err = kv.Put(ctx, "tokenproxy/shared/inspera", map[string]any{"generation": "1"}, api.WithCheckAndSet(0))
	allowed("create a shared record (check-and-set 0)", err)
	_, err = kv.Put(ctx, "tokenproxy/shared/inspera", map[string]any{"generation": "2"}, api.WithCheckAndSet(1))
	allowed("update a shared record (check-and-set 1)", err)
	if _, err = kv.Put(ctx, "tokenproxy/shared/inspera", map[string]any{"generation": "3"}, api.WithCheckAndSet(1)); err == nil || strings.Contains(err.Error(), "permission denied") {
		t.Errorf("a stale check-and-set write: %v, want refused by the check, not the policy", err)
	}
	if rec, err := kv.Get(ctx, "tokenproxy/shared/inspera"); err != nil || rec.Data["generation"] != "2" {
		t.Errorf("read the shared record: %v %v, want generation 2", err, rec)
	}
	denied("delete a shared record", kv.Delete(ctx, "tokenproxy/shared/inspera"))
	denied("destroy a shared record's versions", kv.Destroy(ctx, "tokenproxy/shared/inspera", []int{1}))
	_, err = c.Logical().List("secret/metadata/tokenproxy/shared")
	denied("list the shared records", err)
	_, err = kv.Put(ctx, "tokenproxy/sharedx", map[string]any{"x": "1"})
	denied("write beside the shared path", err)
}
