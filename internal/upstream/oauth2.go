package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// HGEM and Prodoscore speak RFC 6749, so golang.org/x/oauth2 builds their
// requests and parses their answers (expires_in as number or string, error
// bodies into RetrieveError, answers read through a 1 MiB limit).

// HGEM is a client-credentials grant that also wants the hgem-api-key
// header, on the token request and on every API call.
type HGEM struct {
	TokenURL string
	Scope    string // space-delimited; must hold hgem-results-api when set
	Client   *http.Client
}

func (g *HGEM) Fetch(ctx context.Context, creds secrets.Credentials, _ string) (broker.Token, error) {
	cfg := clientcredentials.Config{
		ClientID:     creds.Get("client_id"),
		ClientSecret: creds.Get("client_secret"),
		TokenURL:     g.TokenURL,
		Scopes:       strings.Fields(g.Scope),
		AuthStyle:    oauth2.AuthStyleInParams,
	}
	client := *g.Client
	base := g.Client.Transport
	if base == nil {
		base = http.DefaultTransport // what a nil Transport means to http.Client
	}
	client.Transport = wholeAnswer{withHeader{base: base, name: "Hgem-Api-Key", value: creds.Get("api_key")}}
	return fromOAuth2(cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, &client)))
}

func (g *HGEM) Inject(h http.Header, tok broker.Token) {
	bearer(h, tok)
	h.Set("Hgem-Api-Key", tok.Creds.Get("api_key"))
}

func (g *HGEM) KeyHeaders() []string { return []string{"Hgem-Api-Key"} }

// Prodoscore is Keycloak: a password grant whose refresh tokens may rotate.
type Prodoscore struct {
	TokenURL string
	Client   *http.Client
}

// Fetch uses the refresh token while the broker holds a valid one, and falls
// back to the password grant when Keycloak refuses it (invalid_grant:
// expired, already used or revoked).
func (p *Prodoscore) Fetch(ctx context.Context, creds secrets.Credentials, refresh string) (broker.Token, error) {
	cfg := &oauth2.Config{
		ClientID: creds.Get("client_id"),
		Endpoint: oauth2.Endpoint{TokenURL: p.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
	}
	client := *p.Client
	client.Transport = wholeAnswer{p.Client.Transport}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &client)
	if refresh != "" {
		tok, err := fromOAuth2(cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: refresh}).Token())
		var fe *broker.FetchError
		if !errors.As(err, &fe) || fe.Code != "invalid_grant" {
			return tok, err
		}
	}
	return fromOAuth2(cfg.PasswordCredentialsToken(ctx, creds.Get("username"), creds.Get("password")))
}

func (p *Prodoscore) Inject(h http.Header, tok broker.Token) { bearer(h, tok) }

func (p *Prodoscore) KeyHeaders() []string { return nil }

// fromOAuth2 turns x/oauth2's answer into the broker's types.
func fromOAuth2(t *oauth2.Token, err error) (broker.Token, error) {
	if err != nil {
		var re *oauth2.RetrieveError
		var ue *url.Error
		switch {
		case errors.As(err, &re):
			fe := &broker.FetchError{Code: clip(re.ErrorCode), Description: clip(re.ErrorDescription)}
			if re.Response != nil {
				fe.Status = re.Response.StatusCode
				fe.RetryAfter = retryAfter(re.Response.Header, time.Now())
			}
			return broker.Token{}, fe
		case errors.As(err, &ue):
			return broker.Token{}, &broker.FetchError{Err: ue.Err}
		}
		// x/oauth2 could not read or parse a 2xx answer.
		return broker.Token{}, &broker.FetchError{Status: http.StatusOK, Malformed: true,
			Description: clip(strings.TrimPrefix(err.Error(), "oauth2: "))}
	}
	tok := broker.Token{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken}
	switch {
	case t.ExpiresIn > 0:
		tok.ExpiresIn = time.Duration(t.ExpiresIn) * time.Second
	case !t.Expiry.IsZero():
		// A negative expires_in comes through as an Expiry in the past.
		tok.ExpiresIn = max(time.Until(t.Expiry), 0)
	}
	switch v := t.Extra("refresh_expires_in").(type) {
	case float64:
		tok.RefreshExpiresIn = time.Duration(v) * time.Second
	case string:
		n, _ := strconv.Atoi(v)
		tok.RefreshExpiresIn = time.Duration(n) * time.Second
	}
	return tok, nil
}

// withHeader adds one header to every request it carries.
type withHeader struct {
	base        http.RoundTripper
	name, value string
}

func (w withHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(w.name, w.value)
	return w.base.RoundTrip(r)
}

// wholeAnswer reads a token answer within the round trip. x/oauth2 reads
// the body itself and reports a failed read as a plain error, which
// fromOAuth2 could only take for a malformed 200; read here, a connection
// cut mid-answer or a deadline passing is a transport error like any other
// (unreachable or timeout, CONTRACT.md §4: 503, not 502).
type wholeAnswer struct{ base http.RoundTripper } // nil: http.DefaultTransport

func (w wholeAnswer) RoundTrip(r *http.Request) (*http.Response, error) {
	base := w.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}
