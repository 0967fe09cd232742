package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// An API path that always answers 401 (a missing scope, a revoked
// permission) must not turn caller traffic into token requests: at most one
// 401-driven re-mint per reauth_min_interval, and 401s inside it go back to
// the caller as the vendor sent them (CONTRACT.md §3). Before this bound, 30
// requests made 22 token requests, and Prodoscore's rotating refresh tokens
// 247 refresh grants in 6s.
func TestReauthBounded(t *testing.T) {
	for _, kind := range []string{"hgem", "prodoscore"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t)
			v := e.vendors[kind]
			p := e.start(configOf(config.Upstreams{kind: e.upstream(kind, func(u *config.Upstream) {
				u.ReauthMinInterval.Duration = 3 * time.Second
			})}))
			p.ready(t)
			before := v.sim.TokenCalls()
			v.sim.SetAPIFault(&vendorsim.Fault{Status: http.StatusUnauthorized})
			c := keepAlive(t)
			start := time.Now()
			n := 0
			for time.Since(start) < 6*time.Second {
				o := sendAPI(c, p, kind)
				if o.status != http.StatusUnauthorized || o.header.Get("Tokenproxy-Error") != "" {
					t.Fatalf("request %d: %v, want the vendor's own 401", n, o)
				}
				n++
			}
			elapsed := time.Since(start)
			mints := v.sim.TokenCalls() - before
			// One re-mint at once, then at most one per 3s.
			if limit := 1 + int(elapsed/(3*time.Second)); mints < 1 || mints > limit {
				t.Fatalf("%d requests answered 401 over %s made %d token requests, want 1..%d", n, elapsed.Round(time.Millisecond), mints, limit)
			}
			if n < 30 {
				t.Fatalf("only %d requests in %s", n, elapsed)
			}
			t.Logf("%d requests answered 401 over %s: %d token requests", n, elapsed.Round(time.Millisecond), mints)
			series := fmt.Sprintf(`tokenproxy_upstream_reauth_total{upstream="%s"}`, kind)
			if got := metric(t, p, series); int(got) != mints {
				t.Fatalf("%s = %v, want %d (the re-mints that happened)", series, got, mints)
			}
			// The fault cleared, the token in hand serves again.
			v.sim.SetAPIFault(nil)
			if o := sendAPI(c, p, kind); o.status != http.StatusOK {
				t.Fatalf("after the fault: %v", o)
			}
			stopClean(t, p)
		})
	}
}
