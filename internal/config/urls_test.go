package config

import (
	"testing"
)

// Every URL-valued key refuses a port no connection can use, on its key
// path and line, with what a port may be: a new user's base_url with
// :99999 was valid, and check then failed with "dial tcp: address 99999:
// invalid port". The listeners refuse theirs too (0 is any free port there).
func TestImpossiblePortsAreRefusedOnEveryURLKey(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	got := problems(t, `listen: 127.0.0.1:70000
admin_listen: 127.0.0.1:x1
secrets:
  vault:
    address: https://vault.internal:0
    auth: {method: token, token_file: /t}
upstreams:
  hgem:
    type: hgem
    base_url: https://results-api.hgem.com:99999
    credentials: vault:secret/hgem
  prodo:
    type: prodoscore
    base_url: https://api.prodoscore.com
    token_url: https://auth.prodoscore.com:70000/token
    credentials: env:P
  zero:
    type: hgem
    base_url: https://results-api.hgem.com:0
    credentials: env:Z
  named:
    type: hgem
    base_url: https://results-api.hgem.com:https
    credentials: env:N
  c:
    type: custom
    base_url: https://c.example
    credentials: env:C
    custom:
      token: {url: "https://auth.c.example:65536/t", fields: {k: "{credential key}"}}
      answer: {access_token: t}
      headers: {Authorization: "Bearer {token}"}
  ok:
    type: hgem
    base_url: https://results-api.hgem.com:65535/
    token_url: https://results-api.hgem.com:1/token
    credentials: env:OK
tracing:
  endpoint: http://collector:123456
`)
	const rng = "; a port is 1 to 65535 (or none, for the scheme's default)"
	want := []string{
		`listen: "127.0.0.1:70000" has no valid port: 70000 is out of range; a port is 0 (any free port) to 65535 (line 1)`,
		`admin_listen: "127.0.0.1:x1" has no valid port: a port is a number from 0 (any free port) to 65535 (line 2)`,
		"upstreams.c.custom.token.url: port 65536 is out of range" + rng + " (line 30)",
		"upstreams.hgem.base_url: port 99999 is out of range" + rng + " (line 10)",
		"upstreams.named.base_url: has a port that is not a number" + rng + " (line 23)",
		"upstreams.prodo.token_url: port 70000 is out of range" + rng + " (line 15)",
		"upstreams.zero.base_url: port 0 is out of range" + rng + " (line 19)",
		"tracing.endpoint: port 123456 is out of range" + rng + " (line 39)",
		"secrets.vault.address: port 0 is out of range" + rng + " (line 5)",
	}
	sameLines(t, "problems", got, want)
}

// An address from $VAULT_ADDR is named as such.
func TestVaultAddrFromTheEnvironmentWithAnImpossiblePort(t *testing.T) {
	t.Setenv("VAULT_ADDR", "https://vault.internal:99999")
	got := problems(t, "secrets:\n  vault: {auth: {method: token, token_file: /t}}\nupstreams:\n  h: {type: hgem, base_url: 'https://x', credentials: 'vault:secret/h'}\n")
	want := []string{"secrets.vault.address: $VAULT_ADDR: port 99999 is out of range; a port is 1 to 65535 (or none, for the scheme's default) (line 2, under secrets.vault)"}
	sameLines(t, "problems", got, want)
}

// The other faults of a URL are refused alike on every URL-valued key,
// since one check (endpoint.Check) serves them all: a host name is needed,
// and Vault's address may no longer have a query.
func TestURLKeysShareOneCheck(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	got := problems(t, `secrets:
  vault:
    address: https://vault.internal:8200/?ns=x
    auth: {method: token, token_file: /t}
upstreams:
  a: {type: hgem, base_url: "https://:443", credentials: "vault:secret/a"}
  b: {type: prodoscore, base_url: "https://b.example", token_url: "https://:8443/t", credentials: "env:B"}
tracing:
  endpoint: "http://:4318"
`)
	want := []string{
		`upstreams.a.base_url: "https://:443" is not an absolute URL (line 6)`,
		`upstreams.b.token_url: "https://:8443/t" is not an absolute URL (line 7)`,
		"tracing.endpoint: must be an http(s) URL, e.g. http://127.0.0.1:4318 (line 9)",
		"secrets.vault.address: must not have a query or fragment (line 3)",
	}
	sameLines(t, "problems", got, want)
}
