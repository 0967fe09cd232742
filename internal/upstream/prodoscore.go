package upstream

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// Prodoscore is Keycloak: a password grant (RFC 6749 §4.3) whose refresh
// tokens (§6) may rotate, each usable once.
type Prodoscore struct {
	TokenURL string
	Client   *http.Client
}

// Fetch uses the refresh token while the broker holds a valid one. When
// Keycloak refuses it (expired, already used or revoked) it falls back to
// the password grant in the same fetch, and marks any failure after that
// RefreshRefused, so that the broker never presents the refused token again.
func (p *Prodoscore) Fetch(ctx context.Context, creds secrets.Credentials, refresh string) (broker.Token, error) {
	id := creds.Get("client_id")
	if refresh != "" {
		tok, err := p.grant(ctx, url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "refresh_token": {refresh}})
		if !refreshRefused(err) {
			if err == nil && tok.RefreshToken == "" {
				tok.RefreshToken = refresh // no new one issued: the old one stands (§6)
			}
			return tok, err
		}
	}
	tok, err := p.grant(ctx, url.Values{"grant_type": {"password"}, "client_id": {id},
		"username": {creds.Get("username")}, "password": {creds.Get("password")}})
	if fe, ok := errors.AsType[*broker.FetchError](err); ok && refresh != "" {
		fe.RefreshRefused = true
	}
	return tok, err
}

func (p *Prodoscore) grant(ctx context.Context, form url.Values) (broker.Token, error) {
	tok, err := ask(ctx, p.Client, p.TokenURL, formType, []byte(form.Encode()), nil, prodoscoreAnswer)
	tok.Grant = form.Get("grant_type")
	return tok, err
}

// refreshRefused reports whether a refresh grant was refused, in whatever
// shape (shared/VENDORS.md): invalid_grant at any status, or any 4xx but a
// timeout (408) or rate limit (429), readable or not. No answer, a 5xx, a
// 408 or 429, or a 2xx without a token is a failure to retry later with
// the same refresh token.
func refreshRefused(err error) bool {
	fe, ok := errors.AsType[*broker.FetchError](err)
	switch {
	case !ok || fe.Malformed:
		return false
	case fe.Code == "invalid_grant":
		return true
	}
	return fe.Status/100 == 4 && fe.Status != http.StatusRequestTimeout && fe.Status != http.StatusTooManyRequests
}

func (p *Prodoscore) Inject(h http.Header, tok broker.Token) { bearer(h, tok) }

func (p *Prodoscore) KeyHeaders() []string { return nil }
