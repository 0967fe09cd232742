package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Client is the data plane's transport to an upstream's API host: HTTP/1.1
// (over TLS for https), one request at a time per connection, the request
// written and the response read by the goroutine serving the caller (a
// second one writes a request body, so that an upstream may answer before
// it has read it all). Framing is net/http's own: Request.Write and
// ReadResponse.
//
// Why not http.Transport: under load a profile of the data plane showed
// most of its time in the transport's HTTP/2 stream handling (one shared
// connection, a write per HEADERS frame, HPACK's table churning on every
// X-Request-Id) and, over HTTP/1.1, in handing each request between the
// caller's goroutine and the connection's read and write loops. With this
// client (and the request log batched), a proxied 1 KiB request under wrk
// -c64 cost 47-49 µs of the process's CPU (user and system) instead of
// 64-68 µs, and the upstream's own CPU per request fell by a third (HTTP/2
// cost it more).
//
// Connections are pooled per host, at most MaxConnsPerHost of them open at
// once (more requests queue, README: max_connections); a request that asks
// to switch protocols (Upgrade) gets a connection of its own outside that
// bound, which it keeps. An idempotent request that fails on a reused
// connection before any answer came (the upstream closed it while idle) is
// sent again on another, as http.Transport does.
type Client struct {
	tlsConfig   *tls.Config
	proxy       func(*http.Request) (*url.URL, error)
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	handshake   time.Duration
	idleTimeout time.Duration
	maxConns    int
	maxIdle     int

	mu    sync.Mutex
	hosts map[string]*hostConns
	last  atomic.Pointer[lastHost]
}

// NewClient returns a Client with t's TLS settings (roots, minimum
// version), proxy, dialer, handshake and idle timeouts and per-host
// connection bounds; t itself is not used. The TLS config offers only
// http/1.1 in ALPN.
func NewClient(t *http.Transport) *Client {
	cfg := &tls.Config{}
	if t.TLSClientConfig != nil {
		cfg = t.TLSClientConfig.Clone()
	}
	cfg.NextProtos = []string{"http/1.1"}
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	maxIdle := t.MaxIdleConnsPerHost
	if maxIdle <= 0 {
		maxIdle = http.DefaultMaxIdleConnsPerHost
	}
	if t.MaxConnsPerHost > 0 {
		maxIdle = t.MaxConnsPerHost
	}
	return &Client{tlsConfig: cfg, proxy: t.Proxy, dial: dial, handshake: t.TLSHandshakeTimeout,
		idleTimeout: t.IdleConnTimeout, maxConns: t.MaxConnsPerHost, maxIdle: maxIdle, hosts: map[string]*hostConns{}}
}

// hostConns are the connections to one host:port.
type hostConns struct {
	addr  string
	tls   *tls.Config   // nil for plain http
	idle  chan *conn    // ready for a request; oldest first
	slots chan struct{} // one per open connection; nil when unbounded
}

// conn is one connection to an upstream. Only one request uses it at a time.
type conn struct {
	net.Conn
	h       *hostConns
	br      *bufio.Reader
	bw      *bufio.Writer
	lim     *limitReader
	counted bool // holds one of h.slots
	reused  bool
	idleAt  time.Time
	once    sync.Once

	nothingRead bool // the last answer failed before its first byte

	aborted atomic.Bool // see abort
}

// abort makes every read and write on c fail from now on: its request was
// cancelled, or the request body was not sent whole for a reason other
// than the upstream's (the answer can no longer be trusted). Deadlines are
// cleared through clear, which keeps an abort in force.
func (c *conn) abort() {
	c.aborted.Store(true)
	c.SetDeadline(aLongTimeAgo)
}

// clear removes a deadline with set (c.SetDeadline or c.SetReadDeadline)
// and reports whether c was aborted, in which case the abort's deadline,
// which clearing may have just undone, is put back.
func (c *conn) clear(set func(time.Time) error) (aborted bool) {
	set(time.Time{})
	if c.aborted.Load() {
		c.SetDeadline(aLongTimeAgo)
		return true
	}
	return false
}

// close closes the connection under TLS without a close_notify: sending
// one may block for seconds on an upstream that stopped reading, and this
// runs on the caller's goroutine (http.Transport closes from its own).
func (c *conn) close() {
	c.once.Do(func() {
		if tc, ok := c.Conn.(*tls.Conn); ok {
			tc.NetConn().Close()
		} else {
			c.Conn.Close()
		}
		if c.counted {
			<-c.h.slots
		}
	})
}

// maxResponseHeader bounds an answer's status line and headers, as
// http.Transport's MaxResponseHeaderBytes does (its default is 10 MiB; an
// API's headers are a few KiB).
const maxResponseHeader = 1 << 20

// limitReader bounds what the response header reads may consume, and
// keeps a copy of those reads when rec is set (see connectionField).
type limitReader struct {
	r   io.Reader
	n   int64 // < 0: no limit
	rec *[]byte
}

var errHeaderTooLarge = errors.New("the upstream's response headers exceed 1 MiB")

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.rec != nil {
		*l.rec = append(*l.rec, p[:n]...)
	}
	return n, err
}

// lastHost is the host a Client served last, under the scheme and host its
// request URL spelled: every request of a route goes to the one host of its
// base_url, so looking it up again costs no lock and no allocation.
type lastHost struct {
	scheme, host string
	h            *hostConns
}

// host is the pool of u's host, by scheme and host:port (the scheme's
// default port when u names none).
func (cl *Client) host(u *url.URL) *hostConns {
	if l := cl.last.Load(); l != nil && l.scheme == u.Scheme && l.host == u.Host {
		return l.h
	}
	addr := net.JoinHostPort(u.Hostname(), port(u))
	key := u.Scheme + "://" + addr
	cl.mu.Lock()
	defer cl.mu.Unlock()
	h := cl.hosts[key]
	if h == nil {
		h = &hostConns{addr: addr, idle: make(chan *conn, cl.maxIdle)}
		if u.Scheme != "http" {
			h.tls = cl.tlsConfig.Clone()
			if h.tls.ServerName == "" {
				h.tls.ServerName = u.Hostname()
			}
		}
		if cl.maxConns > 0 {
			h.slots = make(chan struct{}, cl.maxConns)
		}
		cl.hosts[key] = h
	}
	cl.last.Store(&lastHost{scheme: u.Scheme, host: u.Host, h: h})
	return h
}

// CloseIdleConnections closes every pooled connection; those in use are
// closed when their request ends.
func (cl *Client) CloseIdleConnections() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, h := range cl.hosts {
		for {
			select {
			case c := <-h.idle:
				c.close()
				continue
			default:
			}
			break
		}
	}
}

// RoundTrip sends req and returns the upstream's answer (http.RoundTripper).
// 1xx answers other than 101 go to the request's httptrace Got1xxResponse,
// as http.Transport does; a 101's Body is the connection itself, an
// io.ReadWriteCloser. Cancelling req's context ends the exchange, the
// body's reading included.
func (cl *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	return cl.RoundTripUntil(req, time.Time{})
}

// RoundTripUntil is RoundTrip with a deadline (none when zero) for
// everything until the answer's headers are in: waiting for a connection,
// dialing, writing the request, reading the headers; the body may stream
// for longer. Past it, the error is errHeaderTimeout. (A deadline on the
// connection, rather than a context with a timer, spares every request a
// timer and two contexts.)
func (cl *Client) RoundTripUntil(req *http.Request, deadline time.Time) (*http.Response, error) {
	if req.URL.Scheme != "https" && req.URL.Scheme != "http" {
		return nil, fmt.Errorf("unsupported scheme %q", req.URL.Scheme)
	}
	h := cl.host(req.URL)
	ctx := req.Context()
	upgrade := req.Header.Get("Upgrade") != ""
	for {
		c, err := cl.get(ctx, h, upgrade, deadline)
		if err != nil {
			return nil, timeoutOr(err, ctx, deadline)
		}
		resp, err := c.roundTrip(req, deadline)
		if err == nil {
			return resp, nil
		}
		var stale *staleError
		if !errors.As(err, &stale) || ctx.Err() != nil || passed(deadline) {
			return nil, timeoutOr(err, ctx, deadline)
		}
		if !stale.unsent && !idempotent(req) {
			return nil, stale.err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, stale.err
			}
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
	}
}

func passed(deadline time.Time) bool { return !deadline.IsZero() && !time.Now().Before(deadline) }

// timeoutOr is err as the caller should see it: the context's error when
// it is done, errHeaderTimeout once the deadline has passed.
func timeoutOr(err error, ctx context.Context, deadline time.Time) error {
	var stale *staleError
	if errors.As(err, &stale) {
		err = stale.err
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case passed(deadline):
		return errHeaderTimeout
	}
	return err
}

// idempotent is http.Transport's test for sending a request again after
// its connection failed: RFC 9110 §9.2.2, or an Idempotency-Key.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// staleError is a reused connection failing before any answer came:
// the upstream most likely closed it while it was idle.
type staleError struct {
	err    error
	unsent bool // not even the request got out
}

func (e *staleError) Error() string { return e.err.Error() }
func (e *staleError) Unwrap() error { return e.err }

// get takes an idle connection, or dials one when the host's bound allows,
// or waits for either.
func (cl *Client) get(ctx context.Context, h *hostConns, upgrade bool, deadline time.Time) (*conn, error) {
	if upgrade {
		return cl.dialConn(ctx, h, false, deadline)
	}
	for {
		select {
		case c := <-h.idle:
			if c = cl.fresh(c); c != nil {
				return c, nil
			}
			continue
		default:
		}
		if h.slots == nil {
			return cl.dialConn(ctx, h, false, deadline)
		}
		select {
		case h.slots <- struct{}{}:
			return cl.dialConn(ctx, h, true, deadline)
		default:
		}
		// At the bound: wait for a connection to come back or to close.
		var expired <-chan time.Time
		if !deadline.IsZero() {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			expired = t.C
		}
		select {
		case c := <-h.idle:
			if c = cl.fresh(c); c != nil {
				return c, nil
			}
		case h.slots <- struct{}{}:
			return cl.dialConn(ctx, h, true, deadline)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-expired:
			return nil, errHeaderTimeout
		}
	}
}

// fresh returns c marked reused, or nil (closing it) when it has been idle
// too long, or, idle for a second or more, the upstream has closed it
// meanwhile (many servers close idle connections after a few seconds;
// a request sent on one would fail, and only an idempotent one may be sent
// again).
func (cl *Client) fresh(c *conn) *conn {
	idle := time.Since(c.idleAt)
	if cl.idleTimeout > 0 && idle > cl.idleTimeout || idle >= time.Second && !alive(c.Conn) {
		c.close()
		return nil
	}
	c.reused = true
	return c
}

// release returns c to its host's pool, or closes it when the pool is full.
func (c *conn) release() {
	c.idleAt = time.Now()
	select {
	case c.h.idle <- c:
	default:
		c.close()
	}
}

func (cl *Client) dialConn(ctx context.Context, h *hostConns, counted bool, deadline time.Time) (*conn, error) {
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	nc, err := cl.dialHost(ctx, h)
	if err != nil {
		if counted {
			<-h.slots
		}
		return nil, err
	}
	lim := &limitReader{r: nc, n: -1}
	return &conn{Conn: nc, h: h, lim: lim, br: bufio.NewReaderSize(lim, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10), counted: counted}, nil
}

func (cl *Client) dialHost(ctx context.Context, h *hostConns) (net.Conn, error) {
	var proxy *url.URL
	if cl.proxy != nil && h.tls != nil {
		var err error
		if proxy, err = cl.proxy(&http.Request{URL: &url.URL{Scheme: "https", Host: h.addr}}); err != nil {
			return nil, err
		}
	}
	var nc net.Conn
	var err error
	if proxy != nil {
		nc, err = cl.dialProxy(ctx, proxy, h.addr)
	} else {
		nc, err = cl.dial(ctx, "tcp", h.addr)
	}
	if err != nil || h.tls == nil {
		return nc, err
	}
	return cl.handshakeTLS(ctx, nc, h.tls)
}

func (cl *Client) handshakeTLS(ctx context.Context, nc net.Conn, cfg *tls.Config) (net.Conn, error) {
	tc := tls.Client(nc, cfg)
	if cl.handshake > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cl.handshake)
		defer cancel()
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return tc, nil
}

// dialProxy opens a tunnel to addr through an HTTP(S) proxy named by the
// environment (HTTPS_PROXY), as http.Transport does: CONNECT, with Basic
// credentials when the proxy URL carries them.
func (cl *Client) dialProxy(ctx context.Context, proxy *url.URL, addr string) (net.Conn, error) {
	nc, err := cl.dial(ctx, "tcp", net.JoinHostPort(proxy.Hostname(), port(proxy)))
	if err != nil {
		return nil, err
	}
	if proxy.Scheme == "https" {
		cfg := cl.tlsConfig.Clone()
		cfg.ServerName = proxy.Hostname()
		if nc, err = cl.handshakeTLS(ctx, nc, cfg); err != nil {
			return nil, err
		}
	}
	connect := &http.Request{Method: "CONNECT", URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if u := proxy.User; u != nil {
		pw, _ := u.Password()
		connect.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	defer stop()
	br := bufio.NewReader(nc)
	err = connect.Write(nc)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(br, connect)
	}
	switch {
	case err != nil:
	case resp.StatusCode != http.StatusOK:
		err = fmt.Errorf("proxy %s refused the tunnel: %s", proxy.Host, resp.Status)
	case br.Buffered() > 0:
		err = fmt.Errorf("proxy %s sent data before the tunnel was up", proxy.Host)
	}
	if err != nil || !stop() {
		nc.Close()
		return nil, cmpErr(err, ctx.Err())
	}
	return nc, nil
}

func cmpErr(err, other error) error {
	if err != nil {
		return err
	}
	return other
}

var aLongTimeAgo = time.Unix(1, 0)

// bodyWriters buffer a request that has a body. Through the connection's
// own 4 KiB writer each 4 KiB of the body became a TLS record and a write
// system call of its own; 32 KiB make two records per write. Pooled, not
// per connection: most requests have no body.
var bodyWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// roundTrip makes one exchange on c, the headers by deadline (none when
// zero). On an error c is closed.
func (c *conn) roundTrip(req *http.Request, deadline time.Time) (*http.Response, error) {
	ctx := req.Context()
	if !deadline.IsZero() {
		c.SetDeadline(deadline)
	}
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, c.abort)
	}
	fail := func(err error) (*http.Response, error) {
		stop()
		c.close()
		return nil, err
	}
	var wrote chan error
	if req.Body == nil || req.Body == http.NoBody {
		err := req.Write(c.bw)
		if err == nil {
			err = c.bw.Flush()
		}
		if err != nil {
			if c.reused {
				err = &staleError{err: err, unsent: true}
			}
			return fail(err)
		}
	} else {
		// Written beside the reading of the answer: an upstream may answer
		// (a 401, a 413) before it reads the body, or never read it.
		wrote = make(chan error, 1)
		go func() {
			bw := bodyWriters.Get().(*bufio.Writer)
			bw.Reset(c.Conn)
			defer func() { bw.Reset(nil); bodyWriters.Put(bw) }()
			body := &readFailure{ReadCloser: req.Body}
			out := *req
			out.Body = body
			err := out.Write(bw)
			if err == nil {
				err = bw.Flush()
			}
			if body.err != nil {
				// The upstream got part of the body: its answer cannot be
				// trusted. A failed write to the upstream alone aborts
				// nothing: the upstream answered early and closed, or the
				// connection is broken and the read ends by itself. (err
				// cannot tell the two apart: net/http reports a failed
				// write while copying the body as a body read error.)
				c.abort()
			}
			wrote <- err
		}()
	}
	resp, err := c.readResponse(req)
	if err == nil && !deadline.IsZero() {
		c.clear(c.SetDeadline)
	}
	if err != nil {
		if wrote != nil {
			// Waited for only when its failure is what ended the read (it
			// sets the deadline that did): otherwise it may be blocked on
			// the caller.
			var werr error
			if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil && !passed(deadline) {
				werr = <-wrote
			} else {
				select {
				case werr = <-wrote:
				default:
				}
			}
			if werr != nil && !errors.Is(werr, os.ErrDeadlineExceeded) {
				err = werr
			}
		}
		if c.reused && c.nothingRead {
			err = &staleError{err: err}
		}
		return fail(err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The connection now carries another protocol, for as long as the
		// two sides keep it; it never returns to the pool.
		resp.Body = &switchedConn{c: c, stop: stop}
		return resp, nil
	}
	resp.Body = &body{rc: resp.Body, c: c, stop: stop, wrote: wrote, keep: !resp.Close && !req.Close, fill: resp.ContentLength > 0}
	return resp, nil
}

// maxInformational bounds the 1xx answers before the final one, as
// http.Transport does.
const maxInformational = 5

// readResponse reads the final answer, passing 1xx answers other than 101
// to the request's trace as http.Transport does (ReverseProxy forwards
// them to the caller).
func (c *conn) readResponse(req *http.Request) (*http.Response, error) {
	c.nothingRead = false
	if _, err := c.br.Peek(1); err != nil {
		c.nothingRead = true
		return nil, err
	}
	var trace *httptrace.ClientTrace
	for n := 0; ; n++ {
		// The answer's header as sent: what is buffered, when its end is
		// there (ReadResponse then reads nothing more), else that and
		// every read that ReadResponse makes.
		raw, _ := c.br.Peek(c.br.Buffered())
		if !headerInside(raw) {
			rec := append([]byte(nil), raw...) // on the heap only here
			c.lim.rec = &rec
		}
		c.lim.n = maxResponseHeader
		resp, err := http.ReadResponse(c.br, req)
		if c.lim.rec != nil {
			raw = *c.lim.rec
		}
		c.lim.n, c.lim.rec = -1, nil
		if err != nil {
			return nil, err
		}
		if resp.Close && resp.ProtoAtLeast(1, 1) && resp.Header["Connection"] == nil {
			connectionField(resp.Header, raw)
		}
		code := resp.StatusCode
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			return resp, nil
		}
		if n == maxInformational {
			return nil, errors.New("too many 1xx informational responses")
		}
		if trace == nil {
			trace = httptrace.ContextClientTrace(req.Context())
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
		}
	}
}

// headerInside reports whether b holds a whole header block: the empty
// line that ends it (RFC 9112 §2.1; a bare LF ends a line, as net/http
// reads one).
func headerInside(b []byte) bool {
	return bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

// connectionField puts back into h the Connection field that raw, the
// answer's header block as sent, holds. ReadResponse deletes a Connection
// field that lists "close" (net/http transfer.go shouldClose), and with it
// the other fields it names, which are hop-by-hop and must not reach the
// caller (RFC 9110 §7.6.1); removeHopByHop needs the list. Only an answer
// that closes its connection pays for this second reading.
func connectionField(h http.Header, raw []byte) {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	if _, err := tp.ReadLine(); err != nil {
		return
	}
	m, _ := tp.ReadMIMEHeader()
	if v := m["Connection"]; v != nil {
		h["Connection"] = v
	}
}

// body is an answer's body. Read to its end, with the request written in
// full and neither side asking to close, its connection goes back to the
// pool; otherwise the connection is closed.
//
// A read of a body of known length (Content-Length) goes on reading, up to
// p's size, for at most fillWait after its first bytes: a read from a TLS
// connection returns one record (at most 16 KiB, RFC 8446 §5.1), and each
// would otherwise be written to the caller by a write system call of its
// own, 7 for a 64 KiB answer. A slow answer, or a stream sent with a
// length, reaches the caller at most fillWait later than it came. Not for
// a chunked body: net/http's chunked reader keeps the first error it
// sees, and the bounded wait (see fillUntil) ends in a timeout error.
type body struct {
	rc    io.ReadCloser
	c     *conn
	stop  func() bool // stops the context's watch on c
	wrote chan error  // the request body's writer, when there was one
	keep  bool
	fill  bool // a body of known length: a read goes on for fillWait
	done  bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if b.fill && err == nil && n > 0 && n < len(p) {
		n, err = b.fillUntil(p, n, time.Now().Add(fillWait))
	}
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

// fillUntil reads on into p[n:] what arrives before until, and returns
// the bytes in p: n and what came. The read deadline is until meanwhile;
// a timeout is not fatal to a tls.Conn (it keeps a partial record) or to
// net/http's reader of a body of known length, and ends the fill without
// an error. A conn aborted meanwhile keeps failing.
func (b *body) fillUntil(p []byte, n int, until time.Time) (int, error) {
	c := b.c
	c.SetReadDeadline(until)
	var err error
	for err == nil && n < len(p) {
		var more int
		more, err = b.rc.Read(p[n:])
		if more == 0 && err == nil {
			break
		}
		n += more
	}
	if c.clear(c.SetReadDeadline) {
		return n, err
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil
	}
	return n, err
}

func (b *body) Close() error {
	b.finish(false)
	return nil
}

func (b *body) finish(complete bool) {
	if b.done {
		return
	}
	b.done = true
	reuse := complete && b.keep && b.stop()
	if !complete {
		b.stop()
	}
	if reuse && b.wrote != nil {
		select {
		case err := <-b.wrote:
			reuse = err == nil
		default:
			// The answer ended before the body's writer said it was done.
			// Usually it is about to: it reports right after its last
			// write, which the upstream had read before it answered (a
			// POST's connection was reused only when the writer won that
			// race). But an upstream that answered without reading the
			// body may never let it finish: the wait is bounded, and the
			// connection then closed, which ends the writer.
			t := time.NewTimer(writerGrace)
			select {
			case err := <-b.wrote:
				reuse = err == nil
			case <-t.C:
				reuse = false
			}
			t.Stop()
		}
	}
	if reuse {
		b.c.release()
		return
	}
	b.c.close()
}

// bodyBuffered reports whether some of rc, an answer's body from a
// Client, has already been read from its connection, so that a first read
// of it returns without waiting for the upstream. False for any other
// body, and when the bytes wait in the TLS layer instead.
func bodyBuffered(rc io.ReadCloser) bool {
	b, ok := rc.(*body)
	return ok && b.c.br.Buffered() > 0
}

// fillWait bounds how long a read of an answer goes on after its first
// bytes, gathering more to pass on in one write. The records of one burst
// arrive microseconds apart.
const fillWait = time.Millisecond

// writerGrace bounds how long the end of an answer waits for its request
// body's writer to report, before the connection is closed instead of
// reused.
const writerGrace = 10 * time.Millisecond

// readFailure is a request body that remembers the error reading it
// failed with (io.EOF is not a failure).
type readFailure struct {
	io.ReadCloser
	err error
}

func (r *readFailure) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// switchedConn is a 101 answer's body: the connection itself, which
// ReverseProxy reads and writes until either side closes.
type switchedConn struct {
	c    *conn
	stop func() bool
}

func (s *switchedConn) Read(p []byte) (int, error)  { return s.c.br.Read(p) }
func (s *switchedConn) Write(p []byte) (int, error) { return s.c.Conn.Write(p) }

func (s *switchedConn) Close() error {
	s.stop()
	s.c.close()
	return nil
}

// CloseWrite passes a caller's half-close on to the upstream.
func (s *switchedConn) CloseWrite() error {
	if cw, ok := s.c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return http.ErrNotSupported
}
