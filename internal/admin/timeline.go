package admin

import (
	"fmt"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/broker"
)

// The timeline's drawing, in SVG user units: the last hour and the next
// ten minutes across timelineWidth, so that a backoff's end and the next
// refresh show beside what happened.
const (
	timelineWidth  = 1000.0
	timelineHeight = 60
	timelineAhead  = 10 * time.Minute
)

// timeline is one upstream's token over the last hour, drawn as inline SVG
// by the page's template: when a token was held, the backoffs, and a mark
// per event (minted, refreshed, failed, 401, rotated) with its details in a
// tooltip, then the next attempt.
type timeline struct {
	Tokens   []span
	Backoffs []span
	Marks    []mark
	Next     *mark
	NowX     string
	Ticks    []tick
	Summary  string // the marks in words, for a person and a screen reader
}

type span struct {
	X, W  string
	Title string
}

type mark struct {
	Kind  string // an Event kind, or "next"
	D     string // the SVG path of its shape
	Title string
}

type tick struct {
	X, Label, Anchor string
}

// newTimeline draws u's events (oldest first, any age) as of now.
func newTimeline(u Upstream, events []broker.Event, now time.Time) timeline {
	from, to := now.Add(-history), now.Add(timelineAhead)
	x := func(t time.Time) float64 {
		f := float64(t.Sub(from)) / float64(to.Sub(from)) * timelineWidth
		return min(max(f, 0), timelineWidth)
	}
	spanOf := func(a, b time.Time, title string) (span, bool) {
		xa, xb := x(a), x(b)
		if xb-xa < 0.5 && (b.Before(from) || a.After(to)) {
			return span{}, false
		}
		return span{X: num(xa), W: num(max(xb-xa, 2)), Title: title}, true
	}
	// next returns the first event after i of the given kinds.
	next := func(i int, kinds ...string) (broker.Event, bool) {
		for _, e := range events[i+1:] {
			for _, k := range kinds {
				if e.Kind == k {
					return e, true
				}
			}
		}
		return broker.Event{}, false
	}

	var tl timeline
	held := false // the token held now is among the events
	counts := map[string]int{}
	reasons := map[string]int{}
	for i, e := range events {
		switch e.Kind {
		case broker.EventMinted, broker.EventRefreshed:
			end := e.Until
			if n, ok := next(i, broker.EventMinted, broker.EventRefreshed, broker.EventInvalidated); ok && n.At.Before(end) {
				end = n.At
			}
			held = held || e.Until.Equal(u.TokenExpiresAt)
			if s, ok := spanOf(e.At, end, fmt.Sprintf("token from %s, valid until %s", clock(e.At), clock(e.Until))); ok {
				tl.Tokens = append(tl.Tokens, s)
			}
		case broker.EventFailed:
			end := e.Until
			if n, ok := next(i, broker.EventMinted, broker.EventRefreshed, broker.EventRotated); ok && n.At.Before(end) {
				end = n.At
			}
			if s, ok := spanOf(e.At, end, fmt.Sprintf("backing off after %s until %s", reasonText(e.Reason), clock(e.Until))); ok {
				tl.Backoffs = append(tl.Backoffs, s)
			}
		}
		if e.At.Before(from) {
			continue
		}
		counts[e.Kind]++
		if e.Kind == broker.EventFailed {
			reasons[e.Reason]++
		}
		tl.Marks = append(tl.Marks, mark{Kind: e.Kind, D: shape(e.Kind, x(e.At)), Title: eventTitle(e)})
	}
	if !held && !u.TokenExpiresAt.IsZero() {
		// A token older than the history: it is held all the same.
		if s, ok := spanOf(u.TokenObtainedAt, u.TokenExpiresAt, fmt.Sprintf("token from %s, valid until %s", clock(u.TokenObtainedAt), clock(u.TokenExpiresAt))); ok {
			tl.Tokens = append(tl.Tokens, s)
		}
	}
	if t := u.NextAttemptAt; !t.IsZero() {
		tl.Next = &mark{Kind: "next", D: shape("next", min(x(t), timelineWidth-7)), Title: "next token request " + clock(t)}
	}
	tl.NowX = num(x(now))
	for _, m := range []struct {
		at     time.Duration
		label  string
		anchor string
	}{{-history, "−60 min", "start"}, {-45 * time.Minute, "−45", "middle"}, {-30 * time.Minute, "−30", "middle"},
		{-15 * time.Minute, "−15", "middle"}, {0, "now", "middle"}, {timelineAhead, "+10", "end"}} {
		tl.Ticks = append(tl.Ticks, tick{X: num(x(now.Add(m.at))), Label: m.label, Anchor: m.anchor})
	}
	tl.Summary = summary(counts, reasons)
	return tl
}

// shape is the SVG path of a mark at x on the marks' row: circles for
// tokens, a diamond for a failure, a triangle for a 401, a square for a
// rotation, a ring for the next attempt.
func shape(kind string, x float64) string {
	const y = 30.0
	switch kind {
	case broker.EventFailed:
		return fmt.Sprintf("M%s %sl7 7-7 7-7-7z", num(x), num(y-7))
	case broker.EventInvalidated:
		return fmt.Sprintf("M%s %sl7 12h-14z", num(x), num(y-7))
	case broker.EventRotated:
		return fmt.Sprintf("M%s %sh11v11h-11z", num(x-5.5), num(y-5.5))
	case "next":
		return fmt.Sprintf("M%s %sa6 6 0 1 0 12 0a6 6 0 1 0-12 0z", num(x-6), num(y))
	}
	return fmt.Sprintf("M%s %sa6 6 0 1 0 12 0a6 6 0 1 0-12 0z", num(x-6), num(y))
}

func eventTitle(e broker.Event) string {
	switch e.Kind {
	case broker.EventMinted:
		return fmt.Sprintf("%s token minted (%s), valid until %s", clock(e.At), e.Source, clock(e.Until))
	case broker.EventRefreshed:
		return fmt.Sprintf("%s token refreshed (%s), valid until %s", clock(e.At), e.Source, clock(e.Until))
	case broker.EventFailed:
		return fmt.Sprintf("%s token request failed: %s; next attempt %s", clock(e.At), reasonText(e.Reason), clock(e.Until))
	case broker.EventInvalidated:
		return fmt.Sprintf("%s the upstream answered 401: token dropped", clock(e.At))
	case broker.EventRotated:
		return fmt.Sprintf("%s new credentials: minting from them", clock(e.At))
	}
	return clock(e.At) + " " + e.Kind
}

// reasonText is a failure's kind in words.
func reasonText(r string) string {
	switch r {
	case "refused":
		return "credentials refused"
	case "conflict":
		return "another live token (409)"
	case "rate_limited":
		return "rate limited"
	case "server_error":
		return "token endpoint error"
	case "network":
		return "token endpoint unreachable"
	case "timeout":
		return "no answer in time"
	case "malformed":
		return "malformed answer"
	case "sharing":
		return "no token from the fleet's store"
	}
	return r
}

// summary says in words what the marks show.
func summary(counts, reasons map[string]int) string {
	var parts []string
	for _, k := range []struct{ kind, words string }{
		{broker.EventMinted, "minted"}, {broker.EventRefreshed, "refreshed"}, {broker.EventFailed, "failed"},
		{broker.EventInvalidated, "dropped after a 401"}, {broker.EventRotated, "credentials rotated"},
	} {
		n := counts[k.kind]
		if n == 0 {
			continue
		}
		p := fmt.Sprintf("%d %s", n, k.words)
		if k.kind == broker.EventFailed {
			var rs []string
			for _, r := range []string{"refused", "conflict", "rate_limited", "server_error", "network", "timeout", "malformed", "sharing"} {
				if reasons[r] > 0 {
					rs = append(rs, fmt.Sprintf("%s ×%d", reasonText(r), reasons[r]))
				}
			}
			p += " (" + strings.Join(rs, ", ") + ")"
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "last hour: no token events"
	}
	return "last hour: " + strings.Join(parts, " · ")
}

// clock is a time of day in UTC, for tooltips and facts.
func clock(t time.Time) string {
	return t.UTC().Format("15:04:05Z")
}

func num(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", f), "0"), ".")
}
