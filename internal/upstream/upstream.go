// Package upstream carries out vendor descriptions (internal/vendor): one
// Adapter, driven by a description, builds a vendor's token requests, reads
// its answers with one reader for all vendors, and builds the headers its
// API calls carry. Adapters build requests and read answers, nothing more:
// caching, retries and scheduling belong to the broker.
package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/redact"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

// Adapter is one upstream's vendor at work: its description with the
// upstream's token URL and settings. It is safe for concurrent use; the
// broker never runs two fetches of one upstream at once anyway.
type Adapter struct {
	tokenURL string
	scope    string // as sent: the setting's words, or the vendor's default
	audience string
	client   *http.Client
	grant    *request // nil: no token endpoint (static)
	refresh  *request // nil: no refresh grant
	answer   vendor.Answer
	headers  map[string]vendor.Template // API call headers, by canonical name
	keys     []string
}

// request is a vendor.Request with its templates parsed.
type request struct {
	method, body           string
	fields, query, headers map[string]vendor.Template
}

// New returns the adapter for upstream u. client is used for token
// requests. An unknown type, or a description whose templates do not parse
// (which validation reports first), is an error.
func New(u config.Upstream, client *http.Client) (*Adapter, error) {
	d, ok := u.Vendor()
	if !ok {
		return nil, fmt.Errorf("unknown upstream type %q", u.Type)
	}
	a := &Adapter{
		tokenURL: u.TokenURL,
		scope:    strings.Join(strings.Fields(u.Scope), " "),
		audience: u.Audience,
		client:   client,
		answer:   d.Answer,
		keys:     d.KeyHeaders(),
	}
	if a.scope == "" {
		a.scope = d.Scope.Default
	}
	var err error
	if d.Token != nil {
		if a.grant, err = parseRequest(d.Token); err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
	}
	if r := d.RefreshRequest(); r != nil {
		if a.refresh, err = parseRequest(r); err != nil {
			return nil, fmt.Errorf("refresh: %w", err)
		}
	}
	if a.headers, err = parseAll(d.Headers, true); err != nil {
		return nil, fmt.Errorf("headers: %w", err)
	}
	return a, nil
}

func parseRequest(r *vendor.Request) (*request, error) {
	out := &request{method: r.MethodOf(), body: r.BodyOf()}
	var err error
	if out.fields, err = parseAll(r.Fields, false); err != nil {
		return nil, err
	}
	if out.query, err = parseAll(r.Query, false); err != nil {
		return nil, err
	}
	if out.headers, err = parseAll(r.Headers, true); err != nil {
		return nil, err
	}
	return out, nil
}

// parseAll parses a map of templates; header names are made canonical.
func parseAll(m map[string]string, headers bool) (map[string]vendor.Template, error) {
	out := make(map[string]vendor.Template, len(m))
	for k, v := range m {
		t, err := vendor.ParseTemplate(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		if headers {
			k = http.CanonicalHeaderKey(k)
		}
		out[k] = t
	}
	return out, nil
}

// staticLifetime is how long a static upstream's token is held: it is
// made from the credentials alone, and made anew when they change.
const staticLifetime = 24 * time.Hour

// Fetch asks the token endpoint for a token (broker.Fetcher). With a
// refresh token and a refresh grant it presents the refresh token first;
// when the vendor refuses it (expired, already used or revoked) it falls
// back to the primary grant in the same fetch, and marks any failure after
// that RefreshRefused, so that the broker never presents the refused token
// again. A refresh answer without a new refresh token keeps the one
// presented (RFC 6749 §6). A static upstream's token is made from the
// credentials alone: no request.
func (a *Adapter) Fetch(ctx context.Context, creds secrets.Credentials, refresh string) (broker.Token, error) {
	if a.grant == nil {
		return broker.Token{AccessToken: "static:" + creds.Version(), ExpiresIn: staticLifetime, Grant: "static"}, nil
	}
	v := a.values(creds)
	if refresh != "" && a.refresh != nil {
		v.RefreshToken = refresh
		tok, err := a.ask(ctx, a.refresh, v)
		if !refreshRefused(err) {
			if err == nil && tok.RefreshToken == "" {
				tok.RefreshToken = refresh // no new one issued: the old one stands (§6)
			}
			return tok, err
		}
		v.RefreshToken = ""
	}
	tok, err := a.ask(ctx, a.grant, v)
	if fe, ok := errors.AsType[*broker.FetchError](err); ok && refresh != "" && a.refresh != nil {
		fe.RefreshRefused = true
	}
	return tok, err
}

func (a *Adapter) values(creds secrets.Credentials) vendor.Values {
	return vendor.Values{Credential: creds.Get, Scope: a.scope, Audience: a.audience}
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

// Header builds the headers an API call carries with accessToken, from the
// description and creds (broker.Options.Authorize). A value that comes out
// empty is not set.
func (a *Adapter) Header(accessToken string, creds secrets.Credentials) broker.Header {
	v := a.values(creds)
	v.Token = accessToken
	h := make(broker.Header, len(a.headers))
	for k, t := range a.headers {
		if s := t.Expand(v); s != "" {
			h[k] = []string{s}
		}
	}
	return h
}

// Static reports whether tokens are made from the credentials alone, with
// no token endpoint (type static).
func (a *Adapter) Static() bool { return a.grant == nil }

// KeyHeaders are the vendor's credential headers besides Authorization,
// canonical and sorted; a caller's copies are removed before injection.
func (a *Adapter) KeyHeaders() []string { return a.keys }

// maxTokenBody bounds what is read of a token endpoint's answer.
const maxTokenBody = 1 << 20

// formType is the media type of RFC 6749 token requests (§4).
const formType = "application/x-www-form-urlencoded"

// ask sends one token request and reads the answer. A transport failure, a
// body cut short included, comes back as a *broker.FetchError without the
// URL, whose query may carry a credential (Inspera's client_id).
func (a *Adapter) ask(ctx context.Context, r *request, v vendor.Values) (broker.Token, error) {
	rawURL := a.tokenURL
	q := expand(r.query, v)
	if len(q) > 0 {
		sep := "?"
		if strings.Contains(rawURL, "?") {
			sep = "&"
		}
		rawURL += sep + url.Values(q).Encode()
	}
	var body []byte
	contentType := ""
	fields := expand(r.fields, v)
	switch r.body {
	case vendor.BodyJSON:
		flat := make(map[string]string, len(fields))
		for k, vs := range fields {
			flat[k] = vs[0]
		}
		b, err := json.Marshal(flat)
		if err != nil {
			return broker.Token{}, fmt.Errorf("token request: %w", err)
		}
		body, contentType = b, "application/json"
	case vendor.BodyForm:
		body, contentType = []byte(url.Values(fields).Encode()), formType
	}
	req, err := http.NewRequestWithContext(ctx, r.method, rawURL, bytes.NewReader(body))
	if err != nil {
		return broker.Token{}, fmt.Errorf("token request: %w", stripURL(err))
	}
	for k, vs := range expand(r.headers, v) {
		req.Header[k] = vs
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	// What the answer must not repeat in an error: every secret this
	// request carries, as sent (internal/redact adds every encoding).
	var hide redact.Set
	for _, m := range []map[string]vendor.Template{r.fields, r.query, r.headers} {
		for _, t := range m {
			hide.Add(t.Secrets(v)...)
		}
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return broker.Token{}, &broker.FetchError{Err: stripURL(err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody))
	if err != nil {
		return broker.Token{}, &broker.FetchError{Err: fmt.Errorf("reading the answer: %w", stripURL(err))}
	}
	tok, err := readAnswer(a.answer, resp, b, &hide)
	tok.Grant = grantOf(fields, q)
	return tok, err
}

// grantOf names the grant a token request used, for the debug log: its
// grant_type (RFC 6749 §4), or client_credentials for a vendor that sends
// a client's id and secret without one (PROMinsight).
func grantOf(fields, query map[string][]string) string {
	for _, m := range []map[string][]string{fields, query} {
		if g := m["grant_type"]; len(g) > 0 {
			return g[0]
		}
	}
	return "client_credentials"
}

// expand fills a map of templates, leaving out values that come out empty
// (an unset scope).
func expand(m map[string]vendor.Template, v vendor.Values) map[string][]string {
	out := make(map[string][]string, len(m))
	for k, t := range m {
		if s := t.Expand(v); s != "" {
			out[k] = []string{s}
		}
	}
	return out
}

func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Transport is the HTTP transport for one upstream's hosts: the system roots
// plus caFile, if given, and bounded dial and handshake times.
func Transport(caFile string) (*http.Transport, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", caFile)
		}
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}, nil
}

// TokenClient is the client for token requests. It never follows a
// redirect: a token request carries secrets in its body and vendor headers
// (which Go would resend to another host), so a redirect is an answer.
func TokenClient(t http.RoundTripper, timeout time.Duration) *http.Client {
	return &http.Client{
		Transport:     t,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
