package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/internal/metrics"
	"github.com/tokenproxy/tokenproxy/internal/redact"
	"github.com/tokenproxy/tokenproxy/internal/retry"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// Options tune a Cache. The settings an operator can change come from the
// config (internal/config holds their defaults) and must be given;
// New panics without them. What is not a setting (the backoffs, the
// lifetime assumed without expires_in) is the broker's own.
type Options struct {
	// RefreshFraction of a token's lifetime after which it is refreshed in
	// the background (with up to 10% jitter earlier): refresh_fraction,
	// in (0, 1).
	RefreshFraction float64
	// FetchTimeout bounds one token request, whoever waits for it:
	// token_timeout, positive.
	FetchTimeout time.Duration
	// Backoff after failures, by kind: transient (network, timeout, 5xx,
	// malformed, 429 without Retry-After), conflict (409) and refused
	// (credentials or grant refused). Each doubles per failure up to Max.
	// Not settings: zero takes the broker's own (DefaultTransient, ...).
	Transient, Conflict, Refused Backoff

	// ReauthMinInterval bounds 401-driven re-mints: at most one per
	// interval; a 401 inside it on a token minted by or after the last
	// re-mint is not a reason to drop the token (CONTRACT.md §3):
	// reauth_min_interval. Zero: no bound.
	ReauthMinInterval time.Duration
	// Sharing, when set, gets tokens through the fleet's store before the
	// vendor (CONTRACT.md §7).
	Sharing *Sharing

	// Static says a token is made from the credentials alone, with no
	// token endpoint (type static): a 401 is then not a reason to make
	// another, which would be the same; the credentials are re-read
	// (OnRefused) and the 401 goes back to the caller.
	Static bool

	// OnRefused is called (outside any lock) when the vendor refuses the
	// credentials, so that the caller can re-read them at once.
	OnRefused func()
	// Authorize builds the headers an API call carries with a token, from
	// the access token and the credentials it was minted from; called
	// once per token installed (a shared token included). Nil: tokens
	// carry no headers.
	Authorize func(accessToken string, creds secrets.Credentials) Header
	Metrics   *metrics.Metrics
	Log       *zap.Logger
}

// Backoff is an exponential backoff with jitter: waits in [d/2, d], d
// doubling from Base to Max (retry.Backoff).
type Backoff = retry.Backoff

// The backoffs after failures, by kind (Options).
var (
	DefaultTransient = Backoff{Base: time.Second, Max: time.Minute}
	DefaultConflict  = Backoff{Base: 5 * time.Second, Max: 2 * time.Minute}
	DefaultRefused   = Backoff{Base: 30 * time.Second, Max: 5 * time.Minute}
)

// assumedLifetime is a token's lifetime when the vendor's answer gives
// none (expires_in is RECOMMENDED, not required: RFC 6749 §5.1).
const assumedLifetime = 5 * time.Minute

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
	fleet  *fleet        // nil unless the token is shared
	loaded chan struct{} // closed once the first credentials read has ended

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

	// Why the next fetch starts, for the debug log: an event that asks
	// for one (a 401, new credentials), and what refreshAt stands for.
	cause      string
	refreshWhy string

	// The reauth bound: when the last 401-driven re-mint happened, and the
	// first generation minted by or after it (0: none yet).
	lastReauth time.Time
	reauthGen  uint64

	// Shared tokens: the store generation a 401 refused (0: none), and the
	// local generation given to the last store generation installed, so
	// that the same shared token installed again keeps its generation.
	// A generation is compared together with the token it numbers (held
	// here anyway, never stored or shown): a number alone may have been
	// given to another token too, after the record was damaged or deleted.
	refused        uint64
	refusedTok     string
	sharedGen      uint64
	sharedTok      string
	sharedLocalGen uint64

	events history // for the admin plane's timeline; written under mu
}

type flight struct {
	done chan struct{}
	tok  Token
	err  error
}

// New returns a Cache for upstream name and starts its background refresher.
// It fetches once credentials arrive through SetCredentials. Close stops it.
// It panics when opt.RefreshFraction is not in (0, 1) or opt.FetchTimeout
// is not positive: the config's Validate refuses both.
func New(name string, f Fetcher, opt Options) *Cache {
	if !(opt.RefreshFraction > 0 && opt.RefreshFraction < 1) {
		panic(fmt.Sprintf("broker.New(%s): RefreshFraction %v is not in (0, 1)", name, opt.RefreshFraction))
	}
	if opt.FetchTimeout <= 0 {
		panic(fmt.Sprintf("broker.New(%s): FetchTimeout %s is not positive", name, opt.FetchTimeout))
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
	c := &Cache{name: name, fetcher: f, opt: opt, wake: make(chan struct{}, 1), loaded: make(chan struct{})}
	if opt.Sharing != nil {
		c.fleet = &fleet{Sharing: *opt.Sharing, name: name, fetcher: f, timeout: opt.FetchTimeout,
			fraction: opt.RefreshFraction, reauth: opt.ReauthMinInterval,
			log: opt.Log.Named("sharing")}
	}
	var shared []string
	if c.fleet != nil {
		shared = SharedResults
	}
	opt.Metrics.InitTokens(name, FailureReasons, shared)
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
// waits for a fetch when there is none, and before the first credentials
// read has ended, for that too (at most FetchTimeout, CONTRACT.md §2); a
// caller that gives up (ctx) does not cancel the fetch for the others. A
// failure is an *Error.
func (c *Cache) Token(ctx context.Context) (Token, error) {
	select {
	case <-c.loaded:
	default:
		t := time.NewTimer(c.opt.FetchTimeout)
		select {
		case <-c.loaded:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return Token{}, ctx.Err()
		}
		t.Stop()
	}
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
// late purge cannot throw away a good token; so is a token minted by or
// after the last 401-driven re-mint within ReauthMinInterval, so that an API
// path that always answers 401 cannot turn caller traffic into token
// requests (CONTRACT.md §3). It reports whether it dropped the token.
func (c *Cache) Invalidate(gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen == 0 || c.tok.Gen != gen {
		return false
	}
	if c.opt.Static {
		c.opt.Log.Info("static credentials refused by upstream; re-reading them", zap.Uint64("gen", gen))
		if c.opt.OnRefused != nil {
			go c.opt.OnRefused() // outside the lock; it only signals
		}
		return false
	}
	if now := time.Now(); c.reauthGen != 0 && gen >= c.reauthGen && now.Sub(c.lastReauth) < c.opt.ReauthMinInterval {
		c.opt.Log.Debug("token refused by upstream within reauth_min_interval of the last re-mint; keeping it",
			zap.Uint64("gen", gen), zap.Time("last_reauth", c.lastReauth))
		return false
	}
	if c.fleet != nil && c.tok.SharedGen != 0 {
		// The fleet decides, through the store, whether to re-mint.
		c.refused, c.refusedTok = c.tok.SharedGen, c.tok.AccessToken
	} else {
		c.lastReauth, c.reauthGen = time.Now(), c.gen+1
		c.opt.Metrics.Reauthed(c.name)
	}
	c.tok = Token{}
	c.events.add(Event{Kind: EventInvalidated, At: time.Now()})
	c.cause = "the upstream answered 401"
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
	c.loadedLocked()
	// FleetVersion, not Version: the same number may be another secret's.
	if old.IsZero() || old.FleetVersion() == cr.FleetVersion() {
		c.poke()
		return
	}
	// New credentials deserve a fresh attempt: forget the backoff earned by
	// the old ones, and prove the new ones with the primary grant.
	c.fails, c.retryAt, c.lastErr = 0, time.Time{}, nil
	c.refresh = Token{}
	c.rotated = true
	c.events.add(Event{Kind: EventRotated, At: time.Now()})
	c.cause = "credentials changed"
	c.opt.Log.Info("credentials changed; getting a token for them", zap.String("version", cr.Version()))
	c.poke()
}

// SetCredentialsError records why the credentials cannot be read now. The
// last good ones, if any, stay in use.
func (c *Cache) SetCredentialsError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.credsErr = err
	if err != nil {
		c.loadedLocked()
	}
}

// loadedLocked marks the first credentials read as ended; c.mu held.
func (c *Cache) loadedLocked() {
	select {
	case <-c.loaded:
	default:
		close(c.loaded)
	}
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
	w := want{creds: c.creds, held: c.tok, refused: c.refused, refusedTok: c.refusedTok}
	now := time.Now()
	if c.refresh.RefreshToken != "" &&
		(c.refresh.RefreshExpiry.IsZero() || now.Before(c.refresh.RefreshExpiry.Add(-margin(c.refresh.RefreshExpiresIn)))) {
		w.refresh = c.refresh.RefreshToken
	}
	c.rotated = false
	if ce := c.opt.Log.Check(zapcore.DebugLevel, "token fetch started"); ce != nil {
		ce.Write(zap.String("why", c.whyLocked(now)), zap.Bool("shared", c.fleet != nil),
			zap.Bool("refresh_token", w.refresh != ""), zap.Int("failures", c.fails))
	}
	c.cause = ""
	c.wg.Add(1)
	go c.fetch(f, w)
	return f
}

// whyLocked says why a fetch starts now, for the debug log; c.mu held.
func (c *Cache) whyLocked(now time.Time) string {
	switch {
	case c.cause != "":
		return c.cause
	case c.fails > 0:
		return "retry after a failure"
	case c.gen == 0 && c.tok.AccessToken == "":
		return "first token"
	case c.tok.AccessToken == "":
		return "no token held"
	case !valid(c.tok, now):
		return "the token is about to expire"
	case !now.Before(c.refreshAt) && c.refreshWhy != "":
		return c.refreshWhy
	}
	return "a caller found no valid token"
}

// fetch gets a token from the vendor, or through the fleet's store when the
// token is shared, and installs it; a failure schedules the next attempt.
func (c *Cache) fetch(f *flight, w want) {
	defer c.wg.Done()
	start := time.Now()
	var g got
	var err error
	for {
		if c.fleet != nil {
			g, err = c.fleet.get(c.base, w)
		} else {
			g, err = c.vendor(w)
		}
		c.mu.Lock()
		// A 401 arrived while the fetch ran: the token it found may be the
		// refused one, or the token it means to keep may be gone. Ask again.
		if err == nil && c.fleet != nil && c.base.Err() == nil &&
			((g.tok.SharedGen != 0 && g.tok.SharedGen == c.refused && g.tok.AccessToken == c.refusedTok && w.refused != c.refused) ||
				(g.tok.AccessToken == "" && !valid(c.tok, time.Now()))) {
			w.held, w.refused, w.refusedTok = c.tok, c.refused, c.refusedTok
			c.mu.Unlock()
			continue
		}
		break
	}
	now := time.Now()
	reason, refused := "", false
	var e *Error
	c.flight = nil
	if g.vendor || err != nil || g.result != "" {
		c.lastFetch, c.lastOK = now, err == nil
	}
	switch {
	case err != nil:
		if fe, ok := errors.AsType[*FetchError](err); ok && fe.RefreshRefused && w.refresh != "" && c.refresh.RefreshToken == w.refresh {
			c.refresh = Token{} // a refused refresh token is never presented again
		}
		if se, ok := err.(*Error); ok {
			// The fleet's answer (another replica's failure, a lease held
			// too long, the store down): no vendor call to classify.
			e = se
			c.fails++
			c.retryAt, c.lastErr = now.Add(se.RetryAfter), se
			c.opt.Log.Warn("no shared token", zap.String("error", se.Msg), zap.Duration("retry_in", se.RetryAfter))
		} else {
			reason, refused, e = c.failLocked(err, w.creds, now)
		}
		c.events.add(Event{Kind: EventFailed, At: now, Until: c.retryAt, Reason: cmp.Or(reason, "sharing")})
		f.err = e
		if valid(c.tok, now) {
			// A failed refresh never replaces a good token.
			f.tok, f.err = c.tok, nil
		}
	case g.tok.AccessToken != "":
		held := valid(c.tok, now)
		// A token minted alone after the store failed is dated from the
		// vendor call, not from the store's wait before it
		// (TestSharedLocalTokenDatedFromVendorCall).
		sent := start
		if !g.sent.IsZero() {
			sent = g.sent
		}
		taken := c.installLocked(&g.tok, w.creds, sent, now, g)
		if taken {
			kind := EventMinted
			if held {
				kind = EventRefreshed
			}
			c.events.add(Event{Kind: kind, At: now, Until: g.tok.Expiry, Source: cmp.Or(g.result, "vendor")})
		}
		f.tok = g.tok
		if c.fleet != nil && taken && g.result != "" {
			c.opt.Metrics.SharedToken(c.name, g.result)
		}
		if g.reauth {
			c.opt.Metrics.Reauthed(c.name)
		}
	default:
		// Keep the token held while another replica refreshes it, or while
		// the store cannot be read.
		c.refreshAt, c.refreshWhy = g.next, "read the fleet's store again"
		f.tok = c.tok
	}
	if c.fleet != nil && (err != nil || g.denied) {
		// A store refusing access counts error even when this replica
		// carried on with a token of its own (local, or the one held).
		c.opt.Metrics.SharedToken(c.name, SharedError)
	}
	close(f.done)
	expiry, retryAt := c.tok.Expiry, c.retryAt
	c.poke()
	c.mu.Unlock()

	if g.vendor {
		c.opt.Metrics.TokenFetch(c.name, reason, now.Sub(start))
	}
	c.opt.Metrics.TokenExpiresAt(c.name, expiry)
	if g.leaseVer != 0 && e != nil {
		fe, ok := errors.AsType[*FetchError](err)
		c.fleet.release(c.base, g, w.creds, e, ok && fe.RefreshRefused, retryAt)
	}
	if refused && c.opt.OnRefused != nil {
		c.opt.OnRefused()
	}
}

// vendor asks the vendor's token endpoint, bounded by FetchTimeout.
func (c *Cache) vendor(w want) (got, error) {
	ctx, cancel := context.WithTimeout(c.base, c.opt.FetchTimeout)
	defer cancel()
	tok, err := c.fetcher.Fetch(ctx, w.creds, w.refresh)
	if err == nil && tok.AccessToken == "" {
		err = &FetchError{Status: 200, Malformed: true, Description: "empty access token"}
	}
	return got{tok: tok, vendor: true, refresh: w.refresh}, err
}

// installLocked makes tok the current token and reports whether it is a new
// one (not the shared token already held). A token from the vendor is dated
// from sent, when it was asked for, so that its lifetime counts from before
// the vendor started it; a shared token comes dated by the replica that
// minted it.
func (c *Cache) installLocked(tok *Token, creds secrets.Credentials, sent, now time.Time, g got) bool {
	if tok.SharedGen != 0 && tok.SharedGen == c.sharedGen && tok.AccessToken == c.sharedTok {
		tok.Gen = c.sharedLocalGen
	} else {
		c.gen++
		tok.Gen = c.gen
		c.sharedGen, c.sharedTok, c.sharedLocalGen = tok.SharedGen, tok.AccessToken, tok.Gen
	}
	taken := tok.Gen != c.tok.Gen
	if c.opt.Authorize != nil {
		tok.Header = c.opt.Authorize(tok.AccessToken, creds)
	}
	if tok.SharedGen != 0 {
		// The fleet has answered the refusal (with another token, or with
		// this one within the reauth bound). A token minted alone while the
		// store was down has not: the refused one may still be stored.
		c.refused, c.refusedTok = 0, ""
	}
	if tok.Expiry.IsZero() {
		life := tok.ExpiresIn
		if life <= 0 {
			life = assumedLifetime
		}
		tok.Obtained = now
		tok.Expiry = sent.Add(life)
		if tok.RefreshToken != "" && tok.RefreshExpiresIn > 0 {
			tok.RefreshExpiry = sent.Add(tok.RefreshExpiresIn)
		}
		c.refresh = *tok // the newest refresh token, or none (Fetcher)
		jitter := 1 - 0.1*rand.Float64()
		c.refreshAt = sent.Add(time.Duration(float64(life) * c.opt.RefreshFraction * jitter))
		c.refreshWhy = fmt.Sprintf("refresh at %g%% of the token's lifetime", c.opt.RefreshFraction*100)
	} else {
		// Replicas wake a little apart after the stored refresh point, so
		// that one takes the lease and the others find the new token.
		spread := min((tok.Expiry.Sub(tok.RefreshAt))/10, 2*time.Second)
		c.refreshAt = tok.RefreshAt.Add(rand.N(max(spread, 0) + 1))
		c.refreshWhy = "the fleet's refresh point"
	}
	if !g.next.IsZero() {
		c.refreshAt, c.refreshWhy = g.next, "read the fleet's store again"
	}
	if g.lastReauth.After(c.lastReauth) && tok.SharedGen >= g.reauthGen {
		// The fleet re-minted after a 401: this token is that one or newer.
		c.lastReauth, c.reauthGen = g.lastReauth, tok.Gen
	}
	c.tok = *tok
	c.fails, c.retryAt, c.lastErr = 0, time.Time{}, nil
	if taken {
		// gen is this replica's count (what a 401's log line names); a
		// shared token also carries the fleet's generation, the same on
		// every replica (0: minted alone, outside the store).
		fields := []zap.Field{zap.Uint64("gen", tok.Gen), zap.String("source", cmp.Or(g.result, "vendor")),
			zap.Duration("lifetime", tok.Expiry.Sub(tok.Obtained)), zap.Time("expires_at", tok.Expiry)}
		if tok.Grant != "" {
			fields = append(fields, zap.String("grant", tok.Grant))
		}
		if c.fleet != nil {
			fields = append(fields, zap.Uint64("fleet_generation", tok.SharedGen))
		}
		c.opt.Log.Info("token obtained", fields...)
	}
	c.opt.Log.Debug("next token request scheduled", zap.Time("at", c.refreshAt),
		zap.Duration("in", c.refreshAt.Sub(now)), zap.String("why", c.refreshWhy))
	return taken
}

// failLocked classifies a failed fetch, schedules the next attempt and
// records the error callers will see until then.
func (c *Cache) failLocked(err error, creds secrets.Credentials, now time.Time) (reason string, refused bool, e *Error) {
	reason, code, b := c.classify(err)
	refused = reason == "refused"
	c.fails++
	wait := b.Wait(c.fails)
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
	if ce := c.opt.Log.Check(zapcore.DebugLevel, "backoff chosen"); ce != nil {
		fields := []zap.Field{zap.String("reason", reason), zap.String("backoff", backoffName(reason)),
			zap.Duration("base", b.Base), zap.Duration("max", b.Max), zap.Int("failures", c.fails),
			zap.Duration("retry_in", wait), zap.Time("retry_at", c.retryAt)}
		if fe != nil {
			fields = append(fields, zap.Int("status", fe.Status), zap.Bool("refresh_refused", fe.RefreshRefused))
			if fe.RetryAfter > 0 {
				fields = append(fields, zap.Duration("vendor_retry_after", fe.RetryAfter))
			}
		}
		ce.Write(fields...)
	}
	return reason, refused, e
}

// FailureReasons are the reasons classify gives, the reason label of
// tokenproxy_token_fetch_failures_total.
var FailureReasons = []string{"refused", "conflict", "rate_limited", "server_error", "network", "timeout", "malformed"}

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

// backoffName names the Backoff of Options that classify chose for reason.
func backoffName(reason string) string {
	switch reason {
	case "refused":
		return "refused"
	case "conflict":
		return "conflict"
	}
	return "transient"
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

// scrub removes every credential value, in every form it may be repeated
// in (internal/redact: encoded as a form, query or JSON value, or in
// base64), from a message built partly from a vendor's answer, in case the
// vendor echoes what it was sent. The adapter scrubs vendor text first,
// with exactly what its request carried; this catches any message a
// Fetcher builds without doing so.
func scrub(msg string, creds secrets.Credentials) string {
	var hide redact.Set
	for _, k := range creds.Keys() {
		hide.Add(creds.Get(k))
	}
	return hide.Scrub(msg)
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
	// Generation numbers the token held: for a shared upstream the fleet's
	// generation (the store's, the same on every replica holding that
	// token; 0 for a token this replica minted alone, outside the store),
	// else this cache's own count of tokens obtained.
	Generation uint64
	Failures   int
	// NextAttemptAt is when the next token request is due: the scheduled
	// refresh or the end of a backoff, zero when nothing is scheduled
	// (no credentials yet, or a request in flight).
	NextAttemptAt time.Time
	Shared        bool   // the token is the fleet's (CONTRACT.md §7)
	MintedBy      string // the replica that minted the token held; "" when none or minted here alone
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
		Shared:            c.fleet != nil,
		MintedBy:          c.tok.MintedBy,
		NextAttemptAt:     c.nextLocked(now),
	}
	if c.fleet != nil {
		s.Generation = c.tok.SharedGen
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
	if c.fleet != nil {
		// A configuration error in the fleet's store does not stop this
		// replica (it mints alone), so it shows beside what does.
		if p := c.fleet.Problem(); p != "" && s.LastError == "" {
			s.LastError = p
		} else if p != "" {
			s.LastError += "; " + p
		}
	}
	return s
}

// String names the cache for logs.
func (c *Cache) String() string { return fmt.Sprintf("broker.Cache(%s)", c.name) }
