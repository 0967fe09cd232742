package metrics

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg, Build{Version: "v1.2.3", Revision: "abc123"})
	want := `
# HELP tokenproxy_build_info Always 1; the labels say which build runs.
# TYPE tokenproxy_build_info gauge
tokenproxy_build_info{goversion="` + runtime.Version() + `",revision="abc123",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenproxy_build_info"); err != nil {
		t.Error(err)
	}
}

// The last reload's result is a gauge: 1 from the start (the config loaded
// then), 0 after a rejected reload until one is accepted; the success time
// moves only on success.
func TestConfigReloadGauge(t *testing.T) {
	m := New(prometheus.NewRegistry(), Build{})
	started := testutil.ToFloat64(m.ReloadOKTime)
	if v := testutil.ToFloat64(m.ReloadOK); v != 1 || started < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("at start: successful %v at %v", v, started)
	}
	m.ConfigReload(errors.New("bad"))
	if v := testutil.ToFloat64(m.ReloadOK); v != 0 || testutil.ToFloat64(m.ReloadOKTime) != started {
		t.Fatalf("after a rejected reload: successful %v", v)
	}
	m.ConfigReload(nil)
	if v := testutil.ToFloat64(m.ReloadOK); v != 1 || testutil.ToFloat64(m.ReloadOKTime) < started {
		t.Fatalf("after an accepted reload: successful %v", v)
	}
	if e, s := testutil.ToFloat64(m.ConfigReloads.WithLabelValues("error")), testutil.ToFloat64(m.ConfigReloads.WithLabelValues("success")); e != 1 || s != 1 {
		t.Fatalf("reloads: %v errors, %v successes", e, s)
	}
}

// The zero series of an upstream exist once it is declared, and are gone
// once it is forgotten; the other upstream's stay.
func TestZeroSeriesAndForget(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, Build{})
	for _, up := range []string{"a", "b"} {
		m.InitRoutes([]string{up}, []string{"upstream_timeout"}, []string{"unknown_upstream"})
		m.InitTokens(up, []string{"refused", "timeout"}, []string{"hit", "error"})
		m.InitSecrets(up, "file")
	}
	m.InitVault()
	counts := map[string]int{
		"tokenproxy_proxy_errors_total":          3, // a, b, and "" for unknown_upstream
		"tokenproxy_token_fetches_total":         4,
		"tokenproxy_token_fetch_failures_total":  4,
		"tokenproxy_upstream_reauth_total":       2,
		"tokenproxy_replays_total":               2,
		"tokenproxy_token_waits_coalesced_total": 2,
		"tokenproxy_shared_token_total":          4,
		"tokenproxy_secret_reads_total":          4,
		"tokenproxy_requests_in_flight":          2,
		"tokenproxy_vault_logins_total":          2,
		"tokenproxy_vault_renewals_total":        2,
		"tokenproxy_config_reloads_total":        2,
	}
	check := func(when string) {
		t.Helper()
		for name, want := range counts {
			if n, err := testutil.GatherAndCount(reg, name); err != nil || n != want {
				t.Errorf("%s: %s has %d series (%v), want %d", when, name, n, err, want)
			}
		}
	}
	check("declared")

	// b stops sharing and reads from Vault now: its series stay, and the
	// new source's are added; then a is removed.
	m.InitTokens("b", []string{"refused", "timeout"}, nil)
	m.InitSecrets("b", "vault")
	if v := testutil.ToFloat64(m.SecretReads.WithLabelValues("b", "vault", "error")); v != 0 {
		t.Fatal(v)
	}
	counts["tokenproxy_secret_reads_total"] = 6
	check("b changed")
	m.Forget("a")
	for name, n := range counts {
		if name != "tokenproxy_proxy_errors_total" && !strings.Contains(name, "vault") && name != "tokenproxy_config_reloads_total" {
			counts[name] = n / 2
		}
	}
	counts["tokenproxy_proxy_errors_total"] = 2
	counts["tokenproxy_secret_reads_total"] = 4 // b's file and vault reads
	check("a forgotten")
}

// An upstream that a reload rebuilds is declared again, with whatever
// changed (its source, its reasons, whether it shares): no series of it
// loses its count, in any family with an upstream label; only Forget drops
// them.
func TestDeclaredAgainKeepsCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, Build{})
	declare := func(source string, shared []string) {
		m.InitRoutes([]string{"b"}, []string{"upstream_timeout"}, nil)
		m.InitTokens("b", []string{"refused"}, shared)
		m.InitSecrets("b", source)
	}
	declare("file", []string{"hit", "error"})
	// One event in every family with an upstream label.
	m.Request("b", 200, "upstream_timeout", time.Millisecond)
	done := m.Started("b")
	m.TokenFetch("b", "refused", time.Millisecond)
	m.TokenExpiresAt("b", time.Now().Add(time.Hour))
	m.Reauthed("b")
	m.SecretRead("b", "file", errors.New("gone"))
	m.CoalescedWait("b")
	m.Replayed("b")
	m.SharedToken("b", "hit")
	before := seriesOf(t, reg, "b")
	families := map[string]bool{}
	for k := range before {
		families[strings.SplitN(k, "{", 2)[0]] = true
	}
	if len(families) != 13 {
		t.Fatalf("%d families with an upstream label recorded, want 13: %v", len(families), families)
	}

	declare("vault", nil)
	declare("env", []string{"minted"})
	after := seriesOf(t, reg, "b")
	for k, v := range before {
		if got, ok := after[k]; !ok || got != v {
			t.Errorf("%s: %v (present %v) after b was declared again, was %v", k, got, ok, v)
		}
	}
	done()
}

// seriesOf is every series of upstream in reg, with its value (a
// histogram's: its count).
func seriesOf(t *testing.T, reg *prometheus.Registry, upstream string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key, of := mf.GetName()+"{", false
			for _, l := range mt.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + ","
				of = of || (l.GetName() == "upstream" && l.GetValue() == upstream)
			}
			if !of {
				continue
			}
			switch {
			case mt.Counter != nil:
				out[key+"}"] = mt.Counter.GetValue()
			case mt.Gauge != nil:
				out[key+"}"] = mt.Gauge.GetValue()
			case mt.Histogram != nil:
				out[key+"}"] = float64(mt.Histogram.GetSampleCount())
			}
		}
	}
	return out
}
