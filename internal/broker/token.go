package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// Token is an access token and what the broker knows of its life.
type Token struct {
	AccessToken string
	// ExpiresIn is the lifetime the vendor gave; the Cache turns it into
	// Expiry from the moment the request was sent. Zero means not given.
	ExpiresIn time.Duration
	// RefreshToken and RefreshExpiresIn are set by grants that issue one:
	// the refresh token to present next, "" for none.
	RefreshToken     string
	RefreshExpiresIn time.Duration
	// Grant names the grant the adapter used (client_credentials, password,
	// refresh_token, ...), for the log; "" when unknown.
	Grant string

	// Set by the Cache.
	Expiry        time.Time
	RefreshExpiry time.Time
	Obtained      time.Time
	Gen           uint64 // generation: which fetch produced it, for Invalidate
	// Header is what an API call carries with this token (Authorization,
	// vendor key headers), built when the token is installed from the token
	// and the credentials it was minted from (Options.Authorize), so that
	// the data plane never holds a credentials object.
	Header Header

	// Set for a token shared through the fleet's store (CONTRACT.md §7).
	SharedGen uint64    // the store's generation; 0 for a token minted here alone
	RefreshAt time.Time // the stored refresh point
	MintedBy  string    // the minting replica, <hostname>-<pid>
}

// String never prints a token value, nor a header's.
func (t Token) String() string {
	return fmt.Sprintf("token{gen=%d expiry=%s headers=%s}", t.Gen, t.Expiry.Format(time.RFC3339), t.Header)
}

// Format makes every fmt verb print String.
func (t Token) Format(f fmt.State, _ rune) { fmt.Fprint(f, t.String()) }

// MarshalJSON writes what String does, so that a token logged as a field
// (zap.Any) shows no value either.
func (t Token) MarshalJSON() ([]byte, error) { return json.Marshal(t.String()) }

// Header is the set of headers a token authorizes, by canonical name.
// Every value holds a secret (the token, an API key), so it prints and
// marshals as its names only.
type Header http.Header

// SetOn sets every header of h on dst, replacing what dst had under those
// names: injected headers replace, never append (CONTRACT.md §3). dst
// shares h's value slices, their capacity cut to their length, so that an
// append to one (http.Header.Add) copies it; nothing may change a value in
// place. (A copy for every request was a sixteenth of the data plane's
// allocations.)
func (h Header) SetOn(dst http.Header) {
	for k, v := range h {
		dst[k] = v[:len(v):len(v)]
	}
}

// Names are h's header names, sorted.
func (h Header) Names() []string {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// String names the headers, never a value.
func (h Header) String() string { return "[" + strings.Join(h.Names(), ",") + "]" }

// Format makes every fmt verb, %#v included, print String.
func (h Header) Format(f fmt.State, _ rune) { fmt.Fprint(f, h.String()) }

// MarshalJSON writes only the names.
func (h Header) MarshalJSON() ([]byte, error) { return json.Marshal(h.Names()) }

// Fetcher obtains a token from one vendor's token endpoint. It builds the
// request and parses the answer, nothing more: no caching, retries or
// goroutines, so that the Cache alone decides when to call it and never runs
// two calls of one upstream at once. refreshToken is a still-valid refresh
// token from the last fetch, or "" to use the primary grant. The Token's
// RefreshToken replaces it: a refresh grant answered without a new one
// returns the one it was given (RFC 6749 §6), and a FetchError with
// RefreshRefused drops it.
type Fetcher interface {
	Fetch(ctx context.Context, creds secrets.Credentials, refreshToken string) (Token, error)
}

// FetchError is a token endpoint's answer that was not a usable token, or
// the failure to get an answer at all. Adapters return it; the Cache
// classifies it in one place (classify) for backoff and the caller's error.
type FetchError struct {
	Status      int           // HTTP status, 0 when no answer arrived
	Code        string        // RFC 6749 "error", or the vendor's error text
	Description string        // RFC 6749 "error_description", or the vendor's message
	RetryAfter  time.Duration // from a Retry-After header
	Malformed   bool          // an answer that held no usable token: a 2xx without one, or a redirect
	Err         error         // the transport error, when Status is 0
	// RefreshRefused: the vendor refused the refresh token Fetch was given,
	// whatever came after; the Cache never presents it again.
	RefreshRefused bool
}

func (e *FetchError) Error() string {
	switch {
	case e.Status == 0 && e.Err != nil:
		return "unreachable: " + e.Err.Error()
	case e.Malformed:
		return fmt.Sprintf("HTTP %d without a usable token (%s)", e.Status, e.Description)
	}
	msg := fmt.Sprintf("HTTP %d", e.Status)
	if e.Code != "" {
		msg += ", " + e.Code
	}
	if e.Description != "" {
		msg += ": " + e.Description
	}
	return msg
}

func (e *FetchError) Unwrap() error { return e.Err }

// Error codes the proxy answers with (CONTRACT.md §4).
const (
	CodeTokenEndpoint = "token_endpoint_error"
	CodeUnavailable   = "credentials_unavailable"
)

// Error is why a Cache cannot hand out a token now. Its message is safe to
// show a caller: it never holds a credential or token.
type Error struct {
	Code       string // CodeTokenEndpoint or CodeUnavailable
	Msg        string
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Msg }

// AsError returns err's *Error, if it is one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
