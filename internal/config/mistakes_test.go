package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// topKeys are the top-level keys of a config, as an unknown key lists them.
var topKeys = func() string {
	var names []string
	for i := range typeOfConfig.NumField() {
		f := typeOfConfig.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); f.IsExported() && name != "-" {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}()

// The mistakes people make in a config file, each reported with the file,
// the key path and the line where it is, and nothing false beside it.
func TestMistakesAreNamedExactly(t *testing.T) {
	const hgem = "  hgem:\n    type: hgem\n    base_url: https://x\n    credentials: env:HGEM\n"
	cases := []struct {
		name, text string
		want       []string // every problem, exactly; F is the file
	}{
		{"top-level key twice", "upstreams:\n" + hgem + "upstreams:\n" + strings.ReplaceAll(hgem, "hgem", "inspera"),
			[]string{"upstreams: written twice, on lines 1 and 6; keep one"}},
		{"nested key twice", "upstreams:\n  hgem:\n    type: hgem\n    base_url: https://x\n    base_url: https://y\n    credentials: env:HGEM\n",
			[]string{"upstreams.hgem.base_url: written twice, on lines 4 and 5; keep one"}},
		{"upstream written twice", "upstreams:\n" + hgem + hgem,
			[]string{"upstreams.hgem: written twice, on lines 2 and 6; keep one"}},
		{"three times", "log_level: info\nlog_level: debug\nlog_level: warn\nupstreams:\n" + hgem,
			[]string{"log_level: written twice, on lines 1 and 2; keep one", "log_level: written twice, on lines 1 and 3; keep one"}},
		{"twice in a flow mapping", "upstreams:\n  hgem: {type: hgem, base_url: 'https://x', credentials: 'env:H', type: inspera}\n",
			[]string{"upstreams.hgem.type: written twice, on lines 2 and 2; keep one"}},
		{"both copies are checked", "upstreams:\n  hgem: {type: hgem, base_url: 'https://x', credentials: 'env:H', scop: x}\n  hgem: {type: hgem, base_url: 'https://x', credentials: 'env:H'}\n",
			[]string{"upstreams.hgem.scop: unknown key (line 2); did you mean \"scope\"?", "upstreams.hgem: written twice, on lines 2 and 3; keep one"}},
		{"indentation", "upstreams:\n  hgem:\n    type: hgem\n   base_url: https://x\n    credentials: env:HGEM\n",
			[]string{"F:4: not valid YAML: did not find expected key"}},
		{"tab", "upstreams:\n  hgem:\n\ttype: hgem\n",
			[]string{"F:3: not valid YAML: a tab in the indentation; YAML indents with spaces only"}},
		{"tab after spaces", "upstreams:\n  hgem:\n    type: hgem\n  \t base_url: https://x\n",
			[]string{"F:4: not valid YAML: a tab in the indentation; YAML indents with spaces only"}},
		{"unclosed quote", "listen: 127.0.0.1:0\nupstreams:\n  hgem:\n    base_url: \"https://x\n    type: hgem\n",
			[]string{"F:4: not valid YAML: a quoted string that starts here is never closed"}},
		{"after lines that parse only whole", "upstreams:\n  hgem:\n    type: hgem\n    scope: 'hgem-results-api\n      visits/standard.read'\n    credentials: {\n      x: y}\n   base_url: https://x\n",
			[]string{"F:8: not valid YAML: did not find expected key"}},
		{"quote on line 1 never closed, far from the end", "listen: '127.0.0.1:0\nupstreams:\n" + strings.Repeat(hgem, 40),
			[]string{"F:1: not valid YAML: a quoted string that starts here is never closed"}},
		{"mapping value in a value", "upstreams:\n  hgem:\n    type: hgem: inspera\n",
			[]string{"F:3: not valid YAML: mapping values are not allowed in this context"}},
		{"second document", "upstreams:\n" + hgem + "---\nlisten: 127.0.0.1:1\n",
			[]string{"F:6: a second YAML document starts here (after ---); one config is one document"}},
		{"empty", "# nothing\n", []string{"F: empty config"}},
		{"a list", "- listen\n", []string{"F: must be a mapping of settings (key: value lines)"}},
		{"unknown key, near one", "listne: 127.0.0.1:8080\nupstreams:\n" + hgem,
			[]string{"listne: unknown key (line 1); did you mean \"listen\"?"}},
		{"unknown key, none near", "frobnicate: yes\nupstreams:\n" + hgem,
			[]string{"frobnicate: unknown key (line 1); known keys: " + topKeys}},
		{"unknown upstream key", "upstreams:\n" + hgem + "    token_timout: 5s\n",
			[]string{"upstreams.hgem.token_timout: unknown key (line 6); did you mean \"token_timeout\"?"}},
		{"type near one", strings.Replace("upstreams:\n"+hgem, "type: hgem", "type: hgme", 1),
			[]string{"upstreams.hgem.type: \"hgme\" is not one of prominsight, inspera, hgem, prodoscore, oauth2, custom, static; did you mean \"hgem\"? (line 3)"}},
		{"log level near one", "log_level: warning\nupstreams:\n" + hgem,
			[]string{"log_level: \"warning\" is not one of debug, info, warn, error; did you mean \"warn\"? (line 1)"}},
		{"auth method near one", "secrets:\n  vault: {address: 'https://v', auth: {method: aprole}}\nupstreams:\n" + hgem,
			[]string{"secrets.vault.auth.method: \"aprole\" is not one of kubernetes, approle, token; did you mean \"approle\"? (line 2)"}},
		{"listen is admin_listen", "listen: 127.0.0.1:9901\nupstreams:\n" + hgem,
			[]string{"listen: \"127.0.0.1:9901\" and admin_listen \"127.0.0.1:9901\" are the same address; the data and admin planes need one each (line 1)"}},
		{"listen is admin_listen, spelt otherwise", "listen: localhost:9000\nadmin_listen: '[::ffff:127.0.0.1]:9000'\nupstreams:\n" + hgem,
			[]string{"listen: \"localhost:9000\" and admin_listen \"[::ffff:127.0.0.1]:9000\" are the same address; the data and admin planes need one each (lines 1 and 2)"}},
		{"odd keys are quoted", "\"\": 1\nupstreams:\n  \"Bad Name\": {type: hgem, base_url: 'https://x', credentials: 'env:H'}\n",
			[]string{"\"\": unknown key (line 1); known keys: " + topKeys,
				"upstreams.\"Bad Name\": route name must match [a-z0-9-]+ (line 3)"}},
		{"mistyped values carry their line", "shutdown_timeout: soon\nupstreams:\n" + hgem + "    max_connections: [1]\n",
			[]string{"shutdown_timeout: \"soon\" is not a duration (use a unit: 500ms, 30s, 5m) (line 1)",
				"upstreams.hgem.max_connections: must be a whole number (line 7)"}},
		{"admin_pprof is a boolean", "admin_pprof: yes\nupstreams:\n" + hgem,
			[]string{"admin_pprof: must be true or false (line 1)"}},
		{"admin_pprof near one", "admin_prof: true\nupstreams:\n" + hgem,
			[]string{"admin_prof: unknown key (line 1); did you mean \"admin_pprof\"?"}},
		{"validate's problems carry their line", "upstreams:\n  hgem:\n    type: hgem\n    base_url: http://x\n    credentials: env:HGEM\n",
			[]string{"upstreams.hgem.base_url: must use https (http is allowed only for a loopback host) (line 4)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokenproxy.yaml")
			if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			_, ps := Inspect(path)
			var got []string
			for _, p := range ps {
				got = append(got, strings.ReplaceAll(p.String(), path, "F"))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("problems:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestUnreadableFileIsNamed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nosuch.yaml")
	_, ps := Inspect(path)
	want := path + ": cannot read the config: no such file or directory"
	if len(ps) != 1 || ps[0].String() != want {
		t.Fatalf("problems %v, want [%s]", ps, want)
	}
}

func TestSameListener(t *testing.T) {
	cases := []struct {
		a, b string
		same bool
	}{
		{"127.0.0.1:9901", "127.0.0.1:9901", true},
		{"localhost:9901", "127.0.0.1:9901", true},
		{"LOCALHOST:9901", "localhost:9901", true},
		{"127.0.0.1:09901", "127.0.0.1:9901", true},
		{"[::ffff:127.0.0.1]:9901", "127.0.0.1:9901", true},
		{"0.0.0.0:9901", "127.0.0.1:9901", true},
		{":9901", "127.0.0.1:9901", true},
		{"[::]:9901", "10.1.2.3:9901", true},
		{"0.0.0.0:9901", "[::1]:9901", true}, // Go binds 0.0.0.0 dual-stack
		{"[::1]:9901", "[0:0::1]:9901", true},
		{"myhost:9901", "MyHost:9901", true},
		{"127.0.0.1:0", "127.0.0.1:0", false},
		{":0", ":0", false},
		{"127.0.0.1:8080", "127.0.0.1:9901", false},
		{"127.0.0.1:9901", "127.0.0.2:9901", false},
		{"127.0.0.1:9901", "[::1]:9901", false},
		{"localhost:9901", "[::1]:9901", false},
		{"myhost:9901", "127.0.0.1:9901", false}, // not resolved: validate stays off the network
	}
	for _, c := range cases {
		if got := sameListener(c.a, c.b); got != c.same {
			t.Errorf("sameListener(%q, %q) = %v, want %v", c.a, c.b, got, c.same)
		}
		if got := sameListener(c.b, c.a); got != c.same {
			t.Errorf("sameListener(%q, %q) = %v, want %v", c.b, c.a, got, c.same)
		}
	}
}

// Relative paths resolve against the config file's directory; absolute
// ones, references that are not file:, and the jwt_file default stay.
func TestRelativePathsResolveAgainstTheConfigDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokenproxy.yaml")
	text := `
secrets:
  vault:
    address: https://vault:8200
    ca_file: vault-ca.pem
    auth: {method: kubernetes, role: r}
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "file:creds/a.json", ca_file: ca.pem}
  b: {type: hgem, base_url: "https://b", credentials: "file:/etc/b.json", ca_file: /etc/ca.pem}
  c: {type: hgem, base_url: "https://c", credentials: "vault:secret/c"}
  d: {type: hgem, base_url: "https://d", credentials: "file:../d.json"}
`
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ what, got, want string }{
		{"a.credentials", cfg.Upstreams["a"].Credentials, "file:" + filepath.Join(dir, "creds/a.json")},
		{"a.ca_file", cfg.Upstreams["a"].CAFile, filepath.Join(dir, "ca.pem")},
		{"b.credentials", cfg.Upstreams["b"].Credentials, "file:/etc/b.json"},
		{"b.ca_file", cfg.Upstreams["b"].CAFile, "/etc/ca.pem"},
		{"c.credentials", cfg.Upstreams["c"].Credentials, "vault:secret/c"},
		{"d.credentials", cfg.Upstreams["d"].Credentials, "file:" + filepath.Join(filepath.Dir(dir), "d.json")},
		{"vault.ca_file", cfg.Secrets.Vault.CAFile, filepath.Join(dir, "vault-ca.pem")},
		{"vault.auth.jwt_file", cfg.Secrets.Vault.Auth.JWTFile, "/var/run/secrets/kubernetes.io/serviceaccount/token"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}

	// The Vault login files, too.
	cfg = &Config{Secrets: Secrets{Vault: &Vault{Auth: VaultAuth{JWTFile: "jwt", RoleIDFile: "role", SecretIDFile: "/abs/secret", TokenFile: "t/tok"}}}}
	cfg.ResolvePaths("/etc/tokenproxy")
	a := cfg.Secrets.Vault.Auth
	if a.JWTFile != "/etc/tokenproxy/jwt" || a.RoleIDFile != "/etc/tokenproxy/role" || a.SecretIDFile != "/abs/secret" || a.TokenFile != "/etc/tokenproxy/t/tok" {
		t.Errorf("vault auth files resolved to %+v", a)
	}
}

// The schema check knows every kind of value a config field may have, so
// that a new field is checked as soon as it is declared.
func TestSchemaChecksEveryKind(t *testing.T) {
	type all struct {
		S string              `yaml:"s"`
		I int64               `yaml:"i"`
		F float64             `yaml:"f"`
		B *bool               `yaml:"b"`
		D Duration            `yaml:"d"`
		M map[string]Upstream `yaml:"m"`
	}
	text := "s: [x]\ni: 1.5\nf: lots\nb: yes please\nd: soon\nm: [1]\n"
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(text), &root); err != nil {
		t.Fatal(err)
	}
	s := &schema{file: "F", lines: map[string]int{}}
	s.check("", root.Content[0], reflect.TypeFor[all]())
	want := []string{
		"s: must be a string (line 1)", "i: must be a whole number (line 2)", "f: must be a number (line 3)",
		"b: must be true or false (line 4)", `d: "soon" is not a duration (use a unit: 500ms, 30s, 5m) (line 5)`,
		"m: must be a mapping (line 6)",
	}
	var got []string
	for _, p := range s.ps {
		got = append(got, p.String())
	}
	sameLines(t, "problems", got, want)
}

// A problem on a key that is not written (a required key left out, a
// default from the environment) names the line of its nearest written
// ancestor, and which one it is: where the key belongs. The keys are the
// ones a user met without a line: a custom answer without access_token and
// an oauth2 upstream without token_url.
func TestUnwrittenKeysNameTheirAncestorsLine(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	got := problems(t, `upstreams:
  l2:
    type: custom
    base_url: https://l2.example
    credentials: env:L2
    custom:
      token: {url: /t, fields: {k: "{credential key}"}}
      answer:
        expires_in: ttl
      headers: {Authorization: "Bearer {token}"}
  l5:
    type: oauth2
    base_url: https://l5.example
    credentials: env:L5
  "a.b":
    type: static
    base_url: https://ab.example
    credentials: env:AB
  l6:
    type: custom
    base_url: https://l6.example
    credentials: env:L6
    custom:
      credentials: [key, other]
      token: {url: /t, fields: {k: "{credential key}"}}
      answer: {access_token: t}
      headers: {Authorization: "Bearer {token}"}
secrets:
  vault:
    auth: {method: token, token_file: /t}
`)
	want := []string{
		`upstreams."a.b": route name must match [a-z0-9-]+ (line 15)`,
		`upstreams."a.b".static: required for type static: the headers every API call carries (line 15, under upstreams."a.b")`,
		"upstreams.l2.custom.answer.access_token: required: where the answer keeps the access token (a dot path such as data.accessToken) (line 8, under upstreams.l2.custom.answer)",
		"upstreams.l5.token_url: required for type oauth2 (it has no default token endpoint) (line 11, under upstreams.l5)",
		"upstreams.l6.custom.credentials[1]: other is listed but no request or header sends it (line 24)",
		"secrets.vault.address: required (or set $VAULT_ADDR) (line 29, under secrets.vault)",
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("no problem %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
}

func TestParentKey(t *testing.T) {
	for p, want := range map[string]string{
		"a.b.c":                   "a.b",
		"a.b[2]":                  "a.b",
		"a.b[2].c":                "a.b[2]",
		`upstreams."a.b".static`:  `upstreams."a.b"`,
		`upstreams."a.b"`:         "upstreams",
		`x."q\".d".y`:             `x."q\".d"`,
		"listen":                  "",
		`upstreams."x.y"`:         "upstreams",
		"upstreams.h.headers.X-A": "upstreams.h.headers",
	} {
		got, ok := parentKey(p)
		if got != want || ok != (want != "") {
			t.Errorf("parentKey(%q) = %q, %v; want %q", p, got, ok, want)
		}
	}
}
