package e2e

// The fleet tests' tools: replicas launched together, steady traffic on each
// of them with every answer kept, the shared records as Vault holds them,
// and the checks that no token shows on an admin endpoint.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// fleet is n replicas started on one config.
type fleet struct {
	v      *vaultEnv
	procs  []*proc
	config string // the config file every replica reads (and reads again on SIGHUP)
}

// launchFleet starts n replicas at once on cfg and returns without waiting.
func (v *vaultEnv) launchFleet(t *testing.T, n int, cfg config.Config) *fleet {
	t.Helper()
	path := v.writeConfig(fmt.Sprintf("fleet-%d.yaml", len(v.procs)), cfg)
	f := &fleet{v: v, config: path}
	for range n {
		f.procs = append(f.procs, v.launch("run", "--config", path))
	}
	return f
}

// startFleet starts n replicas at once on cfg and waits until each listens.
func (v *vaultEnv) startFleet(t *testing.T, n int, cfg config.Config) *fleet {
	t.Helper()
	f := v.launchFleet(t, n, cfg)
	for _, p := range f.procs {
		p.waitListening(t)
	}
	return f
}

// ready waits until every replica holds a token for every upstream.
func (f *fleet) ready(t *testing.T) {
	t.Helper()
	for _, p := range f.procs {
		p.ready(t)
	}
}

// fleetConfig is the config of every replica: the given upstreams from
// Vault, polled every second, shared through secret/tokenproxy/shared with
// the sharing section's defaults.
func (v *vaultEnv) fleetConfig(routes ...vaultRoute) config.Config {
	c := v.vaultConfig(time.Second, v.approle(), routes...)
	sharing := config.DefaultSharing()
	sharing.Vault.Path = "secret/tokenproxy/shared"
	c.Sharing = &sharing
	return c
}

// seedFleet is seed with deploy/vault/policy.hcl installed as it is (seed
// adds a KV v1 path the fleet does not use): the replicas run under
// exactly the policy an operator installs.
func (v *vaultEnv) seedFleet(t *testing.T) {
	t.Helper()
	v.seed(t)
	policy, err := os.ReadFile("../deploy/vault/policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.root.Sys().PutPolicy("tokenproxy", string(policy)); err != nil {
		t.Fatalf("policy: %v", err)
	}
}

// replicaID is the name p goes by in leases and minted_by: <hostname>-<pid>.
func (p *proc) replicaID(t *testing.T) string {
	t.Helper()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s-%d", host, p.cmd.Process.Pid)
}

// alive reports whether p has not exited.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// sharedRecord is the data of the shared secret of upstream name, read
// with the root token past any fault proxy; nil when there is none.
func (v *vaultEnv) sharedRecord(t *testing.T, name string) map[string]any {
	t.Helper()
	s, err := v.root.KVv2("secret").Get(context.Background(), "tokenproxy/shared/"+name)
	if errors.Is(err, api.ErrSecretNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("reading secret/tokenproxy/shared/%s: %v", name, err)
	}
	return s.Data
}

// recordTime is a time field of a shared record.
func recordTime(t *testing.T, rec map[string]any, key string) time.Time {
	t.Helper()
	s, _ := rec[key].(string)
	if s == "" {
		return time.Time{}
	}
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("shared record key %s: %v", key, err)
	}
	return at
}

// tokenCalls is each vendor's count of token requests so far.
func (v *vaultEnv) tokenCalls() map[string]int {
	out := map[string]int{}
	for _, k := range vaultKinds {
		out[k] = v.vendors[k].sim.TokenCalls()
	}
	return out
}

// carries reports whether a recorded request holds value anywhere a
// credential can travel: body, query or a header.
func carries(r vendorsim.Request, value string) bool {
	if strings.Contains(string(r.Body), value) || strings.Contains(r.RawQuery, url.QueryEscape(value)) {
		return true
	}
	for _, vs := range r.Header {
		for _, h := range vs {
			if strings.Contains(h, value) {
				return true
			}
		}
	}
	return false
}

// answer is one caller request's outcome.
type answer struct {
	sent, at   time.Time
	status     int
	code       string // Tokenproxy-Error
	retryAfter string
	err        error
	body       string
}

func (a answer) String() string {
	if a.err != nil {
		return fmt.Sprintf("error %v", a.err)
	}
	return fmt.Sprintf("%d %s (Retry-After %q) %.200s", a.status, a.code, a.retryAfter, a.body)
}

// trafficKey names one stream: a replica (index in the fleet) and a route.
type trafficKey struct {
	replica int
	route   string
}

// traffic is a steady stream of requests on each (replica, route), one
// after another with a pause, keeping every answer.
type traffic struct {
	stopped chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	log     map[trafficKey][]answer
}

func newTraffic() *traffic {
	return &traffic{stopped: make(chan struct{}), log: map[trafficKey][]answer{}}
}

// add starts streams on replica i (p, which must be listening) for routes.
func (tr *traffic) add(i int, p *proc, routes []vaultRoute, every time.Duration) {
	for _, r := range routes {
		tr.wg.Go(func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				a := tryRoute(p, r)
				tr.mu.Lock()
				k := trafficKey{i, r.name}
				tr.log[k] = append(tr.log[k], a)
				tr.mu.Unlock()
				select {
				case <-tr.stopped:
					return
				case <-tick.C:
				}
			}
		})
	}
}

// stop ends every stream and waits for the requests in flight.
func (tr *traffic) stop() {
	select {
	case <-tr.stopped:
	default:
		close(tr.stopped)
	}
	tr.wg.Wait()
}

// answers is a copy of the stream k's answers so far.
func (tr *traffic) answers(k trafficKey) []answer {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]answer(nil), tr.log[k]...)
}

// keys are the streams, in no order.
func (tr *traffic) keys() []trafficKey {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []trafficKey
	for k := range tr.log {
		out = append(out, k)
	}
	return out
}

// oksSince counts, per stream, the 200s to requests sent at or after since;
// the least over every stream of the given replicas and routes.
func (tr *traffic) leastOKsSince(since time.Time, replicas []int, routes []vaultRoute) int {
	least := -1
	for _, i := range replicas {
		for _, r := range routes {
			n := 0
			for _, a := range tr.answers(trafficKey{i, r.name}) {
				if a.status == 200 && !a.sent.Before(since) {
					n++
				}
			}
			if least < 0 || n < least {
				least = n
			}
		}
	}
	return max(least, 0)
}

// failures are the answers other than 200 to requests sent within [from, to).
func (tr *traffic) failures(from, to time.Time) []string {
	var out []string
	for _, k := range tr.keys() {
		for _, a := range tr.answers(k) {
			if a.status != 200 && !a.sent.Before(from) && a.sent.Before(to) {
				out = append(out, fmt.Sprintf("replica %d %s: %s", k.replica, k.route, a))
			}
		}
	}
	return out
}

// count is how many answers were received in all.
func (tr *traffic) count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, as := range tr.log {
		n += len(as)
	}
	return n
}

// tryRoute sends route's usual API call to p; it never fails the test, so
// that it can run on any goroutine.
func tryRoute(p *proc, r vaultRoute) answer {
	a := apiPath[r.kind]
	ans := answer{sent: time.Now()}
	req, err := http.NewRequest(a.method, p.data+"/"+r.name+a.path, strings.NewReader(a.body))
	if err != nil {
		ans.err = err
		return ans
	}
	if a.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		ans.err, ans.at = err, time.Now()
		return ans
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	ans.err, ans.at, ans.status = err, time.Now(), resp.StatusCode
	ans.code, ans.retryAfter = resp.Header.Get("Tokenproxy-Error"), resp.Header.Get("Retry-After")
	if resp.StatusCode != 200 {
		ans.body = string(b)
	}
	return ans
}

// checkNoTokensExposed reads /status (JSON and HTML), /readyz and /metrics
// of every live replica and fails if a token any simulator issued, or a
// credential, appears there (CONTRACT.md §7: shared tokens are secrets).
func (f *fleet) checkNoTokensExposed(t *testing.T) {
	t.Helper()
	var secrets []string
	for _, vd := range f.v.vendors {
		secrets = append(secrets, vd.sim.Tokens()...)
		for _, c := range vd.creds {
			secrets = append(secrets, c)
		}
	}
	secrets = append(secrets, f.v.secrets...)
	pages := 0
	for i, p := range f.procs {
		if !p.alive() {
			continue
		}
		for _, page := range []struct{ path, accept string }{
			{"/status", ""}, {"/status", "text/html"}, {"/readyz", ""}, {"/metrics", ""},
		} {
			var h []string
			if page.accept != "" {
				h = []string{"Accept", page.accept}
			}
			r := get(t, p.admin+page.path, h...)
			pages++
			for _, s := range secrets {
				if strings.Contains(string(r.body), s) {
					t.Errorf("replica %d: %s (Accept %q) shows a token or secret (%.12s...)", i, page.path, page.accept, s)
				}
			}
		}
	}
	if pages == 0 {
		t.Error("no live replica to check for exposed tokens")
	}
}

// sharedMetric is replica p's tokenproxy_shared_token_total for upstream
// name and result (0 when absent).
func (p *proc) sharedMetric(t *testing.T, name, result string) int {
	t.Helper()
	return int(p.vaultMetric(t, "tokenproxy_shared_token_total", "result", result, "upstream", name))
}
