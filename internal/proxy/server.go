package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// ServerOptions are what the daemon's config sets on the data plane's
// listener.
type ServerOptions struct {
	// ReadHeaderTimeout bounds the time to read a request's headers, from
	// its first byte, and a new connection's wait for that byte (config
	// read_header_timeout; net/http's Server.ReadHeaderTimeout).
	ReadHeaderTimeout time.Duration
	// Log receives the server's own errors (a failed accept, a connection
	// that broke), never a request's bytes.
	Log *zap.Logger
}

// Server is the data plane's listener: a fasthttp.Server configured to
// behave towards callers as the net/http server it replaced (Go 1.26
// net/http/server.go), for the requests it refuses, its timeouts and its
// shutdown.
type Server struct {
	fast *fasthttp.Server

	mu      sync.Mutex
	ln      net.Listener
	stopped bool // Shutdown or Close has begun: a later Serve returns at once
	// Served and not hijacked: Close ends them. A connection whose request
	// asked for a hijack holds its handover (hijack) until fasthttp says
	// whether it made it.
	conns map[net.Conn]*handover
}

// idleTimeout is how long a kept-alive connection may wait for its next
// request (net/http's IdleTimeout, as the data plane had it).
const idleTimeout = 2 * time.Minute

// Server returns the data plane's listener serving h; Serve starts it.
func (h *Handler) Server(o ServerOptions) *Server { return newServer(h.Serve, h.answerTarget, o) }

// newServer returns a listener serving h; target, when not nil, may answer
// a request whose target fasthttp's parser refused (answerTarget), and
// reports whether it did. Before h, every request passes
// net/http's checks that fasthttp lacks (checkRequest): one that fails is
// answered as net/http answers it and never reaches h; one that asks to
// close (wantsClose) has its connection closed after h's answer. A panic in
// h is logged and ends that connection, as net/http's server does. A
// hijack h asked for is noted for track (noteHandover).
//
// Timeouts, mapped onto fasthttp v1.78.0's (server.go serveConnCounted):
// ReadTimeout is armed when a connection opens and again at the first
// byte of each request, after a wait for that byte under IdleTimeout on a
// kept-alive connection: net/http's ReadHeaderTimeout and IdleTimeout.
// fasthttp leaves ReadTimeout armed through the body; the handler is
// called with the connection's read deadline cleared, as net/http
// (ReadTimeout 0) leaves the body unbounded, so that it may set its own
// per read. One difference remains: fasthttp reads the first
// min(Content-Length, 8 KiB) bytes of a body before calling the handler
// (http.go readBodyWithStreaming), under read_header_timeout.
func newServer(h fasthttp.RequestHandler, target func(*fasthttp.RequestCtx, error) bool, o ServerOptions) *Server {
	s := &Server{conns: map[net.Conn]*handover{}}
	h = s.noteHandover(h)
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	s.fast = &fasthttp.Server{
		Handler: serveChecked(h, log),
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			if target == nil || !target(ctx, err) {
				answerUnparsed(ctx, err)
			}
		},
		ConnState: s.track,
		Logger:    errorLog{log},
		// Every refused request at debug (errorLog), a too large one too.
		LogAllErrors: true,
		// Without it fasthttp's errors quote the request, credentials
		// included; errorLog withholds what is still quoted.
		SecureErrorLogMessage: true,
		// 64 KiB of request line and headers at most, as net/http's
		// MaxHeaderBytes was set: beyond, ErrSmallBuffer, answered 431.
		ReadBufferSize: 64 << 10,
		// An answer's body goes out through this buffer: with fasthttp's
		// 4 KiB, 13% fewer 64 KiB answers (BENCHMARKS.md, bench/sketch).
		WriteBufferSize: 32 << 10,
		ReadTimeout:     o.ReadHeaderTimeout,
		IdleTimeout:     idleTimeout,
		// Bodies stream both ways (a 100 MiB body grows nothing); fasthttp
		// would buffer them, to 4 MiB.
		StreamRequestBody: true,
		// fasthttp reads min(Content-Length, MaxRequestBodySize, 8 KiB)
		// of a body before the handler, under read_header_timeout: one
		// byte, so that a body's silence is the route's timeout's to cut
		// (callerStream), not the headers'. Nothing larger is refused:
		// beyond this size fasthttp streams.
		MaxRequestBodySize: 1,
		// The write buffer goes back to a pool after each answer, and a
		// new connection's first byte is read without a read buffer: under
		// 64 connections of load, 2-3 MiB less RSS at the same throughput
		// (BENCHMARKS.md). read_header_timeout then counts from a
		// connection's first byte (a silent one is closed after it).
		ReduceMemoryUsage: true,
		// fasthttp would parse a multipart body before the handler.
		DisablePreParseMultipartForm: true,
		// A worker goroutine idle this long ends (fasthttp's default, 10 s,
		// kept a burst's goroutines for up to 20 s).
		MaxIdleWorkerDuration: time.Second,
		// net/http sends no Server, and no Content-Type it was not given
		// but for sniffing (the proxy passes the upstream's on). It does
		// send Date, and so does this.
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		// Answers given while draining close their connection, as
		// net/http's Shutdown does.
		CloseOnShutdown: true,
	}
	return s
}

// Serve accepts connections on ln until Shutdown or Close; it returns nil
// then, else the listener's error. After either has begun it closes ln and
// returns nil at once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	// A Shutdown from here on closes ln: fasthttp's accept then ends.
	return s.fast.Serve(ln)
}

// Shutdown stops accepting, closes idle connections and waits for the
// others to finish their request, until ctx ends; then it returns
// ctx.Err() and leaves them open (Close ends them). Upgraded (hijacked)
// connections are not waited for, as with net/http's Shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	// Closed here as well: fasthttp forgets a Shutdown that comes before
	// Serve has registered its listener (and a Serve that comes after it
	// returns at once).
	s.closeListener()
	if err := s.fast.ShutdownWithContext(ctx); err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return nil // the listener's own Close error, if any: it is closed
}

// Close stops accepting and closes every connection but upgraded ones at
// once, as net/http's Server.Close.
func (s *Server) Close() {
	s.closeListener()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

func (s *Server) closeListener() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.ln != nil {
		s.ln.Close()
	}
}

// track keeps the set Close closes, and runs the dropped end of a
// handover fasthttp did not make (hijack). It runs at every request's
// start and end as well; those states cost a comparison.
func (s *Server) track(c net.Conn, state fasthttp.ConnState) {
	switch state {
	case fasthttp.StateNew:
		s.mu.Lock()
		s.conns[c] = nil
		s.mu.Unlock()
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		s.mu.Lock()
		ho := s.conns[c]
		delete(s.conns, c)
		s.mu.Unlock()
		if ho != nil && state == fasthttp.StateClosed {
			ho.drop()
		}
	}
}

// hijack has fasthttp hand ctx's connection to handler once the request
// handler has returned, fasthttp writing no answer (HijackSetNoResponse),
// and runs dropped instead (when not nil) if fasthttp never calls handler:
// exactly one of the two runs. Every hijack of the data plane goes
// through here.
//
// fasthttp v1.78.0 calls a hijack handler only at the end of
// serveConnCounted (server.go 2993-3016): it flushes what it holds, clears
// the deadlines (c.SetDeadline) and starts `go hijackConnHandler`,
// returning errHijacked. A failure before that, such as SetDeadline on a
// connection that Server.Close (or serveChecked, after a panic) closed
// while the request handler returned, breaks out without the handler; the
// worker then closes the connection and reports StateClosed, and reports
// StateHijacked for errHijacked alone (workerpool.go 225-242). So track
// sees StateClosed for a connection with a handover exactly when fasthttp
// dropped its handler, after serveConnCounted has returned, on the
// goroutine that ran the request handler: dropped may use what the
// request handler left, ctx included, which fasthttp does not reuse (it
// releases a ctx that took a hijack handler only in hijackConnHandler,
// after the handler: server.go 3088-3090, 3134).
//
// Handler and dropped each claim the handover before running, so that
// one runs, once, even were fasthttp to report a closed connection after
// starting the handler; today they never compete.
func hijack(ctx *fasthttp.RequestCtx, handler fasthttp.HijackHandler, dropped func()) {
	ho := &handover{dropped: dropped}
	ctx.SetUserValue(handoverKey{}, ho) // replaces an earlier one: the last Hijack wins
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		if ho.claimed.CompareAndSwap(false, true) {
			handler(c)
		}
	})
}

// handover is one hijack's other end: what its handler would have ended,
// run if fasthttp drops the handler.
type handover struct {
	claimed atomic.Bool
	dropped func()
}

type handoverKey struct{}

func (ho *handover) drop() {
	if ho.dropped != nil && ho.claimed.CompareAndSwap(false, true) {
		ho.dropped()
	}
}

// noteHandover is h, then, for a request that asked for a hijack, its
// handover kept with its connection for track. Deferred, so that it is
// kept after a panic too: serveChecked closes the connection then, and
// fasthttp drops the handler.
func (s *Server) noteHandover(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		defer func() {
			if !ctx.Hijacked() {
				return
			}
			if ho, ok := ctx.UserValue(handoverKey{}).(*handover); ok {
				s.mu.Lock()
				s.conns[ctx.Conn()] = ho
				s.mu.Unlock()
			}
		}()
		h(ctx)
	}
}

// serveChecked is h behind checkRequest and wantsClose, with the read
// deadline of the headers cleared and panics caught.
func serveChecked(h fasthttp.RequestHandler, log *zap.Logger) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if status, reason := checkRequest(&ctx.Request.Header); status != 0 {
			answerPlain(ctx, status, reason)
			return
		}
		closeAfter := wantsClose(&ctx.Request.Header) // before h, which may strip Connection
		_ = ctx.SetReadDeadline(time.Time{})
		defer func() {
			if v := recover(); v != nil {
				// net/http logs the panic and closes the connection; the
				// request is not named (its target may hold a secret).
				log.Error("panic serving a request; its connection is closed",
					zap.String("panic", fmt.Sprint(v)), zap.Stack("stack"), zap.String("remote", ctx.RemoteAddr().String()))
				ctx.Conn().Close()
			}
		}()
		h(ctx)
		if closeAfter {
			ctx.SetConnectionClose()
		}
	}
}

// answerUnparsed is the answer to a request fasthttp's parser refused, as
// net/http answers the same fault (Go 1.26 net/http/server.go conn.serve):
// a timeout or a broken read gets no answer, the connection is closed;
// anything else gets parseErrorStatus's status in net/http's plain shape.
// These requests never reach the handler, so never the contract's JSON.
func answerUnparsed(ctx *fasthttp.RequestCtx, err error) {
	var ne net.Error
	var op *net.OpError
	if errors.As(err, &ne) && ne.Timeout() || errors.As(err, &op) && op.Op == "read" {
		// fasthttp writes its answer after this; on a closed connection
		// the write fails, and the connection is done.
		ctx.Conn().Close()
		return
	}
	answerPlain(ctx, parseErrorStatus(err), "")
}

// answerPlain answers status in net/http's shape for a request it refuses
// before any handler: text/plain, "400 Bad Request" (with ": reason" when
// there is one; net/http's statusError form), "Unsupported transfer
// encoding" for 501, and the connection closed. reason never quotes the
// request.
func answerPlain(ctx *fasthttp.RequestCtx, status int, reason string) {
	body := fmt.Sprintf("%d %s", status, fasthttp.StatusMessage(status))
	switch {
	case status == fasthttp.StatusNotImplemented:
		body = "Unsupported transfer encoding"
	case reason != "":
		body += ": " + reason
	}
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(body)
	ctx.SetConnectionClose()
}

// errorLog is fasthttp's Logger on zap. fasthttp's messages may quote the
// request even with SecureErrorLogMessage (parseFirstLine's "cannot find
// whitespace in the first line of request %q"; RequestCtx.Logger's prefix
// holds the URI), so every string argument is withheld and an error
// becomes what safeError keeps of it.
type errorLog struct{ log *zap.Logger }

func (l errorLog) Printf(format string, args ...any) {
	args = append([]any(nil), args...)
	for i, a := range args {
		switch a := a.(type) {
		case error:
			args[i] = safeError(a)
		case string, []byte:
			args[i] = "(withheld)"
		}
	}
	msg := fmt.Sprintf(format, args...)
	if strings.HasPrefix(format, "error when serving connection") {
		// A request refused (it got its answer) or a caller gone: the
		// caller's doing, which net/http did not log at all.
		l.log.Debug(msg)
		return
	}
	l.log.Warn(msg)
}

// safeError is what may be logged of an error fasthttp's server returned:
// a network error as it is (addresses and a syscall's words), anything
// else as the answer it got.
func safeError(err error) string {
	if op := (*net.OpError)(nil); errors.As(err, &op) {
		return op.Error()
	}
	status := parseErrorStatus(err)
	return fmt.Sprintf("request refused with %d %s (details withheld: they may quote the request)", status, fasthttp.StatusMessage(status))
}
