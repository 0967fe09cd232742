package broker

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// kinds lists the events' kinds, for messages.
func kinds(es []Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}

// TestEventsAndNextAttempt follows one upstream through a first token, a
// refresh, refused refreshes that back off, a 401, and a rotation: each
// leaves one event, failures with their reason and the end of their
// backoff, and NextAttemptAt is the refresh or the backoff's end.
func TestEventsAndNextAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		f := &fakeFetcher{fn: func(ctx context.Context, n int) (Token, error) {
			if n == 3 || n == 4 {
				return Token{}, &FetchError{Status: 401, Code: "invalid_client"}
			}
			return Token{AccessToken: fmt.Sprintf("tok-%d", n), ExpiresIn: 100 * time.Second}, nil
		}}
		c := New("test", f, tuned(Options{}))
		t.Cleanup(c.Close)
		if s := c.State(); !s.NextAttemptAt.IsZero() {
			t.Fatalf("without credentials, next attempt %s; want none", s.NextAttemptAt)
		}
		c.SetCredentials(testCreds)
		synctest.Wait()
		s := c.State()
		if !s.Ready || !s.NextAttemptAt.Equal(s.RefreshAt) || s.NextAttemptAt.Before(start.Add(67*time.Second)) {
			t.Fatalf("after the first token: ready %v, next attempt %s, refresh at %s", s.Ready, s.NextAttemptAt, s.RefreshAt)
		}
		// The refresh (67.5–75s) succeeds; the one after it (135–150s) is
		// refused and backs off 15–30s, keeping the valid token; the retry is
		// refused too, and the next retry mints once the token has expired.
		var es []Event
		for i := 0; len(es) < 3; i++ {
			if i == 300 {
				t.Fatalf("events after 300s: %v", kinds(es))
			}
			time.Sleep(time.Second)
			synctest.Wait()
			es = c.Events(start)
		}
		s = c.State()
		if len(es) != 3 || es[0].Kind != EventMinted || es[1].Kind != EventRefreshed || es[2].Kind != EventFailed {
			t.Fatalf("events %v, want minted, refreshed, failed", kinds(es))
		}
		failed := es[2]
		if failed.Reason != "refused" || !failed.Until.After(failed.At) || !s.NextAttemptAt.Equal(failed.Until) {
			t.Fatalf("failure %+v; state next attempt %s: want reason refused and the backoff's end as next attempt", failed, s.NextAttemptAt)
		}
		if es[0].Source != "vendor" || !es[0].Until.Equal(es[0].At.Add(100*time.Second)) {
			t.Fatalf("minted %+v: want source vendor and the token's expiry", es[0])
		}
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		es = c.Events(start)
		if got := kinds(es); fmt.Sprint(got[:5]) != "[minted refreshed failed failed minted]" {
			t.Fatalf("events %v, want minted, refreshed, failed, failed, minted, ...", got)
		}

		// A 401, and the fetch it starts; then a rotation, and its fetch.
		// Each is waited for, so that the order does not depend on which
		// goroutine runs first.
		before := len(c.Events(start))
		tok, err := c.Token(context.Background())
		if err != nil || !c.Invalidate(tok.Gen) {
			t.Fatalf("invalidate: %v", err)
		}
		synctest.Wait()
		c.SetCredentials(secrets.NewCredentials(map[string]string{"client_id": "x", "client_secret": "y"}, "v2"))
		synctest.Wait()
		es = c.Events(start)[before:]
		if got := fmt.Sprint(kinds(es)); got != "[invalidated minted rotated refreshed]" {
			t.Fatalf("after a 401 and a rotation: %s", got)
		}
		if old := c.Events(time.Now().Add(time.Second)); len(old) != 0 {
			t.Fatalf("events since a time to come: %v", kinds(old))
		}
	})
}

// TestEventsBounded: the history keeps the last historySize events, in order.
func TestEventsBounded(t *testing.T) {
	var h history
	t0 := time.Unix(1_700_000_000, 0)
	for i := range historySize + 10 {
		h.add(Event{Kind: EventMinted, At: t0.Add(time.Duration(i) * time.Second)})
	}
	es := h.since(time.Time{})
	if len(es) != historySize || !es[0].At.Equal(t0.Add(10*time.Second)) || !es[len(es)-1].At.Equal(t0.Add(time.Duration(historySize+9)*time.Second)) {
		t.Fatalf("%d events from %s to %s", len(es), es[0].At, es[len(es)-1].At)
	}
	if es := h.since(t0.Add(time.Duration(historySize+5) * time.Second)); len(es) != 5 {
		t.Fatalf("%d events in the last 5s, want 5", len(es))
	}
}

// TestWarmTokenAllocatesNothing: the event history stays off the warm path.
func TestWarmTokenAllocatesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, &fakeFetcher{fn: lifetime(time.Hour, 0)}, Options{})
		if _, err := c.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if n := testing.AllocsPerRun(100, func() { c.Token(ctx) }); n != 0 {
			t.Fatalf("warm Token allocates %v times per call", n)
		}
	})
}
