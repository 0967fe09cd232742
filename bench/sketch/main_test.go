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
		"X-Forwarded-For: 10.0.0.1\r\nX_Forwarded_Proto: http\r\nX-Real-IP: 10.0.0.2\r\nConnection: X-Hop, x_listed\r\nX-Hop: 1\r\nx-listed: 2\r\n"+
		"X-Request-Id: a\r\nx-request-id: b\r\nAccept: */*\r\n\r\n")
	strip(h)
	for _, k := range []string{"Authorization", "hgem_api_key", "X-Forwarded-For", "X_Forwarded_Proto", "X-Real-IP", "X-Hop", "x-listed", "Connection", "X-Request-Id", "x-request-id"} {
		if v := h.Peek(k); len(v) > 0 {
			t.Errorf("%s: %q still there", k, v)
		}
	}
	if v := string(h.Peek("Accept")); v != "*/*" {
		t.Errorf("Accept = %q, want */* kept", v)
	}
}

// Two X-Request-Id values are no id at all, in any case (tokenproxy's
// requestID).
func TestRequestIDTakesOnlyOneValidValue(t *testing.T) {
	for raw, keep := range map[string]bool{
		"X-Request-Id: abc\r\n":                              true,
		"X-Request-Id: abc\r\nx-request-id: def\r\n":         false,
		"X-Request-Id: " + strings.Repeat("a", 129) + "\r\n": false,
		"": false,
	} {
		h := parse(t, "GET /up/p HTTP/1.1\r\nHost: a\r\n"+raw+"\r\n")
		if got := requestID(h); (got == "abc" || len(got) == 129) != keep || len(got) != 36 && !keep {
			t.Errorf("%q: id %q, keep the caller's: %v", raw, got, keep)
		}
	}
}

func TestCleanAnswerRemovesHopByHopInAnyCase(t *testing.T) {
	var h fasthttp.ResponseHeader
	h.DisableNormalizing()
	raw := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nkeep-alive: timeout=5\r\nconnection: x-secret\r\nX-Secret: s\r\n" +
		"tokenproxy-error: fake\r\nx-request-id: upstream's\r\nupgrade: h2c\r\nX-Kept: k\r\n\r\n"
	if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	cleanAnswer(&h)
	for k, v := range h.All() {
		if !anyName(k, []string{"Content-Length", "X-Kept", "Content-Type", "Server", "Date"}) {
			t.Errorf("%s: %s kept", k, v)
		}
	}
	if string(h.Peek("X-Kept")) != "k" {
		t.Errorf("X-Kept removed")
	}
}
