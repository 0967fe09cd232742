package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
)

// The X-Request-Id a caller's request carries through tokenproxy, to the
// upstream, back in the response and into the log line (CONTRACT.md §3).
const requestIDHeader = "X-Request-Id"

// maxRequestID is the longest caller's X-Request-Id that is kept.
const maxRequestID = 128

// requestID is the caller's X-Request-Id when it sent exactly one of up to
// 128 visible ASCII characters (RFC 5234 VCHAR: nothing that could break a
// header, a log line or a query), else a new random one. Two different
// values are no id at all: which one a log search should use is unknown.
func requestID(h http.Header) string {
	if v := h[requestIDHeader]; len(v) == 1 && validRequestID(v[0]) {
		return v[0]
	}
	return newRequestID()
}

func validRequestID(s string) bool {
	if s == "" || len(s) > maxRequestID {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// newRequestID is a random UUID (RFC 9562 §5.4, version 4), the form
// Envoy and most load balancers generate, so ids look alike across hops.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
