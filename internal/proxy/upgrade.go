package proxy

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Upgrades (WebSocket and any other protocol a request asks to switch to,
// RFC 9110 §7.8) go through the same route, injection and 401 replay as
// every request; after a 101 the caller's connection is hijacked from
// fasthttp's server and bytes are copied both ways (switchProtocols). The
// Client gives each its own HTTP/1.1 connection (HTTP/2 has no Upgrade,
// RFC 9113 §8.2.2) outside max_connections, whose 101 answer's body the
// proxy can write to. Here: closing them at shutdown.

// upgradeType is the protocol a request asks to switch to, as
// httputil.ReverseProxy reads it: "" unless Connection names Upgrade.
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// printable reports whether s is printable ASCII, which ReverseProxy
// requires of an Upgrade value (net/http lets other bytes through).
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// upgrades tracks requests until they end, so that a drain can wait for
// them and then end those left. Handler.upgrades holds the requests that
// asked to switch protocols, from their start until their handler returns
// (for a switched connection, when it closes), and the answers written on
// a hijacked connection, until it closes (writeHijacked);
// Handler.requests holds every exchange until its log line (EndRequests).
type upgrades struct {
	mu      sync.Mutex
	live    map[*upgrade]struct{}
	empty   chan struct{} // closed when live becomes empty; nil when nobody waits
	closing bool          // close's wait has ended: a request added now is closed at once
}

// upgrade is one tracked request and the means to end it.
type upgrade struct {
	cancel context.CancelFunc // ends the upstream side: ReverseProxy closes it

	answer bool // an answer written on a hijacked connection (writeHijacked), not a switch

	mu     sync.Mutex
	caller net.Conn // the caller's connection, once hijacked
	closed bool
}

// hijacked takes note of the caller's connection when ReverseProxy takes
// it over, so that close can end that side too: closing the upstream side
// alone may leave ReverseProxy waiting on a caller that keeps its
// connection open after the upstream's half-close.
func (u *upgrade) hijacked(c net.Conn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.caller = c
	if u.closed {
		c.Close()
	}
}

func (u *upgrade) close() {
	u.cancel()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	if u.caller != nil {
		u.caller.Close()
	}
}

// add tracks a request whose context cancel ends; it must report the
// hijacked connection to the upgrade, and call stop when it ends. Added
// after close has stopped waiting (shutdown_timeout has passed), it is
// closed at once.
func (u *upgrades) add(cancel context.CancelFunc) (up *upgrade, stop func()) {
	up = &upgrade{cancel: cancel}
	u.insert(up)
	return up, func() { u.remove(up) }
}

// insert tracks up until remove; inserted after close has stopped
// waiting, it is closed at once.
func (u *upgrades) insert(up *upgrade) {
	u.mu.Lock()
	u.live[up] = struct{}{}
	closing := u.closing
	u.mu.Unlock()
	if closing {
		up.close()
	}
}

func (u *upgrades) remove(up *upgrade) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.live, up)
	if len(u.live) == 0 && u.empty != nil {
		close(u.empty)
		u.empty = nil
	}
}

// close waits for every tracked request to end, or ctx to be done, then
// closes those left and waits for their handlers to return; it returns
// how many it closed, and how many of those were answers (upgrade.answer).
func (u *upgrades) close(ctx context.Context) (closed, answers int) {
	u.mu.Lock()
	if len(u.live) == 0 {
		u.mu.Unlock()
		return 0, 0
	}
	if u.empty == nil {
		u.empty = make(chan struct{})
	}
	empty := u.empty
	u.mu.Unlock()
	select {
	case <-empty:
		return 0, 0
	case <-ctx.Done():
	}
	u.mu.Lock()
	u.closing = true
	left := make([]*upgrade, 0, len(u.live))
	for up := range u.live {
		left = append(left, up)
	}
	u.mu.Unlock()
	for _, up := range left {
		up.close()
		if up.answer {
			answers++
		}
	}
	if len(left) > 0 {
		// With both connections closed, both copies end, and so does the
		// handler: at once. A switch whose connection was closed before
		// fasthttp handed it over has no handler; its handover's dropped
		// end ends it (hijack). endWait is a backstop, not a wait anything
		// known needs.
		select {
		case <-empty:
		case <-time.After(endWait):
		}
	}
	return len(left), answers
}

// endWait bounds how long upgrades.close waits for the switches it closed
// to end.
const endWait = 5 * time.Second
