package e2e

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// targetLabels are added by Prometheus (and the prometheus-operator) to every
// scraped series; queries may use them though tokenproxy does not expose them.
var targetLabels = []string{"instance", "job", "namespace", "pod", "container", "endpoint"}

// The dashboard and the alert rules in deploy/monitoring query only what
// tokenproxy exposes: after traffic that moves every family they use, each
// metric name they name is in a running binary's /metrics, with every label
// they filter or group on.
func TestMonitoringQueriesOnlyExposedMetrics(t *testing.T) {
	queries := monitoringQueries(t)
	if len(queries) < 20 {
		t.Fatalf("found %d queries in deploy/monitoring; the dashboard and rules have more", len(queries))
	}

	// Vault (logins, secret reads), the fleet's sharing store, a token
	// fetch that fails, a 401 and its re-mint, and a reload.
	v := newVaultEnv(t)
	v.seedFleet(t)
	v.vendors["prodoscore"].sim.SetTokenFault(&vendorsim.Fault{Status: 503, Count: 1})
	cfg := v.vaultConfig(time.Minute, v.approle(), vaultKV2Route("hgem"), vaultKV2Route("prodoscore"))
	sharing := config.DefaultSharing()
	sharing.Vault.Path = "secret/tokenproxy/shared"
	cfg.Sharing = &sharing
	path := v.writeConfig("monitoring.yaml", cfg)
	p := v.startArgs("run", "--config", path)
	p.ready(t)
	if r := call(t, p, "hgem"); r.StatusCode != 200 {
		t.Fatalf("hgem: %d %s", r.StatusCode, r.body)
	}
	v.vendors["hgem"].sim.RevokeAll()
	if r := call(t, p, "hgem"); r.StatusCode != 200 {
		t.Fatalf("hgem after its tokens were revoked: %d %s", r.StatusCode, r.body)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the reload", func() bool {
		_, ok := scrapeMetrics(t, p).value("tokenproxy_config_reloads_total", "result", "success")
		return ok
	})

	// Every series name with its label names; a histogram X is X_bucket
	// (with le), X_sum and X_count.
	exposed := map[string][]string{}
	for name, mf := range scrapeMetrics(t, p) {
		var labels []string
		for _, m := range mf.GetMetric() {
			for l := range labelsOf(m) {
				if !slices.Contains(labels, l) {
					labels = append(labels, l)
				}
			}
		}
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			exposed[name+"_bucket"] = append(slices.Clone(labels), "le")
			exposed[name+"_sum"], exposed[name+"_count"] = labels, labels
			continue
		}
		exposed[name] = labels
	}

	metricRE := regexp.MustCompile(`\b(tokenproxy_[a-z0-9_]+)\b(\{[^}]*\})?`)
	matcherRE := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	groupingRE := regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	used := 0
	for _, q := range queries {
		var names, labels []string
		for _, m := range metricRE.FindAllStringSubmatch(q.expr, -1) {
			name := m[1]
			names = append(names, name)
			have, ok := exposed[name]
			if !ok {
				t.Errorf("%s: %s is not in tokenproxy's /metrics", q.where, name)
				continue
			}
			used++
			labels = append(labels, have...)
			for _, mm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
				if l := mm[1]; !slices.Contains(have, l) && !slices.Contains(targetLabels, l) {
					t.Errorf("%s: %s has no label %q", q.where, name, l)
				}
			}
		}
		if len(names) == 0 {
			t.Errorf("%s queries no tokenproxy metric: %s", q.where, q.expr)
		}
		for _, g := range groupingRE.FindAllStringSubmatch(q.expr, -1) {
			for l := range strings.SplitSeq(g[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !slices.Contains(labels, l) && !slices.Contains(targetLabels, l) {
					t.Errorf("%s: groups on %q, which none of %v has", q.where, l, names)
				}
			}
		}
	}
	t.Logf("%d queries, %d references to exposed metrics", len(queries), used)
}

type query struct{ where, expr string }

// monitoringQueries are the PromQL expressions of the alert rules and of the
// dashboard's panels and variables.
func monitoringQueries(t *testing.T) []query {
	t.Helper()
	var out []query
	b, err := os.ReadFile("../deploy/monitoring/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert, Record, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("rules.yaml: %v", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, query{"rules.yaml " + r.Alert + r.Record, r.Expr})
		}
	}

	b, err = os.ReadFile("../deploy/monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name  string
				Type  string
				Query json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			out = append(out, query{"dashboard panel " + p.Title, tg.Expr})
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if json.Unmarshal(v.Query, &q) != nil {
			json.Unmarshal(v.Query, &q.Query) // an older dashboard's plain string
		}
		out = append(out, query{"dashboard variable " + v.Name, q.Query})
	}
	return out
}
