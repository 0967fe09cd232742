package admin

import (
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// pageRefresh is how often the status page reloads itself, in seconds.
const pageRefresh = 5

// pageData is what the status page shows, worked out for a person in an
// incident: the verdict first, then each upstream with its one problem,
// its facts and its timeline, then Vault and the config file.
type pageData struct {
	Version   string
	Now       string
	Refresh   int
	Draining  bool
	Verdict   string // "3 of 4 upstreams ready"
	AllReady  bool
	NotReady  []string // "prominsight (error)"
	Upstreams []pageUpstream
	Vault     *pageVault
	Config    *pageConfig
	Endpoints []endpoint
}

type pageUpstream struct {
	Name, Type, State string
	// Problem is why the upstream is not ready, or the last failure of a
	// refresh while its token still serves; Also is a different error
	// beside it. An error is shown once, never in both.
	Problem, ProblemLabel string
	Also                  string
	Facts                 []fact
	Timeline              timeline
}

type fact struct{ Name, Value, Title string }

type pageVault struct {
	LoggedIn bool
	Facts    []fact
	Error    string
}

type pageConfig struct {
	Facts       []fact
	ReloadError string
}

func (s *Server) page(w http.ResponseWriter, sn snapshot) {
	now := sn.now
	d := pageData{Version: s.Version, Now: now.UTC().Format(time.RFC3339), Refresh: pageRefresh, Draining: sn.draining,
		Endpoints: s.served()}
	ready := 0
	for _, u := range sn.upstreams {
		if u.Ready {
			ready++
		} else {
			d.NotReady = append(d.NotReady, fmt.Sprintf("%s (%s)", u.Name, u.State.State))
		}
		d.Upstreams = append(d.Upstreams, pageUpstreamOf(u, sn, now))
	}
	// What needs a person comes first: upstreams not ready, then those
	// whose last refresh failed, then the rest, each by name.
	rank := func(p pageUpstream) int {
		switch {
		case p.State != "ready":
			return 0
		case p.Problem != "":
			return 1
		}
		return 2
	}
	slices.SortStableFunc(d.Upstreams, func(a, b pageUpstream) int { return rank(a) - rank(b) })
	noun := "upstreams"
	if len(sn.upstreams) == 1 {
		noun = "upstream"
	}
	d.Verdict = fmt.Sprintf("%d of %d %s ready", ready, len(sn.upstreams), noun)
	d.AllReady = ready == len(sn.upstreams) && !sn.draining
	if v := sn.vault; v != nil {
		d.Vault = pageVaultOf(v, now)
		d.AllReady = d.AllReady && v.LoggedIn
	}
	if c := sn.config; c != nil {
		d.Config = pageConfigOf(c, now)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	statusPage.Execute(w, d)
}

func pageUpstreamOf(u Upstream, sn snapshot, now time.Time) pageUpstream {
	p := pageUpstream{Name: u.Name, Type: u.Type, State: u.State.State}
	switch {
	case !u.Ready && u.Reason != "":
		p.Problem, p.ProblemLabel = u.Reason, "Not ready"
		if !sameError(u.Reason, u.LastError) {
			p.Also = u.LastError
		}
	case u.LastError != "":
		p.Problem, p.ProblemLabel = u.LastError, "Last refresh failed; the token still serves"
	}

	token := "none"
	if !u.TokenExpiresAt.IsZero() {
		token = "valid until " + clock(u.TokenExpiresAt) + " (" + rel(u.TokenExpiresAt, now) + ")"
	}
	next := "nothing scheduled"
	if !u.NextAttemptAt.IsZero() {
		next = clock(u.NextAttemptAt) + " (" + rel(u.NextAttemptAt, now) + ")"
	} else if u.Ready || u.Reason == "fetching a token" {
		next = "a request is under way"
	}
	last := "none yet"
	if !u.LastFetchAt.IsZero() {
		last = u.LastFetchResult + ", " + rel(u.LastFetchAt, now)
		if u.Failures > 0 {
			last += fmt.Sprintf(" (%d failed in a row)", u.Failures)
		}
	}
	p.Facts = []fact{
		{Name: "token", Value: token, Title: stampText(u.TokenExpiresAt)},
		{Name: "next token request", Value: next, Title: stampText(u.NextAttemptAt)},
		{Name: "last token request", Value: last, Title: stampText(u.LastFetchAt)},
		{Name: "requests since start", Value: requestsText(sn.requestsOf(u.Name))},
		{Name: "credentials", Value: u.Credentials},
		{Name: "credential version", Value: or(u.CredentialVersion, "none read yet")},
		{Name: "API host", Value: u.BaseHost},
		{Name: "token host", Value: u.TokenHost},
	}
	if u.Shared {
		p.Facts = append(p.Facts, fact{Name: "fleet token", Value: "shared; minted by " + or(u.MintedBy, "this replica or none yet")})
	}
	p.Timeline = newTimeline(u, sn.events[u.Name], now)
	return p
}

// sameError reports whether b tells nothing a does not: the same message,
// or the same failure labelled differently ("credentials unavailable: X"
// and "credentials: X").
func sameError(a, b string) bool {
	if b == "" || a == b {
		return true
	}
	core := func(s string) string {
		for _, label := range []string{"credentials unavailable: ", "credentials: "} {
			if _, rest, ok := strings.Cut(s, label); ok {
				return rest
			}
		}
		return s
	}
	return strings.Contains(a, core(b)) || strings.Contains(b, core(a))
}

func requestsText(r requests) string {
	if r.Total == 0 {
		return "none"
	}
	codes := make([]string, 0, len(r.ByCode))
	for c := range r.ByCode {
		codes = append(codes, c)
	}
	slices.SortFunc(codes, func(a, b string) int {
		if codeLess(a, b) {
			return -1
		}
		return 1
	})
	parts := make([]string, 0, len(codes))
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d × %s", r.ByCode[c], c))
	}
	s := fmt.Sprintf("%d: %s", r.Total, strings.Join(parts, ", "))
	if len(r.ProxyErrors) > 0 {
		var errs []string
		for _, code := range slices.Sorted(maps.Keys(r.ProxyErrors)) {
			errs = append(errs, fmt.Sprintf("%d %s", r.ProxyErrors[code], code))
		}
		s += "; answered by tokenproxy: " + strings.Join(errs, ", ")
	}
	return s
}

func pageVaultOf(v *secrets.VaultState, now time.Time) *pageVault {
	p := &pageVault{LoggedIn: v.LoggedIn, Error: v.Error}
	login := "not logged in"
	if v.LoggedIn {
		login = "logged in"
	}
	if !v.LastLogin.IsZero() {
		login += ", last login " + rel(v.LastLogin, now)
	}
	ttl := "no token"
	switch {
	case v.LoggedIn && v.TokenExpiresAt.IsZero():
		ttl = "no TTL (never expires)"
	case v.LoggedIn:
		ttl = "ends " + clock(v.TokenExpiresAt) + " (" + rel(v.TokenExpiresAt, now) + ")"
		if !v.Renewable {
			ttl += ", not renewable"
		}
	}
	renewal := "none yet"
	if !v.LastRenewal.IsZero() {
		renewal = rel(v.LastRenewal, now)
	}
	p.Facts = []fact{
		{Name: "Vault", Value: config.RedactURL(v.Address)},
		{Name: "login", Value: v.Method + " at auth/" + v.AuthMount + ": " + login, Title: stampText(v.LastLogin)},
		{Name: "token", Value: ttl, Title: stampText(v.TokenExpiresAt)},
		{Name: "last renewal", Value: renewal, Title: stampText(v.LastRenewal)},
	}
	return p
}

func pageConfigOf(c *ConfigInfo, now time.Time) *pageConfig {
	p := &pageConfig{ReloadError: c.LastReloadError}
	reload := "none since start (SIGHUP reloads)"
	switch r := reloadResult(*c); r {
	case "success":
		reload = "applied " + rel(c.LastReloadAt, now)
	case "error":
		reload = "rejected " + rel(c.LastReloadAt, now) + "; the config loaded before stays in force"
	}
	p.Facts = []fact{
		{Name: "file", Value: or(c.Path, "none: built in (tokenproxy dev)")},
		{Name: "in force since", Value: clock(c.LoadedAt) + " (" + rel(c.LoadedAt, now) + ")", Title: stampText(c.LoadedAt)},
		{Name: "last reload", Value: reload, Title: stampText(c.LastReloadAt)},
	}
	return p
}

// rel is t relative to now for a person: "in 41m 3s", "12s ago".
func rel(t, now time.Time) string {
	d := t.Sub(now)
	if d >= 0 {
		return "in " + short(d)
	}
	return short(-d) + " ago"
}

// short is a duration to the second, in at most two units.
func short(d time.Duration) string {
	d = d.Round(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case h >= 24:
		return fmt.Sprintf("%dd %dh", h/24, h%24)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}

func stampText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{{.Refresh}}">
<title>{{if not .AllReady}}✗ {{end}}{{.Verdict}} · tokenproxy</title>
{{/* The tab shows the verdict too; inline, so that nothing else is fetched. */}}
{{if .AllReady}}<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Ccircle cx='8' cy='8' r='7' fill='%231e7b34'/%3E%3C/svg%3E">
{{else}}<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Ccircle cx='8' cy='8' r='7' fill='%23b3261e'/%3E%3C/svg%3E">{{end}}
<style>
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d232a;background:#f2f4f7}
main{max-width:1160px;margin:0 auto;padding:16px 20px}
header{display:flex;flex-wrap:wrap;justify-content:space-between;gap:4px 16px;color:#5f6b7a;font-size:13px}
.verdict{margin:10px 0 14px;padding:12px 16px;border-radius:6px;border-left:8px solid;background:#fff}
.verdict h1{margin:0;font-size:24px}
.verdict p{margin:4px 0 0}
.verdict.ok{border-color:#1e7b34;background:#e7f4ea}
.verdict.bad{border-color:#b3261e;background:#fdecea}
section{background:#fff;border:1px solid #d8dce1;border-radius:6px;margin:0 0 12px;padding:12px 16px;min-width:0}
section.up{border-left:6px solid #1e7b34}
section.up.error{border-left-color:#b3261e}
section.up.pending{border-left-color:#a86b00}
h2{margin:0 0 6px;font-size:18px;display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 10px}
h2 small{font-size:13px;font-weight:normal;color:#5f6b7a}
.state{font-size:12px;font-weight:600;text-transform:uppercase;letter-spacing:.04em;padding:1px 8px;border-radius:10px;color:#fff;background:#1e7b34}
.state.error{background:#b3261e}.state.pending{background:#a86b00}
.problem{margin:6px 0;padding:8px 10px;border-radius:4px;background:#fdecea;color:#6d1410;overflow-wrap:anywhere;white-space:pre-wrap}
.problem.warn{background:#fff4e0;color:#5c3b00}
.problem b{display:block;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
dl{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:6px 18px;margin:8px 0}
dl div{min-width:0}
dt{font-size:12px;color:#5f6b7a}
dd{margin:0;overflow-wrap:anywhere}
svg.timeline{display:block;width:100%;height:auto;margin-top:6px}
.track{fill:#eef0f3}
.tok{fill:#8fd19e}
.backoff{fill:#f4b4ae}
.ev-minted,.key-minted{fill:#1e7b34}
.ev-refreshed,.key-refreshed{fill:#2f6fb3}
.ev-failed,.key-failed{fill:#b3261e}
.ev-invalidated,.key-invalidated{fill:#c45a00}
.ev-rotated,.key-rotated{fill:#6b3fa0}
.ev-next{fill:#fff;stroke:#333;stroke-width:2;stroke-dasharray:3 2}
.now{stroke:#333;stroke-width:1.5;stroke-dasharray:4 3}
.axis{stroke:#9aa3ad}
.tick{font-size:12px;fill:#5f6b7a}
.legend{font-size:12px;color:#5f6b7a;display:flex;flex-wrap:wrap;gap:2px 14px;margin:0 0 8px}
.legend svg{width:12px;height:12px;vertical-align:-1px}
.summary{margin:4px 0 0;font-size:13px}
footer{color:#5f6b7a;font-size:13px;margin:16px 0}
footer a{margin-right:12px}
</style></head><body><main>
<header><span>tokenproxy {{.Version}}</span><span>as of {{.Now}} · this page reloads every {{.Refresh}} s</span></header>
<div class="verdict {{if .AllReady}}ok{{else}}bad{{end}}" id="verdict">
<h1>{{.Verdict}}</h1>
{{if .NotReady}}<p>Not ready: {{range $i, $n := .NotReady}}{{if $i}}, {{end}}{{$n}}{{end}}</p>{{end}}
{{if .Draining}}<p><b>Draining:</b> shutting down; not ready for new traffic.</p>{{end}}
{{with .Vault}}{{if not .LoggedIn}}<p><b>Vault:</b> not logged in (below).</p>{{end}}{{end}}
</div>
<p class="legend" id="legend"><span>Timelines, the last hour and the next 10 minutes:</span><span><svg viewBox="0 0 12 12"><rect class="tok" width="12" height="12"/></svg> token held</span><span><svg viewBox="0 0 12 12"><rect class="backoff" width="12" height="12"/></svg> backoff</span><span><svg viewBox="0 0 12 12"><circle class="key-minted" cx="6" cy="6" r="6"/></svg> minted</span><span><svg viewBox="0 0 12 12"><circle class="key-refreshed" cx="6" cy="6" r="6"/></svg> refreshed</span><span><svg viewBox="0 0 12 12"><path class="key-failed" d="M6 0l6 6-6 6-6-6z"/></svg> failed</span><span><svg viewBox="0 0 12 12"><path class="key-invalidated" d="M6 0l6 12h-12z"/></svg> 401</span><span><svg viewBox="0 0 12 12"><rect class="key-rotated" width="12" height="12"/></svg> credentials rotated</span><span><svg viewBox="0 0 14 14"><circle class="ev-next" cx="7" cy="7" r="5.5"/></svg> next request</span></p>
{{range .Upstreams}}
<section class="up {{.State}}" id="up-{{.Name}}">
<h2>{{.Name}} <span class="state {{.State}}">{{.State}}</span> <small>type {{.Type}}</small></h2>
{{if .Problem}}<div class="problem{{if eq .State "ready"}} warn{{end}}"><b>{{.ProblemLabel}}</b>{{.Problem}}</div>{{end}}
{{if .Also}}<div class="problem"><b>Also</b>{{.Also}}</div>{{end}}
<dl>{{range .Facts}}<div><dt>{{.Name}}</dt><dd{{if .Title}} title="{{.Title}}"{{end}}>{{.Value}}</dd></div>{{end}}</dl>
{{with .Timeline}}
<svg class="timeline" viewBox="0 0 1000 60" role="img" aria-label="{{.Summary}}">
<rect class="track" x="0" y="4" width="1000" height="12"/>
{{range .Tokens}}<rect class="tok" x="{{.X}}" y="4" width="{{.W}}" height="12"><title>{{.Title}}</title></rect>{{end}}
<rect class="track" x="0" y="22" width="1000" height="16"/>
{{range .Backoffs}}<rect class="backoff" x="{{.X}}" y="22" width="{{.W}}" height="16"><title>{{.Title}}</title></rect>{{end}}
<line class="axis" x1="0" y1="42" x2="1000" y2="42"/>
{{range .Ticks}}<line class="axis" x1="{{.X}}" y1="42" x2="{{.X}}" y2="46"/><text class="tick" x="{{.X}}" y="58" text-anchor="{{.Anchor}}">{{.Label}}</text>{{end}}
<line class="now" x1="{{.NowX}}" y1="0" x2="{{.NowX}}" y2="42"/>
{{range .Marks}}<path class="ev ev-{{.Kind}}" d="{{.D}}"><title>{{.Title}}</title></path>{{end}}
{{with .Next}}<path class="ev ev-next" d="{{.D}}"><title>{{.Title}}</title></path>{{end}}
</svg>
<p class="summary">{{.Summary}}</p>
{{end}}
</section>
{{end}}
{{with .Vault}}<section id="vault"><h2>Vault <span class="state {{if .LoggedIn}}ready{{else}}error{{end}}">{{if .LoggedIn}}logged in{{else}}not logged in{{end}}</span></h2>
{{if .Error}}<div class="problem"><b>Why</b>{{.Error}}</div>{{end}}
<dl>{{range .Facts}}<div><dt>{{.Name}}</dt><dd{{if .Title}} title="{{.Title}}"{{end}}>{{.Value}}</dd></div>{{end}}</dl></section>{{end}}
{{with .Config}}<section id="config"><h2>Config</h2>
{{if .ReloadError}}<div class="problem"><b>Last reload rejected</b>{{.ReloadError}}</div>{{end}}
<dl>{{range .Facts}}<div><dt>{{.Name}}</dt><dd{{if .Title}} title="{{.Title}}"{{end}}>{{.Value}}</dd></div>{{end}}</dl></section>{{end}}
<footer>{{range .Endpoints}}<a href="{{.Path}}">{{.Path}}</a>{{end}}</footer>
</main></body></html>
`))
