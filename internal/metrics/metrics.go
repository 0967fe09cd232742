// Package metrics owns tokenproxy's Prometheus collectors. They live on a
// registry the caller injects; there is no global state. Names carry the
// tokenproxy_ prefix, use base units and keep labels to route names and
// small fixed sets.
//
// Every series whose label values are known at start exists from the first
// scrape, at zero (CONTRACT.md §5), so that increase() and rate() see the
// first event: the packages that record a family declare its label values
// when an upstream starts (InitRoutes, InitTokens, InitSecrets, InitVault),
// and Forget drops an upstream that a reload removed. An upstream that a
// reload keeps or rebuilds keeps every series and count: only Forget
// deletes series of an upstream.
package metrics

import (
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector. A nil *Metrics is valid and records nothing,
// so that packages can be tested without one.
type Metrics struct {
	Requests        *prometheus.CounterVec
	RequestDuration *prometheus.HistogramVec
	InFlight        *prometheus.GaugeVec
	ProxyErrors     *prometheus.CounterVec
	TokenFetches    *prometheus.CounterVec
	TokenFetchTime  *prometheus.HistogramVec
	TokenExpiry     *prometheus.GaugeVec
	Reauth          *prometheus.CounterVec
	SecretReads     *prometheus.CounterVec
	FetchFailures   *prometheus.CounterVec
	Coalesced       *prometheus.CounterVec
	Replays         *prometheus.CounterVec
	VaultLogins     *prometheus.CounterVec
	VaultRenewals   *prometheus.CounterVec
	ConfigReloads   *prometheus.CounterVec
	ReloadOK        prometheus.Gauge
	ReloadOKTime    prometheus.Gauge
	SharedTokens    *prometheus.CounterVec
}

// Build says what runs, for tokenproxy_build_info.
type Build struct {
	Version  string // the release, v1.2.3
	Revision string // the VCS commit it was built from
}

// results is the result label of every success/error counter.
var results = []string{"success", "error"}

// New registers every collector on reg. The config the process started
// with counts as a successful load: tokenproxy_config_last_reload_successful
// starts at 1, its timestamp at now, as Prometheus's own do.
func New(reg prometheus.Registerer, b Build) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_requests_total",
			Help: "Caller requests answered, by upstream and HTTP status sent to the caller (a replay is not a second request).",
		}, []string{"upstream", "code"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenproxy_request_duration_seconds",
			Help:    "Time from a caller's request to the response headers sent back.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"upstream"}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenproxy_requests_in_flight",
			Help: "Caller requests routed to an upstream and not yet finished (an upgraded connection counts until it closes).",
		}, []string{"upstream"}),
		ProxyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_proxy_errors_total",
			Help: "Caller requests that tokenproxy answered itself, by upstream (\"\" when none was routed to) and Tokenproxy-Error code; also counted in tokenproxy_requests_total.",
		}, []string{"upstream", "error"}),
		TokenFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_token_fetches_total",
			Help: "Requests to a vendor's token endpoint, by result.",
		}, []string{"upstream", "result"}),
		TokenFetchTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenproxy_token_fetch_duration_seconds",
			Help:    "Duration of token endpoint requests.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
		}, []string{"upstream"}),
		TokenExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenproxy_token_expiry_timestamp_seconds",
			Help: "Unix time at which the current token expires.",
		}, []string{"upstream"}),
		Reauth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_upstream_reauth_total",
			Help: "Tokens dropped and re-minted because the upstream API answered 401.",
		}, []string{"upstream"}),
		SecretReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_secret_reads_total",
			Help: "Reads of an upstream's credentials, by upstream, source (vault, file, env) and result.",
		}, []string{"upstream", "source", "result"}),
		FetchFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_token_fetch_failures_total",
			Help: "Failed token requests by reason: refused, conflict, rate_limited, server_error, network, timeout, malformed.",
		}, []string{"upstream", "reason"}),
		Coalesced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_token_waits_coalesced_total",
			Help: "Callers that waited for a token fetch already in flight instead of starting one.",
		}, []string{"upstream"}),
		Replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_replays_total",
			Help: "Requests replayed with a new token after the upstream answered 401.",
		}, []string{"upstream"}),
		VaultLogins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_vault_logins_total",
			Help: "Vault login attempts, by result.",
		}, []string{"result"}),
		VaultRenewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_vault_renewals_total",
			Help: "Vault token renewals, by result.",
		}, []string{"result"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_config_reloads_total",
			Help: "Configuration reloads (SIGHUP), by result.",
		}, []string{"result"}),
		ReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokenproxy_config_last_reload_successful",
			Help: "1 when the last configuration load (at start or on SIGHUP) succeeded, 0 when it was rejected and an older config runs.",
		}),
		ReloadOKTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokenproxy_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load.",
		}),
		SharedTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_shared_token_total",
			Help: "Shared tokens taken into use, by how: hit (another replica's, read at once), waited (another replica's, after waiting for its lease), minted (won the lease), local (store unavailable, minted alone); error counts attempts that ended without a token.",
		}, []string{"upstream", "result"}),
	}
	// The prometheus/common/version convention: a gauge of 1 whose labels
	// say what was built.
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "tokenproxy_build_info",
		Help:        "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": runtime.Version()},
	})
	build.Set(1)
	for _, r := range results {
		m.ConfigReloads.WithLabelValues(r)
	}
	m.ReloadOK.Set(1)
	m.ReloadOKTime.SetToCurrentTime()
	reg.MustRegister(m.Requests, m.RequestDuration, m.InFlight, m.ProxyErrors, m.TokenFetches, m.TokenFetchTime,
		m.TokenExpiry, m.Reauth, m.SecretReads, m.FetchFailures, m.Coalesced, m.Replays,
		m.VaultLogins, m.VaultRenewals, m.ConfigReloads, m.ReloadOK, m.ReloadOKTime, m.SharedTokens, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// InitRoutes creates the zero series of the data plane: for each upstream,
// its request histogram, requests in flight, replays and proxy errors of
// the codes its requests can get; for upstream "", the codes of requests
// that reach none.
func (m *Metrics) InitRoutes(upstreams, upstreamErrors, noUpstreamErrors []string) {
	if m == nil {
		return
	}
	for _, code := range noUpstreamErrors {
		m.ProxyErrors.WithLabelValues("", code)
	}
	for _, u := range upstreams {
		m.RequestDuration.WithLabelValues(u)
		m.InFlight.WithLabelValues(u)
		m.Replays.WithLabelValues(u)
		for _, code := range upstreamErrors {
			m.ProxyErrors.WithLabelValues(u, code)
		}
	}
}

// InitTokens creates the zero series of an upstream's token cache: fetches
// by result, their histogram, failures by reason, re-auths, coalesced waits,
// and, for a shared upstream (shared non-nil), its shared-token results.
// Series that exist keep their counts: an upstream that a reload rebuilt
// (or that no longer shares) is still the same upstream, and a counter
// that dropped to 0 would read as a reset.
func (m *Metrics) InitTokens(upstream string, reasons, shared []string) {
	if m == nil {
		return
	}
	for _, r := range results {
		m.TokenFetches.WithLabelValues(upstream, r)
	}
	m.TokenFetchTime.WithLabelValues(upstream)
	for _, r := range reasons {
		m.FetchFailures.WithLabelValues(upstream, r)
	}
	m.Reauth.WithLabelValues(upstream)
	m.Coalesced.WithLabelValues(upstream)
	for _, r := range shared {
		m.SharedTokens.WithLabelValues(upstream, r)
	}
}

// InitSecrets creates the zero series of an upstream's credential reads
// from source. Those of another source it read before stay, with their
// counts, as InitTokens keeps its series: only Forget drops an upstream's.
func (m *Metrics) InitSecrets(upstream, source string) {
	if m == nil {
		return
	}
	for _, r := range results {
		m.SecretReads.WithLabelValues(upstream, source, r)
	}
}

// InitVault creates the zero series of Vault logins and renewals, once a
// Vault is configured.
func (m *Metrics) InitVault() {
	if m == nil {
		return
	}
	for _, r := range results {
		m.VaultLogins.WithLabelValues(r)
		m.VaultRenewals.WithLabelValues(r)
	}
}

// result is the label value for an error: "success" or "error".
func result(err error) string {
	if err != nil {
		return "error"
	}
	return "success"
}

// Request records one caller request; errCode is the Tokenproxy-Error code
// when tokenproxy answered it itself, else "".
func (m *Metrics) Request(upstream string, status int, errCode string, d time.Duration) {
	if m == nil {
		return
	}
	m.Requests.WithLabelValues(upstream, strconv.Itoa(status)).Inc()
	m.RequestDuration.WithLabelValues(upstream).Observe(d.Seconds())
	if errCode != "" {
		m.ProxyErrors.WithLabelValues(upstream, errCode).Inc()
	}
}

// Started counts a request routed to upstream as in flight; the returned
// func, called once when it ends, counts it out. It holds on to the series,
// so that a request that outlives its upstream (removed by a reload,
// Forget) does not bring the series back.
func (m *Metrics) Started(upstream string) (done func()) {
	if m == nil {
		return func() {}
	}
	g := m.InFlight.WithLabelValues(upstream)
	g.Inc()
	return g.Dec
}

// TokenFetch records one token endpoint request; reason is "" on success.
func (m *Metrics) TokenFetch(upstream, reason string, d time.Duration) {
	if m == nil {
		return
	}
	outcome := "success"
	if reason != "" {
		outcome = "error"
		m.FetchFailures.WithLabelValues(upstream, reason).Inc()
	}
	m.TokenFetches.WithLabelValues(upstream, outcome).Inc()
	m.TokenFetchTime.WithLabelValues(upstream).Observe(d.Seconds())
}

// Reauthed records a token dropped because the upstream answered 401.
func (m *Metrics) Reauthed(upstream string) {
	if m != nil {
		m.Reauth.WithLabelValues(upstream).Inc()
	}
}

// Replayed records a request replayed with a new token.
func (m *Metrics) Replayed(upstream string) {
	if m != nil {
		m.Replays.WithLabelValues(upstream).Inc()
	}
}

// SharedToken records a shared token taken into use, or an attempt that
// ended without one (result "error").
func (m *Metrics) SharedToken(upstream, result string) {
	if m != nil {
		m.SharedTokens.WithLabelValues(upstream, result).Inc()
	}
}

// CoalescedWait records a caller that joined a fetch in flight.
func (m *Metrics) CoalescedWait(upstream string) {
	if m != nil {
		m.Coalesced.WithLabelValues(upstream).Inc()
	}
}

// SecretRead records one read of an upstream's credentials from source.
func (m *Metrics) SecretRead(upstream, source string, err error) {
	if m != nil {
		m.SecretReads.WithLabelValues(upstream, source, result(err)).Inc()
	}
}

// VaultLogin records one Vault login attempt.
func (m *Metrics) VaultLogin(err error) {
	if m != nil {
		m.VaultLogins.WithLabelValues(result(err)).Inc()
	}
}

// VaultRenewal records one Vault token renewal.
func (m *Metrics) VaultRenewal(err error) {
	if m != nil {
		m.VaultRenewals.WithLabelValues(result(err)).Inc()
	}
}

// ConfigReload records one reload attempt: a rejected config sets
// tokenproxy_config_last_reload_successful to 0 until one is accepted.
func (m *Metrics) ConfigReload(err error) {
	if m == nil {
		return
	}
	m.ConfigReloads.WithLabelValues(result(err)).Inc()
	if err != nil {
		m.ReloadOK.Set(0)
		return
	}
	m.ReloadOK.Set(1)
	m.ReloadOKTime.SetToCurrentTime()
}

// TokenExpiresAt records when the current token expires (zero: no token).
func (m *Metrics) TokenExpiresAt(upstream string, expiry time.Time) {
	if m == nil {
		return
	}
	if expiry.IsZero() {
		m.TokenExpiry.DeleteLabelValues(upstream)
		return
	}
	m.TokenExpiry.WithLabelValues(upstream).Set(float64(expiry.UnixMilli()) / 1000)
}

// Forget drops every series of an upstream removed by a reload.
func (m *Metrics) Forget(upstream string) {
	if m == nil {
		return
	}
	for _, v := range []*prometheus.MetricVec{m.Requests.MetricVec, m.RequestDuration.MetricVec,
		m.InFlight.MetricVec, m.ProxyErrors.MetricVec, m.TokenFetches.MetricVec, m.TokenFetchTime.MetricVec,
		m.TokenExpiry.MetricVec, m.Reauth.MetricVec, m.SecretReads.MetricVec, m.FetchFailures.MetricVec,
		m.Coalesced.MetricVec, m.Replays.MetricVec, m.SharedTokens.MetricVec} {
		v.DeletePartialMatch(prometheus.Labels{"upstream": upstream})
	}
}
