package secrets

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestCompareFleet(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 14, 0, 0, 0, time.UTC)
	v := func(path string, n int, s int) string {
		return VaultVersion(path, n, t0.Add(time.Duration(s)*time.Second))
	}
	a3 := v("secret/tokenproxy/hgem", 3, 30)
	for _, c := range []struct {
		name string
		a, b string
		want Order
	}{
		{"same version", a3, v("secret/tokenproxy/hgem", 3, 30), Same},
		{"older", v("secret/tokenproxy/hgem", 1, 10), a3, Older},
		{"newer", v("secret/tokenproxy/hgem", 4, 40), a3, Newer},
		// vault kv metadata delete, then put: numbers start again at 1.
		{"recreated, lower number created later", v("secret/tokenproxy/hgem", 1, 50), a3, Newer},
		{"recreated, same number created later", v("secret/tokenproxy/hgem", 3, 50), a3, Newer},
		// Holding version 5 of a secret since deleted, against version 3
		// of the one written after it: behind.
		{"recreated, higher number created earlier", v("secret/tokenproxy/hgem", 5, 10), a3, Older},
		{"one path, one instant, two numbers", v("secret/tokenproxy/hgem", 5, 30), a3, Other},
		{"another secret", v("secret/tokenproxy/hgem-b", 1, 50), v("secret/tokenproxy/hgem", 4, 40), Other},
		{"another secret, higher number", v("secret/tokenproxy/hgem-b", 5, 50), v("secret/tokenproxy/hgem", 4, 40), Other},
		{"a bare number from the previous record format", v("secret/tokenproxy/hgem", 1, 50), "3", Other},
		{"two bare numbers", "1", "3", Other},
		{"fingerprints", "sha256:00", "sha256:01", Other},
		{"path holding # and @", v("kv/a#b@c", 1, 1), v("kv/a#b@c", 2, 2), Older},
	} {
		if got := CompareFleet(c.a, c.b); got != c.want {
			t.Errorf("%s: CompareFleet(%q, %q) = %d, want %d", c.name, c.a, c.b, got, c.want)
		}
	}
	if s := ShownFleetVersion(a3); s != "3" {
		t.Errorf("shown %q, want 3", s)
	}
	for _, hidden := range []string{"sha256:0011", "3", ""} {
		if s := ShownFleetVersion(hidden); s != "" {
			t.Errorf("ShownFleetVersion(%q) = %q, want nothing shown", hidden, s)
		}
	}
}

// The tester's faults: a secret deleted with `vault kv metadata delete` and
// written again, and a move to another secret. The version number restarts,
// the fleet version orders by when each was written; what is shown stays the
// number.
func TestVaultFleetVersionAcrossRecreateAndMove(t *testing.T) {
	srv, root := startVault(t)
	ctx := context.Background()
	for range 3 {
		vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	}
	vaultPutKV2(t, root, "tokenproxy/hgem-b", vaultHGEMValues)
	h := runVault(t, srv, vaultTokenAuth(t, srv.RootToken()))
	v3 := h.readOK(t, "secret/tokenproxy/hgem")
	if v3.Version() != "3" || !strings.HasPrefix(v3.FleetVersion(), "vault:secret/tokenproxy/hgem#3@") {
		t.Fatalf("version 3: shown %q, fleet %q", v3.Version(), v3.FleetVersion())
	}
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	v4 := h.readOK(t, "secret/tokenproxy/hgem")
	if CompareFleet(v3.FleetVersion(), v4.FleetVersion()) != Older || CompareFleet(v4.FleetVersion(), v3.FleetVersion()) != Newer {
		t.Errorf("version 3 (%s) and 4 (%s) of one secret do not order", v3.FleetVersion(), v4.FleetVersion())
	}
	moved := h.readOK(t, "secret/tokenproxy/hgem-b")
	if moved.Version() != "1" || CompareFleet(moved.FleetVersion(), v4.FleetVersion()) != Other {
		t.Errorf("another secret: shown %q, order %d against version 4; want 1 and Other", moved.Version(), CompareFleet(moved.FleetVersion(), v4.FleetVersion()))
	}
	if err := root.KVv2("secret").DeleteMetadata(ctx, "tokenproxy/hgem"); err != nil {
		t.Fatal(err)
	}
	vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	again := h.readOK(t, "secret/tokenproxy/hgem")
	// Written after the old version 4: newer, though its number is lower;
	// a replica still holding version 4 is behind it.
	if again.Version() != "1" || CompareFleet(again.FleetVersion(), v4.FleetVersion()) != Newer ||
		CompareFleet(v4.FleetVersion(), again.FleetVersion()) != Older {
		t.Errorf("recreated: shown %q, order %d against the old version 4; want 1 and Newer", again.Version(), CompareFleet(again.FleetVersion(), v4.FleetVersion()))
	}
	for range 4 {
		vaultPutKV2(t, root, "tokenproxy/hgem", vaultHGEMValues)
	}
	// Version 5 of the new secret, created after version 4 of the old one:
	// newer.
	if v5 := h.readOK(t, "secret/tokenproxy/hgem"); v5.Version() != "5" || CompareFleet(v5.FleetVersion(), v4.FleetVersion()) != Newer {
		t.Errorf("recreated, written to version 5: shown %q, order %d; want 5 and Newer", v5.Version(), CompareFleet(v5.FleetVersion(), v4.FleetVersion()))
	}
}
