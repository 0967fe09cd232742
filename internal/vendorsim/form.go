package vendorsim

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Form bends how the simulator writes its own token answers, tokens and refusals alike, the
// ways real token endpoints (and the gateways in front of them) do, without changing what the
// answers say (shared/VENDORS.md, "Token answers as they really come"). Each field is one kind
// of bend; the zero Form is the vendor's documented one. A Fault's answer is written as the
// fault says, not bent.
type Form struct {
	// ContentType labels token answers; "" is the documented application/json, NoContentType
	// sends no Content-Type header at all.
	ContentType string
	BOM         bool     // start the body with a UTF-8 byte-order mark (RFC 8259 §8.1)
	Lifetime    Lifetime // how expires_in (and Prodoscore's refresh_expires_in) are written
	TokenType   string   // the token type as written, where the vendor sends one; "" is "Bearer"
}

// NoContentType as Form.ContentType sends token answers without a Content-Type header.
const NoContentType = "none"

// Lifetime is the JSON form a token lifetime is written in.
type Lifetime int

// The forms of a lifetime of 3600 seconds.
const (
	LifetimeInteger  Lifetime = iota // 3600, the documented form
	LifetimeFraction                 // 3599.5: half a second less, as a decimal fraction
	LifetimeExponent                 // 3.6e3
	LifetimeString                   // "3600"
)

// SetTokenForm bends every token answer from now on; the zero Form restores the documented one.
func (s *Server) SetTokenForm(f Form) {
	s.locked(func() { s.form = f })
}

func (s *Server) tokenForm() Form {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.form
}

// seconds writes a lifetime, in whole seconds, in the form's JSON form.
func (f Form) seconds(d time.Duration) any {
	n := int64(d / time.Second)
	switch f.Lifetime {
	case LifetimeFraction:
		return json.Number(strconv.FormatFloat(float64(n)-0.5, 'f', -1, 64))
	case LifetimeExponent:
		// strconv writes 3.6e+03; the exponent is written plainly, as 3.6e3.
		mant, exp, _ := strings.Cut(strconv.FormatFloat(float64(n), 'e', -1, 64), "e")
		e, _ := strconv.Atoi(exp)
		return json.Number(mant + "e" + strconv.Itoa(e))
	case LifetimeString:
		return strconv.FormatInt(n, 10)
	}
	return n
}

func (f Form) tokenType() string {
	if f.TokenType == "" {
		return "Bearer"
	}
	return f.TokenType
}

// formWriter labels and prefixes an answer as its Form says.
type formWriter struct {
	http.ResponseWriter
	form    Form
	started bool
}

func (w *formWriter) WriteHeader(code int) {
	if w.started {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.started = true
	switch w.form.ContentType {
	case "":
	case NoContentType:
		// A nil value keeps net/http from sniffing one and sending that.
		w.Header()["Content-Type"] = nil
	default:
		w.Header().Set("Content-Type", w.form.ContentType)
	}
	w.ResponseWriter.WriteHeader(code)
	if w.form.BOM {
		w.ResponseWriter.Write([]byte("\uFEFF"))
	}
}

func (w *formWriter) Write(b []byte) (int, error) {
	if !w.started {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *formWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
