package vendor

import (
	"maps"
	"net/http"
)

// OAuth2 is `type: oauth2`: an RFC 6749 token endpoint (token_url) with
// the client credentials grant (§4.4) or the resource owner password grant
// (§4.3), refreshed with the refresh grant (§6) when the answer has a
// refresh token, and answers read as §5.1 and §5.2 write them. Describe
// compiles it to a Description.
type OAuth2 struct {
	// Grant is client_credentials (the default; credentials client_id and
	// client_secret) or password (also username and password).
	Grant string `yaml:"grant,omitempty"`
	// AuthStyle is how the client authenticates (§2.3.1): basic (HTTP
	// Basic, the default: servers must support it), body (client_id and
	// client_secret as form fields), or none (a public client, §2.1: only
	// client_id in the form, no client_secret).
	AuthStyle string `yaml:"auth_style,omitempty"`
	// Params are extra form fields on every token request, as templates
	// (resource: "{credential resource}").
	Params map[string]string `yaml:"params,omitempty"`
	// TokenHeaders are extra headers on every token request.
	TokenHeaders map[string]string `yaml:"token_headers,omitempty"`
	// Headers are extra headers on every API call, beside
	// Authorization: Bearer {token} (HGEM's hgem-api-key).
	Headers map[string]string `yaml:"headers,omitempty"`
}

// The grants and client authentication styles of OAuth2.
const (
	GrantClientCredentials = "client_credentials"
	GrantPassword          = "password"
	AuthBasic              = "basic"
	AuthBody               = "body"
	AuthNone               = "none"
)

// reservedParams are the form fields an OAuth2 description sets itself.
var reservedParams = []string{"grant_type", "client_id", "client_secret", "username", "password", "scope", "audience", "refresh_token"}

// Describe is o as a Description. The audience parameter is the one many
// servers (Auth0, and RFC 8707's resource indicators' kin) take; it is
// sent only when the upstream sets audience.
func (o OAuth2) Describe() Description {
	grant := map[string]string{"grant_type": GrantClientCredentials, "scope": "{scope}", "audience": "{audience}"}
	if o.Grant == GrantPassword {
		grant["grant_type"] = GrantPassword
		grant["username"] = "{credential username}"
		grant["password"] = "{credential password}"
	}
	refresh := map[string]string{"grant_type": "refresh_token", "refresh_token": "{refresh_token}"}
	headers := maps.Clone(o.TokenHeaders)
	if headers == nil {
		headers = map[string]string{}
	}
	switch o.AuthStyle {
	case AuthBody:
		grant["client_id"], grant["client_secret"] = "{credential client_id}", "{credential client_secret}"
		refresh["client_id"], refresh["client_secret"] = grant["client_id"], grant["client_secret"]
	case AuthNone:
		grant["client_id"] = "{credential client_id}"
		refresh["client_id"] = grant["client_id"]
	default:
		headers["Authorization"] = "Basic {basic client_id client_secret}"
	}
	for k, v := range o.Params {
		grant[k], refresh[k] = v, v
	}
	api := maps.Clone(o.Headers)
	if api == nil {
		api = map[string]string{}
	}
	api["Authorization"] = "Bearer {token}"
	if len(headers) == 0 {
		headers = nil
	}
	return Description{
		Token:   &Request{Fields: grant, Headers: headers},
		Refresh: &Request{Fields: refresh, Headers: headers},
		Answer: Answer{AccessToken: "access_token", TokenType: "token_type", ExpiresIn: "expires_in",
			RefreshToken: "refresh_token", RefreshExpiresIn: "refresh_expires_in",
			ErrorCode: "error", ErrorDescription: "error_description"},
		Headers: api,
	}
}

// Check reports every problem of o, at key paths relative to it.
func (o OAuth2) Check() []Problem {
	var ps problems
	switch o.Grant {
	case "", GrantClientCredentials, GrantPassword:
	default:
		ps.add("grant", "%q is not one of client_credentials, password", o.Grant)
	}
	switch o.AuthStyle {
	case "", AuthBasic, AuthBody, AuthNone:
	default:
		ps.add("auth_style", "%q is not one of basic, body, none", o.AuthStyle)
	}
	for _, k := range sortedKeys(o.Params) {
		for _, r := range reservedParams {
			if k == r {
				ps.add(join("params", k), "%s is set by the grant itself", k)
			}
		}
	}
	checkTemplates(&ps, "params", o.Params, grantPlaceholders)
	checkHeaders(&ps, "token_headers", o.TokenHeaders, grantPlaceholders, true)
	checkHeaders(&ps, "headers", o.Headers, apiPlaceholders, false)
	for _, m := range []struct {
		path string
		h    map[string]string
	}{{"token_headers", o.TokenHeaders}, {"headers", o.Headers}} {
		for _, k := range sortedKeys(m.h) {
			if http.CanonicalHeaderKey(k) == "Authorization" {
				ps.add(join(m.path, k), "Authorization is set by the grant (auth_style) and the Bearer token")
			}
		}
	}
	return ps
}

// Static is `type: static`: no token endpoint; every API call carries
// headers made from the credentials alone (an API key).
type Static struct {
	Headers map[string]string `yaml:"headers,omitempty"`
}

// Describe is s as a Description.
func (s Static) Describe() Description { return Description{Headers: s.Headers} }

// Check reports every problem of s, at key paths relative to it.
func (s Static) Check() []Problem {
	d := s.Describe()
	ps := d.Check()
	var out []Problem
	for _, p := range ps {
		if p.Path == "credentials" {
			p = Problem{Path: "headers", Msg: "no header carries a credential: use {credential KEY}"}
		}
		out = append(out, p)
	}
	return out
}
