// Package e2e runs the real tokenproxy binary, built by TestMain, against
// the vendor simulators served over HTTPS on loopback. Nothing here leaves
// 127.0.0.1.
package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/redact"
	"github.com/tokenproxy/tokenproxy/internal/testlog"
	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// binary is the tokenproxy built for this run (with -race when the tests are).
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tokenproxy-e2e-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tokenproxy")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "../cmd/tokenproxy")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot build tokenproxy:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// discardLog silences the simulators' servers (TLS handshakes cut short by
// tests that stop a proxy mid-way).
var discardLog = log.New(io.Discard, "", 0)

// vendor is one simulator served over HTTPS on loopback, with the canary
// credentials it accepts.
type vendor struct {
	kind  string
	sim   *vendorsim.Server
	srv   *httptest.Server
	creds map[string]string
}

func (v *vendor) url() string { return v.srv.URL }

// canary makes a credential value that is easy to find in any output.
func canary(kind, key string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return fmt.Sprintf("CANARY-%s-%s-%s", kind, strings.ReplaceAll(key, "_", ""), hex.EncodeToString(b))
}

// env is a test's vendors, files and the proxies it started.
type env struct {
	t       *testing.T
	dir     string
	caFile  string
	vendors map[string]*vendor
	procs   []*proc
	// outputs are what the proxies sent elsewhere than their own output
	// (spans to a collector), searched for secrets like it.
	outputs []func() []byte
	secrets []string // beside the vendors' credentials and tokens: more canaries to search for
}

// newEnv starts the four simulators with canary credentials.
func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), vendors: map[string]*vendor{}}
	for _, kind := range []string{"prominsight", "inspera", "hgem", "prodoscore"} {
		creds := map[string]string{}
		for _, k := range (&config.Upstream{Type: kind}).RequiredKeys() {
			creds[k] = canary(kind, k)
		}
		sim, err := vendorsim.New(kind, creds)
		if err != nil {
			t.Fatal(err)
		}
		// HTTP/2, as the vendors' own endpoints speak it.
		srv := httptest.NewUnstartedServer(sim)
		srv.EnableHTTP2 = true
		srv.Config.ErrorLog = discardLog
		srv.StartTLS()
		t.Cleanup(func() { sim.Close(); srv.Close() })
		e.vendors[kind] = &vendor{kind: kind, sim: sim, srv: srv, creds: creds}
		e.writeJSON(kind+".json", creds)
		if e.caFile == "" {
			// Every httptest TLS server presents the same certificate.
			e.caFile = e.write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
		}
	}
	t.Cleanup(e.checkNoSecrets)
	t.Cleanup(e.checkLogKeys)
	return e
}

func (e *env) write(name string, b []byte) string {
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) writeJSON(name string, v any) string {
	b, _ := json.Marshal(v)
	return e.write(name, b)
}

// The configs here are built as config.Config, starting from the config
// package's defaults (newConfig, e.upstream), and written with yaml.v3
// (yamlOf): every value marshalled is one a file could hold, an explicit
// zero included. Only the tests whose subject is the file's text (a key
// written twice, a typo, a key left out) write YAML themselves.

// newConfig is config.Defaults on ephemeral loopback ports, with no
// upstreams yet.
func newConfig() config.Config {
	c := config.Defaults()
	c.Listen, c.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	c.Upstreams = config.Upstreams{}
	return c
}

// upstream is the entry for kind's simulator, with the credentials newEnv
// wrote and the simulators' CA, the rest at config.DefaultUpstream; edits
// change it.
func (e *env) upstream(kind string, edits ...func(*config.Upstream)) config.Upstream {
	v := e.vendors[kind]
	u := config.DefaultUpstream()
	u.Type, u.BaseURL, u.CAFile = kind, v.url(), e.caFile
	u.Credentials = "file:" + filepath.Join(e.dir, kind+".json")
	if kind == "prodoscore" {
		u.TokenURL = v.url() + v.sim.TokenPath() // its token endpoint has no default
	}
	for _, edit := range edits {
		edit(&u)
	}
	return u
}

// config is newConfig with the upstreams of kinds, each named as its kind.
func (e *env) config(kinds ...string) config.Config {
	c := newConfig()
	for _, k := range kinds {
		c.Upstreams[k] = e.upstream(k)
	}
	return c
}

// allUpstreams is the config of all four vendors, logging at debug.
func (e *env) allUpstreams() config.Config {
	c := e.config("prominsight", "inspera", "hgem", "prodoscore")
	c.LogLevel = "debug"
	return c
}

// edit changes upstream name of c.
func edit(c config.Config, name string, f func(*config.Upstream)) {
	u, ok := c.Upstreams[name]
	if !ok {
		panic("no upstream " + name + " to edit")
	}
	f(&u)
	c.Upstreams[name] = u
}

// everyUpstream changes every upstream of c.
func everyUpstream(c config.Config, f func(*config.Upstream)) {
	for name := range c.Upstreams {
		edit(c, name, f)
	}
}

// yamlOf is c as the text of a config file.
func yamlOf(t testing.TB, c config.Config) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		t.Fatalf("marshalling the config: %v", err)
	}
	return b.Bytes()
}

// lineWith is the 1-based number of the one line of text that holds s.
func lineWith(t testing.TB, text []byte, s string) int {
	t.Helper()
	n := 0
	for i, l := range strings.Split(string(text), "\n") {
		if strings.Contains(l, s) {
			if n != 0 {
				t.Fatalf("%q is on lines %d and %d of:\n%s", s, n, i+1, text)
			}
			n = i + 1
		}
	}
	if n == 0 {
		t.Fatalf("%q is on no line of:\n%s", s, text)
	}
	return n
}

// writeConfig writes c as the file name in the env's directory.
func (e *env) writeConfig(name string, c config.Config) string {
	e.t.Helper()
	return e.write(name, yamlOf(e.t, c))
}

// upstreamYAML is kind's entry as text, for the tests whose subject is the
// file's text: named as its kind, with the credentials newEnv wrote; extra
// lines are added under it (indented by the caller with four spaces).
func (e *env) upstreamYAML(kind string, extra ...string) string {
	v := e.vendors[kind]
	s := fmt.Sprintf("  %s:\n    type: %s\n    base_url: %s\n    credentials: file:%s\n    ca_file: %s\n",
		kind, kind, v.url(), filepath.Join(e.dir, kind+".json"), e.caFile)
	if kind == "prodoscore" {
		s += fmt.Sprintf("    token_url: %s%s\n", v.url(), v.sim.TokenPath())
	}
	for _, l := range extra {
		s += "    " + l + "\n"
	}
	return s
}

// proc is a running tokenproxy.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	out     *testlog.Buffer
	data    string // http://host:port of the data plane
	admin   string
	exited  chan struct{}
	waitErr error

	raceChecked bool
}

// start runs `tokenproxy run` on c and waits until it listens.
func (e *env) start(c config.Config) *proc {
	e.t.Helper()
	return e.startText(string(yamlOf(e.t, c)))
}

// startText is start for a config written as text.
func (e *env) startText(text string) *proc {
	e.t.Helper()
	path := e.write(fmt.Sprintf("config-%d.yaml", len(e.procs)), []byte(text))
	return e.startArgs("run", "--config", path)
}

func (e *env) startArgs(args ...string) *proc {
	e.t.Helper()
	p := e.launch(args...)
	p.waitListening(e.t)
	return p
}

// launch starts tokenproxy with args and returns at once.
func (e *env) launch(args ...string) *proc {
	e.t.Helper()
	return e.launchEnv(nil, args...)
}

// launchEnv is launch with environment variables (NAME=value) added.
func (e *env) launchEnv(vars []string, args ...string) *proc {
	e.t.Helper()
	p := &proc{t: e.t, out: &testlog.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(append(os.Environ(), "GORACE=halt_on_error=1"), vars...)
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	e.procs = append(e.procs, p)
	e.t.Cleanup(p.stop)
	return p
}

// waitListening waits until p logs that it listens, and notes where.
func (p *proc) waitListening(t *testing.T) {
	t.Helper()
	waitFor(t, 20*time.Second, "tokenproxy to listen", func() bool {
		for _, l := range p.logLines() {
			if l["msg"] == "listening" {
				p.data, p.admin = "http://"+l["listen"].(string), "http://"+l["admin_listen"].(string)
				return true
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("tokenproxy exited before listening: %v\n%s", p.waitErr, p.out.String())
		default:
		}
		return false
	})
}

// stop sends SIGTERM, if the process still runs, and waits for it to
// exit; then, once per process, checks its output for a data race.
func (p *proc) stop() {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
			p.t.Errorf("tokenproxy did not stop within 30s of SIGTERM")
		}
	}
	if !p.raceChecked && strings.Contains(p.out.String(), "WARNING: DATA RACE") {
		p.t.Errorf("data race in tokenproxy:\n%s", p.out.String())
	}
	p.raceChecked = true
}

// logLines parses the JSON log lines written so far.
func (p *proc) logLines() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.out.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// waitExit waits until p has exited, for at most within; past that the
// test fails with what.
func (p *proc) waitExit(t *testing.T, within time.Duration, what string) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatal(what)
	}
}

// logged reports whether a log line has msg and every given field value.
func (p *proc) logged(msg string, fields map[string]any) bool {
	return len(p.linesWith(msg, fields)) > 0
}

// linesWith is p's log lines that have msg and every given field value
// (compared as fmt.Sprint prints them), in order.
func (p *proc) linesWith(msg string, fields map[string]any) []map[string]any {
	var out []map[string]any
	for _, l := range p.logLines() {
		if l["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range fields {
			if fmt.Sprint(l[k]) != fmt.Sprint(v) {
				ok = false
			}
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

var client = &http.Client{
	Timeout:       60 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 100},
}

// response is a finished HTTP exchange with the body read.
type response struct {
	*http.Response
	body []byte
}

func (r *response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, r.body)
	}
	return m
}

// do sends a request and reads the whole answer.
func do(t *testing.T, method, url string, body io.Reader, header ...string) *response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return &response{Response: resp, body: b}
}

func get(t *testing.T, url string, header ...string) *response {
	t.Helper()
	return do(t, http.MethodGet, url, nil, header...)
}

// wantError checks a response tokenproxy made itself (CONTRACT.md §4).
func wantError(t *testing.T, r *response, status int, code, upstream string) map[string]any {
	t.Helper()
	if r.StatusCode != status || r.Header.Get("Tokenproxy-Error") != code {
		t.Fatalf("got %d %q, want %d %s: %s", r.StatusCode, r.Header.Get("Tokenproxy-Error"), status, code, r.body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	m := r.json(t)
	if m["error"] != code || m["upstream"] != upstream || m["message"] == "" {
		t.Fatalf("body %s, want error %s upstream %q and a message", r.body, code, upstream)
	}
	return m
}

// waitFor polls cond until it holds or the deadline passes: a wait on a
// condition, never a sleep standing in for one.
// answeredTokenRequests is sim's token requests from the from'th on, once
// each is answered. The simulator records a request as it arrives and sets
// its Status (0 until then) after the answer is written, so a caller that
// already has its answer may still read a 0; use this only where every
// request is bound to be answered.
func answeredTokenRequests(t testing.TB, sim *vendorsim.Server, from int) []vendorsim.TokenRequest {
	t.Helper()
	var reqs []vendorsim.TokenRequest
	waitFor(t, 10*time.Second, "the token requests to be answered", func() bool {
		reqs = sim.TokenRequests()[from:]
		for _, r := range reqs {
			if r.Status == 0 {
				return false
			}
		}
		return true
	})
	return reqs
}

func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		<-tick.C
	}
}

// ready waits until /readyz says every upstream holds a token.
func (p *proc) ready(t *testing.T) {
	t.Helper()
	waitFor(t, 20*time.Second, "readiness", func() bool {
		resp, err := client.Get(p.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// checkNoSecrets searches everything every proxy wrote, and everything it
// sent out (e.outputs), for the canary credentials and for every token the
// simulators issued, each in every form a secret may be repeated in
// (redact.Forms: raw, percent-encoded, JSON-escaped, base64).
func (e *env) checkNoSecrets() {
	var raw []string
	for _, v := range e.vendors {
		for _, c := range v.creds {
			raw = append(raw, c)
		}
		raw = append(raw, v.sim.Tokens()...)
	}
	raw = append(raw, e.secrets...)
	var secrets []string
	for _, s := range raw {
		secrets = append(secrets, redact.Forms(s)...)
	}
	for _, p := range e.procs {
		out := p.out.String()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				e.t.Errorf("tokenproxy's output holds a secret or token (%.20s...)", s)
			}
		}
	}
	for _, f := range e.outputs {
		out := string(f())
		for _, s := range secrets {
			if strings.Contains(out, s) {
				e.t.Errorf("what tokenproxy sent out holds a secret or token (%.20s...)", s)
			}
		}
	}
}

// checkLogKeys fails the test when a JSON log line of any proxy names a key
// twice: RFC 8259 §4 asks for unique names, and log pipelines drop or
// mangle duplicates (a logger's own field written again by a line).
func (e *env) checkLogKeys() {
	for _, p := range e.procs {
		sc := bufio.NewScanner(strings.NewReader(p.out.String()))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if k := duplicateKey(sc.Bytes()); k != "" {
				e.t.Errorf("a log line names %q twice: %.300s", k, sc.Text())
			}
		}
	}
}

// duplicateKey is a key that an object in the JSON text line names twice,
// or "" (also when line is not JSON).
func duplicateKey(line []byte) string {
	dec := json.NewDecoder(bytes.NewReader(line))
	// One frame per open object or array; an object's frame holds its keys
	// seen, and whether the next string token is a key.
	type frame struct {
		keys    map[string]bool
		wantKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &frame{keys: map[string]bool{}, wantKey: true})
				continue
			case '[':
				stack = append(stack, &frame{})
				continue
			default:
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return ""
				}
				top = stack[len(stack)-1]
			}
		case string:
			if top != nil && top.keys != nil && top.wantKey {
				if top.keys[t] {
					return t
				}
				top.keys[t] = true
				top.wantKey = false
				continue
			}
		}
		// A value ended: in an object, a key comes next.
		if top != nil && top.keys != nil {
			top.wantKey = true
		}
	}
}

// The log-line check finds a key named twice at any depth, and only then.
func TestDuplicateKey(t *testing.T) {
	for line, want := range map[string]string{
		`{"level":"info","upstream":"a","msg":"x","upstream":"a"}`: "upstream",
		`{"a":{"b":1,"b":2}}`:                                    "b",
		`{"a":[{"k":1},{"k":2}],"b":{"k":1},"k":[1,"k"]}`:        "",
		`{"a":"a","b":{"a":"b"},"c":[{"a":1,"b":[2]}],"d":null}`: "",
		`not json {"a":1,"a":2}`:                                 "",
	} {
		if got := duplicateKey([]byte(line)); got != want {
			t.Errorf("duplicateKey(%s) = %q, want %q", line, got, want)
		}
	}
}
