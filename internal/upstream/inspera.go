package upstream

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// Inspera takes the user's API key in a "code" header and the client id in
// the query, with an empty form body, and answers {"access_token",
// "expires_in"} without a token_type.
type Inspera struct {
	TokenURL string
	Client   *http.Client
}

func (i *Inspera) Fetch(ctx context.Context, creds secrets.Credentials, _ string) (broker.Token, error) {
	q := url.Values{"grant_type": {"authorization_code"}, "client_id": {creds.Get("client_id")}}
	h := http.Header{"Code": {creds.Get("api_key")}}
	resp, b, err := post(ctx, i.Client, i.TokenURL+"?"+q.Encode(), "application/x-www-form-urlencoded", nil, h)
	if err != nil {
		return broker.Token{}, err
	}
	return parseInspera(resp, b)
}

func parseInspera(resp *http.Response, body []byte) (broker.Token, error) {
	if resp.StatusCode/100 != 2 {
		// 409 {"error": "Multiple tokens for user", "description": ...}
		// reaches the broker's conflict backoff through its status.
		return broker.Token{}, vendorError(resp, body, "error", "description")
	}
	var t struct {
		AccessToken string  `json:"access_token"`
		ExpiresIn   seconds `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &t); err != nil || t.AccessToken == "" {
		return broker.Token{}, &broker.FetchError{Status: resp.StatusCode, Malformed: true, Description: "no access_token in the answer"}
	}
	return broker.Token{AccessToken: t.AccessToken, ExpiresIn: t.ExpiresIn.duration()}, nil
}

func (i *Inspera) Inject(h http.Header, tok broker.Token) { bearer(h, tok) }

// KeyHeaders: the API key travels only to the token endpoint, but a caller
// must not be able to send one of its own either.
func (i *Inspera) KeyHeaders() []string { return []string{"Code"} }
