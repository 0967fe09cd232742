package vendorsim

import (
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	if _, err := New("okta", map[string]string{}); err == nil {
		t.Error("unknown kind: no error")
	}
	for _, kind := range kinds {
		for key := range demoCreds(kind) {
			c := demoCreds(kind)
			delete(c, key)
			_, err := New(kind, c)
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("%s without %s: error %v, want one naming the key", kind, key, err)
			}
		}
	}
}

func TestTokenSuccessShape(t *testing.T) {
	tests := []struct {
		kind string
		path string
		want map[string]any // exact answer, with tokens replaced by "TOKEN"
	}{
		{Prominsight, "/api/v1/auth/token", map[string]any{
			"success": true,
			"data":    map[string]any{"accessToken": "TOKEN", "tokenType": "Bearer", "expiresIn": 3600.0},
		}},
		{Inspera, "/api/authenticate/token/", map[string]any{"access_token": "TOKEN", "expires_in": 3600.0}},
		{HGEM, "/connect/token", map[string]any{
			"access_token": "TOKEN", "expires_in": 3600.0, "token_type": "Bearer",
			"scope": "hgem-results-api visits/standard.read visits/extended.read",
		}},
		{Prodoscore, "/realms/ind-prod/protocol/openid-connect/token", map[string]any{
			"access_token": "TOKEN", "expires_in": 36000.0, "refresh_expires_in": 604800.0,
			"refresh_token": "TOKEN", "token_type": "Bearer",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			sim, ts := start(t, tt.kind)
			if sim.TokenPath() != tt.path {
				t.Fatalf("TokenPath = %q, want %q", sim.TokenPath(), tt.path)
			}
			a := do(t, nil, goodTokenReq(tt.kind, demoCreds(tt.kind)).build(t, ts.URL, tt.path))
			if a.status != http.StatusOK || a.header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, type %q, body %s", a.status, a.header.Get("Content-Type"), a.body)
			}
			got := a.object(t)
			var issued []string
			replace := func(m map[string]any) {
				for _, k := range []string{"accessToken", "access_token", "refresh_token"} {
					if v, ok := m[k].(string); ok {
						issued = append(issued, v)
						m[k] = "TOKEN"
					}
				}
			}
			replace(got)
			if d, ok := got["data"].(map[string]any); ok {
				replace(d)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("answer %s\nwant %v", a.body, tt.want)
			}
			if !reflect.DeepEqual(sim.Tokens(), issued) {
				t.Errorf("Tokens() = %v, want %v", sim.Tokens(), issued)
			}
			for _, tok := range issued {
				if len(tok) < 43 {
					t.Errorf("token %q too short for 32 random bytes", tok)
				}
			}
		})
	}
}

// tokenCase spoils one part of a correct token request.
type tokenCase struct {
	name      string
	edit      func(r *tokenReq)
	status    int
	wantError string // the answer's "error" value
}

func runTokenCases(t *testing.T, kind string, cases []tokenCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sim, ts := start(t, kind)
			r := goodTokenReq(kind, demoCreds(kind))
			tc.edit(r)
			a := do(t, nil, r.build(t, ts.URL, sim.TokenPath()))
			if a.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", a.status, tc.status, a.body)
			}
			got := a.object(t)
			if got["error"] != tc.wantError {
				t.Errorf("error = %v, want %q (body %s)", got["error"], tc.wantError, a.body)
			}
			if kind == Prominsight && got["success"] != false {
				t.Errorf("success = %v, want false", got["success"])
			}
			if len(sim.Tokens()) != 0 {
				t.Error("a refused request issued a token")
			}
			if n := sim.TokenCalls(); n != 1 {
				t.Errorf("TokenCalls = %d, want 1", n)
			}
			if rs := sim.TokenRequests(); len(rs) != 1 || rs[0].Status != tc.status {
				t.Errorf("TokenRequests = %+v", rs)
			}
		})
	}
}

func TestProminsightTokenChecks(t *testing.T) {
	const invalid = "Invalid credentials"
	runTokenCases(t, Prominsight, []tokenCase{
		{"wrong secret", func(r *tokenReq) { r.jsonv["client_secret"] = "nope" }, 401, invalid},
		{"wrong client id", func(r *tokenReq) { r.jsonv["client_id"] = "nope" }, 401, invalid},
		{"missing secret", func(r *tokenReq) { delete(r.jsonv, "client_secret") }, 400, "client_secret is required"},
		{"missing client id", func(r *tokenReq) { delete(r.jsonv, "client_id") }, 400, "client_id is required"},
		{"missing scope", func(r *tokenReq) { delete(r.jsonv, "scope") }, 400, "scope is required"},
		{"secret not a string", func(r *tokenReq) { r.jsonv["client_secret"] = 7 }, 400, "Invalid JSON body"},
		{"not JSON", func(r *tokenReq) { r.raw = ptr("client_id=pi-client") }, 400, "Invalid JSON body"},
		{"trailing garbage", func(r *tokenReq) { r.raw = ptr(`{"client_id":"pi-client"} x`) }, 400, "Invalid JSON body"},
		{"form content type", func(r *tokenReq) { r.header.Set("Content-Type", "application/x-www-form-urlencoded") }, 400, "Content-Type must be application/json"},
		{"no content type", func(r *tokenReq) { r.header.Del("Content-Type") }, 400, "Content-Type must be application/json"},
		{"GET", func(r *tokenReq) { r.method = http.MethodGet }, 405, "Method not allowed"},
		{"body too large", func(r *tokenReq) { r.jsonv["pad"] = strings.Repeat("x", 70<<10) }, 400, "Request body too large"},
	})
}

func TestInsperaTokenChecks(t *testing.T) {
	runTokenCases(t, Inspera, []tokenCase{
		{"wrong code", func(r *tokenReq) { r.header.Set("code", "nope") }, 401, "invalid_grant"},
		{"missing code", func(r *tokenReq) { r.header.Del("code") }, 401, "invalid_grant"},
		{"wrong grant type", func(r *tokenReq) { r.query.Set("grant_type", "client_credentials") }, 400, "invalid_request"},
		{"missing grant type", func(r *tokenReq) { r.query.Del("grant_type") }, 400, "invalid_request"},
		{"wrong client id", func(r *tokenReq) { r.query.Set("client_id", "other") }, 400, "invalid_request"},
		{"missing client id", func(r *tokenReq) { r.query.Del("client_id") }, 400, "invalid_request"},
		{"non-empty body", func(r *tokenReq) { r.raw = ptr("grant_type=authorization_code") }, 400, "invalid_request"},
		{"JSON content type", func(r *tokenReq) { r.header.Set("Content-Type", "application/json") }, 400, "invalid_request"},
		{"GET", func(r *tokenReq) { r.method = http.MethodGet }, 400, "invalid_request"},
	})
}

func TestHGEMTokenChecks(t *testing.T) {
	runTokenCases(t, HGEM, []tokenCase{
		{"wrong API key", func(r *tokenReq) { r.header.Set("hgem-api-key", "nope") }, 401, "invalid_client"},
		{"missing API key", func(r *tokenReq) { r.header.Del("hgem-api-key") }, 401, "invalid_client"},
		{"API key twice", func(r *tokenReq) { r.header.Add("hgem-api-key", "hgem-key") }, 401, "invalid_client"},
		{"wrong secret", func(r *tokenReq) { r.form.Set("client_secret", "nope") }, 401, "invalid_client"},
		{"missing secret", func(r *tokenReq) { r.form.Del("client_secret") }, 401, "invalid_client"},
		{"wrong client id", func(r *tokenReq) { r.form.Set("client_id", "nope") }, 401, "invalid_client"},
		{"missing client id", func(r *tokenReq) { r.form.Del("client_id") }, 401, "invalid_client"},
		{"wrong grant", func(r *tokenReq) { r.form.Set("grant_type", "password") }, 400, "unsupported_grant_type"},
		{"missing grant", func(r *tokenReq) { r.form.Del("grant_type") }, 400, "invalid_request"},
		{"parameter twice", func(r *tokenReq) { r.form.Add("client_id", "hgem-client") }, 400, "invalid_request"},
		{"credentials in query only", func(r *tokenReq) { r.query, r.form = r.form, url.Values{} }, 401, "invalid_client"},
		{"JSON content type", func(r *tokenReq) { r.header.Set("Content-Type", "application/json") }, 400, "invalid_request"},
		{"scope without hgem-results-api", func(r *tokenReq) { r.form.Set("scope", "visits/standard.read") }, 400, "invalid_scope"},
		{"unknown scope", func(r *tokenReq) { r.form.Set("scope", "hgem-results-api admin") }, 400, "invalid_scope"},
		{"GET", func(r *tokenReq) { r.method = http.MethodGet }, 405, "invalid_request"},
	})
}

func TestHGEMScopeGranted(t *testing.T) {
	for _, tt := range []struct{ requested, granted string }{
		{"hgem-results-api", "hgem-results-api"},
		{"hgem-results-api visits/standard.read", "hgem-results-api visits/standard.read"},
		{"visits/extended.read  hgem-results-api", "visits/extended.read hgem-results-api"},
		{" ", "hgem-results-api visits/standard.read visits/extended.read"},
	} {
		sim, ts := start(t, HGEM)
		r := goodTokenReq(HGEM, demoCreds(HGEM))
		r.form.Set("scope", tt.requested)
		a := do(t, nil, r.build(t, ts.URL, sim.TokenPath()))
		if a.status != http.StatusOK || a.object(t)["scope"] != tt.granted {
			t.Errorf("scope %q: %d %s, want scope %q", tt.requested, a.status, a.body, tt.granted)
		}
	}
}

func TestProdoscoreTokenChecks(t *testing.T) {
	runTokenCases(t, Prodoscore, []tokenCase{
		{"wrong password", func(r *tokenReq) { r.form.Set("password", "nope") }, 401, "invalid_grant"},
		{"missing password", func(r *tokenReq) { r.form.Del("password") }, 401, "invalid_grant"},
		{"wrong username", func(r *tokenReq) { r.form.Set("username", "eve@example.com") }, 401, "invalid_grant"},
		{"missing username", func(r *tokenReq) { r.form.Del("username") }, 401, "invalid_grant"},
		{"wrong client id", func(r *tokenReq) { r.form.Set("client_id", "cust-2") }, 401, "invalid_client"},
		{"missing client id", func(r *tokenReq) { r.form.Del("client_id") }, 401, "invalid_client"},
		{"client credentials grant", func(r *tokenReq) { r.form.Set("grant_type", "client_credentials") }, 400, "unsupported_grant_type"},
		{"missing grant", func(r *tokenReq) { r.form.Del("grant_type") }, 400, "invalid_request"},
		{"unknown refresh token", func(r *tokenReq) {
			r.form = url.Values{"grant_type": {"refresh_token"}, "client_id": {"cust-1"}, "refresh_token": {"forged"}}
		}, 400, "invalid_grant"},
		{"missing refresh token", func(r *tokenReq) {
			r.form = url.Values{"grant_type": {"refresh_token"}, "client_id": {"cust-1"}}
		}, 400, "invalid_request"},
		{"JSON content type", func(r *tokenReq) { r.header.Set("Content-Type", "application/json") }, 400, "invalid_request"},
		{"GET", func(r *tokenReq) { r.method = http.MethodGet }, 405, "invalid_request"},
	})
}

func TestProdoscoreRefreshRotation(t *testing.T) {
	sim, ts := start(t, Prodoscore)
	clock := newFakeClock()
	sim.SetClock(clock.Now)
	refresh := func(rt, clientID string) answer {
		r := goodTokenReq(Prodoscore, demoCreds(Prodoscore))
		r.form = url.Values{"grant_type": {"refresh_token"}, "client_id": {clientID}, "refresh_token": {rt}}
		return do(t, nil, r.build(t, ts.URL, sim.TokenPath()))
	}
	wantNotActive := func(step string, a answer) {
		t.Helper()
		m := a.object(t)
		if a.status != 400 || m["error"] != "invalid_grant" || m["error_description"] != "Token is not active" {
			t.Errorf("%s: %d %s, want 400 Token is not active", step, a.status, a.body)
		}
	}

	access1, rt1 := fetchToken(t, sim, ts.URL)
	a := refresh(rt1, "cust-1")
	if a.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", a.status, a.body)
	}
	rt2 := a.object(t)["refresh_token"].(string)
	if rt2 == rt1 {
		t.Fatal("refresh token did not rotate")
	}
	wantNotActive("reuse of the old refresh token", refresh(rt1, "cust-1"))

	// The access token from before the refresh still works: Keycloak does not revoke it.
	if a := do(t, nil, apiReq(t, Prodoscore, "GET", ts.URL+apiPath[Prodoscore], access1, nil)); a.status != 200 {
		t.Errorf("old access token after refresh: %d", a.status)
	}

	if a := refresh(rt2, "cust-2"); a.status != 401 || a.object(t)["error"] != "invalid_client" {
		t.Errorf("refresh with wrong client: %d %s", a.status, a.body)
	}
	// A refused client is turned away before its refresh token is looked at.
	if a := refresh(rt2, "cust-1"); a.status != 200 {
		t.Errorf("refresh after a refused client: %d %s", a.status, a.body)
	}

	_, rt3 := fetchToken(t, sim, ts.URL)
	sim.Revoke(rt3)
	wantNotActive("revoked refresh token", refresh(rt3, "cust-1"))

	_, rt4 := fetchToken(t, sim, ts.URL)
	clock.Add(7*24*time.Hour + time.Second)
	wantNotActive("expired refresh token", refresh(rt4, "cust-1"))

	sim.SetRefreshLifetime(time.Minute)
	a = do(t, nil, goodTokenReq(Prodoscore, demoCreds(Prodoscore)).build(t, ts.URL, sim.TokenPath()))
	if got := a.object(t)["refresh_expires_in"]; got != 60.0 {
		t.Errorf("refresh_expires_in = %v after SetRefreshLifetime(1m)", got)
	}

	var grants []string
	for _, r := range sim.TokenRequests() {
		grants = append(grants, r.Grant)
	}
	want := []string{"password", "refresh_token", "refresh_token", "refresh_token", "refresh_token",
		"password", "refresh_token", "password", "refresh_token", "password"}
	if !slices.Equal(grants, want) {
		t.Errorf("grants %v\nwant   %v", grants, want)
	}
}

func TestCredentialRotation(t *testing.T) {
	// For each vendor, the key that rotates and the error the old value then gets.
	tests := []struct {
		kind, key string
		wantError string
	}{
		{Prominsight, "client_secret", "Invalid credentials"},
		{Inspera, "api_key", "invalid_grant"},
		{HGEM, "client_secret", "invalid_client"},
		{Prodoscore, "password", "invalid_grant"},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			sim, ts := start(t, tt.kind)
			old, _ := fetchToken(t, sim, ts.URL)
			newCreds := demoCreds(tt.kind)
			newCreds[tt.key] = "rotated"
			sim.SetCredentials(newCreds)

			a := do(t, nil, goodTokenReq(tt.kind, demoCreds(tt.kind)).build(t, ts.URL, sim.TokenPath()))
			if a.status != 401 || a.object(t)["error"] != tt.wantError {
				t.Errorf("old credentials: %d %s", a.status, a.body)
			}
			a = do(t, nil, goodTokenReq(tt.kind, newCreds).build(t, ts.URL, sim.TokenPath()))
			if a.status != 200 {
				t.Errorf("new credentials: %d %s", a.status, a.body)
			}
			a = do(t, nil, apiReq(t, tt.kind, "GET", ts.URL+apiPath[tt.kind], old, nil))
			if a.status != 200 {
				t.Errorf("token issued before the rotation: %d %s", a.status, a.body)
			}
		})
	}
}

func TestHGEMAPIKeyRotation(t *testing.T) {
	sim, ts := start(t, HGEM)
	tok, _ := fetchToken(t, sim, ts.URL)
	c := demoCreds(HGEM)
	c["api_key"] = "new-key"
	sim.SetCredentials(c)

	// The token stays valid, but every API call needs the current key.
	a := do(t, nil, apiReq(t, HGEM, "GET", ts.URL+"/api/visits", tok, nil))
	if a.status != 401 {
		t.Errorf("old API key: %d, want 401", a.status)
	}
	req := apiReq(t, HGEM, "GET", ts.URL+"/api/visits", tok, nil)
	req.Header.Set("hgem-api-key", "new-key")
	if a := do(t, nil, req); a.status != 200 {
		t.Errorf("new API key: %d %s", a.status, a.body)
	}
}

func TestTokenRequestsSeen(t *testing.T) {
	sim, ts := start(t, HGEM)
	fetchToken(t, sim, ts.URL)
	seen := sim.TokenRequestsSeen()
	if len(seen) != 1 {
		t.Fatalf("%d requests seen", len(seen))
	}
	r := seen[0]
	form, _ := url.ParseQuery(string(r.Body))
	if r.Method != "POST" || r.Path != "/connect/token" || r.Header.Get("hgem-api-key") != "hgem-key" ||
		form.Get("client_secret") != "hgem-secret" || r.Status != 200 {
		t.Errorf("seen %+v", r)
	}
	if got := sim.TokenRequests(); !reflect.DeepEqual(got, []TokenRequest{{Grant: "client_credentials", Status: 200}}) {
		t.Errorf("TokenRequests = %+v", got)
	}
	if sim.APICalls() != 0 {
		t.Errorf("APICalls = %d after a token call", sim.APICalls())
	}
}
