// Command sketch is a measurement, not a product: tokenproxy's per-request
// work on valyala/fasthttp's server, so that bench/run.sh can show side by
// side what moving the data plane to fasthttp would buy (issue 12;
// BENCHMARKS.md, "What a faster data plane would cost"). The upstream is
// asked through tokenproxy's own client (internal/proxy's Client, which
// keeps the contract's transport behaviours), or with -client hostclient
// through fasthttp's HostClient.
//
//	sketch -listen 127.0.0.1:PORT -upstream HOST:PORT -ca FILE -token TOKEN -api-key KEY
//	       [-client tokenproxy|hostclient] [-watch-after 10ms]
//
// Per request it does what tokenproxy's data plane does on a 1 KiB GET:
// the request checks net/http's parser makes and fasthttp's does not
// (check), the route by the path's first segment, the contract's JSON
// error for an unknown route, CONNECT and TRACE, an X-Request-Id kept or
// generated (a UUID) and set both ways, the caller's credentials,
// X-Forwarded-* and hop-by-hop headers removed in whatever case they come,
// Authorization and hgem-api-key injected (static values, as the peers
// inject; read and timed from an atomic pointer, as tokenproxy's token
// cache is), a watch for the caller going away while the upstream is asked
// (watchCaller; a caller gone stops tokenproxy's client's call), the
// upstream's hop-by-hop headers and Tokenproxy-Error removed, the answer
// streamed back, and when it has gone, the same three
// Prometheus series and the same JSON request log line, batched as
// tokenproxy batches it (64 KiB or 100 ms), on stderr.
//
// It leaves out what a 1 KiB GET does not reach: request bodies and their
// replay after a 401, upgrades, trailers, 1xx answers, Location rewriting,
// forward-proxy mode, tracing, reloads, draining.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"iter"
	"log"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tokenproxy/tokenproxy/internal/procs"
	"github.com/tokenproxy/tokenproxy/internal/proxy"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const route = "up"

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "the data plane's address")
	up := flag.String("upstream", "", "the upstream's host:port, spoken to over TLS (required)")
	caFile := flag.String("ca", "", "the upstream's CA bundle, PEM (required)")
	serverName := flag.String("server-name", "localhost", "the name the upstream's certificate is checked against")
	token := flag.String("token", "", "the bearer token to inject (required)")
	apiKey := flag.String("api-key", "", "the hgem-api-key to inject (required)")
	watchAfter := flag.Duration("watch-after", 10*time.Millisecond, "start watching for the caller going away only when the upstream has not answered within this time (0: from the start)")
	client := flag.String("client", "tokenproxy", "the client to the upstream: tokenproxy (internal/proxy's Client) or hostclient (fasthttp's HostClient)")
	flag.Parse()
	if *up == "" || *caFile == "" || *token == "" || *apiKey == "" {
		fmt.Fprintln(os.Stderr, "sketch: -upstream, -ca, -token and -api-key are required")
		os.Exit(2)
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		log.Fatalf("sketch: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		log.Fatalf("sketch: %s holds no PEM certificate", *caFile)
	}
	tlsConfig := &tls.Config{RootCAs: roots, ServerName: *serverName, NextProtos: []string{"http/1.1"}}
	s := newSketch(*up, *token, *apiKey, prometheus.NewRegistry())
	s.watchAfter = *watchAfter
	switch *client {
	case "tokenproxy":
		s.ours = proxy.NewClient(&http.Transport{TLSClientConfig: tlsConfig, MaxConnsPerHost: 64})
	case "hostclient":
		s.client = &fasthttp.HostClient{Addr: *up, IsTLS: true, TLSConfig: tlsConfig, MaxConns: 64,
			StreamResponseBody: true, ReadTimeout: 30 * time.Second, DisableHeaderNamesNormalizing: true}
	default:
		log.Fatalf("sketch: -client %q: want tokenproxy or hostclient", *client)
	}
	srv := &fasthttp.Server{
		Handler:               s.serve,
		StreamRequestBody:     true,
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		NoDefaultContentType:  true,
		ReadBufferSize:        64 << 10, // tokenproxy's MaxHeaderBytes
		// An answer's body goes out through this buffer: with fasthttp's
		// default (4 KiB) the sketch served 13% fewer 64 KiB answers
		// (9,279 against 10,731 req/s, wrk -c64, median of 3 × 5 s).
		WriteBufferSize: 32 << 10,
		IdleTimeout:     2 * time.Minute,
	}
	// One P while light, as tokenproxy runs (internal/procs): at 1,000
	// req/s the sketch took 0.114-0.122 core on one P against 0.136-0.140
	// on two (vegeta, 3 x 8 s).
	procs.Start(context.Background(), zap.NewNop())
	if err := srv.ListenAndServe(*listen); err != nil {
		log.Fatalf("sketch: %v", err)
	}
}

// sketch is the data plane's state: one upstream, its metrics and the log.
type sketch struct {
	up string
	// The client to the upstream: one of the two is set.
	client *fasthttp.HostClient
	ours   *proxy.Client
	token  atomic.Pointer[string] // "Bearer " + token, as tokenproxy's cache holds it
	apiKey string
	// watchAfter delays the watch for the caller going away (watchCaller).
	watchAfter time.Duration
	log        *zap.Logger
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	inFlight   *prometheus.GaugeVec
}

// writeOnly is stderr whose Sync does nothing (fsync(2) on a pipe fails).
type writeOnly struct{ *os.File }

func (writeOnly) Sync() error { return nil }

// newSketch returns a sketch for the upstream at up with no client yet.
func newSketch(up string, token, apiKey string, reg prometheus.Registerer) *sketch {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey, enc.EncodeTime = "ts", zapcore.ISO8601TimeEncoder
	out := &zapcore.BufferedWriteSyncer{WS: writeOnly{os.Stderr}, Size: 64 << 10, FlushInterval: 100 * time.Millisecond}
	s := &sketch{
		up:     up,
		apiKey: apiKey,
		log:    zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), out, zapcore.InfoLevel)).Named("proxy"),
		// The shapes of tokenproxy's own series (internal/metrics).
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenproxy_requests_total"}, []string{"upstream", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tokenproxy_request_duration_seconds",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}, []string{"upstream"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tokenproxy_requests_in_flight"}, []string{"upstream"}),
	}
	auth := "Bearer " + token
	s.token.Store(&auth)
	reg.MustRegister(s.requests, s.duration, s.inFlight)
	return s
}

// exchange is one request's record, logged and counted when its answer has
// gone to the caller, as tokenproxy's finish does.
type exchange struct {
	s            *sketch
	start        time.Time
	method, path string
	id           string
	status       int
	code         string // the error code when the sketch answered itself
	gotToken     bool
	tokenWait    time.Duration
	upstreamTime time.Duration // until the upstream's response headers
	bytes        int64         // of the answer's body, written to the caller
	cancel       func()        // ends the upstream call's context; nil before there is one
}

func (s *sketch) serve(ctx *fasthttp.RequestCtx) {
	x := &exchange{s: s, start: time.Now(), method: string(ctx.Method()), path: string(ctx.Request.URI().PathOriginal())}
	x.id = requestID(&ctx.Request.Header)
	body, n := s.forward(ctx, x)
	ctx.Response.Header.Set("X-Request-Id", x.id)
	if body == nil {
		x.bytes = int64(len(ctx.Response.Body()))
		x.finish()
		return
	}
	// The answer streams after the handler returns; fasthttp closes the
	// stream at its end or when the caller goes, and the close logs it.
	ctx.Response.SetBodyStream(&answer{x: x, body: body}, n)
}

// finish ends the upstream call's context, if there is one, and writes
// the request's log line (CONTRACT.md §6, with tokenproxy's own fields)
// and counts it.
func (x *exchange) finish() {
	if x.cancel != nil {
		x.cancel()
	}
	d := time.Since(x.start)
	x.s.requests.WithLabelValues(route, strconv.Itoa(x.status)).Inc()
	x.s.duration.WithLabelValues(route).Observe(d.Seconds())
	ce := x.s.log.Check(zapcore.InfoLevel, "request")
	if ce == nil {
		return
	}
	f := make([]zap.Field, 0, 12)
	f = append(f, zap.String("upstream", route), zap.String("method", x.method), zap.String("path", x.path),
		zap.Int("status", x.status), zap.Duration("duration", d), zap.String("request_id", x.id))
	if x.code != "" {
		f = append(f, zap.String("error", x.code))
	}
	if x.gotToken {
		f = append(f, zap.String("token", "fresh"), zap.Duration("token_wait", x.tokenWait),
			zap.Duration("upstream_latency", x.upstreamTime))
	}
	f = append(f, zap.Int64("response_bytes", x.bytes))
	ce.Write(f...)
}

// answer is the upstream's body on its way to the caller.
type answer struct {
	x    *exchange
	body io.ReadCloser
}

func (a *answer) Read(p []byte) (int, error) {
	n, err := a.body.Read(p)
	a.x.bytes += int64(n)
	return n, err
}

func (a *answer) Close() error {
	a.body.Close()
	a.x.finish()
	return nil
}

// forward asks the upstream and returns its body and the body's length
// (-1: unknown), its headers already copied to ctx, or a nil body when
// the sketch answered ctx itself with an error of the contract's shape. x
// gets the status and, for an error, its code.
func (s *sketch) forward(ctx *fasthttp.RequestCtx, x *exchange) (io.ReadCloser, int) {
	req := &ctx.Request
	if status, msg := check(&req.Header); status != 0 {
		// fasthttp framed the body by its own reading of these headers
		// (a Transfer-Encoding: identity body as empty, its bytes as the
		// next request): nothing more may be read from this connection.
		ctx.SetConnectionClose()
		return x.fail(ctx, status, "bad_request", msg, "")
	}
	switch string(req.Header.Method()) {
	case fasthttp.MethodConnect:
		return x.fail(ctx, fasthttp.StatusMethodNotAllowed, "connect_not_supported", "CONNECT is not supported", "")
	case fasthttp.MethodTrace:
		return x.fail(ctx, fasthttp.StatusBadRequest, "bad_request", "TRACE is not forwarded", route)
	}
	uri := req.Header.RequestURI()
	if len(uri) < len(route)+2 || uri[0] != '/' || string(uri[1:len(route)+1]) != route || uri[len(route)+1] != '/' {
		return x.fail(ctx, fasthttp.StatusNotFound, "unknown_upstream", "no upstream by that name", "")
	}
	closeCaller := req.Header.ContentLength() != 0 && len(req.Header.Peek("Transfer-Encoding")) > 0 // RFC 9112 §6.1
	t0 := time.Now()
	auth := s.token.Load()
	x.gotToken, x.tokenWait = true, time.Since(t0)
	inFlight := s.inFlight.WithLabelValues(route)
	inFlight.Inc()
	defer inFlight.Dec()
	// A caller gone cancels the upstream call (tokenproxy's client stops
	// at once; HostClient cannot be stopped and runs to its end). The
	// context lives until the answer has streamed (exchange.finish): ended
	// earlier, it would abort the answer and its connection.
	asking, cancel := context.WithCancel(context.Background())
	x.cancel = cancel
	var left func() bool
	if !req.IsBodyStream() && len(req.Body()) == 0 {
		left, _ = watchCaller(ctx, s.watchAfter, cancel)
	}
	var body io.ReadCloser
	var n int
	var err error
	if s.client != nil {
		body, n, err = s.askHostClient(ctx, x, uri[len(route)+1:], *auth)
	} else {
		body, n, err = s.askTokenproxy(asking, ctx, x, uri[len(route)+1:], *auth)
	}
	x.upstreamTime = time.Since(t0)
	if left != nil && left() {
		if err == nil {
			body.Close()
		}
		x.status = 499 // as tokenproxy logs a caller gone
		return nil, 0
	}
	if err != nil {
		return x.fail(ctx, fasthttp.StatusBadGateway, "upstream_unreachable", "the upstream could not be reached", route)
	}
	h := &ctx.Response.Header
	h.ResetConnectionClose() // the upstream's connection, not the caller's
	cleanAnswer(h)
	if closeCaller {
		h.SetConnectionClose()
	}
	return body, n
}

// askHostClient asks through fasthttp's HostClient: path is the upstream's
// request-target, auth the Authorization value. The answer's status and
// headers are copied to ctx.
func (s *sketch) askHostClient(ctx *fasthttp.RequestCtx, x *exchange, path []byte, auth string) (io.ReadCloser, int, error) {
	req := &ctx.Request
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	req.Header.CopyTo(&out.Header)
	out.SetRequestURI("https://" + s.up + string(path))
	out.Header.SetHost(s.up)
	strip(&out.Header)
	out.Header.Set("Authorization", auth)
	out.Header.Set("hgem-api-key", s.apiKey)
	out.Header.Set("X-Request-Id", x.id)
	if !req.IsBodyStream() && len(req.Body()) > 0 {
		out.SetBodyRaw(req.Body())
	} else if req.IsBodyStream() {
		out.SetBodyStream(ctx.RequestBodyStream(), req.Header.ContentLength())
	}
	up := fasthttp.AcquireResponse()
	if err := s.client.Do(out, up); err != nil {
		fasthttp.ReleaseResponse(up)
		return nil, 0, err
	}
	up.Header.CopyTo(&ctx.Response.Header)
	ctx.Response.Header.SetNoDefaultContentType(true) // the copy takes the upstream's flags
	x.status = up.StatusCode()
	body := up.BodyStream()
	if body == nil {
		body = bytes.NewReader(up.Body())
	}
	return &released{Reader: body, up: up}, up.Header.ContentLength(), nil
}

// released is a HostClient answer's body; Close gives the answer back.
type released struct {
	io.Reader
	up *fasthttp.Response
}

func (r *released) Close() error {
	r.up.CloseBodyStream()
	fasthttp.ReleaseResponse(r.up)
	return nil
}

// askTokenproxy asks through tokenproxy's own client (internal/proxy's
// Client, on net/http's types), as a data plane on fasthttp's server that
// keeps tokenproxy's transport would: the caller's headers, stripped, go
// into an http.Request, and the answer's status and headers come back to
// ctx.
func (s *sketch) askTokenproxy(asking context.Context, ctx *fasthttp.RequestCtx, x *exchange, path []byte, auth string) (io.ReadCloser, int, error) {
	req := &ctx.Request
	strip(&req.Header)
	h := make(http.Header, req.Header.Len()+3)
	for k, v := range req.Header.All() {
		if !sameName(k, "Host") {
			h[string(k)] = append(h[string(k)], string(v))
		}
	}
	h["Authorization"] = []string{auth}
	h["Hgem-Api-Key"] = []string{s.apiKey}
	h["X-Request-Id"] = []string{x.id}
	target, err := url.ParseRequestURI(string(path))
	if err != nil {
		return nil, 0, err
	}
	target.Scheme, target.Host = "https", s.up
	out := (&http.Request{Method: string(req.Header.Method()), URL: target, Header: h, Host: s.up,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Body: http.NoBody, ContentLength: int64(req.Header.ContentLength())}).WithContext(asking)
	if req.IsBodyStream() {
		out.Body = io.NopCloser(ctx.RequestBodyStream())
	} else if len(req.Body()) > 0 {
		out.Body = io.NopCloser(bytes.NewReader(req.Body()))
	}
	resp, err := s.ours.RoundTripUntil(out, time.Now().Add(30*time.Second))
	if err != nil {
		return nil, 0, err
	}
	rh := &ctx.Response.Header
	rh.SetNoDefaultContentType(true)
	rh.SetStatusCode(resp.StatusCode)
	for k, vs := range resp.Header {
		if sameName([]byte(k), "Connection") {
			// fasthttp keeps one Connection header: every list the
			// upstream sent goes into it, for cleanAnswer to read.
			rh.Set(k, strings.Join(vs, ", "))
			continue
		}
		for _, v := range vs {
			rh.Add(k, v)
		}
	}
	x.status = resp.StatusCode
	return resp.Body, int(resp.ContentLength), nil
}

// fail answers with the contract's error shape (CONTRACT.md §4).
func (x *exchange) fail(ctx *fasthttp.RequestCtx, status int, code, msg, upstream string) (io.ReadCloser, int) {
	ctx.Response.SetStatusCode(status)
	ctx.Response.Header.Set("Tokenproxy-Error", code)
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyString(`{"error":"` + code + `","message":"` + msg + `","upstream":"` + upstream + `"}`)
	x.status, x.code = status, code
	return nil, 0
}

// watchCaller watches for the caller going away while the upstream is
// asked, as net/http's server does with a goroutine reading the connection
// in the background (tokenproxy then logs 499 and stops its upstream
// work). fasthttp gives no such signal (research/fasthttp, request Q5), so
// a goroutine waits until the caller's socket is readable and peeks at it:
// end of stream or a reset is a caller gone, bytes are a pipelined request.
// With after > 0 the watch starts only once the upstream has taken that
// long, so that a quick answer costs a timer instead of a goroutine, a
// system call and a wake-up, and a caller gone is noticed at most that
// much later. left ends the watch and reports whether the caller left; ended
// is closed when the watch has ended, by itself (the caller left, or sent
// more) or by left. onGone is called, from the watch's goroutine, when
// the caller is seen gone.
func watchCaller(ctx *fasthttp.RequestCtx, after time.Duration, onGone func()) (left func() bool, ended <-chan struct{}) {
	never := func() bool { return false }
	sc, ok := ctx.Conn().(syscall.Conn)
	if !ok {
		return never, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return never, nil
	}
	var gone atomic.Bool
	done := make(chan struct{})
	watch := func() {
		defer close(done)
		var b [1]byte
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return rerr != syscall.EAGAIN
		})
		if err == nil && (rerr == nil && n == 0 || rerr == syscall.ECONNRESET) {
			gone.Store(true)
			onGone()
		}
	}
	var timer *time.Timer
	if after > 0 {
		timer = time.AfterFunc(after, watch)
	} else {
		go watch()
	}
	return func() bool {
		if timer != nil && timer.Stop() {
			return false // the watch never started
		}
		// A read deadline in the past ends rc.Read, or makes it return at
		// once if the watch has not reached it yet; fasthttp sets its own
		// before it reads the next request.
		ctx.SetReadDeadline(time.Now())
		<-done
		return gone.Load()
	}, done
}

// check makes the request checks net/http's server makes and fasthttp's
// does not (measured at stop 16 through tokenproxy's end-to-end suite):
// the version in the request line, header names (RFC 9110 §5.1, token) and
// values (§5.5, no control characters), and transfer codings (RFC 9112
// §6.1: net/http takes only chunked). It returns 0 for a request that
// passes, else the status net/http answers with and why.
func check(h *fasthttp.RequestHeader) (int, string) {
	switch string(h.Protocol()) {
	case "HTTP/1.1", "HTTP/1.0":
	default:
		return fasthttp.StatusHTTPVersionNotSupported, "unsupported HTTP version"
	}
	// The raw lines: fasthttp's parsed view drops a Transfer-Encoding
	// other than chunked (it reads such a body until the connection
	// closes) and trims names.
	for line := range bytes.SplitSeq(h.RawHeaders(), []byte("\r\n")) {
		if len(line) == 0 {
			continue
		}
		k, v, _ := bytes.Cut(line, []byte(":"))
		v = bytes.Trim(v, " \t")
		switch {
		case !token(k):
			return fasthttp.StatusBadRequest, "invalid header name"
		case !fieldValue(v):
			return fasthttp.StatusBadRequest, "invalid header value"
		case bytes.EqualFold(k, []byte("Transfer-Encoding")) && !bytes.EqualFold(v, []byte("chunked")):
			return fasthttp.StatusNotImplemented, "unsupported transfer encoding"
		}
	}
	return 0, ""
}

// hopByHop are the headers that concern one connection (RFC 9110 §7.6.1).
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Te", "Trailer", "Upgrade"}

// stripped are the caller's headers tokenproxy removes besides hop-by-hop
// ones and X-Forwarded-*: credentials and who-called headers
// (internal/proxy callerHeaders, with HGEM's key), and the caller's
// X-Request-Id, set again with the request's id.
var stripped = []string{"Authorization", "Proxy-Authorization", "Forwarded", "X-Original-URL", "X-Rewrite-URL",
	"X-Real-IP", "True-Client-IP", "Client-IP", "X-Client-IP", "X-Original-Host", "X-Host", "hgem-api-key", "X-Request-Id"}

// strip removes the caller's headers that must not reach the upstream.
// Every name is compared here, in any case and "_" read as "-", rather
// than looked up: a data plane passing names on as sent keeps them as sent
// (DisableHeaderNamesNormalizing, as the HostClient path does), and
// fasthttp's lookups are then case-sensitive.
func strip(h *fasthttp.RequestHeader) {
	removeHopByHop(h, func(k []byte) bool {
		return len(k) >= 12 && sameName(k[:12], "x-forwarded-") || anyName(k, stripped)
	})
}

// cleanAnswer removes from the upstream's answer the hop-by-hop headers,
// its X-Request-Id (the request's is set) and any Tokenproxy-Error (which
// only tokenproxy may send, CONTRACT.md §4), in whatever case they came.
func cleanAnswer(h *fasthttp.ResponseHeader) {
	removeHopByHop(h, func(k []byte) bool {
		return sameName(k, "X-Request-Id") || sameName(k, "Tokenproxy-Error")
	})
}

// header is what fasthttp's request and response headers share.
type header interface {
	All() iter.Seq2[[]byte, []byte]
	Del(key string)
}

// removeHopByHop removes from h the hop-by-hop headers, those its
// Connection headers list (RFC 9110 §7.6.1), and those drop names, all
// compared as sameName does.
func removeHopByHop(h header, drop func(k []byte) bool) {
	var listed, gone []string
	for k, v := range h.All() {
		if sameName(k, "Connection") {
			listed = connectionListed(v, listed)
		}
	}
	for k := range h.All() {
		if anyName(k, hopByHop) || anyName(k, listed) || drop(k) {
			gone = append(gone, string(k))
		}
	}
	for _, k := range gone {
		h.Del(k)
	}
}

// connectionListed appends the header names a Connection header's value
// lists (RFC 9110 §7.6.1).
func connectionListed(v []byte, names []string) []string {
	for c := range bytes.SplitSeq(v, []byte(",")) {
		if c = bytes.TrimSpace(c); len(c) > 0 {
			names = append(names, string(c))
		}
	}
	return names
}

func anyName(k []byte, names []string) bool {
	for _, n := range names {
		if sameName(k, n) {
			return true
		}
	}
	return false
}

// requestID is the caller's X-Request-Id when it sent exactly one of 1 to
// 128 visible ASCII characters, else a new random UUID (RFC 9562 §5.4), as
// tokenproxy's.
func requestID(h *fasthttp.RequestHeader) string {
	var v []byte
	n := 0
	for k, val := range h.All() {
		if sameName(k, "X-Request-Id") {
			v, n = val, n+1
		}
	}
	ok := n == 1 && len(v) > 0 && len(v) <= 128
	for _, c := range v {
		ok = ok && c >= 0x21 && c <= 0x7e
	}
	if ok {
		return string(v)
	}
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	hex.Encode(s[9:13], b[4:6])
	hex.Encode(s[14:18], b[6:8])
	hex.Encode(s[19:23], b[8:10])
	hex.Encode(s[24:], b[10:])
	s[8], s[13], s[18], s[23] = '-', '-', '-', '-'
	return string(s[:])
}

func token(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		if c >= 0x80 || !tchar[c] {
			return false
		}
	}
	return true
}

// tchar marks RFC 9110 §5.6.2's token characters.
var tchar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func fieldValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// sameName compares header names ignoring ASCII case, "_" read as "-".
func sameName(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := lower(b[i]), lower(s[i])
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

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
