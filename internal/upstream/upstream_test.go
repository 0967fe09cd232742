package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/vendor"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// Every test closes its servers and transports, so nothing may be left running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// canary marks every credential value, so a test can tell at a glance that no
// error text carries one. The values also hold characters that JSON, form and
// query encoding must escape.
const canary = "CANARY"

var kinds = []string{vendorsim.Prominsight, vendorsim.Inspera, vendorsim.HGEM, vendorsim.Prodoscore}

func goodCreds(kind string) map[string]string {
	switch kind {
	case vendorsim.Prominsight:
		return map[string]string{"client_id": "pi-id-CANARY-1a2b", "client_secret": `pi-sec-CANARY-"\&<>=+ 3c4d`}
	case vendorsim.Inspera:
		return map[string]string{"client_id": "ins id+CANARY&x=5e6f", "api_key": "ins-key-CANARY-7a8b"}
	case vendorsim.HGEM:
		return map[string]string{"api_key": "hgem-key-CANARY-9c0d", "client_id": "hgem-id-CANARY-aa11", "client_secret": "hgem sec&=+CANARY-1e2f"}
	case vendorsim.Prodoscore:
		return map[string]string{"client_id": "pds-cust-CANARY-3a4b", "username": "ada+CANARY@example.com", "password": "pw &=+%CANARY-5c6d"}
	}
	panic("unknown kind " + kind)
}

func credsOf(m map[string]string) secrets.Credentials { return secrets.NewCredentials(m, "") }

// with returns a copy of m with key set to v.
func with(m map[string]string, key, v string) map[string]string {
	c := maps.Clone(m)
	c[key] = v
	return c
}

// apiPath is an API route of each simulator that answers 200 to an authorized GET.
var apiPath = map[string]string{
	vendorsim.Prominsight: "/api/v1/tests/sessions/1",
	vendorsim.Inspera:     "/api/v1/test/42",
	vendorsim.HGEM:        "/api/visits",
	vendorsim.Prodoscore:  "/api/v1/employees",
}

// silentWhenGone drops the connection instead of answering once the client
// has gone. The simulator's Hang returns without a word when the request's
// context ends, and net/http then sends an empty 200; the client's transport
// can still read that answer while it closes the connection (it prefers a
// response that races its cancellation), so now and then a Fetch whose
// deadline passed came back "HTTP 200 without a usable token". A real vendor
// does not answer a client that hung up.
type silentWhenGone struct{ h http.Handler }

func (s silentWhenGone) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.h.ServeHTTP(w, r)
	if r.Context().Err() != nil {
		panic(http.ErrAbortHandler)
	}
}

// startSim serves a simulator over TLS. The simulator is closed before the
// server, so a request hanging on a fault is released before Close waits for it.
func startSim(t *testing.T, kind string) (*vendorsim.Server, *httptest.Server) {
	t.Helper()
	sim, err := vendorsim.New(kind, goodCreds(kind))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(silentWhenGone{sim})
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)
	return sim, srv
}

// adapterFor builds kind's adapter, for the built-in vendor description of
// that type.
func adapterFor(kind, tokenURL, scope string, c *http.Client) *Adapter {
	a, err := New(config.Upstream{Type: kind, TokenURL: tokenURL, Scope: scope}, c)
	if err != nil {
		panic(err)
	}
	return a
}

// The vendors' answers, as their built-in descriptions give them.
var (
	prominsightAnswer = builtinAnswer(vendorsim.Prominsight)
	insperaAnswer     = builtinAnswer(vendorsim.Inspera)
	hgemAnswer        = builtinAnswer(vendorsim.HGEM)
	prodoscoreAnswer  = builtinAnswer(vendorsim.Prodoscore)
)

func builtinAnswer(kind string) vendor.Answer {
	d, _ := vendor.Builtin(kind)
	return d.Answer
}

// setHeaders sets the headers tok carries, built as the broker builds them
// when it installs a token.
func setHeaders(a *Adapter, h http.Header, tok broker.Token, creds secrets.Credentials) {
	a.Header(tok.AccessToken, creds).SetOn(h)
}

// simAdapter returns kind's adapter pointed at the simulator behind srv.
func simAdapter(kind, scope string, sim *vendorsim.Server, srv *httptest.Server) *Adapter {
	return adapterFor(kind, srv.URL+sim.TokenPath(), scope, TokenClient(srv.Client().Transport, 5*time.Second))
}

// fetchError asserts that err is a *broker.FetchError and returns it.
func fetchError(t *testing.T, err error) *broker.FetchError {
	t.Helper()
	var fe *broker.FetchError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *broker.FetchError", err, err)
	}
	return fe
}

// noSecrets fails if any rendering of err carries a credential value.
func noSecrets(t *testing.T, err error, creds ...map[string]string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		if strings.Contains(s, canary) {
			t.Errorf("error text carries a credential: %q", s)
		}
		for _, c := range creds {
			for k, v := range c {
				if strings.Contains(s, v) || strings.Contains(s, url.QueryEscape(v)) {
					t.Errorf("error text carries %s: %q", k, s)
				}
			}
		}
	}
}

// onlyTokenRequest returns the single token request the simulator saw.
func onlyTokenRequest(t *testing.T, sim *vendorsim.Server) vendorsim.Request {
	t.Helper()
	seen := sim.TokenRequestsSeen()
	if len(seen) != 1 {
		t.Fatalf("simulator saw %d token requests, want 1", len(seen))
	}
	return seen[0]
}

// singleHeader checks that h holds name exactly once, with value want.
func singleHeader(t *testing.T, h http.Header, name, want string) {
	t.Helper()
	if got := h.Values(name); !slices.Equal(got, []string{want}) {
		t.Errorf("header %s = %q, want exactly [%q]", name, got, want)
	}
}

func formOf(t *testing.T, body []byte) url.Values {
	t.Helper()
	f, err := url.ParseQuery(string(body))
	if err != nil {
		t.Fatalf("body %q is not a form: %v", body, err)
	}
	return f
}

func TestFetchSendsWhatTheVendorExpects(t *testing.T) {
	const lifetime = 1234 * time.Second
	tests := []struct {
		name  string
		kind  string
		scope string
		check func(t *testing.T, c map[string]string, r vendorsim.Request)
	}{
		{
			name: "prominsight default scope",
			kind: vendorsim.Prominsight,
			check: func(t *testing.T, c map[string]string, r vendorsim.Request) {
				singleHeader(t, r.Header, "Content-Type", "application/json")
				checkJSONBody(t, r.Body, map[string]string{"client_id": c["client_id"], "client_secret": c["client_secret"], "scope": "session.read"})
			},
		},
		{
			name:  "prominsight configured scope",
			kind:  vendorsim.Prominsight,
			scope: "session.read results.read",
			check: func(t *testing.T, c map[string]string, r vendorsim.Request) {
				singleHeader(t, r.Header, "Content-Type", "application/json")
				checkJSONBody(t, r.Body, map[string]string{"client_id": c["client_id"], "client_secret": c["client_secret"], "scope": "session.read results.read"})
			},
		},
		{
			name: "inspera",
			kind: vendorsim.Inspera,
			check: func(t *testing.T, c map[string]string, r vendorsim.Request) {
				singleHeader(t, r.Header, "Content-Type", "application/x-www-form-urlencoded")
				singleHeader(t, r.Header, "Code", c["api_key"])
				q, err := url.ParseQuery(r.RawQuery)
				if err != nil {
					t.Fatalf("query %q: %v", r.RawQuery, err)
				}
				want := url.Values{"grant_type": {"authorization_code"}, "client_id": {c["client_id"]}}
				if diff := cmp.Diff(want, q); diff != "" {
					t.Errorf("query (-want +got):\n%s", diff)
				}
				if len(r.Body) != 0 {
					t.Errorf("body = %q, want empty", r.Body)
				}
			},
		},
		{
			name: "hgem without scope",
			kind: vendorsim.HGEM,
			check: func(t *testing.T, c map[string]string, r vendorsim.Request) {
				singleHeader(t, r.Header, "Content-Type", "application/x-www-form-urlencoded")
				singleHeader(t, r.Header, "Hgem-Api-Key", c["api_key"])
				want := url.Values{"grant_type": {"client_credentials"}, "client_id": {c["client_id"]}, "client_secret": {c["client_secret"]}}
				if diff := cmp.Diff(want, formOf(t, r.Body)); diff != "" {
					t.Errorf("form (-want +got):\n%s", diff)
				}
			},
		},
		{
			name:  "hgem with scope",
			kind:  vendorsim.HGEM,
			scope: "  hgem-results-api   visits/standard.read ",
			check: func(t *testing.T, c map[string]string, r vendorsim.Request) {
				singleHeader(t, r.Header, "Content-Type", "application/x-www-form-urlencoded")
				singleHeader(t, r.Header, "Hgem-Api-Key", c["api_key"])
				want := url.Values{
					"grant_type": {"client_credentials"}, "client_id": {c["client_id"]}, "client_secret": {c["client_secret"]},
					"scope": {"hgem-results-api visits/standard.read"},
				}
				if diff := cmp.Diff(want, formOf(t, r.Body)); diff != "" {
					t.Errorf("form (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "prodoscore password grant",
			kind: vendorsim.Prodoscore,
			check: func(t *testing.T, c map[string]string, r vendorsim.Request) {
				singleHeader(t, r.Header, "Content-Type", "application/x-www-form-urlencoded")
				want := url.Values{"grant_type": {"password"}, "client_id": {c["client_id"]}, "username": {c["username"]}, "password": {c["password"]}}
				if diff := cmp.Diff(want, formOf(t, r.Body)); diff != "" {
					t.Errorf("form (-want +got):\n%s", diff)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, tt.kind)
			sim.SetTokenLifetime(lifetime)
			c := goodCreds(tt.kind)

			tok, err := simAdapter(tt.kind, tt.scope, sim, srv).Fetch(context.Background(), credsOf(c), "")
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			// HGEM's lifetime once came back through x/oauth2's computed
			// Expiry, a hair short; this bound is from then.
			// TestAnswerFormsFromEndpoint holds all four to the exact lifetime.
			if tt.kind == vendorsim.HGEM {
				if tok.ExpiresIn > lifetime || tok.ExpiresIn < lifetime-time.Second {
					t.Errorf("ExpiresIn = %v, want within a second below %v", tok.ExpiresIn, lifetime)
				}
			} else if tok.ExpiresIn != lifetime {
				t.Errorf("ExpiresIn = %v, want %v", tok.ExpiresIn, lifetime)
			}
			if !slices.Contains(sim.Tokens(), tok.AccessToken) {
				t.Errorf("access token is not one the simulator issued")
			}

			r := onlyTokenRequest(t, sim)
			if r.Method != http.MethodPost || r.Path != sim.TokenPath() || r.Status != http.StatusOK {
				t.Errorf("token request %s %s answered %d, want POST %s answered 200", r.Method, r.Path, r.Status, sim.TokenPath())
			}
			if tt.kind != vendorsim.Inspera && r.RawQuery != "" {
				t.Errorf("query = %q, want none", r.RawQuery)
			}
			// Client credentials travel in the body or vendor headers, never as Basic auth.
			if v := r.Header.Values("Authorization"); len(v) != 0 {
				t.Errorf("token request carries Authorization %q", v)
			}
			tt.check(t, c, r)
		})
	}
}

func checkJSONBody(t *testing.T, body []byte, want map[string]string) {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", body, err)
	}
	w := map[string]any{}
	for k, v := range want {
		w[k] = v
	}
	if diff := cmp.Diff(w, got); diff != "" {
		t.Errorf("JSON body (-want +got):\n%s", diff)
	}
}

func TestFetchWrongCredentials(t *testing.T) {
	tests := []struct {
		name       string
		kind       string
		key        string // the credential the adapter gets wrong
		wantStatus int
		wantCode   string
	}{
		{"prominsight secret", vendorsim.Prominsight, "client_secret", 401, "Invalid credentials"},
		{"prominsight client id", vendorsim.Prominsight, "client_id", 401, "Invalid credentials"},
		{"inspera api key", vendorsim.Inspera, "api_key", 401, "invalid_grant"},
		{"inspera client id", vendorsim.Inspera, "client_id", 400, "invalid_request"},
		{"hgem api key", vendorsim.HGEM, "api_key", 401, "invalid_client"},
		{"hgem secret", vendorsim.HGEM, "client_secret", 401, "invalid_client"},
		{"prodoscore password", vendorsim.Prodoscore, "password", 401, "invalid_grant"},
		{"prodoscore client id", vendorsim.Prodoscore, "client_id", 401, "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, tt.kind)
			wrong := with(goodCreds(tt.kind), tt.key, "wrong&"+canary+"+"+tt.key)

			tok, err := simAdapter(tt.kind, "", sim, srv).Fetch(context.Background(), credsOf(wrong), "")
			if err == nil {
				t.Fatalf("Fetch with a wrong %s succeeded: %v", tt.key, tok)
			}
			fe := fetchError(t, err)
			if fe.Status != tt.wantStatus || fe.Code != tt.wantCode || fe.Malformed {
				t.Errorf("FetchError = %+v, want Status %d Code %q, not Malformed", *fe, tt.wantStatus, tt.wantCode)
			}
			if tok.AccessToken != "" {
				t.Errorf("a failed Fetch returned an access token")
			}
			noSecrets(t, err, wrong, goodCreds(tt.kind))
		})
	}
}

func TestInsperaTokenFaults(t *testing.T) {
	tests := []struct {
		name  string
		fault vendorsim.Fault
		want  broker.FetchError // compared without Err
	}{
		{
			name:  "one token per user",
			fault: vendorsim.Fault{Status: http.StatusConflict},
			want:  broker.FetchError{Status: 409, Code: "Multiple tokens for user", Description: "Please contact inspera support"},
		},
		{
			name:  "rate limited",
			fault: vendorsim.Fault{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"7"}}},
			want:  broker.FetchError{Status: 429, Code: "temporarily_unavailable", Description: "Too Many Requests", RetryAfter: 7 * time.Second},
		},
		{
			name:  "internal error",
			fault: vendorsim.Fault{Status: http.StatusInternalServerError},
			want:  broker.FetchError{Status: 500, Code: "Internal error authenticating user", Description: "Please contact inspera support"},
		},
		{
			name:  "OAuth2Exception object",
			fault: vendorsim.Fault{Status: http.StatusBadRequest, Body: `{"error": {"error": "invalid_request", "message": "Bad request"}}`},
			want:  broker.FetchError{Status: 400, Code: "invalid_request"},
		},
		{
			name:  "HTML from a gateway",
			fault: vendorsim.Fault{Status: http.StatusBadGateway, ContentType: "text/html", Body: "<html><body>502 Bad Gateway</body></html>"},
			want:  broker.FetchError{Status: 502},
		},
		{
			name:  "malformed 200",
			fault: vendorsim.Fault{Malformed: true},
			want:  broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"},
		},
		{
			name:  "200 without a token",
			fault: vendorsim.Fault{Status: http.StatusOK, Body: `{"expires_in": 3600}`},
			want:  broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, vendorsim.Inspera)
			sim.SetTokenFault(&tt.fault)

			_, err := simAdapter(vendorsim.Inspera, "", sim, srv).Fetch(context.Background(), credsOf(goodCreds(vendorsim.Inspera)), "")
			fe := fetchError(t, err)
			got := *fe
			got.Err = nil
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("FetchError (-want +got):\n%s", diff)
			}
			noSecrets(t, err, goodCreds(vendorsim.Inspera))
		})
	}
}

// A body cut short is a transport failure for every adapter (no answer,
// with the read error as cause), never a malformed answer or a panic.
func TestFetchTruncatedAnswer(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, kind)
			sim.SetTokenFault(&vendorsim.Fault{Truncate: true})

			tok, err := simAdapter(kind, "", sim, srv).Fetch(context.Background(), credsOf(goodCreds(kind)), "")
			if err == nil {
				t.Fatalf("Fetch of a truncated answer succeeded: %v", tok)
			}
			fe := fetchError(t, err)
			if fe.Status != 0 || fe.Err == nil || fe.Malformed {
				t.Errorf("FetchError %+v: want no status and the read error as cause", *fe)
			}
			noSecrets(t, err, goodCreds(kind))
		})
	}
}

// A hanging token endpoint gives up with the caller's context. The deadline
// has to outlast connecting, or the hang is never reached; rather than guess,
// each attempt doubles it until the simulator has seen the request.
func TestFetchHangingEndpointHonoursDeadline(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, kind)
			sim.SetTokenFault(&vendorsim.Fault{Hang: true})
			a := simAdapter(kind, "", sim, srv)
			c := goodCreds(kind)

			for d := 50 * time.Millisecond; ; d *= 2 {
				before := sim.TokenCalls()
				ctx, cancel := context.WithTimeout(context.Background(), d)
				_, err := a.Fetch(ctx, credsOf(c), "")
				cancel()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Fetch = %v, want an error that is context.DeadlineExceeded", err)
				}
				fetchError(t, err)
				noSecrets(t, err, c)
				if sim.TokenCalls() > before {
					return
				}
				if d > 5*time.Second {
					t.Fatalf("the token request never reached the simulator")
				}
			}
		})
	}
}

// TokenClient's own timeout ends a hang even when the context has no deadline.
func TestTokenClientTimeout(t *testing.T) {
	sim, srv := startSim(t, vendorsim.Inspera)
	sim.SetTokenFault(&vendorsim.Fault{Hang: true})
	a := adapterFor(vendorsim.Inspera, srv.URL+sim.TokenPath(), "", TokenClient(srv.Client().Transport, 100*time.Millisecond))

	_, err := a.Fetch(context.Background(), credsOf(goodCreds(vendorsim.Inspera)), "")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Fetch = %v, want a timeout", err)
	}
	fetchError(t, err)
	noSecrets(t, err, goodCreds(vendorsim.Inspera))
}

// An unreachable endpoint is reported without the URL: Inspera's carries the
// client_id in its query.
func TestFetchUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			c := goodCreds(kind)
			client := TokenClient(&http.Transport{}, 5*time.Second)
			defer client.CloseIdleConnections()
			_, err := adapterFor(kind, "https://"+addr+"/token", "", client).Fetch(context.Background(), credsOf(c), "")
			fe := fetchError(t, err)
			if fe.Status != 0 || fe.Err == nil {
				t.Errorf("FetchError = %+v, want Status 0 with a cause", *fe)
			}
			noSecrets(t, err, c)
		})
	}
}

func TestProminsightEnvelope(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    broker.Token
		wantErr *broker.FetchError
	}{
		{
			name: "expiresIn as a string",
			body: `{"success": true, "data": {"accessToken": "eyJ.a.b", "tokenType": "Bearer", "expiresIn": "3600"}}`,
			want: broker.Token{AccessToken: "eyJ.a.b", ExpiresIn: time.Hour},
		},
		{
			name:    "success false without a reason",
			body:    `{"success": false}`,
			wantErr: &broker.FetchError{Status: 200, Code: "success false"},
		},
		{
			name:    "success false with a reason",
			body:    `{"success": false, "error": "Account locked", "message": "Call support"}`,
			wantErr: &broker.FetchError{Status: 200, Code: "Account locked", Description: "Call support"},
		},
		{
			name:    "success false with a token",
			body:    `{"success": false, "data": {"accessToken": "eyJ.a.b", "expiresIn": 3600}}`,
			wantErr: &broker.FetchError{Status: 200, Code: "success false"},
		},
		{
			name:    "success without data",
			body:    `{"success": true}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no data.accessToken"},
		},
		{
			name:    "snake case",
			body:    `{"success": true, "data": {"access_token": "eyJ.a.b", "expires_in": 3600}}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no data.accessToken"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, vendorsim.Prominsight)
			sim.SetTokenFault(&vendorsim.Fault{Status: http.StatusOK, Body: tt.body})

			tok, err := simAdapter(vendorsim.Prominsight, "", sim, srv).Fetch(context.Background(), credsOf(goodCreds(vendorsim.Prominsight)), "")
			if tt.wantErr != nil {
				fe := fetchError(t, err)
				if diff := cmp.Diff(*tt.wantErr, *fe); diff != "" {
					t.Errorf("FetchError (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if tok.AccessToken != tt.want.AccessToken || tok.ExpiresIn != tt.want.ExpiresIn {
				t.Errorf("token %q for %v, want %q for %v", tok.AccessToken, tok.ExpiresIn, tt.want.AccessToken, tt.want.ExpiresIn)
			}
		})
	}
}

func TestProdoscoreRefresh(t *testing.T) {
	const refreshLife = 4321 * time.Second
	c := goodCreds(vendorsim.Prodoscore)

	// start returns a simulator and an adapter holding a refresh token that
	// has already been rotated once.
	start := func(t *testing.T) (*vendorsim.Server, *Adapter, broker.Token) {
		sim, srv := startSim(t, vendorsim.Prodoscore)
		sim.SetRefreshLifetime(refreshLife)
		a := simAdapter(vendorsim.Prodoscore, "", sim, srv)
		first, err := a.Fetch(context.Background(), credsOf(c), "")
		if err != nil {
			t.Fatalf("password grant: %v", err)
		}
		if first.RefreshToken == "" || first.RefreshExpiresIn != refreshLife {
			t.Fatalf("password grant gave refresh token %t for %v, want one for %v", first.RefreshToken != "", first.RefreshExpiresIn, refreshLife)
		}
		return sim, a, first
	}

	t.Run("rotates", func(t *testing.T) {
		t.Parallel()
		sim, a, first := start(t)
		second, err := a.Fetch(context.Background(), credsOf(c), first.RefreshToken)
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if second.AccessToken == "" || second.AccessToken == first.AccessToken {
			t.Errorf("refresh did not give a new access token")
		}
		if second.RefreshToken == "" || second.RefreshToken == first.RefreshToken {
			t.Errorf("refresh did not return the rotated refresh token")
		}
		if issued := sim.Tokens(); second.RefreshToken != issued[len(issued)-1] {
			t.Errorf("returned refresh token is not the newest the simulator issued")
		}
		if second.RefreshExpiresIn != refreshLife || second.ExpiresIn != 10*time.Hour {
			t.Errorf("lifetimes %v / %v, want %v / %v", second.ExpiresIn, second.RefreshExpiresIn, 10*time.Hour, refreshLife)
		}
		seen := sim.TokenRequestsSeen()
		if len(seen) != 2 {
			t.Fatalf("simulator saw %d token requests, want 2", len(seen))
		}
		want := url.Values{"grant_type": {"refresh_token"}, "client_id": {c["client_id"]}, "refresh_token": {first.RefreshToken}}
		if diff := cmp.Diff(want, formOf(t, seen[1].Body)); diff != "" {
			t.Errorf("refresh form (-want +got):\n%s", diff)
		}
		singleHeader(t, seen[1].Header, "Content-Type", "application/x-www-form-urlencoded")
	})

	fallbacks := []struct {
		name  string
		spoil func(t *testing.T, sim *vendorsim.Server, a *Adapter, tok broker.Token) string // returns the refresh token to use
	}{
		{"used", func(t *testing.T, sim *vendorsim.Server, a *Adapter, tok broker.Token) string {
			if _, err := a.Fetch(context.Background(), credsOf(c), tok.RefreshToken); err != nil {
				t.Fatalf("first refresh: %v", err)
			}
			return tok.RefreshToken
		}},
		{"revoked", func(_ *testing.T, sim *vendorsim.Server, _ *Adapter, tok broker.Token) string {
			sim.Revoke(tok.RefreshToken)
			return tok.RefreshToken
		}},
		{"expired", func(_ *testing.T, sim *vendorsim.Server, _ *Adapter, tok broker.Token) string {
			later := time.Now().Add(refreshLife + time.Minute)
			sim.SetClock(func() time.Time { return later })
			return tok.RefreshToken
		}},
		{"unknown", func(*testing.T, *vendorsim.Server, *Adapter, broker.Token) string { return "never-issued" }},
	}
	for _, tt := range fallbacks {
		t.Run("falls back when "+tt.name, func(t *testing.T) {
			t.Parallel()
			sim, a, first := start(t)
			rt := tt.spoil(t, sim, a, first)
			before := sim.TokenRequests()

			tok, err := a.Fetch(context.Background(), credsOf(c), rt)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if tok.AccessToken == "" || tok.RefreshToken == "" || tok.RefreshToken == rt {
				t.Errorf("fallback gave access %t, refresh %t (same as refused: %t)", tok.AccessToken != "", tok.RefreshToken != "", tok.RefreshToken == rt)
			}
			got := sim.TokenRequests()[len(before):]
			want := []vendorsim.TokenRequest{{Grant: "refresh_token", Status: 400}, {Grant: "password", Status: 200}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("token requests (-want +got):\n%s", diff)
			}
		})
	}

	// Only a refused refresh token (invalid_grant) falls back: any other
	// failure is the broker's to back off from, not a reason for a second request.
	t.Run("no fallback on a server error", func(t *testing.T) {
		t.Parallel()
		sim, a, first := start(t)
		sim.SetTokenFault(&vendorsim.Fault{Status: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"3"}}, Count: 1})
		before := len(sim.TokenRequests())

		_, err := a.Fetch(context.Background(), credsOf(c), first.RefreshToken)
		fe := fetchError(t, err)
		if fe.Status != 503 || fe.Code != "temporarily_unavailable" || fe.RetryAfter != 3*time.Second {
			t.Errorf("FetchError = %+v, want 503 temporarily_unavailable, RetryAfter 3s", *fe)
		}
		if n := len(sim.TokenRequests()) - before; n != 1 {
			t.Errorf("%d token requests, want 1", n)
		}
	})

	t.Run("wrong password after a refused refresh", func(t *testing.T) {
		t.Parallel()
		sim, a, first := start(t)
		sim.Revoke(first.RefreshToken)
		wrong := with(c, "password", "wrong-"+canary)

		_, err := a.Fetch(context.Background(), credsOf(wrong), first.RefreshToken)
		fe := fetchError(t, err)
		if fe.Status != 401 || fe.Code != "invalid_grant" {
			t.Errorf("FetchError = %+v, want 401 invalid_grant", *fe)
		}
		noSecrets(t, err, c, wrong)
	})
}

// The RFC 6749 adapters (HGEM, Prodoscore; once built on x/oauth2) report
// what the endpoint answered, status and Retry-After included.
func TestOAuth2Faults(t *testing.T) {
	tests := []struct {
		kind  string
		fault vendorsim.Fault
		want  broker.FetchError
	}{
		{vendorsim.HGEM, vendorsim.Fault{Status: 429, Header: http.Header{"Retry-After": {"7"}}},
			broker.FetchError{Status: 429, Code: "temporarily_unavailable", Description: "Too Many Requests", RetryAfter: 7 * time.Second}},
		{vendorsim.HGEM, vendorsim.Fault{Status: 400, Body: `{"error":"invalid_scope","error_description":"scope must include hgem-results-api"}`},
			broker.FetchError{Status: 400, Code: "invalid_scope", Description: "scope must include hgem-results-api"}},
		{vendorsim.HGEM, vendorsim.Fault{Status: 502, ContentType: "text/html", Body: "<html>bad gateway</html>"},
			broker.FetchError{Status: 502}},
		{vendorsim.Prodoscore, vendorsim.Fault{Status: 500},
			broker.FetchError{Status: 500, Code: "server_error", Description: "Internal Server Error"}},
		{vendorsim.HGEM, vendorsim.Fault{Malformed: true},
			broker.FetchError{Status: 200, Malformed: true}},
		{vendorsim.Prodoscore, vendorsim.Fault{Status: 200, Body: `{"token_type":"Bearer","expires_in":300}`},
			broker.FetchError{Status: 200, Malformed: true}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %d", tt.kind, tt.want.Status), func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, tt.kind)
			sim.SetTokenFault(&tt.fault)

			_, err := simAdapter(tt.kind, "", sim, srv).Fetch(context.Background(), credsOf(goodCreds(tt.kind)), "")
			fe := fetchError(t, err)
			got := *fe
			if got.Malformed {
				got.Description = "" // the reader's own words
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("FetchError (-want +got):\n%s", diff)
			}
			noSecrets(t, err, goodCreds(tt.kind))
		})
	}
}

func TestInject(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			c := goodCreds(kind)
			tok := broker.Token{AccessToken: "tok-123"}
			a := adapterFor(kind, "https://127.0.0.1/token", "", nil)
			h := http.Header{}
			h.Add("Authorization", "Basic Y2FsbGVyOnB3")
			h.Add("Authorization", "Bearer caller-token")
			h.Set("Hgem-Api-Key", "caller-key")
			h.Set("X-Keep", "yes")

			setHeaders(a, h, tok, credsOf(c))

			singleHeader(t, h, "Authorization", "Bearer tok-123")
			singleHeader(t, h, "X-Keep", "yes")
			if kind == vendorsim.HGEM {
				singleHeader(t, h, "Hgem-Api-Key", c["api_key"])
			} else {
				// Removing a caller's key headers is the proxy's job (KeyHeaders);
				// Inject leaves what it does not own.
				singleHeader(t, h, "Hgem-Api-Key", "caller-key")
			}
			// Inspera's API key travels to the token endpoint only.
			if v := h.Values("Code"); len(v) != 0 {
				t.Errorf("Inject set Code %q", v)
			}
		})
	}
}

// A fetched and injected token is what each simulator's API accepts, and
// without Inject the same call is refused.
func TestInjectedTokenCallsTheAPI(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, kind)
			c := credsOf(goodCreds(kind))
			a := simAdapter(kind, "", sim, srv)
			tok, err := a.Fetch(context.Background(), c, "")
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}

			call := func(inject bool) int {
				req, err := http.NewRequest(http.MethodGet, srv.URL+apiPath[kind], nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer stale")
				if inject {
					setHeaders(a, req.Header, tok, c)
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode
			}
			if got := call(true); got != http.StatusOK {
				t.Errorf("API call with the injected token: %d, want 200", got)
			}
			if got := call(false); got != http.StatusUnauthorized {
				t.Errorf("API call without Inject: %d, want 401", got)
			}
		})
	}
}

func TestKeyHeaders(t *testing.T) {
	want := map[string][]string{
		vendorsim.Prominsight: nil,
		vendorsim.Inspera:     {"Code"},
		vendorsim.HGEM:        {"Hgem-Api-Key"},
		vendorsim.Prodoscore:  nil,
	}
	for _, kind := range kinds {
		got := adapterFor(kind, "", "", nil).KeyHeaders()
		if !slices.Equal(got, want[kind]) {
			t.Errorf("%s KeyHeaders = %q, want %q", kind, got, want[kind])
		}
		for _, h := range got {
			// Callers index http.Header maps with these names.
			if h != http.CanonicalHeaderKey(h) {
				t.Errorf("%s KeyHeaders: %q is not in canonical form", kind, h)
			}
		}
	}
}

// recorder is a server that should never be reached; it notes what reached it.
type recorder struct {
	mu      sync.Mutex
	hits    int
	headers []http.Header
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	io.Copy(io.Discard, req.Body)
	r.mu.Lock()
	r.hits++
	r.headers = append(r.headers, req.Header.Clone())
	r.mu.Unlock()
	http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
}

func (r *recorder) seen() (int, []http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits, slices.Clone(r.headers)
}

// A token endpoint that redirects elsewhere gets its redirect as the answer:
// following it would resend the client secret (body) and the vendor's key
// headers to another host.
func TestTokenClientDoesNotFollowRedirects(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			elsewhere := &recorder{}
			other := httptest.NewTLSServer(elsewhere)
			t.Cleanup(other.Close)
			front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				http.Redirect(w, r, other.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
			}))
			t.Cleanup(front.Close)
			c := goodCreds(kind)
			tokenURL := front.URL + "/token"

			a := adapterFor(kind, tokenURL, "", TokenClient(front.Client().Transport, 5*time.Second))
			_, err := a.Fetch(context.Background(), credsOf(c), "")
			fe := fetchError(t, err)
			// Not a refusal: an answer without a usable token, naming
			// where it pointed by scheme and host alone.
			if want := "HTTP 307 without a usable token (a redirect to " + other.URL + ": token_url must be the token endpoint itself; " +
				"a token request never follows a redirect, which would carry the credentials elsewhere)"; fe.Status != http.StatusTemporaryRedirect || !fe.Malformed || fe.Error() != want {
				t.Errorf("FetchError = %+v (%s), want a malformed 307: %s", *fe, fe, want)
			}
			if n, _ := elsewhere.seen(); n != 0 {
				t.Fatalf("the redirect was followed: the other host got %d requests", n)
			}
			noSecrets(t, err, c)

			// The same fetch with a client that follows redirects reaches the
			// other host, vendor key headers and all: the check above can fail.
			follow := &http.Client{Transport: front.Client().Transport, Timeout: 5 * time.Second}
			adapterFor(kind, tokenURL, "", follow).Fetch(context.Background(), credsOf(c), "")
			n, hs := elsewhere.seen()
			if n == 0 {
				t.Fatalf("control: a client that follows redirects did not reach the other host")
			}
			switch kind {
			case vendorsim.Inspera:
				if hs[0].Get("Code") != c["api_key"] {
					t.Errorf("control: Code header did not follow the redirect")
				}
			case vendorsim.HGEM:
				if hs[0].Get("Hgem-Api-Key") != c["api_key"] {
					t.Errorf("control: hgem-api-key header did not follow the redirect")
				}
			}
		})
	}
}

// A redirect's Location is resolved against the token URL (a relative one
// names the token URL's own host) and shown by scheme and host only; a
// redirect without a Location says so.
func TestRedirectNamesHostOnly(t *testing.T) {
	for loc, want := range map[string]string{
		"/token/": "a redirect to https://auth.example:8443:",
		"https://u:p@other.example/t?client_id=x": "a redirect to https://other.example:",
		"": "a redirect without a Location:",
	} {
		h := http.Header{}
		if loc != "" {
			h.Set("Location", loc)
		}
		req, _ := http.NewRequest("POST", "https://auth.example:8443/token?client_id=x", nil)
		r := &http.Response{StatusCode: http.StatusMovedPermanently, Header: h, Request: req}
		_, err := readAnswer(insperaAnswer, r, nil, nil)
		fe := fetchError(t, err)
		if !fe.Malformed || !strings.Contains(fe.Error(), want) || strings.Contains(fe.Error(), "client_id") || strings.Contains(fe.Error(), "u:p") {
			t.Errorf("Location %q: %v, want it to hold %q and no path, query or user info", loc, fe, want)
		}
	}
}

func TestTokenClient(t *testing.T) {
	tr := &http.Transport{}
	c := TokenClient(tr, 3*time.Second)
	if c.Transport != tr || c.Timeout != 3*time.Second {
		t.Errorf("TokenClient = %+v, want the given transport and timeout", c)
	}
	if c.CheckRedirect == nil || c.CheckRedirect(&http.Request{}, nil) != http.ErrUseLastResponse {
		t.Errorf("CheckRedirect does not stop at the first answer")
	}
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func get(tr *http.Transport, u string) error {
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func isUnknownAuthority(err error) bool {
	var ua x509.UnknownAuthorityError
	return errors.As(err, &ua)
}

func TestTransport(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	// A vendor behind a private CA, as `tokenproxy dev` serves the simulators.
	private, err := vendorsim.ListenTLS(ok)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { private.Close() })
	// A server whose certificate nobody here was told to trust.
	stranger := httptest.NewUnstartedServer(ok)
	stranger.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	stranger.StartTLS()
	t.Cleanup(stranger.Close)

	t.Run("trusts the CA in the file", func(t *testing.T) {
		tr, err := Transport(writeFile(t, "ca.pem", private.CAPEM()))
		if err != nil {
			t.Fatalf("Transport: %v", err)
		}
		defer tr.CloseIdleConnections()
		if err := get(tr, private.URL()); err != nil {
			t.Errorf("GET from the server of the trusted CA: %v", err)
		}
		if err := get(tr, stranger.URL); !isUnknownAuthority(err) {
			t.Errorf("GET from an untrusted server: %v, want an unknown authority error", err)
		}
		if tr.TLSClientConfig.MinVersion < tls.VersionTLS12 {
			t.Errorf("MinVersion %x, want at least TLS 1.2", tr.TLSClientConfig.MinVersion)
		}
		if tr.TLSHandshakeTimeout <= 0 || tr.DialContext == nil {
			t.Errorf("transport without bounded dial and handshake")
		}
	})

	t.Run("trusts the CA among other text", func(t *testing.T) {
		b := append([]byte("# the dev CA\n"), private.CAPEM()...)
		tr, err := Transport(writeFile(t, "bundle.pem", b))
		if err != nil {
			t.Fatalf("Transport: %v", err)
		}
		defer tr.CloseIdleConnections()
		if err := get(tr, private.URL()); err != nil {
			t.Errorf("GET: %v", err)
		}
	})

	t.Run("no ca_file rejects the private CA", func(t *testing.T) {
		tr, err := Transport("")
		if err != nil {
			t.Fatalf("Transport: %v", err)
		}
		defer tr.CloseIdleConnections()
		if err := get(tr, private.URL()); !isUnknownAuthority(err) {
			t.Errorf("GET: %v, want an unknown authority error", err)
		}
	})

	t.Run("file without PEM", func(t *testing.T) {
		der := stranger.Certificate().Raw // a certificate, but DER, not PEM
		for name, b := range map[string][]byte{"empty.pem": nil, "text.pem": []byte("not a certificate\n"), "cert.der": der} {
			p := writeFile(t, name, b)
			tr, err := Transport(p)
			if err == nil {
				tr.CloseIdleConnections()
				t.Errorf("%s: Transport succeeded, want an error", name)
				continue
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("%s: error %q does not name the file", name, err)
			}
		}
	})

	t.Run("PEM that is not a certificate", func(t *testing.T) {
		p := writeFile(t, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")}))
		if _, err := Transport(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("Transport = %v, want an error naming %s", err, p)
		}
	})

	t.Run("missing file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "absent.pem")
		_, err := Transport(p)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "ca_file") {
			t.Errorf("Transport = %v, want a ca_file error that is os.ErrNotExist", err)
		}
	})
}

// The adapters work over Transport, not only over httptest's client.
func TestFetchOverTransport(t *testing.T) {
	sim, err := vendorsim.New(vendorsim.HGEM, goodCreds(vendorsim.HGEM))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := vendorsim.ListenTLS(sim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	t.Cleanup(sim.Close)
	tr, err := Transport(writeFile(t, "ca.pem", srv.CAPEM()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)

	a := adapterFor(vendorsim.HGEM, srv.URL()+sim.TokenPath(), "", TokenClient(tr, 5*time.Second))
	tok, err := a.Fetch(context.Background(), credsOf(goodCreds(vendorsim.HGEM)), "")
	if err != nil || tok.AccessToken == "" {
		t.Fatalf("Fetch = %v, %v", tok, err)
	}
}

func TestNew(t *testing.T) {
	client := TokenClient(&http.Transport{}, time.Second)
	tests := []struct {
		u         config.Upstream
		scope     string
		keys      []string
		refreshes bool
	}{
		{config.Upstream{Type: "prominsight", TokenURL: "https://p/t", Scope: "s"}, "s", nil, false},
		{config.Upstream{Type: "prominsight", TokenURL: "https://p/t"}, "session.read", nil, false},
		{config.Upstream{Type: "inspera", TokenURL: "https://i/t"}, "", []string{"Code"}, false},
		{config.Upstream{Type: "hgem", TokenURL: "https://h/t", Scope: " hgem-results-api  visits/standard.read "}, "hgem-results-api visits/standard.read", []string{"Hgem-Api-Key"}, false},
		{config.Upstream{Type: "prodoscore", TokenURL: "https://k/t"}, "", nil, true},
		{config.Upstream{Type: "oauth2", TokenURL: "https://o/t"}, "", nil, true},
		{config.Upstream{Type: "static", Static: &vendor.Static{Headers: map[string]string{"X-Api-Key": "{credential k}"}}}, "", []string{"X-Api-Key"}, false},
	}
	for _, tt := range tests {
		got, err := New(tt.u, client)
		if err != nil {
			t.Errorf("New(%s): %v", tt.u.Type, err)
			continue
		}
		if got.tokenURL != tt.u.TokenURL || got.client != client || got.scope != tt.scope ||
			!slices.Equal(got.KeyHeaders(), tt.keys) || (got.refresh != nil) != tt.refreshes {
			t.Errorf("New(%s) = %+v", tt.u.Type, got)
		}
	}
	for _, u := range []config.Upstream{{Type: ""}, {Type: "okta"}, {Type: "Inspera"}, {Type: "hgem "}, {Type: "custom"}, {Type: "static"}} {
		a, err := New(u, client)
		if err == nil || a != nil {
			t.Errorf("New(%q) = %v, %v, want an error", u.Type, a, err)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", u.Type)) {
			t.Errorf("New(%q): error %q does not name the type", u.Type, err)
		}
	}
}

func resp(status int, h http.Header) *http.Response {
	if h == nil {
		h = http.Header{}
	}
	return &http.Response{StatusCode: status, Header: h}
}

// maxLifetime is the longest lifetime a time.Duration holds in whole seconds.
const maxLifetime = math.MaxInt64 / time.Second * time.Second

func TestParseInspera(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		header  http.Header
		body    string
		want    broker.Token
		wantErr *broker.FetchError
	}{
		{name: "documented", status: 200, body: `{"access_token": "abc", "expires_in": 3600}`, want: broker.Token{AccessToken: "abc", ExpiresIn: time.Hour}},
		{name: "string lifetime", status: 200, body: `{"access_token": "abc", "expires_in": "60"}`, want: broker.Token{AccessToken: "abc", ExpiresIn: time.Minute}},
		{name: "fractional lifetime", status: 200, body: `{"access_token": "abc", "expires_in": 59.9}`, want: broker.Token{AccessToken: "abc", ExpiresIn: 59 * time.Second}},
		{name: "no lifetime", status: 200, body: `{"access_token": "abc"}`, want: broker.Token{AccessToken: "abc"}},
		{name: "null lifetime", status: 200, body: `{"access_token": "abc", "expires_in": null}`, want: broker.Token{AccessToken: "abc"}},
		{name: "negative lifetime", status: 200, body: `{"access_token": "abc", "expires_in": -3600}`, want: broker.Token{AccessToken: "abc"}},
		{name: "lifetime beyond time.Duration", status: 200, body: `{"access_token": "abc", "expires_in": 1e12}`, want: broker.Token{AccessToken: "abc", ExpiresIn: maxLifetime}},
		{name: "201", status: 201, body: `{"access_token": "abc", "expires_in": 1}`, want: broker.Token{AccessToken: "abc", ExpiresIn: time.Second}},
		{name: "lifetime not a number", status: 200, body: `{"access_token": "abc", "expires_in": "soon"}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"}},
		{name: "empty token", status: 200, body: `{"access_token": "", "expires_in": 3600}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"}},
		{name: "empty body", status: 200, body: ``,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"}},
		{name: "409", status: 409, body: `{"error": "Multiple tokens for user", "description": "Please contact inspera support"}`,
			wantErr: &broker.FetchError{Status: 409, Code: "Multiple tokens for user", Description: "Please contact inspera support"}},
		{name: "429 with Retry-After", status: 429, header: http.Header{"Retry-After": {"7"}}, body: `{"error": "temporarily_unavailable"}`,
			wantErr: &broker.FetchError{Status: 429, Code: "temporarily_unavailable", RetryAfter: 7 * time.Second}},
		{name: "OAuth2Exception message", status: 400, body: `{"error": {"message": "grant_type missing"}}`,
			wantErr: &broker.FetchError{Status: 400, Code: "grant_type missing"}},
		{name: "error of another type", status: 400, body: `{"error": 42, "description": ["x"]}`,
			wantErr: &broker.FetchError{Status: 400}},
		{name: "error with a token", status: 401, body: `{"access_token": "abc", "error": "invalid_grant"}`,
			wantErr: &broker.FetchError{Status: 401, Code: "invalid_grant"}},
		{name: "redirect", status: 307, body: ``, wantErr: &broker.FetchError{Status: 307, Malformed: true,
			Description: "a redirect without a Location: token_url must be the token endpoint itself; a token request never follows a redirect, which would carry the credentials elsewhere"}},
		{name: "long error", status: 500, body: `{"error": "` + strings.Repeat("x", 300) + `"}`,
			wantErr: &broker.FetchError{Status: 500, Code: strings.Repeat("x", 200) + "..."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := readAnswer(insperaAnswer, resp(tt.status, tt.header), []byte(tt.body), nil)
			checkParse(t, tok, err, tt.want, tt.wantErr)
		})
	}
}

func TestParseProminsight(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		want    broker.Token
		wantErr *broker.FetchError
	}{
		{name: "documented", status: 200, body: `{"success": true, "data": {"accessToken": "eyJ", "tokenType": "Bearer", "expiresIn": 3600}}`,
			want: broker.Token{AccessToken: "eyJ", ExpiresIn: time.Hour}},
		{name: "string lifetime", status: 200, body: `{"success": true, "data": {"accessToken": "eyJ", "expiresIn": "3600"}}`,
			want: broker.Token{AccessToken: "eyJ", ExpiresIn: time.Hour}},
		{name: "negative lifetime", status: 200, body: `{"success": true, "data": {"accessToken": "eyJ", "expiresIn": "-1"}}`,
			want: broker.Token{AccessToken: "eyJ"}},
		{name: "wrong credentials", status: 401, body: `{"success": false, "error": "Invalid credentials"}`,
			wantErr: &broker.FetchError{Status: 401, Code: "Invalid credentials"}},
		{name: "refusal in a 200", status: 200, body: `{"success": false}`,
			wantErr: &broker.FetchError{Status: 200, Code: "success false"}},
		{name: "success not a bool", status: 200, body: `{"success": "true", "data": {"accessToken": "eyJ"}}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "answer is not the JSON envelope"}},
		{name: "not JSON", status: 200, body: `<html>`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "answer is not the JSON envelope"}},
		{name: "no token", status: 200, body: `{"success": true, "data": {"expiresIn": 3600}}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no data.accessToken"}},
		{name: "non-JSON error", status: 503, body: `Service Unavailable`,
			wantErr: &broker.FetchError{Status: 503, Description: "Service Unavailable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := readAnswer(prominsightAnswer, resp(tt.status, nil), []byte(tt.body), nil)
			checkParse(t, tok, err, tt.want, tt.wantErr)
		})
	}
}

func checkParse(t *testing.T, tok broker.Token, err error, want broker.Token, wantErr *broker.FetchError) {
	t.Helper()
	if wantErr != nil {
		fe := fetchError(t, err)
		if diff := cmp.Diff(*wantErr, *fe); diff != "" {
			t.Errorf("FetchError (-want +got):\n%s", diff)
		}
		return
	}
	if err != nil {
		t.Fatalf("error %v, want %v", err, want)
	}
	if tok.AccessToken != want.AccessToken || tok.ExpiresIn != want.ExpiresIn {
		t.Errorf("token %q for %v, want %q for %v", tok.AccessToken, tok.ExpiresIn, want.AccessToken, want.ExpiresIn)
	}
}

func TestVendorErrorHTTPDate(t *testing.T) {
	when := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	_, err := readAnswer(insperaAnswer, resp(503, http.Header{"Retry-After": {when}}), nil, nil)
	fe := fetchError(t, err)
	if fe.RetryAfter <= 0 || fe.RetryAfter > 90*time.Second {
		t.Errorf("RetryAfter = %v, want (0, 90s]", fe.RetryAfter)
	}
}

// The RFC 6749 answers HGEM and Prodoscore give, read as x/oauth2 read
// them before (TestFromOAuth2's cases, now as the JSON that carries them).
func TestReadRFC6749(t *testing.T) {
	rateLimited := http.Header{"Retry-After": {"5"}}
	tests := []struct {
		name    string
		status  int
		header  http.Header
		body    string
		want    broker.Token
		wantErr *broker.FetchError
	}{
		{name: "lifetime", status: 200, body: `{"access_token": "a", "expires_in": 3600}`, want: broker.Token{AccessToken: "a", ExpiresIn: time.Hour}},
		{name: "no lifetime", status: 200, body: `{"access_token": "a"}`, want: broker.Token{AccessToken: "a"}},
		{name: "negative lifetime", status: 200, body: `{"access_token": "a", "expires_in": -30}`, want: broker.Token{AccessToken: "a"}},
		{
			name: "refresh, number", status: 200,
			body: `{"access_token": "a", "refresh_token": "r", "expires_in": 60, "refresh_expires_in": 600}`,
			want: broker.Token{AccessToken: "a", RefreshToken: "r", ExpiresIn: time.Minute, RefreshExpiresIn: 10 * time.Minute},
		},
		{
			name: "refresh, string", status: 200,
			body: `{"access_token": "a", "refresh_token": "r", "expires_in": 60, "refresh_expires_in": "600"}`,
			want: broker.Token{AccessToken: "a", RefreshToken: "r", ExpiresIn: time.Minute, RefreshExpiresIn: 10 * time.Minute},
		},
		{
			name: "refused", status: 429, header: rateLimited, body: `{"error": "slow_down", "error_description": "later"}`,
			wantErr: &broker.FetchError{Status: 429, Code: "slow_down", Description: "later", RetryAfter: 5 * time.Second},
		},
		{
			name: "refused in a 200", status: 200, body: `{"error": "invalid_grant"}`,
			wantErr: &broker.FetchError{Status: 200, Code: "invalid_grant"},
		},
		{
			name: "unreadable 200", status: 200, body: `{"token_type": "Bearer"}`,
			wantErr: &broker.FetchError{Status: 200, Malformed: true, Description: "no access_token in the answer"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := readAnswer(prodoscoreAnswer, resp(tt.status, tt.header), []byte(tt.body), nil)
			if tt.wantErr != nil {
				fe := fetchError(t, err)
				if diff := cmp.Diff(*tt.wantErr, *fe); diff != "" {
					t.Errorf("FetchError (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if tok.AccessToken != tt.want.AccessToken || tok.RefreshToken != tt.want.RefreshToken ||
				tok.ExpiresIn != tt.want.ExpiresIn || tok.RefreshExpiresIn != tt.want.RefreshExpiresIn {
				t.Errorf("token %q/%q for %v/%v, want %q/%q for %v/%v",
					tok.AccessToken, tok.RefreshToken, tok.ExpiresIn, tok.RefreshExpiresIn,
					tt.want.AccessToken, tt.want.RefreshToken, tt.want.ExpiresIn, tt.want.RefreshExpiresIn)
			}
		})
	}

	t.Run("transport failure", func(t *testing.T) {
		cause := errors.New("connection reset")
		client := &http.Client{Transport: failing{cause}}
		a := &Adapter{tokenURL: "https://auth.example/token?client_id=" + canary, client: client, answer: prodoscoreAnswer}
		_, err := a.ask(context.Background(), &request{method: http.MethodPost, body: vendor.BodyForm}, vendor.Values{})
		fe := fetchError(t, err)
		if fe.Status != 0 || !errors.Is(err, cause) {
			t.Errorf("FetchError = %+v, want Status 0 wrapping the cause", *fe)
		}
		noSecrets(t, err)
	})
}

// failing is a transport that never gets an answer.
type failing struct{ err error }

func (f failing) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }

// A negative lifetime from a live endpoint comes out as none, for every adapter.
func TestNegativeLifetimeFromEndpoint(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			sim, srv := startSim(t, kind)
			body := `{"access_token": "tok", "expires_in": -60, "token_type": "Bearer"}`
			if kind == vendorsim.Prominsight {
				body = `{"success": true, "data": {"accessToken": "tok", "tokenType": "Bearer", "expiresIn": -60}}`
			}
			sim.SetTokenFault(&vendorsim.Fault{Status: 200, Body: body})
			tok, err := simAdapter(kind, "", sim, srv).Fetch(context.Background(), credsOf(goodCreds(kind)), "")
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if tok.ExpiresIn != 0 {
				t.Errorf("ExpiresIn = %v, want 0 for a negative lifetime", tok.ExpiresIn)
			}
		})
	}
}

// HGEM's adapter wraps the client's transport; a client that leaves it nil
// means http.DefaultTransport, as for every other http.Client user.
func TestHGEMNilTransport(t *testing.T) {
	a := adapterFor(vendorsim.HGEM, "http://127.0.0.1:1/connect/token", "", &http.Client{Timeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no request needs to leave: only the path to the transport is under test
	_, err := a.Fetch(ctx, credsOf(goodCreds(vendorsim.HGEM)), "")
	if err == nil {
		t.Fatal("Fetch with a cancelled context succeeded")
	}
}
