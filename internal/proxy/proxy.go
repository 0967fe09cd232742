// Package proxy owns the data plane: it maps a caller's plain-HTTP request
// to one configured upstream (by route name, or by host in forward-proxy
// mode), strips whatever credentials the caller sent, injects the upstream's
// own, replays once after a 401, and answers its own failures in the shape
// CONTRACT.md §4 fixes.
package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

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

// Handler is the data plane's http.Handler.
type Handler struct {
	table    atomic.Pointer[Table]
	listen   string // the configured listen address, for Location rewriting
	rp       *httputil.ReverseProxy
	metrics  *metrics.Metrics
	log      *zap.Logger
	upgrades upgrades
	tracer   trace.Tracer // nil: tracing off
}

// New returns a Handler serving t. listen is the data plane's configured
// address (host:port).
func New(t *Table, listen string, m *metrics.Metrics, log *zap.Logger) *Handler {
	if log == nil {
		log = zap.NewNop()
	}
	h := &Handler{listen: listen, metrics: m, log: log, upgrades: upgrades{live: map[*upgrade]struct{}{}}}
	h.SetTable(t)
	h.rp = &httputil.ReverseProxy{
		// Rewrite, not Director: it runs after the hop-by-hop headers are
		// removed, so "Connection: Authorization" cannot strip what is injected.
		Rewrite:        rewrite,
		Transport:      &injector{metrics: m},
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.proxyError,
		BufferPool:     bufferPool{},
		// What has been read of an answer goes to the caller within 1 ms
		// (after the client's own gathering of at most 1 ms): with the
		// default, net/http's 4 KiB buffer held a slowly sent answer with
		// a Content-Length, status included, until 4 KiB or its end. A
		// flush after every write (-1) cost up to 5% at 1 KiB; this timer
		// costs nothing measurable (wrk -c64, 3 × 5 s side by side).
		FlushInterval: time.Millisecond,
		ErrorLog:      zap.NewStdLog(log),
	}
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

// exchange is what one caller request carries through the proxy. Its
// fields are written by the handler's goroutine alone (ReverseProxy calls
// the transport and its hooks there) and read when the request ends.
type exchange struct {
	route      *Route
	target     *url.URL
	in         *http.Request       // the caller's request, for localOrigin
	out        http.ResponseWriter // the answer to the caller, for read deadlines on its connection
	id         string              // X-Request-Id (CONTRACT.md §3)
	idValue    []string            // id, as a header's values
	upstreamID string              // the upstream's own X-Request-Id, when it sent another
	replayed   bool
	switched   bool // the upstream answered 101: the connection now carries another protocol

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

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	x := &exchange{id: requestID(r.Header)}
	// One value slice for the outbound request and the answer: header
	// values are replaced, never changed in place.
	x.idValue = []string{x.id}
	sw := &statusWriter{ResponseWriter: w, id: x.idValue}
	x.out = sw
	if h.tracer != nil {
		r = h.startSpan(r, x)
	}
	defer func() {
		status := sw.status()
		if x.switched && sw.code == 0 {
			// The 101 went out on the hijacked connection, past sw.
			status = http.StatusSwitchingProtocols
		}
		h.finish(r, x, sw, status, start)
		x.endSpan(r, status, sw)
	}()

	http10 := !r.ProtoAtLeast(1, 1) // HTTP/1.0: net/http takes no other version below 1.1
	if len(r.TransferEncoding) > 0 || http10 {
		// net/http drops a Content-Length sent beside Transfer-Encoding and
		// reads the chunked body; RFC 9112 §6.1 then wants the connection
		// closed after the response, so that nothing smuggled can follow.
		// On HTTP/1.0 net/http ignores Transfer-Encoding and deletes the
		// header (golang/go#12785), so a chunked body is read by its
		// Content-Length or as empty, and its rest would be read as
		// another request: §6.1 wants that connection closed too, and as
		// the header cannot be seen here, every HTTP/1.0 one is.
		w.Header().Set("Connection", "close")
	}
	if http10 {
		// RFC 9110 §7.8: a server must ignore Upgrade in an HTTP/1.0
		// request.
		r.Header.Del("Upgrade")
	}
	if r.Method == http.MethodConnect {
		writeError(sw, http.StatusMethodNotAllowed, CodeConnect, "CONNECT is not supported: send plain HTTP to tokenproxy, which speaks HTTPS to the upstream", "")
		return
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
		err.write(sw)
		return
	}
	if r.Method == http.MethodTrace {
		// A TRACE answer echoes the request as the upstream received it:
		// the injected token and vendor key would come back to the caller,
		// which must never hold a credential.
		writeError(sw, http.StatusBadRequest, CodeBadRequest, "TRACE is not forwarded: the upstream would echo the injected credentials back", x.route.Name)
		return
	}
	defer h.metrics.Started(x.route.Name)()
	x.in = r
	ctx := context.WithValue(r.Context(), ctxKey{}, x)
	if proto := upgradeType(r.Header); proto != "" {
		if !printable(proto) {
			writeError(sw, http.StatusBadRequest, CodeBadRequest, "the Upgrade header names a protocol that is not printable ASCII", x.route.Name)
			return
		}
		// Once switched, the connection is hijacked and http.Server.Shutdown
		// no longer sees it: CloseUpgraded closes both sides through up.
		var up *upgrade
		var stop func()
		ctx, up, stop = h.upgrades.add(ctx)
		sw.onHijack = up.hijacked
		defer stop()
	}
	h.rp.ServeHTTP(sw, r.WithContext(ctx))
}

// CloseUpgraded waits until every connection that switched protocols has
// closed, or ctx is done, and then closes those still open; it returns how
// many it closed. http.Server.Shutdown does not wait for these connections
// (they are hijacked), so the daemon calls this after it, with the same
// shutdown_timeout deadline (CONTRACT.md §3).
func (h *Handler) CloseUpgraded(ctx context.Context) int {
	return h.upgrades.close(ctx)
}

// finish logs one line per request (CONTRACT.md §6) and counts it. Besides
// the contract's fields, the line splits a slow answer into its parts:
// token_wait (time spent waiting for a token) and upstream_latency (the
// upstream's time until its response headers); token says whether the
// token used was the first one tried or a replay's, and is absent when
// none was had.
func (h *Handler) finish(r *http.Request, x *exchange, sw *statusWriter, status int, start time.Time) {
	d := time.Since(start)
	name := ""
	if x.route != nil {
		name = x.route.Name
	}
	h.metrics.Request(name, status, sw.errCode, d)
	ce := h.log.Check(zapcore.InfoLevel, "request")
	if ce == nil {
		return
	}
	f := make([]zap.Field, 0, 12) // every field below at most once
	f = append(f,
		zap.String("upstream", name),
		zap.String("method", r.Method),
		zap.String("path", logPath(r)),
		zap.Int("status", status),
		zap.Duration("duration", d),
		zap.String("request_id", x.id))
	if sw.errCode != "" {
		f = append(f, zap.String("error", sw.errCode))
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
		f = append(f, zap.Int64("response_bytes", sw.bytes))
	}
	if x.upstreamID != "" {
		f = append(f, zap.String("upstream_request_id", x.upstreamID))
	}
	ce.Write(f...)
}

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

// rewrite points the outbound request at the route's target and removes
// every credential the caller sent, and the headers that say who called or
// which URL was asked (stripped); the injector adds the upstream's own.
func rewrite(pr *httputil.ProxyRequest) {
	x := exchangeOf(pr.In.Context())
	pr.Out.URL = x.target
	pr.Out.Host = "" // the target's host, never the caller's Host header
	pr.Out.RequestURI = ""
	for k := range pr.Out.Header {
		if x.route.stripped(k) {
			delete(pr.Out.Header, k)
		}
	}
	pr.Out.Header[requestIDHeader] = x.idValue
}

// modifyResponse rewrites a Location on the upstream's own origin to the
// matching local URL. Redirects are never followed.
func (h *Handler) modifyResponse(resp *http.Response) error {
	x := exchangeOf(resp.Request.Context())
	x.switched = resp.StatusCode == http.StatusSwitchingProtocols
	// The caller gets one X-Request-Id, ours (statusWriter sets it); the
	// upstream's own, when another, is kept for the log line.
	if ids := resp.Header[requestIDHeader]; len(ids) > 0 {
		if len(ids) > 1 || ids[0] != x.id {
			x.upstreamID = boundedID(ids[0])
		}
		resp.Header.Del(requestIDHeader)
	}
	// Tokenproxy-Error marks the answers tokenproxy makes itself (CONTRACT.md
	// §4): an upstream's own would pass for one.
	resp.Header.Del("Tokenproxy-Error")
	if loc := resp.Header.Get("Location"); loc != "" {
		if local, ok := localLocation(x.route, x.target, loc, h.localOrigin(x.in)); ok {
			resp.Header.Set("Location", local)
		}
	}
	return nil
}

// proxyError maps a failure of the round trip to the contract's errors.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	x := exchangeOf(r.Context())
	name := x.route.Name
	if sw, ok := w.(*statusWriter); ok && sw.hijacked {
		// The caller's connection was taken over for a protocol switch
		// and writing the 101 to it failed: the caller is gone as well.
		x.switched = false
		panic(http.ErrAbortHandler)
	}
	if r.Context().Err() != nil {
		// The caller went away (net/http cancels the context when its
		// connection closes, or is half-closed): no answer may go out, not
		// even the empty 200 net/http would send for a handler that wrote
		// nothing. Aborting closes the connection; ServeHTTP's deferred
		// code still logs and counts the request, as 499.
		panic(http.ErrAbortHandler)
	}
	var be *broker.Error
	var bodyErr *BodyError
	var switchErr *SwitchError
	switch {
	case errors.As(err, &switchErr):
		h.log.Warn("protocol switch refused", zap.String("upstream", name), zap.String("error", switchErr.Error()))
		writeError(w, http.StatusBadGateway, CodeUnreachable, name+": "+switchErr.Error(), name)
	case errors.As(err, &bodyErr):
		// The body's framing cannot be trusted, nor what follows it on the
		// connection.
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusBadRequest, CodeBadRequest, bodyErr.Error(), name)
	case errors.As(err, &be):
		status := http.StatusServiceUnavailable
		if be.Code == broker.CodeTokenEndpoint {
			status = http.StatusBadGateway
		}
		e := &Error{Status: status, Code: be.Code, Msg: be.Msg, Upstream: name, RetryAfter: be.RetryAfter}
		e.write(w)
	case errors.Is(err, errHeaderTimeout):
		writeError(w, http.StatusGatewayTimeout, CodeUpstreamTimeout, name+": the upstream did not answer within "+x.route.Timeout.String(), name)
	case x.switched:
		// The upstream answered the 101 asked for, but the caller's
		// connection could not be taken over.
		h.log.Warn("protocol switch failed", zap.String("upstream", name), zap.String("error", shortError(err)))
		writeError(w, http.StatusBadGateway, CodeUnreachable, name+": the upstream's protocol switch failed: "+shortError(err), name)
	default:
		h.log.Warn("upstream unreachable", zap.String("upstream", name), zap.String("host", x.target.Host), zap.String("error", shortError(err)))
		writeError(w, http.StatusBadGateway, CodeUnreachable, name+": cannot reach "+x.target.Host+": "+shortError(err), name)
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

// statusWriter remembers the status, error code and body size written, for
// the log and metrics, and gives every response the request's X-Request-Id:
// set as the headers go out, it replaces any other value and survives
// ReverseProxy clearing the headers after a 1xx.
type statusWriter struct {
	http.ResponseWriter
	id       []string // X-Request-Id's values: the request's id alone
	code     int
	errCode  string // Tokenproxy-Error, when tokenproxy answered (Error.write)
	bytes    int64
	onHijack func(net.Conn) // set for requests that ask to switch protocols
	hijacked bool
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 && code >= 200 {
		s.code = code
	}
	s.ResponseWriter.Header()[requestIDHeader] = s.id
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.WriteHeader(http.StatusOK)
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusWriter) status() int {
	if s.code == 0 {
		return 499
	}
	return s.code
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// bufferPool recycles ReverseProxy's copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
