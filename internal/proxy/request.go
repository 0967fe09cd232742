package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// The data plane is served by fasthttp's server (BENCHMARKS.md: a quarter
// more 1 KiB requests under load and 13-18% less CPU at 1,000 req/s than
// net/http's), and proxies through its own Client, which speaks net/http's
// types. callerRequest is the seam: the caller's request, checked by
// checkRequest, read into the *http.Request net/http's server would have
// handed a handler, so that routing, stripping, injection and replay are
// the code net/http's data plane ran.

// callerRequest is ctx's request as net/http's server reads it (Go 1.26
// net/http request.go readRequest, transfer.go readTransfer): the header
// lines as sent, names canonical (textproto.CanonicalMIMEHeaderKey), Host
// moved to r.Host (the absolute-form URI's host first); a chunked body with
// TransferEncoding ["chunked"], ContentLength -1, and the fields its
// Trailer announces in r.Trailer, their values set when the body ends; a
// body of known length with its Content-Length; none (http.NoBody) else.
// The body reads ctx's request stream through b; r's context is ctx2.
// RemoteAddr is left empty: nothing reads it, and building it took two
// allocations a request.
// ctx's header must have passed checkRequest, which refuses what net/http
// would, so no error is left to report but the URI's, which cannot fail
// after it.
func callerRequest(ctx *fasthttp.RequestCtx, ctx2 context.Context, b *callerStream) (*http.Request, error) {
	fh := &ctx.Request.Header
	r := &http.Request{
		Method:     known(fh.Method()),
		RequestURI: string(fh.RequestURI()),
		Header:     make(http.Header, 8),
		Body:       http.NoBody,
	}
	proto := fh.Protocol()
	r.Proto, r.ProtoMajor, r.ProtoMinor = known(proto), int(proto[5]-'0'), int(proto[7]-'0')
	var err error
	if r.URL, err = parseTarget(r.Method, r.RequestURI); err != nil {
		return nil, err
	}
	readHeader(fh.RawHeaders(), r.Header)
	r.Host = r.URL.Host
	if r.Host == "" {
		r.Host = r.Header.Get("Host")
	}
	delete(r.Header, "Host")
	// net/http's fixPragmaCacheControl (RFC 7234 §5.4).
	if p, ok := r.Header["Pragma"]; ok && len(p) > 0 && p[0] == "no-cache" {
		if _, ok := r.Header["Cache-Control"]; !ok {
			r.Header["Cache-Control"] = []string{"no-cache"}
		}
	}
	if te := r.Header["Transfer-Encoding"]; len(te) > 0 {
		// checkRequest let only "chunked" through, on HTTP/1.1.
		delete(r.Header, "Transfer-Encoding")
		delete(r.Header, "Content-Length")
		r.TransferEncoding = []string{"chunked"}
		r.ContentLength = -1
		if names, ok := r.Header["Trailer"]; ok {
			delete(r.Header, "Trailer")
			r.Trailer = http.Header{}
			b.inHeader = map[string]int{}
			for _, v := range names {
				for k := range bytes.SplitSeq([]byte(v), []byte(",")) {
					if k = trimSpaceTab(k); len(k) > 0 {
						name := textproto.CanonicalMIMEHeaderKey(string(k))
						if !connectionLists(r.Header["Connection"], name) {
							// One that Connection names is about this hop
							// (RFC 9110 §7.6.1): never passed on.
							r.Trailer[name] = nil
							b.inHeader[name] = len(r.Header[name])
						}
					}
				}
			}
		}
	} else if cl := r.Header["Content-Length"]; len(cl) > 0 {
		r.ContentLength, _ = strconv.ParseInt(cl[0], 10, 64) // checked by checkRequest
	}
	if r.ContentLength != 0 {
		b.stream = ctx.RequestBodyStream()
		if b.stream == nil {
			b.stream = bytes.NewReader(ctx.Request.Body())
		}
		b.header, b.trailer, b.chunked, b.left = fh, r.Trailer, r.ContentLength < 0, r.ContentLength
		r.Body = b
	}
	return r.WithContext(ctx2), nil
}

// known is b as a string, without an allocation for the methods and
// protocol versions most requests carry.
func known(b []byte) string {
	switch string(b) {
	case http.MethodGet:
		return http.MethodGet
	case http.MethodPost:
		return http.MethodPost
	case http.MethodPut:
		return http.MethodPut
	case http.MethodPatch:
		return http.MethodPatch
	case http.MethodDelete:
		return http.MethodDelete
	case "HTTP/1.1":
		return "HTTP/1.1"
	}
	return string(b)
}

// parseTarget reads a request-target as net/http's server does: a CONNECT's
// authority-form as a URL with that host alone.
func parseTarget(method, target string) (*url.URL, error) {
	if method != http.MethodConnect || strings.HasPrefix(target, "/") {
		return url.ParseRequestURI(target)
	}
	u, err := url.ParseRequestURI("http://" + target)
	if err != nil {
		return nil, err
	}
	u.Scheme = ""
	return u, nil
}

// readHeader adds raw's header lines (checked by checkRequest: each a
// name, a colon and a value, none folded) to h as net/textproto reads them.
func readHeader(raw []byte, h http.Header) {
	for len(raw) > 0 {
		line, rest, _ := bytes.Cut(raw, []byte("\n"))
		raw = rest
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return
		}
		k, v, _ := bytes.Cut(line, []byte(":"))
		key := textproto.CanonicalMIMEHeaderKey(string(trimSpaceTab(k)))
		h[key] = append(h[key], string(trimSpaceTab(v)))
	}
}

// callerStream is the caller's request body as the proxy reads it, from
// fasthttp's request stream: a caller that sends nothing for idle (the
// route's timeout; 0: no limit) is cut off, each read setting a read
// deadline on the caller's connection that far ahead; at the body's end the
// trailer fields received (fasthttp keeps them in the request's header) are
// copied into trailer, the net/http request's, and onEnd runs.
//
// The stream is read by the Client's body writer, a goroutine of its own,
// which may still be reading when the answer is done: stop, from the
// handler's goroutine, ends any read in progress and every later one
// before fasthttp reads the connection again. Reads hold mu, so that stop
// knows when none is left; stopping is set first, so that a read that set
// its deadline before stop's sees it, and one after is cut by stop's.
type callerStream struct {
	stream  io.Reader
	chunked bool
	left    int64 // of a body of known length, bytes not read yet
	header  *fasthttp.RequestHeader
	trailer http.Header
	// How many of each trailer name's values came in the header block:
	// fasthttp adds the trailer's after them, in the same header.
	inHeader map[string]int

	idle  time.Duration
	conn  net.Conn // the caller's connection, for its read deadline
	onEnd func()   // at the body's end, on the reader's goroutine; may be nil

	stopping atomic.Bool
	mu       sync.Mutex
	ended    bool // read to its end
}

// errStopped is a read of a caller's body after the answer was done.
var errStopped = errors.New("the answer was done before the request body was read")

func (b *callerStream) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended {
		return 0, io.EOF
	}
	if b.idle > 0 {
		b.conn.SetReadDeadline(time.Now().Add(b.idle))
	}
	if b.stopping.Load() {
		return 0, errStopped
	}
	n, err := b.stream.Read(p)
	b.left -= int64(n)
	if err == io.EOF && !b.chunked && b.left > 0 {
		// fasthttp's stream ends a body cut short by the caller's close
		// like a whole one: the request would reach the upstream complete.
		err = io.ErrUnexpectedEOF
	}
	var ne net.Error
	if b.chunked && err != nil && err != io.EOF && err != io.ErrUnexpectedEOF && !errors.As(err, &ne) {
		// fasthttp's words for a chunk it cannot parse ("empty hex
		// number") do not say what was being read.
		err = fmt.Errorf("malformed chunked framing: %w", err)
	}
	if err == io.EOF {
		b.ended = true
		for k := range b.trailer {
			if v := b.header.PeekAll(k); len(v) > b.inHeader[k] {
				v = v[b.inHeader[k]:]
				vs := make([]string, len(v))
				for i := range v {
					vs[i] = string(v[i])
				}
				b.trailer[k] = vs
			}
		}
		if b.idle > 0 {
			b.conn.SetReadDeadline(time.Time{})
		}
		if b.onEnd != nil {
			b.onEnd()
		}
	}
	return n, err
}

func (b *callerStream) Close() error { return nil }

// readWhole reports whether the body has been read to its end; false
// while a read is in progress.
func (b *callerStream) readWhole() bool {
	if !b.mu.TryLock() {
		return false
	}
	defer b.mu.Unlock()
	return b.ended
}

// stop ends the body's reading, waiting for a read in progress to return,
// and reports whether all of it had been read (fasthttp can then read the
// connection's next request; else the connection must close).
func (b *callerStream) stop() (ended bool) {
	b.stopping.Store(true)
	if !b.mu.TryLock() {
		b.conn.SetReadDeadline(aLongTimeAgo) // the read in progress returns
		b.mu.Lock()
		b.conn.SetReadDeadline(time.Time{})
	}
	ended = b.ended
	b.mu.Unlock()
	return ended
}
