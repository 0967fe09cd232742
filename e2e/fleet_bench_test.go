//go:build fleetbench

package e2e

// The fleet benchmark (CONTRACT.md §7, docs/fleet.md): run on demand, never
// in CI, with scripts/fleet-bench.sh. It measures, against one Vault dev
// server behind a counting HTTP proxy:
//
//   - N replicas (-fleet.replicas, 20) cold-starting together: token
//     requests per upstream, and the time until all are ready;
//   - token requests, and Vault requests per replica, per token lifetime
//     under steady traffic, for N = 1, 5 and 20 (-fleet.sizes);
//   - the first request on a replica started after the token exists,
//     against a request on a warm replica.

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
)

var (
	benchReplicas = flag.Int("fleet.replicas", 20, "replicas in the cold-start benchmark")
	benchSizes    = flag.String("fleet.sizes", "1,5,20", "fleet sizes of the steady-state benchmark")
	benchLifetime = flag.Duration("fleet.lifetime", 10*time.Second, "token lifetime of the steady-state benchmark")
	benchRounds   = flag.Int("fleet.lifetimes", 3, "token lifetimes of steady traffic per fleet size")
)

// vaultCounter is an HTTP proxy in front of Vault that counts requests by
// what they are for.
type vaultCounter struct {
	srv    *httptest.Server
	mu     sync.Mutex
	counts map[string]int
}

func newVaultCounter(t *testing.T, target string) *vaultCounter {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	c := &vaultCounter{counts: map[string]int{}}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.counts[vaultPurpose(r)]++
		c.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// vaultPurpose names what a request to Vault is for.
func vaultPurpose(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/v1/sys/internal/ui/mounts/"):
		return "mount lookup"
	case strings.Contains(p, "/tokenproxy/shared/") && r.Method == http.MethodGet:
		return "store read"
	case strings.Contains(p, "/tokenproxy/shared/"):
		return "store write"
	case strings.HasPrefix(p, "/v1/secret/data/tokenproxy/"):
		return "credentials read"
	case strings.HasPrefix(p, "/v1/auth/approle/login"):
		return "login"
	case strings.HasPrefix(p, "/v1/auth/token/"):
		return "token renewal"
	}
	return "other"
}

// take returns the counts since the last take and resets them.
func (c *vaultCounter) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	c.counts = map[string]int{}
	return out
}

func total(m map[string]int) int {
	n := 0
	for _, x := range m {
		n += x
	}
	return n
}

// benchConfig is the fleet's config with Vault reached through c, with the
// default poll_interval (60s), as a fleet runs in production.
func (v *vaultEnv) benchConfig(c *vaultCounter) config.Config {
	cfg := v.fleetConfig(vaultKV2Routes()...)
	cfg.Secrets.Vault.Address, cfg.Secrets.Vault.PollInterval.Duration = c.srv.URL, config.DefaultPollInterval
	return cfg
}

// waitAllReady polls every replica until it listens and /readyz says 200,
// and returns when each became ready.
func waitAllReady(t *testing.T, procs []*proc, within time.Duration) []time.Time {
	t.Helper()
	at := make([]time.Time, len(procs))
	left := len(procs)
	waitFor(t, within, "every replica ready", func() bool {
		for i, p := range procs {
			if !at[i].IsZero() {
				continue
			}
			if p.admin == "" {
				for _, l := range p.logLines() {
					if l["msg"] == "listening" {
						p.data, p.admin = "http://"+l["listen"].(string), "http://"+l["admin_listen"].(string)
					}
				}
				if p.admin == "" {
					continue
				}
			}
			if resp, err := client.Get(p.admin + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					at[i], left = time.Now(), left-1
				}
			}
		}
		return left == 0
	})
	return at
}

func TestFleetBenchmark(t *testing.T) {
	t.Run("cold start", benchColdStart)
	t.Run("steady", benchSteady)
	t.Run("cold replica", benchColdReplica)
}

// benchColdStart launches -fleet.replicas replicas at once.
func benchColdStart(t *testing.T) {
	n := *benchReplicas
	v := newVaultEnv(t)
	v.seedFleet(t)
	c := newVaultCounter(t, v.srv.Addr())
	cfg := v.benchConfig(c)
	c.take()
	start := time.Now()
	f := v.launchFleet(t, n, cfg)
	at := waitAllReady(t, f.procs, 2*time.Minute)
	var took []time.Duration
	for _, a := range at {
		took = append(took, a.Sub(start))
	}
	slices.Sort(took)
	vault := c.take()
	calls := v.tokenCalls()
	t.Logf("cold start of %d replicas: token requests per upstream %v; ready: first %s, median %s, all %s; Vault requests %d (%.1f per replica): %v",
		n, calls, took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
		total(vault), float64(total(vault))/float64(n), vault)
	for _, k := range vaultKinds {
		if calls[k] != 1 {
			t.Errorf("%s: %d token requests from %d replicas, want 1", k, calls[k], n)
		}
	}
}

// benchSteady runs each fleet size under traffic for -fleet.lifetimes
// token lifetimes.
func benchSteady(t *testing.T) {
	var rows []string
	for _, s := range strings.Split(*benchSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			t.Fatalf("-fleet.sizes: %q is not a fleet size", s)
		}
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			life, rounds := *benchLifetime, *benchRounds
			v := newVaultEnv(t)
			v.seedFleet(t)
			for _, k := range vaultKinds {
				v.vendors[k].sim.SetTokenLifetime(life)
			}
			c := newVaultCounter(t, v.srv.Addr())
			f := v.launchFleet(t, n, v.benchConfig(c))
			waitAllReady(t, f.procs, 2*time.Minute)
			tr := newTraffic()
			for i, p := range f.procs {
				tr.add(i, p, vaultKV2Routes(), 500*time.Millisecond)
			}
			before := v.tokenCalls()
			c.take()
			start := time.Now()
			waitFor(t, time.Duration(rounds)*life+time.Minute, "the benchmark's lifetimes", func() bool {
				return time.Since(start) >= time.Duration(rounds)*life
			})
			vault := c.take()
			tr.stop()
			after := v.tokenCalls()
			tokens := 0
			for _, k := range vaultKinds {
				tokens += after[k] - before[k]
			}
			perLife := float64(tokens) / float64(len(vaultKinds)) / float64(rounds)
			store := vault["store read"] + vault["store write"]
			row := fmt.Sprintf("N=%d: %.2f token requests per upstream per lifetime (%s); Vault requests per replica per lifetime: %.2f in all, %.2f for the store (%d reads, %d writes), over %d lifetimes of 4 upstreams; %d caller requests, %d not 200",
				n, perLife, life, float64(total(vault))/float64(n*rounds), float64(store)/float64(n*rounds),
				vault["store read"], vault["store write"], rounds, tr.count(), len(tr.failures(start, time.Now())))
			t.Log(row, vault)
			rows = append(rows, row)
		})
	}
	for _, r := range rows {
		t.Log(r)
	}
}

// benchColdReplica compares the first request on a replica started after
// the fleet's token exists with requests on a warm replica.
func benchColdReplica(t *testing.T) {
	const cold = 7
	v := newVaultEnv(t)
	v.seedFleet(t)
	c := newVaultCounter(t, v.srv.Addr())
	cfg := v.benchConfig(c)
	warm := v.start(cfg)
	warm.ready(t)
	hgem := vaultKV2Route("hgem")
	var warmTook []time.Duration
	for range 50 {
		a := tryRoute(warm, hgem)
		if a.status != 200 {
			t.Fatalf("warm replica: %s", a)
		}
		warmTook = append(warmTook, a.at.Sub(a.sent))
	}
	var first, hit []time.Duration
	for range cold {
		p := v.launch("run", "--config", v.writeConfig("cold.yaml", cfg))
		p.waitListening(t)
		a := tryRoute(p, hgem)
		if a.status != 200 {
			t.Fatalf("cold replica: %s", a)
		}
		first = append(first, a.at.Sub(a.sent))
		// From the replica's own log: credentials read, then the shared
		// token taken from the store.
		var loaded, obtained time.Time
		for _, l := range p.logLines() {
			ts, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["ts"]))
			switch {
			case l["upstream"] == "hgem" && l["msg"] == "credentials loaded":
				loaded = ts
			case l["upstream"] == "hgem" && l["msg"] == "token obtained" && l["source"] == "hit":
				obtained = ts
			}
		}
		if loaded.IsZero() || obtained.IsZero() {
			t.Fatalf("cold replica: no shared hit logged for hgem")
		}
		hit = append(hit, obtained.Sub(loaded))
		p.stop()
	}
	if n := v.vendors["hgem"].sim.TokenCalls(); n != 1 {
		t.Errorf("hgem: %d token requests, want 1: every cold replica should have used the stored token", n)
	}
	med := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)/2].Round(10 * time.Microsecond)
	}
	t.Logf("request latency: warm replica median %s (of %d); first request on a cold replica, sent as soon as it listens, median %s (of %d: %v); "+
		"credentials read to shared token held, from the replica's log, median %s",
		med(warmTook), len(warmTook), med(first), cold, first, med(hit))
}
