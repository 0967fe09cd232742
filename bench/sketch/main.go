// Command sketch is a measurement, not a product: tokenproxy's per-request
// work on valyala/fasthttp's server and HostClient, so that bench/run.sh
// can show side by side what moving the data plane to fasthttp would buy
// (issue 12; BENCHMARKS.md, "What a faster data plane would cost").
//
//	sketch -listen 127.0.0.1:PORT -upstream HOST:PORT -ca FILE -token TOKEN -api-key KEY
//
// Per request it does what tokenproxy's data plane does on a 1 KiB GET:
// the request checks net/http's parser makes and fasthttp's does not
// (check), the route by the path's first segment, the contract's JSON
// error for an unknown route, CONNECT and TRACE, an X-Request-Id kept or
// generated (a UUID) and set both ways, the caller's credentials,
// X-Forwarded-* and hop-by-hop headers removed, Authorization and
// hgem-api-key injected (static values, as the peers inject: tokenproxy's
// token lookup is an atomic load), the answer streamed back, the same
// three Prometheus series per request, and the same JSON request log line,
// batched as tokenproxy batches it (64 KiB or 100 ms), on stderr.
//
// It leaves out what a 1 KiB GET does not reach: request bodies and their
// replay after a 401, upgrades, trailers, 1xx answers, Location rewriting,
// forward-proxy mode, tracing, reloads, draining.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	s := newSketch(*up, &tls.Config{RootCAs: roots, ServerName: *serverName, NextProtos: []string{"http/1.1"}}, *token, *apiKey, prometheus.NewRegistry())
	srv := &fasthttp.Server{
		Handler:               s.serve,
		StreamRequestBody:     true,
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		NoDefaultContentType:  true,
		ReadBufferSize:        64 << 10, // tokenproxy's MaxHeaderBytes
		IdleTimeout:           2 * time.Minute,
	}
	if err := srv.ListenAndServe(*listen); err != nil {
		log.Fatalf("sketch: %v", err)
	}
}

// sketch is the data plane's state: one upstream, its metrics and the log.
type sketch struct {
	up       string
	client   *fasthttp.HostClient
	auth     string // "Bearer " + token
	apiKey   string
	log      *zap.Logger
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
}

// writeOnly is stderr whose Sync does nothing (fsync(2) on a pipe fails).
type writeOnly struct{ *os.File }

func (writeOnly) Sync() error { return nil }

func newSketch(up string, tlsConfig *tls.Config, token, apiKey string, reg prometheus.Registerer) *sketch {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey, enc.EncodeTime = "ts", zapcore.ISO8601TimeEncoder
	out := &zapcore.BufferedWriteSyncer{WS: writeOnly{os.Stderr}, Size: 64 << 10, FlushInterval: 100 * time.Millisecond}
	s := &sketch{
		up: up,
		client: &fasthttp.HostClient{Addr: up, IsTLS: true, TLSConfig: tlsConfig, MaxConns: 64,
			StreamResponseBody: true, ReadTimeout: 30 * time.Second, DisableHeaderNamesNormalizing: true},
		auth:   "Bearer " + token,
		apiKey: apiKey,
		log:    zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), out, zapcore.InfoLevel)).Named("proxy"),
		// The shapes of tokenproxy's own series (internal/metrics).
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenproxy_requests_total"}, []string{"upstream", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tokenproxy_request_duration_seconds",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}, []string{"upstream"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tokenproxy_requests_in_flight"}, []string{"upstream"}),
	}
	reg.MustRegister(s.requests, s.duration, s.inFlight)
	return s
}

func (s *sketch) serve(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	req := &ctx.Request
	id := requestID(req.Header.Peek("X-Request-Id"))
	status, code := s.forward(ctx, id)
	ctx.Response.Header.Set("X-Request-Id", id)
	d := time.Since(start)
	s.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	s.duration.WithLabelValues(route).Observe(d.Seconds())
	if ce := s.log.Check(zapcore.InfoLevel, "request"); ce != nil {
		f := []zap.Field{zap.String("upstream", route), zap.ByteString("method", req.Header.Method()),
			zap.ByteString("path", req.URI().PathOriginal()), zap.Int("status", status), zap.Duration("duration", d),
			zap.String("request_id", id), zap.Duration("upstream_latency", d), zap.Int("response_bytes", ctx.Response.Header.ContentLength())}
		if code != "" {
			f = append(f, zap.String("error", code))
		}
		ce.Write(f...)
	}
}

// forward answers ctx, from the upstream or with an error of the
// contract's shape, and returns the status and the error code ("" for the
// upstream's answer).
func (s *sketch) forward(ctx *fasthttp.RequestCtx, id string) (int, string) {
	req := &ctx.Request
	if status, msg := check(&req.Header); status != 0 {
		// fasthttp framed the body by its own reading of these headers
		// (a Transfer-Encoding: identity body as empty, its bytes as the
		// next request): nothing more may be read from this connection.
		ctx.SetConnectionClose()
		return fail(ctx, status, "bad_request", msg, "")
	}
	switch string(req.Header.Method()) {
	case fasthttp.MethodConnect:
		return fail(ctx, fasthttp.StatusMethodNotAllowed, "connect_not_supported", "CONNECT is not supported", "")
	case fasthttp.MethodTrace:
		return fail(ctx, fasthttp.StatusBadRequest, "bad_request", "TRACE is not forwarded", "")
	}
	uri := req.Header.RequestURI()
	if len(uri) < len(route)+2 || uri[0] != '/' || string(uri[1:len(route)+1]) != route || uri[len(route)+1] != '/' {
		return fail(ctx, fasthttp.StatusNotFound, "unknown_upstream", "no upstream by that name", "")
	}
	if req.Header.ContentLength() != 0 && len(req.Header.Peek("Transfer-Encoding")) > 0 {
		ctx.Response.SetConnectionClose() // RFC 9112 §6.1
	}
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	req.Header.CopyTo(&out.Header)
	out.SetRequestURI("https://" + s.up + string(uri[len(route)+1:]))
	out.Header.SetHost(s.up)
	strip(&out.Header)
	out.Header.Set("Authorization", s.auth)
	out.Header.Set("hgem-api-key", s.apiKey)
	out.Header.Set("X-Request-Id", id)
	if !req.IsBodyStream() && len(req.Body()) > 0 {
		out.SetBodyRaw(req.Body())
	} else if req.IsBodyStream() {
		out.SetBodyStream(ctx.RequestBodyStream(), req.Header.ContentLength())
	}
	inFlight := s.inFlight.WithLabelValues(route)
	inFlight.Inc()
	defer inFlight.Dec()
	var left func() bool
	if !req.IsBodyStream() && len(req.Body()) == 0 {
		left = watchCaller(ctx)
	}
	err := s.client.Do(out, &ctx.Response)
	if left != nil && left() {
		return 499, "" // as tokenproxy logs a caller gone
	}
	if err != nil {
		ctx.Response.Reset()
		return fail(ctx, fasthttp.StatusBadGateway, "upstream_unreachable", "the upstream could not be reached", route)
	}
	for _, h := range hopByHop {
		ctx.Response.Header.Del(h)
	}
	return ctx.Response.StatusCode(), ""
}

// watchCaller watches for the caller going away while the upstream is
// asked, as net/http's server does with a goroutine reading the connection
// in the background (tokenproxy then logs 499 and stops its upstream
// work). fasthttp gives no such signal (research/fasthttp, request Q5), so
// a goroutine waits until the caller's socket is readable and peeks at it:
// end of stream or a reset is a caller gone, bytes are a pipelined request.
// The returned func ends the watch and reports whether the caller left.
func watchCaller(ctx *fasthttp.RequestCtx) (left func() bool) {
	sc, ok := ctx.Conn().(syscall.Conn)
	if !ok {
		return func() bool { return false }
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return func() bool { return false }
	}
	var gone atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return rerr != syscall.EAGAIN
		})
		gone.Store(err == nil && (rerr == nil && n == 0 || rerr == syscall.ECONNRESET))
	}()
	return func() bool {
		ctx.SetReadDeadline(time.Now()) // ends rc.Read; fasthttp sets its own before the next request
		<-done
		return gone.Load()
	}
}

// fail answers with the contract's error shape (CONTRACT.md §4).
func fail(ctx *fasthttp.RequestCtx, status int, code, msg, upstream string) (int, string) {
	ctx.Response.SetStatusCode(status)
	ctx.Response.Header.Set("Tokenproxy-Error", code)
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyString(`{"error":"` + code + `","message":"` + msg + `","upstream":"` + upstream + `"}`)
	return status, code
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
		case equalFold(k, "Transfer-Encoding") && !equalFold(v, "chunked"):
			return fasthttp.StatusNotImplemented, "unsupported transfer encoding"
		}
	}
	return 0, ""
}

// hopByHop are the headers that concern one connection (RFC 9110 §7.6.1).
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Te", "Trailer", "Upgrade"}

// stripped are the caller's headers tokenproxy removes besides hop-by-hop
// ones and X-Forwarded-*: credentials and who-called headers
// (internal/proxy callerHeaders, with HGEM's key).
var stripped = []string{"Authorization", "Proxy-Authorization", "Forwarded", "X-Original-URL", "X-Rewrite-URL",
	"X-Real-IP", "True-Client-IP", "Client-IP", "X-Client-IP", "X-Original-Host", "X-Host", "hgem-api-key"}

func strip(h *fasthttp.RequestHeader) {
	var gone []string
	for k := range h.All() {
		if len(k) >= 12 && equalFold(k[:12], "x-forwarded-") {
			gone = append(gone, string(k))
			continue
		}
		for _, s := range stripped {
			if sameName(k, s) {
				gone = append(gone, string(k))
				break
			}
		}
	}
	for c := range bytes.SplitSeq(h.Peek("Connection"), []byte(",")) {
		if c = bytes.TrimSpace(c); len(c) > 0 {
			gone = append(gone, string(c)) // RFC 9110 §7.6.1
		}
	}
	for _, k := range gone {
		h.Del(k)
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
}

// requestID is a caller's X-Request-Id of 1 to 128 visible ASCII
// characters, else a new random UUID (RFC 9562 §5.4).
func requestID(v []byte) string {
	ok := len(v) > 0 && len(v) <= 128
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

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if lower(b[i]) != lower(s[i]) {
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
