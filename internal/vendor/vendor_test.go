package vendor

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestBuiltinsCheck(t *testing.T) {
	for _, name := range Builtins {
		d, ok := Builtin(name)
		if !ok {
			t.Fatalf("no builtin %s", name)
		}
		if ps := d.Check(); len(ps) > 0 {
			t.Errorf("%s: %v", name, ps)
		}
	}
	if _, ok := Builtin("okta"); ok {
		t.Error("Builtin(okta) found")
	}
}

// The keys, default token URLs and key headers CONTRACT.md §2 and
// shared/VENDORS.md give each built-in vendor.
func TestBuiltinFacts(t *testing.T) {
	tests := []struct {
		name       string
		keys       []string
		tokenURL   string
		keyHeaders []string
		refresh    bool
	}{
		{"prominsight", []string{"client_id", "client_secret"}, "https://p.example/base/api/v1/auth/token", nil, false},
		{"inspera", []string{"client_id", "api_key"}, "https://p.example/base/api/authenticate/token/", []string{"Code"}, false},
		{"hgem", []string{"api_key", "client_id", "client_secret"}, "https://p.example/base/connect/token", []string{"Hgem-Api-Key"}, false},
		{"prodoscore", []string{"client_id", "username", "password"}, "", nil, true},
	}
	for _, tt := range tests {
		d, _ := Builtin(tt.name)
		if got := d.RequiredKeys(); !slices.Equal(got, tt.keys) {
			t.Errorf("%s RequiredKeys = %q, want %q", tt.name, got, tt.keys)
		}
		if got := d.TokenURL("https://p.example/base/"); got != tt.tokenURL {
			t.Errorf("%s TokenURL = %q, want %q", tt.name, got, tt.tokenURL)
		}
		if got := d.KeyHeaders(); !slices.Equal(got, tt.keyHeaders) {
			t.Errorf("%s KeyHeaders = %q, want %q", tt.name, got, tt.keyHeaders)
		}
		if (d.RefreshRequest() != nil) != tt.refresh {
			t.Errorf("%s has refresh %t, want %t", tt.name, d.RefreshRequest() != nil, tt.refresh)
		}
	}
	p, _ := Builtin("prominsight")
	h, _ := Builtin("hgem")
	if !p.Uses("scope") || p.Scope.Default != "session.read" || h.CheckScope("visits/standard.read") == "" ||
		h.CheckScope("hgem-results-api visits/standard.read") != "" || h.CheckScope("") != "" {
		t.Error("scope rules")
	}
}

func TestTemplate(t *testing.T) {
	creds := map[string]string{"id": "a b", "secret": "s:&", "key": "k"}
	v := Values{Credential: func(k string) string { return creds[k] }, Token: "T", RefreshToken: "R", Scope: "S", Audience: "A"}
	tests := []struct{ in, want string }{
		{"Bearer {token}", "Bearer T"},
		{"{credential key}", "k"},
		{"Token {token} for { credential  key }", "Token T for k"},
		{"{refresh_token}/{scope}/{audience}", "R/S/A"},
		// RFC 6749 §2.3.1: each part form-encoded, then base64.
		{"Basic {basic id secret}", "Basic YStiOnMlM0ElMjY="},
		{"plain", "plain"},
		{"", ""},
	}
	for _, tt := range tests {
		tp, err := ParseTemplate(tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if got := tp.Expand(v); got != tt.want {
			t.Errorf("%q = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"{tokn}", "{token", "token}", "{}", "{credential}", "{credential a b}", "{basic a}", "{{token}}"} {
		if _, err := ParseTemplate(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// Each kind of mistake in a description is reported at its key path.
func TestCheck(t *testing.T) {
	good := func() *Description {
		return &Description{
			Token:   &Request{URL: "/token", Body: "json", Fields: map[string]string{"key": "{credential key}"}},
			Answer:  Answer{AccessToken: "result.jwt", ExpiresIn: "result.ttl"},
			Headers: map[string]string{"Authorization": "Token {token}", "X-Api-Key": "{credential key}"},
		}
	}
	if ps := good().Check(); len(ps) > 0 {
		t.Fatalf("good: %v", ps)
	}
	tests := []struct {
		name string
		edit func(d *Description)
		want string // path: start of message
	}{
		{"no access token path", func(d *Description) { d.Answer.AccessToken = "" }, "answer.access_token: required"},
		{"bad path", func(d *Description) { d.Answer.ExpiresIn = "result..ttl" }, "answer.expires_in: \"result..ttl\" is not a dot path"},
		{"token never sent", func(d *Description) { d.Headers["Authorization"] = "Token {credential key}" }, "headers: no header carries {token}"},
		{"no headers", func(d *Description) { d.Headers = nil }, "headers: required"},
		{"proxy header", func(d *Description) { d.Headers["Proxy-Authorization"] = "{credential key}" },
			"headers.Proxy-Authorization: Proxy-Authorization is read by an HTTP proxy on the way, so its value would reach a host other than the upstream's"},
		{"hop-by-hop", func(d *Description) { d.Token.Headers = map[string]string{"connection": "{credential key}"} }, "token.headers.connection: Connection is hop-by-hop"},
		{"same header twice", func(d *Description) { d.Headers["x-api-key"] = "{credential key}" }, "headers.x-api-key: the same header as X-Api-Key"},
		{"bad header name", func(d *Description) { d.Headers["X Key"] = "{credential key}" }, `headers."X Key": "X Key" is not a valid header name`},
		{"unknown placeholder", func(d *Description) { d.Headers["X-Api-Key"] = "{credentials key}" }, "headers.X-Api-Key: {credentials} is not a placeholder"},
		{"refresh token in grant", func(d *Description) { d.Token.Fields["rt"] = "{refresh_token}" }, "token.fields.rt: {refresh_token} cannot be used here"},
		{"token in grant", func(d *Description) { d.Token.Query = map[string]string{"t": "{token}"} }, "token.query.t: {token} cannot be used here"},
		{"CR in a value", func(d *Description) { d.Headers["X-Api-Key"] = "a\r\nb: {credential key}" }, "headers.X-Api-Key: holds a CR, LF or NUL"},
		{"key not listed", func(d *Description) { d.Credentials = []string{"other"} }, "headers.X-Api-Key: {credential key}: key is not in credentials"},
		{"listed but unused", func(d *Description) { d.Credentials = []string{"key", "spare"} }, "credentials[1]: spare is listed but no request or header sends it"},
		{"http token url", func(d *Description) { d.Token.URL = "http://auth.example/token" }, "token.url: must use https"},
		{"token url with query", func(d *Description) { d.Token.URL = "/token?x=1" }, "token.url: \"/token?x=1\" must be a path"},
		{"bad body", func(d *Description) { d.Token.Body = "xml" }, "token.body: \"xml\" is not one of form, json, none"},
		{"GET with a body", func(d *Description) { d.Token.Method = "GET" }, "token.body: a GET has no body"},
		{"fields without body", func(d *Description) { d.Token.Body = "none" }, "token.fields: body none sends no fields"},
		{"refresh without its token", func(d *Description) {
			d.Refresh = &Request{Fields: map[string]string{"grant_type": "refresh_token"}}
			d.Answer.RefreshToken = "result.refresh"
		}, "refresh: never presents {refresh_token}"},
		{"refresh token never presented", func(d *Description) { d.Answer.RefreshToken = "result.refresh" }, "refresh: required with answer.refresh_token"},
		{"refresh to another URL", func(d *Description) {
			d.Refresh = &Request{URL: "/other", Fields: map[string]string{"rt": "{refresh_token}"}}
			d.Answer.RefreshToken = "r"
		}, "refresh.url: the refresh grant goes to the token endpoint"},
		{"static with token", func(d *Description) { d.Token, d.Answer = nil, Answer{} }, "headers: {token} needs a token request"},
		{"scope rule without scope", func(d *Description) { d.Scope.Requires = "api" }, "scope: no template sends {scope}"},
		{"Content-Type on a token request", func(d *Description) { d.Token.Headers = map[string]string{"Content-Type": "text/plain"} }, "token.headers.Content-Type: Content-Type is set by tokenproxy"},
	}
	for _, tt := range tests {
		d := good()
		tt.edit(d)
		var got []string
		for _, p := range d.Check() {
			got = append(got, p.Path+": "+p.Msg)
		}
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, tt.want) }) {
			t.Errorf("%s: problems %q, want one starting %q", tt.name, got, tt.want)
		}
	}
}

func TestOAuth2(t *testing.T) {
	for _, o := range []OAuth2{
		{},
		{Grant: GrantPassword, AuthStyle: AuthNone},
		{AuthStyle: AuthBody, Params: map[string]string{"resource": "{credential resource}"},
			TokenHeaders: map[string]string{"X-Tenant": "{credential tenant}"}, Headers: map[string]string{"X-Key": "{credential key}"}},
	} {
		if ps := o.Check(); len(ps) > 0 {
			t.Errorf("%+v: %v", o, ps)
		}
		d := o.Describe()
		if ps := d.Check(); len(ps) > 0 {
			t.Errorf("%+v described: %v", o, ps)
		}
	}
	keys := func(o OAuth2) []string { d := o.Describe(); return d.RequiredKeys() }
	if got := keys(OAuth2{}); !slices.Equal(got, []string{"client_id", "client_secret"}) {
		t.Errorf("client credentials keys %q", got)
	}
	if got := keys(OAuth2{Grant: GrantPassword, AuthStyle: AuthNone}); !slices.Equal(got, []string{"client_id", "password", "username"}) {
		t.Errorf("public password keys %q", got)
	}
	if got := keys(OAuth2{AuthStyle: AuthBody, Headers: map[string]string{"hgem-api-key": "{credential api_key}"}}); !slices.Equal(got, []string{"api_key", "client_id", "client_secret"}) {
		t.Errorf("HGEM-like keys %q", got)
	}
	bad := OAuth2{Grant: "implicit", AuthStyle: "jwt", Params: map[string]string{"grant_type": "x", "r": "{token}"},
		Headers: map[string]string{"authorization": "x"}}
	want := []string{"grant: ", "auth_style: ", "params.grant_type: grant_type is set by the grant itself",
		"params.r: {token} cannot be used here", "headers.authorization: Authorization is set by the grant"}
	var got []string
	for _, p := range bad.Check() {
		got = append(got, p.Path+": "+p.Msg)
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, w) }) {
			t.Errorf("problems %q lack %q", got, w)
		}
	}
	if ps := (Static{Headers: map[string]string{"X-Api-Key": "{credential api_key}"}}).Check(); len(ps) > 0 {
		t.Errorf("static: %v", ps)
	}
	if ps := (Static{Headers: map[string]string{"X-Version": "2"}}).Check(); len(ps) != 1 || ps[0].Path != "headers" {
		t.Errorf("static without a credential: %v", ps)
	}
}

// Whatever a config holds, parsing a template never panics, and what
// parses expands to its own text once each placeholder is put back.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{"Bearer {token}", "{credential api_key}", "Basic {basic id secret}", "{", "}", "{ }", "a{scope}b{audience}", "{credential}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := ParseTemplate(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(tp.literal(), "{}") {
			t.Fatalf("%q: a brace survived as text", s)
		}
		mark := func(k string) string { return "<" + k + ">" }
		got := tp.Expand(Values{Credential: mark, Token: "<token>", RefreshToken: "<refresh_token>", Scope: "<scope>", Audience: "<audience>"})
		if tp.IsConstant() && got != s {
			t.Fatalf("%q: a constant expanded to %q", s, got)
		}
	})
}

// No description may set a header that tokenproxy sets on a request or
// passes on from the caller: the request id, the W3C trace headers and
// baggage, Accept-Encoding, or one of tokenproxy's own; in any case, in any
// place a description writes headers (API calls, token and refresh
// requests, oauth2's token_headers and headers, static's headers).
func TestHeadersTokenproxySetsAreRefused(t *testing.T) {
	names := []string{"X-Request-Id", "x-request-id", "traceparent", "Tracestate", "baggage", "Accept-Encoding", "Tokenproxy-Error", "tokenproxy-upstream"}
	for _, name := range names {
		canon := http.CanonicalHeaderKey(name)
		places := map[string][]Problem{
			"headers": (&Description{
				Token:   &Request{URL: "/t", Fields: map[string]string{"k": "{credential key}"}},
				Answer:  Answer{AccessToken: "t"},
				Headers: map[string]string{"Authorization": "Bearer {token}", name: "{credential key}"},
			}).Check(),
			"token.headers": (&Description{
				Token:   &Request{URL: "/t", Headers: map[string]string{name: "{credential key}"}},
				Answer:  Answer{AccessToken: "t", RefreshToken: "r"},
				Refresh: &Request{Fields: map[string]string{"rt": "{refresh_token}"}},
				Headers: map[string]string{"Authorization": "Bearer {token}"},
			}).Check(),
			"refresh.headers": (&Description{
				Token:   &Request{URL: "/t", Fields: map[string]string{"k": "{credential key}"}},
				Answer:  Answer{AccessToken: "t", RefreshToken: "r"},
				Refresh: &Request{Fields: map[string]string{"rt": "{refresh_token}"}, Headers: map[string]string{name: "{credential key}"}},
				Headers: map[string]string{"Authorization": "Bearer {token}"},
			}).Check(),
			"oauth2 token_headers": OAuth2{TokenHeaders: map[string]string{name: "{credential key}"}}.Check(),
			"oauth2 headers":       OAuth2{Headers: map[string]string{name: "{credential key}"}}.Check(),
			"static headers":       Static{Headers: map[string]string{name: "{credential key}"}}.Check(),
		}
		for place, ps := range places {
			want := join(strings.TrimPrefix(strings.TrimPrefix(place, "oauth2 "), "static "), name)
			if !slices.ContainsFunc(ps, func(p Problem) bool {
				return p.Path == want && strings.HasPrefix(p.Msg, canon+" is ")
			}) {
				t.Errorf("%s in %s: problems %v, want one at %s starting %q", name, place, ps, want, canon+" is ")
			}
		}
	}
	// A header of the vendor's own is still fine.
	if ps := (Static{Headers: map[string]string{"X-Request-Source": "{credential key}"}}).Check(); len(ps) > 0 {
		t.Errorf("X-Request-Source: %v", ps)
	}
}

// Secrets are what a template sends that is secret, as sent: the
// credentials, Basic's base64 and the refresh token, never the literal
// text, the scope or the audience on their own.
func TestTemplateSecrets(t *testing.T) {
	creds := map[string]string{"id": "a b", "secret": "s:&", "key": "k"}
	v := Values{Credential: func(k string) string { return creds[k] }, Token: "T", RefreshToken: "R", Scope: "S", Audience: "A"}
	for in, want := range map[string][]string{
		"Basic {basic id secret}":        {"a b", "s:&", "YStiOnMlM0ElMjY=", "Basic YStiOnMlM0ElMjY="},
		"key={credential key}&s={scope}": {"k", "key=k&s=S"},
		"{refresh_token}":                {"R", "R"},
		"Bearer {token}":                 {"T", "Bearer T"},
		"{scope} {audience} plain":       nil,
		"":                               nil,
	} {
		tp, err := ParseTemplate(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := tp.Secrets(v); !slices.Equal(got, want) {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
