package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// How an upstream's answer reaches the caller through fasthttp's server,
// which writes the answer once the handler has returned:
//
//   - the status and the headers are copied to ctx.Response, the Trailer
//     field announcing the upstream's trailer fields, the X-Request-Id the
//     request's own;
//   - a body of known length that is whole in its first read (every small
//     answer) becomes ctx's body: status, headers and body go out in one
//     write; that read is made only when some of the body has come with
//     the headers (bodyBuffered), so that a late body never holds them;
//   - a longer or slower one is written by answerBody straight to the
//     caller's connection after fasthttp has flushed the headers
//     (ImmediateHeaderFlush), each piece as it comes: fasthttp's own
//     writer would hold a slow answer's pieces until 32 KiB had come;
//   - a body of unknown length streams through fasthttp's chunked writer,
//     which flushes every chunk, the upstream's trailer fields after it;
//   - a HEAD answer keeps the upstream's Content-Length and sends no body;
//     a 204 or 304 sends none either (RFC 9110 §15.3.5, §15.4.5).
//
// The caller's Date is the server's own (fasthttp sets it, as net/http
// set it when the upstream sent none); every other field is copied.
//
// net/http's data plane (httputil.ReverseProxy with a 1 ms flush interval)
// did the same in other ways: no answer waits for more of its body before
// what came is passed on.

// answer copies resp to the caller and reports whether its body streams
// after Serve returns (answerBody then ends the exchange).
func (x *exchange) answer(resp *http.Response) (later bool) {
	rh := &x.ctx.Response.Header
	rh.SetStatusCode(resp.StatusCode)
	copyHeader(rh, resp.Header)
	unframed := resp.ContentLength < 0 && !x.in.ProtoAtLeast(1, 1)
	if len(resp.Trailer) > 0 && !unframed {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			if x.answerTrailer(k) {
				keys = append(keys, k)
			}
		}
		rh.SetTrailer(strings.Join(keys, ", "))
	}
	rh.Set(requestIDHeader, x.id)
	x.status = resp.StatusCode
	if x.in.Method == http.MethodHead || !bodyAllowed(resp.StatusCode) {
		x.ctx.Response.SkipBody = true
		if resp.ContentLength >= 0 && x.in.Method == http.MethodHead {
			rh.SetContentLength(int(resp.ContentLength))
		}
		drain(resp.Body) // read to its (empty) end, the connection is reused
		return false
	}
	b := &answerBody{x: x, rc: resp.Body, trailer: resp.Trailer, buf: buffers.Get().(*[]byte)}
	if unframed {
		// No length and no chunks: the connection's close ends the body.
		rh.SetContentLength(-2)
		x.unframed = b
		return true
	}
	// The status and headers wait for the body's first bytes only when
	// those have already come (bodyBuffered): an answer whose body is
	// late gets them at once, as from net/http's data plane.
	now := !bodyBuffered(resp.Body)
	if resp.ContentLength < 0 {
		x.ctx.Response.ImmediateHeaderFlush = now
		x.ctx.Response.SetBodyStream(b, -1)
		return true
	}
	if !now {
		p := (*b.buf)[:min(int64(len(*b.buf)), max(resp.ContentLength, 1))]
		n, err := resp.Body.Read(p)
		switch {
		case err == io.EOF && int64(n) == resp.ContentLength:
			x.bytes += int64(n)
			x.ctx.Response.SetBody(p[:n])
			buffers.Put(b.buf)
			return false
		case err != nil:
			// Cut short: the caller must not take what came for the
			// answer.
			buffers.Put(b.buf)
			resp.Body.Close()
			if x.watch.left.Load() {
				x.status = 0 // nothing went out: logged 499
			}
			abort(x.ctx)
			return false
		}
		b.first = n
	}
	b.direct = true
	x.ctx.Response.ImmediateHeaderFlush = true
	x.ctx.Response.SetBodyStream(b, int(resp.ContentLength))
	return true
}

// bodyAllowed reports whether an answer with this status may have a body
// (RFC 9110 §15.2, §15.3.5, §15.4.5).
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// copyHeader adds h's fields to rh, but Content-Length: the body's framing
// is fasthttp's to write, from the length answer gives it.
func copyHeader(rh *fasthttp.ResponseHeader, h http.Header) {
	for k, vs := range h {
		if k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			rh.Add(k, v)
		}
	}
}

// answerBody is an upstream's answer body on its way to the caller,
// through fasthttp's writer of the body (WriteTo, fasthttp.BodyWriterTo):
// of unknown length, as chunks, each flushed, the upstream's trailer
// fields set at the end for fasthttp to write after the last chunk; of
// known length (direct), straight to the caller's connection, the first
// piece (read before the headers went) first. Pieces are read into buf,
// 32 KiB: fasthttp's own copy reads 4 KiB at a time, and wrote a 64 KiB
// answer as 16 chunks. Close, which fasthttp calls when the answer is
// written or has failed, ends the exchange.
type answerBody struct {
	x       *exchange
	rc      io.ReadCloser
	trailer http.Header
	buf     *[]byte // from buffers; holds the first piece, first bytes
	first   int
	direct  bool
}

// Read is there for io.Reader's sake: fasthttp calls WriteTo.
func (b *answerBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.x.bytes += int64(n)
	if err == io.EOF {
		b.setTrailer()
	}
	return n, err
}

// setTrailer sets the upstream's trailer fields, for fasthttp to write
// after the last chunk: those announced in the header, and those that came
// unannounced (announced now, too late for the header: as
// httputil.ReverseProxy passed them), but the ones answerTrailer keeps out.
func (b *answerBody) setTrailer() {
	rh := &b.x.ctx.Response.Header
	for k, vs := range b.trailer {
		if !b.x.answerTrailer(k) || rh.AddTrailer(k) != nil { // a name fasthttp refuses in a trailer
			continue
		}
		for _, v := range vs {
			rh.Add(k, v)
		}
	}
}

// answerTrailer reports whether an upstream's trailer field named k goes
// on to the caller: not X-Request-Id or Tokenproxy-Error (only tokenproxy
// sets those), nor a field about the connection or the framing (RFC 9110
// §6.5.1), nor one the upstream's Connection listed (§7.6.1).
func (x *exchange) answerTrailer(k string) bool {
	return !sameName(k, requestIDHeader) && !sameName(k, "Tokenproxy-Error") && !hopByHop(k) &&
		!connectionLists(x.answerConn, k)
}

func (b *answerBody) SupportsBodyWriteTo() bool { return true }

// WriteTo writes the body to w, fasthttp's chunk writer, or for a body of
// known length to the caller's connection (w, fasthttp's buffered writer,
// has been flushed: ImmediateHeaderFlush), and returns the bytes written.
func (b *answerBody) WriteTo(w io.Writer) (int64, error) {
	if b.direct {
		w = b.x.ctx.Conn()
	}
	// response_bytes counts what was written, not what was read: an answer
	// cut off (a caller gone, shutdown_timeout) logs what went out.
	var total int64
	if b.first > 0 {
		n, err := w.Write((*b.buf)[:b.first])
		total += int64(n)
		b.x.bytes += int64(n)
		if err != nil {
			return total, err
		}
	}
	for {
		n, rerr := b.rc.Read(*b.buf)
		if n > 0 {
			m, err := w.Write((*b.buf)[:n])
			total += int64(m)
			b.x.bytes += int64(m)
			if err != nil {
				return total, err
			}
		}
		if rerr == io.EOF {
			b.setTrailer()
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

func (b *answerBody) Close() error {
	// The caller's body stops first: an upstream that answered before it
	// read the body leaves the Client's writer waiting on the caller.
	if b.x.body.stream != nil {
		b.x.body.stop()
	}
	b.rc.Close()
	if b.buf != nil {
		buffers.Put(b.buf)
		b.buf = nil
	}
	b.x.done()
	return nil
}

// interim passes an upstream's 1xx answer to the caller, as
// httputil.ReverseProxy does but without its hop-by-hop fields, written
// straight to the connection (fasthttp writes only final answers): not to
// an HTTP/1.0 caller (RFC 9110 §15.2), and not a 100 Continue that
// fasthttp's server has already sent for an Expect: 100-continue. A write
// that fails is left for the final answer to find.
func (x *exchange) interim(code int, h textproto.MIMEHeader) error {
	if !x.in.ProtoAtLeast(1, 1) || code == http.StatusContinue && x.ctx.Request.MayContinue() {
		return nil
	}
	b := make([]byte, 0, 256)
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\n"...)
	// Hop-by-hop fields stay on the upstream's hop (RFC 9110 §7.6.1).
	hh := http.Header(h).Clone()
	removeHopByHop(hh)
	for k, vs := range hh {
		if k == requestIDHeader {
			continue
		}
		for _, v := range vs {
			b = append(append(append(append(b, k...), ": "...), v...), "\r\n"...)
		}
	}
	b = append(append(append(b, requestIDHeader+": "...), x.id...), "\r\n\r\n"...)
	x.ctx.Conn().Write(b)
	return nil
}

// switchProtocols answers the caller with the upstream's 101, written
// once fasthttp has handed the connection over, and carries bytes both
// ways between the two connections until either ends
// (httputil.ReverseProxy's handleUpgradeResponse); the exchange ends then.
func (x *exchange) switchProtocols(resp *http.Response) (later bool) {
	backend, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		x.fail(http.StatusBadGateway, CodeUnreachable, x.route.Name+": the upstream's protocol switch failed", x.route.Name)
		return false
	}
	// From here on the copies carry the caller's end of stream to the
	// upstream: the watch would take a half-close for the caller gone,
	// and cut the upstream's reply to it.
	if x.watch.stop() {
		backend.Close()
		abort(x.ctx)
		return false
	}
	// The upstream's Connection is about its own connection: the caller's
	// says Upgrade and names nothing else (RFC 9110 §7.6.1, §7.8).
	upType := resp.Header.Get("Upgrade")
	removeHopByHop(resp.Header)
	rh := &x.ctx.Response.Header
	rh.SetStatusCode(http.StatusSwitchingProtocols)
	copyHeader(rh, resp.Header)
	rh.Set(requestIDHeader, x.id)
	x.status = http.StatusSwitchingProtocols
	raw := x.ctx.Conn()
	// The 101 is written by the hijack handler, not by fasthttp's server,
	// which would close a connection it has marked to close (the caller's
	// Connection: close, a Transfer-Encoding, a shutdown begun) after the
	// answer without ever handing it over: the switch would never end.
	hijack(x.ctx, func(c net.Conn) {
		defer x.done()
		defer backend.Close()
		x.upgrade.hijacked(raw)
		rh.ResetConnectionClose()
		rh.Set("Connection", "Upgrade")
		rh.Set("Upgrade", upType)
		if _, err := c.Write(rh.Header()); err != nil {
			return
		}
		errc := make(chan error, 2)
		go copyThenCloseWrite(backend, c, backend, errc)
		go copyThenCloseWrite(c, backend, raw, errc)
		if err := <-errc; err != nil {
			raw.Close()
			backend.Close()
		}
		// Both copies have ended before the handler returns: fasthttp
		// reuses what c reads through once it has.
		<-errc
		raw.Close()
	}, func() {
		x.status = 0 // the 101 never went out: logged 499
		backend.Close()
		x.done()
	})
	return true
}

var errCopyDone = errors.New("switched connection copy complete")

// copyThenCloseWrite copies src to dst until src ends, then passes the end
// on by half-closing w (dst's connection), and sends its error to errc:
// errCopyDone when w cannot half-close, which ends both copies.
func copyThenCloseWrite(dst io.Writer, src io.Reader, w any, errc chan<- error) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := w.(interface{ CloseWrite() error }); ok {
			err = cw.CloseWrite()
		} else {
			err = errCopyDone
		}
	}
	errc <- err
}

// fail answers with the contract's error shape.
func (x *exchange) fail(status int, code, msg, upstream string) {
	(&Error{Status: status, Code: code, Msg: msg, Upstream: upstream}).write(x)
}

// answerTarget answers a request whose target fasthttp's parser refused
// and net/http hands to its handler (asterisk-form with a method other
// than OPTIONS, "PRI * HTTP/2.0", an absolute URI without "//") as the
// handler answers it, in the contract's shape, logged and counted, and
// reports whether err was such a refusal. None of those targets names an
// upstream's host, so none is forwarded: the request's header lines were
// never read.
func (h *Handler) answerTarget(ctx *fasthttp.RequestCtx, err error) bool {
	method := string(ctx.Request.Header.Method())
	target, ok := refusedTarget(err)
	if !ok || !token([]byte(method)) {
		return false
	}
	u, perr := parseTarget(method, target)
	if perr != nil {
		return false
	}
	h.serveTarget(ctx, method, target, u)
	return true
}

// refusedTarget is the request-target fasthttp's parser quoted in err when
// the target was what it refused (with SecureErrorLogMessage, the error
// holds the target alone).
func refusedTarget(err error) (string, bool) {
	// "error when reading request headers: invalid request uri "*": buffer size=27"
	_, q, ok := strings.Cut(err.Error(), "invalid request uri ")
	if !ok {
		return "", false
	}
	if q, err = strconv.QuotedPrefix(q); err != nil {
		return "", false
	}
	target, uerr := strconv.Unquote(q)
	return target, uerr == nil
}

// serveTarget answers a request of which only the method and target are
// known, as Serve would: routing refuses every such target.
func (h *Handler) serveTarget(ctx *fasthttp.RequestCtx, method, target string, u *url.URL) {
	ctx.Response.Reset()
	x := &exchange{h: h, ctx: ctx, start: time.Now(), cancel: func() {}}
	x.id = newRequestID()
	x.in = &http.Request{Method: method, RequestURI: target, URL: u, Header: http.Header{},
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Body: http.NoBody}
	if h.route(x, x.in) {
		x.fail(http.StatusBadRequest, CodeBadRequest, "the request target cannot be forwarded", x.route.Name)
	}
	ctx.SetConnectionClose()
	x.done()
}
