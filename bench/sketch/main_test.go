package main

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func parse(t *testing.T, raw string) *fasthttp.RequestHeader {
	t.Helper()
	var h fasthttp.RequestHeader
	if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatalf("fasthttp refused %q itself: %v", raw, err)
	}
	return &h
}

// The requests net/http refuses and fasthttp's parser takes (stop 16's
// run of the end-to-end suite on fasthttp), and some of their kind.
func TestCheckRefusesWhatNetHTTPRefuses(t *testing.T) {
	for _, c := range []struct {
		raw    string
		status int
	}{
		{"GET /up/p HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"GET /up/p HTTP/1.0\r\n\r\n", 0},
		{"POST /up/p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 0},
		{"GET /up/p HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"GET /up/p HTTP/3.0\r\nHost: a\r\n\r\n", 505},
		{"GET /up/p HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400},
		{"GET /up/p HTTP/1.1\r\nHost: a\r\nBad(Name): x\r\n\r\n", 400},
		{"GET /up/p HTTP/1.1\r\nHost: a\r\nX-Ok: a\x01b\r\n\r\n", 400},
		{"POST /up/p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501},
		{"POST /up/p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
	} {
		var h fasthttp.RequestHeader
		if err := h.Read(bufio.NewReader(strings.NewReader(c.raw))); err != nil {
			if c.status == 0 {
				t.Errorf("%q: fasthttp refused it: %v", c.raw, err)
			}
			continue // refused by fasthttp itself, as by net/http
		}
		if got, msg := check(&h); got != c.status {
			t.Errorf("%q: check = %d (%s), want %d", c.raw, got, msg, c.status)
		}
	}
}

func TestStripRemovesCredentialsAndHopByHop(t *testing.T) {
	h := parse(t, "GET /up/p HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer caller\r\nhgem_api_key: k\r\n"+
		"X-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.2\r\nConnection: X-Hop\r\nX-Hop: 1\r\nAccept: */*\r\n\r\n")
	strip(h)
	for _, k := range []string{"Authorization", "hgem_api_key", "X-Forwarded-For", "X-Real-IP", "X-Hop", "Connection"} {
		if v := h.Peek(k); len(v) > 0 {
			t.Errorf("%s: %q still there", k, v)
		}
	}
	if v := string(h.Peek("Accept")); v != "*/*" {
		t.Errorf("Accept = %q, want */* kept", v)
	}
}
