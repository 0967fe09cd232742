package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// UpstreamState is what the gauges read at scrape time report of one
// upstream: they change with the clock, not with events.
type UpstreamState struct {
	Upstream         string
	Ready            bool      // holds a token that may be handed out now
	Obtained, Expiry time.Time // of the current token; zero when none
	Failures         int       // token requests failed in a row since the last success
	NextAttempt      time.Time // when the next token request is due; zero when none is scheduled
}

var (
	readyDesc = prometheus.NewDesc("tokenproxy_upstream_ready",
		"1 while the upstream holds a valid token, else 0.", []string{"upstream"}, nil)
	ageDesc = prometheus.NewDesc("tokenproxy_token_age_seconds",
		"Seconds since the current token was obtained.", []string{"upstream"}, nil)
	ttlDesc = prometheus.NewDesc("tokenproxy_token_expiry_seconds",
		"Seconds until the current token expires.", []string{"upstream"}, nil)
	failuresDesc = prometheus.NewDesc("tokenproxy_token_fetch_consecutive_failures",
		"Token requests that failed in a row since the last success; 0 after a success.", []string{"upstream"}, nil)
	nextDesc = prometheus.NewDesc("tokenproxy_token_next_attempt_timestamp_seconds",
		"Unix time at which the next token request is due: the scheduled refresh or the end of a backoff. Absent while none is scheduled (no credentials, or a request in flight).", []string{"upstream"}, nil)
)

type stateCollector func() []UpstreamState

func (f stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{readyDesc, ageDesc, ttlDesc, failuresDesc, nextDesc} {
		ch <- d
	}
}

func (f stateCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	gauge := func(d *prometheus.Desc, v float64, upstream string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, upstream)
	}
	for _, s := range f() {
		ready := 0.0
		if s.Ready {
			ready = 1
		}
		gauge(readyDesc, ready, s.Upstream)
		gauge(failuresDesc, float64(s.Failures), s.Upstream)
		if !s.NextAttempt.IsZero() {
			gauge(nextDesc, float64(s.NextAttempt.UnixMilli())/1000, s.Upstream)
		}
		if s.Expiry.IsZero() {
			continue
		}
		gauge(ageDesc, now.Sub(s.Obtained).Seconds(), s.Upstream)
		gauge(ttlDesc, s.Expiry.Sub(now).Seconds(), s.Upstream)
	}
}

// WatchUpstreams registers the gauges read from f at each scrape:
// readiness, token age and time to expiry, consecutive fetch failures and
// the next attempt's time.
func WatchUpstreams(reg prometheus.Registerer, f func() []UpstreamState) {
	reg.MustRegister(stateCollector(f))
}
