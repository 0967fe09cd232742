package config

import (
	"slices"
	"strings"
	"testing"
)

// A fifth API described in the config: oauth2, custom and static.
func TestGenericTypes(t *testing.T) {
	cfg, err := Parse([]byte(`
upstreams:
  billing:
    type: oauth2
    base_url: https://api.billing.example
    token_url: https://auth.billing.example/oauth/token
    scope: "read  write"
    audience: https://api.billing.example
    credentials: env:BILLING
    oauth2:
      grant: password
      auth_style: body
      params: {resource: "{credential resource}"}
  ledger:
    type: custom
    base_url: https://ledger.example/v2/
    credentials: env:LEDGER
    custom:
      token:
        url: /session
        body: json
        fields: {keyId: "{credential key_id}", secret: "{credential key_secret}"}
      answer: {access_token: result.jwt, expires_in: result.ttl}
      headers:
        Authorization: "Token {token}"
        X-Api-Key: "{credential key_id}"
  weather:
    type: static
    base_url: https://weather.example
    credentials: env:WEATHER
    static:
      headers: {X-Api-Key: "{credential api_key}"}
`))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]string{
		"billing": {"client_id", "client_secret", "password", "resource", "username"},
		"ledger":  {"key_id", "key_secret"},
		"weather": {"api_key"},
	} {
		u := cfg.Upstreams[name]
		if got := u.RequiredKeys(); !slices.Equal(got, want) {
			t.Errorf("%s keys %q, want %q", name, got, want)
		}
	}
	if got := cfg.Upstreams["ledger"].TokenURL; got != "https://ledger.example/v2/session" {
		t.Errorf("ledger token_url %q", got)
	}
	if got := cfg.Upstreams["weather"].TokenURL; got != "" {
		t.Errorf("static token_url %q", got)
	}
}

// Every mistake in a description is named by its key path and line.
func TestGenericTypeProblems(t *testing.T) {
	got := problems(t, `upstreams:
  a:
    type: custom
    base_url: https://a.example
    credentials: env:A
    custom:
      credentials: [key]
      token:
        url: /t
        bodyy: json
        fields: {k: "{credential key}", s: "{credential secret}"}
      answer: {expires_in: ttl}
      headers:
        Authorization: "Token {token}"
        Proxy-Authorization: "{credential key}"
  b:
    type: static
    base_url: https://b.example
    credentials: env:B
    shared: true
  c:
    type: oauth2
    base_url: https://c.example
    credentials: env:C
    static: {headers: {X-Key: "{credential k}"}}
    oauth2: {grant: implicit}
  d:
    type: hgem
    base_url: https://d.example
    credentials: env:D
    audience: x
  e:
    type: static
    base_url: https://e.example
    token_url: https://e.example/t
    credentials: env:E
    static: {headers: {X-Key: "{token}"}}
`)
	want := []string{
		`upstreams.a.custom.token.bodyy: unknown key (line 10); did you mean "body"?`,
		"upstreams.a.custom.answer.access_token: required",
		"upstreams.a.custom.headers.Proxy-Authorization: Proxy-Authorization is read by an HTTP proxy on the way, so its value would reach a host other than the upstream's (line 15)",
		"upstreams.a.custom.token.fields.s: {credential secret}: secret is not in credentials, so it would never be required (line 11)",
		"upstreams.b.static: required for type static",
		"upstreams.c.static: is for type static only (line 25)",
		`upstreams.c.oauth2.grant: "implicit" is not one of client_credentials, password (line 26)`,
		"upstreams.c.token_url: required for type oauth2",
		"upstreams.d.audience: type hgem sends no audience (line 31)",
		"upstreams.e.token_url: type static has no token endpoint (line 35)",
		"upstreams.e.static.headers: {token} needs a token request",
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
			t.Errorf("no problem %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
}

// A static upstream has no token to share.
func TestStaticNotShared(t *testing.T) {
	cfg, err := Parse([]byte(`
secrets: {vault: {address: "https://v", auth: {method: token, token_file: /t}}}
sharing: {vault: {path: secret/tokenproxy/shared}}
upstreams:
  w: {type: static, base_url: "https://w.example", credentials: "env:W", static: {headers: {X-Key: "{credential k}"}}}
  h: {type: hgem, base_url: "https://h.example", credentials: "env:H"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IsShared("w") || !cfg.IsShared("h") {
		t.Errorf("shared: static %t, hgem %t", cfg.IsShared("w"), cfg.IsShared("h"))
	}
	if ps := problems(t, `
secrets: {vault: {address: "https://v", auth: {method: token, token_file: /t}}}
sharing: {vault: {path: secret/tokenproxy/shared}}
upstreams:
  w: {type: static, base_url: "https://w.example", credentials: "env:W", shared: true, static: {headers: {X-Key: "{credential k}"}}}
`); !slices.ContainsFunc(ps, func(p string) bool {
		return strings.HasPrefix(p, "upstreams.w.shared: a static upstream has no token to share")
	}) {
		t.Errorf("problems %q", ps)
	}
}

// A description may not set what tokenproxy sets on every request (the
// request id, trace context): each is named by its key path and line.
func TestHeadersTokenproxySetsNamedWithTheirLine(t *testing.T) {
	got := problems(t, `upstreams:
  s:
    type: static
    base_url: https://s.example
    credentials: env:S
    static:
      headers:
        X-Api-Key: "{credential key}"
        X-Request-Id: "{credential key}"
  o:
    type: oauth2
    base_url: https://o.example
    token_url: https://o.example/token
    credentials: env:O
    oauth2:
      token_headers: {traceparent: "{credential client_id}"}
`)
	want := []string{
		"upstreams.o.oauth2.token_headers.traceparent: Traceparent is tokenproxy's: the W3C Trace Context of the caller's trace or tokenproxy's span (line 16)",
		"upstreams.s.static.headers.X-Request-Id: X-Request-Id is tokenproxy's: the caller's id, or a new one, goes to the upstream and back (CONTRACT.md §3) (line 9)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
