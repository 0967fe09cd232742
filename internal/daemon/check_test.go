package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/testlog"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// Every goroutine a check starts (fetches, refreshers, the Vault client,
// idle connections) is gone once it returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// blockingSource never answers until its context ends, as a Vault that
// accepts the connection and then says nothing.
type blockingSource struct{}

func (blockingSource) Kind() string { return "vault" }
func (blockingSource) Read(ctx context.Context) (secrets.Credentials, error) {
	<-ctx.Done()
	return secrets.Credentials{}, ctx.Err()
}

// checkEnv is one simulator per kind over HTTPS, with in-memory credentials.
type checkEnv struct {
	sims  map[string]*vendorsim.Server
	creds map[string]map[string]string // by credentials reference
	cfg   *config.Config
	opt   Options
	logs  *testlog.Buffer
}

func newCheckEnv(t *testing.T, kinds ...string) *checkEnv {
	t.Helper()
	e := &checkEnv{sims: map[string]*vendorsim.Server{}, creds: map[string]map[string]string{},
		cfg: &config.Config{LogLevel: "debug", Upstreams: map[string]config.Upstream{}}, logs: &testlog.Buffer{}}
	for _, kind := range kinds {
		creds := map[string]string{}
		for _, k := range (&config.Upstream{Type: kind}).RequiredKeys() {
			creds[k] = "CANARY-" + kind + "-" + k + "-4b1d"
		}
		sim, err := vendorsim.New(kind, creds)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := vendorsim.ListenTLS(sim)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sim.Close(); srv.Close() })
		e.sims[kind] = sim
		e.opt.ExtraRootsPEM = append(e.opt.ExtraRootsPEM, srv.CAPEM()...)
		ref := "env:CHECK_" + strings.ToUpper(kind)
		e.creds[ref] = creds
		u := config.DefaultUpstream()
		u.Type, u.BaseURL, u.Credentials = kind, srv.URL(), ref
		u.TokenURL, u.MaxConnections = config.DefaultTokenURL(kind, srv.URL()), 4
		u.TokenTimeout = config.Duration{Duration: 5 * time.Second}
		if kind == "prodoscore" {
			u.TokenURL = srv.URL() + sim.TokenPath()
		}
		e.cfg.Upstreams[kind] = u
	}
	e.opt.OpenSource = func(ref string, _ *secrets.Vault) (secrets.Source, error) {
		if c, ok := e.creds[ref]; ok {
			return secrets.Memory(c), nil
		}
		return blockingSource{}, nil
	}
	e.opt.LogOutput = e.logs
	return e
}

// check runs Check and fails the test if any output holds a credential.
func (e *checkEnv) check(t *testing.T, ctx context.Context) map[string]CheckResult {
	t.Helper()
	results := Check(ctx, e.cfg, e.opt)
	out := map[string]CheckResult{}
	var names []string
	for _, r := range results {
		out[r.Name] = r
		names = append(names, r.Name)
		if r.Err != nil && strings.Contains(r.Err.Error(), "CANARY") {
			t.Errorf("%s: reason holds a credential: %v", r.Name, r.Err)
		}
	}
	if strings.Contains(e.logs.String(), "CANARY") {
		t.Errorf("logs hold a credential:\n%s", e.logs.String())
	}
	for _, sim := range e.sims {
		for _, tok := range sim.Tokens() {
			if strings.Contains(e.logs.String(), tok) {
				t.Errorf("logs hold a token")
			}
		}
	}
	if want := e.cfg.UpstreamNames(); strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("results for %v, want %v in that order", names, want)
	}
	return out
}

func TestCheckFetchesOneTokenPerUpstream(t *testing.T) {
	e := newCheckEnv(t, "prominsight", "inspera", "hgem", "prodoscore")
	start := time.Now()
	for name, r := range e.check(t, context.Background()) {
		if r.Err != nil {
			t.Errorf("%s: %v", name, r.Err)
			continue
		}
		if !r.Expiry.After(start.Add(30 * time.Minute)) {
			t.Errorf("%s: token expires at %s, want the simulator's hour", name, r.Expiry)
		}
		if n := e.sims[name].TokenCalls(); n != 1 {
			t.Errorf("%s: %d token requests, want 1", name, n)
		}
	}
}

func TestCheckNamesWhatFailed(t *testing.T) {
	e := newCheckEnv(t, "prominsight", "inspera", "hgem", "prodoscore")
	// hgem: the vendor refuses the credentials.
	e.sims["hgem"].SetCredentials(map[string]string{"api_key": "k", "client_id": "other", "client_secret": "s"})
	// inspera: a key is missing from the credentials.
	delete(e.creds["env:CHECK_INSPERA"], "api_key")
	// prominsight: the token endpoint never answers.
	e.sims["prominsight"].SetTokenFault(&vendorsim.Fault{Hang: true})
	pi := e.cfg.Upstreams["prominsight"]
	pi.TokenTimeout.Duration = 300 * time.Millisecond
	e.cfg.Upstreams["prominsight"] = pi
	// prodoscore: its credentials never arrive (a Vault that says nothing);
	// the read counts against token_timeout.
	pd := e.cfg.Upstreams["prodoscore"]
	pd.Credentials = "vault:secret/prodoscore"
	pd.TokenTimeout.Duration = 300 * time.Millisecond
	e.cfg.Upstreams["prodoscore"] = pd

	got := e.check(t, context.Background())
	want := map[string]string{
		"hgem":        "token endpoint refused the credentials: HTTP 401, invalid_client",
		"inspera":     "credentials unavailable: env:CHECK_INSPERA: missing key api_key",
		"prominsight": "no token within token_timeout (300ms): the token endpoint did not answer in time",
		"prodoscore":  "credentials not read within token_timeout (300ms)",
	}
	for name, w := range want {
		r := got[name]
		if r.Err == nil || !strings.HasPrefix(r.Err.Error(), w) {
			t.Errorf("%s: %v, want a reason starting %q", name, r.Err, w)
		}
		if !r.Expiry.IsZero() {
			t.Errorf("%s: an expiry without a token", name)
		}
	}
	if n := e.sims["prodoscore"].TokenCalls(); n != 0 {
		t.Errorf("prodoscore: %d token requests without credentials", n)
	}
}

func TestCheckStopsWhenInterrupted(t *testing.T) {
	e := newCheckEnv(t, "hgem")
	hook := make(chan struct{})
	e.opt.OpenSource = func(string, *secrets.Vault) (secrets.Source, error) {
		close(hook)
		return blockingSource{}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-hook; cancel() }()
	r := e.check(t, ctx)["hgem"]
	if r.Err == nil || r.Err.Error() != "interrupted" {
		t.Errorf("got %v, want interrupted", r.Err)
	}
}

func TestCheckReportsABadCAFileOnItsKey(t *testing.T) {
	e := newCheckEnv(t, "hgem")
	u := e.cfg.Upstreams["hgem"]
	u.CAFile = "/nonexistent/ca.pem"
	e.cfg.Upstreams["hgem"] = u
	r := e.check(t, context.Background())["hgem"]
	if r.Err == nil || !strings.HasPrefix(r.Err.Error(), "upstreams.hgem.ca_file") {
		t.Errorf("got %v, want a reason on upstreams.hgem.ca_file", r.Err)
	}
	if e.sims["hgem"].TokenCalls() != 0 {
		t.Errorf("a token was asked for")
	}
}
