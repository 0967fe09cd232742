package config

import (
	"testing"
	"time"
)

const vaultSection = `
secrets:
  vault: {address: "https://v:8200", auth: {method: kubernetes, role: r}}
`

func TestSharingDefaultsAndShared(t *testing.T) {
	cfg, err := Parse([]byte(vaultSection + `
sharing:
  vault: {path: secret/tokenproxy/shared}
upstreams:
  a: {type: hgem, base_url: "https://x", credentials: "vault:secret/a"}
  b: {type: hgem, base_url: "https://x", credentials: "vault:secret/b", shared: false}
  c: {type: hgem, base_url: "https://x", credentials: "vault:secret/c", shared: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sharing.Lease.Duration != 30*time.Second || cfg.Sharing.OnStoreUnavailable != "local" {
		t.Errorf("defaults: lease %s, on_store_unavailable %q", cfg.Sharing.Lease, cfg.Sharing.OnStoreUnavailable)
	}
	for name, want := range map[string]bool{"a": true, "b": false, "c": true, "nosuch": false} {
		if got := cfg.IsShared(name); got != want {
			t.Errorf("IsShared(%s) = %v, want %v", name, got, want)
		}
	}
	if got := cfg.Upstreams["a"].ReauthMinInterval.Duration; got != 10*time.Second {
		t.Errorf("reauth_min_interval default %s, want 10s", got)
	}
	noSharing, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if noSharing.IsShared("hgem") {
		t.Error("an upstream is shared without a sharing section")
	}
}

func TestSharingProblems(t *testing.T) {
	cases := []struct {
		name, text string
		want       []string
	}{
		{"needs vault, shared without sharing elsewhere is fine", `
sharing: {vault: {path: secret/tokenproxy/shared}}
upstreams:
  a: {type: hgem, base_url: "https://x", credentials: "env:A"}
`, []string{"sharing: needs secrets.vault"}},
		{"shared without sharing", `
upstreams:
  a: {type: hgem, base_url: "https://x", credentials: "env:A", shared: true}
`, []string{"upstreams.a.shared: needs a top-level sharing section"}},
		{"path forms", vaultSection + `
sharing: {vault: {path: secret}}
upstreams:
  a: {type: hgem, base_url: "https://x", credentials: "vault:secret/a"}
`, []string{`sharing.vault.path: "secret" must be <kv-v2-mount>/<prefix>`}},
		{"path required", vaultSection + `
sharing: {vault: {}}
upstreams:
  a: {type: hgem, base_url: "https://x", credentials: "vault:secret/a"}
`, []string{"sharing.vault.path: required"}},
		{"lease against the longest shared token_timeout", vaultSection + `
sharing: {vault: {path: secret/shared}, lease: 15s, on_store_unavailable: maybe}
upstreams:
  a: {type: hgem, base_url: "https://x", credentials: "vault:secret/a", token_timeout: 5s}
  b: {type: hgem, base_url: "https://x", credentials: "vault:secret/b", token_timeout: 8s}
  c: {type: hgem, base_url: "https://x", credentials: "vault:secret/c", token_timeout: 60s, shared: false}
`, []string{"sharing.lease: 15s is less than twice the token_timeout of upstream b (8s)",
			`sharing.on_store_unavailable: "maybe" is not one of local, fail`}},
		{"mistyped shared and reauth", vaultSection + `
sharing: {vault: {path: secret/shared}}
upstreams:
  a: {type: hgem, base_url: "https://x", credentials: "vault:secret/a", shared: "yes", reauth_min_interval: -1s}
`, []string{"upstreams.a.shared: must be true or false", "upstreams.a.reauth_min_interval: must not be negative"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantProblems(t, tc.text, tc.want)
		})
	}
}
