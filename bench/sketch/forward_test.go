package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tokenproxy/tokenproxy/internal/proxy"
	"github.com/valyala/fasthttp"
)

// sketchFor is a sketch asking up through tokenproxy's client.
func sketchFor(up *httptest.Server) *sketch {
	u, _ := url.Parse(up.URL)
	s := newSketch(u.Host, "TOK", "KEY", prometheus.NewRegistry())
	s.ours = proxy.NewClient(up.Client().Transport.(*http.Transport))
	return s
}

// serving serves s on 127.0.0.1 until the test's end, and returns where.
func serving(t *testing.T, s *sketch) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: s.serve}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// Every header the upstream lists in its Connection headers is removed,
// however many Connection headers it sends (fasthttp keeps one).
func TestForwardRemovesWhatEveryConnectionHeaderLists(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Connection"] = []string{"X-Secret, keep-alive", "x-other"}
		w.Header().Set("X-Secret", "s1")
		w.Header().Set("X-Other", "o1")
		w.Header().Set("X-Kept", "k")
		w.Write([]byte("ok"))
	}))
	defer up.Close()
	s := sketchFor(up)
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/up/p")
	ctx.Request.Header.SetHost("tokenproxy")
	x := &exchange{s: s, id: "id"}
	body, _ := s.forward(&ctx, x)
	if body == nil {
		t.Fatalf("no answer: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	body.Close()
	for _, k := range []string{"X-Secret", "X-Other", "Connection"} {
		if v := ctx.Response.Header.Peek(k); len(v) > 0 {
			t.Errorf("%s: %q reached the caller", k, v)
		}
	}
	if v := string(ctx.Response.Header.Peek("X-Kept")); v != "k" {
		t.Errorf("X-Kept = %q, want k", v)
	}
}

// A caller that leaves while the upstream is slow stops the upstream
// call: the upstream sees its request cancelled, and the sketch logs 499.
func TestCallerGoneStopsTheUpstreamCall(t *testing.T) {
	arrived, stopped, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-r.Context().Done():
			close(stopped)
		case <-release: // the test failed: let the servers shut down
		}
	}))
	defer up.Close()
	s := sketchFor(up)
	s.watchAfter = time.Millisecond
	addr := serving(t, s)
	defer close(release)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("GET /up/slow HTTP/1.1\r\nHost: tokenproxy\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		what string
		ch   chan struct{}
	}{{"the request to reach the upstream", arrived}, {"the upstream call to stop", stopped}} {
		select {
		case <-step.ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("waited 10 s for %s", step.what)
		}
		c.Close()
	}
}

// Answers read in full leave their upstream connection for the next
// request: one after another, twenty requests take one connection (an
// upstream call's context ended before its answer had streamed aborted
// each connection instead).
func TestSequentialRequestsReuseOneUpstreamConnection(t *testing.T) {
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("answer"))
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.StartTLS()
	defer up.Close()
	s := sketchFor(up)
	addr := serving(t, s)
	caller := &http.Client{Timeout: 10 * time.Second}
	for i := range 20 {
		resp, err := caller.Get("http://" + addr + "/up/p")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "answer" {
			t.Fatalf("request %d: %q, %v", i, b, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("20 requests one after another opened %d upstream connections, want 1", n)
	}
}
