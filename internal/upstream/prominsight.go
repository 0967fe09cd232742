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
	tok, err := ask(ctx, p.Client, p.TokenURL, "application/json", body, nil, prominsightAnswer)
	tok.Grant = "client_credentials" // what a client id and secret in a JSON body amount to
	return tok, err
}

func (p *Prominsight) Inject(h http.Header, tok broker.Token) { bearer(h, tok) }

func (p *Prominsight) KeyHeaders() []string { return nil }
