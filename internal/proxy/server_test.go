package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// startServer serves h with newServer on 127.0.0.1, its log observed at
// debug; the test's cleanup shuts it down.
func startServer(t *testing.T, h fasthttp.RequestHandler, o ServerOptions) (string, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	o.Log = zap.New(core)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(h, nil, o)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String(), logs
}

// rawExchange writes raw on a new connection and reads one answer; it
// reports whether the server closed the connection after it.
func rawExchange(t *testing.T, addr, raw string) (*http.Response, string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// Written beside the read: the server may answer before reading it all.
	go io.WriteString(c, raw)
	br := bufio.NewReader(c)
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	// Closed: the end of the stream, or a reset when the server closed
	// with some of raw unread (a 431); a timeout is a connection kept.
	// A connection kept open is given half a second to prove it.
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = br.ReadByte()
	var ne net.Error
	return r, string(body), err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

const canary = "CANARY-7f3a9c-secret"

// Requests fasthttp's parser refuses, and those checkRequest refuses before
// the handler, are answered in net/http's plain shape, with nothing of the
// request in the answer or the log.
func TestServerRefusalsArePlain(t *testing.T) {
	var called sync.Map
	addr, logs := startServer(t, func(ctx *fasthttp.RequestCtx) {
		called.Store(string(ctx.RequestURI()), true)
	}, ServerOptions{ReadHeaderTimeout: 5 * time.Second})

	huge := "GET /a HTTP/1.1\r\nHost: x\r\nX-Key: " + canary + "\r\n"
	for i := 0; len(huge) < 80<<10; i++ {
		huge += fmt.Sprintf("X-Big-%d: %s\r\n", i, strings.Repeat("a", 1000))
	}
	cases := []struct {
		name, raw string
		status    int
		body      string
	}{
		// fasthttp's parser: the ErrorHandler.
		{"garbage", "GARBAGE" + canary + "\r\n\r\n", 400, "400 Bad Request"},
		{"no version", "GET /a?key=" + canary + "\r\nHost: x\r\n\r\n", 400, "400 Bad Request"},
		{"headers over 64 KiB", huge + "\r\n", 431, "431 Request Header Fields Too Large"},
		{"Transfer-Encoding on HTTP/1.0", "POST /a HTTP/1.0\r\nHost: x\r\nX-Key: " + canary + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, "Unsupported transfer encoding"},
		{"no Host", "GET /a?key=" + canary + " HTTP/1.1\r\n\r\n", 400, "400 Bad Request"},
		// checkRequest, before the handler.
		{"unsupported Transfer-Encoding", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "Unsupported transfer encoding"},
		{"HTTP/2.0", "GET /a HTTP/2.0\r\nHost: x\r\n\r\n", 505, "505 HTTP Version Not Supported: unsupported HTTP version"},
		{"Expect", "GET /a HTTP/1.1\r\nHost: x\r\nExpect: " + canary + "\r\n\r\n", 417, "417 Expectation Failed: unsupported Expect"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, body, closed := rawExchange(t, addr, tc.raw)
			if r.StatusCode != tc.status || body != tc.body {
				t.Errorf("got %d %q, want %d %q", r.StatusCode, body, tc.status, tc.body)
			}
			if ct := r.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if !r.Close || !closed {
				t.Errorf("Connection: close %v, closed by the server %v: want both", r.Close, closed)
			}
			if s := r.Header.Get("Server"); s != "" {
				t.Errorf("Server: %q", s)
			}
			if strings.Contains(fmt.Sprint(r.Header), canary) || strings.Contains(body, canary) {
				t.Errorf("the answer quotes the request: %v %q", r.Header, body)
			}
		})
	}
	called.Range(func(k, _ any) bool { t.Errorf("the handler was called for %q", k); return true })
	// fasthttp logs a connection's error before closing it, and each
	// exchange waited for the close: the lines are all there.
	if n := logs.FilterMessageSnippet("error when serving connection").Len(); n < 4 {
		t.Fatalf("%d refusals logged, want one for each of fasthttp's: the canary check would prove little", n)
	}
	for _, e := range logs.All() {
		if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, canary) {
			t.Errorf("the log quotes the request: %s", line)
		}
	}
}

// A request that passes is served, with the connection kept unless it
// asked to close as net/http reads Connection (wantsClose).
func TestServerServesAndCloses(t *testing.T) {
	addr, _ := startServer(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") },
		ServerOptions{ReadHeaderTimeout: 5 * time.Second})
	r, body, closed := rawExchange(t, addr, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	if r.StatusCode != 200 || body != "ok" || r.Close || closed {
		t.Errorf("got %d %q, close %v/%v: want 200 \"ok\" on a kept connection", r.StatusCode, body, r.Close, closed)
	}
	if r.Header.Get("Date") == "" || r.Header.Get("Content-Type") != "" {
		t.Errorf("got Date %q, Content-Type %q: want net/http's Date and no Content-Type of its own", r.Header.Get("Date"), r.Header.Get("Content-Type"))
	}
	r, _, closed = rawExchange(t, addr, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive close\r\n\r\n")
	if !r.Close || !closed {
		t.Errorf("Connection: keep-alive close: close %v/%v, want both", r.Close, closed)
	}
}

// A Shutdown or Close that comes before Serve holds: Serve returns at once
// and closes its listener (fasthttp's Shutdown forgets a listener it has
// not seen; a daemon stopped as it starts, or a test's cleanup, waited on
// an accept for ever).
func TestServerStoppedBeforeServe(t *testing.T) {
	for _, stop := range []string{"Shutdown", "Close"} {
		t.Run(stop, func(t *testing.T) {
			s := newServer(func(*fasthttp.RequestCtx) {}, nil, ServerOptions{})
			if stop == "Shutdown" {
				if err := s.Shutdown(context.Background()); err != nil {
					t.Fatal(err)
				}
			} else {
				s.Close()
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			served := make(chan error, 1)
			go func() { served <- s.Serve(ln) }()
			select {
			case err := <-served:
				if err != nil {
					t.Errorf("Serve after %s: %v, want nil", stop, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("Serve after %s: still serving after 5 s", stop)
			}
			if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
				c.Close()
				t.Errorf("the listener still accepts after %s", stop)
			}
		})
	}
}

// A panic in the handler is logged and ends its connection; the server
// goes on.
func TestServerPanic(t *testing.T) {
	addr, logs := startServer(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/panic" {
			panic("boom")
		}
	}, ServerOptions{ReadHeaderTimeout: 5 * time.Second})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("got %d bytes, %v: want the connection closed", n, err)
	}
	c.Close()
	if r, _, _ := rawExchange(t, addr, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"); r.StatusCode != 200 {
		t.Errorf("after a panic: %d", r.StatusCode)
	}
	if logs.FilterMessageSnippet("panic").Len() != 1 {
		t.Errorf("want one panic logged, got %v", logs.All())
	}
}

// pipeListener hands out the server's ends of net.Pipe connections, so
// that the server's deadlines run on synctest's clock.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) dial() net.Conn {
	client, server := net.Pipe()
	l.conns <- server
	return client
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// The timeouts as net/http's ReadHeaderTimeout and IdleTimeout: the
// headers of a connection's first request are bounded from its opening,
// a later request's from its first byte, the wait between requests by the
// idle timeout, and a body by none of them.
func TestServerTimeouts(t *testing.T) {
	// fasthttp's Date refresher lives for the process: started outside
	// the bubble, or synctest would wait for it forever.
	var h fasthttp.ResponseHeader
	h.Header()

	const rht = time.Second
	// serve runs test in a bubble against a server with read_header_timeout
	// rht, reached through ln.
	serve := func(t *testing.T, test func(t *testing.T, ln *pipeListener)) {
		synctest.Test(t, func(t *testing.T) {
			ln := newPipeListener()
			s := newServer(func(ctx *fasthttp.RequestCtx) {
				var n int64
				if body := ctx.RequestBodyStream(); body != nil { // nil when there is none
					var err error
					if n, err = io.Copy(io.Discard, body); err != nil {
						ctx.SetStatusCode(500)
					}
				}
				ctx.SetBodyString(fmt.Sprint(n))
			}, nil, ServerOptions{ReadHeaderTimeout: rht})
			done := make(chan error, 1)
			go func() { done <- s.Serve(ln) }()
			defer func() { // also after a t.Fatal in test
				s.Close()
				if err := s.Shutdown(context.Background()); err != nil {
					t.Errorf("shutdown: %v", err)
				}
				if err := <-done; err != nil {
					t.Errorf("serve: %v", err)
				}
				// fasthttp's worker pool cleaner notices the stop when it
				// next wakes, every 10s.
				time.Sleep(time.Minute)
			}()
			test(t, ln)
		})
	}
	// closedAfter reads c until the server closes it, and how long that
	// took; an answer is a failure.
	closedAfter := func(t *testing.T, c net.Conn) time.Duration {
		start := time.Now()
		n, err := c.Read(make([]byte, 512))
		if n != 0 || err == nil {
			t.Fatalf("got %d bytes of answer, want the connection closed", n)
		}
		return time.Since(start)
	}
	request := func(t *testing.T, br *bufio.Reader) string {
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		b, _ := io.ReadAll(r.Body)
		return fmt.Sprint(r.StatusCode, " ", string(b))
	}

	// slowHeaders sends a request's first byte, then, just within
	// read_header_timeout, more of its headers but not their end: the
	// connection must close read_header_timeout after that first byte.
	slowHeaders := func(t *testing.T, c net.Conn) {
		t.Helper()
		io.WriteString(c, "G")
		time.Sleep(rht - time.Millisecond)
		io.WriteString(c, "ET /a HTTP/1.1\r\nHost: x\r\n")
		if d := closedAfter(t, c); d != time.Millisecond {
			t.Errorf("closed %s after the second write, want read_header_timeout from the first byte", d)
		}
	}

	t.Run("first request's headers", func(t *testing.T) {
		serve(t, func(t *testing.T, ln *pipeListener) {
			c := ln.dial()
			defer c.Close()
			io.WriteString(c, "GET /a HTTP/1.1\r\n")
			time.Sleep(rht / 2)
			io.WriteString(c, "Host: x\r\n") // still within read_header_timeout
			if d := closedAfter(t, c); d != rht/2 {
				t.Errorf("closed %s after the second line, want %s (read_header_timeout from the opening)", d, rht/2)
			}
		})
	})

	// fasthttp's ReduceMemoryUsage reads a new connection's first byte
	// without a read buffer, under read_header_timeout, which then starts
	// again: a caller has it whole for its headers, from its first byte.
	t.Run("a first request that starts late", func(t *testing.T) {
		serve(t, func(t *testing.T, ln *pipeListener) {
			c := ln.dial()
			defer c.Close()
			time.Sleep(rht - time.Millisecond)
			slowHeaders(t, c)

			silent := ln.dial()
			defer silent.Close()
			if d := closedAfter(t, silent); d != rht {
				t.Errorf("a silent connection was closed after %s, want read_header_timeout", d)
			}
		})
	})

	t.Run("a later request's headers and the idle wait", func(t *testing.T) {
		serve(t, func(t *testing.T, ln *pipeListener) {
			c := ln.dial()
			defer c.Close()
			br := bufio.NewReader(c)
			go io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
			if got := request(t, br); got != "200 0" {
				t.Fatalf("first request: %s", got)
			}
			time.Sleep(time.Minute) // idle, under the idle timeout
			slowHeaders(t, c)

			c2 := ln.dial()
			defer c2.Close()
			go io.WriteString(c2, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
			if got := request(t, bufio.NewReader(c2)); got != "200 0" {
				t.Fatalf("first request: %s", got)
			}
			if d := closedAfter(t, c2); d != idleTimeout {
				t.Errorf("idle connection closed after %s, want %s", d, idleTimeout)
			}
		})
	})

	t.Run("a body is not bounded", func(t *testing.T) {
		serve(t, func(t *testing.T, ln *pipeListener) {
			c := ln.dial()
			defer c.Close()
			br := bufio.NewReader(c)
			// Beyond the 8 KiB fasthttp reads before the handler.
			io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n"+strings.Repeat("a", 10000))
			time.Sleep(10 * rht)
			go io.WriteString(c, strings.Repeat("a", 10000))
			if got := request(t, br); got != "200 20000" {
				t.Fatalf("slow body: %s", got)
			}
			// And chunked, where nothing is read ahead.
			io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
			time.Sleep(10 * rht)
			go io.WriteString(c, "3\r\nabc\r\n0\r\n\r\n")
			if got := request(t, br); got != "200 3" {
				t.Fatalf("slow chunked body: %s", got)
			}
		})
	})
}
