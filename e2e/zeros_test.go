package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
)

// An explicit zero is honoured by the running binary as README documents
// it, not replaced by the default: replay_max_bytes: 0 replays only
// requests without a body, reauth_min_interval: 0s lets every 401 re-mint,
// and /config shows each, max_connections: 0 (no limit) too, as written.
func TestExplicitZerosHonoured(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	v.sim.HandleAPI("POST /api/upload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	}))
	p := e.start(configOf(config.Upstreams{"hgem": e.upstream("hgem", func(u *config.Upstream) {
		u.ReplayMaxBytes, u.ReauthMinInterval.Duration, u.MaxConnections = 0, 0, 0
	})}))
	p.ready(t)

	var cfg struct {
		Upstreams map[string]map[string]any
	}
	if r := get(t, p.admin+"/config"); r.StatusCode != 200 || json.Unmarshal(r.body, &cfg) != nil {
		t.Fatalf("/config: %d %s", r.StatusCode, r.body)
	}
	if up := cfg.Upstreams["hgem"]; up["replay_max_bytes"] != float64(0) || up["reauth_min_interval"] != "0s" || up["max_connections"] != float64(0) {
		t.Errorf("/config shows %v, want the zeros written", up)
	}

	// A body of one byte is over the limit: the 401 comes back as it is.
	v.sim.RevokeAll()
	calls, gen := len(v.sim.APIRequests()), statusOf(t, p, "hgem").Generation
	if r := do(t, "POST", p.data+"/hgem/api/upload", bytes.NewReader([]byte("x"))); r.StatusCode != http.StatusUnauthorized || r.Header.Get("Tokenproxy-Error") != "" {
		t.Fatalf("POST with a body after a revocation: %d %q, want the vendor's 401", r.StatusCode, r.Header.Get("Tokenproxy-Error"))
	}
	if n := len(v.sim.APIRequests()) - calls; n != 1 {
		t.Fatalf("%d attempts for a body with replay_max_bytes: 0, want 1", n)
	}
	// That 401 dropped the token, and a new one is fetched in the
	// background: in hand before the next revocation, or it could outlive it.
	waitFor(t, 10*time.Second, "the token that replaces the refused one", func() bool {
		s := statusOf(t, p, "hgem")
		return s.State == "ready" && s.Generation > gen
	})
	// Without a body the request is replayed; and with no reauth bound,
	// each of two 401s in a row mints a new token.
	for i := range 2 {
		v.sim.RevokeAll()
		before := v.sim.TokenCalls()
		if r := get(t, p.data+"/hgem/api/visits"); r.StatusCode != 200 {
			t.Fatalf("GET %d after a revocation: %d, want the replay's 200", i, r.StatusCode)
		}
		if n := v.sim.TokenCalls() - before; n != 1 {
			t.Fatalf("GET %d after a revocation: %d token requests, want 1 (no reauth bound)", i, n)
		}
	}
}
