package daemon

import (
	"testing"

	"github.com/tokenproxy/tokenproxy/internal/config"
)

func mustParse(t *testing.T, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	return cfg
}

// The reload decision: which upstreams keep their cache (and warm token)
// from one config to the next.
func TestKeepAcrossReload(t *testing.T) {
	const vault = `
secrets:
  vault: {address: "https://v:8200", auth: {method: kubernetes, role: r}}
`
	const base = vault + `
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json"}
`
	const shared = vault + `
sharing: {vault: {path: secret/shared}}
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json", shared: false}
`
	cases := []struct {
		name     string
		old, new string
		want     map[string]bool
	}{
		{"same text", base, base, map[string]bool{"a": true, "f": true}},
		{"an upstream setting", base, vault + `
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a", timeout: 5s}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json"}
`, map[string]bool{"a": false, "f": true}},
		{"vault changed: only vault credentials restart", base, `
secrets:
  vault: {address: "https://other:8200", auth: {method: kubernetes, role: r}}
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json"}
`, map[string]bool{"a": false, "f": true}},
		{"file poll interval", base, vault + `
  poll_interval: 5s
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json"}
`, map[string]bool{"a": true, "f": false}},
		{"sharing turned on: shared ones restart", base, shared, map[string]bool{"a": false, "f": false}},
		{"shared: true written out is the same", shared, vault + `
sharing: {vault: {path: secret/shared}}
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a", shared: true}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json", shared: false}
`, map[string]bool{"a": false, "f": true}},
		{"lease changed", shared, vault + `
sharing: {vault: {path: secret/shared}, lease: 60s}
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json", shared: false}
`, map[string]bool{"a": false, "f": true}},
		{"a new upstream starts", base, base + `  n: {type: hgem, base_url: "https://n", credentials: "env:N"}
`, map[string]bool{"a": true, "f": true, "n": false}},
		{"the same pointer values parsed twice", shared, shared, map[string]bool{"a": true, "f": true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old, cfg := mustParse(t, tc.old), mustParse(t, tc.new)
			for name, want := range tc.want {
				if got := keep(old, cfg, name); got != want {
					t.Errorf("keep(%s) = %v, want %v", name, got, want)
				}
			}
		})
	}
}
