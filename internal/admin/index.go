package admin

import (
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"text/tabwriter"
)

// endpoint is one line of the index.
type endpoint struct {
	Methods string // "GET", or "GET, PUT"
	Path    string
	What    string
	needs   func(*Server) bool // served only when this holds; nil: always
}

// endpoints is the index, in the order a person reads it.
var endpoints = []endpoint{
	{Methods: "GET", Path: "/status", What: "each upstream's token, next attempt, errors and requests, Vault and the config file: a page for a browser, JSON otherwise"},
	{Methods: "GET", Path: "/readyz", What: "200 once every upstream holds a valid token, else 503 with a reason each; ?upstream=NAME (repeatable) counts only those"},
	{Methods: "GET", Path: "/readyz/process", What: "200 while the process serves and is not draining, whatever the tokens"},
	{Methods: "GET", Path: "/healthz", What: "200 while the process lives"},
	{Methods: "GET", Path: "/metrics", What: "Prometheus metrics; OpenMetrics when the scraper asks for it"},
	{Methods: "GET", Path: "/config", What: "the config in force after defaults: references and settings, never a value; JSON, or YAML with Accept: application/yaml",
		needs: func(s *Server) bool { return s.Config != nil }},
	{Methods: "GET, PUT", Path: "/loglevel", What: `the log level; PUT {"level":"debug"}, from a loopback address only, changes it until a restart or a new log_level in the config`,
		needs: func(s *Server) bool { return s.LogLevel != nil }},
	{Methods: "GET", Path: "/debug/pprof/", What: "Go's profiler (admin_pprof: true in the config)",
		needs: func(s *Server) bool { return s.pprof() }},
}

// served is the index as this server has it now.
func (s *Server) served() []endpoint {
	var out []endpoint
	for _, e := range endpoints {
		if e.needs == nil || e.needs(s) {
			out = append(out, e)
		}
	}
	return out
}

// index lists the admin endpoints: a page when Accept names text/html,
// plain text otherwise (CONTRACT.md §5). Every GET also answers HEAD.
func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	eps := s.served()
	if wantsHTML(r) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		indexPage.Execute(w, map[string]any{"Version": s.Version, "Endpoints": eps})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	var b strings.Builder
	fmt.Fprintf(&b, "tokenproxy %s admin endpoints (every GET also answers HEAD):\n\n", s.Version)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, e := range eps {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Methods, e.Path, e.What)
	}
	tw.Flush()
	w.Write([]byte(b.String()))
}

var indexPage = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>tokenproxy admin</title><link rel="icon" href="data:,">
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f4f5f7}
main{max-width:1000px;margin:0 auto;padding:16px 20px}
table{border-collapse:collapse;width:100%;background:#fff}
td,th{border:1px solid #d8dce1;padding:6px 10px;text-align:left;vertical-align:top}
td:first-child{white-space:nowrap;color:#5f6b7a}code{font-size:14px}
</style></head><body><main>
<h1>tokenproxy {{.Version}}</h1>
<p>Admin endpoints. Every GET also answers HEAD.</p>
<table>
<tr><th>methods</th><th>path</th><th>what</th></tr>
{{range .Endpoints}}<tr><td>{{.Methods}}</td><td><a href="{{.Path}}"><code>{{.Path}}</code></a></td><td>{{.What}}</td></tr>
{{end}}</table>
</main></body></html>
`))
