package main

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// watching serves one connection whose handler starts watchCaller(after)
// and, once the test says so, ends the watch; it returns the caller's
// connection, the watch's ended channel, and a func that ends the watch
// and returns what left reported.
func watching(t *testing.T, after time.Duration, request string, onGone func()) (net.Conn, <-chan struct{}, func() bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endedc := make(chan (<-chan struct{}), 1)
	proceed := make(chan struct{})
	result := make(chan bool, 1)
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		left, ended := watchCaller(ctx, after, onGone)
		endedc <- ended
		<-proceed
		result <- left()
	}}
	var release sync.Once
	go srv.Serve(ln)
	t.Cleanup(func() { release.Do(func() { close(proceed) }); srv.Shutdown(); ln.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	var ended <-chan struct{}
	select {
	case ended = <-endedc:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never ran")
	}
	return c, ended, func() bool {
		release.Do(func() { close(proceed) })
		select {
		case left := <-result:
			return left
		case <-time.After(10 * time.Second):
			t.Fatal("ending the watch hung")
			return false
		}
	}
}

const get = "GET /up/x HTTP/1.1\r\nHost: tokenproxy\r\n\r\n"

func TestWatchCallerNoticesACallerGone(t *testing.T) {
	for _, after := range []time.Duration{0, time.Millisecond} {
		var called atomic.Bool
		c, ended, end := watching(t, after, get, func() { called.Store(true) })
		c.Close()
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatalf("after=%v: the watch did not notice the caller's close within 10 s", after)
		}
		if !called.Load() {
			t.Errorf("after=%v: onGone not called before the watch ended", after)
		}
		if !end() {
			t.Errorf("after=%v: left() = false for a caller that closed its connection", after)
		}
	}
}

// A pipelined request is a caller still there, whether fasthttp has
// already read it (the socket is then not readable and the watch waits
// until it is ended) or it is still in the socket.
func TestWatchCallerTakesAPipelinedRequestForACallerStill(t *testing.T) {
	c, _, end := watching(t, 0, get+get, func() { t.Error("onGone called for a pipelined request") })
	if end() {
		t.Error("left() = true for a caller that pipelined a second request")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	var got []byte
	for n := 0; n < 2; {
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d answers: %v", n, err)
		}
		got = append(got, buf[:k]...)
		n = countAnswers(got)
	}
}

func countAnswers(b []byte) int {
	n := 0
	for i := 0; i+len("HTTP/1.1 ") <= len(b); i++ {
		if string(b[i:i+len("HTTP/1.1 ")]) == "HTTP/1.1 " {
			n++
		}
	}
	return n
}

func TestWatchCallerStartsLateOnlyWhenTheUpstreamIsSlow(t *testing.T) {
	_, ended, end := watching(t, time.Hour, get, func() { t.Error("onGone called for a caller still there") })
	if end() {
		t.Error("left() = true for a caller still there")
	}
	select {
	case <-ended:
		t.Error("the watch ran although the answer came before after")
	default:
	}
}
