package config

import (
	"regexp"
	"testing"
)

// Every problem of a config read from a file names a line, and a problem
// about another key too names that key: a new user met "secrets.vault:
// required: an upstream's credentials start with vault:", which named
// neither the upstream nor a line. The configs hold one of each problem
// whose key is often not written (a missing section, a default).
func TestEveryProblemNamesALine(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("VAULT_TOKEN", "")
	texts := []string{
		// vault: references and no secrets.vault section
		`upstreams:
  hgem:
    type: hgem
    base_url: https://results-api.hgem.com
    credentials: vault:secret/hgem
  ins:
    type: inspera
    base_url: https://x.inspera.no
    credentials: env:INS
  pro:
    type: prominsight
    base_url: https://api.prominsight.example
    credentials: vault:secret/pro
`,
		// a lease too short for a token_timeout left at its default
		`secrets:
  vault: {address: "https://v:8200", auth: {method: token, token_file: /t}}
sharing:
  vault: {path: secret/tokenproxy/shared}
  lease: 1s
upstreams:
  h: {type: hgem, base_url: "https://h.example", credentials: "vault:secret/h"}
`,
		// required keys left out
		`secrets:
  vault:
    auth: {method: kubernetes}
sharing: {lease: 1m}
tracing: {sample_ratio: 2}
upstreams:
  p: {type: prodoscore, base_url: "https://p.example", credentials: "env:P"}
  c: {type: custom, base_url: "https://c.example", credentials: "env:C"}
  s: {type: static, base_url: "https://s.example", credentials: "env:S"}
  n: {type: hgem, credentials: "env:N"}
`,
	}
	located := regexp.MustCompile(`\((lines? \d+)`)
	for _, text := range texts {
		for _, p := range problems(t, text) {
			if !located.MatchString(p) {
				t.Errorf("no line in %q", p)
			}
		}
	}
	got := problems(t, texts[0])
	want := []string{
		"upstreams.hgem.credentials: starts with vault:, but there is no secrets.vault section (Vault's address and auth) to read it with (line 5)",
		"upstreams.pro.credentials: starts with vault:, but there is no secrets.vault section (Vault's address and auth) to read it with (line 13)",
	}
	sameLines(t, "problems", got, want)
	got = problems(t, texts[1])
	want = []string{"sharing.lease: 1s is less than twice the token_timeout of upstream h (10s): a holder must be able to mint and write back within its lease (lines 5 and 7)"}
	sameLines(t, "problems", got, want)
}
