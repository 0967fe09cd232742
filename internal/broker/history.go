package broker

import "time"

// The kinds of Event.
const (
	EventMinted      = "minted"      // a token obtained while none valid was held (first, after expiry or a 401)
	EventRefreshed   = "refreshed"   // a new token replaced one still valid
	EventFailed      = "failed"      // a token request failed; a backoff follows
	EventInvalidated = "invalidated" // the upstream answered 401 and the token was dropped
	EventRotated     = "rotated"     // new credentials arrived; a token from them follows
)

// Event is one thing that happened to an upstream's token, for the admin
// plane's timeline. It holds no value: no token, no credential, no message
// built from a vendor's answer.
type Event struct {
	Kind string
	At   time.Time
	// Until is, for minted and refreshed, the token's expiry; for failed,
	// the end of the backoff (the next attempt). Zero otherwise.
	Until time.Time
	// Reason is, for failed, the kind of failure: refused, conflict,
	// rate_limited, server_error, network, timeout, malformed (as in
	// tokenproxy_token_fetch_failures_total), or sharing when the fleet's
	// store answered instead of the vendor.
	Reason string
	// Source is, for minted and refreshed, where the token came from: vendor,
	// or the fleet's hit, waited, minted, local (CONTRACT.md §7).
	Source string
}

// historySize bounds an upstream's event history. An hour holds far fewer
// events than this unless tokens live under a minute (tokenproxy dev's 30s
// tokens make about 160 an hour), so the timeline's hour is normally whole.
const historySize = 256

// history is a ring of the last historySize events. It is written only
// where the Cache already holds its lock for a fetch's outcome, a 401 or a
// rotation, never on the warm Token path, and lives inside the Cache, so
// recording allocates nothing.
type history struct {
	buf [historySize]Event
	n   int // events ever added
}

func (h *history) add(e Event) {
	h.buf[h.n%historySize] = e
	h.n++
}

// since returns the events at or after t, oldest first.
func (h *history) since(t time.Time) []Event {
	first := max(h.n-historySize, 0)
	var out []Event
	for i := first; i < h.n; i++ {
		if e := h.buf[i%historySize]; !e.At.Before(t) {
			out = append(out, e)
		}
	}
	return out
}

// Events returns the events of this upstream's token at or after since,
// oldest first: at most the last 256, whatever since says.
func (c *Cache) Events(since time.Time) []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events.since(since)
}
