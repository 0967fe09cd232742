package proxy

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/broker"
)

// The Tokenproxy-Error codes (CONTRACT.md §4).
const (
	CodeBadRequest      = "bad_request"
	CodeHostNotAllowed  = "host_not_allowed"
	CodeUnknownUpstream = "unknown_upstream"
	CodeConnect         = "connect_not_supported"
	CodePathNotAllowed  = "path_not_allowed"
	CodeUnreachable     = "upstream_unreachable"
	CodeUpstreamTimeout = "upstream_timeout"
	CodeTokenEndpoint   = broker.CodeTokenEndpoint
	CodeUnavailable     = broker.CodeUnavailable
)

// The codes a request can get, by whether it was routed to an upstream:
// the zero series of tokenproxy_proxy_errors_total (CONTRACT.md §5).
var (
	UpstreamErrors   = []string{CodePathNotAllowed, CodeTokenEndpoint, CodeUnreachable, CodeUnavailable, CodeUpstreamTimeout, CodeBadRequest}
	NoUpstreamErrors = []string{CodeUnknownUpstream, CodeHostNotAllowed, CodeConnect, CodeBadRequest}
)

// Error is a response tokenproxy makes itself (CONTRACT.md §4).
type Error struct {
	Status     int
	Code       string
	Msg        string
	Upstream   string
	RetryAfter time.Duration // sent as Retry-After when positive
}

func (e *Error) Error() string { return e.Code + ": " + e.Msg }

func badRequest(msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeBadRequest, Msg: msg}
}

// write answers x's caller with e: the Tokenproxy-Error header and the
// JSON body. Every answer tokenproxy makes goes through here, so that the
// request's log line and metrics know its code.
func (e *Error) write(x *exchange) {
	x.status, x.errCode = e.Status, e.Code
	resp := &x.ctx.Response
	h := &resp.Header
	h.Set("Tokenproxy-Error", e.Code)
	h.SetContentType("application/json")
	h.Set("Cache-Control", "no-store")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	h.Set(requestIDHeader, x.id)
	body, _ := json.Marshal(map[string]string{"error": e.Code, "message": e.Msg, "upstream": e.Upstream})
	resp.SetStatusCode(e.Status)
	resp.SetBody(append(body, '\n'))
	x.bytes = int64(len(body) + 1)
}
