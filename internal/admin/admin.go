// Package admin owns the admin listener's endpoints (CONTRACT.md §5): the
// index of them at /, liveness, readiness ("every upstream holds a valid
// token", or only the named ones, or only the process), per-upstream status
// as JSON or a page for a person, Prometheus metrics, the config in force,
// the log level, and Go's profiler when the config asks for it. Every GET
// also answers HEAD. Nothing it serves holds a secret, and only a caller on
// a loopback address may change anything.
package admin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// Upstream is one upstream's state as the admin plane shows it.
type Upstream struct {
	Type        string
	Credentials string // the reference, vault:secret/tokenproxy/hgem
	BaseHost    string // host[:port] of base_url
	TokenHost   string // host[:port] of token_url
	broker.State
	// Events returns the token's events at or after a time, oldest first;
	// nil when there is no history.
	Events func(since time.Time) []broker.Event
}

// ConfigInfo is the config in force and where it came from.
type ConfigInfo struct {
	Path     string
	Config   *config.Config
	LoadedAt time.Time // when the config in force was read
	// LastReloadAt is when the last reload (SIGHUP) was tried, zero before
	// any; LastReloadError is why it was rejected, "" when it was not.
	LastReloadAt    time.Time
	LastReloadError string
}

// Server is the admin plane's state source. Upstreams, Draining and
// Gatherer are required; the rest may be nil, and then what needs them is
// not served (Vault: no Vault configured).
type Server struct {
	Upstreams func() []Upstream // in a stable order
	Draining  *atomic.Bool
	Gatherer  prometheus.Gatherer
	Version   string

	Vault    func() *secrets.VaultState // nil, or nil returned, when no Vault is configured
	Config   func() ConfigInfo
	LogLevel http.Handler // GET shows the level, PUT changes it (zap.AtomicLevel)
}

// Handler routes the admin endpoints. Only GET and HEAD are served to any
// caller; every other method only to one on a loopback address
// (writesFromLoopbackOnly).
func (s *Server) Handler() http.Handler {
	return headAsGet(writesFromLoopbackOnly(s.router()))
}

// router is every route; the index (/) lists the GET ones, and a test
// checks that it lists each.
func (s *Server) router() *chi.Mux {
	r := chi.NewRouter()
	r.Get("/", s.index)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", s.readyz)
	r.Get("/readyz/process", s.processReady)
	r.Get("/status", s.status)
	// OpenMetrics when the scraper's Accept asks for it (exemplars, _created
	// series), the text format otherwise.
	r.Handle("/metrics", promhttp.HandlerFor(s.Gatherer, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	if s.Config != nil {
		r.Get("/config", s.config)
		r.Route("/debug/pprof", func(r chi.Router) {
			r.Use(s.pprofOn)
			r.Get("/", pprof.Index)
			r.Get("/cmdline", pprof.Cmdline)
			r.Get("/profile", pprof.Profile)
			r.Get("/symbol", pprof.Symbol)
			r.Post("/symbol", pprof.Symbol)
			r.Get("/trace", pprof.Trace)
			r.Get("/{profile}", pprof.Index) // heap, goroutine, allocs, block, mutex, threadcreate
		})
	}
	if s.LogLevel != nil {
		level := jsonAnswer(s.LogLevel)
		r.Method(http.MethodGet, "/loglevel", level)
		r.Method(http.MethodPut, "/loglevel", level)
	}
	return r
}

// jsonAnswer labels what h writes as JSON: zap's level handler writes JSON
// but no Content-Type, and net/http would sniff text/plain.
func jsonAnswer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		h.ServeHTTP(w, r)
	})
}

// headAsGet answers HEAD as GET (RFC 9110 §9.3.2), for every route at once:
// chi routes HEAD only where a route names it, and zap's level handler
// refuses it. net/http keeps the headers of a response to HEAD, its
// Content-Length included, and drops the body.
func headAsGet(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			r = r.Clone(r.Context())
			r.Method = http.MethodGet
		}
		next.ServeHTTP(w, r)
	})
}

// writesFromLoopbackOnly refuses, with 403 host_not_allowed in the shape of
// CONTRACT.md §4, every request but GET and HEAD whose connection does not
// come from a loopback address: PUT /loglevel, and whatever changes state
// later. admin_listen is often 0.0.0.0, so that the kubelet's probes and
// Prometheus reach it, and then anyone who can reach the port could change
// what the process does. Reading stays open to them; changing is for a
// person on the host, or coming through `kubectl port-forward`, which
// connects from the pod's own loopback. The peer is the TCP connection's
// address, never a header (X-Forwarded-For) a caller could write.
func writesFromLoopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead || fromLoopback(r) {
			next.ServeHTTP(w, r)
			return
		}
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		writeError(w, http.StatusForbidden, "host_not_allowed", fmt.Sprintf(
			"%s %s is accepted only from a loopback address, and this request came from %s: send it on the host, or through kubectl port-forward",
			r.Method, r.URL.Path, host))
	})
}

// fromLoopback reports whether r's connection comes from 127.0.0.0/8 or ::1
// (an IPv4-mapped IPv6 address counts as its IPv4 address).
func fromLoopback(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// writeError answers as tokenproxy answers what it refuses (CONTRACT.md
// §4): the code in a Tokenproxy-Error header and the JSON body.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Tokenproxy-Error", code)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "message": msg, "upstream": ""})
}

// pprofOn serves the profiler only while the config in force says
// admin_pprof: true, so that a reload turns it on or off.
func (s *Server) pprofOn(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.pprof() {
			http.Error(w, "404 page not found (the profiler is off; admin_pprof: true in the config turns it on)", http.StatusNotFound)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) pprof() bool {
	if s.Config == nil {
		return false
	}
	c := s.Config().Config
	return c != nil && c.AdminPprof
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

// wantsHTML reports whether the client's Accept names text/html (a
// browser), as CONTRACT.md §5 puts it.
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
