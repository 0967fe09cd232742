package deploy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite monitoring/prometheusrule.yaml from monitoring/rules.yaml")

// prometheusRule is monitoring/rules.yaml as a PrometheusRule: the same
// text, comments included, under spec.
func prometheusRule(t *testing.T) []byte {
	t.Helper()
	rules, err := os.ReadFile("monitoring/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The file's opening comment is about the file; the groups follow it.
	_, groups, ok := bytes.Cut(rules, []byte("\ngroups:\n"))
	if !ok {
		t.Fatal("monitoring/rules.yaml: no top-level groups:")
	}
	var b bytes.Buffer
	b.WriteString(`# GENERATED from rules.yaml by ` + "`go test -run TestPrometheusRule -update`" + ` in deploy/:
# edit rules.yaml, then run that. The same alerts for the prometheus-operator.
#
# Your Prometheus selects PrometheusRules by label (ruleSelector; the
# kube-prometheus-stack chart wants ` + "`release: <its release name>`" + `): add
# that label, e.g. with a kustomize ` + "`labels:`" + ` entry.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: tokenproxy
  labels:
    app.kubernetes.io/name: tokenproxy
spec:
  groups:
`)
	for _, line := range strings.SplitAfter(string(groups), "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("  ")
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

// The PrometheusRule is rules.yaml, never a copy maintained by hand.
func TestPrometheusRule(t *testing.T) {
	want := prometheusRule(t)
	if *update {
		if err := os.WriteFile("monitoring/prometheusrule.yaml", want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("monitoring/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("monitoring/prometheusrule.yaml is not monitoring/rules.yaml: run `go test -run TestPrometheusRule -update` in deploy/")
	}

	// And the same groups, read as the operator reads them.
	var file struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	rules, _ := os.ReadFile("monitoring/rules.yaml")
	if err := yaml.UnmarshalStrict(rules, &file); err != nil {
		t.Fatalf("monitoring/rules.yaml: %v", err)
	}
	obj, err := decodeStrict(got)
	if err != nil {
		t.Fatalf("monitoring/prometheusrule.yaml: %v", err)
	}
	pr := obj.(*monitoringv1.PrometheusRule)
	if !reflect.DeepEqual(pr.Spec.Groups, file.Groups) {
		t.Error("the PrometheusRule's groups differ from rules.yaml's")
	}
	alerts := map[string]bool{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want a severity label, a summary and a description", r.Alert)
			}
		}
	}
	for _, a := range []string{"TokenproxyUpstreamNotReady", "TokenproxyTokenExpiringWithoutRefresh", "TokenproxyTokenFetchErrors",
		"TokenproxyReauthRateHigh", "TokenproxyVaultLoginFailing", "TokenproxyConfigReloadFailed",
		"TokenproxyTokenRefusedByUpstream", "TokenproxyProxyErrorsHigh", "TokenproxySharingStoreFailing"} {
		if !alerts[a] {
			t.Errorf("no alert %s", a)
		}
	}
	// promtool tests every alert (scripts/test.sh runs them).
	tests, err := os.ReadFile("monitoring/rules_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for a := range alerts {
		if !bytes.Contains(tests, []byte("alertname: "+a+"\n")) {
			t.Errorf("monitoring/rules_test.yaml has no test of %s", a)
		}
	}
}

// The PodMonitor finds the example pods' tokenproxy, and the dashboard
// ConfigMap carries the dashboard.
func TestMonitoringObjects(t *testing.T) {
	objs := render(t, "monitoring")
	pms := all[*monitoringv1.PodMonitor](objs)
	if len(pms) != 1 {
		t.Fatalf("%d PodMonitors, want 1", len(pms))
	}
	pm := pms[0]
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("PodMonitor: %d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ep.Path != "/metrics" || ep.Port == nil {
		t.Errorf("PodMonitor endpoint: path %q port %v, want /metrics on a named port", ep.Path, ep.Port)
	}
	for _, ex := range examples(t) {
		pod := ex.dep.Spec.Template
		for k, v := range pm.Spec.Selector.MatchLabels {
			if pod.Labels[k] != v {
				t.Errorf("%s: the PodMonitor selects %s=%s, which the pod does not carry", ex.dir, k, v)
			}
		}
		cfg, err := parseConfig(ex.config)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
			for _, p := range c.Ports {
				if c.Name == "tokenproxy" && ep.Port != nil && p.Name == *ep.Port && strings.HasSuffix(cfg.AdminListen, ":"+strconv.Itoa(int(p.ContainerPort))) {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("%s: the PodMonitor's port %v is not tokenproxy's admin_listen (%s)", ex.dir, ep.Port, cfg.AdminListen)
		}
	}

	dash, err := os.ReadFile("monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	cms := all[*corev1.ConfigMap](objs)
	if len(cms) != 1 || cms[0].Data["grafana-dashboard.json"] != string(dash) || cms[0].Labels["grafana_dashboard"] != "1" {
		t.Error("want one ConfigMap labelled grafana_dashboard=1 holding grafana-dashboard.json")
	}
}
