package deploy

import (
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The user and group of the image (Dockerfile) and of every manifest.
const uid, gid = 65532, 65532

// kustomizations are every directory under deploy/ with a kustomization.yaml.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// render builds the kustomization in dir, as `kubectl kustomize dir` does,
// and decodes every object strictly into its API type: a field the type does
// not have is an error, as the API server's strict validation would make it.
func render(t *testing.T, dir string) []any {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []any
	for _, r := range m.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		obj, err := decodeStrict(b)
		if err != nil {
			t.Fatalf("%s: %s %s: %v", dir, r.GetKind(), r.GetName(), err)
		}
		objs = append(objs, obj)
	}
	return objs
}

func decodeStrict(b []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(b, &tm); err != nil {
		return nil, err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1 ServiceAccount":
		obj = &corev1.ServiceAccount{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "networking.k8s.io/v1 NetworkPolicy":
		obj = &networkingv1.NetworkPolicy{}
	case "monitoring.coreos.com/v1 PodMonitor":
		obj = &monitoringv1.PodMonitor{}
	case "monitoring.coreos.com/v1 PrometheusRule":
		obj = &monitoringv1.PrometheusRule{}
	default:
		return nil, fmt.Errorf("no API type known for %s %s", tm.APIVersion, tm.Kind)
	}
	return obj, yaml.UnmarshalStrict(b, obj)
}

func all[T any](objs []any) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func TestEveryKustomizationRenders(t *testing.T) {
	dirs := kustomizations(t)
	want := []string{"kubernetes/base", "kubernetes/overlays/classic-sidecar", "kubernetes/overlays/fleet", "monitoring"}
	for _, w := range want {
		if !slices.Contains(dirs, w) {
			t.Errorf("no kustomization in deploy/%s (found %v)", w, dirs)
		}
	}
	for _, dir := range dirs {
		if len(render(t, dir)) == 0 {
			t.Errorf("%s renders nothing", dir)
		}
	}
	// Strict: a misspelt field is an error, not a field quietly dropped.
	typo := "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          imagePullPolicyy: Always\n"
	if _, err := decodeStrict([]byte(typo)); err == nil || !strings.Contains(err.Error(), "imagePullPolicyy") {
		t.Errorf("a Deployment with a misspelt field decoded: %v", err)
	}
}

// example is one rendered tokenproxy Deployment with its config.
type example struct {
	dir      string
	native   bool // tokenproxy is a native sidecar (an init container with restartPolicy Always)
	dep      *appsv1.Deployment
	config   string                        // the tokenproxy config file the pod mounts
	policies []*networkingv1.NetworkPolicy // every NetworkPolicy rendered with it
	services []*corev1.Service
}

// examples are the Deployments of every kustomization under kubernetes/.
func examples(t *testing.T) []*example {
	t.Helper()
	var out []*example
	for _, dir := range kustomizations(t) {
		if !strings.HasPrefix(dir, "kubernetes") {
			continue
		}
		objs := render(t, dir)
		deps := all[*appsv1.Deployment](objs)
		if len(deps) != 1 {
			t.Fatalf("%s: %d Deployments, want 1", dir, len(deps))
		}
		ex := &example{dir: dir, native: filepath.Base(dir) != "classic-sidecar", dep: deps[0]}
		cm := configMapOf(t, ex, all[*corev1.ConfigMap](objs))
		ex.config = cm.Data["config.yaml"]
		if ex.config == "" {
			t.Fatalf("%s: ConfigMap %s has no config.yaml", dir, cm.Name)
		}
		if sas := all[*corev1.ServiceAccount](objs); len(sas) != 1 || sas[0].Name != ex.dep.Spec.Template.Spec.ServiceAccountName {
			t.Errorf("%s: the pod's service account %q is not the one ServiceAccount rendered", dir, ex.dep.Spec.Template.Spec.ServiceAccountName)
		} else if a := sas[0].AutomountServiceAccountToken; a == nil || *a {
			t.Errorf("%s: ServiceAccount %s: automountServiceAccountToken must be false", dir, sas[0].Name)
		}
		ex.services = all[*corev1.Service](objs)
		for _, svc := range ex.services {
			checkService(t, ex, svc)
		}
		ex.policies = all[*networkingv1.NetworkPolicy](objs)
		out = append(out, ex)
	}
	if len(out) != 3 {
		t.Fatalf("%d example Deployments, want base, classic-sidecar and fleet", len(out))
	}
	return out
}

// configMapOf is the ConfigMap behind the config volume tokenproxy mounts.
func configMapOf(t *testing.T, ex *example, cms []*corev1.ConfigMap) *corev1.ConfigMap {
	t.Helper()
	for _, v := range ex.dep.Spec.Template.Spec.Volumes {
		if v.ConfigMap == nil {
			continue
		}
		for _, cm := range cms {
			if cm.Name == v.ConfigMap.Name {
				return cm
			}
		}
		t.Fatalf("%s: volume %s names ConfigMap %s, which is not rendered", ex.dir, v.Name, v.ConfigMap.Name)
	}
	t.Fatalf("%s: no ConfigMap volume", ex.dir)
	return nil
}

func checkService(t *testing.T, ex *example, svc *corev1.Service) {
	t.Helper()
	pod := ex.dep.Spec.Template
	for k, v := range svc.Spec.Selector {
		if pod.Labels[k] != v {
			t.Errorf("%s: Service %s selects %s=%s, which the pod does not carry", ex.dir, svc.Name, k, v)
		}
	}
	for _, p := range svc.Spec.Ports {
		found := false
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				found = found || (c.Name != "tokenproxy" && (cp.Name == p.TargetPort.StrVal || cp.ContainerPort == p.TargetPort.IntVal))
			}
		}
		if !found {
			t.Errorf("%s: Service %s port %s: target %s is no port of the app", ex.dir, svc.Name, p.Name, p.TargetPort.String())
		}
	}
}

func TestExampleDeployments(t *testing.T) {
	for _, ex := range examples(t) {
		t.Run(strings.ReplaceAll(ex.dir, "/", "_"), func(t *testing.T) {
			for _, p := range ex.problems() {
				t.Error(p)
			}
			if ex.native == false && ex.dir != "kubernetes/overlays/classic-sidecar" {
				t.Errorf("only the classic-sidecar overlay may run tokenproxy as a classic sidecar")
			}
			cfg, err := parseConfig(ex.config)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(ex.dir, "fleet") {
				if r := ex.dep.Spec.Replicas; r == nil || *r < 2 {
					t.Errorf("fleet: replicas %v, want more than one", r)
				}
				if cfg.Sharing == nil {
					t.Error("fleet: the config has no sharing section")
				}
				if s := ex.dep.Spec.Strategy; s.Type == appsv1.RecreateDeploymentStrategyType {
					t.Error("fleet: strategy Recreate; the fleet shares its tokens, so it can roll without a gap")
				}
			} else if cfg.Sharing != nil {
				t.Error("only the fleet overlay turns sharing on")
			}
			if !ex.native && cfg.drainDelay() == 0 {
				t.Error("classic-sidecar: drain_delay is 0, but the app and tokenproxy get SIGTERM together: tokenproxy must keep serving while the app finishes")
			}
		})
	}
}

// Every tokenproxy config the manifests carry passes `tokenproxy validate`.
func TestEmbeddedConfigsValidate(t *testing.T) {
	for _, ex := range examples(t) {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(ex.config), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary, "validate", "--config", path)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("%s: tokenproxy validate: %v\n%s%s", ex.dir, err, stdout.String(), stderr.String())
		}
	}
}

// tpConfig is what these checks need of a tokenproxy config; `tokenproxy
// validate` checks the rest. Unset values take the contract's defaults.
type tpConfig struct {
	Listen          string `json:"listen"`
	AdminListen     string `json:"admin_listen"`
	ShutdownTimeout string `json:"shutdown_timeout"`
	DrainDelay      string `json:"drain_delay"`
	Secrets         struct {
		Vault *struct {
			Auth struct {
				Method  string `json:"method"`
				JWTFile string `json:"jwt_file"`
			} `json:"auth"`
		} `json:"vault"`
	} `json:"secrets"`
	Sharing   map[string]any `json:"sharing"`
	Upstreams map[string]struct {
		Type   string `json:"type"`
		Shared *bool  `json:"shared"`
	} `json:"upstreams"`
}

// oneLiveTokenPerUser are the upstream types whose vendor refuses a second
// live token for the same user (VENDORS.md: Inspera's 409 "Multiple tokens
// for user").
var oneLiveTokenPerUser = []string{"inspera"}

// unshared names the upstreams of a type in oneLiveTokenPerUser whose token
// each tokenproxy holds alone: no sharing section, or shared: false (CONTRACT.md §7).
func (c *tpConfig) unshared() []string {
	var names []string
	for name, u := range c.Upstreams {
		if slices.Contains(oneLiveTokenPerUser, u.Type) && (c.Sharing == nil || (u.Shared != nil && !*u.Shared)) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func parseConfig(s string) (*tpConfig, error) {
	c := &tpConfig{Listen: "127.0.0.1:8080", AdminListen: "127.0.0.1:9901", ShutdownTimeout: "20s", DrainDelay: "0s"}
	if err := yaml.Unmarshal([]byte(s), c); err != nil {
		return nil, fmt.Errorf("config: %v", err)
	}
	return c, nil
}

// drainDelay and shutdownTimeout are zero when malformed: `tokenproxy
// validate` reports that.
func (c *tpConfig) drainDelay() time.Duration {
	d, _ := time.ParseDuration(c.DrainDelay)
	return d
}

func (c *tpConfig) shutdownTimeout() time.Duration {
	d, _ := time.ParseDuration(c.ShutdownTimeout)
	return d
}

// problems lists every invariant the example breaks.
func (ex *example) problems() []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, ex.dir+": "+fmt.Sprintf(format, args...)) }
	cfg, err := parseConfig(ex.config)
	if err != nil {
		return []string{ex.dir + ": " + err.Error()}
	}
	pod := ex.dep.Spec.Template.Spec

	// The sidecar: native (an init container that restarts) or classic.
	var tp *corev1.Container
	tpIsInit := false
	for i, c := range pod.InitContainers {
		if c.Name == "tokenproxy" {
			tp, tpIsInit = &pod.InitContainers[i], true
			if p := c.RestartPolicy; p == nil || *p != corev1.ContainerRestartPolicyAlways {
				add("tokenproxy is an init container without restartPolicy: Always: the app would never start")
			}
		}
	}
	for i, c := range pod.Containers {
		if c.Name == "tokenproxy" {
			if tp != nil {
				add("two tokenproxy containers")
			}
			tp = &pod.Containers[i]
		}
	}
	switch {
	case tp == nil:
		return append(ps, ex.dir+": no container named tokenproxy")
	case ex.native && tp.RestartPolicy == nil:
		add("tokenproxy is not a native sidecar (initContainers with restartPolicy: Always)")
	case !ex.native && tpIsInit:
		add("classic-sidecar: tokenproxy must be a regular container")
	}

	// The pod's identity: no token anywhere but tokenproxy's own, for Vault.
	if a := pod.AutomountServiceAccountToken; a == nil || *a {
		add("the pod must set automountServiceAccountToken: false, or every container gets the service-account token")
	}
	checkSecurity := func(where string, sc *corev1.SecurityContext, psc *corev1.PodSecurityContext) {
		if sc == nil {
			add("%s: no securityContext", where)
			return
		}
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			add("%s: runAsNonRoot must be true", where)
		}
		if sc.RunAsUser == nil || *sc.RunAsUser != uid || sc.RunAsGroup == nil || *sc.RunAsGroup != gid {
			add("%s: runAsUser and runAsGroup must be %d (numeric, so the kubelet can verify non-root)", where, uid)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			add("%s: readOnlyRootFilesystem must be true", where)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			add("%s: allowPrivilegeEscalation must be false", where)
		}
		if sc.Privileged != nil && *sc.Privileged {
			add("%s: privileged", where)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			add("%s: capabilities must drop ALL and add none", where)
		}
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			add("%s: seccompProfile must be RuntimeDefault", where)
		}
	}
	checkSecurity("tokenproxy", tp.SecurityContext, pod.SecurityContext)
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.RunAsUser == nil || *psc.RunAsUser != uid || psc.RunAsGroup == nil || *psc.RunAsGroup != gid ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		add("the pod's securityContext must set runAsNonRoot, runAsUser/runAsGroup %d and seccompProfile RuntimeDefault", uid)
	}

	mountedBy := func(volume string) []string {
		var names []string
		for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
			for _, m := range c.VolumeMounts {
				if m.Name == volume {
					names = append(names, c.Name)
				}
			}
		}
		return names
	}
	jwtFile := ""
	for _, v := range pod.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken == nil {
				continue
			}
			if src.ServiceAccountToken.Audience != "vault" {
				add("volume %s: a service-account token with audience %q; want \"vault\", which the Vault role checks", v.Name, src.ServiceAccountToken.Audience)
			}
			if by := mountedBy(v.Name); !slices.Equal(by, []string{"tokenproxy"}) {
				add("volume %s (a service-account token) is mounted into %v; it must be mounted into tokenproxy alone", v.Name, by)
			}
			for _, m := range tp.VolumeMounts {
				if m.Name == v.Name {
					jwtFile = filepath.Join(m.MountPath, src.ServiceAccountToken.Path)
					if m.SubPath != "" {
						jwtFile = m.MountPath
					}
				}
			}
		}
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(m.MountPath, "/var/run/secrets/kubernetes.io") {
				add("%s mounts %s, the default service-account token's place", c.Name, m.MountPath)
			}
		}
	}
	switch {
	case cfg.Secrets.Vault == nil || cfg.Secrets.Vault.Auth.Method != "kubernetes":
		add("the config must log in to Vault with method kubernetes")
	case jwtFile == "":
		add("no projected service-account token is mounted into tokenproxy")
	case cfg.Secrets.Vault.Auth.JWTFile != jwtFile:
		add("the config's jwt_file is %q, but the projected token is at %s", cfg.Secrets.Vault.Auth.JWTFile, jwtFile)
	}

	// The config file: mounted where --config says.
	configPath := ""
	for i, a := range tp.Args {
		if a == "--config" && i+1 < len(tp.Args) {
			configPath = tp.Args[i+1]
		} else if v, ok := strings.CutPrefix(a, "--config="); ok {
			configPath = v
		}
	}
	found := false
	for _, v := range pod.Volumes {
		for _, m := range tp.VolumeMounts {
			if v.ConfigMap != nil && m.Name == v.Name && filepath.Join(m.MountPath, "config.yaml") == configPath {
				found = true
			}
		}
	}
	if !found {
		add("tokenproxy's --config %q is not the config.yaml of a mounted ConfigMap", configPath)
	}

	// Ports: the data plane on loopback and off the app's ports; the admin
	// plane reachable by the kubelet; the probes on admin_listen.
	lhost, lport, _ := net.SplitHostPort(cfg.Listen)
	ahost, aport, _ := net.SplitHostPort(cfg.AdminListen)
	if lport == "8080" {
		add("listen %s: 8080 is the port apps use most; choose another", cfg.Listen)
	}
	if ip := net.ParseIP(lhost); ip == nil || !ip.IsLoopback() {
		add("listen %s must be a loopback address: only this pod may spend the credentials", cfg.Listen)
	}
	if ip := net.ParseIP(ahost); ahost != "" && (ip == nil || ip.IsLoopback()) {
		add("admin_listen %s: the kubelet's probes and Prometheus cannot reach a loopback address", cfg.AdminListen)
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		for _, p := range c.Ports {
			if strconv.Itoa(int(p.ContainerPort)) == lport {
				add("%s's port %d is tokenproxy's listen port", c.Name, p.ContainerPort)
			}
			if c.Name != "tokenproxy" && strconv.Itoa(int(p.ContainerPort)) == aport {
				add("%s's port %d is tokenproxy's admin_listen port", c.Name, p.ContainerPort)
			}
		}
		if c.Name == "tokenproxy" {
			continue
		}
		for _, e := range c.Env {
			if m := regexp.MustCompile(`^https?://(127\.0\.0\.1|localhost):(\d+)`).FindStringSubmatch(e.Value); m != nil && m[2] != lport {
				add("%s's %s=%s is not tokenproxy's listen port %s", c.Name, e.Name, e.Value, lport)
			}
		}
	}
	probe := func(name string, p *corev1.Probe, ok func(path string) bool, want string) {
		switch {
		case p == nil || p.HTTPGet == nil:
			add("tokenproxy has no HTTP %s", name)
		case !ok(p.HTTPGet.Path):
			add("%s on %s, want %s", name, p.HTTPGet.Path, want)
		case portOf(tp, p.HTTPGet.Port) != aport:
			add("%s on port %s, but admin_listen is %s", name, p.HTTPGet.Port.String(), cfg.AdminListen)
		}
	}
	waitsForTokens := func(p string) bool { return p == "/readyz" || strings.HasPrefix(p, "/readyz?") }
	probe("startupProbe", tp.StartupProbe, func(p string) bool {
		return waitsForTokens(p) || p == "/readyz/process"
	}, "/readyz/process, /readyz or /readyz?upstream=<name>")
	if p := tp.StartupProbe; p != nil && p.HTTPGet != nil && waitsForTokens(p.HTTPGet.Path) {
		// A startup probe's failure restarts the container: waiting for a
		// vendor ends in restarts that ask every vendor again.
		switch {
		case !ex.native:
			add("startupProbe on %s: a classic sidecar's startup probe does not hold the app back, so waiting for tokens only gets tokenproxy restarted during a vendor's outage; probe /readyz/process", p.HTTPGet.Path)
		case ex.dep.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType:
			add("startupProbe on %s with strategy Recreate: nothing else serves while the new pod starts, so one vendor's outage would keep the app down, and the kubelet would restart tokenproxy every %ds; probe /readyz/process",
				p.HTTPGet.Path, p.FailureThreshold*max(p.PeriodSeconds, 1))
		}
	}
	probe("readinessProbe", tp.ReadinessProbe, func(p string) bool { return p == "/readyz/process" },
		"/readyz/process (one vendor's outage must not take the pod out of its Service)")
	probe("livenessProbe", tp.LivenessProbe, func(p string) bool { return p == "/healthz" }, "/healthz")

	// Resources, and GOMEMLIMIT within the memory limit.
	limit := tp.Resources.Limits.Memory()
	if tp.Resources.Requests.Cpu().IsZero() || tp.Resources.Requests.Memory().IsZero() || limit.IsZero() {
		add("tokenproxy needs cpu and memory requests and a memory limit")
	}
	if g, err := goMemLimit(tp, limit); err != nil {
		add("%v", err)
	} else if err := memHeadroom(g, limit.Value()); err != nil {
		add("%v (limits.memory %s)", err, limit)
	}

	// How many tokenproxies run at once, each with its own tokens.
	if names := cfg.unshared(); len(names) > 0 {
		if r := ex.dep.Spec.Replicas; r == nil || *r != 1 {
			add("replicas %v: upstreams %v allow one live token per user and are not shared, so a second replica never gets its token; one replica, or sharing (overlays/fleet)", ptrString(r), names)
		}
		if st := ex.dep.Spec.Strategy.Type; st != appsv1.RecreateDeploymentStrategyType {
			add("strategy %q: a rolling update starts the new pod while the old one holds the token of upstreams %v, which allow one live token per user, so it waits forever; Recreate, or sharing (overlays/fleet)", st, names)
		}
	}

	// Who reaches the pod: the admin port only from where Prometheus runs,
	// the app's ports as before.
	ps = append(ps, ex.networkProblems(aport)...)

	// Grace: the drain and the in-flight requests fit in it.
	grace := time.Duration(30) * time.Second
	if g := pod.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if need := cfg.drainDelay() + cfg.shutdownTimeout(); grace < need {
		add("terminationGracePeriodSeconds %s is less than drain_delay + shutdown_timeout (%s)", grace, need)
	}
	return ps
}

func ptrTo[T any](v T) *T { return &v }

func ptrString(p *int32) string {
	if p == nil {
		return "unset (1)"
	}
	return strconv.Itoa(int(*p))
}

// memHeadroom checks GOMEMLIMIT against the memory limit, both in bytes: at
// most 95% of it, as the Go GC guide advises leaving 5-10% for memory the
// runtime does not count ("A Guide to the Go Garbage Collector", Memory
// limit), and at least 80%, or the limit is memory the process never uses.
func memHeadroom(goMemLimit, limit int64) error {
	if limit <= 0 {
		return fmt.Errorf("GOMEMLIMIT %d bytes, but no memory limit", goMemLimit)
	}
	r := float64(goMemLimit) / float64(limit)
	switch {
	case r > 0.95:
		return fmt.Errorf("GOMEMLIMIT %d bytes is %.0f%% of the memory limit: leave the runtime headroom, about 90%%", goMemLimit, 100*r)
	case r < 0.80:
		return fmt.Errorf("GOMEMLIMIT %d bytes is only %.0f%% of the memory limit: about 90%%", goMemLimit, 100*r)
	}
	return nil
}

// networkProblems checks the NetworkPolicies that select the example's pod:
// at least one isolates it for ingress; tokenproxy's admin port is reachable
// only from selected peers (not from every pod or address), and from some;
// and the ports of the app's Services stay reachable.
func (ex *example) networkProblems(adminPort string) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, ex.dir+": "+fmt.Sprintf(format, args...)) }
	pod := ex.dep.Spec.Template
	var rules []networkingv1.NetworkPolicyIngressRule
	selected := false
	for _, np := range ex.policies {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			add("NetworkPolicy %s: %v", np.Name, err)
			continue
		}
		ingress := len(np.Spec.PolicyTypes) == 0 || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		if sel.Matches(labels.Set(pod.Labels)) && ingress {
			selected = true
			rules = append(rules, np.Spec.Ingress...)
		}
	}
	if !selected {
		return append(ps, ex.dir+": no NetworkPolicy selects the pod for ingress: tokenproxy's admin port is open to the whole cluster")
	}
	// admits reports whether a rule lets port (a number, or a name of a
	// container port in the pod) through.
	containers := append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...)
	admits := func(r networkingv1.NetworkPolicyIngressRule, port string) bool {
		if len(r.Ports) == 0 {
			return true
		}
		for _, p := range r.Ports {
			if p.Port == nil {
				return true
			}
			if p.Port.Type == intstr.String {
				for _, c := range containers {
					if portOf(&c, *p.Port) == port {
						return true
					}
				}
				continue
			}
			end := p.Port.IntVal
			if p.EndPort != nil {
				end = *p.EndPort
			}
			if n, err := strconv.Atoi(port); err == nil && int32(n) >= p.Port.IntVal && int32(n) <= end {
				return true
			}
		}
		return false
	}
	// open reports why a rule's peers are anyone: no from, an address
	// block, or a selector that selects everything.
	open := func(r networkingv1.NetworkPolicyIngressRule) string {
		if len(r.From) == 0 {
			return "no from: every address"
		}
		for _, peer := range r.From {
			switch {
			case peer.IPBlock != nil:
				return "ipBlock " + peer.IPBlock.CIDR
			case (peer.NamespaceSelector == nil || isEmpty(peer.NamespaceSelector)) && (peer.PodSelector == nil || isEmpty(peer.PodSelector)):
				return "a peer that selects every pod"
			}
		}
		return ""
	}
	reached := false
	for _, r := range rules {
		if !admits(r, adminPort) {
			continue
		}
		reached = true
		if why := open(r); why != "" {
			add("a NetworkPolicy lets anyone reach tokenproxy's admin port %s (%s): only Prometheus's namespace should", adminPort, why)
		}
	}
	if !reached {
		add("no NetworkPolicy rule lets Prometheus reach tokenproxy's admin port %s (deploy/monitoring scrapes it)", adminPort)
	}
	for _, svc := range ex.services {
		for _, sp := range svc.Spec.Ports {
			port := sp.TargetPort.String()
			for _, c := range pod.Spec.Containers {
				if got := portOf(&c, sp.TargetPort); !strings.HasPrefix(got, "(") {
					port = got
				}
			}
			if !slices.ContainsFunc(rules, func(r networkingv1.NetworkPolicyIngressRule) bool { return admits(r, port) }) {
				add("no NetworkPolicy rule lets callers reach Service %s's port %s (container port %s)", svc.Name, sp.Name, port)
			}
		}
	}
	return ps
}

func isEmpty(s *metav1.LabelSelector) bool {
	return len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

// portOf resolves a probe's port, by name or number, to a number.
func portOf(c *corev1.Container, p intstr.IntOrString) string {
	if p.Type == intstr.Int {
		return strconv.Itoa(int(p.IntVal))
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return strconv.Itoa(int(cp.ContainerPort))
		}
	}
	return "(no port named " + p.StrVal + ")"
}

// goMemLimit is the GOMEMLIMIT tokenproxy's container gets, in bytes.
func goMemLimit(c *corev1.Container, limit *resource.Quantity) (int64, error) {
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		if e.ValueFrom != nil {
			ref := e.ValueFrom.ResourceFieldRef
			if ref == nil || ref.Resource != "limits.memory" || (ref.ContainerName != "" && ref.ContainerName != c.Name) {
				return 0, fmt.Errorf("GOMEMLIMIT must come from this container's limits.memory")
			}
			// The runtime reads a bare number as bytes: a divisor of 1Mi
			// would make 128Mi into GOMEMLIMIT=128, 128 bytes.
			if !ref.Divisor.IsZero() && ref.Divisor.Value() != 1 {
				return 0, fmt.Errorf("GOMEMLIMIT's resourceFieldRef has divisor %s; the Go runtime would read the number as bytes", ref.Divisor.String())
			}
			return limit.Value(), nil
		}
		return parseGoMemLimit(e.Value)
	}
	return 0, fmt.Errorf("tokenproxy has no GOMEMLIMIT")
}

// parseGoMemLimit reads GOMEMLIMIT as the Go runtime does: bytes, with an
// optional B, KiB, MiB, GiB or TiB suffix (runtime package documentation).
func parseGoMemLimit(s string) (int64, error) {
	for i, suffix := range []string{"TiB", "GiB", "MiB", "KiB", "B"} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("GOMEMLIMIT %q: %v", s, err)
			}
			return v << (10 * (4 - i)), nil
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("GOMEMLIMIT %q is not a Go memory limit", s)
	}
	return v, nil
}

// The image's user is the manifests' numeric user.
func TestDockerfileUser(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	users := regexp.MustCompile(`(?m)^USER\s+(\S+)\s*$`).FindAllStringSubmatch(string(b), -1)
	if want := fmt.Sprintf("%d:%d", uid, gid); len(users) == 0 || users[len(users)-1][1] != want {
		t.Errorf("the Dockerfile's last USER is %v, want %s (numeric, as the manifests' runAsUser:runAsGroup)", users, want)
	}
	for _, arg := range []string{"main.version=${VERSION}", "main.commit=${COMMIT}", "main.date=${DATE}", "CGO_ENABLED=0"} {
		if !bytes.Contains(b, []byte(arg)) {
			t.Errorf("the Dockerfile's build does not set %s", arg)
		}
	}
}

// The checks above catch what they are for: each breakage of the base
// example is reported.
func TestInvariantChecksCatchBreakage(t *testing.T) {
	var base *example
	for _, ex := range examples(t) {
		if ex.dir == "kubernetes/base" {
			base = ex
		}
	}
	if base == nil {
		t.Fatal("no base example")
	}
	if ps := base.problems(); len(ps) > 0 {
		t.Fatalf("the base example already has problems: %v", ps)
	}
	sidecar := func(d *appsv1.Deployment) *corev1.Container { return &d.Spec.Template.Spec.InitContainers[0] }
	app := func(d *appsv1.Deployment) *corev1.Container { return &d.Spec.Template.Spec.Containers[0] }
	ptr := func(b bool) *bool { return &b }
	adminRule := func(ex *example) *networkingv1.NetworkPolicyIngressRule {
		for i, r := range ex.policies[0].Spec.Ingress {
			for _, p := range r.Ports {
				if p.Port != nil && p.Port.IntVal == 9901 {
					return &ex.policies[0].Spec.Ingress[i]
				}
			}
		}
		t.Fatal("the base's NetworkPolicy has no rule for port 9901")
		return nil
	}
	cases := []struct {
		name   string
		breaks func(d *appsv1.Deployment)
		config func(string) string
		ex     func(ex *example)
		want   string
	}{
		{name: "service-account token automounted", want: "automountServiceAccountToken",
			breaks: func(d *appsv1.Deployment) { d.Spec.Template.Spec.AutomountServiceAccountToken = ptr(true) }},
		{name: "Vault token mounted into the app", want: "mounted into [tokenproxy app]",
			breaks: func(d *appsv1.Deployment) {
				app(d).VolumeMounts = append(app(d).VolumeMounts, corev1.VolumeMount{Name: "vault-token", MountPath: "/token"})
			}},
		{name: "token for any audience", want: `audience ""`,
			breaks: func(d *appsv1.Deployment) {
				for _, v := range d.Spec.Template.Spec.Volumes {
					if v.Projected != nil {
						v.Projected.Sources[0].ServiceAccountToken.Audience = ""
					}
				}
			}},
		{name: "jwt_file elsewhere", want: "jwt_file",
			config: func(c string) string {
				return strings.Replace(c, "/var/run/secrets/tokens/vault/token", "/var/run/token", 1)
			}},
		{name: "classic sidecar in initContainers", want: "restartPolicy: Always",
			breaks: func(d *appsv1.Deployment) { sidecar(d).RestartPolicy = nil }},
		{name: "user by name only", want: "runAsUser",
			breaks: func(d *appsv1.Deployment) { sidecar(d).SecurityContext.RunAsUser = nil }},
		{name: "writable root", want: "readOnlyRootFilesystem",
			breaks: func(d *appsv1.Deployment) { sidecar(d).SecurityContext.ReadOnlyRootFilesystem = ptr(false) }},
		{name: "escalation", want: "allowPrivilegeEscalation",
			breaks: func(d *appsv1.Deployment) { sidecar(d).SecurityContext.AllowPrivilegeEscalation = nil }},
		{name: "capabilities kept", want: "capabilities",
			breaks: func(d *appsv1.Deployment) { sidecar(d).SecurityContext.Capabilities.Drop = nil }},
		{name: "no seccomp", want: "seccompProfile",
			breaks: func(d *appsv1.Deployment) { sidecar(d).SecurityContext.SeccompProfile = nil }},
		{name: "strict readiness", want: "readinessProbe on /readyz,",
			breaks: func(d *appsv1.Deployment) { sidecar(d).ReadinessProbe.HTTPGet.Path = "/readyz" }},
		{name: "startup probe on another port", want: "startupProbe on port 9902",
			breaks: func(d *appsv1.Deployment) { sidecar(d).StartupProbe.HTTPGet.Port = intstr.FromInt32(9902) }},
		{name: "admin plane on loopback", want: "cannot reach a loopback",
			config: func(c string) string {
				return strings.Replace(c, "admin_listen: 0.0.0.0:9901", "admin_listen: 127.0.0.1:9901", 1)
			}},
		{name: "data plane on 8080", want: "8080",
			config: func(c string) string {
				return strings.Replace(c, "listen: 127.0.0.1:9900", "listen: 127.0.0.1:8080", 1)
			}},
		{name: "app calls another port", want: "HGEM_URL",
			breaks: func(d *appsv1.Deployment) { app(d).Env[0].Value = "http://127.0.0.1:8081/hgem" }},
		{name: "GOMEMLIMIT in MiB read as bytes", want: "divisor",
			breaks: func(d *appsv1.Deployment) {
				sidecar(d).Env[0] = corev1.EnvVar{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{
					ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}}
			}},
		{name: "GOMEMLIMIT the whole limit", want: "100% of the memory limit: leave the runtime headroom",
			breaks: func(d *appsv1.Deployment) {
				sidecar(d).Env[0] = corev1.EnvVar{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{
					ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}}
			}},
		{name: "GOMEMLIMIT above the limit", want: "156% of the memory limit",
			breaks: func(d *appsv1.Deployment) { sidecar(d).Env[0] = corev1.EnvVar{Name: "GOMEMLIMIT", Value: "200MiB"} }},
		{name: "GOMEMLIMIT 96% of the limit", want: "96% of the memory limit",
			breaks: func(d *appsv1.Deployment) { sidecar(d).Env[0] = corev1.EnvVar{Name: "GOMEMLIMIT", Value: "123MiB"} }},
		{name: "GOMEMLIMIT far below the limit", want: "only 50%",
			breaks: func(d *appsv1.Deployment) { sidecar(d).Env[0] = corev1.EnvVar{Name: "GOMEMLIMIT", Value: "64MiB"} }},
		{name: "a second replica without sharing", want: "replicas 2: upstreams [inspera] allow one live token per user",
			breaks: func(d *appsv1.Deployment) { n := int32(2); d.Spec.Replicas = &n }},
		{name: "replicas unset (1) is fine, a rolling update is not", want: `strategy "RollingUpdate"`,
			breaks: func(d *appsv1.Deployment) {
				d.Spec.Replicas = nil
				d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType}
			}},
		{name: "the default strategy (RollingUpdate)", want: `strategy ""`,
			breaks: func(d *appsv1.Deployment) { d.Spec.Strategy = appsv1.DeploymentStrategy{} }},
		{name: "shared: false in a fleet", want: "upstreams [inspera] allow one live token per user",
			config: func(c string) string {
				return "sharing:\n  vault: {path: secret/tokenproxy/shared}\n" + strings.Replace(c, "credentials: vault:secret/tokenproxy/inspera", "shared: false\n    credentials: vault:secret/tokenproxy/inspera", 1)
			},
			breaks: func(d *appsv1.Deployment) { n := int32(3); d.Spec.Replicas = &n }},
		{name: "Recreate and a startup probe that waits for tokens", want: "startupProbe on /readyz with strategy Recreate",
			breaks: func(d *appsv1.Deployment) { sidecar(d).StartupProbe.HTTPGet.Path = "/readyz" }},
		{name: "Recreate and a startup probe that waits for one vendor", want: "with strategy Recreate",
			breaks: func(d *appsv1.Deployment) { sidecar(d).StartupProbe.HTTPGet.Path = "/readyz?upstream=inspera" }},
		{name: "a classic sidecar whose startup probe waits for tokens", want: "a classic sidecar's startup probe does not hold the app back",
			breaks: func(d *appsv1.Deployment) {
				d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType}
				sidecar(d).StartupProbe.HTTPGet.Path = "/readyz"
			},
			ex: func(ex *example) { ex.native = false }},
		{name: "startup probe on liveness", want: "startupProbe on /healthz",
			breaks: func(d *appsv1.Deployment) { sidecar(d).StartupProbe.HTTPGet.Path = "/healthz" }},
		{name: "no NetworkPolicy", want: "no NetworkPolicy selects the pod",
			ex: func(ex *example) { ex.policies = nil }},
		{name: "a NetworkPolicy for other pods", want: "no NetworkPolicy selects the pod",
			ex: func(ex *example) {
				ex.policies[0].Spec.PodSelector.MatchLabels = map[string]string{"app.kubernetes.io/name": "other"}
			}},
		{name: "an egress-only NetworkPolicy", want: "no NetworkPolicy selects the pod",
			ex: func(ex *example) {
				ex.policies[0].Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			}},
		{name: "admin port from every address", want: "reach tokenproxy's admin port 9901 (no from: every address)",
			ex: func(ex *example) { adminRule(ex).From = nil }},
		{name: "admin port from every namespace", want: "(a peer that selects every pod)",
			ex: func(ex *example) {
				adminRule(ex).From = []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}
			}},
		{name: "admin port from an address block", want: "(ipBlock 0.0.0.0/0)",
			ex: func(ex *example) {
				adminRule(ex).From = append(adminRule(ex).From, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}})
			}},
		{name: "every port from everywhere", want: "(no from: every address)",
			ex: func(ex *example) {
				ex.policies[0].Spec.Ingress = append(ex.policies[0].Spec.Ingress, networkingv1.NetworkPolicyIngressRule{})
			}},
		{name: "a port range holding the admin port, from everywhere", want: "(no from: every address)",
			ex: func(ex *example) {
				from, end := intstr.FromInt32(9000), int32(9999)
				ex.policies[0].Spec.Ingress = append(ex.policies[0].Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
					Ports: []networkingv1.NetworkPolicyPort{{Port: &from, EndPort: &end}}})
			}},
		{name: "admin port by name, from everywhere", want: "(no from: every address)",
			ex: func(ex *example) {
				name := intstr.FromString("tp-admin")
				ex.policies[0].Spec.Ingress = append(ex.policies[0].Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
					Ports: []networkingv1.NetworkPolicyPort{{Port: &name}}})
			}},
		{name: "Prometheus shut out", want: "no NetworkPolicy rule lets Prometheus reach tokenproxy's admin port 9901",
			ex: func(ex *example) { adminRule(ex).Ports[0].Port = ptrTo(intstr.FromInt32(9902)) }},
		{name: "the app shut out", want: "no NetworkPolicy rule lets callers reach Service reports's port http",
			ex: func(ex *example) {
				ex.policies[0].Spec.Ingress = slices.DeleteFunc(ex.policies[0].Spec.Ingress, func(r networkingv1.NetworkPolicyIngressRule) bool {
					return len(r.From) == 0
				})
			}},
		{name: "no memory limit", want: "memory limit",
			breaks: func(d *appsv1.Deployment) { delete(sidecar(d).Resources.Limits, corev1.ResourceMemory) }},
		{name: "grace too short", want: "terminationGracePeriodSeconds 10s",
			breaks: func(d *appsv1.Deployment) { g := int64(10); d.Spec.Template.Spec.TerminationGracePeriodSeconds = &g }},
		{name: "config not where --config says", want: "--config",
			breaks: func(d *appsv1.Deployment) { sidecar(d).Args[2] = "/etc/config.yaml" }},
	}
	for _, c := range cases {
		ex := &example{dir: "broken", native: true, dep: base.dep.DeepCopy(), config: base.config, services: base.services}
		for _, np := range base.policies {
			ex.policies = append(ex.policies, np.DeepCopy())
		}
		if c.breaks != nil {
			c.breaks(ex.dep)
		}
		if c.config != nil {
			ex.config = c.config(ex.config)
		}
		if c.ex != nil {
			c.ex(ex)
		}
		ps := ex.problems()
		if !slices.ContainsFunc(ps, func(p string) bool { return strings.Contains(p, c.want) }) {
			t.Errorf("%s: not reported (want %q in %q)", c.name, c.want, ps)
		}
	}
	if v, err := parseGoMemLimit("115MiB"); err != nil || v != 115<<20 {
		t.Errorf("parseGoMemLimit(115MiB) = %d, %v", v, err)
	}
}
