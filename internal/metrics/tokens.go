package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TokenTimes is one upstream's current token, for the age and time-to-expiry
// gauges, which are read at scrape time because they change every second.
type TokenTimes struct {
	Upstream         string
	Obtained, Expiry time.Time
}

var (
	ageDesc = prometheus.NewDesc("tokenproxy_token_age_seconds",
		"Seconds since the current token was obtained.", []string{"upstream"}, nil)
	ttlDesc = prometheus.NewDesc("tokenproxy_token_expiry_seconds",
		"Seconds until the current token expires.", []string{"upstream"}, nil)
)

type tokenCollector func() []TokenTimes

func (f tokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- ageDesc; ch <- ttlDesc }

func (f tokenCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, t := range f() {
		if t.Expiry.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, now.Sub(t.Obtained).Seconds(), t.Upstream)
		ch <- prometheus.MustNewConstMetric(ttlDesc, prometheus.GaugeValue, t.Expiry.Sub(now).Seconds(), t.Upstream)
	}
}

// WatchTokens registers the token age and time-to-expiry gauges, read from f.
func WatchTokens(reg prometheus.Registerer, f func() []TokenTimes) {
	reg.MustRegister(tokenCollector(f))
}
