package upstream

import (
	"context"
	"net/http"
	"net/url"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// Inspera takes the user's API key in a "code" header and the client id in
// the query, with an empty form body, and answers {"access_token",
// "expires_in"} without a token_type. Its 409 ("Multiple tokens for user")
// reaches the broker's conflict backoff through the status.
type Inspera struct {
	TokenURL string
	Client   *http.Client
}

func (i *Inspera) Fetch(ctx context.Context, creds secrets.Credentials, _ string) (broker.Token, error) {
	q := url.Values{"grant_type": {"authorization_code"}, "client_id": {creds.Get("client_id")}}
	h := http.Header{"Code": {creds.Get("api_key")}}
	tok, err := ask(ctx, i.Client, i.TokenURL+"?"+q.Encode(), formType, nil, h, insperaAnswer)
	tok.Grant = q.Get("grant_type")
	return tok, err
}

func (i *Inspera) Inject(h http.Header, tok broker.Token) { bearer(h, tok) }

// KeyHeaders: the API key travels only to the token endpoint, but a caller
// must not be able to send one of its own either.
func (i *Inspera) KeyHeaders() []string { return []string{"Code"} }
