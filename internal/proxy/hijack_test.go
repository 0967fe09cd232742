package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenproxy/tokenproxy/internal/metrics"
)

// cutListener's connections run cut when fasthttp's server is about to
// hand one to a hijack handler: fasthttp v1.78.0 calls SetDeadline on a
// served connection there alone (server.go serveConnCounted, before `go
// hijackConnHandler`), after the request handler has returned.
type cutListener struct {
	net.Listener
	cut func()
}

func (l cutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &cutConn{TCPConn: c.(*net.TCPConn), cut: l.cut}, nil
}

type cutConn struct {
	*net.TCPConn
	cut func()
}

func (c *cutConn) SetDeadline(t time.Time) error {
	c.cut()
	return c.TCPConn.SetDeadline(t)
}

// Server.Close in the moment between the request handler's return and
// the hijack closes the connection before fasthttp hands it over: fasthttp
// then drops the hijack handler and never calls it. What the handler
// would have ended must end all the same, at every site that hijacks: the
// request is logged and counted, the upstream's side is closed, and the
// drain does not wait for it.
func TestHijackDroppedAtCloseStillEnds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		request  string                                                     // sent as written
		upstream func(w http.ResponseWriter, r *http.Request, ended func()) // ended: its side of the exchange is over
	}{
		{"a switch", "GET /up/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request, ended func()) {
				switchUpstream(w, r, "Upgrade", func(_ net.Conn, brw *bufio.ReadWriter) {
					io.Copy(io.Discard, brw)
					ended()
				})
			}},
		{"an unframed answer to HTTP/1.0", "GET /up/stream HTTP/1.0\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request, ended func()) {
				io.WriteString(w, "start\n")
				w.(http.Flusher).Flush() // no length
				<-r.Context().Done()
				ended()
			}},
		{"an answer before the body, lingering", "POST /up/early HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\n\r\n" + strings.Repeat("z", 100),
			func(w http.ResponseWriter, r *http.Request, ended func()) {
				http.NewResponseController(w).EnableFullDuplex()
				io.WriteString(w, "start\n") // before the body
				w.(http.Flusher).Flush()
				io.Copy(io.Discard, r.Body) // to its end, or the connection's
				ended()
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ended := make(chan struct{})
			up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tc.upstream(w, r, func() { close(ended) })
			}))
			t.Cleanup(up.Close)
			t.Cleanup(up.CloseClientConnections) // ends its handler, when the proxy has not
			base, _ := url.Parse(up.URL)
			tr := NewClient(up.Client().Transport.(*http.Transport))
			t.Cleanup(tr.CloseIdleConnections)
			reg := prometheus.NewRegistry()
			core, logs := observer.New(zap.InfoLevel)
			h := New(NewTable([]*Route{{Name: "up", Base: base, Tokens: &switchTokens{}, Transport: tr,
				Timeout: 10 * time.Second, ReplayMaxBytes: 1 << 20}}), "127.0.0.1:0",
				metrics.New(reg, metrics.Build{Version: "test"}), zap.New(core))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := h.Server(ServerOptions{})
			cut := make(chan struct{})
			go srv.Serve(cutListener{Listener: ln, cut: func() {
				srv.Close()
				close(cut)
			}})
			t.Cleanup(srv.Close)

			c := dialRaw(t, ln.Addr().String())
			io.WriteString(c, tc.request)
			select {
			case <-cut:
			case <-time.After(10 * time.Second):
				t.Fatal("fasthttp never came to hand the connection over")
			}
			if got, _ := io.ReadAll(c); len(got) != 0 {
				t.Errorf("the caller got %q, want its connection closed with nothing", got)
			}

			deadline := time.Now().Add(5 * time.Second)
			within := func(what string, cond func() bool) {
				t.Helper()
				for !cond() {
					if time.Now().After(deadline) {
						t.Errorf("%s: not within 5 s", what)
						return
					}
					time.Sleep(2 * time.Millisecond) // polling a condition, with the deadline above
				}
			}
			within("the request's log line", func() bool { return logs.FilterMessage("request").Len() == 1 })
			if l := logs.FilterMessage("request").All(); len(l) == 1 && l[0].ContextMap()["status"] != int64(499) {
				t.Errorf("log line %v, want status 499: nothing went out", l[0].ContextMap())
			}
			within("the upstream's side closed", func() bool {
				select {
				case <-ended:
					return true
				default:
					return false
				}
			})
			within("no request in flight", func() bool {
				return testutil.ToFloat64(h.metrics.InFlight.WithLabelValues("up")) == 0
			})
			timedOut, end := context.WithCancel(context.Background())
			end()
			if s, a := h.CloseUpgraded(timedOut); s+a != 0 {
				t.Errorf("CloseUpgraded closed %d switches and %d answers, want nothing left for the drain", s, a)
			}
		})
	}
}
