package sharing

import (
	"context"
	"errors"
	"time"
)

// Record is the shared state of one upstream's token, stored at
// <sharing.vault.path>/<upstream> (CONTRACT.md §7). Every field that holds a
// token is a secret: a Record never goes to a log, an error or /status.
// Zero times mean "not set".
type Record struct {
	AccessToken       string
	Expiry            time.Time // the access token's expiry
	Obtained          time.Time // when the minting replica asked for it
	RefreshAt         time.Time // the stored refresh point: refresh under the lease from here
	RefreshToken      string    // the newest refresh token, when the vendor gives one
	RefreshExpiry     time.Time
	CredentialVersion string // the credential version the token was minted from
	Generation        uint64 // +1 at every mint written back
	MintedBy          string // <hostname>-<pid> of the minting replica

	LeaseHolder string    // who may mint now; "" when nobody holds the lease
	LeaseUntil  time.Time // the lease passes on after this (wall clock)

	// LastReauth is when the last 401-driven re-mint happened anywhere in
	// the fleet, and ReauthGeneration the generation it minted: the fleet-
	// wide reauth_min_interval (CONTRACT.md §3, §7).
	LastReauth       time.Time
	ReauthGeneration uint64

	// A failed mint, so that the fleet backs off together instead of every
	// replica asking the vendor in turn.
	RetryAt        time.Time // no mint from FailureVersion before this
	FailureCode    string    // the contract error code callers get meanwhile
	FailureMsg     string    // safe for callers: never a credential or token
	FailureVersion string    // the credential version that failed
}

// ErrConflict is a check-and-set write that lost: another replica wrote
// first. Re-read and decide again.
var ErrConflict = errors.New("sharing: another replica wrote first (check-and-set)")

// ErrMalformed is a stored record that cannot be read as one. Load returns
// it with the record's version, so that a Save with that version (the next
// mint) writes over it: a damaged record heals instead of keeping the fleet
// off its store.
var ErrMalformed = errors.New("malformed record")

// Store keeps one Record per upstream with check-and-set writes. Any error
// other than ErrConflict means the store cannot be used now (unreachable,
// refused, not a KV v2 mount); errors never hold a record's secrets.
// Implementations are safe for concurrent use.
type Store interface {
	// Load returns the record of upstream name and its version. A record
	// that does not exist yet is the zero Record with version 0; one whose
	// latest version was deleted is the zero Record with that version, which
	// a Save takes as cas.
	Load(ctx context.Context, name string) (Record, int, error)
	// Save writes rec if the stored version is still cas (0: only if there
	// is none yet) and returns the new version, or ErrConflict.
	Save(ctx context.Context, name string, rec Record, cas int) (int, error)
}
