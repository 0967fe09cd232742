package e2e

// End-to-end tests of fleet sharing (CONTRACT.md §7): several real tokenproxy
// processes, one real Vault dev server (KV v2) holding both the credentials
// and the shared tokens, and the vendor simulators. The replicas log in
// with the AppRole of deploy/vault/policy.hcl, which grants the credentials
// paths and the shared path and nothing more.

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// fleet is n replicas started on one config.
type fleet struct {
	v     *vaultEnv
	procs []*proc
}

// sharingYAML is the sharing section of the fleet's configs.
func sharingYAML(extra ...string) string {
	s := "sharing:\n  vault:\n    path: secret/tokenproxy/shared\n"
	for _, l := range extra {
		s += "  " + l + "\n"
	}
	return s
}

// startFleet starts n replicas at once on cfg and waits until each listens.
func (v *vaultEnv) startFleet(t *testing.T, n int, cfg string) *fleet {
	t.Helper()
	f := &fleet{v: v}
	path := v.write(fmt.Sprintf("fleet-%d.yaml", len(v.procs)), []byte(cfg))
	for range n {
		f.procs = append(f.procs, v.launch("run", "--config", path))
	}
	for _, p := range f.procs {
		p.waitListening(t)
	}
	return f
}

// fleetConfig is the config of every replica: the given upstreams from
// Vault, shared through secret/tokenproxy/shared.
func (v *vaultEnv) fleetConfig(sharing string, routes ...vaultRoute) string {
	cfg := v.config("1s", v.approle(), routes...)
	return strings.Replace(cfg, "upstreams:\n", sharing+"upstreams:\n", 1)
}

// Cold start with concurrent traffic on every replica: exactly one token
// request per upstream for the whole fleet.
func TestFleetColdStartOneTokenPerUpstream(t *testing.T) {
	v := newVaultEnv(t)
	v.seed(t)
	f := v.startFleet(t, 5, v.fleetConfig(sharingYAML(), vaultKV2Routes()...))
	var wg sync.WaitGroup
	errs := make(chan string, 1000)
	for _, p := range f.procs {
		for _, kind := range vaultKinds {
			for range 10 {
				wg.Go(func() {
					r := vaultCall(t, p, kind, kind)
					if r.StatusCode != http.StatusOK {
						errs <- fmt.Sprintf("%s: %d %s", kind, r.StatusCode, r.body)
					}
				})
			}
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for _, kind := range vaultKinds {
		if n := v.vendors[kind].sim.TokenCalls(); n != 1 {
			t.Errorf("%s: %d token requests from 5 replicas, want 1", kind, n)
		}
	}
	minted := 0
	for _, p := range f.procs {
		for _, kind := range vaultKinds {
			if metric(t, p, fmt.Sprintf(`tokenproxy_shared_token_total{result="minted",upstream="%s"}`, kind)) == 1 {
				minted++
			}
		}
		st := p.vaultStatus(t)
		for _, kind := range vaultKinds {
			if st[kind]["shared"] != true || !strings.Contains(fmt.Sprint(st[kind]["minted_by"]), "-") {
				t.Errorf("/status %s: shared %v minted_by %v", kind, st[kind]["shared"], st[kind]["minted_by"])
			}
		}
	}
	if minted != len(vaultKinds) {
		t.Errorf("%d (replica, upstream) pairs minted, want one per upstream (%d)", minted, len(vaultKinds))
	}
}
