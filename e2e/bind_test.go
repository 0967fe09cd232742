package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/testlog"
)

// The process binds its listeners before it reads a credential or asks a
// vendor for a token (CONTRACT.md §6): one that cannot bind exits 1 without
// calling any vendor, so a pod crash-looping on a busy port does not hit
// every token endpoint on every restart.

// runToExit runs tokenproxy on cfg and waits for it to exit by itself; its
// output joins the env's canary search.
func (e *env) runToExit(cfg config.Config) (*proc, int) {
	e.t.Helper()
	path := e.writeConfig(fmt.Sprintf("config-%d.yaml", len(e.procs)), cfg)
	p := &proc{t: e.t, out: &testlog.Buffer{}, exited: make(chan struct{}), raceChecked: true}
	p.cmd = exec.Command(binary, "run", "--config", path)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.procs = append(e.procs, p)
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		e.t.Fatalf("tokenproxy still running 30s after start, want an exit:\n%s", p.out.String())
	}
	if strings.Contains(p.out.String(), "WARNING: DATA RACE") {
		e.t.Errorf("data race in tokenproxy:\n%s", p.out.String())
	}
	return p, exitCode(p)
}

func TestBusyPortExitsBeforeAnyTokenRequest(t *testing.T) {
	for _, which := range []string{"listen", "admin_listen"} {
		t.Run(which, func(t *testing.T) {
			e := newEnv(t)
			busy, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()
			cfg := e.allUpstreams()
			if which == "listen" {
				cfg.Listen = busy.Addr().String()
			} else {
				cfg.AdminListen = busy.Addr().String()
			}
			p, code := e.runToExit(cfg)
			if code != 1 {
				t.Errorf("exit code %d, want 1:\n%s", code, p.out.String())
			}
			if !p.logged("cannot listen", map[string]any{which: busy.Addr().String()}) {
				t.Errorf("no \"cannot listen\" line naming %s:\n%s", which, p.out.String())
			}
			for kind, v := range e.vendors {
				if n, m := v.sim.TokenCalls(), v.sim.APICalls(); n != 0 || m != 0 {
					t.Errorf("%s saw %d token and %d API requests from a process that could not bind", kind, n, m)
				}
			}
			for _, l := range p.logLines() {
				if l["msg"] == "credentials loaded" || l["msg"] == "listening" {
					t.Errorf("logged %q before exiting on a busy port", l["msg"])
				}
			}
		})
	}
}

// The same process, once the port is free, starts as usual: the order
// changed, not what is started.
func TestBindThenStart(t *testing.T) {
	e := newEnv(t)
	p := e.start(e.allUpstreams())
	p.ready(t)
	var listening, loaded int
	for i, l := range p.logLines() {
		switch l["msg"] {
		case "listening":
			listening = i
		case "credentials loaded":
			if loaded == 0 {
				loaded = i
			}
		}
	}
	if loaded == 0 || listening > loaded {
		t.Errorf("log lines: listening at %d, first credentials loaded at %d; want listening first", listening, loaded)
	}
	for kind, v := range e.vendors {
		if v.sim.TokenCalls() != 1 {
			t.Errorf("%s: %d token requests at start, want 1", kind, v.sim.TokenCalls())
		}
	}
}
