// Package devserver owns `tokenproxy dev`: the four vendor simulators on
// loopback over HTTPS, demo credentials held in memory, and a config that
// points a tokenproxy at them, so that anyone can try the proxy with curl
// without Vault or a vendor account.
package devserver

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/vendor"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// Options for the dev environment.
type Options struct {
	Listen, AdminListen string
	LogLevel            string
	TokenLifetime       time.Duration // lifetime the simulators give their tokens
}

// Env is a running set of simulators and the config that fronts them.
type Env struct {
	Config  *config.Config
	CAPEM   []byte                    // trust this for the simulators' HTTPS
	Sources map[string]secrets.Source // credentials by reference, in memory
	Sims    map[string]*vendorsim.Server
	servers []*vendorsim.TLSServer
}

// demo credentials are random per run: nothing to leak, nothing to reuse.
func demo(keys ...string) map[string]string {
	m := map[string]string{}
	for _, k := range keys {
		b := make([]byte, 12)
		rand.Read(b)
		m[k] = "demo-" + hex.EncodeToString(b)
	}
	return m
}

// Start runs the four simulators and builds the proxy's config for them.
func Start(opt Options) (*Env, error) {
	env := &Env{Sources: map[string]secrets.Source{}, Sims: map[string]*vendorsim.Server{}}
	var yaml strings.Builder
	fmt.Fprintf(&yaml, "listen: %q\nadmin_listen: %q\nlog_level: %q\nupstreams:\n", opt.Listen, opt.AdminListen, opt.LogLevel)
	for _, typ := range vendor.Builtins {
		d, _ := vendor.Builtin(typ)
		creds := demo(d.RequiredKeys()...)
		sim, err := vendorsim.New(typ, creds)
		if err != nil {
			env.Close()
			return nil, err
		}
		sim.SetRecording(false) // a long session must not grow with every request
		if opt.TokenLifetime > 0 {
			sim.SetTokenLifetime(opt.TokenLifetime)
		}
		srv, err := vendorsim.ListenTLS(sim)
		if err != nil {
			env.Close()
			return nil, err
		}
		env.servers = append(env.servers, srv)
		env.Sims[typ] = sim
		if env.CAPEM == nil {
			env.CAPEM = srv.CAPEM()
		} else {
			env.CAPEM = append(env.CAPEM, srv.CAPEM()...)
		}
		ref := "env:TOKENPROXY_DEV_" + strings.ToUpper(typ)
		env.Sources[ref] = secrets.Memory(creds)
		fmt.Fprintf(&yaml, "  %s:\n    type: %s\n    base_url: %s\n    credentials: %s\n", typ, typ, srv.URL(), ref)
		if d.TokenURL(srv.URL()) == "" {
			// No default: the token endpoint is on another host (Prodoscore).
			fmt.Fprintf(&yaml, "    token_url: %s%s\n", srv.URL(), sim.TokenPath())
		}
	}
	cfg, err := config.Parse([]byte(yaml.String()))
	if err != nil {
		env.Close()
		return nil, err
	}
	env.Config = cfg
	return env, nil
}

// OpenSource resolves the in-memory demo credentials.
func (e *Env) OpenSource(ref string, _ *secrets.Vault) (secrets.Source, error) {
	if s, ok := e.Sources[ref]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("%s: not a dev credentials reference", ref)
}

// Close stops the simulators.
func (e *Env) Close() {
	for _, s := range e.Sims {
		s.Close()
	}
	for _, s := range e.servers {
		s.Close()
	}
}

// PrintTry writes the curl lines to try, one per vendor, for a proxy whose
// data plane is at data and admin plane at admin (host:port).
func PrintTry(w io.Writer, data, admin string) {
	fmt.Fprintf(w, `tokenproxy dev: four simulated vendors behind http://%[1]s (demo credentials live only in memory).
Try (each answers through the proxy, which adds the vendor's token):

  curl -s -X POST http://%[1]s/prominsight/api/v1/tests/sessions -H 'Content-Type: application/json' -d '{"test_code":"DEMO","limit":10}'
  curl -s http://%[1]s/inspera/api/v1/test/12312312
  curl -s http://%[1]s/hgem/api/visits
  curl -s http://%[1]s/prodoscore/api/v1/employees

  curl -s http://%[2]s/status      # per-upstream token state
  curl -s http://%[2]s/metrics     # Prometheus metrics

Ctrl-C stops.
`, data, admin)
}
