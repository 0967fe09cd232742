package broker

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// answer401 does what the proxy does when the upstream answers 401: drop
// the token, take one, and report whether it is a newer one to replay with.
// It may run in goroutines: failures are t.Error.
func answer401(t *testing.T, c *Cache) (replayed bool) {
	tok, err := c.Token(context.Background())
	if err != nil {
		t.Error(err)
		return false
	}
	c.Invalidate(tok.Gen)
	fresh, err := c.Token(context.Background())
	if err != nil {
		t.Error(err)
		return false
	}
	return fresh.Gen != tok.Gen
}

// An API path that always answers 401 must not turn caller traffic into
// token requests: at most one 401-driven re-mint per ReauthMinInterval
// (CONTRACT.md §3).
func TestReauthBoundedPerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: lifetime(time.Hour, 10*time.Millisecond)}
		c := newCache(t, f, Options{ReauthMinInterval: 10 * time.Second})
		// 30 requests a second for 25 seconds, every one answered 401.
		replays := 0
		for range 25 * 30 {
			if answer401(t, c) {
				replays++
			}
			time.Sleep(time.Second / 30)
		}
		// The first 401 re-mints at once (the first token is not a re-mint),
		// then one more per 10s: at 10s and 20s.
		if n := f.count(); n != 4 {
			t.Fatalf("%d token requests, want 4 (first + re-mints at 0s, 10s, 20s)", n)
		}
		if replays != 3 {
			t.Fatalf("%d replays, want 3", replays)
		}
	})
}

// A 401 on a token older than the last re-mint is not bounded: the newer
// token is simply used (Invalidate refuses, the caller replays with it).
func TestReauthOlderTokenReplaysWithNewer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: lifetime(time.Hour, 10*time.Millisecond)}
		c := newCache(t, f, Options{ReauthMinInterval: 10 * time.Second})
		old, _ := c.Token(context.Background())
		if !c.Invalidate(old.Gen) {
			t.Fatal("first 401 did not drop the token")
		}
		fresh, _ := c.Token(context.Background())
		if c.Invalidate(old.Gen) {
			t.Fatal("a late 401 on the old token dropped the new one")
		}
		if tok, _ := c.Token(context.Background()); tok.Gen != fresh.Gen || f.count() != 2 {
			t.Fatalf("token %v after a late 401, %d fetches", tok, f.count())
		}
		// Scheduled refreshes are not re-mints and do not open the bound.
		time.Sleep(50 * time.Minute)
		synctest.Wait()
		if f.count() != 3 {
			t.Fatalf("%d fetches after the refresh, want 3", f.count())
		}
		refreshed, _ := c.Token(context.Background())
		if c.Invalidate(refreshed.Gen) != true {
			t.Fatal("a 401 after the interval did not re-mint")
		}
	})
}

// A static upstream's token is its credentials: a 401 does not make another
// (which would be the same) nor replay; the credentials are re-read.
func TestStaticTokenIsNotRemintedOn401(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: lifetime(24*time.Hour, 0)}
		reread := make(chan struct{}, 1)
		c := newCache(t, f, Options{Static: true, OnRefused: func() { reread <- struct{}{} }})
		tok, err := c.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if c.Invalidate(tok.Gen) {
			t.Fatal("a 401 dropped a static token")
		}
		<-reread
		if again, _ := c.Token(context.Background()); again.Gen != tok.Gen || f.count() != 1 {
			t.Fatalf("after a 401: token %v, %d fetches; want the same token and 1", again, f.count())
		}
	})
}
