package admin

import (
	"net/http"
	"strconv"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// history is how far back /status and its page look for token events.
const history = time.Hour

// statusDoc is /status as JSON (CONTRACT.md §5): the upstreams, and beside
// them the process, its Vault login and its config file.
type statusDoc struct {
	Version   string                    `json:"version"`
	Draining  bool                      `json:"draining"`
	Upstreams map[string]upstreamStatus `json:"upstreams"`
	Vault     *vaultStatus              `json:"vault"` // null when no Vault is configured
	Config    *configStatus             `json:"config"`
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
	// NextAttemptAt is "" (never null) only when nothing is scheduled
	// (CONTRACT.md §5).
	NextAttemptAt string        `json:"next_attempt_at"`
	Credentials   string        `json:"credentials"`
	BaseHost      string        `json:"base_host"`
	TokenHost     string        `json:"token_host"`
	Requests      requests      `json:"requests"`
	Events        []eventStatus `json:"events"` // the last hour's, oldest first
}

// requests are an upstream's caller requests since start, from
// tokenproxy_requests_total and tokenproxy_proxy_errors_total.
type requests struct {
	Total       uint64            `json:"total"`
	ByCode      map[string]uint64 `json:"by_code"`      // HTTP status sent to the caller
	ProxyErrors map[string]uint64 `json:"proxy_errors"` // answers tokenproxy made, by Tokenproxy-Error code
}

type eventStatus struct {
	Kind   string  `json:"kind"` // minted, refreshed, failed, invalidated, rotated
	At     string  `json:"at"`
	Until  *string `json:"until,omitempty"`  // minted, refreshed: token expiry; failed: end of the backoff
	Reason string  `json:"reason,omitempty"` // failed: refused, conflict, rate_limited, server_error, network, timeout, malformed, sharing
	Source string  `json:"source,omitempty"` // minted, refreshed: vendor, or the fleet's hit, waited, minted, local
}

type vaultStatus struct {
	Address         string  `json:"address"`
	Method          string  `json:"method"`
	AuthMount       string  `json:"auth_mount"`
	LoggedIn        bool    `json:"logged_in"`
	Error           string  `json:"error"`
	LastLoginAt     *string `json:"last_login_at"`
	LastRenewalAt   *string `json:"last_renewal_at"`
	TokenExpiresAt  *string `json:"token_expires_at"`  // null: no TTL, or not logged in
	TokenTTLSeconds *int64  `json:"token_ttl_seconds"` // left now; null as token_expires_at
	Renewable       bool    `json:"renewable"`
}

type configStatus struct {
	Path             string  `json:"path"`
	LoadedAt         *string `json:"loaded_at"`
	LastReloadAt     *string `json:"last_reload_at"`     // null before any reload
	LastReloadResult string  `json:"last_reload_result"` // success, error, or "" before any reload
	LastReloadError  string  `json:"last_reload_error"`
}

// snapshot is everything /status shows, read once per request.
type snapshot struct {
	now       time.Time
	upstreams []Upstream
	events    map[string][]broker.Event
	requests  map[string]*requests
	vault     *secrets.VaultState
	config    *ConfigInfo
	draining  bool
}

func (s *Server) snapshot() snapshot {
	now := time.Now()
	sn := snapshot{now: now, upstreams: s.Upstreams(), events: map[string][]broker.Event{},
		requests: s.requestCounts(), draining: s.Draining.Load()}
	for _, u := range sn.upstreams {
		if u.Events != nil {
			// All there is: a token minted before the hour may still
			// be held in it.
			sn.events[u.Name] = u.Events(time.Time{})
		}
	}
	if s.Vault != nil {
		sn.vault = s.Vault()
	}
	if s.Config != nil {
		c := s.Config()
		sn.config = &c
	}
	return sn
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	sn := s.snapshot()
	if wantsHTML(r) {
		s.page(w, sn)
		return
	}
	doc := statusDoc{Version: s.Version, Draining: sn.draining, Upstreams: map[string]upstreamStatus{}}
	for _, u := range sn.upstreams {
		doc.Upstreams[u.Name] = upstreamStatus{
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
			NextAttemptAt:     orEmpty(stamp(u.NextAttemptAt)),
			Credentials:       u.Credentials,
			BaseHost:          u.BaseHost,
			TokenHost:         u.TokenHost,
			Requests:          sn.requestsOf(u.Name),
			Events:            eventsJSON(sn.events[u.Name], sn.now.Add(-history)),
		}
	}
	if v := sn.vault; v != nil {
		doc.Vault = &vaultStatus{
			Address:        config.RedactURL(v.Address),
			Method:         v.Method,
			AuthMount:      v.AuthMount,
			LoggedIn:       v.LoggedIn,
			Error:          v.Error,
			LastLoginAt:    stamp(v.LastLogin),
			LastRenewalAt:  stamp(v.LastRenewal),
			TokenExpiresAt: stamp(v.TokenExpiresAt),
			Renewable:      v.Renewable,
		}
		if !v.TokenExpiresAt.IsZero() {
			ttl := int64(max(v.TokenExpiresAt.Sub(sn.now), 0) / time.Second)
			doc.Vault.TokenTTLSeconds = &ttl
		}
	}
	if c := sn.config; c != nil {
		doc.Config = &configStatus{Path: c.Path, LoadedAt: stamp(c.LoadedAt), LastReloadAt: stamp(c.LastReloadAt),
			LastReloadResult: reloadResult(*c), LastReloadError: c.LastReloadError}
	}
	writeJSON(w, http.StatusOK, doc)
}

func reloadResult(c ConfigInfo) string {
	switch {
	case c.LastReloadAt.IsZero():
		return ""
	case c.LastReloadError != "":
		return "error"
	}
	return "success"
}

func eventsJSON(es []broker.Event, since time.Time) []eventStatus {
	out := make([]eventStatus, 0, len(es))
	for _, e := range es {
		if e.At.Before(since) {
			continue
		}
		out = append(out, eventStatus{Kind: e.Kind, At: *stamp(e.At), Until: stamp(e.Until), Reason: e.Reason, Source: e.Source})
	}
	return out
}

// requestsOf is upstream name's counts, zero ones included.
func (sn snapshot) requestsOf(name string) requests {
	if r := sn.requests[name]; r != nil {
		return *r
	}
	return requests{ByCode: map[string]uint64{}, ProxyErrors: map[string]uint64{}}
}

// requestCounts reads the request counters per upstream from the metrics
// registry, the one place they are counted.
func (s *Server) requestCounts() map[string]*requests {
	out := map[string]*requests{}
	at := func(upstream string) *requests {
		if out[upstream] == nil {
			out[upstream] = &requests{ByCode: map[string]uint64{}, ProxyErrors: map[string]uint64{}}
		}
		return out[upstream]
	}
	families, _ := s.Gatherer.Gather() // what could be gathered, even on an error
	for _, f := range families {
		name := f.GetName()
		if name != "tokenproxy_requests_total" && name != "tokenproxy_proxy_errors_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			n := uint64(m.GetCounter().GetValue())
			r := at(labels["upstream"])
			if name == "tokenproxy_requests_total" {
				r.Total += n
				r.ByCode[labels["code"]] += n
			} else if n > 0 {
				r.ProxyErrors[labels["error"]] += n
			}
		}
	}
	for _, r := range out {
		for code, n := range r.ByCode {
			if n == 0 {
				delete(r.ByCode, code)
			}
		}
	}
	return out
}

// stamp is an RFC 3339 time to the millisecond, or null when there is none.
func stamp(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	return &s
}

func orEmpty(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// codeLess orders status codes numerically: "200" before "503".
func codeLess(a, b string) bool {
	x, errA := strconv.Atoi(a)
	y, errB := strconv.Atoi(b)
	if errA != nil || errB != nil {
		return a < b
	}
	return x < y
}
