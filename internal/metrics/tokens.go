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
}

var (
	readyDesc = prometheus.NewDesc("tokenproxy_upstream_ready",
		"1 while the upstream holds a valid token, else 0.", []string{"upstream"}, nil)
	ageDesc = prometheus.NewDesc("tokenproxy_token_age_seconds",
		"Seconds since the current token was obtained.", []string{"upstream"}, nil)
	ttlDesc = prometheus.NewDesc("tokenproxy_token_expiry_seconds",
		"Seconds until the current token expires.", []string{"upstream"}, nil)
)

type stateCollector func() []UpstreamState

func (f stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- readyDesc
	ch <- ageDesc
	ch <- ttlDesc
}

func (f stateCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, s := range f() {
		ready := 0.0
		if s.Ready {
			ready = 1
		}
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready, s.Upstream)
		if s.Expiry.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, now.Sub(s.Obtained).Seconds(), s.Upstream)
		ch <- prometheus.MustNewConstMetric(ttlDesc, prometheus.GaugeValue, s.Expiry.Sub(now).Seconds(), s.Upstream)
	}
}

// WatchUpstreams registers the readiness, token age and time-to-expiry
// gauges, read from f at each scrape.
func WatchUpstreams(reg prometheus.Registerer, f func() []UpstreamState) {
	reg.MustRegister(stateCollector(f))
}
