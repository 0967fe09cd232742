// Package binary benchmarks a built tokenproxy binary as a process, through
// what CONTRACT.md fixes (the config file, the data plane's route, /readyz,
// and /metrics with the Go runtime's counters), so that one benchmark
// measures any revision: scripts/bench.sh runs it against the binaries of
// two revisions, alternately, and benchstat compares them.
//
//	go test -c -o binary.test ./binary && ./binary.test -test.bench . -tokenproxy PATH
//
// Each size has two rows: direct (the client sends the two HGEM headers to
// the HTTPS upstream itself; the baseline) and tokenproxy (the same call
// through the binary, which injects them, request log on). Beside ns/op the
// tokenproxy rows report what the proxy process spent per request:
// proxy-allocs/op and proxy-B/op (from go_memstats_mallocs_total and
// go_memstats_alloc_bytes_total, one scrape's own cost taken off) and
// proxy-cpu-ns/op (user and system time from /proc/PID/stat).
package binary

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/bench/internal/upstream"
)

var (
	binPath  = flag.String("tokenproxy", "", "the tokenproxy binary to measure (default: this checkout's, built)")
	logLevel = flag.String("loglevel", "info", "tokenproxy's log_level (info: the request log is on)")
)

const (
	apiKey      = "bench-api-key-0001"
	staticToken = "bench-static-token"
)

func BenchmarkBinary(b *testing.B) {
	env := start(b)
	for _, size := range []string{"1k", "64k"} {
		n, _ := upstream.ParseSize(size)
		for _, path := range []string{"direct", "tokenproxy"} {
			b.Run("size="+strings.TrimSuffix(size, "k")+"KiB/path="+path, func(b *testing.B) {
				url := env.direct + "/p/" + size
				if path == "tokenproxy" {
					url = env.proxied + "/p/" + size
				}
				b.SetBytes(n)
				s0 := env.sample(b)
				s1 := env.sample(b)
				// 64 goroutines on two cores: wrk's -c64.
				b.SetParallelism(64 / runtime.GOMAXPROCS(0))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						env.get(b, url, path == "direct", n)
					}
				})
				b.StopTimer()
				if path == "tokenproxy" {
					s2 := env.sample(b)
					ops := float64(b.N)
					b.ReportMetric((float64(s2.mallocs-s1.mallocs)-float64(s1.mallocs-s0.mallocs))/ops, "proxy-allocs/op")
					b.ReportMetric((float64(s2.bytes-s1.bytes)-float64(s1.bytes-s0.bytes))/ops, "proxy-B/op")
					b.ReportMetric(float64(s2.cpu-s1.cpu)/ops, "proxy-cpu-ns/op")
				}
			})
		}
	}
}

// TestHarness runs the benchmark's parts once, so that CI knows they work:
// the binary (this checkout's, built here, unless -tokenproxy names one)
// starts, answers through the route, and /metrics has the counters.
func TestHarness(t *testing.T) {
	e := start(t)
	e.get(t, e.proxied+"/p/1k", false, 1024)
	e.get(t, e.direct+"/p/1k", true, 1024)
	s0 := e.sample(t)
	for range 100 {
		e.get(t, e.proxied+"/p/1k", false, 1024)
	}
	s1 := e.sample(t)
	if s1.mallocs <= s0.mallocs || s1.bytes <= s0.bytes || s1.cpu < s0.cpu {
		t.Errorf("counters did not move over 100 requests: %+v, then %+v", s0, s1)
	}
}

// binary is -tokenproxy, or else this checkout's tokenproxy built once into
// a temporary directory.
func binary(tb testing.TB) string {
	if *binPath != "" {
		return *binPath
	}
	buildOnce.Do(func() {
		builtDir, buildErr = os.MkdirTemp("", "tokenproxy-bench-binary")
		if buildErr != nil {
			return
		}
		built = filepath.Join(builtDir, "tokenproxy")
		cmd := exec.Command("go", "build", "-o", built, "./cmd/tokenproxy")
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/tokenproxy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return built
}

var (
	buildOnce       sync.Once
	built, builtDir string
	buildErr        error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

type env struct {
	direct, proxied, admin string
	client                 *http.Client
	pid                    int
}

// start serves the upstream in this process and starts the binary with an
// HGEM upstream pointing at it; it returns once the binary holds a token.
func start(b testing.TB) *env {
	dir := b.TempDir()
	cert, caPEM, err := upstream.Certificate()
	if err != nil {
		b.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	credFile := filepath.Join(dir, "hgem.json")
	write(b, caFile, string(caPEM))
	write(b, credFile, fmt.Sprintf(`{"api_key": %q, "client_id": "bench-client", "client_secret": "bench-client-secret"}`, apiKey))

	api := &upstream.API{APIKey: apiKey, StaticToken: staticToken}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := api.Server(cert, false)
	go srv.ServeTLS(ln, "", "")
	b.Cleanup(func() { srv.Close() })

	listen, admin := freePort(b), freePort(b)
	cfg := filepath.Join(dir, "tokenproxy.yaml")
	write(b, cfg, fmt.Sprintf(`listen: %s
admin_listen: %s
log_level: %s
upstreams:
  up:
    type: hgem
    base_url: https://%s
    ca_file: %s
    credentials: file:%s
`, listen, admin, *logLevel, ln.Addr(), caFile, credFile))

	log := &tail{}
	cmd := exec.Command(binary(b), "run", "--config", cfg)
	// GOMAXPROCS fixed, as under steady load: tokenproxy goes to one P
	// while idle (internal/procs), and each benchmark would start with a
	// second of that after the pause before it. What light load costs is
	// the bench kit's (bench/run.sh, at 1,000 req/s).
	cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", runtime.GOMAXPROCS(0)))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	// HTTP/1.1 with keep-alive to both, as wrk: a service's client to its
	// sidecar, and the same client straight to the API.
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost: 64,
		DisableCompression:  true,
	}
	b.Cleanup(tr.CloseIdleConnections)
	e := &env{
		direct:  "https://" + ln.Addr().String(),
		proxied: "http://" + listen + "/up",
		admin:   "http://" + admin,
		client:  &http.Client{Transport: tr, Timeout: 30 * time.Second},
		pid:     cmd.Process.Pid,
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := e.client.Get(e.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return e
			}
		}
		select {
		case err := <-exited:
			b.Fatalf("tokenproxy exited (%v); its output:\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("tokenproxy held no token within 30 s; its output:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// get fetches url and fails the benchmark unless the whole body came back
// with a 200.
func (e *env) get(b testing.TB, url string, withHeaders bool, want int64) {
	req, _ := http.NewRequest("GET", url, nil)
	if withHeaders {
		req.Header.Set("Authorization", "Bearer "+staticToken)
		req.Header.Set("hgem-api-key", apiKey)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || n != want {
		b.Fatalf("GET %s: status %d, %d of %d bytes, %v", url, resp.StatusCode, n, want, err)
	}
}

type sample struct {
	mallocs, bytes uint64
	cpu            time.Duration
}

// sample reads the process's allocation counters from /metrics and its CPU
// time from /proc.
func (e *env) sample(b testing.TB) sample {
	resp, err := e.client.Get(e.admin + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var s sample
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, _ := strings.Cut(sc.Text(), " ")
		var dst *uint64
		switch name {
		case "go_memstats_mallocs_total":
			dst = &s.mallocs
		case "go_memstats_alloc_bytes_total":
			dst = &s.bytes
		default:
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			b.Fatalf("/metrics: %s: %v", name, err)
		}
		*dst = uint64(f)
		found++
	}
	if found != 2 {
		b.Fatal("/metrics: want go_memstats_mallocs_total and go_memstats_alloc_bytes_total")
	}
	if s.cpu, err = cpuTime(e.pid); err != nil {
		b.Fatal(err)
	}
	return s
}

// cpuTime is a process's user and system time, from fields 14 and 15 of
// /proc/PID/stat (proc(5)), in clock ticks of 1/100 s (USER_HZ on Linux).
func cpuTime(pid int) (time.Duration, error) {
	text, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(text, ')')
	if i < 0 {
		return 0, errors.New("/proc/PID/stat: no command name")
	}
	f := strings.Fields(string(text[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("/proc/PID/stat: too few fields")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/PID/stat: %w", err)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

func freePort(b testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func write(b testing.TB, path, text string) {
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
}

// tail keeps the last 64 KiB the process wrote (its request log goes
// through here, as through a log collector's pipe), for a failure message.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 64<<10 {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-32<<10:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
