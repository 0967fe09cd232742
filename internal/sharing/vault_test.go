package sharing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
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
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/testlog"
	"github.com/tokenproxy/tokenproxy/internal/vaulttest"
)

// Every test here talks to a real Vault dev server on 127.0.0.1.

// minimalPolicy is all a Vault role needs for sharing.vault.path
// secret/tokenproxy/shared (TestVaultStoreMinimalPolicy shows each
// capability is needed): read for Load; create for the first Save of an
// upstream's record (KV v2 calls a write "create" while the secret has no
// metadata, "update" after); update for every later Save. Finding the mount
// (sys/internal/ui/mounts/<path>) needs no grant of its own: Vault answers it
// to any token holding a capability somewhere under the mount. Nothing under
// secret/metadata/ is needed: the version comes with each read and write.
const minimalPolicy = `path "secret/data/tokenproxy/shared/*" {
  capabilities = ["read", "create", "update"]
}
`

const vaultWaitLimit = 30 * time.Second

func TestVaultStoreConformance(t *testing.T) {
	srv, root := startVault(t)
	mountKV(t, root, "kv/team-a", "2")
	h := logIn(t, srv.Addr(), srv.RootToken())
	limited := logIn(t, srv.Addr(), policyToken(t, root, minimalPolicy))
	for _, kit := range []storeKit{
		vaultKit(h, root, "secret", "root token", "r"),
		vaultKit(h, root, "kv/team-a", "root token, a mount with a slash", "s"),
		vaultKit(limited, root, "secret", "the minimal policy", "m"),
	} {
		t.Run(kit.name, func(t *testing.T) { runConformance(t, kit) })
	}
}

// vaultKit stores records at <mount>/tokenproxy/shared/<tag><n>, a fresh
// prefix for every case.
func vaultKit(h *loggedIn, root *api.Client, mount, how, tag string) storeKit {
	var n atomic.Int32
	return storeKit{name: "Vault " + mount + ", " + how, open: func(t *testing.T) (Store, func(*testing.T, string)) {
		sub := fmt.Sprintf("tokenproxy/shared/%s%d", tag, n.Add(1))
		s := h.store(t, mount+"/"+sub)
		return s, func(t *testing.T, name string) {
			if err := root.KVv2(mount).Delete(context.Background(), sub+"/"+name); err != nil {
				t.Fatal(err)
			}
		}
	}}
}

// The stored secret is the documented flat object of strings.
func TestVaultStoreFormatInVault(t *testing.T) {
	srv, root := startVault(t)
	h := logIn(t, srv.Addr(), srv.RootToken())
	s := h.store(t, "secret/tokenproxy/shared")
	rec := Record{AccessToken: "CANARY-tok", Expiry: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), Generation: 1 << 60}
	mustSave(t, s, "inspera", rec, 0)
	got, err := root.KVv2("secret").Get(context.Background(), "tokenproxy/shared/inspera")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := encodeRecord(rec)
	if len(got.Data) != len(want) || got.Data["expiry"] != "2025-01-02T03:04:05.000000006Z" || got.Data["generation"] != "1152921504606846976" || got.Data["access_token"] != "CANARY-tok" {
		t.Fatalf("stored data: %d keys, expiry %v, generation %v", len(got.Data), got.Data["expiry"], got.Data["generation"])
	}
	// Written by hand or by a newer tokenproxy: numbers, extra keys, offsets.
	if _, err := root.KVv2("secret").Put(context.Background(), "tokenproxy/shared/hgem", map[string]any{
		"generation": 7, "expiry": "2025-01-02T08:34:05+05:30", "later_field": map[string]any{"x": true},
	}); err != nil {
		t.Fatal(err)
	}
	r, v := mustLoad(t, s, "hgem")
	if v != 1 || r.Generation != 7 || !r.Expiry.Equal(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("hand-written record: version %d, generation %d, expiry %v", v, r.Generation, r.Expiry)
	}
}

// A malformed record is an error naming the path and key, and a Save with
// its version still writes over it.
func TestVaultStoreMalformedRecord(t *testing.T) {
	srv, root := startVault(t)
	h := logIn(t, srv.Addr(), srv.RootToken())
	s := h.store(t, "secret/tokenproxy/shared")
	if _, err := root.KVv2("secret").Put(context.Background(), "tokenproxy/shared/inspera", map[string]any{
		"access_token": "CANARY-ok", "generation": "CANARY-not-a-number", "lease_until": map[string]any{"CANARY": 1},
	}); err != nil {
		t.Fatal(err)
	}
	_, v, err := s.Load(context.Background(), "inspera")
	want := "sharing: vault:secret/tokenproxy/shared/inspera at " + srv.Addr() + ": version 1 is not a record: malformed record: key generation: " + errNumber
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "key lease_until: an object") || errors.Is(err, ErrConflict) || !errors.Is(err, ErrMalformed) || v != 1 {
		t.Fatalf("got version %d, %v\nwant %s...", v, err, want)
	}
	if n := mustSave(t, s, "inspera", Record{AccessToken: "CANARY-fixed"}, 1); n != 2 {
		t.Fatalf("write over the malformed record: version %d", n)
	}
	if rec, _ := mustLoad(t, s, "inspera"); rec.AccessToken != "CANARY-fixed" {
		t.Fatal("the repaired record does not load")
	}
}

// Destroyed versions read as none, like deleted ones; with the metadata
// gone the secret does not exist at all.
func TestVaultStoreDestroyedVersions(t *testing.T) {
	srv, root := startVault(t)
	h := logIn(t, srv.Addr(), srv.RootToken())
	s := h.store(t, "secret/tokenproxy/shared")
	kv := root.KVv2("secret")
	ctx := context.Background()
	v := mustSave(t, s, "inspera", Record{AccessToken: "CANARY-1"}, 0)
	v = mustSave(t, s, "inspera", Record{AccessToken: "CANARY-2"}, v)
	if err := kv.Destroy(ctx, "tokenproxy/shared/inspera", []int{v}); err != nil {
		t.Fatal(err)
	}
	if rec, got := mustLoad(t, s, "inspera"); got != v || rec.AccessToken != "" {
		t.Fatalf("destroyed latest version: version %d (want %d), token set %t", got, v, rec.AccessToken != "")
	}
	v = mustSave(t, s, "inspera", Record{AccessToken: "CANARY-3"}, v)
	if err := kv.DeleteMetadata(ctx, "tokenproxy/shared/inspera"); err != nil {
		t.Fatal(err)
	}
	if _, got := mustLoad(t, s, "inspera"); got != 0 {
		t.Fatalf("after the metadata was deleted: version %d, want 0", got)
	}
	wantConflict(t, s, "inspera", Record{}, v)
	if n := mustSave(t, s, "inspera", Record{}, 0); n != 1 {
		t.Fatalf("recreated at version %d", n)
	}
}

// Check, Load and Save refuse what is not a KV v2 mount, with one line
// naming the path and the reason.
func TestVaultStoreRefusesWhatIsNotKVv2(t *testing.T) {
	srv, root := startVault(t)
	mountKV(t, root, "kv1", "1")
	mountKV(t, root, "kv/team-a", "2")
	h := logIn(t, srv.Addr(), srv.RootToken())
	at := " at " + srv.Addr() + ": "
	cases := []struct {
		path, check, use string // check: Check's error; use: Load's and Save's ("" when they work)
	}{
		{"kv1/tokenproxy/shared", `mount "kv1/" is KV version 1, not KV version 2`, `mount "kv1/" is KV version 1, not KV version 2`},
		{"cubbyhole/tokenproxy/shared", `finding its KV mount: mount "cubbyhole/" is of type "cubbyhole", not kv`, `finding its KV mount: mount "cubbyhole/" is of type "cubbyhole", not kv`},
		{"nomount/tokenproxy/shared", "finding its KV mount: HTTP 403: preflight capability check returned 403", "finding its KV mount: HTTP 403: preflight capability check returned 403"},
		{"secret", "it names the mount alone, with no prefix for the records under it", ""},
		{"kv/team-a", "it names the mount alone, with no prefix for the records under it", ""},
		{"kv/team-a/tokenproxy", "", ""},
		{"/secret/tokenproxy/shared/", "", ""},
	}
	for _, c := range cases {
		s := h.store(t, c.path)
		err := s.Check(context.Background())
		wantCheck := "sharing.vault.path " + strings.Trim(c.path, "/") + at + c.check
		if c.check == "" && err != nil || c.check != "" && (err == nil || !strings.HasPrefix(err.Error(), wantCheck)) {
			t.Errorf("Check %s: got %v\nwant %s", c.path, err, wantCheck)
		}
		where := "sharing: vault:" + strings.Trim(c.path, "/") + "/inspera" + at
		_, _, lerr := s.Load(context.Background(), "inspera")
		_, serr := s.Save(context.Background(), "inspera", Record{AccessToken: "CANARY"}, 0)
		for op, err := range map[string]error{"Load": lerr, "Save": serr} {
			if c.use == "" && err != nil || c.use != "" && (err == nil || !strings.HasPrefix(err.Error(), where+c.use) || errors.Is(err, ErrConflict)) {
				t.Errorf("%s %s: got %v\nwant %s%s", op, c.path, err, where, c.use)
			}
		}
	}
	// Upgraded in place, the KV v1 mount is taken without a restart.
	if _, err := root.Logical().Write("sys/mounts/kv1/tune", map[string]any{"options": map[string]any{"version": "2"}}); err != nil { // vault kv enable-versioning
		t.Fatal(err)
	}
	s := h.store(t, "kv1/tokenproxy/shared")
	waitFor(t, "the upgraded mount", func() bool { _, _, err := s.Load(context.Background(), "inspera"); return err == nil })
	mustSave(t, s, "inspera", Record{}, 0)

	s = h.store(t, "secret/tokenproxy/shared")
	for _, name := range []string{"", "a/b"} {
		if _, _, err := s.Load(context.Background(), name); err == nil || !strings.Contains(err.Error(), "an upstream name must be one path segment") {
			t.Errorf("name %q: got %v", name, err)
		}
	}
}

// A policy that does not cover the shared path is a 403 naming the path; it
// is the policy's doing, so it causes no new login.
func TestVaultStorePermissionDenied(t *testing.T) {
	srv, root := startVault(t)
	at := " at " + srv.Addr() + ": "
	credsOnly := logIn(t, srv.Addr(), policyToken(t, root, `path "secret/data/tokenproxy/creds/*" { capabilities = ["read"] }`))
	readOnly := logIn(t, srv.Addr(), policyToken(t, root, `path "secret/data/tokenproxy/shared/*" { capabilities = ["read"] }`))
	otherMount := logIn(t, srv.Addr(), policyToken(t, root, `path "cubbyhole/*" { capabilities = ["read"] }`))

	s := credsOnly.store(t, "secret/tokenproxy/shared")
	for range 3 {
		_, _, err := s.Load(context.Background(), "inspera")
		want := "sharing: vault:secret/tokenproxy/shared/inspera" + at + "reading: HTTP 403: "
		if !errors.Is(err, ErrDenied) || !strings.HasPrefix(err.Error(), want) ||
			!strings.HasSuffix(err.Error(), "permission denied (the policy needs read on secret/data/tokenproxy/shared/inspera, or Vault's token is no longer valid)") {
			t.Fatalf("load outside the policy: got %v\nwant %s", err, want)
		}
	}
	_, err := s.Save(context.Background(), "inspera", Record{AccessToken: "CANARY"}, 0)
	if !errors.Is(err, ErrDenied) || !strings.HasPrefix(err.Error(), "sharing: vault:secret/tokenproxy/shared/inspera"+at+"writing: HTTP 403: ") ||
		!strings.HasSuffix(err.Error(), "permission denied (the policy needs create on secret/data/tokenproxy/shared/inspera, or Vault's token is no longer valid)") {
		t.Fatalf("save outside the policy: %v", err)
	}

	s = readOnly.store(t, "secret/tokenproxy/shared")
	mustLoad(t, s, "inspera")
	if _, err := s.Save(context.Background(), "inspera", Record{}, 0); !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "vault:secret/tokenproxy/shared/inspera"+at+"writing: HTTP 403: ") {
		t.Fatalf("save with read only: %v", err)
	}

	// Nothing under the mount: the mount lookup itself is refused.
	s = otherMount.store(t, "secret/tokenproxy/shared")
	_, _, err = s.Load(context.Background(), "inspera")
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "vault:secret/tokenproxy/shared/inspera"+at+"finding its KV mount: HTTP 403: ") {
		t.Fatalf("load with no grant under the mount: %v", err)
	}
	for _, h := range []*loggedIn{credsOnly, readOnly, otherMount} {
		if n := h.logins.Load(); n != 1 {
			t.Errorf("%d logins after 403s the policy causes, want 1", n)
		}
	}
}

// The minimal policy is enough (the conformance table runs under it too),
// and each of its capabilities is needed.
func TestVaultStoreMinimalPolicy(t *testing.T) {
	srv, root := startVault(t)
	full := logIn(t, srv.Addr(), policyToken(t, root, minimalPolicy))
	s := full.store(t, "secret/tokenproxy/shared")
	if err := s.Check(context.Background()); err != nil {
		t.Fatalf("Check under the minimal policy: %v", err)
	}
	mustLoad(t, s, "inspera")
	v := mustSave(t, s, "inspera", Record{AccessToken: "CANARY-1"}, 0)
	v = mustSave(t, s, "inspera", Record{AccessToken: "CANARY-2"}, v)
	wantConflict(t, s, "inspera", Record{}, v-1)
	if rec, got := mustLoad(t, s, "inspera"); got != v || rec.AccessToken != "CANARY-2" {
		t.Fatalf("load: version %d", got)
	}

	without := func(capability string) notedVault {
		hcl := strings.Replace(minimalPolicy, `"`+capability+`", `, "", 1)
		hcl = strings.Replace(hcl, `, "`+capability+`"`, "", 1)
		if hcl == minimalPolicy {
			t.Fatalf("no %s in the minimal policy", capability)
		}
		return logIn(t, srv.Addr(), policyToken(t, root, hcl)).store(t, "secret/tokenproxy/shared")
	}
	if _, _, err := without("read").Load(context.Background(), "inspera"); !strings.Contains(fmt.Sprint(err), "HTTP 403") {
		t.Errorf("without read, load: %v", err)
	}
	if _, err := without("create").Save(context.Background(), "hgem", Record{}, 0); !strings.Contains(fmt.Sprint(err), "HTTP 403") {
		t.Errorf("without create, the first save: %v", err)
	}
	if _, err := without("update").Save(context.Background(), "inspera", Record{}, v); !errors.Is(err, ErrDenied) || !strings.Contains(fmt.Sprint(err), "the policy needs update on secret/data/tokenproxy/shared/inspera") {
		t.Errorf("without update, a later save: %v", err)
	}
}

// A 403 because Vault no longer accepts the token makes secrets.Vault log
// in again, as it does for credential reads.
func TestVaultStoreLogsInAgainAfterRevocation(t *testing.T) {
	srv, root := startVault(t)
	first := policyToken(t, root, minimalPolicy)
	h := logIn(t, srv.Addr(), first)
	s := h.store(t, "secret/tokenproxy/shared")
	mustSave(t, s, "inspera", Record{AccessToken: "CANARY"}, 0)
	writeFile(t, h.tokenFile, policyToken(t, root, minimalPolicy))
	if err := root.Auth().Token().RevokeOrphan(first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a load after the token was revoked", func() bool {
		_, v, err := s.Load(context.Background(), "inspera")
		return err == nil && v == 1
	})
	if n := h.logins.Load(); n != 2 {
		t.Errorf("%d logins, want 2", n)
	}
}

// Vault not answering: an error at the caller's deadline, or at the client's
// 10s timeout. Vault stopped: a non-conflict error naming address and path,
// without waiting for that timeout. Vault back: the store works again.
func TestVaultStoreOutage(t *testing.T) {
	srv, _ := startVault(t)
	direct := logIn(t, srv.Addr(), srv.RootToken())
	proxy := newVaultProxy(t, srv.Addr())
	proxied := logIn(t, proxy.srv.URL, srv.RootToken())
	s, sp := direct.store(t, "secret/tokenproxy/shared"), proxied.store(t, "secret/tokenproxy/shared")
	mustSave(t, s, "inspera", Record{AccessToken: "CANARY"}, 0)
	mustLoad(t, sp, "inspera")

	proxy.hang.Store(true)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, _, err := sp.Load(ctx, "inspera")
	cancel()
	if err == nil || errors.Is(err, ErrConflict) || time.Since(start) > 5*time.Second || !strings.Contains(err.Error(), "no answer in time") {
		t.Fatalf("Vault not answering, caller's deadline 300ms: got %v after %s", err, time.Since(start))
	}
	// The failure made the store look the mount up afresh: let it, so that
	// what times out next is the write itself.
	proxy.hang.Store(false)
	mustLoad(t, sp, "inspera")
	proxy.hang.Store(true)
	start = time.Now()
	_, err = sp.Save(context.Background(), "inspera", Record{}, 1)
	took := time.Since(start)
	want := "sharing: vault:secret/tokenproxy/shared/inspera at " + proxy.srv.URL + ": writing: no answer in time (context deadline exceeded)"
	if err == nil || err.Error() != want {
		t.Fatalf("Vault not answering: got %v\nwant %s", err, want)
	}
	if took > 15*time.Second {
		t.Errorf("Vault not answering: the error came after %s, want it at the client's 10s timeout", took)
	}
	proxy.hang.Store(false)

	srv.Stop()
	for op, call := range map[string]func() error{
		"reading": func() error { _, _, err := s.Load(context.Background(), "inspera"); return err },
		"writing": func() error { _, err := s.Save(context.Background(), "inspera", Record{}, 1); return err },
	} {
		start := time.Now()
		err := call()
		want := "sharing: vault:secret/tokenproxy/shared/inspera at " + srv.Addr() + ": "
		if err == nil || errors.Is(err, ErrConflict) || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "connection refused") || time.Since(start) >= 10*time.Second {
			t.Errorf("%s with Vault stopped: got %v after %s", op, err, time.Since(start))
		}
	}

	srv.Restart() // same address and root token, empty storage
	waitFor(t, "a load after Vault came back", func() bool {
		_, v, err := s.Load(context.Background(), "inspera")
		return err == nil && v == 0
	})
	mustSave(t, s, "inspera", Record{}, 0)
}

// The mount is looked up once; after that a Load or Save is one request.
func TestVaultStoreRequestsPerCall(t *testing.T) {
	srv, _ := startVault(t)
	proxy := newVaultProxy(t, srv.Addr())
	h := logIn(t, proxy.srv.URL, srv.RootToken())
	s := h.store(t, "secret/tokenproxy/shared")
	waitFor(t, "the login", func() bool { return h.logins.Load() == 1 })
	steps := []struct {
		what string
		call func() error
		want []string
	}{
		{"first load", func() error { _, _, err := s.Load(context.Background(), "inspera"); return err },
			[]string{"GET /v1/sys/internal/ui/mounts/secret/tokenproxy/shared/inspera", "GET /v1/secret/data/tokenproxy/shared/inspera"}},
		{"load", func() error { _, _, err := s.Load(context.Background(), "inspera"); return err },
			[]string{"GET /v1/secret/data/tokenproxy/shared/inspera"}},
		{"save", func() error { _, err := s.Save(context.Background(), "inspera", Record{}, 0); return err },
			[]string{"PUT /v1/secret/data/tokenproxy/shared/inspera"}},
		{"conflicting save", func() error {
			_, err := s.Save(context.Background(), "inspera", Record{}, 0)
			return ignoreConflict(err)
		},
			[]string{"PUT /v1/secret/data/tokenproxy/shared/inspera"}},
		{"load of another upstream", func() error { _, _, err := s.Load(context.Background(), "hgem"); return err },
			[]string{"GET /v1/secret/data/tokenproxy/shared/hgem"}},
	}
	for _, st := range steps {
		proxy.take()
		if err := st.call(); err != nil {
			t.Fatalf("%s: %v", st.what, err)
		}
		if got := proxy.take(); strings.Join(got, "\n") != strings.Join(st.want, "\n") {
			t.Errorf("%s: requests\n%s\nwant\n%s", st.what, strings.Join(got, "\n"), strings.Join(st.want, "\n"))
		}
	}
}

func ignoreConflict(err error) error {
	if errors.Is(err, ErrConflict) {
		return nil
	}
	if err == nil {
		return errors.New("no conflict")
	}
	return err
}

// BenchmarkVaultStore measures Load and Save against the local dev server
// (go test -run X -bench VaultStore -benchtime 200x ./internal/sharing).
func BenchmarkVaultStore(b *testing.B) {
	srv, _ := startVault(b)
	h := logIn(b, srv.Addr(), srv.RootToken())
	s := h.store(b, "secret/tokenproxy/shared")
	rec := fullRecord(b, "bench")
	v := mustSave(b, s, "inspera", rec, 0)
	b.Run("Load", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := s.Load(context.Background(), "inspera"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Save", func(b *testing.B) {
		for b.Loop() {
			v = mustSave(b, s, "inspera", rec, v)
		}
	})
	b.Run("SaveConflict", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Save(context.Background(), "inspera", rec, v-1); !errors.Is(err, ErrConflict) {
				b.Fatal(err)
			}
		}
	})
}

// --- helpers ---

func startVault(t testing.TB) (*vaulttest.Server, *api.Client) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // after every other cleanup
	srv := vaulttest.Start(t)
	return srv, srv.Client()
}

// loggedIn is a running secrets.Vault (token login from a file) and what it
// logged and counted. On cleanup it checks that no token or record value
// reached its log or an error of a store made with store.
type loggedIn struct {
	v         *secrets.Vault
	tokenFile string
	logins    atomic.Int32
	hide      []string
	rec       testlog.Record
}

func logIn(t testing.TB, addr, token string) *loggedIn {
	t.Helper()
	h := &loggedIn{tokenFile: filepath.Join(t.TempDir(), "token"), hide: []string{token, "hvs.", "CANARY"}}
	writeFile(t, h.tokenFile, token)
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), &h.rec.Log, zapcore.DebugLevel)
	v, err := secrets.NewVault(&config.Vault{Address: addr, Auth: config.VaultAuth{Method: "token", Mount: "token", TokenFile: h.tokenFile}}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	v.OnLogin = func(err error) {
		if err == nil {
			h.logins.Add(1)
		}
		h.rec.Note(err)
	}
	h.v = v
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); v.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		h.rec.Hidden(t, h.hide)
	})
	return h
}

// store is NewVault(h.v, path) whose errors h checks on cleanup.
func (h *loggedIn) store(t testing.TB, path string) notedVault {
	return notedVault{NewVault(h.v, path), h}
}

type notedVault struct {
	s *Vault
	h *loggedIn
}

func (n notedVault) Check(ctx context.Context) error {
	err := n.s.Check(ctx)
	n.h.rec.Note(err)
	return err
}

func (n notedVault) Load(ctx context.Context, name string) (Record, int, error) {
	rec, v, err := n.s.Load(ctx, name)
	n.h.rec.Note(err)
	return rec, v, err
}

func (n notedVault) Save(ctx context.Context, name string, rec Record, cas int) (int, error) {
	v, err := n.s.Save(ctx, name, rec, cas)
	n.h.rec.Note(err)
	return v, err
}

// policyToken is a new token (TTL 1h) holding a policy with hcl and Vault's
// default policy, which lets a token look itself up and renew itself (a
// token login does both; AppRole and Kubernetes roles attach it too).
func policyToken(t testing.TB, root *api.Client, hcl string) string {
	t.Helper()
	name := fmt.Sprintf("p%d", time.Now().UnixNano())
	if err := root.Sys().PutPolicy(name, hcl); err != nil {
		t.Fatal(err)
	}
	s, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{name}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	return s.Auth.ClientToken
}

// mountKV mounts a KV engine of that version at path and waits until it
// answers (a new KV v2 mount is briefly "upgrading").
func mountKV(t testing.TB, root *api.Client, path, version string) {
	t.Helper()
	if err := root.Sys().Mount(path, &api.MountInput{Type: "kv", Options: map[string]string{"version": version}}); err != nil {
		t.Fatal(err)
	}
	probe := path + "/probe"
	if version == "2" {
		probe = path + "/data/probe"
	}
	waitFor(t, "the new mount "+path, func() bool {
		_, err := root.Logical().Write(probe, map[string]any{"data": map[string]any{"x": "y"}})
		return err == nil
	})
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds; it fails the test after vaultWaitLimit.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(vaultWaitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// vaultProxy is an HTTP reverse proxy in front of Vault that lists the
// requests it passed and can stop answering (hang).
type vaultProxy struct {
	srv  *httptest.Server
	hang atomic.Bool

	mu   sync.Mutex
	reqs []string
}

func newVaultProxy(t testing.TB, target string) *vaultProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &vaultProxy{}
	tr := &http.Transport{}
	stop := make(chan struct{})
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(u) }, Transport: tr}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.hang.Load() {
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return
		}
		p.mu.Lock()
		p.reqs = append(p.reqs, r.Method+" "+r.URL.Path)
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		close(stop)
		p.srv.Close()
		tr.CloseIdleConnections()
	})
	return p
}

// take returns the requests passed since the last take.
func (p *vaultProxy) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.reqs
	p.reqs = nil
	return r
}
