package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/url"
	"strconv"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
)

// checkRequest makes, on a request fasthttp's server has parsed, the checks
// net/http's server makes and fasthttp's does not, so that a data plane on
// fasthttp refuses every request net/http's would, with the same status
// (Go 1.26: net/http/server.go conn.readRequest and conn.serve,
// request.go readRequest, transfer.go readTransfer, net/textproto
// readMIMEHeader). It reads the header lines as sent (h.RawHeaders(); names
// compared in any case, with DisableHeaderNamesNormalizing or without)
// because fasthttp's parsed view merges and drops fields: it hides a
// Transfer-Encoding: identity.
//
// It returns 0 and "" for a request net/http would serve, else the status
// net/http answers with and a short reason that names the problem, never a
// header's value (it may be a credential). In net/http's order, so that a
// request with several faults gets net/http's status:
//
//   - 400: a method that is not a token, a request-target
//     url.ParseRequestURI refuses (RFC 9112 §3); a header line without a
//     colon, a name that is not a token (RFC 9110 §5.1), a value with a
//     control character (§5.5), a first header line starting with white
//     space, several Host fields (RFC 9112 §3.2).
//   - 501: Transfer-Encoding other than one field of exactly "chunked" on
//     HTTP/1.1 (RFC 9112 §6.1; net/http knows no other coding).
//   - 400: Content-Length fields that differ, or one that is not a decimal
//     number (RFC 9110 §8.6); a chunked request's Trailer naming
//     Transfer-Encoding, Trailer or Content-Length (RFC 9110 §6.6.2).
//   - 505: an HTTP version other than 1.x (RFC 9110 §6.2), the HTTP/2
//     preface included (net/http hands PRI * HTTP/2.0 to the handler).
//   - 400: no Host on HTTP/1.1 other than CONNECT, or an invalid one
//     (RFC 9112 §3.2); a space in a header name.
//   - 417: an Expect other than 100-continue (RFC 9110 §10.1.1).
//   - 400: an obs-folded line, which net/http joins and serves: fasthttp
//     might read the lines otherwise, and RFC 9112 §5.2 lets a server
//     refuse them.
//
// It also refuses Transfer-Encoding on HTTP/1.0 (400), which net/http
// ignores (RFC 9112 §6.1 calls it faulty framing); fasthttp refuses that
// itself first. Header size (431), the request line's shape and a Host
// its URI cannot hold are fasthttp's own checks (ReadBufferSize,
// parseFirstLine; parseErrorStatus gives their statuses). Where the two
// servers still answer otherwise, and why that is harmless:
// fastcheck_test.go's allowedDifferences.
func checkRequest(h *fasthttp.RequestHeader) (status int, reason string) {
	proto := h.Protocol() // "HTTP/d.d": fasthttp refuses any other shape
	if len(proto) != len("HTTP/1.1") {
		return fasthttp.StatusBadRequest, "malformed HTTP version"
	}
	major, minor := proto[5]-'0', proto[7]-'0'
	if !token(h.Method()) {
		return fasthttp.StatusBadRequest, "invalid method"
	}
	target := string(h.RequestURI())
	if bytes.Equal(h.Method(), []byte("CONNECT")) && (target == "" || target[0] != '/') {
		target = "http://" + target // authority-form, read as net/http does
	}
	if _, err := url.ParseRequestURI(target); err != nil {
		return fasthttp.StatusBadRequest, "invalid request target"
	}

	var f fields
	if reason := f.read(h.RawHeaders()); reason != "" {
		return fasthttp.StatusBadRequest, reason
	}
	if f.hosts > 1 {
		return fasthttp.StatusBadRequest, "several Host fields"
	}
	// net/http ignores Transfer-Encoding on HTTP/1.0 (and reads 0.0 as 1.1).
	proto11 := major > 1 || major == 1 && minor >= 1 || major == 0 && minor == 0
	chunked := false
	if len(f.te) > 0 {
		if !proto11 {
			return fasthttp.StatusBadRequest, "Transfer-Encoding on HTTP/1.0"
		}
		if len(f.te) > 1 || !bytes.EqualFold(f.te[0], []byte("chunked")) {
			return fasthttp.StatusNotImplemented, "unsupported transfer encoding"
		}
		chunked = true
	}
	for _, cl := range f.cl {
		if !bytes.Equal(cl, f.cl[0]) {
			return fasthttp.StatusBadRequest, "differing Content-Length fields"
		}
	}
	if len(f.cl) > 0 {
		if _, err := strconv.ParseUint(string(f.cl[0]), 10, 63); err != nil {
			return fasthttp.StatusBadRequest, "invalid Content-Length"
		}
	}
	if chunked && f.badTrailer {
		return fasthttp.StatusBadRequest, "invalid Trailer"
	}
	if major != 1 {
		return fasthttp.StatusHTTPVersionNotSupported, "unsupported HTTP version"
	}
	if f.hosts == 0 && minor >= 1 && string(h.Method()) != "CONNECT" {
		return fasthttp.StatusBadRequest, "missing Host"
	}
	if f.hosts == 1 && !httpguts.ValidHostHeader(string(f.host)) {
		return fasthttp.StatusBadRequest, "invalid Host"
	}
	if f.spaceInName {
		return fasthttp.StatusBadRequest, "invalid header name"
	}
	if len(f.expect) > 0 && !hasToken(f.expect, "100-continue") {
		return fasthttp.StatusExpectationFailed, "unsupported Expect"
	}
	if f.folded {
		// net/http would serve it. fasthttp may read the lines otherwise,
		// and RFC 9112 §5.2 lets a server refuse obs-fold with 400.
		return fasthttp.StatusBadRequest, "folded header line"
	}
	return 0, ""
}

// fields is what checkRequest needs from the header lines, values trimmed
// of white space as net/textproto trims them.
type fields struct {
	hosts       int
	host        []byte
	te, cl      [][]byte
	expect      []byte // the first Expect's value; nil when none
	badTrailer  bool
	spaceInName bool // net/textproto takes it, net/http's server refuses it later
	folded      bool
}

// read walks the raw header lines (LF or CRLF ended, RFC 9112 §2.2) and
// returns why net/textproto would refuse them, or "".
func (f *fields) read(raw []byte) string {
	var buf [32][]byte // most requests' lines, kept off the heap
	lines := buf[:0]
	for len(raw) > 0 {
		line, rest, _ := bytes.Cut(raw, []byte("\n"))
		raw = rest
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // the blank line ending the header
		}
		if line[0] != ' ' && line[0] != '\t' {
			lines = append(lines, line)
			continue
		}
		if len(lines) == 0 {
			return "header starting with white space"
		}
		// obs-fold: joined as net/textproto joins it, so that every
		// other check sees what net/http sees; refused at the end.
		prev := trimSpaceTab(lines[len(lines)-1])
		lines[len(lines)-1] = append(append(prev[:len(prev):len(prev)], ' '), trimSpaceTab(line)...)
		f.folded = true
	}
	for _, line := range lines {
		k, v, ok := bytes.Cut(trimSpaceTab(line), []byte(":"))
		if !ok {
			return "header line without a colon"
		}
		spaced := false
		for _, c := range k {
			if c == ' ' {
				spaced = true
			} else if !httpguts.IsTokenRune(rune(c)) {
				return "invalid header name"
			}
		}
		if len(k) == 0 {
			return "invalid header name"
		}
		for _, c := range v {
			if c < ' ' && c != '\t' || c == 0x7f {
				return "invalid header value"
			}
		}
		v = trimSpaceTab(v)
		f.spaceInName = f.spaceInName || spaced
		switch {
		case spaced: // not canonicalized, so no field net/http knows
		case bytes.EqualFold(k, []byte("Host")):
			f.hosts++
			f.host = v
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			f.te = append(f.te, v)
		case bytes.EqualFold(k, []byte("Content-Length")):
			f.cl = append(f.cl, v)
		case bytes.EqualFold(k, []byte("Expect")):
			if f.expect == nil {
				f.expect = append([]byte{}, v...)
			}
		case bytes.EqualFold(k, []byte("Trailer")):
			for name := range bytes.SplitSeq(v, []byte(",")) {
				name = trimSpaceTab(name)
				f.badTrailer = f.badTrailer || bytes.EqualFold(name, []byte("Transfer-Encoding")) ||
					bytes.EqualFold(name, []byte("Trailer")) || bytes.EqualFold(name, []byte("Content-Length"))
			}
		}
	}
	return ""
}

func token(b []byte) bool {
	for _, c := range b {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return len(b) > 0
}

func trimSpaceTab(b []byte) []byte {
	return bytes.Trim(b, " \t")
}

// hasToken reports whether v holds t, ASCII case ignored, between the start
// or end of v, spaces, tabs or commas: net/http's own reading of Expect.
func hasToken(v []byte, t string) bool {
	for i := 0; i+len(t) <= len(v); i++ {
		if (i == 0 || boundary(v[i-1])) && (i+len(t) == len(v) || boundary(v[i+len(t)])) &&
			bytes.EqualFold(v[i:i+len(t)], []byte(t)) {
			return true
		}
	}
	return false
}

func boundary(c byte) bool { return c == ' ' || c == ',' || c == '\t' }

// parseErrorStatus is the status for a request fasthttp's own parser
// refused (a fasthttp.Server's ErrorHandler), as net/http's server answers
// the same fault: 431 for a header beyond ReadBufferSize, 501 for a
// transfer coding other than chunked (RFC 9112 §6.1; also fasthttp's answer
// to Transfer-Encoding on HTTP/1.0), 408 for a read timeout, else 400. The
// server needs SecureErrorLogMessage, without which fasthttp returns
// untyped errors quoting the request, credentials included.
func parseErrorStatus(err error) int {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		return fasthttp.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, fasthttp.ErrUnsupportedTransferEncoding):
		return fasthttp.StatusNotImplemented
	case errors.As(err, &ne) && ne.Timeout():
		return fasthttp.StatusRequestTimeout
	}
	return fasthttp.StatusBadRequest
}

// wantsClose reports whether net/http's server would close the connection
// after answering this request because of its Connection fields: one holds
// "close" between spaces, tabs or commas, as net/http's Request.wantsClose
// reads the first (RFC 9110 §7.6.1 lists tokens by commas only; fasthttp
// reads it so and would serve what follows). Any field is read so, which
// closes at worst sooner than net/http. The data plane closes when it is
// true (fasthttp.RequestCtx.SetConnectionClose).
func wantsClose(h *fasthttp.RequestHeader) bool {
	for line := range bytes.SplitSeq(h.RawHeaders(), []byte("\n")) {
		k, v, _ := bytes.Cut(bytes.TrimSuffix(line, []byte("\r")), []byte(":"))
		if bytes.EqualFold(trimSpaceTab(k), []byte("Connection")) && hasToken(trimSpaceTab(v), "close") {
			return true
		}
	}
	return false
}
