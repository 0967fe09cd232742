package secrets

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
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

// deploy/vault/setup.sh's AppRole, run from a clone's root as a user would:
// the login it writes lands outside the clone, private to its owner; a re-run
// issues no second login; SECRET_ID=new rotates and prints the commands that
// destroy the older one; every secret_id expires; and what would put a login
// in a git work tree, or let it live forever, is refused before anything is
// issued.
func TestVaultDeployAppRole(t *testing.T) {
	srv, root := startVault(t)
	clone := t.TempDir()
	gitIn(t, clone, "init", "-q")
	tmp := t.TempDir()
	anon, err := root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	anon.ClearToken()
	accessors := func() []string {
		t.Helper()
		s, err := root.Logical().List("auth/approle/role/tokenproxy/secret-id")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		if s != nil {
			for _, k := range s.Data["keys"].([]any) {
				out = append(out, k.(string))
			}
		}
		return out
	}
	login := func(dir string) error {
		rid, err1 := os.ReadFile(filepath.Join(dir, "role_id"))
		sid, err2 := os.ReadFile(filepath.Join(dir, "secret_id"))
		if err1 != nil || err2 != nil {
			t.Fatalf("the AppRole files in %s: %v %v", dir, err1, err2)
		}
		_, err := anon.Logical().Write("auth/approle/login", map[string]any{"role_id": string(rid), "secret_id": string(sid)})
		return err
	}

	out, err := runSetup(t, srv, clone, "TMPDIR="+tmp)
	if err != nil {
		t.Fatalf("setup.sh: %v\n%s", err, out)
	}
	if s := gitIn(t, clone, "status", "--porcelain", "--ignored"); s != "" {
		t.Errorf("setup.sh run from a clone's root left files in it:\n%s", s)
	}
	dirs, _ := filepath.Glob(filepath.Join(tmp, "tokenproxy-approle.*"))
	if len(dirs) != 1 {
		t.Fatalf("setup.sh without OUT_DIR made %d directories under $TMPDIR, want 1: %v\n%s", len(dirs), dirs, out)
	}
	first := dirs[0]
	if !strings.Contains(out, first) {
		t.Errorf("setup.sh does not say where it wrote the login (%s):\n%s", first, out)
	}
	checkMode(t, first, 0o700)
	checkMode(t, filepath.Join(first, "role_id"), 0o600)
	checkMode(t, filepath.Join(first, "secret_id"), 0o600)
	firstSecret, _ := os.ReadFile(filepath.Join(first, "secret_id"))
	if len(firstSecret) == 0 || strings.Contains(out, string(firstSecret)) {
		t.Fatalf("the secret_id is empty or was printed:\n%s", out)
	}
	h := runVault(t, srv, config.VaultAuth{Method: "approle", Mount: "approle",
		RoleIDFile: filepath.Join(first, "role_id"), SecretIDFile: filepath.Join(first, "secret_id")})
	h.secrets = append(h.secrets, string(firstSecret))
	h.readOK(t, "secret/tokenproxy/hgem")

	// Each secret_id expires; it may log in any number of times until then
	// (tokenproxy logs in at every start and every token_max_ttl).
	role, err := root.Logical().Read("auth/approle/role/tokenproxy")
	if err != nil {
		t.Fatal(err)
	}
	if ttl := fmt.Sprint(role.Data["secret_id_ttl"]); ttl != "2592000" {
		t.Errorf("the role's secret_id_ttl is %s s, want 2592000 (720h)", ttl)
	}
	if n := fmt.Sprint(role.Data["secret_id_num_uses"]); n != "0" {
		t.Errorf("the role's secret_id_num_uses is %s, want 0", n)
	}
	look, err := root.Logical().Write("auth/approle/role/tokenproxy/secret-id/lookup", map[string]any{"secret_id": string(firstSecret)})
	if err != nil || look == nil {
		t.Fatalf("look up the secret_id: %v", err)
	}
	if exp := fmt.Sprint(look.Data["expiration_time"]); exp == "" || strings.HasPrefix(exp, "0001-01-01") {
		t.Errorf("the secret_id setup.sh issued never expires (expiration_time %q)", exp)
	}
	old := accessors()
	if len(old) != 1 {
		t.Fatalf("%d secret_ids after the first run, want 1", len(old))
	}

	// A re-run issues no second login.
	if out, err := runSetup(t, srv, clone, "TMPDIR="+tmp); err != nil || !strings.Contains(out, "no new one issued") {
		t.Errorf("second run: %v, want it to say no new secret_id was issued:\n%s", err, out)
	}
	if n := len(accessors()); n != 1 {
		t.Errorf("%d secret_ids after a re-run, want still 1", n)
	}
	if dirs, _ := filepath.Glob(filepath.Join(tmp, "tokenproxy-approle.*")); len(dirs) != 1 {
		t.Errorf("a re-run made another directory: %v", dirs)
	}

	// Rotation into a directory of the operator's choice, not there yet.
	second := filepath.Join(t.TempDir(), "approle")
	out, err = runSetup(t, srv, clone, "OUT_DIR="+second, "SECRET_ID=new")
	if err != nil {
		t.Fatalf("SECRET_ID=new: %v\n%s", err, out)
	}
	checkMode(t, second, 0o700)
	checkMode(t, filepath.Join(second, "secret_id"), 0o600)
	if n := len(accessors()); n != 2 {
		t.Fatalf("%d secret_ids after SECRET_ID=new, want 2", n)
	}
	var destroy string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "secret-id-accessor/destroy") && strings.Contains(line, old[0]) {
			destroy = strings.TrimSpace(line)
		}
	}
	if destroy == "" {
		t.Fatalf("SECRET_ID=new printed no command destroying the older secret_id %s:\n%s", old[0], out)
	}
	if err := login(first); err != nil {
		t.Errorf("the older secret_id no longer logs in before it was destroyed: %v", err)
	}
	cmd := exec.Command("sh", "-c", destroy)
	cmd.Env = setupEnv(t, srv)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", destroy, err, b)
	}
	if got := accessors(); len(got) != 1 || got[0] == old[0] {
		t.Errorf("secret_ids after the printed destroy command: %v, want one, not %s", got, old[0])
	}
	if err := login(first); err == nil {
		t.Error("the destroyed secret_id still logs in")
	}
	if err := login(second); err != nil {
		t.Errorf("the new secret_id: %v", err)
	}

	// Refused, before anything is issued or written.
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"OUT_DIR=" + filepath.Join(clone, "secrets"), "SECRET_ID=new"}, "inside the git work tree"},
		{[]string{"OUT_DIR=" + clone, "SECRET_ID=new"}, "inside the git work tree"},
		{[]string{"SECRET_ID_TTL=0", "SECRET_ID=new", "TMPDIR=" + tmp}, "SECRET_ID_TTL=0"},
		{[]string{"SECRET_ID=always", "TMPDIR=" + tmp}, "SECRET_ID=always"},
	} {
		out, err := runSetup(t, srv, clone, c.env...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%v: %v, want exit 2 naming %q:\n%s", c.env, err, c.want, out)
		}
	}
	if n := len(accessors()); n != 1 {
		t.Errorf("%d secret_ids after the refused runs, want still 1", n)
	}
	if s := gitIn(t, clone, "status", "--porcelain", "--ignored"); s != "" {
		t.Errorf("the refused runs left files in the clone:\n%s", s)
	}
	if dirs, _ := filepath.Glob(filepath.Join(tmp, "tokenproxy-approle.*")); len(dirs) != 1 {
		t.Errorf("the refused runs made directories: %v", dirs)
	}
}

// setupEnv is the environment an operator runs deploy/vault's commands in:
// the vault CLI pointed at srv with its root token, and a HOME of its own so
// that no ~/.vault-token of the machine's is read.
func setupEnv(t *testing.T, srv *vaulttest.Server, env ...string) []string {
	return append(os.Environ(), append([]string{"VAULT=" + vaulttest.Binary(), "VAULT_ADDR=" + srv.Addr(),
		"VAULT_TOKEN=" + srv.RootToken(), "HOME=" + t.TempDir()}, env...)...)
}

// runSetup runs deploy/vault/setup.sh in dir, as `sh deploy/vault/setup.sh`
// from a clone, and returns everything it printed.
func runSetup(t *testing.T, srv *vaulttest.Server, dir string, env ...string) (string, error) {
	t.Helper()
	script, err := filepath.Abs("../../deploy/vault/setup.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", script)
	cmd.Dir = dir
	cmd.Env = setupEnv(t, srv, env...)
	b, err := cmd.CombinedOutput()
	return string(b), err
}

func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	b, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, b)
	}
	return string(b)
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
	}
}

// The commands README.md and deploy/vault/README.md give for writing
// credentials, run as written against a real Vault with the files as echo and
// editors leave them, ending in a newline: what they store, tokenproxy
// accepts. The way they replaced, key=@file, stores the newline, and
// tokenproxy's refusal says so.
func TestVaultDeployDocumentedCredentialWrites(t *testing.T) {
	srv, _ := startVault(t)
	var cmds []string
	for _, doc := range []string{"../../README.md", "../../deploy/vault/README.md"} {
		cmds = append(cmds, docKVWrites(t, doc)...)
	}
	if len(cmds) < 2 {
		t.Fatalf("the docs show %d vault kv put/patch commands in sh blocks, want the first write and the rotation: %q", len(cmds), cmds)
	}
	dir := t.TempDir()
	vaultWriteFile(t, filepath.Join(dir, "hgem.json"), `{"api_key": "CANARY-doc-api-key", "client_id": "CANARY-doc-client-id", "client_secret": "CANARY-doc-old"}`+"\n")
	vaultWriteFile(t, filepath.Join(dir, "new-client-secret.txt"), "CANARY-doc-new\n")
	bin := t.TempDir()
	if err := os.Symlink(vaulttest.Binary(), filepath.Join(bin, "vault")); err != nil {
		t.Fatal(err)
	}
	run := func(c string) {
		t.Helper()
		cmd := exec.Command("sh", "-c", c)
		cmd.Dir = dir
		cmd.Env = setupEnv(t, srv, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, b)
		}
	}
	for _, c := range cmds {
		run(c)
	}
	h := runVault(t, srv, vaultTokenAuth(t, srv.RootToken()))
	c := h.readOK(t, "secret/tokenproxy/hgem")
	if err := Check(keysOf("hgem"), c); err != nil {
		t.Errorf("after %q: %v", cmds, err)
	}
	if c.Get("client_secret") != "CANARY-doc-new" || c.Get("api_key") != "CANARY-doc-api-key" {
		t.Errorf("after %q: the secret holds other values than written", cmds)
	}

	run("vault kv patch secret/tokenproxy/hgem client_secret=@new-client-secret.txt")
	c = h.readOK(t, "secret/tokenproxy/hgem")
	if err := Check(keysOf("hgem"), c); err == nil || !strings.Contains(err.Error(), "key client_secret holds a CR, LF or NUL character: it ends with a line break") {
		t.Errorf("client_secret=@file: %v, want the trailing line break named", err)
	}
}

// docKVWrites are the `vault kv put` and `vault kv patch` lines of the sh
// blocks in a Markdown file.
func docKVWrites(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	inSh := false
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "```"):
			inSh = !inSh && line == "```sh"
		case inSh && (strings.Contains(line, "vault kv put ") || strings.Contains(line, "vault kv patch ")):
			cmds = append(cmds, line)
		}
	}
	return cmds
}
