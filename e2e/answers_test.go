package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// Token answers as vendors really send them (shared/VENDORS.md, "Token
// answers as they really come"): the simulators bend the form of their
// token answers one kind at a time, and the real binary must read them all.

var allKinds = []string{"prominsight", "inspera", "hgem", "prodoscore"}

// tokenExpiry reads an upstream's token_expires_at from /status.
func tokenExpiry(t *testing.T, p *proc, name string) time.Time {
	t.Helper()
	r := get(t, p.admin+"/status")
	var s struct {
		Upstreams map[string]struct {
			TokenExpiresAt string `json:"token_expires_at"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal(r.body, &s); err != nil {
		t.Fatalf("/status: %v: %s", err, r.body)
	}
	at, err := time.Parse(time.RFC3339, s.Upstreams[name].TokenExpiresAt)
	if err != nil {
		t.Fatalf("%s: token_expires_at: %v", name, err)
	}
	return at
}

// Token answers labelled anything but JSON, with a byte-order mark, with a
// lifetime in any numeric form, or with the token type in any case are
// read, and the lifetime is the vendor's (an hour), not the 5-minute default.
func TestAnswersAsTheyReallyCome(t *testing.T) {
	rows := []struct {
		name string
		form vendorsim.Form
	}{
		{"text/plain, 3.6e3", vendorsim.Form{ContentType: "text/plain", Lifetime: vendorsim.LifetimeExponent}},
		{"no label, BOM, string, BEARER", vendorsim.Form{ContentType: vendorsim.NoContentType, BOM: true, Lifetime: vendorsim.LifetimeString, TokenType: "BEARER"}},
		{"text/html, 3599.5, bearer", vendorsim.Form{ContentType: "text/html; charset=utf-8", Lifetime: vendorsim.LifetimeFraction, TokenType: "bearer"}},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			for _, v := range e.vendors {
				v.sim.SetTokenLifetime(time.Hour)
				v.sim.SetTokenForm(row.form)
			}
			start := time.Now()
			p := e.start(e.allUpstreams())
			for _, kind := range allKinds {
				if r := call(t, p, kind); r.StatusCode != 200 {
					t.Errorf("%s: %d %s", kind, r.StatusCode, r.body)
					continue
				}
				// /status has whole seconds; the token was asked for after start.
				if at := tokenExpiry(t, p, kind); at.Before(start.Add(59*time.Minute)) || at.After(time.Now().Add(time.Hour)) {
					t.Errorf("%s: token expires at %s, want an hour after %s", kind, at, start)
				}
			}
		})
	}
}

// A refusal is read whatever its label: the 502 names the vendor's error.
func TestAnswersRefusalNamesTheCode(t *testing.T) {
	spoil := map[string]struct{ key, code string }{
		"prominsight": {"client_secret", "Invalid credentials"},
		"inspera":     {"api_key", "invalid_grant"},
		"hgem":        {"client_secret", "invalid_client"},
		"prodoscore":  {"password", "invalid_grant"},
	}
	for name, form := range map[string]vendorsim.Form{
		"text/plain":    {ContentType: "text/plain"},
		"no label, BOM": {ContentType: vendorsim.NoContentType, BOM: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			for kind, v := range e.vendors {
				// The vendor now wants another secret than the one tokenproxy has.
				creds := map[string]string{}
				for k, val := range v.creds {
					creds[k] = val
				}
				creds[spoil[kind].key] = canary(kind, "other")
				v.sim.SetCredentials(creds)
				v.sim.SetTokenForm(form)
			}
			p := e.start(e.allUpstreams())
			for _, kind := range allKinds {
				m := wantError(t, call(t, p, kind), 502, "token_endpoint_error", kind)
				if msg := m["message"].(string); !strings.Contains(msg, spoil[kind].code) {
					t.Errorf("%s: message %q does not name %q", kind, msg, spoil[kind].code)
				}
			}
		})
	}
}

// refreshPresentations counts the Prodoscore token requests that carried rt.
func refreshPresentations(sim *vendorsim.Server, rt string) int {
	n := 0
	for _, r := range sim.TokenRequestsSeen() {
		if f, _ := url.ParseQuery(string(r.Body)); f.Get("refresh_token") == rt {
			n++
		}
	}
	return n
}

// heldRefreshToken is the newest refresh token the simulator issued: the one
// tokenproxy holds once its last fetch succeeded.
func heldRefreshToken(t *testing.T, sim *vendorsim.Server) string {
	t.Helper()
	issued := sim.Tokens()
	for i := len(issued) - 1; i >= 0; i-- {
		if strings.HasPrefix(issued[i], "pds_r_") {
			return issued[i]
		}
	}
	t.Fatal("the simulator issued no refresh token")
	return ""
}

// grantsSince lists the Prodoscore token requests after the first n, once
// answered, as "grant status".
func grantsSince(t testing.TB, sim *vendorsim.Server, n int) []string {
	var out []string
	for _, r := range answeredTokenRequests(t, sim, n) {
		out = append(out, fmt.Sprintf("%s %d", r.Grant, r.Status))
	}
	return out
}

// A refresh grant refused in any shape falls back to the password grant in
// the same fetch: the caller whose 401 made tokenproxy re-mint gets its 200,
// and the refused refresh token is never presented again, also across the
// next refresh.
func TestAnswersProdoscoreRefreshRefused(t *testing.T) {
	rows := []struct {
		name   string
		refuse func(sim *vendorsim.Server) // makes the next refresh grant fail
		status int                         // what the simulator answers it
	}{
		{"invalid_grant labelled text/plain", func(sim *vendorsim.Server) {
			sim.SetTokenForm(vendorsim.Form{ContentType: "text/plain"})
			sim.RevokeAll() // the refresh token is dead: Keycloak's own 400 invalid_grant
		}, 400},
		{"401 that is not JSON", func(sim *vendorsim.Server) {
			sim.SetTokenFault(&vendorsim.Fault{Grant: "refresh_token", Status: 401, ContentType: "text/html", Body: "<html><body>401 Unauthorized</body></html>", Count: 1})
			sim.RevokeAll()
		}, 401},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			sim := e.vendors["prodoscore"].sim
			p := e.start(configOf(config.Upstreams{"prodoscore": e.upstream("prodoscore")}))
			p.ready(t)
			rt, before := heldRefreshToken(t, sim), len(sim.TokenRequests())
			// Tokens from now on live 2s, so that a background refresh follows soon.
			sim.SetTokenLifetime(2 * time.Second)
			row.refuse(sim)

			if r := call(t, p, "prodoscore"); r.StatusCode != 200 {
				t.Fatalf("caller after the refusal: %d %s", r.StatusCode, r.body)
			}
			want := []string{fmt.Sprintf("refresh_token %d", row.status), "password 200"}
			if got := grantsSince(t, sim, before); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("token requests %v, want %v", got, want)
			}
			// The next refresh uses the refresh token the password grant gave.
			waitFor(t, 10*time.Second, "a refresh after the fallback", func() bool {
				got := grantsSince(t, sim, before)
				return len(got) > 2 && got[len(got)-1] == "refresh_token 200"
			})
			if n := refreshPresentations(sim, rt); n != 1 {
				t.Errorf("the refused refresh token was presented %d times, want once", n)
			}
		})
	}
}

// When the password grant after a refused refresh fails too, the fetch fails,
// but the refused refresh token is dropped all the same: the retry after the
// backoff goes straight to the password grant.
func TestAnswersProdoscoreRefreshRefusedThenPasswordFails(t *testing.T) {
	e := newEnv(t)
	sim := e.vendors["prodoscore"].sim
	p := e.start(configOf(config.Upstreams{"prodoscore": e.upstream("prodoscore")}))
	p.ready(t)
	rt, before := heldRefreshToken(t, sim), len(sim.TokenRequests())
	sim.SetTokenForm(vendorsim.Form{ContentType: "text/plain"})
	sim.RevokeAll()
	sim.SetTokenFault(&vendorsim.Fault{Grant: "password", Status: 503, Count: 1})

	failed := time.Now()
	wantError(t, call(t, p, "prodoscore"), 502, "token_endpoint_error", "prodoscore")
	p.ready(t)
	if r := call(t, p, "prodoscore"); r.StatusCode != 200 {
		t.Fatalf("caller after recovery: %d %s", r.StatusCode, r.body)
	}
	t.Logf("served again %s after the failed fetch", time.Since(failed).Round(time.Millisecond))
	want := []string{"refresh_token 400", "password 503", "password 200"}
	if got := grantsSince(t, sim, before); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("token requests %v, want %v", got, want)
	}
	if n := refreshPresentations(sim, rt); n != 1 {
		t.Errorf("the refused refresh token was presented %d times, want once", n)
	}
}
