package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
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
