package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/metrics"
)

// errHeaderTimeout is the route's timeout passing before response headers.
var errHeaderTimeout = errors.New("upstream response headers timed out")

// injector is the ReverseProxy's transport. It runs after Rewrite, so the
// headers it sets are the last word: it takes a token, injects it, and on a
// 401 drops that token and replays the request once with a new one.
type injector struct {
	metrics *metrics.Metrics
}

func (in *injector) RoundTrip(req *http.Request) (*http.Response, error) {
	x := exchangeOf(req.Context())
	rt := x.route
	var cb *callerBody
	if req.Body != nil && req.Body != http.NoBody {
		x.body.idle = rt.Timeout
		cb = &callerBody{rc: req.Body}
		req.Trailer = forwardedTrailer(rt, x.in.Trailer)
		cb.trailer, cb.from = req.Trailer, x.in.Trailer
		req.Body = cb
	}
	replayable, err := bufferBody(req, rt.ReplayMaxBytes)
	if err != nil {
		return nil, err
	}
	tok, err := x.token(req.Context())
	if err != nil {
		return nil, err
	}
	resp, err := in.send(req, x, tok.Header.SetOn)
	if err != nil && cb != nil {
		// Request.Write hides the body's error from the upstream
		// connection's; the caller's body failing is the caller's fault.
		if be := cb.err.Load(); be != nil {
			err = be
		}
	}
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	// The upstream refused this token: drop it (unless a newer one already
	// replaced it, or the reauth bound keeps it), so that the next request
	// has another even when this one cannot be replayed (CONTRACT.md §3);
	// then try once more with whatever the broker has now.
	rt.Tokens.Invalidate(tok.Gen)
	if !replayable {
		return resp, nil // its body went by: the caller gets the 401
	}
	fresh, err := x.token(req.Context())
	if err == nil && fresh.Gen == tok.Gen {
		return resp, nil // nothing newer to try: the caller gets the 401
	}
	drain(resp.Body)
	if err != nil {
		// The caller learns why no token can be had (a refusal, an
		// unreachable token endpoint), not a 401 about a token it never saw.
		return nil, err
	}
	if req.GetBody != nil {
		if req.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	x.replayed = true
	in.metrics.Replayed(rt.Name)
	return in.send(req, x, fresh.Header.SetOn)
}

// token asks the route's broker for a token, timing the wait.
func (x *exchange) token(ctx context.Context) (broker.Token, error) {
	var span trace.Span
	if x.tracer != nil {
		ctx, span = x.childSpan(ctx, "token wait", trace.SpanKindInternal, attribute.String("tokenproxy.upstream", x.route.Name))
	}
	start := time.Now()
	tok, err := x.route.Tokens.Token(ctx)
	x.askedToken = true
	x.tokenWait += time.Since(start)
	x.gotToken = x.gotToken || err == nil
	if span != nil {
		if be, ok := broker.AsError(err); ok {
			span.SetAttributes(attribute.String("tokenproxy.error", be.Code))
			span.SetStatus(codes.Error, be.Code)
		} else if err != nil {
			span.SetStatus(codes.Error, "caller gone")
		}
		span.End()
	}
	return tok, err
}

// send makes one attempt with the given injection, bounding the wait for
// response headers by the route's timeout; the body may stream for longer.
func (in *injector) send(req *http.Request, x *exchange, inject func(http.Header)) (*http.Response, error) {
	rt := x.route
	var span trace.Span
	var spanCtx context.Context
	if x.tracer != nil {
		spanCtx, span = x.childSpan(req.Context(), spanMethod(req.Method), trace.SpanKindClient,
			attribute.String("http.request.method", spanMethod(req.Method)),
			attribute.String("server.address", req.URL.Hostname()),
			attribute.String("url.path", req.URL.EscapedPath()))
		if x.attempts > 0 {
			span.SetAttributes(attribute.Int("http.request.resend_count", x.attempts))
		}
		defer span.End()
	}
	// The first attempt sends the request ReverseProxy made, header and
	// all; a replay gets a copy of both, as the first attempt's body may
	// still be being written with the header it was sent with.
	out := req
	if x.attempts > 0 {
		out = req.WithContext(req.Context())
		out.Header = req.Header.Clone()
	}
	inject(out.Header)
	if span != nil {
		// The upstream's parent is this attempt; a caller's traceparent,
		// which ReverseProxy copied, is replaced.
		traceContext.Inject(spanCtx, propagation.HeaderCarrier(out.Header))
	}
	start := time.Now()
	var deadline time.Time
	if rt.Timeout > 0 {
		deadline = start.Add(rt.Timeout)
	}
	resp, err := rt.Transport.RoundTripUntil(out, deadline)
	x.attempts++
	x.upstreamTime += time.Since(start)
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		err = checkSwitch(out.Header, resp)
	}
	if span != nil {
		switch {
		case errors.Is(err, errHeaderTimeout):
			span.SetStatus(codes.Error, CodeUpstreamTimeout)
		case err != nil:
			span.SetStatus(codes.Error, CodeUnreachable)
		default:
			span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
			if resp.StatusCode >= 500 {
				span.SetStatus(codes.Error, strconv.Itoa(resp.StatusCode))
			}
		}
	}
	return resp, err
}

// SwitchError is an upstream's 101 that the request did not ask for: no
// Upgrade at all, or another protocol than the one named (RFC 9110 §15.2.2:
// a server switches only to a protocol the client listed).
type SwitchError struct{ Asked, Got string }

func (e *SwitchError) Error() string {
	if e.Asked == "" {
		return "the upstream switched protocols (101) though the request asked for no protocol switch"
	}
	return "the upstream switched to protocol " + strconv.QuoteToASCII(e.Got) + " (101) though the request asked for " + strconv.Quote(e.Asked)
}

// checkSwitch refuses a 101 the request did not ask for, closing the
// upstream's connection (which would otherwise become a tunnel).
func checkSwitch(h http.Header, resp *http.Response) error {
	asked, got := upgradeType(h), upgradeType(resp.Header)
	if asked != "" && printable(got) && strings.EqualFold(asked, got) {
		return nil
	}
	resp.Body.Close()
	return &SwitchError{Asked: asked, Got: got}
}

// bufferBody keeps a body of at most max bytes in memory so that it can be
// sent twice, and reports whether the request can be replayed. A larger
// body streams through untouched and its 401 goes back to the caller.
func bufferBody(req *http.Request, max int64) (bool, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return true, nil
	}
	if req.ContentLength > max {
		return false, nil
	}
	head, err := io.ReadAll(io.LimitReader(req.Body, max+1))
	if err != nil {
		return false, err
	}
	if int64(len(head)) > max {
		req.Body = readCloser{io.MultiReader(bytes.NewReader(head), req.Body), req.Body}
		return false, nil
	}
	req.Body.Close()
	req.Body = io.NopCloser(bytes.NewReader(head))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(head)), nil }
	if len(req.Trailer) == 0 {
		req.ContentLength = int64(len(head))
		req.TransferEncoding = nil
	} else {
		// Trailer fields go only with chunked framing (RFC 9112 §7.1.2);
		// their values, set when the body ended, go with every attempt.
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
	}
	return true, nil
}

// BodyError is a failure to read the caller's request body (malformed
// chunked framing, a connection that broke off, nothing sent for the
// route's timeout): the caller's fault, never the upstream's, answered 400
// when no answer has started.
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "the request body could not be read: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

// callerBody is the caller's request body (a callerStream) as the
// transport reads it: its read errors become *BodyError, and the first is
// kept, as Request.Write does not pass it on in a form errors.As finds. At
// its end the caller's trailer fields (from, which callerStream fills then)
// are copied into trailer, the outbound request's, which Request.Write
// sends after the body.
type callerBody struct {
	rc      io.ReadCloser
	err     atomic.Pointer[BodyError]
	trailer http.Header
	from    http.Header
}

func (b *callerBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		for k := range b.trailer {
			b.trailer[k] = b.from[k]
		}
	case err != nil:
		be := &BodyError{Err: err}
		b.err.CompareAndSwap(nil, be)
		return n, be
	}
	return n, err
}

// forwardedTrailer is the outbound request's Trailer: the fields the
// caller announced (RFC 9110 §6.5), their values set when its body ends,
// less those stripped from its headers (a credential in a trailer would
// reach an upstream that merges trailers into the header), the
// X-Request-Id, and the fields that are about one connection or the
// message's framing, which RFC 9110 §6.5.1 keeps out of trailers; nil when
// none is left.
func forwardedTrailer(rt *Route, announced http.Header) http.Header {
	var t http.Header
	for k := range announced {
		if rt.stripped(k) || sameName(k, requestIDHeader) || hopByHop(k) {
			continue
		}
		if t == nil {
			t = http.Header{}
		}
		t[k] = nil
	}
	return t
}

func (b *callerBody) Close() error { return b.rc.Close() }

// hopByHop reports whether k names a field about one connection or the
// message's framing and routing, never forwarded as a trailer: RFC 9110
// §7.6.1's connection options and §6.5.1's framing and routing fields.
func hopByHop(k string) bool {
	for _, h := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "TE",
		"Trailer", "Transfer-Encoding", "Upgrade", "Content-Length", "Host"} {
		if sameName(k, h) {
			return true
		}
	}
	return false
}

type readCloser struct {
	io.Reader
	io.Closer
}

// drain reads a little of a body before closing it, so that the connection
// can be reused for the replay.
func drain(body io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	body.Close()
}
