// Package proxy owns the data plane: it maps a caller's plain-HTTP request
// to one configured upstream (by route name, or by host in forward-proxy
// mode), strips whatever credentials the caller sent, injects the upstream's
// own, replays once after a 401, and answers its own failures in the shape
// CONTRACT.md §4 fixes.
package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/net/http/httpguts"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/metrics"
)

// Tokens is the part of broker.Cache the data plane uses.
type Tokens interface {
	Token(ctx context.Context) (broker.Token, error)
	Invalidate(gen uint64) bool
}

// Route is one upstream as the data plane sees it.
type Route struct {
	Name   string
	Base   *url.URL // base_url
	Tokens Tokens
	// Transport carries API calls and upgrades to Base's host.
	Transport      *Client
	Timeout        time.Duration // until the response headers arrive
	ReplayMaxBytes int64         // largest body kept for a replay after 401

	// KeyHeaders are the vendor's credential headers besides Authorization
	// (upstream.Adapter.KeyHeaders): a caller's copies are removed. The
	// headers set are the token's own (broker.Token.Header).
	KeyHeaders []string
}

// basePath is Base's escaped path without a trailing slash.
func (rt *Route) basePath() string { return strings.TrimSuffix(rt.Base.EscapedPath(), "/") }

// Table is the set of routes in force; a reload swaps in a new one.
type Table struct {
	byName map[string]*Route
}

// NewTable indexes routes by name.
func NewTable(routes []*Route) *Table {
	t := &Table{byName: map[string]*Route{}}
	for _, r := range routes {
		t.byName[r.Name] = r
	}
	return t
}

// Handler is the data plane: Serve is its fasthttp.RequestHandler.
type Handler struct {
	table    atomic.Pointer[Table]
	listen   string // the configured listen address, for Location rewriting
	inject   *injector
	metrics  *metrics.Metrics
	log      *zap.Logger
	upgrades upgrades
	// Every exchange from its routing until its log line (done), so that
	// the drain's last step (EndRequests) ends and logs those that
	// shutdown_timeout cut off.
	requests upgrades
	tracer   trace.Tracer // nil: tracing off
}

// New returns a Handler serving t. listen is the data plane's configured
// address (host:port).
func New(t *Table, listen string, m *metrics.Metrics, log *zap.Logger) *Handler {
	if log == nil {
		log = zap.NewNop()
	}
	h := &Handler{listen: listen, inject: &injector{metrics: m}, metrics: m, log: log, upgrades: upgrades{live: map[*upgrade]struct{}{}},
		requests: upgrades{live: map[*upgrade]struct{}{}}}
	h.SetTable(t)
	return h
}

// SetTable makes t the routes in force for requests that start from now on,
// and creates their zero metric series.
func (h *Handler) SetTable(t *Table) {
	names := make([]string, 0, len(t.byName))
	for name := range t.byName {
		names = append(names, name)
	}
	h.metrics.InitRoutes(names, UpstreamErrors, NoUpstreamErrors)
	h.table.Store(t)
}

// exchange is what one caller request carries through the proxy, from
// Serve until its answer has gone (done). Its fields are written by the
// handler's goroutine, or after it by fasthttp's writing of the answer or
// a switched connection's copier, one after the other.
type exchange struct {
	h          *Handler
	ctx        *fasthttp.RequestCtx
	start      time.Time
	route      *Route
	target     *url.URL
	in         *http.Request // the caller's request, as net/http reads it
	id         string        // X-Request-Id (CONTRACT.md §3)
	idHeader   [1]string     // id, as the outbound X-Request-Id's values (outbound)
	upstreamID string        // the upstream's own X-Request-Id, when it sent another
	replayed   bool
	switched   bool        // the upstream answered 101: the connection now carries another protocol
	unframed   *answerBody // an HTTP/1.0 caller's answer body of unknown length (writeHijacked)
	answerConn []string    // the upstream's Connection field values

	// What went to the caller: the final status (0: none, logged as 499),
	// the Tokenproxy-Error code when tokenproxy answered, the body's bytes.
	status  int
	errCode string
	bytes   int64

	body       callerStream
	vals       exchangeContext // the context's values, below its cancel
	trace      httptrace.ClientTrace
	watch      callerWatch        // armed once the request has gone to the upstream
	live       upgrade            // in h.requests from routing until done
	cancel     context.CancelFunc // ends the exchange's context: the upstream call
	inFlight   func()             // ends the route's in-flight count; nil before routing
	upgrade    *upgrade           // a request that asks to switch protocols
	endUpgrade func()

	// For the log line: whether a token was had, the time spent waiting
	// for tokens, and the time the upstream took until its response
	// headers, over every attempt (a replay is a second one).
	gotToken     bool
	askedToken   bool
	tokenWait    time.Duration
	attempts     int
	upstreamTime time.Duration

	// The request's span and its tracer; nil when tracing is off.
	tracer trace.Tracer
	span   trace.Span
}

type ctxKey struct{}

func exchangeOf(ctx context.Context) *exchange {
	x, _ := ctx.Value(ctxKey{}).(*exchange)
	return x
}

// exchangeContext holds an exchange's context values: the exchange
// (exchangeOf) and the address its connection came in on
// (http.LocalAddrContextKey). Part of the exchange, it costs no
// allocation of its own, where context.WithValue made two.
type exchangeContext struct {
	context.Context
	x     *exchange
	local net.Addr
}

func (c *exchangeContext) Value(key any) any {
	switch key {
	case ctxKey{}:
		return c.x
	case http.LocalAddrContextKey:
		return c.local
	}
	return c.Context.Value(key)
}

// Serve is the data plane's fasthttp.RequestHandler, behind its server's
// checks (Handler.Server, checkRequest). The answer is ready in
// ctx.Response when it returns; its body may stream from the upstream
// after that (answer), and a switched connection is carried on by a
// hijack handler.
func (h *Handler) Serve(ctx *fasthttp.RequestCtx) {
	// Every answer is flushed when written, even with a pipelined request
	// behind it: a 1xx answer (interim) goes straight to the connection,
	// and must not pass an answer fasthttp still holds.
	ctx.SetWriteDeadline(time.Time{})
	x := &exchange{h: h, ctx: ctx, start: time.Now()}
	x.body.conn = ctx.Conn()
	x.vals = exchangeContext{Context: context.Background(), x: x, local: ctx.LocalAddr()}
	cctx, cancel := context.WithCancel(&x.vals)
	x.cancel = cancel
	r, err := callerRequest(ctx, cctx, &x.body)
	if err != nil {
		cancel()
		answerPlain(ctx, http.StatusBadRequest, "invalid request target") // checkRequest parsed it
		return
	}
	x.id = requestID(r.Header)
	if h.tracer != nil {
		r = h.startSpan(r, x)
	}
	x.in = r
	x.live.cancel = cancel
	h.requests.insert(&x.live)
	if !h.proxy(x, r) {
		x.done()
	}
	unread := x.body.stream != nil && !x.body.readWhole()
	if (unread || x.unframed != nil) && !ctx.Hijacked() {
		x.writeHijacked(unread)
	}
}

// writeHijacked writes the answer on the connection fasthttp hands over,
// then closes it: after lingering when the caller's body was not read
// whole (fasthttp's server would close at once), and unframed for an
// HTTP/1.0 caller's body of unknown length (fasthttp would send it
// chunked, which HTTP/1.0 cannot read: RFC 9112 §7.1). fasthttp's Shutdown
// no longer sees a hijacked connection: the answer is tracked with the
// switched connections, so that the daemon's drain (CloseUpgraded) waits
// for it until shutdown_timeout.
func (x *exchange) writeHijacked(unread bool) {
	ctx := x.ctx
	raw := ctx.Conn()
	up := &upgrade{cancel: x.cancel, answer: true}
	x.h.upgrades.insert(up)
	stop := func() { x.h.upgrades.remove(up) }
	// The body that streams after Serve (unframed, or fasthttp's to write),
	// whose Close ends the exchange; nil when it has ended.
	body := x.unframed
	if body == nil {
		body, _ = ctx.Response.BodyStream().(*answerBody)
	}
	hijack(ctx, func(c net.Conn) {
		defer stop()
		up.hijacked(raw)
		ctx.Response.Header.SetConnectionClose()
		var err error
		if b := x.unframed; b != nil {
			// The body's end is the connection's (RFC 9112 §6.3); its
			// pieces go out as they come.
			_, err = c.Write(ctx.Response.Header.Header())
			if err == nil {
				b.direct = true
				_, err = b.WriteTo(c)
			}
			b.Close()
		} else {
			bw := bufio.NewWriterSize(c, 4<<10)
			if err = ctx.Response.Write(bw); err == nil {
				err = bw.Flush()
			}
		}
		if err == nil && unread {
			linger(raw, c)
		}
	}, func() {
		if body != nil {
			x.status = 0 // nothing went out: logged 499
			body.Close()
		}
		stop()
	})
}

// lingerTime bounds how long a connection closed with a request body
// unread goes on being read (net/http's rstAvoidanceDelay).
const lingerTime = 500 * time.Millisecond

// linger closes a connection whose answer went out before its request body
// was read whole, as net/http's server does (closeWriteAndWait): no more is
// written (a FIN after the answer), and what the caller still sends is read
// and dropped for up to lingerTime before the close. Closed at once, with
// the caller's bytes unread, the connection is reset, and a caller still
// writing its body may lose the answer to the reset (an upload refused
// with a 401 became "connection reset by peer"). raw is the connection, c
// fasthttp's hijacked view of it (which reads what was buffered first).
func linger(raw, c net.Conn) {
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	raw.SetReadDeadline(time.Now().Add(lingerTime))
	io.Copy(io.Discard, c)
}

// done ends the exchange once its answer has gone, or was never sent:
// the caller's body and the watch stop, the upstream call's context ends,
// and the request is logged and counted.
func (x *exchange) done() {
	if x.watch.conn != nil {
		x.watch.stop()
	}
	if x.body.stream != nil && !x.body.stop() {
		// The body was not read to its end: what follows it on the
		// connection cannot be told apart from it.
		x.ctx.SetConnectionClose()
	}
	x.cancel()
	if x.inFlight != nil {
		x.inFlight()
	}
	status := x.status
	if status == 0 {
		status = 499
	}
	x.h.finish(x, status)
	x.endSpan(status)
	// Last, and the switch's tracking after the request's: once
	// CloseUpgraded has seen a switch end, EndRequests does not find it
	// (it would count it as a request cut off).
	x.h.requests.remove(&x.live)
	if x.endUpgrade != nil {
		x.endUpgrade()
	}
}

// proxy routes r and forwards it, and reports whether the answer goes on
// after Serve returns (a body streaming from the upstream, a switched
// connection), in which case what carries it calls done.
func (h *Handler) proxy(x *exchange, r *http.Request) (later bool) {
	ctx := x.ctx
	http10 := !r.ProtoAtLeast(1, 1)
	if len(r.TransferEncoding) > 0 || http10 {
		// RFC 9112 §6.1: a request with Transfer-Encoding may have been
		// framed otherwise by another hop; nothing smuggled behind it may
		// be read. An HTTP/1.0 caller's connection closes after each
		// answer, as net/http's data plane did.
		ctx.SetConnectionClose()
	}
	if http10 {
		// RFC 9110 §7.8: a server must ignore Upgrade in an HTTP/1.0
		// request.
		r.Header.Del("Upgrade")
	}
	if !h.route(x, r) {
		return false
	}
	x.inFlight = h.metrics.Started(x.route.Name)
	upType := upgradeType(r.Header)
	if upType != "" {
		if !printable(upType) {
			x.fail(http.StatusBadRequest, CodeBadRequest, "the Upgrade header names a protocol that is not printable ASCII", x.route.Name)
			return false
		}
		// Once switched, the connection is hijacked and the server's
		// shutdown no longer sees it: CloseUpgraded closes both sides
		// through x.upgrade.
		x.upgrade, x.endUpgrade = h.upgrades.add(x.cancel)
	}
	out := x.outbound(r, upType)
	x.watch.conn, x.watch.gone = ctx.Conn(), x.cancel
	if out.Body == nil {
		x.watch.arm()
	} else {
		x.body.onEnd = x.watch.arm
	}
	resp, rtErr := h.inject.RoundTrip(out)
	if x.watch.left.Load() || out.Context().Err() != nil {
		// The caller went away (or CloseUpgraded ended the request): no
		// answer may go out. done logs and counts it, as 499. Otherwise
		// the watch goes on while the answer streams: a caller gone then
		// ends the upstream's answer too, which may never end by itself.
		if rtErr == nil {
			resp.Body.Close()
		}
		abort(ctx)
		return false
	}
	if rtErr != nil {
		h.proxyError(x, rtErr)
		return false
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		h.modifyResponse(x, resp)
		return x.switchProtocols(resp)
	}
	x.answerConn = resp.Header["Connection"] // for its trailer, too
	removeHopByHop(resp.Header)
	h.modifyResponse(x, resp)
	return x.answer(resp)
}

// route finds r's route and target, or answers the caller why there is
// none, and reports whether it found them.
func (h *Handler) route(x *exchange, r *http.Request) bool {
	if r.Method == http.MethodConnect {
		x.fail(http.StatusMethodNotAllowed, CodeConnect, "CONNECT is not supported: send plain HTTP to tokenproxy, which speaks HTTPS to the upstream", "")
		return false
	}
	var err *Error
	if r.URL.IsAbs() && !h.addressedToSelf(r) {
		x.route, x.target, err = h.table.Load().forward(r)
	} else {
		x.route, x.target, err = h.table.Load().byRoute(r)
	}
	if err != nil {
		if x.route != nil {
			err.Upstream = x.route.Name
		}
		err.write(x)
		return false
	}
	if r.Method == http.MethodTrace {
		// A TRACE answer echoes the request as the upstream received it:
		// the injected token and vendor key would come back to the caller,
		// which must never hold a credential.
		x.fail(http.StatusBadRequest, CodeBadRequest, "TRACE is not forwarded: the upstream would echo the injected credentials back", x.route.Name)
		return false
	}
	return true
}

// outbound is the request to the upstream, made from the caller's as
// httputil.ReverseProxy made it (Go 1.26 reverseproxy.go ServeHTTP): the
// hop-by-hop fields and those Connection lists removed (RFC 9110 §7.6.1),
// "Te: trailers" kept, an Upgrade asked for again; then pointed at the
// route's target, with every credential the caller sent and the headers
// that say who called or which URL was asked removed (stripped), and the
// request's X-Request-Id. The injector adds the upstream's credentials.
// 1xx answers go to the caller (interim).
func (x *exchange) outbound(r *http.Request, upType string) *http.Request {
	out := new(http.Request)
	*out = *r
	out.URL = x.target
	out.Host = "" // the target's host, never the caller's Host header
	out.RequestURI = ""
	out.Close = false
	if r.ContentLength == 0 {
		out.Body = nil
	}
	h := out.Header
	trailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	removeHopByHop(h)
	if trailers {
		h["Te"] = teTrailers
	}
	if upType != "" {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = []string{upType}
	}
	for k := range h {
		if x.route.stripped(k) {
			delete(h, k)
		}
	}
	x.idHeader[0] = x.id
	h[requestIDHeader] = x.idHeader[:]
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = noUserAgent // none, rather than Go's
	}
	// Whole, each time: WithClientTrace composes into it the hooks of a
	// trace the context already has.
	x.trace = httptrace.ClientTrace{Got1xxResponse: x.interim}
	return out.WithContext(httptrace.WithClientTrace(r.Context(), &x.trace))
}

// Header values outbound sets, shared by every request: nothing changes a
// value in place (http.Header's Set and Del replace the slice).
var (
	teTrailers  = []string{"trailers"}
	noUserAgent = []string{""}
)

// hopHeaders are the fields about one connection (RFC 9110 §7.6.1), as
// httputil.ReverseProxy removes them.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopByHop removes from h the hop-by-hop fields and those its
// Connection fields list.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// connectionLists reports whether connection, a message's Connection
// field values, lists the field named k (RFC 9110 §7.6.1).
func connectionLists(connection []string, k string) bool {
	for _, f := range connection {
		for sf := range strings.SplitSeq(f, ",") {
			if sameName(textproto.TrimString(sf), k) {
				return true
			}
		}
	}
	return false
}

// abort closes the caller's connection without an answer.
func abort(ctx *fasthttp.RequestCtx) {
	hijack(ctx, func(net.Conn) {}, nil) // nothing to end: fasthttp closes the connection either way
}

// CloseUpgraded waits until every connection that switched protocols, and
// every answer written on a hijacked connection (writeHijacked), has
// closed, or ctx is done, and then closes those still open; it returns how
// many switches and how many answers it closed. The server's shutdown does
// not wait for these connections (they are hijacked), so the daemon calls
// this after it, with the same shutdown_timeout deadline (CONTRACT.md §3).
func (h *Handler) CloseUpgraded(ctx context.Context) (switched, answers int) {
	closed, answers := h.upgrades.close(ctx)
	return closed - answers, answers
}

// EndRequests waits until every request has ended and been logged, or
// ctx is done; then it cancels those left (their upstream calls end, and
// their answers, whose connections Server.Close has closed, fail) and
// waits at most 5 s for their log lines. It returns how many it ended.
// The daemon calls it last in the drain, after CloseUpgraded with the
// same deadline: a request that Server.Close cut off at shutdown_timeout
// is then still logged once (CONTRACT.md §6) and counted out.
func (h *Handler) EndRequests(ctx context.Context) int {
	n, _ := h.requests.close(ctx)
	return n
}

// finish logs one line per request (CONTRACT.md §6) and counts it. Besides
// the contract's fields, the line splits a slow answer into its parts:
// token_wait (time spent waiting for a token) and upstream_latency (the
// upstream's time until its response headers); token says whether the
// token used was the first one tried or a replay's, and is absent when
// none was had.
func (h *Handler) finish(x *exchange, status int) {
	d := time.Since(x.start)
	name := ""
	if x.route != nil {
		name = x.route.Name
	}
	h.metrics.Request(name, status, x.errCode, d)
	ce := h.log.Check(zapcore.InfoLevel, "request")
	if ce == nil {
		return
	}
	r := x.in
	fp := logFields.Get().(*[12]zap.Field)
	defer logFields.Put(fp)
	f := fp[:0] // every field below at most once
	f = append(f,
		zap.String("upstream", name),
		zap.String("method", r.Method),
		zap.String("path", logPath(r)),
		zap.Int("status", status),
		zap.Duration("duration", d),
		zap.String("request_id", x.id))
	if x.errCode != "" {
		f = append(f, zap.String("error", x.errCode))
	}
	switch {
	case x.replayed:
		f = append(f, zap.String("token", "replayed"))
	case x.gotToken:
		f = append(f, zap.String("token", "fresh"))
	}
	if x.askedToken {
		f = append(f, zap.Duration("token_wait", x.tokenWait))
	}
	if x.attempts > 0 {
		f = append(f, zap.Duration("upstream_latency", x.upstreamTime))
	}
	if !x.switched {
		f = append(f, zap.Int64("response_bytes", x.bytes))
	}
	if x.upstreamID != "" {
		f = append(f, zap.String("upstream_request_id", x.upstreamID))
	}
	ce.Write(f...)
	clear(f) // the pool holds no strings of this request
}

// logFields holds the request log's fields between requests: a request's
// 12 fields were 896 allocated bytes, a sixth of what it allocated (the
// cores encode fields during Write and keep none: zapcore.Core).
var logFields = sync.Pool{New: func() any { return new([12]zap.Field) }}

// logPath is the request path without its query, which may hold anything.
func logPath(r *http.Request) string {
	if r.URL.IsAbs() {
		return r.URL.Scheme + "://" + r.URL.Host + r.URL.EscapedPath()
	}
	return r.URL.EscapedPath()
}

// localOrigin is how the caller reaches this proxy, for rewriting Location:
// the configured listen address, or, when the proxy listens on every
// interface, the request's Host (in forward-proxy mode that is the
// upstream's, so the address the connection came in on).
func (h *Handler) localOrigin(r *http.Request) string {
	host, port, err := net.SplitHostPort(h.listen)
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if err == nil && host != "" && host != "0.0.0.0" && host != "::" {
		// Port 0 asks the kernel for a port: "host:0" reaches nothing, the
		// address this connection came in on does.
		if local != nil && port == "0" {
			return "http://" + local.String()
		}
		return "http://" + h.listen
	}
	if r.URL.IsAbs() && local != nil {
		return "http://" + local.String()
	}
	return "http://" + r.Host
}

// addressedToSelf reports whether an absolute-form request names
// tokenproxy's own data plane: http, and host and port those of the
// configured listen address or of the address the connection came in on
// (localhost too, for a loopback address). A client using tokenproxy as its
// HTTP proxy sends a rewritten Location (http://{listen}/{name}/...) so;
// it is routed as the path alone would be.
func (h *Handler) addressedToSelf(r *http.Request) bool {
	if r.URL.Scheme != "http" || r.URL.User != nil {
		return false
	}
	host, port := r.URL.Hostname(), r.URL.Port()
	if port == "" {
		port = "80"
	}
	addrs := []string{h.listen}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		addrs = append(addrs, a.String())
	}
	for _, a := range addrs {
		ah, ap, err := net.SplitHostPort(a)
		if err != nil || ap != port || ah == "" {
			continue
		}
		ip, err := netip.ParseAddr(ah)
		switch {
		case err != nil:
			if strings.EqualFold(ah, host) {
				return true
			}
		case ip.IsUnspecified():
		case strings.EqualFold(host, "localhost"):
			if ip.IsLoopback() {
				return true
			}
		default:
			if hip, err := netip.ParseAddr(host); err == nil && hip == ip {
				return true
			}
		}
	}
	return false
}

// callerHeaders are the caller's headers removed from every outbound
// request, besides the route's KeyHeaders and every X-Forwarded-*: the
// credentials, and those that some frameworks take to say who called or
// which URL was asked (X-Original-URL and X-Rewrite-URL override the path
// in IIS and Symfony; X-Real-IP, True-Client-IP and the like name the
// client for nginx, Akamai and others; X-Original-Host and X-Host the
// host). Names match with "_" read as "-": CGI and WSGI
// map both to the same variable (HTTP_PROXY_AUTHORIZATION).
var callerHeaders = []string{"Authorization", "Proxy-Authorization", "Forwarded", "X-Forwarded", "X-Original-URL", "X-Rewrite-URL",
	"X-Real-IP", "True-Client-IP", "Client-IP", "X-Client-IP", "X-Original-Host", "X-Host"}

// forwardedPrefix starts the names of the headers proxies add to say whom
// they forwarded for (X-Forwarded-For, -Host, -Proto, -Port, -Prefix, ...).
const forwardedPrefix = "x-forwarded-"

// stripped reports whether the caller's header named k is removed before
// the request goes to rt's upstream.
func (rt *Route) stripped(k string) bool {
	if len(k) >= len(forwardedPrefix) && sameName(k[:len(forwardedPrefix)], forwardedPrefix) {
		return true
	}
	for _, c := range callerHeaders {
		if sameName(k, c) {
			return true
		}
	}
	for _, c := range rt.KeyHeaders {
		if sameName(k, c) {
			return true
		}
	}
	return false
}

// sameName compares header names ignoring ASCII case, with "_" and "-"
// the same.
func sameName(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x == '_' {
			x = '-'
		}
		if y == '_' {
			y = '-'
		}
		if x != y {
			return false
		}
	}
	return true
}

// modifyResponse rewrites a Location on the upstream's own origin to the
// matching local URL. Redirects are never followed.
func (h *Handler) modifyResponse(x *exchange, resp *http.Response) {
	x.switched = resp.StatusCode == http.StatusSwitchingProtocols
	// The caller gets one X-Request-Id, ours (answer sets it); the
	// upstream's own, when another, is kept for the log line.
	if ids := resp.Header[requestIDHeader]; len(ids) > 0 {
		if len(ids) > 1 || ids[0] != x.id {
			x.upstreamID = boundedID(ids[0])
		}
		delete(resp.Header, requestIDHeader)
	}
	// Tokenproxy-Error marks the answers tokenproxy makes itself (CONTRACT.md
	// §4): an upstream's own would pass for one.
	resp.Header.Del("Tokenproxy-Error")
	if loc := resp.Header.Get("Location"); loc != "" {
		if local, ok := localLocation(x.route, x.target, loc, h.localOrigin(x.in)); ok {
			resp.Header.Set("Location", local)
		}
	}
}

// proxyError maps a failure of the round trip to the contract's errors.
func (h *Handler) proxyError(x *exchange, err error) {
	name := x.route.Name
	var be *broker.Error
	var bodyErr *BodyError
	var switchErr *SwitchError
	switch {
	case errors.As(err, &switchErr):
		h.log.Warn("protocol switch refused", zap.String("upstream", name), zap.String("error", switchErr.Error()))
		x.fail(http.StatusBadGateway, CodeUnreachable, name+": "+switchErr.Error(), name)
	case errors.As(err, &bodyErr) && errors.Is(bodyErr, net.ErrClosed):
		// The caller's connection was closed here (Server.Close at
		// shutdown_timeout): no answer can go out; logged 499.
		abort(x.ctx)
	case errors.As(err, &bodyErr):
		// The body's framing cannot be trusted, nor what follows it on the
		// connection.
		x.ctx.SetConnectionClose()
		x.fail(http.StatusBadRequest, CodeBadRequest, bodyErr.Error(), name)
	case errors.As(err, &be):
		status := http.StatusServiceUnavailable
		if be.Code == broker.CodeTokenEndpoint {
			status = http.StatusBadGateway
		}
		e := &Error{Status: status, Code: be.Code, Msg: be.Msg, Upstream: name, RetryAfter: be.RetryAfter}
		e.write(x)
	case errors.Is(err, errHeaderTimeout):
		x.fail(http.StatusGatewayTimeout, CodeUpstreamTimeout, name+": the upstream did not answer within "+x.route.Timeout.String(), name)
	default:
		h.log.Warn("upstream unreachable", zap.String("upstream", name), zap.String("host", x.target.Host), zap.String("error", shortError(err)))
		x.fail(http.StatusBadGateway, CodeUnreachable, name+": cannot reach "+x.target.Host+": "+shortError(err), name)
	}
}

// shortError drops the URL a *url.Error carries: the query may hold anything.
func shortError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// boundedID is an upstream's X-Request-Id as logged: at most maxRequestID
// bytes of whatever it sent.
func boundedID(s string) string {
	if len(s) > maxRequestID {
		return s[:maxRequestID]
	}
	return s
}

// buffers hold the first piece of an answer's body (answer).
var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
