package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
)

// The differential test: every raw request goes to a real net/http server
// (the oracle, configured as the daemon's data plane is) and to a real
// fasthttp server whose handler answers checkRequest's status (the
// candidate), both on 127.0.0.1; their answers must match, alone and with
// a second request behind (request smuggling), but for the differences
// listed in allowedDifferences.

// wireAnswer is one response a server sent on a connection, 1xx left out.
type wireAnswer struct {
	status int
	// seen is what the handler saw: method, target, body bytes read and
	// whether the body ended in an error; "" for a refusal.
	seen     string
	fasthttp bool // refused by fasthttp's parser, before checkRequest
}

// wireExchange is what a server did with one connection's bytes.
type wireExchange struct {
	answers []wireAnswer
	hung    bool // still open at the deadline, the caller's side closed
}

func (x wireExchange) String() string {
	var b strings.Builder
	for _, a := range x.answers {
		fmt.Fprintf(&b, "[%d %s", a.status, a.seen)
		if a.fasthttp {
			b.WriteString(" (fasthttp itself)")
		}
		b.WriteString("] ")
	}
	if x.hung {
		b.WriteString("hung")
	} else {
		b.WriteString("closed")
	}
	return b.String()
}

// seen is the handlers' shared record of a request.
func seen(method, target string, n int64, err error) string {
	return fmt.Sprintf("%s %q body=%d err=%v", method, target, n, err != nil)
}

type servers struct{ oracle, candidate string }

// startServers starts the two servers; tb's cleanup stops them.
func startServers(tb testing.TB) servers {
	tb.Helper()
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("listen: %v", err)
		}
		return ln
	}
	oln, cln := listen(), listen()
	// As internal/daemon's data plane server.
	oracle := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			w.Header().Set("X-Seen", seen(r.Method, r.RequestURI, n, err))
			w.Header().Set("Content-Length", "0")
		}),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       5 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(io.Discard, "", 0),
		// As the daemon's: OPTIONS * goes to the handler.
		DisableGeneralOptionsHandler: true,
	}
	// As bench/sketch's, names kept as sent (the credential strip needs them).
	candidate := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if status, _ := checkRequest(&ctx.Request.Header); status != 0 {
				ctx.SetStatusCode(status)
				ctx.SetConnectionClose()
				return
			}
			if wantsClose(&ctx.Request.Header) {
				ctx.SetConnectionClose()
			}
			var n int64
			var err error
			if body := ctx.RequestBodyStream(); body != nil { // nil when there is none
				n, err = io.Copy(io.Discard, body)
			}
			ctx.Response.Header.Set("X-Seen", seen(string(ctx.Method()), string(ctx.RequestURI()), n, err))
		},
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			ctx.SetStatusCode(parseErrorStatus(err))
			ctx.Response.Header.Set("X-Refused-By", "fasthttp")
		},
		SecureErrorLogMessage:         true,    // typed errors, no request bytes in them
		Logger:                        quiet{}, // its default prints raw requests, credentials included
		StreamRequestBody:             true,
		DisableHeaderNamesNormalizing: true,
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		ReadBufferSize:                64 << 10,
		ReadTimeout:                   5 * time.Second,
		IdleTimeout:                   5 * time.Second,
	}
	go oracle.Serve(oln)
	go candidate.Serve(cln)
	tb.Cleanup(func() {
		oracle.Close()
		candidate.Shutdown()
	})
	return servers{oln.Addr().String(), cln.Addr().String()}
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// send writes raw on a new connection, closes its writing side and reads
// every answer until the server closes, within a deadline.
func send(tb testing.TB, addr string, raw []byte) wireExchange {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// A server may refuse and close before it has read everything: a
	// failed write is then not the test's failure.
	conn.Write(raw)
	conn.(*net.TCPConn).CloseWrite()
	var x wireExchange
	br := bufio.NewReader(conn)
	for {
		// Read as answers to HEAD: the handlers' carry no body (an answer to
		// a HEAD may carry no length), and a refusal closes the connection.
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodHead})
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			x.hung = true
		}
		if err != nil {
			return x // EOF or reset: the server closed
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			continue // 100 Continue: fasthttp sends it before any handler
		}
		x.answers = append(x.answers, wireAnswer{resp.StatusCode, resp.Header.Get("X-Seen"), resp.Header.Get("X-Refused-By") != ""})
		if errors.As(err, &ne) && ne.Timeout() {
			x.hung = true
			return x
		}
	}
}

// next is the request sent behind each input: if it is answered differently,
// the two servers framed the input differently.
const next = "GET /next HTTP/1.1\r\nHost: next\r\n\r\n"

// difference is a mismatch allowed between the two servers, and why.
type difference struct {
	name  string
	match func(raw []byte, oracle, candidate wireExchange) bool
	why   string
}

// first is the status of the first answer, 0 if none.
func first(x wireExchange) int {
	if len(x.answers) == 0 {
		return 0
	}
	return x.answers[0].status
}

func refused(x wireExchange) bool { return len(x.answers) == 0 || x.answers[0].status >= 400 }

// byFasthttp reports whether fasthttp's parser refused the first request,
// with one of the statuses given.
func byFasthttp(x wireExchange, status ...int) bool {
	return len(x.answers) > 0 && x.answers[0].fasthttp && slices.Contains(status, x.answers[0].status)
}

// takenByOracle: net/http served the first request, fasthttp refused it.
func takenByOracle(o, c wireExchange) bool { return !refused(o) && refused(c) }

// head returns the request line and the header lines of raw's first
// request, line ends cut.
func head(raw []byte) (line []byte, fields [][]byte) {
	h, _ := splitHead(raw)
	for i, l := range bytes.Split(h, []byte("\n")) {
		l = bytes.TrimSuffix(l, []byte("\r"))
		switch {
		case i == 0:
			line = l
		case len(l) > 0:
			fields = append(fields, l)
		}
	}
	return line, fields
}

// countField counts the header lines named name (any case) whose value
// passes ok.
func countField(raw []byte, name string, ok func(v []byte) bool) int {
	_, fields := head(raw)
	n := 0
	for _, f := range fields {
		k, v, _ := bytes.Cut(f, []byte(":"))
		if bytes.EqualFold(k, []byte(name)) && ok(bytes.TrimSpace(v)) {
			n++
		}
	}
	return n
}

func anyValue([]byte) bool { return true }

// badTrailer: fasthttp's parser refuses a Trailer field its SetTrailer
// refuses.
func badTrailer(v []byte) bool {
	var h fasthttp.RequestHeader
	return h.SetTrailerBytes(v) != nil
}

// badURLHost: fasthttp parses the Host into its URI, refusing bad escapes,
// ports and brackets that net/http's ValidHostHeader lets through.
func badURLHost(v []byte) bool {
	var u fasthttp.URI
	return u.Parse(v, []byte("/")) != nil
}

// faultyField reports whether raw's first request has a header line
// without a colon, a name that is not a token, an empty or invalid Host or
// one a URL cannot hold, several Hosts or none on HTTP/1.1, several
// Content-Lengths or one not a number: faults fasthttp's parser refuses
// itself.
func faultyField(raw []byte) bool {
	line, fields := head(raw)
	if hosts := countField(raw, "Host", anyValue); hosts > 1 || hosts == 0 && bytes.HasSuffix(line, []byte(" HTTP/1.1")) {
		return true
	}
	notNumber := func(v []byte) bool { _, err := strconv.ParseUint(string(v), 10, 63); return err != nil }
	if countField(raw, "Content-Length", anyValue) > 1 || countField(raw, "Content-Length", notNumber) > 0 {
		return true
	}
	for _, f := range fields {
		k, v, ok := bytes.Cut(f, []byte(":"))
		host := bytes.EqualFold(k, []byte("Host"))
		v = bytes.TrimSpace(v)
		if !ok || !httpguts.ValidHeaderFieldName(string(k)) || host && (len(v) == 0 || !httpguts.ValidHostHeader(string(v)) || badURLHost(v)) {
			return true
		}
	}
	return false
}

// allowedDifferences are where fasthttp with checkRequest may answer
// otherwise than net/http. Each either refuses (or closes) where net/http
// serves, or refuses with another status a request net/http refuses too
// (a request with two faults, each server naming the first it meets);
// none serves what net/http refuses, but for a blank line before a request
// line, which RFC 9112 §2.2 recommends skipping.
var allowedDifferences = []difference{
	{"request-target net/http hands on and fasthttp refuses",
		func(raw []byte, o, c wireExchange) bool {
			line, _ := head(raw)
			parts := strings.Split(string(line), " ")
			if len(parts) != 3 {
				return false
			}
			target := parts[1]
			scheme, _, _ := strings.Cut(target, "://")
			return byFasthttp(c, 400) && (target == "*" || !strings.HasPrefix(target, "/") &&
				!strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https"))
		},
		"asterisk-form other than OPTIONS (RFC 9112 §3.2.4), absolute-form other than http:// and https:// and the HTTP/2 " +
			"preface: tokenproxy's handler answers each 400 bad_request (e2e TestMalformedRequests); only the body differs. " +
			"fasthttp checks the target first: 400 where net/http finds another fault first (505 for HTTP/0.0)"},
	{"a request both refuse, fasthttp's parser first",
		func(raw []byte, o, c wireExchange) bool {
			return refused(o) && len(o.answers) > 0 && o.answers[0].status >= 400 &&
				len(c.answers) > 0 && c.answers[0].fasthttp && c.answers[0].status >= 400
		},
		"a request with two faults: fasthttp's parser refuses the first it meets (a target it cannot read, " +
			"\"http://]\", 400, where net/http finds HTTP/0.0 first, 505; an empty Host beside an Expect net/http " +
			"refuses, 417); both refuse, and nothing reaches the handler"},
	{"a header block just over 64 KiB",
		func(raw []byte, o, c wireExchange) bool {
			h, _ := splitHead(raw)
			return byFasthttp(c, 431) && len(h) > 60<<10
		},
		"net/http reads up to MaxHeaderBytes (64 KiB) plus 4,096 bytes of slack (server.go initialReadLimitSize); " +
			"fasthttp's read buffer holds 64 KiB, request line included. fasthttp refuses (431) where net/http serves"},
	{"an unsupported Transfer-Encoding and a fault net/http finds first",
		func(raw []byte, o, c wireExchange) bool {
			return byFasthttp(c, 501) && refused(o) && len(o.answers) > 0 && o.answers[0].status == 400 &&
				countField(raw, "Transfer-Encoding", anyValue) > 0
		},
		"fasthttp refuses the coding (501) as its header scan meets it; net/http first checks every line's syntax " +
			"and the Host count (400). Both refuse"},
	{"a faulty header line and a fault net/http checks first",
		func(raw []byte, o, c wireExchange) bool {
			return byFasthttp(c, 400) && len(o.answers) > 0 && (o.answers[0].status == 505 || o.answers[0].status == 501) &&
				faultyField(raw)
		},
		"fasthttp refuses a bad header line, Host or Content-Length (400) as its scan meets it; net/http checks " +
			"those after its transfer coding (501) or version (505) checks. Both refuse"},
	{"a chunked body fasthttp fails",
		func(raw []byte, o, c wireExchange) bool {
			if len(o.answers) == 0 || len(c.answers) == 0 || countField(raw, "Transfer-Encoding", anyValue) == 0 {
				return false
			}
			oa, ca := o.answers[0], c.answers[0]
			request := func(seen string) string { r, _, _ := strings.Cut(seen, " body="); return r }
			return oa.status == ca.status && strings.HasSuffix(ca.seen, "err=true") && request(oa.seen) == request(ca.seen)
		},
		"the same request, its body failing in fasthttp's chunk reader: a trailer field RFC 9110 §6.5.1 keeps out " +
			"of trailers (Host, Authorization, Content-Length...), which net/http passes on and tokenproxy must not " +
			"forward either, or a chunk size of more than 15 hex digits net/http fails only after reading its data"},
	{"a Host fasthttp's URI parser refuses",
		func(raw []byte, o, c wireExchange) bool {
			return byFasthttp(c, 400) && countField(raw, "Host", badURLHost) > 0
		},
		"a '%' (valid escape or not: RFC 3986 §3.2.2 allows escapes in a host), a bracket or a bad port that " +
			"net/http's character check lets through; no client sends them, and tokenproxy routes by path or by " +
			"the absolute-form target"},
	{"a Trailer field fasthttp refuses",
		func(raw []byte, o, c wireExchange) bool {
			return byFasthttp(c, 400) && (takenByOracle(o, c) || first(o) == 505 || first(o) == 501) &&
				countField(raw, "Trailer", badTrailer) > 0
		},
		"one naming a field RFC 9110 §6.5.1 keeps out of trailers (Authorization, Host, Content-Length...) or a " +
			"name that is no token; net/http only checks three names, and only on a chunked request. Refusing is " +
			"safer for a proxy that must not let a caller's Authorization through"},
	{"several identical Content-Length fields",
		func(raw []byte, o, c wireExchange) bool {
			return takenByOracle(o, c) && byFasthttp(c, 400) && countField(raw, "Content-Length", anyValue) > 1
		},
		"RFC 9110 §8.6 lets a recipient refuse them; no client sends them"},
	{"obs-fold",
		func(raw []byte, o, c wireExchange) bool {
			_, fields := head(raw)
			folded := slices.ContainsFunc(fields, func(f []byte) bool { return f[0] == ' ' || f[0] == '\t' })
			return folded && first(c) == 400 && (!refused(o) || first(o) == 400)
		},
		"RFC 9112 §5.2 lets a server refuse it with 400, and fasthttp and net/http might join the lines differently"},
	{"Transfer-Encoding on a version other than HTTP/1.1",
		func(raw []byte, o, c wireExchange) bool {
			line, _ := head(raw)
			return !bytes.HasSuffix(line, []byte(" HTTP/1.1")) && countField(raw, "Transfer-Encoding", anyValue) > 0 && refused(c)
		},
		"net/http ignores it on HTTP/1.0 (golang/go#12785), RFC 9112 §6.1 calls such framing faulty; fasthttp refuses " +
			"it (501) on any version but 1.1 before it looks at the other fields, where net/http may find another fault first"},
	{"bare LF line ends in the header",
		func(raw []byte, o, c wireExchange) bool {
			h, _ := splitHead(raw)
			return bytes.Contains(bytes.ReplaceAll(h, []byte("\r\n"), nil), []byte("\n")) && byFasthttp(c, 400)
		},
		"RFC 9112 §2.2 only allows a recipient to take them; no HTTP/1.1 client sends them. fasthttp waits for " +
			"the caller's close or its ReadTimeout before refusing (BENCHMARKS.md)"},
	{"Host with an empty value",
		func(raw []byte, o, c wireExchange) bool {
			return takenByOracle(o, c) && byFasthttp(c, 400) && countField(raw, "Host", func(v []byte) bool { return len(v) == 0 }) > 0
		},
		"RFC 9112 §3.2 allows it only without an authority to name; tokenproxy routes by path, no client sends it"},
	{"body shorter than its Content-Length, the caller gone",
		func(raw []byte, o, c wireExchange) bool {
			return len(o.answers) > 0 && strings.HasSuffix(o.answers[0].seen, "err=true") && byFasthttp(c, 400)
		},
		"net/http hands the handler a body that fails; tokenproxy could not forward it either"},
	{"Transfer-Encoding chunked with Content-Length: the connection closed after the answer",
		func(raw []byte, o, c wireExchange) bool {
			return countField(raw, "Content-Length", anyValue) > 0 && countField(raw, "Transfer-Encoding", anyValue) > 0 &&
				len(c.answers) == 1 && len(o.answers) > 1 && c.answers[0] == o.answers[0]
		},
		"RFC 9112 §6.1 wants the connection closed, as tokenproxy's handler does after any chunked request (proxy.go)"},
	{"a version other than HTTP/1.1: fasthttp closes sooner",
		func(raw []byte, o, c wireExchange) bool {
			line, _ := head(raw)
			return !bytes.HasSuffix(line, []byte(" HTTP/1.1")) &&
				(takenByOracle(o, c) || len(c.answers) < len(o.answers) && slices.Equal(c.answers, o.answers[:len(c.answers)]))
		},
		"fasthttp reads HTTP/1.2 to 1.9 as 1.0 (no keep-alive, no Transfer-Encoding) where net/http reads them as " +
			"1.1, and keeps an HTTP/1.0 connection only for an exact \"Connection: keep-alive\" where net/http " +
			"finds the token between spaces too; closing sooner serves nothing net/http would not"},
	{"a last, refused and incomplete request answered by one server only",
		func(raw []byte, o, c wireExchange) bool {
			longer, shorter := o.answers, c.answers
			if len(shorter) > len(longer) {
				longer, shorter = shorter, longer
			}
			// The first request must be answered alike when it is complete.
			r := bytes.TrimLeft(raw, "\r\n")
			complete := bytes.Contains(r, []byte("\n\n")) || bytes.Contains(r, []byte("\n\r\n"))
			return (len(shorter) > 0 || !complete) && len(longer) == len(shorter)+1 && longer[len(shorter)].status >= 400 &&
				slices.Equal(shorter, longer[:len(shorter)]) && o.hung == c.hung
		},
		"bytes the caller sent before closing that are no whole request: net/http closes without a word when fewer " +
			"than 4 arrive (its Peek(4) in conn.serve), fasthttp answers 400, or the other way round for blank lines; " +
			"both serve nothing"},
	{"blank lines before the request line",
		func(raw []byte, o, c wireExchange) bool {
			blank := len(raw) > 0 && (raw[0] == '\r' || raw[0] == '\n')
			for _, extra := range []string{"\n\n\n", "\n\r\n\n", "\n\n\r\n", "\n\r\n\r\n"} {
				blank = blank || bytes.Contains(raw, []byte(extra))
			}
			// net/http refuses the request after the blank line, fasthttp
			// reads it (and maybe more); before it, the two agree.
			i := len(o.answers) - 1
			if blank && i >= 0 && o.answers[i].status == 400 && len(c.answers) > i &&
				slices.Equal(o.answers[:i], c.answers[:i]) {
				return true
			}
			// After a POST net/http skips up to 4 CR or LF bytes, a lone CR
			// too; fasthttp only whole blank lines, and refuses.
			return len(raw) > 0 && (raw[0] == '\r' || raw[0] == '\n') && byFasthttp(c, 400)
		},
		"RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request-line (net/http does only " +
			"after a POST); the request itself is read the same"},
}

// compare returns why the two exchanges differ, or "" when they match or
// differ as allowedDifferences allows.
// The differences are judged from the first answer that differs (or the
// last fasthttp sent, when it closed early): the requests before it were
// framed alike (same bodies read), so they are cut off the input and the
// answers.
func compare(raw []byte, o, c wireExchange) string {
	if same(o, c) {
		return ""
	}
	i := 0
	for i < len(o.answers) && i < len(c.answers) && o.answers[i] == c.answers[i] {
		i++
	}
	if i > 0 && i == len(c.answers) {
		i-- // fasthttp closed after answer i-1: judge that request
	}
	rest := skipRequests(raw, i)
	ro := wireExchange{o.answers[i:], o.hung}
	rc := wireExchange{c.answers[i:], c.hung}
	for _, d := range allowedDifferences {
		if rest != nil && d.match(rest, ro, rc) {
			return ""
		}
	}
	return fmt.Sprintf("net/http: %v\nfasthttp: %v", o, c)
}

// skipRequests returns raw after its first n requests as net/http's
// server frames them, or nil if it cannot.
func skipRequests(raw []byte, n int) []byte {
	r := bytes.NewReader(raw)
	br := bufio.NewReader(r)
	post := false
	for range n {
		if post { // net/http's server skips a CRLF sent after a POST's body
			peek, _ := br.Peek(4)
			k := 0
			for k < len(peek) && (peek[k] == '\r' || peek[k] == '\n') {
				k++
			}
			br.Discard(k)
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return nil
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return nil
		}
		post = req.Method == http.MethodPost
	}
	return raw[len(raw)-r.Len()-br.Buffered():]
}

func same(o, c wireExchange) bool {
	if o.hung != c.hung || len(o.answers) != len(c.answers) {
		return false
	}
	for i := range o.answers {
		if o.answers[i].status != c.answers[i].status || o.answers[i].seen != c.answers[i].seen {
			return false
		}
	}
	return true
}

// differential sends raw alone and with next behind it to both servers.
func differential(t testing.TB, s servers, raw []byte) {
	t.Helper()
	for _, in := range [][]byte{raw, append(raw[:len(raw):len(raw)], next...)} {
		o, c := send(t, s.oracle, in), send(t, s.candidate, in)
		if o.hung {
			t.Fatalf("%q: net/http still open at the deadline", in)
		}
		if why := compare(in, o, c); why != "" {
			t.Errorf("%q:\n%s", in, why)
		}
	}
}

func TestCheckRequestMatchesNetHTTP(t *testing.T) {
	s := startServers(t)
	for _, raw := range seeds() {
		differential(t, s, []byte(raw))
	}
}

func FuzzRequestChecks(f *testing.F) {
	for _, raw := range seeds() {
		head, body := splitHead([]byte(raw))
		f.Add(head, body)
	}
	s := startServers(f)
	f.Fuzz(func(t *testing.T, head, body []byte) {
		differential(t, s, append(head[:len(head):len(head)], body...))
	})
}

// splitHead cuts a raw request after its header's blank line.
func splitHead(raw []byte) (head, body []byte) {
	for _, end := range []string{"\r\n\r\n", "\n\n"} {
		if i := bytes.Index(raw, []byte(end)); i >= 0 {
			return raw[:i+len(end)], raw[i+len(end):]
		}
	}
	return raw, nil
}

// seeds are the requests both tests start from: bench/sketch's check
// inputs, the end-to-end suite's malformed and smuggling requests, and the
// classic smuggling shapes.
func seeds() []string {
	get := func(target string, header ...string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: a\r\n" + strings.Join(append(header, ""), "\r\n") + "\r\n"
	}
	post := func(header, body string) string {
		return "POST /up/p HTTP/1.1\r\nHost: a\r\n" + header + "\r\n" + body
	}
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	const chunks = "5\r\nhello\r\n0\r\n\r\n"
	s := []string{
		// bench/sketch main_test.go
		"GET /up/p HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /up/p HTTP/1.0\r\n\r\n",
		"POST /up/p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET /up/p HTTP/2.0\r\nHost: a\r\n\r\n",
		"GET /up/p HTTP/3.0\r\nHost: a\r\n\r\n",
		"GET /up/p HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
		"GET /up/p HTTP/1.1\r\nHost: a\r\nBad(Name): x\r\n\r\n",
		"GET /up/p HTTP/1.1\r\nHost: a\r\nX-Ok: a\x01b\r\n\r\n",
		"POST /up/p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
		"POST /up/p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"GET /up/p HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer caller\r\nhgem_api_key: k\r\nX-Forwarded-For: 10.0.0.1\r\n" +
			"X_Forwarded_Proto: http\r\nX-Real-IP: 10.0.0.2\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-Request-Id: a\r\nx-request-id: b\r\nAccept: */*\r\n\r\n",
		get("/up/p", "X-Request-Id: "+strings.Repeat("a", 129)),

		// e2e TestMalformedRequests
		"GARBAGE\r\n\r\n",
		"GET /hgem/visits\r\n\r\n",
		"GET  /hgem/visits HTTP/1.1\r\nHost: a\r\n\r\n",
		"G@T /hgem/visits HTTP/1.1\r\nHost: a\r\n\r\n",
		get("/hgem/visits%zz"),
		get("/hgem/visits%2"),
		get("/hgem/a\x01b"),
		get("127.0.0.1:9"),
		get("http://127.0.0.1:9x/api/visits"),
		get("http://127.0.0.1:9/api/visits%zz"),
		"GET /hgem/visits HTTP/1.1\r\nConnection: close\r\n\r\n",
		get("/hgem/visits", "Host: b"),
		"GET /hgem/visits HTTP/1.1\r\nHost: a b\r\n\r\n",
		get("/hgem/visits", "Content-Length: 1", "Content-Length: 2"),
		get("/hgem/visits", "Content-Length: -1"),
		get("/hgem/visits", "Content-Length: x"),
		get("/hgem/visits", "Transfer-Encoding: gzip"),
		get("/hgem/visits", "Expect: something"),
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		get("*"),
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		get("/hgem/visits#frag"),
		get("http:///api/visits"),
		get("http:api/visits"),
		get("mailto:a@127.0.0.1"),
		get("//127.0.0.1/api/visits"),
		get("/hgem/visits", "Connection: Upgrade", "Upgrade: w\xe9bsocket"),
		"TRACE /hgem/visits HTTP/1.1\r\nHost: a\r\n\r\n",
		"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n",
		get("/hgem/echo/\xc3\xa9t\xc3\xa9/%7e"),

		// e2e TestNoOpenProxyOrPathEscape
		get(`/hgem/visits\..\..\connect/token`),
		get("/hgem/visits%00/x"),
		get("/hgem/visits", "Host: user:pw@127.0.0.1"),
		"GET /hgem/visits HTTP/1.0\r\n\r\n",
		get("http://user:pw@127.0.0.1/api/visits"),
		get(`http://127.0.0.1\@127.0.0.2/api/visits`),

		// e2e TestSmuggling, and the classic shapes
		post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", chunks+smuggled),
		post("Content-Length: 100\r\nTransfer-Encoding: chunked\r\n", chunks+smuggled),
		post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", chunks+smuggled),
		post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"+smuggled),
		post("Content-Length: 5, 6\r\n", "hello!"+smuggled),
		post("Content-Length: 6\r\nContent-Length: 5\r\n", "hello!"+smuggled),
		post("Content-Length: 6\r\nContent-Length: 6\r\n", "hello!"+smuggled),
		post("Transfer-Encoding: chunked\r\n", chunks),
		post("Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", "0\r\n\r\n"+smuggled),                // TE.CL
		post("Content-Length: 13\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nSMUGGLED"),                // CL.TE
		post("Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", chunks+smuggled),                  // TE.TE
		post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", chunks+smuggled),            // duplicate
		post("Transfer-Encoding: chunked \r\n", chunks+smuggled),                                         // trailing space
		post("Transfer-Encoding:\tchunked\r\n", chunks+smuggled),                                         // tab
		post("Transfer-Encoding: xchunked\r\n", chunks+smuggled),                                         // prefix
		post("Transfer-Encoding: chunkedx\r\n", chunks+smuggled),                                         // suffix
		post("Transfer-Encoding : chunked\r\n", chunks+smuggled),                                         // space before colon
		post("Transfer-Encoding\t: chunked\r\n", chunks+smuggled),                                        // tab before colon
		post(" Transfer-Encoding: chunked\r\n", chunks+smuggled),                                         // leading space
		post("X: y\r\n Transfer-Encoding: chunked\r\n", chunks+smuggled),                                 // obs-fold
		post("Transfer-Encoding:\r\n chunked\r\n", chunks+smuggled),                                      // folded value
		post("Transfer-Encoding: CHUNKED\r\n", chunks+smuggled),                                          // case
		post("Transfer-Encoding: \"chunked\"\r\n", chunks+smuggled),                                      // quoted
		post("Transfer-Encoding: chunked, identity\r\n", chunks+smuggled),                                // list
		post("Transfer-Encoding: identity, chunked\r\n", chunks+smuggled),                                // list
		post("Transfer-Encoding: identity\r\n", "hello"+smuggled),                                        // identity
		post("Transfer-Encoding: identity\r\nContent-Length: 5\r\n", "hello"+smuggled),                   // identity with CL
		post("Transfer_Encoding: chunked\r\n", chunks+smuggled),                                          // underscore
		post("Transfer-Encoding: \x00chunked\r\n", chunks+smuggled),                                      // NUL
		post("Transfer-Encoding: chunked\x00\r\n", chunks+smuggled),                                      // NUL after
		post("Transfer-Encoding: chunked\r\n", "5;ext\r\nhello\r\n0\r\n\r\n"+smuggled),                   // extension
		post("Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n"+smuggled),                               // bare LF chunks
		post("Transfer-Encoding: chunked\r\n", "0\r\nX-T: 1\r\n\r\n"+smuggled),                           // trailer
		post("Transfer-Encoding: chunked\r\nTrailer: Content-Length\r\n", chunks+smuggled),               // bad trailer key
		post("Content-Length: +5\r\n", "hello"+smuggled),                                                 // sign
		post("Content-Length: 0x5\r\n", "hello"+smuggled),                                                // hex
		post("Content-Length:  5 \r\n", "hello"+smuggled),                                                // spaces
		post("Content-Length: 5\x00\r\n", "hello"+smuggled),                                              // NUL
		post("Content-Length: \r\n", "hello"+smuggled),                                                   // empty
		post("Content-Length: 99999999999999999999\r\n", "hello"),                                        // overflow
		post("Content-Length : 5\r\n", "hello"+smuggled),                                                 // space before colon
		post("Content-Length: 10\r\n", "hello"),                                                          // short body
		"POST /up/p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + smuggled,                  // TE on 1.0
		"POST /up/p HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello" + smuggled, // TE and CL on 1.0
		"POST /up/p HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello" + smuggled,                            // bare LF
		"GET /up/p HTTP/1.1\nHost: a\n\n",                                                                // bare LF
		"GET /up/p HTTP/1.1\r\nHost: a\n\r\n",                                                            // mixed
		"GET /up/p HTTP/1.1\r\nHost: a\r\rX: y\r\n\r\n",                                                  // bare CR
		"GET /up/p HTTP/1.1\r\r\nHost: a\r\n\r\n",                                                        // CR before CRLF
		"GET /up/p HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",                                               // CR in a value
		"GET /up/p HTTP/1.1\r\nHost: a\r\nX\x00: y\r\n\r\n",                                              // NUL in a name
		"GET /up/p\x00 HTTP/1.1\r\nHost: a\r\n\r\n",                                                      // NUL in the target
		"\r\nGET /up/p HTTP/1.1\r\nHost: a\r\n\r\n",                                                      // leading blank line
		"GET /up/p HTTP/1.1 \r\nHost: a\r\n\r\n",                                                         // trailing space
		"GET /up/p HTTP/1.9\r\nHost: a\r\n\r\n",                                                          // minor version
		"GET /up/p HTTP/0.9\r\n\r\n",                                                                     // old
		"GET /up/p http/1.1\r\nHost: a\r\n\r\n",                                                          // lower case
		"GET /up/p HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",                                               // same Host twice
		"GET /up/p HTTP/1.1\r\nHost:\r\n\r\n",                                                            // empty Host
		"GET /up/p HTTP/1.1\r\nHost: %\r\n\r\n",                                                          // bad escape in Host
		"GET /up/p HTTP/1.1\r\nHost: a%41\r\n\r\n",                                                       // escape in Host
		"GET /up/p HTTP/1.1\r\nHost: a_b.example:80\r\n\r\n",                                             // underscore
		"GET /up/p HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",                                                   // IPv6
		"GET /up/p HTTP/1.1\r\nHost: a\r\nX-Very-Long-Name\x80: y\r\n\r\n",                               // obs-text in a name
		"GET /up/p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",                                  // Expect
		post("Expect: 100-continue\r\nContent-Length: 5\r\n", "hello"),                                   // Expect with a body
		get("/up/p", "X: "+strings.Repeat("v", 70<<10)),                                                  // overlong header
		get("/up/p", "X: "+strings.Repeat("v", 63<<10)),                                                  // long header
		get("/up/p", "X: \xff\xfe"),                                                                      // obs-text
		"HEAD /up/p HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /up/p HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		"GET /up/p HTTP/1.1\r\nHost: a\r\nConnection: x close\r\n\r\n",
		"GET /up/p HTTP/1.1\r\nHost: a\r\nTrailer: Authorization\r\n\r\n",
		"GET /up/p HTTP/1.1\r\nHost: a\r\nTrailer: X-Checksum\r\n\r\n",
		post("Transfer-Encoding: chunked\r\nTrailer: Host\r\n", "0\r\nHost: b\r\n\r\n"),
		"GET /up/p HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
		"GET /up/p HTTP/1.0\r\nConnection: x keep-alive\r\n\r\n",
		"GET /up/p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	}
	return s
}

// BenchmarkCheckRequest: a typical proxied request's header.
func BenchmarkCheckRequest(b *testing.B) {
	var h fasthttp.RequestHeader
	h.DisableNormalizing()
	raw := "POST /hgem/api/visits?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\nAccept: */*\r\n" +
		"Content-Type: application/json\r\nContent-Length: 1024\r\nX-Request-Id: abc\r\n\r\n"
	if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if status, reason := checkRequest(&h); status != 0 {
			b.Fatal(reason)
		}
	}
}
