package config

import "testing"

// A vendor's default scope is the setting in force when none is written, so
// that /config shows what is sent (VENDORS.md: PROMinsight's session.read).
func TestScopeDefaultComesFromTheVendor(t *testing.T) {
	cfg, err := Parse([]byte(`
upstreams:
  p: {type: prominsight, base_url: "https://p", credentials: "env:P"}
  q: {type: prominsight, base_url: "https://p", credentials: "env:P", scope: "session.read session.write"}
  h: {type: hgem, base_url: "https://h", credentials: "env:H"}
`))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"p": "session.read", "q": "session.read session.write", "h": ""} {
		if got := cfg.Upstreams[name].Scope; got != want {
			t.Errorf("%s: scope %q, want %q", name, got, want)
		}
	}
}
