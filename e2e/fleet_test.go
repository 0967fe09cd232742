package e2e

// End-to-end tests of fleet sharing (CONTRACT.md §7): several real tokenproxy
// processes, one real Vault dev server (KV v2) holding both the credentials
// and the shared tokens, and the vendor simulators. The replicas log in
// with the AppRole of deploy/vault/policy.hcl, which grants the credentials
// paths and the shared path and nothing more (TestFleetColdStart checks
// that). The tools are in fleetkit_test.go.

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// fleetSize is how many replicas each fleet test runs.
const fleetSize = 5

// Cold start with concurrent traffic on every replica, sent as soon as each
// one listens while the others are still starting: exactly 1 token request
// per shared upstream, and N for an upstream with shared: false. Also: the
// replicas run under deploy/vault/policy.hcl and nothing more, and no token
// shows on an admin endpoint.
func TestFleetColdStart(t *testing.T) {
	v := newVaultEnv(t)
	v.seedFleet(t)
	for _, kind := range vaultKinds {
		// A slow token endpoint: every replica that starts within a second
		// of the winner finds the lease held and waits for its token.
		v.vendors[kind].sim.SetTokenFault(&vendorsim.Fault{Delay: time.Second})
	}
	unshared := vaultRoute{"hgem-unshared", "hgem", "vault:secret/tokenproxy/hgem"}
	routes := append(vaultKV2Routes(), unshared)
	cfg := v.fleetConfig(routes...)
	edit(cfg, "hgem-unshared", func(u *config.Upstream) { u.Shared = new(bool) }) // shared: false
	f := v.launchFleet(t, fleetSize, cfg)

	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	calls := 0
	for i, p := range f.procs {
		p.waitListening(t)
		for _, r := range routes {
			for range 10 {
				calls++
				wg.Go(func() {
					if a := tryRoute(p, r); a.status != 200 {
						mu.Lock()
						bad = append(bad, fmt.Sprintf("replica %d %s: %s", i, r.name, a))
						mu.Unlock()
					}
				})
			}
		}
	}
	wg.Wait()
	for _, b := range bad {
		t.Error(b)
	}

	for _, kind := range vaultKinds {
		want := 1
		if kind == "hgem" {
			want += fleetSize // hgem-unshared: one per replica
		}
		if n := v.vendors[kind].sim.TokenCalls(); n != want {
			t.Errorf("%s: %d token requests from %d replicas, want %d", kind, n, fleetSize, want)
		}
	}
	var waited int
	for _, kind := range vaultKinds {
		var minted []string
		for i, p := range f.procs {
			switch m, h, w := p.sharedMetric(t, kind, "minted"), p.sharedMetric(t, kind, "hit"), p.sharedMetric(t, kind, "waited"); {
			case m == 1 && h+w == 0:
				minted = append(minted, fmt.Sprint(i))
			case m == 0 && h+w == 1:
				waited += w
			default:
				t.Errorf("%s: replica %d counted minted %d, hit %d, waited %d; want one token taken into use", kind, i, m, h, w)
			}
		}
		if len(minted) != 1 {
			t.Errorf("%s: replicas %v minted, want exactly one", kind, minted)
		}
		rec := v.sharedRecord(t, kind)
		if cv, _ := rec["credential_version"].(string); rec == nil || rec["generation"] != "1" || rec["lease_holder"] != "" ||
			!strings.HasPrefix(cv, "vault:secret/tokenproxy/"+kind+"#1@") {
			t.Errorf("%s: shared record generation %v, lease holder %v, credential version %v; want 1, none, version 1 of secret/tokenproxy/"+kind,
				kind, rec["generation"], rec["lease_holder"], rec["credential_version"])
		}
		for i, p := range f.procs {
			st := p.vaultStatus(t)[kind]
			if st["shared"] != true || st["minted_by"] != rec["minted_by"] {
				t.Errorf("replica %d /status %s: shared %v minted_by %v, want true and %v", i, kind, st["shared"], st["minted_by"], rec["minted_by"])
			}
		}
	}
	// The slow endpoint makes the replicas overlap: some must have found
	// the lease held. (Which ones, and how many, depends on start times.)
	if waited == 0 {
		t.Error("no replica waited for another's lease: the cold start did not race")
	}
	t.Logf("cold start: %d replicas, %d concurrent requests, 1 token request per shared upstream; %d of %d tokens taken after waiting on a lease",
		fleetSize, calls, waited, (fleetSize-1)*len(vaultKinds))

	// shared: false stays per replica: its own token, no record.
	for i, p := range f.procs {
		if st := p.vaultStatus(t)[unshared.name]; st["shared"] != false || st["minted_by"] != "" {
			t.Errorf("replica %d /status %s: shared %v minted_by %q, want false and \"\"", i, unshared.name, st["shared"], st["minted_by"])
		}
		if n := p.sharedMetric(t, unshared.name, "minted") + p.sharedMetric(t, unshared.name, "hit"); n != 0 {
			t.Errorf("replica %d counted %d shared tokens for %s", i, n, unshared.name)
		}
	}
	if rec := v.sharedRecord(t, unshared.name); rec != nil {
		t.Errorf("a shared record exists for %s, which has shared: false", unshared.name)
	}

	checkFleetPolicy(t, v, f)
	f.checkNoTokensExposed(t)
}

// checkFleetPolicy shows that the replicas log in under the AppRole whose
// only policy is deploy/vault/policy.hcl, and that a token of that role can
// do what tokenproxy needs and nothing else.
func checkFleetPolicy(t *testing.T, v *vaultEnv, f *fleet) {
	t.Helper()
	ctx := context.Background()
	// The rules in force are the file's, as it is.
	file, err := os.ReadFile("../deploy/vault/policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := v.root.Sys().GetPolicy("tokenproxy"); err != nil || got != string(file) {
		t.Fatalf("policy tokenproxy in Vault differs from deploy/vault/policy.hcl (%v)", err)
	}
	// Every token the replicas logged in with holds that policy alone
	// (besides Vault's default), and every replica logged in.
	list, err := v.root.Logical().ListWithContext(ctx, "auth/token/accessors")
	if err != nil {
		t.Fatal(err)
	}
	approle := 0
	for _, a := range list.Data["keys"].([]any) {
		s, err := v.root.Logical().WriteWithContext(ctx, "auth/token/lookup-accessor", map[string]any{"accessor": a})
		if err != nil {
			t.Fatal(err)
		}
		if s.Data["path"] != "auth/approle/login" {
			continue
		}
		approle++
		if p := fmt.Sprint(s.Data["policies"]); p != "[default tokenproxy]" {
			t.Errorf("a replica's Vault token has policies %s, want [default tokenproxy]", p)
		}
	}
	logins := 0
	for _, p := range f.procs {
		ok, _ := p.vaultLogins(t)
		logins += ok
	}
	if approle != logins || logins < len(f.procs) {
		t.Errorf("%d AppRole tokens in Vault, %d logins counted by %d replicas: want one token per login, one login at least per replica",
			approle, logins, len(f.procs))
	}

	// A token of the role, as a replica holds it.
	c, err := api.NewClient(&api.Config{Address: v.srv.Addr(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.ClearNamespace()
	login, err := c.Logical().WriteWithContext(ctx, "auth/approle/login", map[string]any{"role_id": v.roleID, "secret_id": v.secretID})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(login.Auth.ClientToken)
	v.secrets = append(v.secrets, login.Auth.ClientToken)
	probe := map[string]any{"data": map[string]any{"access_token": ""}, "options": map[string]any{"cas": 0}}
	cases := []struct {
		op, path string
		allowed  bool
	}{
		{"read", "secret/data/tokenproxy/hgem", true},
		{"read", "secret/data/tokenproxy/shared/hgem", true},
		{"write", "secret/data/tokenproxy/shared/policy-probe", true}, // a new record, with check-and-set
		{"write", "secret/data/tokenproxy/hgem", false},               // credentials are read only
		{"read", "secret/data/elsewhere", false},
		{"read", "secret/data/tokenproxyx/hgem", false},
		{"list", "secret/metadata/tokenproxy", false},
		{"list", "secret/metadata/tokenproxy/shared", false},
		{"read", "secret/metadata/tokenproxy/shared/hgem", false},
		{"delete", "secret/data/tokenproxy/shared/hgem", false},
		{"delete", "secret/metadata/tokenproxy/shared/hgem", false},
		{"write", "secret/destroy/tokenproxy/shared/hgem", false},
		{"write", "secret/delete/tokenproxy/shared/hgem", false},
		{"read", "sys/policy/tokenproxy", false},
		{"read", "sys/mounts", false},
		{"write", "auth/token/create", false},
		{"write", "sys/mounts/other", false},
	}
	for _, c2 := range cases {
		var err error
		switch c2.op {
		case "read":
			_, err = c.Logical().ReadWithContext(ctx, c2.path)
		case "list":
			_, err = c.Logical().ListWithContext(ctx, c2.path)
		case "delete":
			_, err = c.Logical().DeleteWithContext(ctx, c2.path)
		case "write":
			data := probe
			if !strings.Contains(c2.path, "/data/") {
				data = map[string]any{"versions": []int{1}, "type": "kv"}
			}
			_, err = c.Logical().WriteWithContext(ctx, c2.path, data)
		}
		denied := err != nil && strings.Contains(err.Error(), "permission denied")
		if c2.allowed && err != nil {
			t.Errorf("the tokenproxy policy refuses %s %s: %v", c2.op, c2.path, err)
		}
		if !c2.allowed && !denied {
			t.Errorf("the tokenproxy policy allows %s %s (%v)", c2.op, c2.path, err)
		}
	}
}

// Traffic across three token lifetimes on every replica, for all four
// vendors: at most lifetimes + 2 token requests per upstream, every caller
// request 200, no expired token presented to an API. Prodoscore refreshes
// with its refresh token throughout, and no refresh token is presented
// twice (the simulator, like Keycloak with rotation, refuses a reuse).
func TestFleetRefreshAcrossLifetimes(t *testing.T) {
	// Long enough that its safety margin (a tenth) covers a request's way
	// to the simulator on a loaded machine.
	const lifetime = 5 * time.Second
	v := newVaultEnv(t)
	v.seedFleet(t)
	for _, kind := range vaultKinds {
		v.vendors[kind].sim.SetTokenLifetime(lifetime)
	}
	began := time.Now() // no token exists before this
	f := v.startFleet(t, fleetSize, v.fleetConfig(vaultKV2Routes()...))
	f.ready(t)
	tr := newTraffic()
	for i, p := range f.procs {
		tr.add(i, p, vaultKV2Routes(), 100*time.Millisecond)
	}
	start := time.Now()
	waitFor(t, 3*lifetime+10*time.Second, "three token lifetimes of traffic", func() bool {
		return time.Since(start) >= 3*lifetime
	})
	tr.stop()
	elapsed := time.Since(began)
	lifetimes := int((elapsed + lifetime - 1) / lifetime)

	if fails := tr.failures(start, time.Now()); len(fails) > 0 {
		t.Errorf("%d of %d requests not answered 200, first: %s", len(fails), tr.count(), fails[0])
	}
	for _, kind := range vaultKinds {
		sim := v.vendors[kind].sim
		n := sim.TokenCalls()
		t.Logf("%s: %d token requests for %d replicas over %s (%d lifetimes of %s)", kind, n, fleetSize, elapsed.Round(time.Millisecond), lifetimes, lifetime)
		if n > lifetimes+2 || n < 3 {
			t.Errorf("%s: %d token requests over %d lifetimes, want at least 3 and at most %d", kind, n, lifetimes, lifetimes+2)
		}
		expired := 0
		for _, r := range sim.APIRequests() {
			if r.Status == 401 {
				expired++
			}
		}
		if expired > 0 {
			t.Errorf("%s: %d API requests answered 401 (an expired token presented)", kind, expired)
		}
		for i, r := range answeredTokenRequests(t, sim, 0) {
			if r.Status != 200 {
				t.Errorf("%s: token request %d (%s) answered %d", kind, i, r.Grant, r.Status)
			}
		}
	}

	// Prodoscore: every refresh after the first token presented a refresh
	// token, and none twice.
	seen := map[string]bool{}
	refreshes := 0
	for _, r := range v.vendors["prodoscore"].sim.TokenRequestsSeen() {
		form, err := url.ParseQuery(string(r.Body))
		if err != nil || form.Get("grant_type") != "refresh_token" {
			continue
		}
		refreshes++
		rt := form.Get("refresh_token")
		if seen[rt] {
			t.Errorf("a Prodoscore refresh token was presented twice")
		}
		seen[rt] = true
	}
	if n := v.vendors["prodoscore"].sim.TokenCalls(); refreshes != n-1 {
		t.Errorf("prodoscore: %d refresh grants of %d token requests, want all but the first", refreshes, n)
	}
	f.checkNoTokensExposed(t)
}

// The lease holder is killed (SIGKILL) while it mints: the others serve 200
// within lease + token_timeout of its death.
//
// To have one replica hold the lease of every upstream, the tokens are
// revoked at the vendors and one replica alone gets traffic: its 401s make
// it re-mint, under the lease, at token endpoints that hang.
func TestFleetLeaseHolderKilledMidMint(t *testing.T) {
	const lease, tokenTimeout = 4 * time.Second, 2 * time.Second
	v := newVaultEnv(t)
	v.seedFleet(t)
	cfg := v.fleetConfig(vaultKV2Routes()...)
	cfg.Sharing.Lease.Duration = lease
	everyUpstream(cfg, func(u *config.Upstream) { u.TokenTimeout.Duration = tokenTimeout })
	f := v.startFleet(t, fleetSize, cfg)
	f.ready(t)
	holder, others := f.procs[0], f.procs[1:]
	id := holder.replicaID(t)
	gen0 := map[string]string{}
	for _, kind := range vaultKinds {
		gen0[kind] = v.sharedRecord(t, kind)["generation"].(string)
		v.vendors[kind].sim.SetTokenFault(&vendorsim.Fault{Hang: true})
		v.vendors[kind].sim.RevokeAll()
	}
	before := v.tokenCalls()
	for _, r := range vaultKV2Routes() {
		go tryRoute(holder, r) // answered or cut short by the kill; either way unread
	}
	waitFor(t, 5*time.Second, "the first replica to hold every lease and be at every token endpoint", func() bool {
		for _, kind := range vaultKinds {
			if v.sharedRecord(t, kind)["lease_holder"] != id || v.vendors[kind].sim.TokenCalls() <= before[kind] {
				return false
			}
		}
		return true
	})
	holder.cmd.Process.Kill()
	killed := time.Now()
	<-holder.exited
	for _, kind := range vaultKinds {
		if rec := v.sharedRecord(t, kind); rec["lease_holder"] != id || !recordTime(t, rec, "lease_until").After(killed) {
			t.Fatalf("%s: the holder died after its lease ended (holder %v until %v): the test did not kill it mid-mint",
				kind, rec["lease_holder"], rec["lease_until"])
		}
		v.vendors[kind].sim.SetTokenFault(nil)
	}
	after := v.tokenCalls()

	tr := newTraffic()
	for i, p := range others {
		tr.add(i+1, p, vaultKV2Routes(), 100*time.Millisecond)
	}
	survivors := []int{1, 2, 3, 4}
	waitFor(t, lease+tokenTimeout+10*time.Second, "every other replica to serve every upstream", func() bool {
		return tr.leastOKsSince(killed, survivors, vaultKV2Routes()) >= 1
	})
	tr.stop()

	var slowest time.Duration
	for _, i := range survivors {
		for _, r := range vaultKV2Routes() {
			var first time.Duration
			for _, a := range tr.answers(trafficKey{i, r.name}) {
				if a.status == 200 {
					first = a.at.Sub(killed)
					break
				}
				// Until then: the contract's 503, with the lease time left.
				if a.status != 503 || a.code != "credentials_unavailable" || a.retryAfter == "" {
					t.Errorf("replica %d %s before the lease passed on: %s, want 503 credentials_unavailable with Retry-After", i, r.name, a)
				}
			}
			slowest = max(slowest, first)
			if first > lease+tokenTimeout {
				t.Errorf("replica %d %s: first 200 %s after the holder died, want within lease + token_timeout (%s)", i, r.name, first, lease+tokenTimeout)
			}
		}
	}
	t.Logf("holder killed mid-mint: every other replica served every upstream within %s (lease %s, token_timeout %s)",
		slowest.Round(time.Millisecond), lease, tokenTimeout)

	var ids []string
	for _, p := range others {
		ids = append(ids, p.replicaID(t))
	}
	for _, kind := range vaultKinds {
		rec := v.sharedRecord(t, kind)
		if !slices.Contains(ids, rec["minted_by"].(string)) || rec["lease_holder"] != "" || rec["generation"] == gen0[kind] {
			t.Errorf("%s: record minted by %v, lease holder %v, generation %v (was %s): want a survivor's new token, lease free",
				kind, rec["minted_by"], rec["lease_holder"], rec["generation"], gen0[kind])
		}
		// One token request by the successor; for Prodoscore, the dead
		// holder's refresh token, revoked, is refused first and the
		// password grant follows (CONTRACT.md §7's one exception).
		reqs := answeredTokenRequests(t, v.vendors[kind].sim, after[kind])
		want := 1
		if kind == "prodoscore" {
			want = 2
		}
		if len(reqs) != want || reqs[len(reqs)-1].Status != 200 {
			t.Errorf("%s: token requests after the kill %v, want %d ending in 200", kind, reqs, want)
		}
	}
	f.checkNoTokensExposed(t)
}

// A token revoked at the vendor while every replica has traffic: at most 2
// new token requests per upstream fleet-wide, and every caller gets 200 (the
// replay after the 401). Then credentials rotated in Vault: at most 2 token
// requests with the new secret, none with the old one, and again every
// caller gets 200.
func TestFleetRevokedAndRotated(t *testing.T) {
	v := newVaultEnv(t)
	v.seedFleet(t)
	f := v.startFleet(t, fleetSize, v.fleetConfig(vaultKV2Routes()...))
	f.ready(t)
	tr := newTraffic()
	all := []int{0, 1, 2, 3, 4}
	for i, p := range f.procs {
		tr.add(i, p, vaultKV2Routes(), 100*time.Millisecond)
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "traffic on every replica", func() bool {
		return tr.leastOKsSince(start, all, vaultKV2Routes()) >= 3
	})

	// Revoked.
	before, apiBefore := v.tokenCalls(), map[string]int{}
	for _, kind := range vaultKinds {
		apiBefore[kind] = len(v.vendors[kind].sim.APIRequests())
		v.vendors[kind].sim.RevokeAll()
	}
	revoked := time.Now()
	waitFor(t, 20*time.Second, "every replica to serve every upstream after the revocation", func() bool {
		return tr.leastOKsSince(revoked, all, vaultKV2Routes()) >= 5
	})
	for _, kind := range vaultKinds {
		sim := v.vendors[kind].sim
		refused := 0
		for _, r := range sim.APIRequests()[apiBefore[kind]:] {
			if r.Status == 401 {
				refused++
			}
		}
		n := sim.TokenCalls() - before[kind]
		t.Logf("revoked %s: %d API requests refused with 401 and replayed, %d new token requests fleet-wide", kind, refused, n)
		if refused == 0 {
			t.Errorf("%s: no API request was refused after the revocation", kind)
		}
		if n < 1 || n > 2 {
			t.Errorf("%s: %d new token requests after the revocation, want 1 or 2", kind, n)
		}
	}
	if fails := tr.failures(start, time.Now()); len(fails) > 0 {
		t.Errorf("revocation: %d requests not answered 200, first: %s", len(fails), fails[0])
	}

	// Rotated: the vendor accepts only the new secret, then Vault has it.
	secret := map[string]string{"prominsight": "client_secret", "inspera": "api_key", "hgem": "client_secret", "prodoscore": "password"}
	old, fresh := map[string]string{}, map[string]string{}
	before = v.tokenCalls()
	for _, kind := range vaultKinds {
		vd := v.vendors[kind]
		creds := map[string]string{}
		for k, x := range vd.creds {
			creds[k] = x
		}
		old[kind] = creds[secret[kind]]
		fresh[kind] = vaultCanary(kind + "-rotated")
		v.secrets = append(v.secrets, fresh[kind])
		creds[secret[kind]] = fresh[kind]
		vd.sim.SetCredentials(creds)
		if n := v.putKV2(t, kind, creds); n != 2 {
			t.Fatalf("%s: put version %d, want 2", kind, n)
		}
	}
	rotated := time.Now()
	waitFor(t, 20*time.Second, "every replica on credential version 2 with the token minted from it", func() bool {
		for _, kind := range vaultKinds {
			rec := v.sharedRecord(t, kind)
			if cv, _ := rec["credential_version"].(string); !strings.HasPrefix(cv, "vault:secret/tokenproxy/"+kind+"#2@") {
				return false
			}
			for _, p := range f.procs {
				if st := p.vaultStatus(t)[kind]; st["credential_version"] != "2" || st["minted_by"] != rec["minted_by"] {
					return false
				}
			}
		}
		return true
	})
	settled := time.Now()
	waitFor(t, 10*time.Second, "traffic on the new tokens", func() bool {
		return tr.leastOKsSince(settled, all, vaultKV2Routes()) >= 3
	})
	tr.stop()
	for _, kind := range vaultKinds {
		withNew, withOld := 0, 0
		for _, r := range v.vendors[kind].sim.TokenRequestsSeen()[before[kind]:] {
			switch {
			case carries(r, fresh[kind]):
				withNew++
				if r.Status != 200 {
					t.Errorf("%s: a token request with the new secret answered %d", kind, r.Status)
				}
			case carries(r, old[kind]):
				withOld++
			}
		}
		t.Logf("rotated %s: %d token requests with the new secret, %d with the old, fleet-wide", kind, withNew, withOld)
		if withNew < 1 || withNew > 2 || withOld != 0 {
			t.Errorf("%s: %d token requests with the new secret (want 1 or 2) and %d with the old (want 0)", kind, withNew, withOld)
		}
	}
	if fails := tr.failures(rotated, time.Now()); len(fails) > 0 {
		t.Errorf("rotation: %d requests not answered 200, first: %s", len(fails), fails[0])
	}
	f.checkNoTokensExposed(t)
}

// tokenproxy check with sharing: with no stored token it mints under the
// lease and stores it; with one, it uses it without a vendor call, and so
// does a replica started afterwards.
func TestFleetCheckUsesStoredToken(t *testing.T) {
	v := newVaultEnv(t)
	v.seedFleet(t)
	cfg := v.fleetConfig(vaultKV2Routes()...)
	path := v.writeConfig("check-fleet.yaml", cfg)

	r := v.cli("", "check", "--config", path)
	if r.code != 0 {
		t.Fatalf("first check: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, kind := range vaultKinds {
		if n := v.vendors[kind].sim.TokenCalls(); n != 1 {
			t.Errorf("%s: first check made %d token requests, want 1", kind, n)
		}
		rec := v.sharedRecord(t, kind)
		if rec == nil || rec["generation"] != "1" || rec["lease_holder"] != "" || rec["minted_by"] == "" {
			t.Errorf("%s: after the first check the record is %v: want generation 1 minted by the check, lease free", kind, keysOf(rec))
		}
	}

	r = v.cli("", "check", "--config", path)
	if r.code != 0 || strings.Count(r.stdout, ": ok, token valid until ") != len(vaultKinds) {
		t.Fatalf("second check: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	p := v.start(cfg)
	p.ready(t)
	for _, kind := range vaultKinds {
		if n := v.vendors[kind].sim.TokenCalls(); n != 1 {
			t.Errorf("%s: %d token requests after a second check and a replica's start, want still 1", kind, n)
		}
		if h := p.sharedMetric(t, kind, "hit"); h != 1 {
			t.Errorf("%s: the replica counted %d hits, want 1", kind, h)
		}
	}
	(&fleet{v: v, procs: []*proc{p}}).checkNoTokensExposed(t)

	// A sharing path the fleet cannot use (here: one the policy does not
	// grant) fails the smoke test for the shared upstreams, without asking
	// the vendor, instead of passing on tokens minted alone.
	cfg.Sharing.Vault.Path = "secret/other/shared"
	r = v.cli("", "check", "--config", v.writeConfig("check-denied.yaml", cfg))
	if r.code != 1 || strings.Count(r.stdout, ": shared token store unusable: ") != len(vaultKinds) || !strings.Contains(r.stdout, "403") {
		t.Fatalf("check with a denied sharing path: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, kind := range vaultKinds {
		if n := v.vendors[kind].sim.TokenCalls(); n != 1 {
			t.Errorf("%s: %d token requests after a check on a denied sharing path, want still 1", kind, n)
		}
	}
}

// keysOf lists a record's keys with whether each is set, never a value.
func keysOf(rec map[string]any) string {
	var out []string
	for k, x := range rec {
		out = append(out, fmt.Sprintf("%s:%t", k, x != ""))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// Vault cut (a fault proxy in front of it: connections refused, or held
// without an answer) before the fleet's token expires and after, in both
// on_store_unavailable modes: the held token serves while valid, with no
// token request; then local mints on each replica alone (logged, counted
// local) and fail answers 503 credentials_unavailable with Retry-After, in
// either case within token_timeout for the store and one for the vendor.
// With Vault back, the next token goes through the store again, minted once
// for the fleet.
func TestFleetVaultCut(t *testing.T) {
	for _, mode := range []string{"local", "fail"} {
		for _, cut := range []struct {
			name  string
			fault faultKind
		}{{"refused", resetConn}, {"silent", hangConn}} {
			t.Run(mode+"/"+cut.name, func(t *testing.T) { testFleetVaultCut(t, mode, cut.fault) })
		}
	}
}

func testFleetVaultCut(t *testing.T, mode string, fault faultKind) {
	const lifetime, tokenTimeout = 4 * time.Second, 2 * time.Second
	const margin = lifetime / 10 // the broker's safety margin for such a token
	v := newVaultEnv(t)
	v.seedFleet(t)
	for _, kind := range vaultKinds {
		v.vendors[kind].sim.SetTokenLifetime(lifetime)
	}
	fp := newFaultProxy(t, strings.TrimPrefix(v.srv.Addr(), "http://"))
	cfg := v.fleetConfig(vaultKV2Routes()...)
	cfg.Sharing.OnStoreUnavailable, cfg.Sharing.Lease.Duration = mode, 2*tokenTimeout
	everyUpstream(cfg, func(u *config.Upstream) { u.TokenTimeout.Duration = tokenTimeout })
	cfg.Secrets.Vault.Address = "http://" + fp.addr()
	f := v.startFleet(t, fleetSize, cfg)
	f.ready(t)
	all := []int{0, 1, 2, 3, 4}
	tr := newTraffic()
	for i, p := range f.procs {
		tr.add(i, p, vaultKV2Routes(), 100*time.Millisecond)
	}
	defer tr.stop()

	// Cut once every replica serves, and holds the fleet's token, whose
	// expiry the record gives.
	waitFor(t, 10*time.Second, "traffic on every replica", func() bool {
		return tr.leastOKsSince(time.Time{}, all, vaultKV2Routes()) >= 1
	})
	expiry, gen := map[string]time.Time{}, map[string]string{}
	waitFor(t, 10*time.Second, "every replica to hold the fleet's token", func() bool {
		for _, kind := range vaultKinds {
			rec := v.sharedRecord(t, kind)
			expiry[kind], gen[kind] = recordTime(t, rec, "expiry"), rec["generation"].(string)
			for _, p := range f.procs {
				if p.vaultStatus(t)[kind]["token_expires_at"] != expiry[kind].UTC().Format("2006-01-02T15:04:05.000Z07:00") {
					return false
				}
			}
		}
		return true
	})
	fp.set(netFault{kind: fault})
	cut := time.Now()
	before := v.tokenCalls()
	for _, kind := range vaultKinds {
		// The cut comes a second or so after the first tokens, long before
		// their refresh point (about 3s): no refresh is under way.
		if rec := v.sharedRecord(t, kind); rec["generation"] != gen[kind] || rec["lease_holder"] != "" {
			t.Fatalf("%s: the fleet was refreshing when Vault was cut (generation %v, was %s; lease holder %q): the test must cut between refreshes",
				kind, rec["generation"], gen[kind], rec["lease_holder"])
		}
	}

	// Before expiry: the held token serves, and nobody asks a vendor.
	last := cut
	for _, e := range expiry {
		last = later(last, e.Add(-margin))
	}
	calls := map[string]int{}
	waitFor(t, lifetime+5*time.Second, "the held tokens to reach their safety margin", func() bool {
		for _, kind := range vaultKinds {
			if time.Now().Before(expiry[kind].Add(-margin - 100*time.Millisecond)) {
				calls[kind] = v.vendors[kind].sim.TokenCalls()
			}
		}
		return !time.Now().Before(last)
	})
	for _, kind := range vaultKinds {
		if calls[kind] != before[kind] {
			t.Errorf("%s: %d token requests while the held token was valid and Vault cut, want none", kind, calls[kind]-before[kind])
		}
	}
	for _, k := range tr.keys() {
		for _, a := range tr.answers(k) {
			// tokenproxy judges the token when it handles the request, some
			// time between sent and at: only an answer received before the
			// safety margin was certainly judged on a valid token.
			if a.sent.After(cut) && a.at.Before(expiry[k.route].Add(-margin)) && a.status != 200 {
				t.Errorf("replica %d %s, Vault cut, token valid: %s", k.replica, k.route, a)
			}
		}
	}

	// After expiry.
	switch mode {
	case "local":
		waitFor(t, 10*time.Second, "every replica to mint every upstream's token alone", func() bool {
			for _, p := range f.procs {
				for _, kind := range vaultKinds {
					if p.sharedMetric(t, kind, "local") < 1 || !p.logged("sharing store unavailable; minting a token alone (on_store_unavailable: local)",
						map[string]any{"upstream": kind, "level": "warn"}) {
						return false
					}
				}
			}
			return true
		})
		for _, kind := range vaultKinds {
			if n := v.vendors[kind].sim.TokenCalls() - before[kind]; n < fleetSize {
				t.Errorf("%s: %d token requests while Vault was cut, want one per replica at least (%d)", kind, n, fleetSize)
			}
		}
		if fails := tr.failures(cut, time.Now()); len(fails) > 0 {
			t.Errorf("Vault cut, local mode: %d requests not answered 200, first: %s", len(fails), fails[0])
		}
	case "fail":
		waitFor(t, 10*time.Second, "every replica to answer 503 on every upstream", func() bool {
			for _, i := range all {
				for _, kind := range vaultKinds {
					as := tr.answers(trafficKey{i, kind})
					if len(as) == 0 || as[len(as)-1].status != 503 || !as[len(as)-1].sent.After(expiry[kind]) {
						return false
					}
				}
			}
			return true
		})
		for _, k := range tr.keys() {
			for _, a := range tr.answers(k) {
				if a.sent.After(expiry[k.route]) && (a.status != 503 || a.code != "credentials_unavailable" || a.retryAfter == "") {
					t.Errorf("replica %d %s after expiry with Vault cut: %s, want 503 credentials_unavailable with Retry-After", k.replica, k.route, a)
				}
			}
		}
		for _, kind := range vaultKinds {
			if n := v.vendors[kind].sim.TokenCalls() - before[kind]; n != 0 {
				t.Errorf("%s: %d token requests while Vault was cut in fail mode, want none", kind, n)
			}
		}
	}

	// No caller waited longer than a store call and a vendor call.
	var slowest time.Duration
	for _, k := range tr.keys() {
		for _, a := range tr.answers(k) {
			if a.sent.After(cut) {
				slowest = max(slowest, a.at.Sub(a.sent))
			}
		}
	}
	if slowest > 2*tokenTimeout {
		t.Errorf("a caller waited %s with Vault cut, want at most 2 × token_timeout (%s)", slowest, 2*tokenTimeout)
	}

	// Vault back: the next token is minted once, through the store, and
	// every replica takes it up.
	outage := time.Since(cut)
	during := v.tokenCalls()
	fp.set(netFault{})
	restored := time.Now()
	waitFor(t, 20*time.Second, "every replica on a new token from the store", func() bool {
		for _, kind := range vaultKinds {
			rec := v.sharedRecord(t, kind)
			if rec["generation"] == gen[kind] {
				return false
			}
			for _, p := range f.procs {
				if p.vaultStatus(t)[kind]["minted_by"] != rec["minted_by"] {
					return false
				}
			}
		}
		return true
	})
	converged := time.Now()
	waitFor(t, 10*time.Second, "traffic on the store's tokens", func() bool {
		return tr.leastOKsSince(converged, all, vaultKV2Routes()) >= 3
	})
	tr.stop()
	for _, kind := range vaultKinds {
		n := v.vendors[kind].sim.TokenCalls() - during[kind]
		t.Logf("%s: Vault cut %s (%s mode), slowest caller %s: %d token requests while cut, %d after it was back until all %d replicas took the store's token (%s)",
			kind, outage.Round(time.Millisecond), mode, slowest.Round(time.Millisecond), during[kind]-before[kind], n, fleetSize, converged.Sub(restored).Round(time.Millisecond))
		if n < 1 || n > 2 {
			t.Errorf("%s: %d token requests after Vault was back, want 1 (2 at most)", kind, n)
		}
	}
	if fails := tr.failures(converged, time.Now()); len(fails) > 0 {
		t.Errorf("Vault back: %d requests not answered 200, first: %s", len(fails), fails[0])
	}
	f.checkNoTokensExposed(t)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// The tester's fault, with real Vault: the credentials secret deleted with
// `vault kv metadata delete` and written again (its version back to 1, the
// shared record from version 3), then moved by SIGHUP to another secret at
// version 1 (the record from version 4 of the first). After each, the
// vendor revokes the token: every replica serves again, none waits for a
// version it will never read, and the token the fleet shares is minted
// from the secret the replicas read.
func TestFleetCredentialsRecreatedOrMoved(t *testing.T) {
	v := newVaultEnv(t)
	v.seedFleet(t)
	hgem := v.vendors["hgem"]
	for range 2 {
		v.putKV2(t, "hgem", hgem.creds)
	}
	f := v.startFleet(t, 3, v.fleetConfig(vaultKV2Route("hgem")))
	f.ready(t)
	recordOf := func(path string, version string) func() bool {
		return func() bool {
			rec := v.sharedRecord(t, "hgem")
			cv, _ := rec["credential_version"].(string)
			if !strings.HasPrefix(cv, "vault:"+path+"#"+version+"@") {
				return false
			}
			for _, p := range f.procs {
				if st := p.vaultStatus(t)["hgem"]; st["credential_version"] != version || st["minted_by"] != rec["minted_by"] {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 20*time.Second, "the fleet on version 3", recordOf("secret/tokenproxy/hgem", "3"))
	revokeAndServe := func(what string) {
		t.Helper()
		before := hgem.sim.TokenCalls()
		hgem.sim.RevokeAll()
		revoked := time.Now()
		for i, p := range f.procs {
			waitFor(t, 20*time.Second, fmt.Sprintf("%s: replica %d serving after the revocation", what, i), func() bool {
				status, _, err := vaultTryCall(p, "hgem")
				return err == nil && status == 200
			})
			p.ready(t)
		}
		n := hgem.sim.TokenCalls() - before
		t.Logf("%s: every replica serves %s after the revocation, %d token requests", what, time.Since(revoked).Round(time.Millisecond), n)
		if n < 1 || n > 2 {
			t.Errorf("%s: %d token requests after the revocation, want 1 or 2", what, n)
		}
	}

	// (A) Deleted and written again: version 1 of a new lineage.
	if err := v.root.KVv2("secret").DeleteMetadata(context.Background(), "tokenproxy/hgem"); err != nil {
		t.Fatal(err)
	}
	if n := v.putKV2(t, "hgem", hgem.creds); n != 1 {
		t.Fatalf("recreated at version %d, want 1", n)
	}
	waitFor(t, 20*time.Second, "the fleet on version 1 of the recreated secret", recordOf("secret/tokenproxy/hgem", "1"))
	revokeAndServe("recreated")

	// (B) Moved, by SIGHUP, to another secret at version 1, while the
	// record holds a token from version 4 of the first.
	for range 3 {
		v.putKV2(t, "hgem", hgem.creds)
	}
	waitFor(t, 20*time.Second, "the fleet on version 4", recordOf("secret/tokenproxy/hgem", "4"))
	moved := maps.Clone(hgem.creds)
	moved["client_secret"] = vaultCanary("hgem-b")
	v.secrets = append(v.secrets, moved["client_secret"])
	hgem.sim.SetCredentials(moved)
	if n := v.putKV2(t, "hgem-b", moved); n != 1 {
		t.Fatalf("hgem-b at version %d, want 1", n)
	}
	before := hgem.sim.TokenCalls()
	cfg := v.fleetConfig(vaultRoute{"hgem", "hgem", "vault:secret/tokenproxy/hgem-b"})
	v.writeConfig(filepath.Base(f.config), cfg)
	for _, p := range f.procs {
		p.cmd.Process.Signal(syscall.SIGHUP)
	}
	waitFor(t, 20*time.Second, "the fleet on version 1 of hgem-b", recordOf("secret/tokenproxy/hgem-b", "1"))
	withNew := 0
	for _, r := range hgem.sim.TokenRequestsSeen()[before:] {
		if carries(r, moved["client_secret"]) && r.Status == 200 {
			withNew++
		}
	}
	if withNew < 1 {
		t.Errorf("no token was minted from hgem-b after the move")
	}
	revokeAndServe("moved")
	f.checkNoTokensExposed(t)
}

// Two configs give one upstream name to different vendors on one sharing
// path: the fleet's "prominsight" is PROMinsight, one replica's is Inspera.
// No token reaches a host it was not minted for (CONTRACT.md §3): the odd
// replica never takes the record's PROMinsight token, logs an ERROR naming
// the upstream and what differs, shows it in /status, mints its own Inspera
// token and leaves the record alone; the fleet's token stays the one
// PROMinsight issued. (Both orders are in TestSharedTokenNeverCrossesAudiences.)
func TestFleetUpstreamNameOfAnotherVendor(t *testing.T) {
	v := newVaultEnv(t)
	v.seedFleet(t)
	f := v.startFleet(t, 2, v.fleetConfig(vaultKV2Route("prominsight")))
	f.ready(t)
	prom, insp := v.vendors["prominsight"].sim, v.vendors["inspera"].sim
	waitFor(t, 20*time.Second, "the fleet's PROMinsight token stored", func() bool {
		return v.sharedRecord(t, "prominsight")["audience_type"] == "prominsight"
	})
	first := v.sharedRecord(t, "prominsight")
	odd := v.startFleet(t, 1, v.fleetConfig(vaultRoute{"prominsight", "inspera", "vault:secret/tokenproxy/inspera"})).procs[0]
	odd.ready(t)
	a := apiPath["inspera"]
	for range 3 {
		if r := do(t, a.method, odd.data+"/prominsight"+a.path, nil); r.StatusCode != 200 {
			t.Fatalf("the odd replica's Inspera call: %d %s", r.StatusCode, r.body)
		}
		for _, p := range f.procs {
			if r := vaultCall(t, p, "prominsight", "prominsight"); r.StatusCode != 200 {
				t.Fatalf("the fleet's PROMinsight call: %d %s", r.StatusCode, r.body)
			}
		}
	}
	for name, sim := range map[string]*vendorsim.Server{"prominsight": prom, "inspera": insp} {
		for _, r := range sim.APIRequests() {
			if r.Status != 200 {
				t.Errorf("%s answered %d to %s %s: a token of another vendor?", name, r.Status, r.Method, r.Path)
			}
		}
	}
	if n, m := prom.TokenCalls(), insp.TokenCalls(); n != 1 || m != 1 {
		t.Errorf("token requests: %d to PROMinsight (want 1, the fleet's), %d to Inspera (want 1, the odd replica's own)", n, m)
	}
	if rec := v.sharedRecord(t, "prominsight"); rec["generation"] != first["generation"] || rec["access_token"] != first["access_token"] || rec["audience_type"] != "prominsight" {
		t.Errorf("the record changed: generation %v (was %v), audience %v", rec["generation"], first["generation"], rec["audience_type"])
	}
	if st := odd.vaultStatus(t)["prominsight"]; !strings.Contains(fmt.Sprint(st["last_error"]), "holds a token for another upstream (its type, token_url, base_url differ") {
		t.Errorf("/status of the odd replica: last_error %q", st["last_error"])
	}
	found := false
	for _, l := range odd.logLines() {
		if l["level"] == "error" && strings.Contains(fmt.Sprint(l["msg"]), "token for another upstream") {
			found = l["upstream"] == "prominsight" && fmt.Sprint(l["differs"]) == "[type token_url base_url]"
			if !found {
				t.Errorf("the ERROR line: %v", l)
			}
			break
		}
	}
	if !found {
		t.Error("no ERROR line for the record of another upstream")
	}
	if n := odd.sharedMetric(t, "prominsight", "local"); n != 1 {
		t.Errorf("the odd replica counted %d local mints, want 1", n)
	}
	f.procs = append(f.procs, odd)
	f.checkNoTokensExposed(t)
}

// A sharing path outside the policy: every store call is refused (HTTP
// 403). A configuration error, not an outage: each replica logs it at ERROR
// with the path and the capability, shows it in /status, counts it
// (tokenproxy_shared_token_total result="error"), mints a token of its own
// (on_store_unavailable: local) and stays ready.
func TestFleetStoreOutsideThePolicy(t *testing.T) {
	v := newVaultEnv(t)
	v.seedFleet(t)
	cfg := v.fleetConfig(vaultKV2Route("hgem"))
	cfg.Sharing.Vault.Path = "secret/elsewhere/shared"
	f := v.startFleet(t, 2, cfg)
	f.ready(t)
	for i, p := range f.procs {
		if status, body, err := vaultTryCall(p, "hgem"); err != nil || status != 200 {
			t.Fatalf("replica %d: %d %v %.300s", i, status, err, body)
		}
		st := p.vaultStatus(t)["hgem"]
		if le := fmt.Sprint(st["last_error"]); !strings.Contains(le, "the policy needs read on secret/data/elsewhere/shared/hgem") {
			t.Errorf("replica %d /status last_error %q", i, le)
		}
		found := false
		for _, l := range p.logLines() {
			if l["level"] == "error" && strings.Contains(fmt.Sprint(l["msg"]), "sharing store refused access") &&
				strings.Contains(fmt.Sprint(l["error"]), "vault:secret/elsewhere/shared/hgem") && strings.Contains(fmt.Sprint(l["error"]), "needs read") {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("replica %d: no ERROR line naming the path and the capability", i)
		}
		if n := p.sharedMetric(t, "hgem", "error"); n < 1 {
			t.Errorf("replica %d: tokenproxy_shared_token_total{result=\"error\"} %d, want at least 1", i, n)
		}
		if n := p.sharedMetric(t, "hgem", "local"); n != 1 {
			t.Errorf("replica %d: %d local mints, want 1", i, n)
		}
	}
	if n := v.vendors["hgem"].sim.TokenCalls(); n != 2 {
		t.Errorf("%d token requests, want 2 (one per replica, alone)", n)
	}
	f.checkNoTokensExposed(t)
}
