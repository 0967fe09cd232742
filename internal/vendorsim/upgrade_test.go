package vendorsim

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// statusOf waits for the simulator's record of the i-th API request to get its status,
// which it does when the handler ends.
func statusOf(t *testing.T, sim *Server, i int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if reqs := sim.APIRequests(); len(reqs) > i && reqs[i].Status != 0 {
			return reqs[i].Status
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %d never ended", i)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with the deadline above
	}
}

func TestUpgradeWebSocketEcho(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			sim, ts := start(t, kind)
			tok, _ := fetchToken(t, sim, ts.URL)
			url := "ws" + strings.TrimPrefix(ts.URL, "http") + UpgradePath
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			// Without a token: refused like any API call, before any switch.
			_, resp, err := websocket.Dial(ctx, url, nil)
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("no token: %v %v, want a 401", resp, err)
			}

			h := apiReq(t, kind, "GET", ts.URL, tok, nil).Header
			c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			for _, m := range []string{"one", "two"} {
				if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
					t.Fatal(err)
				}
				if _, got, err := c.Read(ctx); err != nil || string(got) != m {
					t.Fatalf("echo of %q: %q %v", m, got, err)
				}
			}
			c.Write(ctx, websocket.MessageText, []byte("close"))
			_, _, err = c.Read(ctx)
			if s := websocket.CloseStatus(err); s != websocket.StatusNormalClosure {
				t.Fatalf("after close: %v, want a normal closure from the simulator", err)
			}
			if s := statusOf(t, sim, 1); s != http.StatusSwitchingProtocols {
				t.Fatalf("recorded status %d, want 101", s)
			}
		})
	}
}

func TestUpgradeLineEcho(t *testing.T) {
	sim, ts := start(t, HGEM)
	tok, _ := fetchToken(t, sim, ts.URL)
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET "+UpgradePath+" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\n"+
		"Authorization: Bearer "+tok+"\r\nhgem-api-key: "+demoCreds(HGEM)["api_key"]+"\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "line-echo" {
		t.Fatalf("%v %v, want 101 to line-echo", resp, err)
	}
	io.WriteString(conn, "hello\n")
	if line, err := br.ReadString('\n'); line != "hello\n" {
		t.Fatalf("echo: %q %v", line, err)
	}
	io.WriteString(conn, "close\n")
	if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil {
		t.Fatalf("after close: %q %v, want EOF", rest, err)
	}
	if s := statusOf(t, sim, 0); s != 101 {
		t.Fatalf("recorded status %d, want 101", s)
	}

	// Without Upgrade: 426, naming the protocol to use.
	a := do(t, nil, apiReq(t, HGEM, "GET", ts.URL+UpgradePath, tok, nil))
	if a.status != http.StatusUpgradeRequired || a.header.Get("Upgrade") != "websocket" {
		t.Fatalf("no Upgrade: %d %v", a.status, a.header)
	}
}

// Close releases switched connections, like hanging requests, so no handler outlives it.
func TestUpgradeEndsOnClose(t *testing.T) {
	sim, ts := start(t, HGEM)
	tok, _ := fetchToken(t, sim, ts.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+UpgradePath,
		&websocket.DialOptions{HTTPHeader: apiReq(t, HGEM, "GET", ts.URL, tok, nil).Header})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	sim.Close()
	_, _, err = c.Read(ctx)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read after Close: %v, want the connection closed", err)
	}
	statusOf(t, sim, 0)
}
