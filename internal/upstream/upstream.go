// Package upstream holds one adapter per vendor API. An adapter knows how
// its vendor's token endpoint is asked, and which headers its API calls
// carry; where its answers keep the token is data (Answer), read by one
// reader for all vendors. Adapters build requests and read answers, nothing
// more: caching, retries and scheduling belong to the broker.
package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/config"
)

// Adapter is what the proxy and the broker need from a vendor.
type Adapter interface {
	broker.Fetcher
	// Inject sets the credentials headers of an API call: the token, and
	// any vendor key from the credentials the token was minted from.
	Inject(h http.Header, tok broker.Token)
	// KeyHeaders are the vendor's credential headers besides Authorization;
	// a caller's copies are removed before injection.
	KeyHeaders() []string
}

// New returns the adapter for u.Type. client is used for token requests.
func New(u config.Upstream, client *http.Client) (Adapter, error) {
	switch u.Type {
	case "prominsight":
		return &Prominsight{TokenURL: u.TokenURL, Scope: u.Scope, Client: client}, nil
	case "inspera":
		return &Inspera{TokenURL: u.TokenURL, Client: client}, nil
	case "hgem":
		return &HGEM{TokenURL: u.TokenURL, Scope: u.Scope, Client: client}, nil
	case "prodoscore":
		return &Prodoscore{TokenURL: u.TokenURL, Client: client}, nil
	}
	return nil, fmt.Errorf("unknown upstream type %q", u.Type)
}

// bearer sets the Authorization header every vendor takes.
func bearer(h http.Header, tok broker.Token) {
	h.Set("Authorization", "Bearer "+tok.AccessToken)
}

// maxTokenBody bounds what is read of a token endpoint's answer.
const maxTokenBody = 1 << 20

// formType is the media type of RFC 6749 token requests (§4).
const formType = "application/x-www-form-urlencoded"

// ask sends a token request and reads the answer as a says. A transport
// failure, a body cut short included, comes back as a *broker.FetchError
// without the URL, which for Inspera carries the client_id in its query.
func ask(ctx context.Context, client *http.Client, rawURL, contentType string, body []byte, h http.Header, a Answer) (broker.Token, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return broker.Token{}, fmt.Errorf("token request: %w", err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return broker.Token{}, &broker.FetchError{Err: stripURL(err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody))
	if err != nil {
		return broker.Token{}, &broker.FetchError{Err: fmt.Errorf("reading the answer: %w", stripURL(err))}
	}
	return a.Read(resp, b)
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
