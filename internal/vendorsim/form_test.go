package vendorsim

import (
	"bytes"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"testing"
	"time"
)

// Every bend of a Form shows in the bytes of every vendor's token answers, refusals included,
// and the zero Form gives the documented answer back.
func TestTokenForm(t *testing.T) {
	tests := []struct {
		name     string
		form     Form
		wantType string // Content-Type header; "-" for none at all
		bom      bool
		lifetime string // how 3600 s is written
		bearer   string // how Bearer is written, where the vendor writes it
	}{
		{"documented", Form{}, "application/json", false, `3600`, `"Bearer"`},
		{"text/plain", Form{ContentType: "text/plain"}, "text/plain", false, `3600`, `"Bearer"`},
		{"no label", Form{ContentType: NoContentType}, "-", false, `3600`, `"Bearer"`},
		{"BOM, fraction", Form{BOM: true, Lifetime: LifetimeFraction}, "application/json", true, `3599.5`, `"Bearer"`},
		{"exponent, lower case", Form{Lifetime: LifetimeExponent, TokenType: "bearer"}, "application/json", false, `3.6e3`, `"bearer"`},
		{"string", Form{Lifetime: LifetimeString, ContentType: "text/html"}, "text/html", false, `"3600"`, `"Bearer"`},
	}
	for _, kind := range kinds {
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				sim, ts := start(t, kind)
				sim.SetTokenLifetime(time.Hour)
				sim.SetRefreshLifetime(time.Hour)
				sim.SetTokenForm(tt.form)
				check := func(what string, a answer) {
					t.Helper()
					got := "-"
					if v, ok := a.header["Content-Type"]; ok {
						got = v[0]
					}
					if got != tt.wantType {
						t.Errorf("%s: Content-Type %s, want %s", what, got, tt.wantType)
					}
					if bytes.HasPrefix(a.body, []byte("\uFEFF")) != tt.bom {
						t.Errorf("%s: body %q, want a BOM %t", what, a.body, tt.bom)
					}
				}

				a := do(t, nil, goodTokenReq(kind, demoCreds(kind)).build(t, ts.URL, sim.TokenPath()))
				if a.status != 200 {
					t.Fatalf("token: %d %s", a.status, a.body)
				}
				check("token", a)
				for _, field := range []string{"expiresIn", "expires_in", "refresh_expires_in"} {
					m := regexp.MustCompile(`"` + field + `":([^,}]*)`).FindSubmatch(a.body)
					if m != nil && string(m[1]) != tt.lifetime {
						t.Errorf("%s written %s, want %s", field, m[1], tt.lifetime)
					}
				}
				if m := regexp.MustCompile(`"(?:tokenType|token_type)":("[^"]*")`).FindSubmatch(a.body); m != nil && string(m[1]) != tt.bearer {
					t.Errorf("token type written %s, want %s", m[1], tt.bearer)
				}
				if kind != Inspera && !bytes.Contains(a.body, []byte(tt.bearer)) {
					t.Errorf("no token type in %s", a.body)
				}

				wrong := demoCreds(kind)
				for k := range wrong {
					wrong[k] = "wrong"
				}
				r := do(t, nil, goodTokenReq(kind, wrong).build(t, ts.URL, sim.TokenPath()))
				if r.status/100 != 4 {
					t.Fatalf("wrong credentials: %d %s", r.status, r.body)
				}
				check("refusal", r)
			})
		}
	}
}

// A fault limited to one grant leaves the others alone and is not counted down by them.
func TestFaultGrant(t *testing.T) {
	sim, ts := start(t, Prodoscore)
	sim.SetTokenFault(&Fault{Grant: "refresh_token", Status: 401, Code: "invalid_grant", ContentType: "text/plain", Count: 1})
	fetchToken(t, sim, ts.URL)
	_, rt := fetchToken(t, sim, ts.URL) // two password grants pass untouched

	refresh := func(rt string) answer {
		req := goodTokenReq(Prodoscore, demoCreds(Prodoscore))
		req.form = url.Values{"grant_type": {"refresh_token"}, "client_id": {demoCreds(Prodoscore)["client_id"]}, "refresh_token": {rt}}
		return do(t, nil, req.build(t, ts.URL, sim.TokenPath()))
	}
	a := refresh(rt)
	if a.status != 401 || a.header.Get("Content-Type") != "text/plain" || a.object(t)["error"] != "invalid_grant" {
		t.Errorf("faulted refresh: %d %v %s", a.status, a.header, a.body)
	}
	// The fault ran out; the refresh token was never looked at, so it still works.
	if a := refresh(rt); a.status != 200 {
		t.Errorf("refresh after the fault: %d %s", a.status, a.body)
	}
	got := sim.TokenRequests()
	want := []TokenRequest{{"password", 200}, {"password", 200}, {"refresh_token", 401}, {"refresh_token", 200}}
	if !slices.Equal(got, want) {
		t.Errorf("token requests %v, want %v", got, want)
	}
	if a := do(t, nil, goodTokenReq(Prodoscore, demoCreds(Prodoscore)).build(t, ts.URL, sim.TokenPath())); a.status != http.StatusOK {
		t.Errorf("password grant after: %d", a.status)
	}
}
