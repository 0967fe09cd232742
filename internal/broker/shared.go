package broker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/retry"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/sharing"
)

// Sharing makes a Cache one of a fleet that holds one token per upstream,
// kept in a sharing.Store (CONTRACT.md §7). The protocol is described in
// doc.go.
type Sharing struct {
	Store sharing.Store
	// Lease is how long a replica holds the right to mint; at least twice
	// the Cache's FetchTimeout (config validation checks it).
	Lease time.Duration
	// Local says what to do once the held token is no longer valid and the
	// store cannot be used: mint alone (true) or fail with 503 (false).
	Local bool
	// ID names this replica in leases and minted_by: <hostname>-<pid>.
	ID string
	// Audience is who this replica's tokens are for (sharing.NewAudience
	// of the upstream's type, token_url and base_url). A stored token for
	// another audience is never used, and its record never written: the
	// replica mints alone (two configs using one upstream name for
	// different vendors; CONTRACT.md §3). Zero: not checked.
	Audience sharing.Audience
}

// Results of a shared fetch, the result label of
// tokenproxy_shared_token_total.
const (
	SharedHit    = "hit"    // another replica's token, read without waiting
	SharedWaited = "waited" // another replica's token, after waiting for its lease
	SharedMinted = "minted" // won the lease and asked the vendor
	SharedLocal  = "local"  // the store could not be used: minted alone
	SharedError  = "error"  // no token came of it
)

// SharedResults are every result of a shared fetch.
var SharedResults = []string{SharedHit, SharedWaited, SharedMinted, SharedLocal, SharedError}

// Polling while another replica holds the lease: quick at first, since a
// mint usually takes tens of milliseconds, then at most every half second.
const (
	firstPoll = 50 * time.Millisecond
	maxPoll   = 500 * time.Millisecond
	// keepPoll is how soon a replica that keeps its token while another
	// one refreshes asks the store again.
	keepPoll = time.Second
)

// storeBackoff is how a replica that holds a valid token retries a store
// that fails.
var storeBackoff = retry.Backoff{Base: time.Second, Max: 30 * time.Second}

// errReadAgain tells get's loop to read the store again.
var errReadAgain = errors.New("read the store again")

// want is what a shared fetch starts from.
type want struct {
	creds      secrets.Credentials
	held       Token  // the token the Cache holds now; may be zero or expired
	refused    uint64 // the shared generation an upstream refused (401); 0 if none
	refusedTok string // the token of that generation, compared with the stored one
	refresh    string // a refresh token from a local mint (store unavailable)
}

// refusedIn reports whether rec still holds the token an upstream refused:
// its generation and its token, since a generation number alone may have
// been given to another token after the record was damaged or deleted.
func (w want) refusedIn(rec sharing.Record) bool {
	return w.refused != 0 && rec.Generation == w.refused && rec.AccessToken == w.refusedTok
}

// nextGeneration is the generation of a token minted over rec, read at
// store version ver. It is never one given to another token before: an
// empty record (malformed, deleted, or new) has lost the count, so it
// continues past ver (generation g was written at version g
// or later: one write per version, one generation per write at most) and
// past any this replica holds or was refused (the store's versions restart
// when its metadata is deleted).
func nextGeneration(rec sharing.Record, ver int, w want) uint64 {
	g := rec.Generation
	if rec == (sharing.Record{}) {
		g = max(uint64(max(ver, 0)), w.held.SharedGen, w.refused)
	}
	return g + 1
}

// got is what a shared fetch ends with.
type got struct {
	tok    Token     // the token to hold; zero: keep the held one until next
	next   time.Time // with a zero tok: ask the store again then
	result string    // one of the Shared* results; "" when nothing new was taken

	denied  bool      // the store refused access (sharing.ErrDenied): counted error
	vendor  bool      // the vendor's token endpoint was asked
	reauth  bool      // the vendor was asked because of a 401 (a re-mint)
	refresh string    // the refresh token presented to the vendor, if any
	sent    time.Time // when the vendor was asked for a tok the Cache dates (minted alone)

	// When the vendor's answer under our lease was a failure, the lease
	// record and its version, so the failure can be written back for the
	// whole fleet once the Cache has chosen the backoff.
	lease    sharing.Record
	leaseVer int

	// The fleet's last 401-driven re-mint, from the record read.
	lastReauth time.Time
	reauthGen  uint64
}

// fleet runs the sharing protocol for one Cache. Its methods are called only
// from the Cache's fetch goroutine, one at a time (single flight), so its
// own fields need no lock.
type fleet struct {
	Sharing
	name     string
	fetcher  Fetcher
	timeout  time.Duration // FetchTimeout: bounds the wait for a lease, and one vendor call
	fraction float64
	reauth   time.Duration // ReauthMinInterval, fleet-wide
	log      *zap.Logger

	storeFails int
	// problem is a configuration error met in the store (the record
	// written for another audience, the store refusing access), for
	// /status; "" when none. Written by the fetch goroutine, read by State.
	problem atomic.Pointer[string]
}

// setProblem records p for /status ("" clears it).
func (fl *fleet) setProblem(p string) { fl.problem.Store(&p) }

// Problem is the configuration error last met in the store, or "".
func (fl *fleet) Problem() string {
	if p := fl.problem.Load(); p != nil {
		return *p
	}
	return ""
}

// get returns the token this replica should hold, following doc.go.
func (fl *fleet) get(ctx context.Context, w want) (got, error) {
	waitUntil := time.Now().Add(fl.timeout)
	pause, waited := firstPoll, false
	for {
		rec, ver, err := fl.load(ctx)
		if err != nil {
			return fl.storeDown(ctx, w, err)
		}
		fl.storeFails = 0
		if differs := fl.foreign(rec); differs != nil {
			return fl.foreignRecord(ctx, w, rec, differs)
		}
		fl.setProblem("")
		now := time.Now()
		g := got{lastReauth: rec.LastReauth, reauthGen: rec.ReauthGeneration}
		// Compared across replicas, so the same on each; never shown as it
		// is (a fingerprint), only its Vault KV version number.
		v := w.creds.FleetVersion()
		fresh := rec.AccessToken != "" && valid(recordToken(rec), now)
		// Another lineage (another secret, the same path written again
		// after a delete, a fingerprint, a record in the previous format)
		// is neither: this replica may mint from its own credentials.
		order := secrets.CompareFleet(v, rec.CredentialVersion)
		behind := order == secrets.Older
		sameOrNewer := order == secrets.Same || behind
		refusedHere := w.refusedIn(rec)

		usable := fresh && sameOrNewer && !refusedHere
		heldOK := valid(w.held, now)
		// wait is for when another replica must act first: keep a token
		// while one is valid, else wait for the store to change, at most
		// until waitUntil.
		wait := func(until time.Time, why *Error) (got, error) {
			switch {
			case usable:
				g.tok, g.result, g.next = recordToken(rec), taken(waited), minTime(until, now.Add(keepPoll))
				return g, nil
			case heldOK:
				g.next = minTime(until, now.Add(keepPoll))
				return g, nil
			case !now.Before(waitUntil):
				return g, why
			}
			waited = true
			pause = fl.pause(ctx, pause, waitUntil)
			return g, errReadAgain
		}

		switch {
		case refusedHere && fresh && sameOrNewer && fl.reauthBounded(rec, now):
			// A re-mint happened fleet-wide within reauth_min_interval and
			// this token is that one or newer: the 401 goes back to the
			// caller and the token stays (CONTRACT.md §3).
			fl.log.Debug("401 within the fleet's reauth_min_interval of its last re-mint; keeping the stored token",
				zap.Uint64("generation", rec.Generation), zap.Time("last_reauth", rec.LastReauth))
			g.tok = recordToken(rec)
			return g, nil
		case usable && now.Before(rec.RefreshAt):
			// The fleet's token, before its refresh point.
			fl.log.Debug("using the fleet's token", zap.Uint64("generation", rec.Generation),
				zap.String("minted_by", rec.MintedBy), zap.Bool("waited", waited), zap.Time("refresh_at", rec.RefreshAt))
			g.tok, g.result = recordToken(rec), taken(waited)
			return g, nil
		case behind:
			shownRec, shownOurs := secrets.ShownFleetVersion(rec.CredentialVersion), secrets.ShownFleetVersion(v)
			fl.log.Debug("the fleet's token is from newer credentials than this replica has read",
				zap.String("stored_version", shownRec), zap.String("version", shownOurs))
			// Minted from credentials newer than ours: only a replica that
			// has read them may mint.
			if r, err := wait(now.Add(keepPoll), &Error{Code: CodeUnavailable, RetryAfter: time.Second,
				Msg: fmt.Sprintf("%s: the fleet's token was minted from credential version %s, newer than this replica's %s; waiting to read it", fl.name, shownRec, shownOurs)}); err != errReadAgain {
				return r, err
			}
			continue
		case rec.FailureVersion == v && now.Before(rec.RetryAt):
			// A replica failed to mint from these credentials: the fleet
			// backs off together.
			fl.log.Debug("the fleet is backing off after a failed mint", zap.String("code", rec.FailureCode),
				zap.Time("retry_at", rec.RetryAt), zap.Bool("token_held", usable || heldOK))
			if usable || heldOK {
				if usable {
					g.tok = recordToken(rec)
				}
				g.next = rec.RetryAt
				return g, nil
			}
			return g, &Error{Code: rec.FailureCode, Msg: rec.FailureMsg, RetryAfter: rec.RetryAt.Sub(now)}
		case rec.LeaseHolder != "" && rec.LeaseHolder != fl.ID && now.Before(rec.LeaseUntil):
			// Another replica is minting.
			if !waited {
				fl.log.Debug("another replica holds the minting lease; waiting for its token",
					zap.String("holder", rec.LeaseHolder), zap.Time("lease_until", rec.LeaseUntil), zap.Bool("token_held", usable || heldOK))
			}
			if r, err := wait(rec.LeaseUntil, &Error{Code: CodeUnavailable, RetryAfter: rec.LeaseUntil.Sub(now),
				Msg: fmt.Sprintf("%s: replica %s is minting the fleet's token; none arrived within %s", fl.name, rec.LeaseHolder, fl.timeout)}); err != errReadAgain {
				return r, err
			}
			continue
		}

		// Take the lease. Losing the check-and-set means another replica
		// wrote first: read again and decide again.
		lease := rec
		lease.LeaseHolder, lease.LeaseUntil = fl.ID, now.Add(fl.Lease)
		leaseVer, err := fl.save(ctx, lease, ver)
		if errors.Is(err, sharing.ErrConflict) {
			if ctx.Err() != nil {
				return g, ctx.Err()
			}
			fl.log.Debug("another replica wrote the shared record first; reading it again")
			continue
		}
		if err != nil {
			return fl.storeDown(ctx, w, err)
		}
		fl.log.Debug("took the minting lease", zap.Time("lease_until", lease.LeaseUntil), zap.Uint64("generation", rec.Generation),
			zap.Bool("stored_token_valid", fresh), zap.Bool("refused", refusedHere))
		return fl.mint(ctx, w, rec, lease, leaseVer)
	}
}

// mint asks the vendor under the lease and writes the token back.
func (fl *fleet) mint(ctx context.Context, w want, rec, lease sharing.Record, leaseVer int) (got, error) {
	v := w.creds.FleetVersion()
	g := got{vendor: true, reauth: w.refusedIn(rec),
		lastReauth: rec.LastReauth, reauthGen: rec.ReauthGeneration}
	sent := time.Now()
	// The stored refresh token is the newest in the fleet, and only the
	// lease holder presents it. One from other credentials is not used.
	if rec.RefreshToken != "" && rec.CredentialVersion == v &&
		(rec.RefreshExpiry.IsZero() || sent.Before(rec.RefreshExpiry.Add(-margin(rec.RefreshExpiry.Sub(rec.Obtained))))) {
		g.refresh = rec.RefreshToken
	}
	fl.log.Debug("asking the vendor under the lease", zap.Bool("refresh_token", g.refresh != ""), zap.Bool("reauth", g.reauth))
	mctx, cancel := context.WithTimeout(ctx, fl.timeout)
	tok, err := fl.fetcher.Fetch(mctx, w.creds, g.refresh)
	cancel()
	if err == nil && tok.AccessToken == "" {
		err = &FetchError{Status: 200, Malformed: true, Description: "empty access token"}
	}
	if err != nil {
		g.lease, g.leaseVer = lease, leaseVer
		return g, err
	}
	now := time.Now()
	life := tok.ExpiresIn
	if life <= 0 {
		life = assumedLifetime
	}
	next := sharing.Record{
		AccessToken:       tok.AccessToken,
		Obtained:          sent,
		Expiry:            sent.Add(life),
		RefreshAt:         sent.Add(time.Duration(float64(life) * fl.fraction * (1 - 0.1*rand.Float64()))),
		RefreshToken:      tok.RefreshToken,
		CredentialVersion: v,
		Generation:        nextGeneration(rec, leaseVer-1, w),
		MintedBy:          fl.ID,
		LastReauth:        rec.LastReauth,
		ReauthGeneration:  rec.ReauthGeneration,
	}
	next.SetAudience(fl.Audience)
	// The token names the refresh token to present next (Fetcher): a new
	// one, the old one again, or none.
	switch {
	case tok.RefreshToken != "" && tok.RefreshExpiresIn > 0:
		next.RefreshExpiry = sent.Add(tok.RefreshExpiresIn)
	case tok.RefreshToken != "" && tok.RefreshToken == g.refresh:
		next.RefreshExpiry = rec.RefreshExpiry
	}
	if g.reauth {
		next.LastReauth, next.ReauthGeneration = now, next.Generation
	}
	g.lastReauth, g.reauthGen = next.LastReauth, next.ReauthGeneration
	_, err = fl.save(ctx, next, leaseVer)
	switch {
	case err == nil:
		g.tok, g.result = recordToken(next), SharedMinted
		g.tok.Grant = tok.Grant
		return g, nil
	case errors.Is(err, sharing.ErrConflict):
		// Our lease ran out and another replica took it: what it wrote is
		// not overwritten. Use its token if it has one, else ours alone.
		if cur, _, lerr := fl.load(ctx); lerr == nil && cur.AccessToken != "" && fl.foreign(cur) == nil &&
			cur.Generation > rec.Generation && valid(recordToken(cur), now) {
			fl.log.Warn("lease lost before the token was written back; using the fleet's newer token",
				zap.String("minted_by", cur.MintedBy))
			g.tok, g.result = recordToken(cur), SharedWaited
			return g, nil
		}
		fl.log.Warn("lease lost before the token was written back; using this replica's token alone")
	case errors.Is(err, sharing.ErrDenied):
		fl.deniedBy(err, "could not write the token back to the sharing store: access refused; using it alone")
		g.denied = true
	default:
		fl.log.Warn("could not write the token back to the sharing store; using it alone", zap.Error(err))
	}
	// Minted under the lease but never stored: the fleet does not have it,
	// so it counts as a token of this replica's own (CONTRACT.md §7: local).
	next.Generation, next.MintedBy = 0, fl.ID
	g.tok, g.result = recordToken(next), SharedLocal
	g.tok.Grant = tok.Grant
	return g, nil
}

// release writes a failed mint back: the lease is given up, and the fleet
// backs off until retryAt. A refused refresh token is dropped so that
// nobody presents it again. Best effort: if it cannot be written, the
// lease runs out on its own.
func (fl *fleet) release(ctx context.Context, g got, creds secrets.Credentials, e *Error, refreshRefused bool, retryAt time.Time) {
	rec := g.lease
	rec.LeaseHolder, rec.LeaseUntil = "", time.Time{}
	rec.RetryAt, rec.FailureCode, rec.FailureMsg, rec.FailureVersion = retryAt, e.Code, e.Msg, creds.FleetVersion()
	if refreshRefused && g.refresh != "" && rec.RefreshToken == g.refresh {
		rec.RefreshToken, rec.RefreshExpiry = "", time.Time{}
	}
	_, err := fl.save(ctx, rec, g.leaseVer)
	switch {
	case errors.Is(err, sharing.ErrDenied):
		fl.deniedBy(err, "could not release the lease in the sharing store: access refused")
	case err != nil && !errors.Is(err, sharing.ErrConflict):
		fl.log.Warn("could not release the lease in the sharing store", zap.Error(err))
	}
}

// storeDown is what a replica does when the store cannot be used: keep a
// token that is still valid, else mint alone or fail, as configured.
//
// A store that refuses access (sharing.ErrDenied: a 403, a policy without
// a capability the protocol needs) is a configuration error, not an
// outage: the same, but logged at ERROR with the path and the capability,
// shown in /status and counted error. Readiness is not touched: the replica
// serves with a token of its own, as with Vault down.
func (fl *fleet) storeDown(ctx context.Context, w want, err error) (got, error) {
	fl.storeFails++
	now := time.Now()
	denied := errors.Is(err, sharing.ErrDenied)
	if valid(w.held, now) {
		wait := storeBackoff.Wait(fl.storeFails)
		if denied {
			fl.deniedBy(err, "sharing store refused access; keeping the token held", zap.Duration("retry_in", wait))
		} else {
			fl.log.Warn("sharing store unavailable; keeping the token held", zap.Error(err), zap.Duration("retry_in", wait))
		}
		return got{next: now.Add(wait), denied: denied}, nil
	}
	if !fl.Local {
		if denied {
			fl.deniedBy(err, "sharing store refused access and no valid token held (on_store_unavailable: fail)")
		}
		return got{}, &Error{Code: CodeUnavailable, RetryAfter: time.Second,
			Msg: fmt.Sprintf("%s: sharing store unavailable and no valid token held: %v", fl.name, err)}
	}
	if denied {
		fl.deniedBy(err, "sharing store refused access; minting a token alone (on_store_unavailable: local)")
	} else {
		fl.log.Warn("sharing store unavailable; minting a token alone (on_store_unavailable: local)", zap.Error(err))
	}
	g, ferr := fl.alone(ctx, w)
	g.denied = denied && ferr == nil
	return g, ferr
}

// deniedBy logs a store's refusal at ERROR and shows it in /status: err
// names the record's path and the capability the policy lacks.
func (fl *fleet) deniedBy(err error, msg string, fields ...zap.Field) {
	// The store's errors start with "sharing: " already.
	fl.setProblem(fmt.Sprintf("%v; this replica uses tokens of its own until the policy is fixed", err))
	fl.log.Error(msg, append([]zap.Field{zap.Error(err)}, fields...)...)
}

// foreign names what differs between who rec's token is for and who ours
// are for (sharing.Audience.Differs), or nil when it may be used: the same
// audience, or a record that names none (empty, or written before records
// did; the next mint writes ours).
func (fl *fleet) foreign(rec sharing.Record) []string {
	a := rec.Audience()
	if a == (sharing.Audience{}) || fl.Audience == (sharing.Audience{}) {
		return nil
	}
	return fl.Audience.Differs(a)
}

// foreignRecord is a fetch that found the record written for another
// audience: a configuration error (two configs give one upstream name to
// different vendors). The record's token is never used and the record
// never written, so the replicas that wrote it go on undisturbed and no
// two groups overwrite each other in turn; this replica mints alone, as
// with the store unavailable (counted local), whatever on_store_unavailable
// says: the store is fine, the token is not ours.
func (fl *fleet) foreignRecord(ctx context.Context, w want, rec sharing.Record, differs []string) (got, error) {
	what := strings.Join(differs, ", ")
	fl.setProblem(fmt.Sprintf("sharing: the shared record of %s holds a token for another upstream (its %s differ from this config's; another replica's config gives this name to another vendor); this replica mints its own tokens and leaves the record alone",
		fl.name, what))
	fl.log.Error("the shared record holds a token for another upstream; not using it, minting alone and leaving the record alone: give the upstream a name of its own, or the same type, token_url and base_url on every replica",
		zap.Strings("differs", differs), zap.String("record_minted_by", rec.MintedBy))
	return fl.alone(ctx, w)
}

// alone mints a token without the store: not written back, the Cache
// dates and holds it as its own (result local).
func (fl *fleet) alone(ctx context.Context, w want) (got, error) {
	mctx, cancel := context.WithTimeout(ctx, fl.timeout)
	defer cancel()
	sent := time.Now()
	tok, ferr := fl.fetcher.Fetch(mctx, w.creds, w.refresh)
	g := got{vendor: true, refresh: w.refresh, result: SharedLocal, sent: sent}
	if ferr == nil && tok.AccessToken == "" {
		ferr = &FetchError{Status: 200, Malformed: true, Description: "empty access token"}
	}
	if ferr != nil {
		return got{vendor: true, refresh: w.refresh}, ferr
	}
	g.tok = tok // the Cache dates it from sent, as a token of its own
	return g, nil
}

// load reads the record. A malformed one is treated as none, so that the
// next mint writes over it with its version.
//
// load and save bound each store call by FetchTimeout: a store that does
// not answer (Vault behind a silent network) is unavailable after
// token_timeout, as a vendor that does not answer is, and not after its
// client's own longer timeout, which callers would otherwise wait out
// (TestSharedHungStoreBoundedByFetchTimeout).
func (fl *fleet) load(ctx context.Context) (sharing.Record, int, error) {
	ctx, cancel := context.WithTimeout(ctx, fl.timeout)
	defer cancel()
	rec, ver, err := fl.Store.Load(ctx, fl.name)
	if errors.Is(err, sharing.ErrMalformed) {
		fl.log.Warn("the shared record is malformed; the next token minted replaces it", zap.Error(err))
		return sharing.Record{}, ver, nil
	}
	return rec, ver, err
}

// save writes rec if the record's version is still cas (see load).
func (fl *fleet) save(ctx context.Context, rec sharing.Record, cas int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, fl.timeout)
	defer cancel()
	return fl.Store.Save(ctx, fl.name, rec, cas)
}

// reauthBounded reports whether a 401 on rec's token falls within the
// fleet's reauth_min_interval.
func (fl *fleet) reauthBounded(rec sharing.Record, now time.Time) bool {
	return rec.ReauthGeneration != 0 && rec.Generation >= rec.ReauthGeneration &&
		now.Sub(rec.LastReauth) < fl.reauth
}

// pause waits before reading the store again and returns the next pause.
func (fl *fleet) pause(ctx context.Context, d time.Duration, until time.Time) time.Duration {
	t := time.NewTimer(max(min(d, time.Until(until)), 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return min(2*d, maxPoll)
}

// recordToken is the token a record holds, as the Cache keeps it. The
// refresh token stays in the store: only a lease holder presents it.
func recordToken(r sharing.Record) Token {
	return Token{AccessToken: r.AccessToken, Expiry: r.Expiry, Obtained: r.Obtained,
		RefreshAt: r.RefreshAt, SharedGen: r.Generation, MintedBy: r.MintedBy}
}

func taken(waited bool) string {
	if waited {
		return SharedWaited
	}
	return SharedHit
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
