package proxy

import (
	"net"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"
)

// testServer is a Handler on fasthttp's server at a 127.0.0.1 port, as the
// daemon serves it, with what the tests used of httptest.Server.
type testServer struct {
	URL      string
	Listener net.Listener
	srv      *fasthttp.Server
	done     chan struct{}
	client   *http.Client
}

func newTestServer(h *Handler) *testServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s := &testServer{URL: "http://" + ln.Addr().String(), Listener: ln, done: make(chan struct{}),
		srv: testFastServer(h), client: &http.Client{Transport: &http.Transport{}}}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s
}

func testFastServer(h *Handler) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      h.Serve,
		ErrorHandler:                 h.Refused,
		MaxIdleWorkerDuration:        time.Second,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		ReadBufferSize:               64 << 10,
		WriteBufferSize:              32 << 10,
		IdleTimeout:                  2 * time.Minute,
		SecureErrorLogMessage:        true,
		MaxRequestBodySize:           1,
	}
}

func (s *testServer) Client() *http.Client { return s.client }

func (s *testServer) Close() {
	s.srv.Shutdown()
	<-s.done
	s.client.CloseIdleConnections()
}
