package upstream

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/vendor"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// Token answers as vendors really send them (shared/VENDORS.md, "Token
// answers as they really come"), one kind of bend at a time, from the
// simulators and straight into readAnswer.

// labels are the Content-Types token answers come labelled with.
var labels = []string{"", "text/plain", "text/html", vendorsim.NoContentType, "application/json; charset=utf-8"}

// lifetimes are the JSON forms of an hour, and what each is read as.
var lifetimes = []struct {
	form vendorsim.Lifetime
	want time.Duration
}{
	{vendorsim.LifetimeInteger, time.Hour},
	{vendorsim.LifetimeFraction, time.Hour - time.Second}, // 3599.5, rounded down
	{vendorsim.LifetimeExponent, time.Hour},
	{vendorsim.LifetimeString, time.Hour},
}

// Every type reads its token answers under every label, with and without a
// byte-order mark, in every lifetime form and any case of Bearer.
func TestAnswerFormsFromEndpoint(t *testing.T) {
	bearers := []string{"", "bearer", "BEARER", "bEaReR"}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, kind)
			sim.SetTokenLifetime(time.Hour)
			sim.SetRefreshLifetime(time.Hour)
			a := simAdapter(kind, "", sim, srv)
			for _, label := range labels {
				for _, bom := range []bool{false, true} {
					for i, lt := range lifetimes {
						form := vendorsim.Form{ContentType: label, BOM: bom, Lifetime: lt.form, TokenType: bearers[i]}
						sim.SetTokenForm(form)
						tok, err := a.Fetch(context.Background(), credsOf(goodCreds(kind)), "")
						if err != nil {
							t.Errorf("%+v: %v", form, err)
							continue
						}
						if tok.ExpiresIn != lt.want {
							t.Errorf("%+v: lifetime %v, want %v", form, tok.ExpiresIn, lt.want)
						}
						if kind == vendorsim.Prodoscore && (tok.RefreshToken == "" || tok.RefreshExpiresIn != lt.want) {
							t.Errorf("%+v: refresh token %t for %v, want one for %v", form, tok.RefreshToken != "", tok.RefreshExpiresIn, lt.want)
						}
					}
				}
			}
		})
	}
}

// A refusal's code and description are read whatever its label, BOM or not.
func TestRefusalFormsFromEndpoint(t *testing.T) {
	wrong := map[string]struct{ key, code, desc string }{
		vendorsim.Prominsight: {"client_secret", "Invalid credentials", ""},
		vendorsim.Inspera:     {"api_key", "invalid_grant", ""},
		vendorsim.HGEM:        {"client_secret", "invalid_client", "invalid client credentials"},
		vendorsim.Prodoscore:  {"password", "invalid_grant", "Invalid user credentials"},
	}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, kind)
			a := simAdapter(kind, "", sim, srv)
			w := wrong[kind]
			creds := with(goodCreds(kind), w.key, "wrong-"+canary)
			for _, label := range labels {
				for _, bom := range []bool{false, true} {
					sim.SetTokenForm(vendorsim.Form{ContentType: label, BOM: bom})
					_, err := a.Fetch(context.Background(), credsOf(creds), "")
					fe := fetchError(t, err)
					if fe.Status/100 != 4 || fe.Code != w.code || fe.Description != w.desc || fe.Malformed {
						t.Errorf("label %q BOM %t: %+v, want a 4xx with %q, %q", label, bom, *fe, w.code, w.desc)
					}
					noSecrets(t, err, creds)
				}
			}
		})
	}
}

func TestReadForms(t *testing.T) {
	const bom = "\uFEFF"
	tests := []struct {
		name    string
		answer  vendor.Answer
		status  int
		body    string
		want    broker.Token
		wantErr *broker.FetchError
	}{
		{name: "integer", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": 3600}`, want: broker.Token{AccessToken: "a", ExpiresIn: time.Hour}},
		{name: "fraction rounded down", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": 3599.5}`, want: broker.Token{AccessToken: "a", ExpiresIn: time.Hour - time.Second}},
		{name: "exponent", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": 3.6e3}`, want: broker.Token{AccessToken: "a", ExpiresIn: time.Hour}},
		{name: "capital exponent", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": 36E2}`, want: broker.Token{AccessToken: "a", ExpiresIn: time.Hour}},
		{name: "string", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": "3600"}`, want: broker.Token{AccessToken: "a", ExpiresIn: time.Hour}},
		{name: "exponent in a string", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": "3.6e3"}`, want: broker.Token{AccessToken: "a", ExpiresIn: time.Hour}},
		{name: "escaped string", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": "\u0033600"}`, want: broker.Token{AccessToken: "a", ExpiresIn: time.Hour}},
		{name: "beyond float64", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": 1e400}`, want: broker.Token{AccessToken: "a", ExpiresIn: maxLifetime}},
		{name: "hex string", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": "0x1p12"}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"}},
		{name: "spaced string", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": " 3600"}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"}},
		{name: "Infinity", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": "Infinity"}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"}},
		{name: "bool lifetime", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "expires_in": true}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"}},
		{name: "BOM", answer: hgemAnswer, status: 200, body: bom + `{"access_token": "a", "expires_in": 60}`, want: broker.Token{AccessToken: "a", ExpiresIn: time.Minute}},
		{name: "two BOMs", answer: hgemAnswer, status: 200, body: bom + bom + `{"access_token": "a"}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"}},
		{name: "trailing text", answer: hgemAnswer, status: 200, body: `{"access_token": "a"} and more`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"}},
		{name: "lower-case bearer", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "token_type": "bearer"}`, want: broker.Token{AccessToken: "a"}},
		{name: "upper-case bearer", answer: prominsightAnswer, status: 200, body: `{"success": true, "data": {"accessToken": "a", "tokenType": "BEARER"}}`, want: broker.Token{AccessToken: "a"}},
		{name: "not a bearer token", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "token_type": "DPoP"}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: `token_type "DPoP" is not Bearer`}},
		{name: "not a bearer token in the envelope", answer: prominsightAnswer, status: 200, body: `{"success": true, "data": {"accessToken": "a", "tokenType": "mac"}}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: `data.tokenType "mac" is not Bearer`}},
		{name: "token type not a string", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "token_type": 1}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"}},
		{name: "Inspera ignores a token type", answer: insperaAnswer, status: 200, body: `{"access_token": "a", "token_type": "mac"}`, want: broker.Token{AccessToken: "a"}},
		{name: "refresh token and its lifetime", answer: prodoscoreAnswer, status: 200, body: `{"access_token": "a", "refresh_token": "r", "refresh_expires_in": "6e2"}`,
			want: broker.Token{AccessToken: "a", RefreshToken: "r", RefreshExpiresIn: 10 * time.Minute}},
		{name: "HGEM keeps no refresh token", answer: hgemAnswer, status: 200, body: `{"access_token": "a", "refresh_token": "r"}`, want: broker.Token{AccessToken: "a"}},
		{name: "refusal with a BOM", answer: hgemAnswer, status: 400, body: bom + `{"error": "invalid_scope", "error_description": "no such scope"}`,
			wantErr: &broker.FetchError{Status: 400, Code: "invalid_scope", Description: "no such scope"}},
		{name: "refusal in a 200", answer: insperaAnswer, status: 200, body: `{"error": "invalid_grant", "description": "no"}`,
			wantErr: &broker.FetchError{Status: 200, Code: "invalid_grant", Description: "no"}},
		{name: "refusal in a 200 beside a token", answer: prodoscoreAnswer, status: 200, body: `{"access_token": "a", "error": "invalid_grant"}`,
			wantErr: &broker.FetchError{Status: 200, Code: "invalid_grant"}},
		{name: "empty error beside a token", answer: prodoscoreAnswer, status: 200, body: `{"access_token": "a", "error": ""}`, want: broker.Token{AccessToken: "a"}},
		{name: "envelope refusal with a BOM", answer: prominsightAnswer, status: 200, body: bom + `{"success": false, "error": "Account locked"}`,
			wantErr: &broker.FetchError{Status: 200, Code: "Account locked"}},
		{name: "refusal in plain words", answer: hgemAnswer, status: 400, body: "invalid_client\n",
			wantErr: &broker.FetchError{Status: 400, Description: "invalid_client"}},
		{name: "refusal in plain words, the first line only", answer: insperaAnswer, status: 403, body: "  Forbidden  by\tWAF\r\nrequest id 42\n",
			wantErr: &broker.FetchError{Status: 403, Description: "Forbidden by WAF"}},
		{name: "refusal as a page of markup", answer: hgemAnswer, status: 403, body: "<html><body><h1>403</h1></body></html>",
			wantErr: &broker.FetchError{Status: 403}},
		{name: "refusal as JSON without its fields", answer: hgemAnswer, status: 400, body: `{"detail": "x"}`,
			wantErr: &broker.FetchError{Status: 400}},
		{name: "envelope without success", answer: prominsightAnswer, status: 200, body: `{"data": {"accessToken": "a"}}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "answer is not the JSON envelope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, label := range []string{"application/json", "text/plain", ""} {
				h := http.Header{}
				if label != "" {
					h.Set("Content-Type", label)
				}
				tok, err := readAnswer(tt.answer, resp(tt.status, h), []byte(tt.body), nil)
				if tt.wantErr != nil {
					fe := fetchError(t, err)
					if diff := cmp.Diff(*tt.wantErr, *fe); diff != "" {
						t.Errorf("labelled %q: FetchError (-want +got):\n%s", label, diff)
					}
					continue
				}
				if err != nil {
					t.Fatalf("labelled %q: %v", label, err)
				}
				if diff := cmp.Diff(lifeOf(tt.want), lifeOf(tok)); diff != "" {
					t.Errorf("labelled %q: token (-want +got):\n%s", label, diff)
				}
			}
		})
	}
}

// refreshShape is one way Keycloak (or what stands in front of it) may
// answer a refresh grant.
type refreshShape struct {
	name    string
	fault   vendorsim.Fault
	refused bool // whether it is a refusal, so the refresh token must go
}

var refreshShapes = []refreshShape{
	{"400 invalid_grant as JSON", vendorsim.Fault{Status: 400, Code: "invalid_grant"}, true},
	{"400 invalid_grant as text/plain", vendorsim.Fault{Status: 400, Code: "invalid_grant", ContentType: "text/plain"}, true},
	{"401 invalid_grant as JSON", vendorsim.Fault{Status: 401, Code: "invalid_grant"}, true},
	{"401 invalid_grant as text/plain", vendorsim.Fault{Status: 401, Code: "invalid_grant", ContentType: "text/plain"}, true},
	{"400 invalid_grant unlabelled", vendorsim.Fault{Status: 400, Code: "invalid_grant", ContentType: vendorsim.NoContentType}, true},
	{"400 not JSON", vendorsim.Fault{Status: 400, ContentType: "text/html", Body: "<html><body>Bad Request</body></html>"}, true},
	{"401 not JSON", vendorsim.Fault{Status: 401, ContentType: "text/plain", Body: "Unauthorized"}, true},
	{"403 from a firewall", vendorsim.Fault{Status: 403, ContentType: "text/html", Body: "<html>Request blocked</html>"}, true},
	{"invalid_grant in a 200", vendorsim.Fault{Status: 200, Body: `{"error":"invalid_grant"}`}, true},
	// Not refusals: the same refresh token is tried again after the backoff.
	{"503", vendorsim.Fault{Status: 503}, false},
	{"429", vendorsim.Fault{Status: 429, ContentType: "text/plain", Body: "slow down"}, false},
	{"malformed 200", vendorsim.Fault{Malformed: true}, false},
}

// presented counts the token requests that carried refresh token rt.
func presented(sim *vendorsim.Server, rt string) int {
	n := 0
	for _, r := range sim.TokenRequestsSeen() {
		if f, _ := url.ParseQuery(string(r.Body)); f.Get("refresh_token") == rt {
			n++
		}
	}
	return n
}

func grants(sim *vendorsim.Server, from int) string {
	var out []string
	for _, r := range sim.TokenRequests()[from:] {
		out = append(out, fmt.Sprintf("%s %d", r.Grant, r.Status))
	}
	return strings.Join(out, ", ")
}

// eventually polls cond until it holds, failing the test after a deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); !cond(); <-tick.C {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// The adapter in one fetch: a refused refresh grant falls back to the
// password grant; any other failure comes back as it is.
func TestProdoscoreRefreshShapes(t *testing.T) {
	c := goodCreds(vendorsim.Prodoscore)
	for _, sh := range refreshShapes {
		t.Run(sh.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, vendorsim.Prodoscore)
			a := simAdapter(vendorsim.Prodoscore, "", sim, srv)
			first, err := a.Fetch(context.Background(), credsOf(c), "")
			if err != nil {
				t.Fatal(err)
			}
			f := sh.fault
			f.Grant, f.Count = "refresh_token", 1
			sim.SetTokenFault(&f)

			tok, err := a.Fetch(context.Background(), credsOf(c), first.RefreshToken)
			status := f.Status
			if f.Malformed {
				status = 200
			}
			if !sh.refused {
				fe := fetchError(t, err)
				if fe.RefreshRefused || grants(sim, 1) != fmt.Sprintf("refresh_token %d", status) {
					t.Errorf("FetchError %+v after %s: want no fallback and the refresh token kept", *fe, grants(sim, 1))
				}
				return
			}
			if err != nil || tok.AccessToken == "" || tok.RefreshToken == "" || tok.RefreshToken == first.RefreshToken {
				t.Fatalf("Fetch = %v, %v: want a new token and a new refresh token", tok, err)
			}
			if want := fmt.Sprintf("refresh_token %d, password 200", status); grants(sim, 1) != want {
				t.Errorf("token requests %s, want %s", grants(sim, 1), want)
			}
		})
	}
}

// Through the broker: a refresh token refused in any shape is presented
// once and never again, whether the password grant after it succeeds or
// fails too; one that met a passing failure is tried again.
func TestProdoscoreRefusedRefreshNeverPresentedAgain(t *testing.T) {
	c := goodCreds(vendorsim.Prodoscore)
	fast := broker.Backoff{Base: 10 * time.Millisecond, Max: 10 * time.Millisecond}
	for _, sh := range refreshShapes {
		for _, passwordFails := range []bool{false, true} {
			if passwordFails && !sh.refused {
				continue
			}
			t.Run(fmt.Sprintf("%s, password fails %t", sh.name, passwordFails), func(t *testing.T) {
				t.Parallel()
				sim, srv := startSim(t, vendorsim.Prodoscore)
				cache := broker.New("prodoscore", simAdapter(vendorsim.Prodoscore, "", sim, srv),
					broker.Options{RefreshFraction: 0.75, FetchTimeout: 10 * time.Second, Transient: fast, Refused: fast, Conflict: fast})
				t.Cleanup(cache.Close)
				cache.SetCredentials(credsOf(c))
				tok, err := cache.Token(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				rt, from := tok.RefreshToken, len(sim.TokenRequests())
				f := sh.fault
				f.Grant, f.Count = "refresh_token", 1
				sim.SetTokenFault(&f)
				if passwordFails {
					// The vendor now wants another password, until it is given back.
					sim.SetCredentials(with(c, "password", "other-"+canary))
				}

				cache.Invalidate(tok.Gen)
				tok, err = cache.Token(context.Background())
				switch {
				case passwordFails:
					if err == nil {
						t.Fatalf("a token although the password grant was refused")
					}
					sim.SetCredentials(c)
				case sh.refused && err != nil:
					t.Fatalf("no token in the fetch that fell back: %v (%s)", err, grants(sim, from))
				}
				eventually(t, "a token", func() bool {
					tok, err = cache.Token(context.Background())
					return err == nil
				})
				// One refresh more, with whatever refresh token the cache holds now.
				before := len(sim.TokenRequests())
				cache.Invalidate(tok.Gen)
				if _, err := cache.Token(context.Background()); err != nil {
					t.Fatalf("after recovery: %v", err)
				}
				if got := grants(sim, before); got != "refresh_token 200" {
					t.Errorf("next fetch: %s, want a refresh grant with the newest refresh token", got)
				}

				want := 1
				if !sh.refused {
					want = 2
				}
				if n := presented(sim, rt); n != want {
					t.Errorf("refresh token presented %d times, want %d (token requests: %s)", n, want, grants(sim, from))
				}
			})
		}
	}
}

// The reader does not depend on the label or a BOM: whatever any vendor's
// answer says, it reads the same under every label, with a BOM or without.
func TestReadIgnoresLabel(t *testing.T) {
	bodies := []string{
		`{"access_token": "a", "expires_in": "3.6e3", "token_type": "BEARER"}`,
		`{"success": true, "data": {"accessToken": "a", "expiresIn": 1}}`,
		`{"error": "invalid_grant"}`,
		`access_token=a&expires_in=3600`,
		``,
	}
	for _, a := range []vendor.Answer{prominsightAnswer, insperaAnswer, hgemAnswer, prodoscoreAnswer} {
		for _, body := range bodies {
			for _, status := range []int{200, 400} {
				tok0, err0 := readAnswer(a, resp(status, nil), []byte(body), nil)
				for _, label := range labels[1:] {
					h := http.Header{"Content-Type": {label}}
					tok, err := readAnswer(a, resp(status, h), []byte("\uFEFF"+body), nil)
					if diff := cmp.Diff(outcome(tok0, err0), outcome(tok, err)); diff != "" {
						t.Errorf("%+v %d %q labelled %q: (-unlabelled +labelled)\n%s", a, status, body, label, diff)
					}
				}
			}
		}
	}
}

// life is what a token answer gave, without the broker's fields.
type life struct {
	Access, Refresh             string
	ExpiresIn, RefreshExpiresIn time.Duration
}

func lifeOf(t broker.Token) life {
	return life{t.AccessToken, t.RefreshToken, t.ExpiresIn, t.RefreshExpiresIn}
}

// outcome is what Read gave, comparable.
func outcome(tok broker.Token, err error) any {
	if fe, ok := err.(*broker.FetchError); ok {
		return *fe
	}
	return lifeOf(tok)
}

// Retry-After is delay-seconds (digits only) or an HTTP date (RFC 9110
// §10.2.3); anything else is no hint.
func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"7":                             7 * time.Second,
		" 7 ":                           7 * time.Second,
		"0":                             0,
		"7abc":                          0, // fmt.Sscanf read this as 7
		"-1":                            0,
		"1.5":                           0,
		"99999999999":                   maxLifetime, // capped, not wrapped negative
		"Wed, 01 Jan 2025 00:01:30 GMT": 90 * time.Second,
		"Tue, 31 Dec 2024 23:59:00 GMT": 0, // in the past
		"soon":                          0,
		"":                              0,
	} {
		if got := retryAfter(http.Header{"Retry-After": {v}}, now); got != want {
			t.Errorf("Retry-After %q = %v, want %v", v, got, want)
		}
	}
}
