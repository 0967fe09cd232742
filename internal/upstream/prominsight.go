package upstream

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// Prominsight asks for tokens with a JSON body and gets them back inside a
// {"success": ..., "data": {...}} envelope with camelCase keys.
type Prominsight struct {
	TokenURL string
	Scope    string // default session.read
	Client   *http.Client
}

func (p *Prominsight) Fetch(ctx context.Context, creds secrets.Credentials, _ string) (broker.Token, error) {
	scope := p.Scope
	if scope == "" {
		scope = "session.read"
	}
	body, err := json.Marshal(map[string]string{
		"client_id":     creds.Get("client_id"),
		"client_secret": creds.Get("client_secret"),
		"scope":         scope,
	})
	if err != nil {
		return broker.Token{}, err
	}
	resp, b, err := post(ctx, p.Client, p.TokenURL, "application/json", body, nil)
	if err != nil {
		return broker.Token{}, err
	}
	return parseProminsight(resp, b)
}

func parseProminsight(resp *http.Response, body []byte) (broker.Token, error) {
	var env struct {
		Success bool `json:"success"`
		Data    struct {
			AccessToken string  `json:"accessToken"`
			TokenType   string  `json:"tokenType"`
			ExpiresIn   seconds `json:"expiresIn"`
		} `json:"data"`
	}
	if resp.StatusCode/100 != 2 {
		return broker.Token{}, vendorError(resp, body, "error", "message")
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return broker.Token{}, &broker.FetchError{Status: resp.StatusCode, Malformed: true, Description: "answer is not the JSON envelope"}
	}
	if !env.Success {
		// A refusal inside a 2xx envelope: treat it as the refusal it is.
		fe := vendorError(resp, body, "error", "message")
		if fe.Code == "" {
			fe.Code = "success false"
		}
		return broker.Token{}, fe
	}
	if env.Data.AccessToken == "" {
		return broker.Token{}, &broker.FetchError{Status: resp.StatusCode, Malformed: true, Description: "no data.accessToken"}
	}
	return broker.Token{AccessToken: env.Data.AccessToken, ExpiresIn: env.Data.ExpiresIn.duration()}, nil
}

func (p *Prominsight) Inject(h http.Header, tok broker.Token) { bearer(h, tok) }

func (p *Prominsight) KeyHeaders() []string { return nil }
