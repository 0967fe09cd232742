package broker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/metrics"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// Options tune a Cache. Zero values take the defaults below.
type Options struct {
	// RefreshFraction of a token's lifetime after which it is refreshed in
	// the background (with up to 10% jitter earlier).
	RefreshFraction float64
	// FetchTimeout bounds one token request, whoever waits for it.
	FetchTimeout time.Duration
	// DefaultLifetime is assumed when the vendor gives no expires_in.
	DefaultLifetime time.Duration
	// Backoff after failures, by kind: transient (network, timeout, 5xx,
	// malformed, 429 without Retry-After), conflict (409) and refused
	// (credentials or grant refused). Each doubles per failure up to Max.
	Transient, Conflict, Refused Backoff

	// OnRefused is called (outside any lock) when the vendor refuses the
	// credentials, so that the caller can re-read them at once.
	OnRefused func()
	Metrics   *metrics.Metrics
	Log       *zap.Logger
}

// Backoff is an exponential backoff with jitter.
type Backoff struct{ Base, Max time.Duration }

// Default tuning.
var (
	DefaultRefreshFraction = 0.75
	DefaultFetchTimeout    = 10 * time.Second
	DefaultLifetime        = 5 * time.Minute
	DefaultTransient       = Backoff{Base: time.Second, Max: time.Minute}
	DefaultConflict        = Backoff{Base: 5 * time.Second, Max: 2 * time.Minute}
	DefaultRefused         = Backoff{Base: 30 * time.Second, Max: 5 * time.Minute}
)

// maxMargin caps the safety margin before expiry within which a token is no
// longer handed out, so that it cannot expire on its way to the upstream.
const maxMargin = 5 * time.Second

// Cache holds one upstream's token. Token, Invalidate and the setters are
// safe for concurrent use. No lock is held across a network call: fetches
// run in their own goroutine and callers wait on a channel.
type Cache struct {
	name    string
	fetcher Fetcher
	opt     Options

	base   context.Context // owned by the Cache, cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}

	mu        sync.Mutex
	creds     secrets.Credentials
	credsErr  error
	tok       Token // current; may have expired
	refreshAt time.Time
	refresh   Token // holder of the newest refresh token
	gen       uint64
	flight    *flight
	fails     int
	retryAt   time.Time
	lastErr   *Error
	lastFetch time.Time
	lastOK    bool
	rotated   bool // new credentials: mint a token from them soon
}

type flight struct {
	done chan struct{}
	tok  Token
	err  error
}

// New returns a Cache for upstream name and starts its background refresher.
// It fetches once credentials arrive through SetCredentials. Close stops it.
func New(name string, f Fetcher, opt Options) *Cache {
	if opt.RefreshFraction == 0 {
		opt.RefreshFraction = DefaultRefreshFraction
	}
	if opt.FetchTimeout == 0 {
		opt.FetchTimeout = DefaultFetchTimeout
	}
	if opt.DefaultLifetime == 0 {
		opt.DefaultLifetime = DefaultLifetime
	}
	if opt.Transient == (Backoff{}) {
		opt.Transient = DefaultTransient
	}
	if opt.Conflict == (Backoff{}) {
		opt.Conflict = DefaultConflict
	}
	if opt.Refused == (Backoff{}) {
		opt.Refused = DefaultRefused
	}
	if opt.Log == nil {
		opt.Log = zap.NewNop()
	}
	c := &Cache{name: name, fetcher: f, opt: opt, wake: make(chan struct{}, 1)}
	c.base, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.refresher()
	return c
}

// Close stops the refresher and any fetch in flight, and waits for them.
func (c *Cache) Close() {
	c.cancel()
	c.wg.Wait()
}

// Token returns a token that will not expire within the safety margin. It
// waits for a fetch when there is none; a caller that gives up (ctx) does
// not cancel the fetch for the others. A failure is an *Error.
func (c *Cache) Token(ctx context.Context) (Token, error) {
	now := time.Now()
	c.mu.Lock()
	if valid(c.tok, now) {
		t := c.tok
		c.mu.Unlock()
		return t, nil
	}
	if err := c.unavailableLocked(now); err != nil {
		c.mu.Unlock()
		return Token{}, err
	}
	f := c.flight
	if f == nil {
		f = c.startLocked()
	} else {
		c.opt.Metrics.CoalescedWait(c.name)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.tok, f.err
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// unavailableLocked is why no fetch may start now: no credentials, or a
// backoff after failures. Nil when a fetch may start.
func (c *Cache) unavailableLocked(now time.Time) error {
	if c.creds.IsZero() {
		msg := c.name + ": credentials not loaded yet"
		if c.credsErr != nil {
			msg = c.name + ": credentials unavailable: " + c.credsErr.Error()
		}
		return &Error{Code: CodeUnavailable, Msg: msg, RetryAfter: time.Second}
	}
	if now.Before(c.retryAt) && c.lastErr != nil {
		e := *c.lastErr
		e.RetryAfter = c.retryAt.Sub(now)
		return &e
	}
	return nil
}

// Invalidate drops the token of generation gen after the upstream answered
// 401 to it. A newer token (another fetch finished meanwhile) is kept, so a
// late purge cannot throw away a good token. It reports whether it dropped one.
func (c *Cache) Invalidate(gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen == 0 || c.tok.Gen != gen {
		return false
	}
	c.tok = Token{}
	c.opt.Metrics.Reauthed(c.name)
	c.opt.Metrics.TokenExpiresAt(c.name, time.Time{})
	c.opt.Log.Info("token refused by upstream; fetching a new one", zap.Uint64("gen", gen))
	c.poke()
	return true
}

// SetCredentials installs a new version of the credentials. The token made
// from the old ones keeps serving until one from the new ones is in hand.
func (c *Cache) SetCredentials(cr secrets.Credentials) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.creds
	c.creds, c.credsErr = cr, nil
	if old.IsZero() || old.Version() == cr.Version() {
		c.poke()
		return
	}
	// New credentials deserve a fresh attempt: forget the backoff earned by
	// the old ones, and prove the new ones with the primary grant.
	c.fails, c.retryAt, c.lastErr = 0, time.Time{}, nil
	c.refresh = Token{}
	c.rotated = true
	c.opt.Log.Info("credentials changed; minting a new token", zap.String("version", cr.Version()))
	c.poke()
}

// SetCredentialsError records why the credentials cannot be read now. The
// last good ones, if any, stay in use.
func (c *Cache) SetCredentialsError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.credsErr = err
}

// poke wakes the refresher to reconsider its schedule.
func (c *Cache) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// startLocked starts a fetch; c.mu must be held.
func (c *Cache) startLocked() *flight {
	f := &flight{done: make(chan struct{})}
	c.flight = f
	creds := c.creds
	refresh := ""
	if now := time.Now(); c.refresh.RefreshToken != "" &&
		(c.refresh.RefreshExpiry.IsZero() || now.Before(c.refresh.RefreshExpiry.Add(-margin(c.refresh.RefreshExpiresIn)))) {
		refresh = c.refresh.RefreshToken
	}
	c.rotated = false
	c.wg.Add(1)
	go c.fetch(f, creds, refresh)
	return f
}

func (c *Cache) fetch(f *flight, creds secrets.Credentials, refresh string) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.base, c.opt.FetchTimeout)
	start := time.Now()
	tok, err := c.fetcher.Fetch(ctx, creds, refresh)
	cancel()
	now := time.Now()
	if err == nil && tok.AccessToken == "" {
		err = &FetchError{Status: 200, Malformed: true, Description: "empty access token"}
	}
	reason, refused := "", false

	c.mu.Lock()
	c.flight = nil
	c.lastFetch = now
	c.lastOK = err == nil
	if err == nil {
		c.installLocked(&tok, creds, start, now)
		f.tok = tok
	} else {
		if fe, ok := errors.AsType[*FetchError](err); ok && fe.RefreshRefused && c.refresh.RefreshToken == refresh {
			c.refresh = Token{}
		}
		var e *Error
		reason, refused, e = c.failLocked(err, creds, now)
		f.err = e
		if valid(c.tok, now) {
			// A failed refresh never replaces a good token.
			f.tok, f.err = c.tok, nil
		}
	}
	close(f.done)
	expiry := c.tok.Expiry
	c.poke()
	c.mu.Unlock()

	c.opt.Metrics.TokenFetch(c.name, reason, now.Sub(start))
	c.opt.Metrics.TokenExpiresAt(c.name, expiry)
	if refused && c.opt.OnRefused != nil {
		c.opt.OnRefused()
	}
}

// installLocked makes tok the current token; sent is when it was asked for,
// so that the lifetime is counted from before the vendor started it.
func (c *Cache) installLocked(tok *Token, creds secrets.Credentials, sent, now time.Time) {
	life := tok.ExpiresIn
	if life <= 0 {
		life = c.opt.DefaultLifetime
	}
	c.gen++
	tok.Gen = c.gen
	tok.Creds = creds
	tok.Obtained = now
	tok.Expiry = sent.Add(life)
	if tok.RefreshToken != "" && tok.RefreshExpiresIn > 0 {
		tok.RefreshExpiry = sent.Add(tok.RefreshExpiresIn)
	}
	c.refresh = *tok // the newest refresh token, or none (Fetcher)
	c.tok = *tok
	jitter := 1 - 0.1*rand.Float64()
	c.refreshAt = sent.Add(time.Duration(float64(life) * c.opt.RefreshFraction * jitter))
	c.fails, c.retryAt, c.lastErr = 0, time.Time{}, nil
	c.opt.Log.Info("token obtained", zap.Uint64("gen", tok.Gen),
		zap.Duration("lifetime", life), zap.Time("expires_at", tok.Expiry))
}

// failLocked classifies a failed fetch, schedules the next attempt and
// records the error callers will see until then.
func (c *Cache) failLocked(err error, creds secrets.Credentials, now time.Time) (reason string, refused bool, e *Error) {
	reason, code, b := c.classify(err)
	refused = reason == "refused"
	c.fails++
	wait := b.delay(c.fails)
	var fe *FetchError
	if errors.As(err, &fe) && fe.RetryAfter > wait {
		wait = min(fe.RetryAfter, 10*time.Minute)
	}
	c.retryAt = now.Add(wait)
	msg := scrub(c.name+": "+describe(reason, err, c.opt.FetchTimeout), creds)
	e = &Error{Code: code, Msg: msg, RetryAfter: wait}
	c.lastErr = e
	c.opt.Log.Warn("token fetch failed", zap.String("reason", reason), zap.String("error", msg),
		zap.Int("failures", c.fails), zap.Duration("retry_in", wait))
	return reason, refused, e
}

// classify maps a fetch failure to a metrics reason, the caller's error
// code, and the backoff that applies: the one place where vendor answers
// turn into tokenproxy's behaviour.
func (c *Cache) classify(err error) (reason, code string, b Backoff) {
	var fe *FetchError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout", CodeUnavailable, c.opt.Transient
	case !errors.As(err, &fe) || fe.Status == 0:
		return "network", CodeUnavailable, c.opt.Transient
	case fe.Malformed:
		return "malformed", CodeTokenEndpoint, c.opt.Transient
	case fe.Status == 429:
		return "rate_limited", CodeUnavailable, c.opt.Transient
	case fe.Status == 409:
		return "conflict", CodeUnavailable, c.opt.Conflict
	case fe.Status >= 500:
		return "server_error", CodeTokenEndpoint, c.opt.Transient
	default:
		return "refused", CodeTokenEndpoint, c.opt.Refused
	}
}

func describe(reason string, err error, timeout time.Duration) string {
	switch reason {
	case "timeout":
		return fmt.Sprintf("token endpoint did not answer within %s", timeout)
	case "refused":
		return "token endpoint refused the credentials: " + err.Error()
	case "conflict":
		return "token endpoint reports another live token for this user (" + err.Error() + "); backing off"
	case "rate_limited":
		return "token endpoint is rate limiting (" + err.Error() + ")"
	case "network":
		return "token endpoint " + err.Error()
	}
	return "token endpoint failed: " + err.Error()
}

// scrub removes any credential value from a message built partly from a
// vendor's answer, in case the vendor echoes what it was sent.
func scrub(msg string, creds secrets.Credentials) string {
	for _, k := range creds.Keys() {
		if v := creds.Get(k); len(v) >= 4 {
			msg = strings.ReplaceAll(msg, v, "REDACTED")
		}
	}
	return msg
}

func (b Backoff) delay(fails int) time.Duration {
	d := b.Base << min(fails-1, 20)
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	return d/2 + rand.N(d/2+1)
}

// valid reports whether t may be handed out at now.
func valid(t Token, now time.Time) bool {
	return t.AccessToken != "" && now.Before(t.Expiry.Add(-margin(t.Expiry.Sub(t.Obtained))))
}

// margin is a tenth of the lifetime, at most maxMargin: short-lived tokens
// stay usable for most of their life.
func margin(life time.Duration) time.Duration {
	return min(life/10, maxMargin)
}

// refresher runs the background schedule: the first fetch once credentials
// are in, a refresh at RefreshFraction of each token's life, retries after
// failures, and a new token soon after the credentials change.
func (c *Cache) refresher() {
	defer c.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-c.base.Done():
			return
		case <-t.C:
		case <-c.wake:
		}
		c.mu.Lock()
		now := time.Now()
		due := c.nextLocked(now)
		if !due.IsZero() && !due.After(now) {
			c.startLocked()
			due = time.Time{}
		}
		c.mu.Unlock()
		t.Stop()
		if !due.IsZero() {
			t.Reset(due.Sub(now))
		}
	}
}

// nextLocked is when the refresher should next start a fetch; zero means
// nothing is scheduled (no credentials, or a fetch in flight will poke).
func (c *Cache) nextLocked(now time.Time) time.Time {
	switch {
	case c.creds.IsZero() || c.flight != nil:
		return time.Time{}
	case now.Before(c.retryAt):
		return c.retryAt
	case c.rotated || c.tok.AccessToken == "":
		return now
	}
	return c.refreshAt
}

// State is a snapshot for /status and /readyz. It holds no secret.
type State struct {
	Name              string
	Ready             bool
	State             string // ready, pending, error
	Reason            string
	TokenExpiresAt    time.Time
	TokenObtainedAt   time.Time
	RefreshAt         time.Time
	LastFetchAt       time.Time
	LastFetchResult   string // success, error, or "" before any
	LastError         string
	CredentialVersion string
	Generation        uint64
	Failures          int
}

// State returns a snapshot of the cache.
func (c *Cache) State() State {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := State{
		Name:              c.name,
		Ready:             valid(c.tok, now),
		LastFetchAt:       c.lastFetch,
		CredentialVersion: c.creds.Version(),
		Generation:        c.tok.Gen,
		Failures:          c.fails,
	}
	if c.tok.AccessToken != "" {
		s.TokenExpiresAt, s.TokenObtainedAt, s.RefreshAt = c.tok.Expiry, c.tok.Obtained, c.refreshAt
	}
	if !c.lastFetch.IsZero() {
		s.LastFetchResult = "error"
		if c.lastOK {
			s.LastFetchResult = "success"
		}
	}
	if c.lastErr != nil {
		s.LastError = c.lastErr.Msg
	}
	switch {
	case s.Ready:
		s.State = "ready"
	case c.creds.IsZero() && c.credsErr != nil:
		s.State, s.Reason = "error", "credentials unavailable: "+c.credsErr.Error()
	case c.lastErr != nil:
		s.State, s.Reason = "error", c.lastErr.Msg
	case c.creds.IsZero():
		s.State, s.Reason = "pending", "waiting for credentials"
	default:
		s.State, s.Reason = "pending", "fetching a token"
	}
	if c.credsErr != nil && s.LastError == "" {
		s.LastError = "credentials: " + c.credsErr.Error()
	}
	return s
}

// String names the cache for logs.
func (c *Cache) String() string { return fmt.Sprintf("broker.Cache(%s)", c.name) }
