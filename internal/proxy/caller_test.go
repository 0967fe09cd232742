package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenproxy/tokenproxy/internal/broker"
)

// blockedTokens hands out no token until the caller's context is done.
type blockedTokens struct{}

func (blockedTokens) Token(ctx context.Context) (broker.Token, error) {
	<-ctx.Done()
	return broker.Token{}, ctx.Err()
}

func (blockedTokens) Invalidate(uint64) bool { return false }

// A caller that half-closes its side after the request is gone as far as
// net/http is concerned (it cancels the request's context): whatever
// tokenproxy was waiting on, nothing that looks like an answer goes out
// (before, an empty 200 did), and the request is logged and counted once,
// as 499.
func TestCallerGoneGetsNoAnswer(t *testing.T) {
	o := newObserved(t)
	hang := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(hang.Close)
	base, _ := url.Parse(hang.URL)
	tr := NewClient(hang.Client().Transport.(*http.Transport))
	t.Cleanup(tr.CloseIdleConnections)
	route := func(name string, tok Tokens) *Route {
		return &Route{Name: name, Base: base, Tokens: tok, Transport: tr, Timeout: time.Minute, ReplayMaxBytes: 1 << 20}
	}
	o.h.SetTable(NewTable([]*Route{route("upstream", o.tok), route("token", blockedTokens{})}))

	for i, path := range []string{"/upstream/visits", "/token/visits"} {
		c, err := net.Dial("tcp", o.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		c.Close()
		if len(got) != 0 || err != nil {
			t.Errorf("%s: the caller that half-closed got %q (%v), want the connection closed with nothing", path, got, err)
		}
		waitUntil(t, "the request's log line", func() bool { return o.logs.FilterMessage("request").Len() == i+1 })
		line := o.logs.FilterMessage("request").All()[i].ContextMap()
		if line["status"] != int64(499) || line["path"] != path {
			t.Errorf("%s: log %v, want status 499", path, line)
		}
		name := path[1 : len(path)-len("/visits")]
		if n := testutil.ToFloat64(o.h.metrics.Requests.WithLabelValues(name, "499")); n != 1 {
			t.Errorf("%s: %v requests counted as 499, want 1", path, n)
		}
		if n := testutil.ToFloat64(o.h.metrics.InFlight.WithLabelValues(name)); n != 0 {
			t.Errorf("%s: %v in flight after it ended", path, n)
		}
	}
	if n := o.logs.FilterMessage("upstream unreachable").Len(); n != 0 {
		t.Errorf("a caller gone blamed on the upstream %d times", n)
	}
}

// An answer's status and headers reach the caller at once even when its
// body is late (a break-it tester's input: they waited for the first body
// byte, and forever for a body that never came); and a caller that leaves
// while the upstream stalls its body ends the upstream's answer, the
// request's log line and its in-flight count, rather than waiting for the
// upstream to close.
func TestLateAnswerBody(t *testing.T) {
	for _, length := range []string{"100", ""} { // known, and chunked
		release := make(chan struct{})
		ended := make(chan error, 1)
		g := newRecRig(t, "", func(w http.ResponseWriter, r *http.Request) {
			if length != "" {
				w.Header().Set("Content-Length", length)
			}
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-release:
				io.WriteString(w, "late")
			case <-r.Context().Done():
				ended <- r.Context().Err()
			}
		})
		// Registered after the rig's, so run before them: a failure leaves
		// no answer stalled for the server's shutdown to wait on.
		var once sync.Once
		t.Cleanup(func() { once.Do(func() { close(release) }) })
		c, err := net.Dial("tcp", g.addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /up/x HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("length %q: %v, want the headers before the body", length, err)
		}
		c.Close() // gone, the body still stalled
		select {
		case err := <-ended:
			if err == nil {
				t.Fatalf("length %q: the upstream's request ended without an error", length)
			}
		case <-time.After(10 * time.Second): // a deadline for the wait, not a timing
			t.Fatalf("length %q: the upstream's answer went on after the caller left", length)
		}
		waitUntil(t, "the log line", func() bool { return g.logs.FilterMessage("request").Len() == 1 })
		if got := testutil.ToFloat64(g.h.metrics.InFlight.WithLabelValues("up")); got != 0 {
			t.Errorf("length %q: %v requests in flight after the caller left", length, got)
		}
		once.Do(func() { close(release) })
	}
}
