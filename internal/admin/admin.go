// Package admin owns the admin listener's endpoints: liveness, readiness
// ("every upstream holds a valid token", or only the named ones, or only the
// process), per-upstream status as JSON or a small HTML page, and Prometheus
// metrics. Nothing it serves holds a secret.
package admin

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenproxy/tokenproxy/internal/broker"
)

// Upstream is one upstream's state as the admin plane shows it.
type Upstream struct {
	Type string
	broker.State
}

// Server is the admin plane's state source.
type Server struct {
	Upstreams func() []Upstream // in a stable order
	Draining  *atomic.Bool
	Gatherer  prometheus.Gatherer
	Version   string
}

// Handler routes the admin endpoints.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", s.readyz)
	r.Get("/readyz/process", s.processReady)
	r.Get("/status", s.status)
	r.Handle("/metrics", promhttp.HandlerFor(s.Gatherer, promhttp.HandlerOpts{}))
	return r
}

type readiness struct {
	Ready     bool                     `json:"ready"`
	Draining  bool                     `json:"draining,omitempty"`
	Upstreams map[string]upstreamReady `json:"upstreams"`
}

type upstreamReady struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason"`
}

// readyz is 200 only when every upstream holds a valid token and the
// process is not draining (CONTRACT.md §5): a Kubernetes startup probe.
//
// With ?upstream=<name> (repeatable) only the named upstreams count, so a
// probe or a check can follow the vendors one application needs; a name
// that is not configured is 404, so that a typo in a probe fails loudly
// instead of passing.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	only := r.URL.Query()["upstream"]
	body := readiness{Ready: true, Draining: s.Draining.Load(), Upstreams: map[string]upstreamReady{}}
	for _, u := range s.Upstreams() {
		if len(only) > 0 && !slices.Contains(only, u.Name) {
			continue
		}
		reason := u.Reason
		if u.Ready {
			reason = "token valid until " + u.TokenExpiresAt.UTC().Format(time.RFC3339)
		}
		body.Upstreams[u.Name] = upstreamReady{Ready: u.Ready, Reason: reason}
		body.Ready = body.Ready && u.Ready
	}
	for _, name := range only {
		if _, ok := body.Upstreams[name]; !ok {
			writeJSON(w, http.StatusNotFound, map[string]any{"ready": false, "error": fmt.Sprintf("no upstream named %q", name)})
			return
		}
	}
	body.Ready = body.Ready && !body.Draining
	status := http.StatusOK
	if !body.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, body)
}

// processReady is 200 while the process serves and is not draining,
// whatever the upstreams' tokens: the readiness probe that keeps a pod in
// its Service while one vendor is down (its callers get 503
// credentials_unavailable for that vendor alone). The admin plane is served
// only once both listeners are bound, and the process exits when either
// fails, so an answer here means the data plane is listening.
func (s *Server) processReady(w http.ResponseWriter, _ *http.Request) {
	draining := s.Draining.Load()
	status := http.StatusOK
	if draining {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]bool{"ready": !draining, "draining": draining})
}

type upstreamStatus struct {
	Type              string  `json:"type"`
	State             string  `json:"state"`
	Reason            string  `json:"reason,omitempty"`
	TokenExpiresAt    *string `json:"token_expires_at"`
	TokenObtainedAt   *string `json:"token_obtained_at"`
	RefreshAt         *string `json:"refresh_at"`
	LastFetchAt       *string `json:"last_fetch_at"`
	LastFetchResult   string  `json:"last_fetch_result"`
	LastError         string  `json:"last_error"`
	CredentialVersion string  `json:"credential_version"`
	Generation        uint64  `json:"token_generation"`
	Failures          int     `json:"consecutive_failures"`
	Shared            bool    `json:"shared"`
	MintedBy          string  `json:"minted_by"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	ups := s.Upstreams()
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		page.Execute(w, map[string]any{"Upstreams": ups, "Version": s.Version, "Draining": s.Draining.Load(), "Now": time.Now()})
		return
	}
	body := map[string]upstreamStatus{}
	for _, u := range ups {
		body[u.Name] = upstreamStatus{
			Type:              u.Type,
			State:             u.State.State,
			Reason:            u.Reason,
			TokenExpiresAt:    stamp(u.TokenExpiresAt),
			TokenObtainedAt:   stamp(u.TokenObtainedAt),
			RefreshAt:         stamp(u.RefreshAt),
			LastFetchAt:       stamp(u.LastFetchAt),
			LastFetchResult:   u.LastFetchResult,
			LastError:         u.LastError,
			CredentialVersion: u.CredentialVersion,
			Generation:        u.Generation,
			Failures:          u.Failures,
			Shared:            u.Shared,
			MintedBy:          u.MintedBy,
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"upstreams": body})
}

// stamp is an RFC 3339 time to the millisecond, or null when there is none.
func stamp(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	return &s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

var page = template.Must(template.New("status").Funcs(template.FuncMap{
	"when": func(t, now time.Time) string {
		if t.IsZero() {
			return "—"
		}
		d := t.Sub(now).Round(time.Second)
		if d >= 0 {
			return t.UTC().Format(time.RFC3339) + " (in " + d.String() + ")"
		}
		return t.UTC().Format(time.RFC3339) + " (" + (-d).String() + " ago)"
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tokenproxy status</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
.ready{color:#176f2c}.pending{color:#8a6d00}.error{color:#b00020}
</style></head><body>
<h1>tokenproxy {{.Version}}</h1>
{{if .Draining}}<p class="error">Draining: shutting down, not ready for new traffic.</p>{{end}}
<table>
<tr><th>upstream</th><th>type</th><th>state</th><th>token expires</th><th>next refresh</th><th>last fetch</th><th>credential version</th><th>last error</th></tr>
{{range .Upstreams}}<tr>
<td>{{.Name}}</td><td>{{.Type}}</td>
<td class="{{.State.State}}">{{.State.State}}{{if .Reason}}<br><small>{{.Reason}}</small>{{end}}</td>
<td>{{when .TokenExpiresAt $.Now}}</td><td>{{when .RefreshAt $.Now}}</td>
<td>{{when .LastFetchAt $.Now}} {{.LastFetchResult}}</td>
<td><code>{{.CredentialVersion}}</code></td><td>{{.LastError}}</td>
</tr>{{end}}
</table>
<p><a href="/readyz">/readyz</a> · <a href="/metrics">/metrics</a> · <a href="/status">/status</a> (JSON unless the browser asks for HTML)</p>
</body></html>
`))
