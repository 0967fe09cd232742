package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// Upgrades through the real binary (CONTRACT.md §3): a 101 passed back with
// the vendor's injection, bytes both ways until either side closes, a 401
// replayed, and the connection closed when shutdown_timeout ends. The
// simulators offer HTTP/2, as the vendors' hosts do.

// callerKeyHeader is the vendor key header a caller might send itself,
// which the proxy must remove (and for HGEM replace).
var callerKeyHeader = map[string]string{"hgem": "Hgem-Api-Key", "inspera": "Code"}

// wsDial opens a WebSocket to kind's echo through p, as a caller sending
// its own (to be removed) credentials.
func wsDial(t *testing.T, ctx context.Context, p *proc, kind string) *websocket.Conn {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer caller-token"}}
	if k := callerKeyHeader[kind]; k != "" {
		h.Set(k, "caller-key")
	}
	url := "ws" + strings.TrimPrefix(p.data, "http") + "/" + kind + vendorsim.UpgradePath
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		var body []byte
		if resp != nil {
			body, _ = io.ReadAll(resp.Body)
		}
		t.Fatalf("%s: %v %s", kind, err, body)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func wsEcho(t *testing.T, ctx context.Context, c *websocket.Conn, msgs ...string) {
	t.Helper()
	for _, m := range msgs {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatalf("write %q: %v", m, err)
		}
		if _, got, err := c.Read(ctx); err != nil || string(got) != m {
			t.Fatalf("echo of %q: %q %v", m, got, err)
		}
	}
}

// upgradeEnded waits for the simulator's record of its last request to
// UpgradePath to get a status, which a switched connection gets when it
// closes.
func upgradeEnded(t *testing.T, v *vendor) vendorsim.Request {
	t.Helper()
	var last vendorsim.Request
	waitFor(t, 20*time.Second, v.kind+"'s upgraded connection to end", func() bool {
		for _, r := range v.sim.APIRequests() {
			if r.Path == vendorsim.UpgradePath {
				last = r
			}
		}
		return last.Status != 0
	})
	return last
}

func TestUpgradeWebSocketEachVendor(t *testing.T) {
	e := newEnv(t)
	p := e.start(e.allUpstreams())
	p.ready(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, kind := range []string{"prominsight", "inspera", "hgem", "prodoscore"} {
		t.Run(kind, func(t *testing.T) {
			v := e.vendors[kind]
			c := wsDial(t, ctx, p, kind)
			wsEcho(t, ctx, c, "one", "two")
			c.Close(websocket.StatusNormalClosure, "done")
			got := upgradeEnded(t, v)
			auth := got.Header.Values("Authorization")
			if got.Status != 101 || len(auth) != 1 || !contains(v.sim.Tokens(), strings.TrimPrefix(auth[0], "Bearer ")) {
				t.Fatalf("the vendor saw status %d with %d Authorization values, want 101 and one of its tokens", got.Status, len(auth))
			}
			if k := callerKeyHeader[kind]; k != "" {
				want := ""
				if kind == "hgem" {
					want = v.creds["api_key"]
				}
				if vals := got.Header.Values(k); strings.Join(vals, ",") != want {
					t.Errorf("the vendor saw %d %s values, want the caller's removed (and for hgem the configured key)", len(vals), k)
				}
			}
			waitFor(t, 10*time.Second, "the request's log line", func() bool {
				return p.logged("request", map[string]any{"upstream": kind, "status": 101, "path": "/" + kind + vendorsim.UpgradePath})
			})
		})
	}
	if n := metric(t, p, `tokenproxy_requests_total{code="101",upstream="hgem"}`); n != 1 {
		t.Errorf("tokenproxy_requests_total for hgem's 101: %v, want 1", n)
	}
}

func TestUpgradeUpstreamClosesAndOtherProtocols(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	p := e.start(e.config("hgem"))
	p.ready(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("the vendor closes a WebSocket", func(t *testing.T) {
		c := wsDial(t, ctx, p, "hgem")
		wsEcho(t, ctx, c, "hello")
		c.Write(ctx, websocket.MessageText, []byte("close"))
		_, _, err := c.Read(ctx)
		if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Fatalf("after the vendor closed: %v, want its normal closure", err)
		}
		upgradeEnded(t, v)
	})

	t.Run("an Upgrade other than websocket, after HTTP/2 API calls", func(t *testing.T) {
		if r := get(t, p.data+"/hgem/api/visits"); r.StatusCode != 200 || r.Header.Get("Tokenproxy-Error") != "" {
			t.Fatalf("API call: %d", r.StatusCode)
		}
		c := dialRaw(t, p)
		c.send("GET /hgem" + vendorsim.UpgradePath + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\n\r\n")
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "line-echo" {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("got %d %s, want 101 to line-echo", resp.StatusCode, b)
		}
		io.WriteString(c.conn, "ping\n")
		if l, err := c.br.ReadString('\n'); l != "ping\n" {
			t.Fatalf("echo: %q %v", l, err)
		}
		io.WriteString(c.conn, "close\n")
		if ok, why := c.closedByPeer(); !ok {
			t.Fatalf("after the vendor closed: %s", why)
		}
		if got := upgradeEnded(t, v); got.Status != 101 {
			t.Fatalf("the vendor answered %d", got.Status)
		}
	})
}

func TestUpgradeReplayedAfter401(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	p := e.start(e.config("hgem"))
	p.ready(t)
	before := v.sim.TokenCalls()
	v.sim.RevokeAll()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := wsDial(t, ctx, p, "hgem")
	wsEcho(t, ctx, c, "after a new token")
	c.Close(websocket.StatusNormalClosure, "")
	upgradeEnded(t, v)
	var statuses []int
	for _, r := range v.sim.APIRequests() {
		statuses = append(statuses, r.Status)
	}
	if len(statuses) != 2 || statuses[0] != 401 || statuses[1] != 101 {
		t.Fatalf("the vendor answered %v, want [401 101]", statuses)
	}
	if n := v.sim.TokenCalls() - before; n != 1 {
		t.Fatalf("%d token requests for the replay, want 1", n)
	}
	waitFor(t, 10*time.Second, "the log line of a replayed 101", func() bool {
		return p.logged("request", map[string]any{"status": 101, "token": "replayed"})
	})
}

func TestUpgradeClosedAtShutdownTimeout(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	const shutdownTimeout = 2 * time.Second
	cfg := e.config("hgem")
	cfg.ShutdownTimeout.Duration = shutdownTimeout
	p := e.start(cfg)
	p.ready(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := wsDial(t, ctx, p, "hgem")
	wsEcho(t, ctx, c, "before")

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	dataAddr := strings.TrimPrefix(p.data, "http://")
	waitFor(t, 15*time.Second, "the data listener to close", func() bool {
		conn, err := net.DialTimeout("tcp", dataAddr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
	// The listener is gone; the upgraded connection is not, until
	// shutdown_timeout ends.
	wsEcho(t, ctx, c, "while draining")
	if time.Since(start) >= shutdownTimeout {
		t.Logf("warning: the echo while draining finished %s after SIGTERM", time.Since(start))
	}
	if _, _, err := c.Read(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("read after shutdown_timeout: %v, want the connection closed", err)
	}
	p.waitExit(t, 20*time.Second, "no exit within 20s of SIGTERM")
	if d := time.Since(start); d < shutdownTimeout {
		t.Errorf("exited %s after SIGTERM, before shutdown_timeout", d)
	}
	if code := exitCode(p); code != 0 {
		t.Errorf("exit code %d, want 0: cutting a WebSocket at shutdown is not a failure", code)
	}
	if !p.logged("upgraded connections closed at shutdown_timeout", map[string]any{"connections": 1}) {
		t.Error("no log line counts the upgraded connection closed")
	}
	upgradeEnded(t, v)
}

func TestUpgradeClosedByCallerEndsShutdownEarly(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("hgem")
	cfg.ShutdownTimeout.Duration = 120 * time.Second
	p := e.start(cfg)
	p.ready(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := wsDial(t, ctx, p, "hgem")
	wsEcho(t, ctx, c, "before")
	p.cmd.Process.Signal(syscall.SIGTERM)
	wsEcho(t, ctx, c, "while draining")
	c.Close(websocket.StatusNormalClosure, "bye")
	p.waitExit(t, 30*time.Second, "still running 30s after its only upgraded connection closed (shutdown_timeout 120s)")
	if code := exitCode(p); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if p.logged("upgraded connections closed at shutdown_timeout", nil) {
		t.Error("the caller closed its connection, yet the log says shutdown closed it")
	}
}
