package proxy

import (
	"context"
	"net"
	"net/http"
)

// testServer is a Handler on the data plane's server (Handler.Server) at a
// 127.0.0.1 port, as the daemon serves it, with what the tests used of
// httptest.Server.
type testServer struct {
	URL      string
	Listener net.Listener
	srv      *Server
	done     chan struct{}
	client   *http.Client
}

func newTestServer(h *Handler) *testServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s := &testServer{URL: "http://" + ln.Addr().String(), Listener: ln, done: make(chan struct{}),
		srv: h.Server(ServerOptions{}), client: &http.Client{Transport: &http.Transport{}}}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s
}

func (s *testServer) Client() *http.Client { return s.client }

func (s *testServer) Close() {
	s.srv.Shutdown(context.Background())
	<-s.done
	s.client.CloseIdleConnections()
}
