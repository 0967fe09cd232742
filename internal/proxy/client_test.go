package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tlsUpstream serves h over HTTPS (HTTP/1.1 and HTTP/2 on offer, as a
// vendor's host) and counts the connections it accepted.
func tlsUpstream(t *testing.T, h http.Handler) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	up := httptest.NewUnstartedServer(h)
	up.EnableHTTP2 = true
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.StartTLS()
	t.Cleanup(up.Close)
	return up, &conns
}

func clientFor(t *testing.T, up *httptest.Server, maxConns int) *Client {
	t.Helper()
	tr := up.Client().Transport.(*http.Transport).Clone()
	tr.MaxConnsPerHost = maxConns
	c := NewClient(tr)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func get(t *testing.T, c *Client, ctx context.Context, u string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestClientSpeaksHTTP1AndReusesConnections(t *testing.T) {
	up, conns := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Proto, " ", r.RequestURI)
	}))
	c := clientFor(t, up, 0)
	for i := range 20 {
		resp, body := get(t, c, context.Background(), up.URL+"/a%2Fb?q="+fmt.Sprint(i))
		if want := "HTTP/1.1 /a%2Fb?q=" + fmt.Sprint(i); resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("20 requests one after another opened %d connections, want 1", n)
	}
}

// max_connections: more requests at once than the bound wait for a
// connection instead of opening more.
func TestClientBoundsConnections(t *testing.T) {
	var inside atomic.Int64
	release := make(chan struct{})
	up, conns := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside.Add(1)
		<-release
		io.WriteString(w, "ok")
	}))
	c := clientFor(t, up, 2)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", up.URL+"/", nil)
			resp, err := c.RoundTrip(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	waitUntil(t, "two requests at the upstream", func() bool { return inside.Load() == 2 })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("6 requests at once with max_connections 2 opened %d connections", n)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition, with the deadline above
	}
}

// rawUpstream accepts TLS connections and hands each to serve.
func rawUpstream(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (string, *Client) {
	t.Helper()
	up := httptest.NewUnstartedServer(nil)
	up.StartTLS() // only for its certificate and client
	cfg := up.TLS.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait(); up.Close() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				serve(conn, bufio.NewReader(conn))
			}()
		}
	}()
	c := NewClient(up.Client().Transport.(*http.Transport))
	t.Cleanup(c.CloseIdleConnections)
	return "https://" + ln.Addr().String(), c
}

// An upstream that closed a pooled connection while it was idle: an
// idempotent request is sent again on a new connection.
func TestClientRetriesOnAConnectionClosedWhileIdle(t *testing.T) {
	var served atomic.Int64
	u, c := rawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
		// One answer per connection, announced as kept alive, then a close.
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		n := served.Add(1)
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d", n%10)
	})
	for i := range 3 {
		resp, body := get(t, c, context.Background(), u+"/")
		if resp.StatusCode != 200 || body != fmt.Sprint(i+1) {
			t.Fatalf("request %d: got %d %q", i, resp.StatusCode, body)
		}
	}
}

// 1xx answers go to the trace (which ReverseProxy forwards to the caller);
// the final answer is returned.
func TestClientPassesInformationalAnswers(t *testing.T) {
	u, c := rawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(conn, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	var got []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, fmt.Sprint(code, " ", h.Get("Link")))
			return nil
		},
	})
	resp, body := get(t, c, ctx, u+"/")
	if resp.StatusCode != 200 || body != "ok" || len(got) != 1 || got[0] != "103 </a.css>; rel=preload" {
		t.Fatalf("got %d %q, 1xx %q", resp.StatusCode, body, got)
	}
}

// Trailers both ways: a chunked request's trailer reaches the upstream, and
// the answer's trailer is in resp.Trailer once the body is read.
// answer sends a GET and returns the answer with its body unread, closed
// when the test ends.
func answer(t *testing.T, c *Client, u string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestClientTrailers(t *testing.T) {
	up, _ := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "got "+r.Trailer.Get("X-Check"))
	}))
	c := clientFor(t, up, 0)
	req, _ := http.NewRequest("POST", up.URL+"/", io.NopCloser(strings.NewReader("data")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Check": {"abc"}}
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "body" || resp.Trailer.Get("X-Sum") != "got abc" {
		t.Fatalf("got %q, trailer %q", b, resp.Trailer)
	}
}

// An upstream may answer before it reads a request's body (or never read
// it): the answer comes back, and the connection is not used again.
func TestClientAnswerBeforeTheBody(t *testing.T) {
	up, conns := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			w.Header().Set("Connection", "close")
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		io.WriteString(w, "ok")
	}))
	c := clientFor(t, up, 1)
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	req, _ := http.NewRequest("POST", up.URL+"/", pr)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("got %d", resp.StatusCode)
	}
	pw.CloseWithError(errors.New("caller gone"))
	// max_connections 1: the next request gets a new connection, so the
	// first one's slot was given back.
	if resp, body := get(t, c, context.Background(), up.URL+"/"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("next request: %d %q", resp.StatusCode, body)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// Cancelling the request's context ends a wait for the answer at once.
func TestClientCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up, _ := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	c := clientFor(t, up, 0)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", up.URL+"/", nil)
	done := make(chan error, 1)
	go func() {
		_, err := c.RoundTrip(req)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RoundTrip did not return after the cancel")
	}
}

// HTTPS_PROXY: the client tunnels through the proxy with CONNECT, with the
// proxy URL's credentials.
func TestClientThroughAProxy(t *testing.T) {
	up, _ := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "via tunnel") }))
	var auth atomic.Value
	px := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "CONNECT" {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		auth.Store(r.Header.Get("Proxy-Authorization"))
		back, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(200)
		front, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			back.Close()
			return
		}
		// From brw, which may hold the first byte of the TLS handshake.
		go func() { io.Copy(back, brw); back.Close() }()
		io.Copy(front, back)
		front.Close()
	}))
	defer px.Close()
	tr := up.Client().Transport.(*http.Transport).Clone()
	pu, _ := url.Parse(px.URL)
	pu.User = url.UserPassword("u", "p")
	tr.Proxy = http.ProxyURL(pu)
	c := NewClient(tr)
	defer c.CloseIdleConnections()
	resp, body := get(t, c, context.Background(), up.URL+"/")
	if resp.StatusCode != 200 || body != "via tunnel" || auth.Load() != "Basic dTpw" {
		t.Fatalf("got %d %q, Proxy-Authorization %q", resp.StatusCode, body, auth.Load())
	}
}

// The deadline bounds the wait for the answer's headers, not its body.
func TestClientHeaderDeadline(t *testing.T) {
	hang, release := make(chan struct{}), make(chan struct{})
	up, _ := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			<-hang
			return
		}
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		<-release // the body comes after the deadline
		io.WriteString(w, "late body")
	}))
	defer close(hang)
	c := clientFor(t, up, 0)

	req, _ := http.NewRequest("GET", up.URL+"/hang", nil)
	start := time.Now()
	if _, err := c.RoundTripUntil(req, start.Add(100*time.Millisecond)); !errors.Is(err, errHeaderTimeout) {
		t.Fatalf("got %v, want errHeaderTimeout", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the deadline ended the wait after %s", took)
	}

	req, _ = http.NewRequest("GET", up.URL+"/stream", nil)
	deadline := time.Now().Add(200 * time.Millisecond)
	resp, err := c.RoundTripUntil(req, deadline)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitUntil(t, "the deadline to pass", func() bool { return time.Now().After(deadline) })
	close(release)
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "late body" {
		t.Fatalf("body after the deadline: %q, %v", b, err)
	}
}

// A read of a body of known length goes on while more has come, up to
// the buffer's size: the caller's answer then goes out in a few large
// writes, not one per TLS record.
func TestClientFillsReadsOfAKnownLengthBody(t *testing.T) {
	const size = 64 << 10
	sent := make(chan struct{})
	up, _ := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.(http.Flusher).Flush()
		part := []byte(strings.Repeat("x", size/8))
		for range 8 {
			w.Write(part)
			w.(http.Flusher).Flush() // a TLS record or more of its own
		}
		close(sent)
	}))
	c := clientFor(t, up, 0)
	resp := answer(t, c, up.URL+"/")
	<-sent // the whole body is in this side's socket: nothing waits
	buf := make([]byte, 32<<10)
	total := 0
	for i := 0; total < size; i++ {
		n, err := resp.Body.Read(buf)
		total += n
		if n != len(buf) || err != nil && err != io.EOF {
			t.Fatalf("read %d: %d bytes (%v), want %d", i, n, err, len(buf))
		}
	}
}

// The wait for more is bounded per read, not per piece: under a steady
// trickle of small pieces, each sooner than fillWait after the last, a
// read still returns within fillWait (a break-it tester's input: 3 bytes
// every 0.5 ms held the headers for 5 s, until 32 KiB had come).
func TestClientTrickleIsNotHeldUntilTheBufferIsFull(t *testing.T) {
	const size = 1 << 20
	stop := make(chan struct{})
	up, _ := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for range size {
			select {
			case <-stop:
				return
			default:
			}
			w.Write([]byte{'x'})
			w.(http.Flusher).Flush() // a record of its own, microseconds apart
		}
	}))
	c := clientFor(t, up, 0)
	resp := answer(t, c, up.URL+"/")
	defer close(stop)
	buf := make([]byte, 32<<10)
	for i := range 3 {
		// 32 KiB of one-byte records take far longer than fillWait to come.
		if n, err := resp.Body.Read(buf); n == len(buf) || err != nil {
			t.Fatalf("read %d: %d bytes (%v): held until the buffer was full", i, n, err)
		}
	}
}

// An answer reaches the caller as it comes, before the upstream sends the
// rest: a stream, chunked or sent with a length (seen: text/event-stream
// with a Content-Length, each event held until the body's end), or an
// answer that comes slowly.
func TestClientPassesAnAnswerAsItComes(t *testing.T) {
	for _, length := range []string{"", "11"} {
		t.Run("Content-Length="+length, func(t *testing.T) {
			next := make(chan struct{})
			h := http.Header{}
			if length != "" {
				h.Set("Content-Length", length)
			}
			up, _ := tlsUpstream(t, twoPieces(h, "first", "second", next))
			c := clientFor(t, up, 0)
			resp := answer(t, c, up.URL+"/")
			got := make(chan string, 1)
			go func() {
				buf := make([]byte, 32<<10)
				n, _ := resp.Body.Read(buf)
				got <- string(buf[:n])
			}()
			select {
			case s := <-got:
				if s != "first" {
					t.Fatalf("first read: %q, want %q", s, "first")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the first part was held back until the upstream sent more")
			}
			close(next)
			rest, err := io.ReadAll(resp.Body)
			if string(rest) != "second" || err != nil {
				t.Fatalf("rest: %q (%v)", rest, err)
			}
		})
	}
}

// twoPieces answers with h's headers and first, flushed, then with second
// once next is closed (nothing more if the request ends first): an answer
// that comes slowly.
func twoPieces(h http.Header, first, second string, next <-chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		maps.Copy(w.Header(), h)
		io.WriteString(w, first)
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, second)
	}
}

// writeCounter counts the writes to a connection: each is a system call.
type writeCounter struct {
	net.Conn
	writes *atomic.Int64
}

func (w writeCounter) Write(p []byte) (int, error) {
	w.writes.Add(1)
	return w.Conn.Write(p)
}

// A request body goes to the upstream in large TLS records, a write
// each: through a 4 KiB buffer, a 64 KiB body took 17 writes.
func TestClientWritesABodyInFewWrites(t *testing.T) {
	up, _ := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}))
	var writes, dials atomic.Int64
	tr := up.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return writeCounter{c, &writes}, nil
	}
	c := NewClient(tr)
	t.Cleanup(c.CloseIdleConnections)
	post := func(size int) {
		t.Helper()
		req, _ := http.NewRequest("POST", up.URL+"/", strings.NewReader(strings.Repeat("x", size)))
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != fmt.Sprint(size) {
			t.Fatalf("the upstream read %s bytes, want %d", b, size)
		}
	}
	// crypto/tls starts a connection with small records, growing them
	// over its first 128 KiB (dynamic record sizing); pooled connections
	// are past that.
	post(160 << 10)
	before := writes.Load()
	post(64 << 10)
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections, want 1: the first was not reused", n)
	}
	if n := writes.Load() - before; n > 8 {
		t.Errorf("a 64 KiB body took %d writes, want at most 8", n)
	}
}

// After an answer to a request with a body, the connection goes back to
// the pool even when the answer ends before the body's writer has said
// it is done (it usually has one step left): a connection per POST would
// cost a TLS handshake each.
func TestClientReusesAConnectionAfterABody(t *testing.T) {
	up, conns := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}))
	c := clientFor(t, up, 0)
	for i := range 300 {
		req, _ := http.NewRequest("POST", up.URL+"/", strings.NewReader(strings.Repeat("x", 1<<10)))
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "1024" {
			t.Fatalf("request %d: the upstream read %s bytes", i, b)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("300 POSTs one after another used %d connections, want 1", n)
	}
}

// An upstream may answer before it has read the body, and close: the
// body's writer then fails (the connection reset), and the answer that
// came is what the caller gets (a break-it tester's input: 413 to an
// Expect: 100-continue upload of 900 KB became a 502 in 32 of 40 tries).
func TestClientEarlyAnswerSurvivesTheBodysWriteFailing(t *testing.T) {
	up, _ := tlsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	c := clientFor(t, up, 0)
	for i := range 20 {
		req, _ := http.NewRequest("POST", up.URL+"/", strings.NewReader(strings.Repeat("x", 900<<10)))
		req.Header.Set("Expect", "100-continue")
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatalf("try %d: %v, want the upstream's 413", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("try %d: %d, want 413", i, resp.StatusCode)
		}
	}
}
