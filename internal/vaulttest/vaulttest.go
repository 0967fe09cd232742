// Package vaulttest runs a real Vault dev server for tests. It never fakes
// Vault: a test that asks for one and cannot have it fails.
//
// The binary comes from $TOKENPROXY_VAULT_BIN, else from the cache that
// tools/vault/build.sh fills.
package vaulttest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/tokenproxy/tokenproxy/internal/testlog"
)

// Version is the Vault release tools/vault/build.sh builds; keep the two in step.
const Version = "v1.21.0"

const (
	startTimeout = 60 * time.Second
	stopTimeout  = 15 * time.Second
)

// Server is one `vault server -dev` process on 127.0.0.1. Its storage is in
// memory: whatever a test wrote is gone after Restart.
type Server struct {
	t     testing.TB
	bin   string
	home  string
	addr  string // host:port
	token string
	tls   bool // -dev-tls: HTTPS with a CA written to home/vault-ca.pem

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}   // closed when cmd has been waited for
	out    *testlog.Buffer // the server's output, for failure reports
}

// Binary returns the path of the vault binary the tests use.
func Binary() string {
	if p := os.Getenv("TOKENPROXY_VAULT_BIN"); p != "" {
		return p
	}
	cache := os.Getenv("TOKENPROXY_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "tokenproxy")
	}
	return filepath.Join(cache, "vault-"+Version)
}

// Start runs a dev server on a free loopback port, waits until it answers,
// and stops it when the test ends. It fails the test when the binary is
// missing or the server does not come up within a minute.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartTLS is Start with HTTPS (-dev-tls): the server's certificate is for
// 127.0.0.1 and signed by the CA in CAFile, made afresh at every (re)start.
func StartTLS(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, useTLS bool) *Server {
	t.Helper()
	bin := Binary()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("vaulttest: no vault binary at %s (%v): run tools/vault/build.sh or set TOKENPROXY_VAULT_BIN", bin, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("vaulttest: finding a free port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{t: t, bin: bin, home: t.TempDir(), addr: addr, token: "root-" + randomHex(), tls: useTLS}
	t.Cleanup(s.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vaulttest: the vault server's output:\n%s", s.output())
		}
	})
	s.start()
	return s
}

// Addr is the server's URL, http://127.0.0.1:port (https with StartTLS).
func (s *Server) Addr() string {
	if s.tls {
		return "https://" + s.addr
	}
	return "http://" + s.addr
}

// CAFile is the PEM file of the CA that signed a StartTLS server's
// certificate, or "".
func (s *Server) CAFile() string {
	if !s.tls {
		return ""
	}
	return filepath.Join(s.home, "vault-ca.pem")
}

// RootToken is the dev server's root token.
func (s *Server) RootToken() string { return s.token }

// Client returns a new API client that holds the root token.
func (s *Server) Client() *api.Client {
	conf := &api.Config{Address: s.Addr(), Timeout: 10 * time.Second}
	if err := conf.ConfigureTLS(&api.TLSConfig{CACert: s.CAFile()}); err != nil {
		s.t.Fatalf("vaulttest: %v", err)
	}
	c, err := api.NewClient(conf)
	if err != nil {
		s.t.Fatalf("vaulttest: %v", err)
	}
	c.SetToken(s.token)
	c.ClearNamespace() // NewClient reads $VAULT_NAMESPACE
	return c
}

// Stop ends the server; it may be called more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Restart stops the server and starts a new one on the same port, with the
// same root token and empty storage.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// output is the end of what the current server process printed.
func (s *Server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	out := s.out.String()
	return out[max(0, len(out)-3000):]
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	args := []string{"server", "-dev", "-dev-listen-address=" + s.addr, "-dev-root-token-id=" + s.token, "-dev-no-store-token"}
	if s.tls {
		os.Remove(s.CAFile()) // so that waitReady cannot trust the last run's CA
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+s.home)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.home
	cmd.Env = append(cleanEnv(), "HOME="+s.home)
	out := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("vaulttest: starting %s: %v", s.bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited, s.out = cmd, exited, out

	if err := waitReady(s.Addr(), s.CAFile(), exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		s.cmd = nil
		s.t.Fatalf("vaulttest: vault server on %s: %v\n%s", s.addr, err, out.String())
	}
}

// waitReady polls sys/health until the server answers 200 (initialized,
// unsealed, active), the process exits, or the deadline passes.
func waitReady(addr, caFile string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if healthy(ctx, addr, caFile) {
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s", startTimeout)
		case <-tick.C:
		}
	}
}

func healthy(ctx context.Context, addr, caFile string) bool {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return false // not written yet
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/v1/sys/health", nil)
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// cleanEnv is the test's environment without VAULT_* variables, so that a
// developer's own Vault settings cannot change the dev server.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return env
}

func randomHex() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
