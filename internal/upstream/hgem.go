package upstream

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// HGEM is an RFC 6749 client-credentials grant (§4.4) that also wants the
// hgem-api-key header, on the token request and on every API call.
type HGEM struct {
	TokenURL string
	Scope    string // space-delimited; must hold hgem-results-api when set
	Client   *http.Client
}

func (g *HGEM) Fetch(ctx context.Context, creds secrets.Credentials, _ string) (broker.Token, error) {
	form := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {creds.Get("client_id")},
		"client_secret": {creds.Get("client_secret")},
	}
	if scope := strings.Join(strings.Fields(g.Scope), " "); scope != "" {
		form.Set("scope", scope)
	}
	h := http.Header{"Hgem-Api-Key": {creds.Get("api_key")}}
	tok, err := ask(ctx, g.Client, g.TokenURL, formType, []byte(form.Encode()), h, hgemAnswer)
	tok.Grant = form.Get("grant_type")
	return tok, err
}

func (g *HGEM) Inject(h http.Header, tok broker.Token) {
	bearer(h, tok)
	h.Set("Hgem-Api-Key", tok.Creds.Get("api_key"))
}

func (g *HGEM) KeyHeaders() []string { return []string{"Hgem-Api-Key"} }
