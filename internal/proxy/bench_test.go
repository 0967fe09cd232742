package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/metrics"
)

// staticTokens hands out one token forever: the benchmarks measure the
// data plane, not the broker (which has its own benchmark).
type staticTokens struct{ tok broker.Token }

func (s staticTokens) Token(context.Context) (broker.Token, error) { return s.tok, nil }
func (s staticTokens) Invalidate(uint64) bool                      { return false }

// benchSetup serves body from an HTTPS upstream, reachable directly and
// through an in-process tokenproxy data plane on plain HTTP: bare (no
// metrics, no log), and observed (metrics on a registry, a JSON request log
// line per call written to io.Discard), as the daemon runs it.
func benchSetup(b *testing.B, body []byte) (direct, proxied, observed string, c *http.Client) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			w.WriteHeader(401)
			return
		}
		w.Write(body)
	}))
	b.Cleanup(up.Close)
	base, _ := url.Parse(up.URL)
	tr := up.Client().Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	// What an HGEM token carries.
	header := broker.Header{"Authorization": {"Bearer t"}, "Hgem-Api-Key": {"k"}}
	// The data plane's client, as the daemon builds it.
	api := NewClient(tr)
	b.Cleanup(api.CloseIdleConnections)
	route := &Route{Name: "up", Base: base, KeyHeaders: []string{"Hgem-Api-Key"}, Transport: api, Timeout: 30e9, ReplayMaxBytes: 1 << 20,
		Tokens: staticTokens{broker.Token{AccessToken: "t", Gen: 1, Header: header}}}
	px := newTestServer(New(NewTable([]*Route{route}), "127.0.0.1:0", nil, nil))
	b.Cleanup(px.Close)
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.InfoLevel))
	ox := newTestServer(New(NewTable([]*Route{route}), "127.0.0.1:0", metrics.New(prometheus.NewRegistry(), metrics.Build{Version: "bench"}), log))
	b.Cleanup(ox.Close)
	ctr := up.Client().Transport.(*http.Transport).Clone()
	ctr.MaxIdleConnsPerHost = 64
	return up.URL + "/data", px.URL + "/up/data", ox.URL + "/up/data", &http.Client{Transport: ctr}
}

func fetch(b *testing.B, c *http.Client, u string, header bool) int64 {
	req, _ := http.NewRequest("GET", u, nil)
	if header {
		req.Header.Set("Authorization", "Bearer direct")
	}
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
	return n
}

// BenchmarkRoundTrip compares a small JSON call made directly to an HTTPS
// upstream (the baseline, as a service holding the credential would make it)
// with the same call through tokenproxy: the difference is the proxy's cost.
func BenchmarkRoundTrip(b *testing.B) {
	for _, size := range []int{1 << 10, 1 << 20} {
		direct, proxied, observed, c := benchSetup(b, []byte(strings.Repeat("x", size)))
		for _, path := range []struct {
			name, url string
		}{{"direct", direct}, {"proxied", proxied}, {"observed", observed}} {
			b.Run("size="+sizeName(size)+"/path="+path.name, func(b *testing.B) {
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						fetch(b, c, path.url, path.name == "direct")
					}
				})
			})
		}
	}
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return "1MiB"
	}
	return "1KiB"
}
