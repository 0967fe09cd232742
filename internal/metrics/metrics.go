// Package metrics owns tokenproxy's Prometheus collectors. They live on a
// registry the caller injects; there is no global state. Names carry the
// tokenproxy_ prefix, use base units and keep labels to route names and
// small fixed sets.
package metrics

import (
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
	SharedTokens    *prometheus.CounterVec
}

// New registers every collector on reg.
func New(reg prometheus.Registerer, version string) *Metrics {
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
			Help: "Reads of credentials sources, by source and result.",
		}, []string{"source", "result"}),
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
		SharedTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_shared_token_total",
			Help: "Shared tokens taken into use, by how: hit (another replica's, read at once), waited (another replica's, after waiting for its lease), minted (won the lease), local (store unavailable, minted alone); error counts attempts that ended without a token.",
		}, []string{"upstream", "result"}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tokenproxy_build_info",
		Help: "Always 1; the version label says which build runs.",
	}, []string{"version"})
	build.WithLabelValues(version).Set(1)
	reg.MustRegister(m.Requests, m.RequestDuration, m.TokenFetches, m.TokenFetchTime,
		m.TokenExpiry, m.Reauth, m.SecretReads, m.FetchFailures, m.Coalesced, m.Replays,
		m.VaultLogins, m.VaultRenewals, m.ConfigReloads, m.SharedTokens, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// result is the label value for an error: "success" or "error".
func result(err error) string {
	if err != nil {
		return "error"
	}
	return "success"
}

// Request records one caller request.
func (m *Metrics) Request(upstream string, status int, d time.Duration) {
	if m == nil {
		return
	}
	m.Requests.WithLabelValues(upstream, strconv.Itoa(status)).Inc()
	m.RequestDuration.WithLabelValues(upstream).Observe(d.Seconds())
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

// SecretRead records one read of a credentials source.
func (m *Metrics) SecretRead(source string, err error) {
	if m != nil {
		m.SecretReads.WithLabelValues(source, result(err)).Inc()
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

// ConfigReload records one reload attempt.
func (m *Metrics) ConfigReload(err error) {
	if m != nil {
		m.ConfigReloads.WithLabelValues(result(err)).Inc()
	}
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
		m.TokenFetches.MetricVec, m.TokenFetchTime.MetricVec, m.TokenExpiry.MetricVec,
		m.Reauth.MetricVec, m.FetchFailures.MetricVec, m.Coalesced.MetricVec,
		m.Replays.MetricVec, m.SharedTokens.MetricVec} {
		v.DeletePartialMatch(prometheus.Labels{"upstream": upstream})
	}
}
