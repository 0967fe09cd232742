package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// The broker's tests run inside synctest bubbles: time is a fake clock that
// moves only when every goroutine of the bubble is blocked, so time.Sleep
// here advances the clock at once and deterministically. synctest.Test also
// fails a test that leaves a goroutine behind.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testCreds = secrets.NewCredentials(map[string]string{"client_id": "id-canary-1234", "client_secret": "secret-canary-5678"}, "v1")

// fakeFetcher counts calls; fn decides each answer (n counts from 1).
type fakeFetcher struct {
	mu       sync.Mutex
	calls    int
	refresh  []string
	versions []string
	fn       func(ctx context.Context, n int) (Token, error)
}

func (f *fakeFetcher) Fetch(ctx context.Context, c secrets.Credentials, refresh string) (Token, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.refresh = append(f.refresh, refresh)
	f.versions = append(f.versions, c.Version())
	f.mu.Unlock()
	return f.fn(ctx, n)
}

func (f *fakeFetcher) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// lifetime answers a token of the given life after a fake-time delay.
func lifetime(life, delay time.Duration) func(context.Context, int) (Token, error) {
	return func(ctx context.Context, n int) (Token, error) {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return Token{}, &FetchError{Err: ctx.Err()}
		}
		return Token{AccessToken: fmt.Sprintf("tok-%d", n), ExpiresIn: life}, nil
	}
}

// tuned is opt with the settings the tests were written for, the config's
// defaults, where opt leaves them out: New takes them explicitly.
func tuned(opt Options) Options {
	u := config.DefaultUpstream()
	if opt.RefreshFraction == 0 {
		opt.RefreshFraction = u.RefreshFraction
	}
	if opt.FetchTimeout == 0 {
		opt.FetchTimeout = u.TokenTimeout.Duration
	}
	return opt
}

func newCache(t *testing.T, f Fetcher, opt Options) *Cache {
	c := New("test", f, tuned(opt))
	t.Cleanup(c.Close)
	c.SetCredentials(testCreds)
	return c
}

func TestColdStartFetchesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: lifetime(time.Hour, 100*time.Millisecond)}
		c := newCache(t, f, Options{})
		var wg sync.WaitGroup
		errs := make(chan error, 500)
		for range 500 {
			wg.Go(func() {
				tok, err := c.Token(context.Background())
				if err == nil && tok.AccessToken != "tok-1" {
					err = fmt.Errorf("got %s", tok.AccessToken)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := f.count(); n != 1 {
			t.Fatalf("500 cold callers caused %d fetches, want 1", n)
		}
	})
}

func TestBackgroundRefreshKeepsTokenWarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: lifetime(100*time.Second, time.Second)}
		c := newCache(t, f, Options{})
		synctest.Wait()
		time.Sleep(2 * time.Second)
		first, err := c.Token(context.Background())
		if err != nil || first.Gen != 1 {
			t.Fatalf("first token: %v %v", first, err)
		}
		// At 80% of the life the refresh (due at 67.5–75%) has happened and a
		// caller finds the new token without waiting for a fetch.
		time.Sleep(78 * time.Second)
		synctest.Wait()
		start := time.Now()
		tok, err := c.Token(context.Background())
		if err != nil || tok.Gen != 2 {
			t.Fatalf("after 80s: %v %v, want generation 2", tok, err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Fatalf("caller waited %s for a warm token", waited)
		}
	})
}

func TestFetchCountOverManyLifetimes(t *testing.T) {
	for _, life := range []time.Duration{3 * time.Second, time.Minute} {
		t.Run(life.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeFetcher{fn: lifetime(life, 10*time.Millisecond)}
				c := newCache(t, f, Options{})
				// 1,000 requests spread over ten lifetimes.
				step := 10 * life / 1000
				for i := range 1000 {
					tok, err := c.Token(context.Background())
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					if !time.Now().Before(tok.Expiry) {
						t.Fatalf("request %d got an expired token", i)
					}
					time.Sleep(step)
				}
				// Refreshing at 67.5–75% of the life means 10/0.75 ≈ 13–15 fetches.
				if n := f.count(); n < 10 || n > 16 {
					t.Fatalf("%d fetches over ten lifetimes of %s, want about 14", n, life)
				}
			})
		})
	}
}

func TestBurstAcrossRefreshFetchesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: lifetime(100*time.Second, 500*time.Millisecond)}
		c := newCache(t, f, Options{})
		if _, err := c.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Callers arrive from half a second before the refresh to half a
		// second after it.
		time.Sleep(time.Until(c.State().RefreshAt) - 500*time.Millisecond)
		var wg sync.WaitGroup
		for range 200 {
			wg.Go(func() {
				for range 10 {
					if _, err := c.Token(context.Background()); err != nil {
						t.Error(err)
					}
					time.Sleep(100 * time.Millisecond)
				}
			})
		}
		wg.Wait()
		if n := f.count(); n != 2 {
			t.Fatalf("burst across the refresh moment: %d fetches, want 2 (first + one refresh)", n)
		}
	})
}

func TestNeverHandsOutExpiredToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: func(ctx context.Context, n int) (Token, error) {
			if n == 1 {
				return Token{AccessToken: "only", ExpiresIn: 10 * time.Second}, nil
			}
			return Token{}, &FetchError{Err: errors.New("connection refused")}
		}}
		c := newCache(t, f, Options{})
		synctest.Wait()
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			tok, err := c.Token(context.Background())
			if err == nil && !time.Now().Before(tok.Expiry.Add(-time.Second)) {
				t.Fatalf("handed out a token within its safety margin at %s (expiry %s)", time.Now(), tok.Expiry)
			}
			if err != nil {
				e, ok := AsError(err)
				if !ok || e.Code != CodeUnavailable || e.RetryAfter <= 0 {
					t.Fatalf("error %#v, want credentials_unavailable with Retry-After", err)
				}
				if time.Now().Before(tok.Expiry) && tok.AccessToken != "" {
					t.Fatal("error while a valid token exists")
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := c.Token(context.Background()); err == nil {
			t.Fatal("a token one minute after its 10s life")
		}
	})
}

func TestCancelledCallerDoesNotCancelFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: lifetime(time.Hour, 5*time.Second)}
		c := New("test", f, tuned(Options{}))
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		done := make(chan error)
		go func() { _, err := c.Token(ctx); done <- err }()
		c.SetCredentials(testCreds)
		if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("impatient caller: %v", err)
		}
		tok, err := c.Token(context.Background())
		if err != nil || tok.AccessToken != "tok-1" {
			t.Fatalf("patient caller: %v %v", tok, err)
		}
		if n := f.count(); n != 1 {
			t.Fatalf("%d fetches, want 1: the first caller's cancel restarted it", n)
		}
	})
}

func TestFetchHasItsOwnTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hang := func(ctx context.Context, n int) (Token, error) {
			<-ctx.Done()
			return Token{}, &FetchError{Err: ctx.Err()}
		}
		f := &fakeFetcher{fn: hang}
		c := newCache(t, f, Options{FetchTimeout: 3 * time.Second})
		start := time.Now()
		_, err := c.Token(context.Background())
		if e, ok := AsError(err); !ok || e.Code != CodeUnavailable || !strings.Contains(e.Msg, "did not answer within 3s") {
			t.Fatalf("got %v", err)
		}
		if waited := time.Since(start); waited > 3*time.Second {
			t.Fatalf("caller waited %s, longer than the fetch timeout", waited)
		}
	})
}

func TestInvalidateByGeneration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: lifetime(time.Hour, 100*time.Millisecond)}
		c := newCache(t, f, Options{})
		old, _ := c.Token(context.Background())

		// 100 callers saw a 401 with the same token: one purge, one fetch.
		var wg sync.WaitGroup
		var mu sync.Mutex
		purged := 0
		for range 100 {
			wg.Go(func() {
				if c.Invalidate(old.Gen) {
					mu.Lock()
					purged++
					mu.Unlock()
				}
				tok, err := c.Token(context.Background())
				if err != nil || tok.Gen == old.Gen {
					t.Errorf("after 401: %v %v", tok, err)
				}
			})
		}
		wg.Wait()
		if purged != 1 || f.count() != 2 {
			t.Fatalf("purged %d times with %d fetches; want 1 and 2", purged, f.count())
		}
		// A late 401 for the old generation must not throw the new token away.
		if c.Invalidate(old.Gen) {
			t.Fatal("stale invalidation dropped the newer token")
		}
		if tok, _ := c.Token(context.Background()); tok.Gen != 2 || f.count() != 2 {
			t.Fatalf("token %v after stale purge, %d fetches", tok, f.count())
		}
	})
}

func TestFailedRefreshKeepsGoodToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: func(ctx context.Context, n int) (Token, error) {
			if n == 1 {
				return Token{AccessToken: "good", ExpiresIn: 100 * time.Second}, nil
			}
			return Token{}, &FetchError{Status: 500, Code: "Internal error authenticating user"}
		}}
		c := newCache(t, f, Options{})
		synctest.Wait()
		time.Sleep(85 * time.Second) // refreshes have failed since ~70s
		if f.count() < 2 {
			t.Fatalf("no refresh attempted by 85s")
		}
		tok, err := c.Token(context.Background())
		if err != nil || tok.AccessToken != "good" {
			t.Fatalf("got %v %v, want the still-valid token", tok, err)
		}
		if s := c.State(); s.State != "ready" || s.LastFetchResult != "error" || !strings.Contains(s.LastError, "HTTP 500") {
			t.Fatalf("state %+v", s)
		}
	})
}

func TestBackoffSchedules(t *testing.T) {
	fail := func(fe *FetchError) func(context.Context, int) (Token, error) {
		return func(context.Context, int) (Token, error) { return Token{}, fe }
	}
	cases := []struct {
		name     string
		err      *FetchError
		code     string
		min, max int // fetches over ten minutes
	}{
		// 1s doubling to 60s with jitter in [d/2, d]: roughly 10 to 25 attempts.
		{"network", &FetchError{Err: errors.New("connection reset")}, CodeUnavailable, 9, 30},
		{"server error", &FetchError{Status: 503}, CodeTokenEndpoint, 9, 30},
		// A refusal is remembered: 30s doubling to 5 minutes, each wait in
		// [d/2, d]. At the shortest (15, 30, 60, 120, 150, 150s) the seventh
		// fetch comes at 525s, so 7 is the most ten minutes can hold (it
		// happened, about once in a few hundred runs).
		{"refused", &FetchError{Status: 401, Code: "invalid_client"}, CodeTokenEndpoint, 2, 7},
		// Inspera's one-token-per-user conflict: 5s doubling to 2 minutes.
		{"conflict", &FetchError{Status: 409, Code: "Multiple tokens for user"}, CodeUnavailable, 5, 14},
		// Retry-After is honoured over the shorter backoff.
		{"rate limited", &FetchError{Status: 429, RetryAfter: 2 * time.Minute}, CodeUnavailable, 5, 6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var refused atomic.Int32
				f := &fakeFetcher{fn: fail(tc.err)}
				c := newCache(t, f, Options{OnRefused: func() { refused.Add(1) }})
				// Callers hammer the cache all along; they must not add fetches.
				for range 6000 {
					_, err := c.Token(context.Background())
					e, ok := AsError(err)
					if !ok || e.Code != tc.code || e.RetryAfter <= 0 {
						t.Fatalf("got %#v, want %s with Retry-After", err, tc.code)
					}
					time.Sleep(100 * time.Millisecond)
				}
				if n := f.count(); n < tc.min || n > tc.max {
					t.Fatalf("%d fetches in ten minutes, want %d..%d", n, tc.min, tc.max)
				}
				if wantRefused := tc.name == "refused"; wantRefused != (refused.Load() > 0) {
					t.Fatalf("OnRefused called %d times", refused.Load())
				}
			})
		})
	}
}

func TestRotationMintsNewTokenKeepingOldMeanwhile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		f := &fakeFetcher{fn: func(ctx context.Context, n int) (Token, error) {
			if n == 2 {
				<-gate
			}
			return Token{AccessToken: fmt.Sprintf("tok-%d", n), ExpiresIn: time.Hour}, nil
		}}
		c := newCache(t, f, Options{})
		synctest.Wait()
		c.SetCredentials(secrets.NewCredentials(map[string]string{"client_id": "x", "client_secret": "y"}, "v2"))
		synctest.Wait() // the new fetch is blocked on gate
		if tok, err := c.Token(context.Background()); err != nil || tok.AccessToken != "tok-1" {
			t.Fatalf("while minting from new credentials: %v %v, want old token", tok, err)
		}
		close(gate)
		synctest.Wait()
		if tok, _ := c.Token(context.Background()); tok.AccessToken != "tok-2" {
			t.Fatalf("after rotation: %v", tok)
		}
		if f.versions[1] != "v2" {
			t.Fatalf("second fetch used credentials %s", f.versions[1])
		}
		if s := c.State(); s.CredentialVersion != "v2" {
			t.Fatalf("state version %s", s.CredentialVersion)
		}
	})
}

func TestRefreshTokenNewestKeptAndDroppedWhenExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{}
		f.fn = func(ctx context.Context, n int) (Token, error) {
			return Token{AccessToken: fmt.Sprintf("a%d", n), ExpiresIn: 100 * time.Second,
				RefreshToken: fmt.Sprintf("r%d", n), RefreshExpiresIn: 250 * time.Second}, nil
		}
		newCache(t, f, Options{})
		synctest.Wait()
		time.Sleep(310 * time.Second)
		synctest.Wait()
		// Fetch 1 at 0s, then a refresh every 67.5–75s: four by 310s, each
		// with the refresh token of the fetch before.
		f.mu.Lock()
		got := strings.Join(f.refresh, ",")
		f.mu.Unlock()
		if got != ",r1,r2,r3,r4" {
			t.Fatalf("refresh tokens used %q", got)
		}
		// Let a refresh token outlive its life: the primary grant comes back.
		f.mu.Lock()
		f.fn = func(ctx context.Context, n int) (Token, error) {
			return Token{AccessToken: fmt.Sprintf("a%d", n), ExpiresIn: 1000 * time.Second,
				RefreshToken: fmt.Sprintf("r%d", n), RefreshExpiresIn: 10 * time.Second}, nil
		}
		f.mu.Unlock()
		time.Sleep(900 * time.Second)
		synctest.Wait()
		f.mu.Lock()
		last := f.refresh[len(f.refresh)-1]
		f.mu.Unlock()
		if last != "" {
			t.Fatalf("used refresh token %q after it expired", last)
		}
	})
}

func TestErrorsNeverCarryCredentials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: func(context.Context, int) (Token, error) {
			// A vendor that echoes what it was sent.
			return Token{}, &FetchError{Status: 401, Code: "invalid_client",
				Description: "unknown client id-canary-1234 with secret secret-canary-5678"}
		}}
		c := newCache(t, f, Options{})
		_, err := c.Token(context.Background())
		for _, s := range []string{err.Error(), c.State().LastError, c.State().Reason} {
			if strings.Contains(s, "canary") || !strings.Contains(s, "invalid_client") {
				t.Fatalf("message %q", s)
			}
		}
	})
}

func TestNoCredentials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: lifetime(time.Hour, 0)}
		c := New("test", f, tuned(Options{}))
		defer c.Close()
		c.SetCredentialsError(errors.New("file:/x: missing key client_secret"))
		_, err := c.Token(context.Background())
		e, ok := AsError(err)
		if !ok || e.Code != CodeUnavailable || !strings.Contains(e.Msg, "client_secret") {
			t.Fatalf("got %v", err)
		}
		if s := c.State(); s.State != "error" || s.Ready {
			t.Fatalf("state %+v", s)
		}
		synctest.Wait()
		if f.count() != 0 {
			t.Fatal("fetched without credentials")
		}
	})
}

// A request that arrives before the first credentials read has ended waits
// for it, up to the fetch timeout (CONTRACT.md §2).
func TestWaitsForFirstCredentials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: lifetime(time.Hour, 100*time.Millisecond)}
		c := New("test", f, tuned(Options{FetchTimeout: 5 * time.Second}))
		defer c.Close()
		go func() {
			time.Sleep(2 * time.Second)
			c.SetCredentials(testCreds)
		}()
		start := time.Now()
		tok, err := c.Token(context.Background())
		if err != nil || tok.AccessToken != "tok-1" {
			t.Fatalf("got %v %v", tok, err)
		}
		if waited := time.Since(start); waited != 2100*time.Millisecond {
			t.Fatalf("waited %s, want 2.1s (credentials, then the fetch)", waited)
		}

		never := New("never", f, tuned(Options{FetchTimeout: 5 * time.Second}))
		defer never.Close()
		start = time.Now()
		_, err = never.Token(context.Background())
		if e, ok := AsError(err); !ok || e.Code != CodeUnavailable || !strings.Contains(e.Msg, "not loaded yet") {
			t.Fatalf("no credentials ever: %v", err)
		}
		if waited := time.Since(start); waited != 5*time.Second {
			t.Fatalf("waited %s for credentials that never came, want the 5s fetch timeout", waited)
		}
	})
}

// A refresh token the vendor refused is dropped, whether the fetch then
// failed or succeeded without a new one: the next fetch uses the primary
// grant instead of presenting it again (shared/VENDORS.md, "Token answers
// as they really come").
func TestRefusedRefreshTokenNeverPresentedAgain(t *testing.T) {
	tests := []struct {
		name   string
		second func() (Token, error) // the answer to the fetch given r1
	}{
		{"fetch failed", func() (Token, error) {
			return Token{}, &FetchError{Status: 503, Code: "server_error", RefreshRefused: true}
		}},
		{"fallback without a refresh token", func() (Token, error) {
			return Token{AccessToken: "a2", ExpiresIn: time.Hour}, nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeFetcher{}
				f.fn = func(_ context.Context, n int) (Token, error) {
					switch n {
					case 1:
						return Token{AccessToken: "a1", ExpiresIn: time.Hour, RefreshToken: "r1"}, nil
					case 2:
						return tt.second()
					}
					return Token{AccessToken: fmt.Sprintf("a%d", n), ExpiresIn: time.Hour}, nil
				}
				c := newCache(t, f, Options{})
				tok, err := c.Token(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				c.Invalidate(tok.Gen)
				c.Token(context.Background())
				if tok, err := c.Token(context.Background()); err == nil {
					c.Invalidate(tok.Gen)
				}
				// After the failure's backoff, or at once after the success.
				time.Sleep(2 * time.Minute)
				synctest.Wait()
				if tok, err := c.Token(context.Background()); err != nil || tok.AccessToken == "" {
					t.Fatalf("no token after the refusal: %v", err)
				}
				f.mu.Lock()
				got := strings.Join(f.refresh, ",")
				f.mu.Unlock()
				if got != ",r1," {
					t.Fatalf("refresh tokens presented %q, want r1 once", got)
				}
			})
		})
	}
}

// A refresh token refused by a fetch that was given another one is not
// dropped: only the refused one goes.
func TestRefreshRefusedKeepsOnlyWhatWasPresented(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{}
		f.fn = func(_ context.Context, n int) (Token, error) {
			if n == 2 {
				return Token{}, &FetchError{Status: 503}
			}
			return Token{AccessToken: fmt.Sprintf("a%d", n), ExpiresIn: time.Hour, RefreshToken: fmt.Sprintf("r%d", n)}, nil
		}
		c := newCache(t, f, Options{})
		tok, _ := c.Token(context.Background())
		c.Invalidate(tok.Gen)
		c.Token(context.Background()) // fails, not refused
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		c.Token(context.Background())
		f.mu.Lock()
		got := strings.Join(f.refresh, ",")
		f.mu.Unlock()
		if got != ",r1,r1" {
			t.Fatalf("refresh tokens presented %q: a transient failure must keep r1", got)
		}
	})
}

func TestNextAttemptAt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fail := atomic.Bool{}
		f := &fakeFetcher{fn: func(ctx context.Context, n int) (Token, error) {
			if fail.Load() {
				return Token{}, &FetchError{Status: 401, Code: "invalid_client"}
			}
			return Token{AccessToken: fmt.Sprintf("tok-%d", n), ExpiresIn: 100 * time.Second}, nil
		}}
		c := New("test", f, tuned(Options{}))
		t.Cleanup(c.Close)
		synctest.Wait()
		if s := c.State(); !s.NextAttemptAt.IsZero() {
			t.Fatalf("without credentials: next attempt %s, want none scheduled", s.NextAttemptAt)
		}
		c.SetCredentials(testCreds)
		synctest.Wait()
		s := c.State()
		if !s.Ready || s.NextAttemptAt.IsZero() || !s.NextAttemptAt.Equal(s.RefreshAt) {
			t.Fatalf("with a token: next attempt %s, want the refresh at %s", s.NextAttemptAt, s.RefreshAt)
		}
		// The refresh is refused: the next attempt is the end of the
		// refusal's backoff, which a caller is told as Retry-After.
		fail.Store(true)
		time.Sleep(time.Until(s.RefreshAt))
		synctest.Wait()
		_, err := c.Token(context.Background())
		s = c.State()
		if err != nil || s.LastFetchResult != "error" {
			t.Fatalf("after a refused refresh: %v, state %+v", err, s)
		}
		if d := time.Until(s.NextAttemptAt); d < DefaultRefused.Base/2 || d > DefaultRefused.Base {
			t.Fatalf("next attempt in %s after one refusal, want the backoff of %s with jitter", d, DefaultRefused.Base)
		}
	})
}

// The settings an operator can change are the config's to give: New has no
// defaults of its own for them, and refuses to run without them.
func TestNewNeedsTheSettings(t *testing.T) {
	for name, opt := range map[string]Options{
		"no refresh fraction": {FetchTimeout: time.Second},
		"fraction of one":     {RefreshFraction: 1, FetchTimeout: time.Second},
		"no fetch timeout":    {RefreshFraction: 0.75},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("New accepted options without the setting")
				}
			}()
			New("test", &fakeFetcher{fn: lifetime(time.Hour, 0)}, opt).Close()
		})
	}
}
