package admin

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/broker"
)

// TestStatusJSON: the contract's fields and the ones beside them, with
// next_attempt_at "" (never null) only when nothing is scheduled.
func TestStatusJSON(t *testing.T) {
	f := newFixture(t, loadConfig(t, t.TempDir(), hgemOnly))
	f.ups = append(f.ups, Upstream{Type: "inspera", Credentials: "env:INSPERA", State: broker.State{Name: "inspera", State: "pending", Reason: "waiting for credentials"}})
	f.info.LastReloadAt, f.info.LastReloadError = time.Now(), "upstreams.hgem.type: \"hgme\" is not one of ..."
	r := f.do(t, "GET", "/status", nil)
	var raw struct {
		Upstreams map[string]map[string]json.RawMessage `json:"upstreams"`
	}
	var doc struct {
		Version   string                    `json:"version"`
		Upstreams map[string]upstreamStatus `json:"upstreams"`
		Vault     *vaultStatus              `json:"vault"`
		Config    *configStatus             `json:"config"`
	}
	if r.status != 200 || json.Unmarshal([]byte(r.body), &raw) != nil || json.Unmarshal([]byte(r.body), &doc) != nil {
		t.Fatalf("/status: %d %s", r.status, r.body)
	}
	for name, u := range raw.Upstreams {
		for _, k := range []string{"type", "state", "token_expires_at", "last_fetch_at", "last_fetch_result", "last_error",
			"credential_version", "next_attempt_at", "credentials", "shared", "minted_by", "base_host", "token_host", "requests", "events"} {
			if _, ok := u[k]; !ok {
				t.Errorf("%s has no %s", name, k)
			}
		}
		if string(u["next_attempt_at"]) == "null" {
			t.Errorf("%s: next_attempt_at is null", name)
		}
	}
	hgem, pi, inspera := doc.Upstreams["hgem"], doc.Upstreams["prominsight"], doc.Upstreams["inspera"]
	if at, err := time.Parse(time.RFC3339, hgem.NextAttemptAt); err != nil || time.Until(at) < 39*time.Minute {
		t.Errorf("hgem next_attempt_at %q, want the refresh in 40 minutes", hgem.NextAttemptAt)
	}
	if at, err := time.Parse(time.RFC3339, pi.NextAttemptAt); err != nil || time.Until(at) > 30*time.Second {
		t.Errorf("prominsight next_attempt_at %q, want the backoff's end", pi.NextAttemptAt)
	}
	if inspera.NextAttemptAt != "" {
		t.Errorf("inspera next_attempt_at %q with nothing scheduled, want \"\"", inspera.NextAttemptAt)
	}
	if hgem.Credentials != "vault:secret/tokenproxy/hgem" || hgem.BaseHost != "results-api.hgem.com" || hgem.TokenHost != "results-api.hgem.com" {
		t.Errorf("hgem: %+v", hgem)
	}
	if hgem.Requests.Total != 8 || hgem.Requests.ByCode["200"] != 7 || hgem.Requests.ByCode["404"] != 1 || len(hgem.Requests.ProxyErrors) != 0 {
		t.Errorf("hgem requests %+v", hgem.Requests)
	}
	if pi.Requests.Total != 2 || len(pi.Requests.ByCode) != 1 || pi.Requests.ProxyErrors["token_endpoint_error"] != 2 {
		t.Errorf("prominsight requests %+v", pi.Requests)
	}
	if inspera.Requests.Total != 0 || inspera.Requests.ByCode == nil || inspera.Events == nil {
		t.Errorf("inspera: requests %+v events %v; want zero and empty, not null", inspera.Requests, inspera.Events)
	}
	// The last hour's events only: the token of three hours ago is not one.
	if len(hgem.Events) != 2 || hgem.Events[0].Kind != "minted" || hgem.Events[1].Kind != "refreshed" || hgem.Events[1].Source != "vendor" || hgem.Events[1].Until == nil {
		t.Errorf("hgem events %+v", hgem.Events)
	}
	if len(pi.Events) != 1 || pi.Events[0].Reason != "refused" || pi.Events[0].Until == nil {
		t.Errorf("prominsight events %+v", pi.Events)
	}
	v := doc.Vault
	if v == nil || !v.LoggedIn || v.Address != "https://REDACTED@vault.internal:8200" || v.TokenTTLSeconds == nil || *v.TokenTTLSeconds < 3590 || v.LastRenewalAt == nil {
		t.Errorf("vault %+v", v)
	}
	if c := doc.Config; c == nil || c.Path != "/etc/tokenproxy/tokenproxy.yaml" || c.LastReloadResult != "error" || !strings.Contains(c.LastReloadError, "hgme") || c.LoadedAt == nil {
		t.Errorf("config %+v", c)
	}
	if strings.Contains(r.body, "CANARY") {
		t.Errorf("/status shows a planted value:\n%s", r.body)
	}

	f.vault = nil
	if r := f.do(t, "GET", "/status", nil); !strings.Contains(r.body, `"vault": null`) {
		t.Errorf("without Vault, vault should be null:\n%.300s", r.body)
	}
}

// TestStatusPage: the verdict first, the upstream in trouble before the
// others, each error once, and a timeline per upstream.
func TestStatusPage(t *testing.T) {
	f := newFixture(t, loadConfig(t, t.TempDir(), hgemOnly))
	r := f.do(t, "GET", "/status", nil, "Accept", "text/html")
	page := r.body
	if !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(page, `<meta http-equiv="refresh" content="5">`) {
		t.Fatalf("status page: %q, no refresh:\n%.500s", r.header.Get("Content-Type"), page)
	}
	verdict := strings.Index(page, "1 of 2 upstreams ready")
	pi, hgem := strings.Index(page, `id="up-prominsight"`), strings.Index(page, `id="up-hgem"`)
	if verdict < 0 || pi < verdict || hgem < pi {
		t.Errorf("want the verdict, then prominsight (not ready), then hgem: at %d, %d, %d", verdict, pi, hgem)
	}
	if n := strings.Count(page, "token endpoint refused the credentials"); n != 1 {
		t.Errorf("the refusal appears %d times, want once", n)
	}
	if n := strings.Count(page, `<svg class="timeline"`); n != 2 {
		t.Errorf("%d timelines, want one per upstream", n)
	}
	for _, want := range []string{"ev-failed", "ev-minted", "ev-refreshed", "ev-next", `class="backoff"`, `class="tok"`,
		"last hour: 1 minted · 1 refreshed", "last hour: 1 failed (credentials refused ×1)", "8: 7 × 200, 1 × 404", "2 token_endpoint_error",
		"https://REDACTED@vault.internal:8200", "approle at auth/approle: logged in", "/etc/tokenproxy/tokenproxy.yaml"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page does not show %q", want)
		}
	}
	if strings.Contains(page, "CANARY") || strings.Contains(strings.ToLower(page), "<script") {
		t.Error("the page shows a planted value or holds a script")
	}
}

func TestSameError(t *testing.T) {
	cases := []struct {
		a, b string
		same bool
	}{
		{"x: refused", "x: refused", true},
		{"x: refused", "", true},
		{"credentials unavailable: file:/a: missing key b", "credentials: file:/a: missing key b", true},
		{"hgem: token endpoint refused the credentials: HTTP 401", "hgem: token endpoint did not answer within 10s", false},
		{"credentials unavailable: file:/a: missing key b", "hgem: token endpoint refused the credentials: HTTP 401", false},
	}
	for _, c := range cases {
		if got := sameError(c.a, c.b); got != c.same {
			t.Errorf("sameError(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

// TestErrorShownOnce: whichever fields hold an error, the page shows each
// failure once: the reason, a last error that says more, or a failed
// refresh while the token serves.
func TestErrorShownOnce(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name    string
		state   broker.State
		problem string
		also    string
	}{
		{"refused", broker.State{State: "error", Reason: "a: refused", LastError: "a: refused"}, "a: refused", ""},
		{"credentials", broker.State{State: "error", Reason: "credentials unavailable: file:/x: no such file", LastError: "credentials: file:/x: no such file"},
			"credentials unavailable: file:/x: no such file", ""},
		{"two failures", broker.State{State: "error", Reason: "credentials unavailable: file:/x: no such file", LastError: "a: refused"},
			"credentials unavailable: file:/x: no such file", "a: refused"},
		{"refresh failed", broker.State{State: "ready", Ready: true, LastError: "a: timeout", TokenExpiresAt: now.Add(time.Minute)}, "a: timeout", ""},
		{"fine", broker.State{State: "ready", Ready: true, TokenExpiresAt: now.Add(time.Minute)}, "", ""},
	}
	for _, c := range cases {
		p := pageUpstreamOf(Upstream{State: c.state}, snapshot{now: now}, now)
		if p.Problem != c.problem || p.Also != c.also {
			t.Errorf("%s: problem %q also %q; want %q and %q", c.name, p.Problem, p.Also, c.problem, c.also)
		}
	}
}

// TestTimeline: what the SVG draws from a history.
func TestTimeline(t *testing.T) {
	now := time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)
	u := Upstream{State: broker.State{TokenObtainedAt: now.Add(-90 * time.Minute), TokenExpiresAt: now.Add(30 * time.Minute), NextAttemptAt: now.Add(5 * time.Minute)}}
	// A token minted before the hour and still held: one band, no mark.
	tl := newTimeline(u, nil, now)
	if len(tl.Tokens) != 1 || tl.Tokens[0].X != "0" || tl.Tokens[0].W != "1000" || len(tl.Marks) != 0 || tl.Summary != "last hour: no token events" {
		t.Errorf("old token: %+v", tl)
	}
	if tl.NowX != "857.1" || tl.Next == nil || tl.Ticks[0].Label != "−60 min" || tl.Ticks[4].X != "857.1" {
		t.Errorf("now at %s, next %+v, ticks %+v", tl.NowX, tl.Next, tl.Ticks)
	}

	// A refusal 30 minutes ago backing off 10 minutes, then a token; then a
	// 401 dropped it and a new one came.
	u.TokenObtainedAt, u.TokenExpiresAt = now.Add(-5*time.Minute), now.Add(55*time.Minute)
	events := []broker.Event{
		{Kind: broker.EventFailed, At: now.Add(-30 * time.Minute), Until: now.Add(-20 * time.Minute), Reason: "refused"},
		{Kind: broker.EventMinted, At: now.Add(-20 * time.Minute), Until: now.Add(40 * time.Minute), Source: "vendor"},
		{Kind: broker.EventInvalidated, At: now.Add(-10 * time.Minute)},
		{Kind: broker.EventMinted, At: now.Add(-5 * time.Minute), Until: now.Add(55 * time.Minute), Source: "vendor"},
	}
	tl = newTimeline(u, events, now)
	if len(tl.Backoffs) != 1 || tl.Backoffs[0].X != "428.6" || tl.Backoffs[0].W != "142.9" {
		t.Errorf("backoffs %+v, want 30 to 20 minutes ago", tl.Backoffs)
	}
	if len(tl.Tokens) != 2 || tl.Tokens[0].X != "571.4" || tl.Tokens[0].W != "142.9" || tl.Tokens[1].X != "785.7" || tl.Tokens[1].W != "214.3" {
		t.Errorf("tokens %+v, want 20 to 10 minutes ago (dropped), then 5 minutes ago on", tl.Tokens)
	}
	var kinds []string
	for _, m := range tl.Marks {
		kinds = append(kinds, m.Kind)
	}
	if strings.Join(kinds, " ") != "failed minted invalidated minted" || !strings.Contains(tl.Marks[0].Title, "11:30:00Z token request failed: credentials refused; next attempt 11:40:00Z") {
		t.Errorf("marks %+v", tl.Marks)
	}
	if tl.Summary != "last hour: 2 minted · 1 failed (credentials refused ×1) · 1 dropped after a 401" {
		t.Errorf("summary %q", tl.Summary)
	}
}
