package sharing

import (
	"context"
	"errors"
	"net/url"
	"strings"
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

	// Who the token is for, as the minting replica's config says
	// (Audience): a replica whose upstream differs never uses it.
	AudienceType     string
	AudienceTokenURL string
	AudienceBaseURL  string

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

// Audience is who a shared token is for: the upstream's type, its token
// endpoint and its API's origin, so that a token never goes to a host other
// than the ones it was minted for (CONTRACT.md §3) when two configs use one
// upstream name for different vendors. Nothing in it is secret: URLs keep
// scheme, host and (the token endpoint's) path, never user info or a query.
type Audience struct {
	Type     string // the upstream's type: prominsight, inspera, oauth2, ...
	TokenURL string // scheme://host/path of the token endpoint; "" for none
	BaseURL  string // scheme://host of base_url
}

// NewAudience is the Audience of an upstream of type typ with the given
// token_url and base_url (config values after defaults).
func NewAudience(typ, tokenURL, baseURL string) Audience {
	return Audience{Type: typ, TokenURL: origin(tokenURL, true), BaseURL: origin(baseURL, false)}
}

// origin is raw's scheme://host, with its path if withPath; user info,
// query and fragment are never kept. A URL that does not parse is kept as
// "invalid", which matches no other.
func origin(raw string, withPath bool) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "invalid"
	}
	out := strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host)
	if withPath {
		out += u.EscapedPath()
	}
	return out
}

// Differs names the parts of a and b that differ ("type", "token_url",
// "base_url"), never their values; none when they agree.
func (a Audience) Differs(b Audience) []string {
	var d []string
	if a.Type != b.Type {
		d = append(d, "type")
	}
	if a.TokenURL != b.TokenURL {
		d = append(d, "token_url")
	}
	if a.BaseURL != b.BaseURL {
		d = append(d, "base_url")
	}
	return d
}

// Audience is who rec's token is for; zero in a record written before
// records held one.
func (r Record) Audience() Audience {
	return Audience{Type: r.AudienceType, TokenURL: r.AudienceTokenURL, BaseURL: r.AudienceBaseURL}
}

// SetAudience records who rec's token is for.
func (r *Record) SetAudience(a Audience) {
	r.AudienceType, r.AudienceTokenURL, r.AudienceBaseURL = a.Type, a.TokenURL, a.BaseURL
}

// ErrConflict is a check-and-set write that lost: another replica wrote
// first. Re-read and decide again.
var ErrConflict = errors.New("sharing: another replica wrote first (check-and-set)")

// ErrDenied is the store refusing a call for want of a capability (Vault's
// HTTP 403: a policy without read, create or update on the record's path,
// or a sharing.vault.path outside the policy). It is a configuration error,
// not an outage; the error names the path and the capability.
var ErrDenied = errors.New("sharing: the store refused access (HTTP 403)")

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
