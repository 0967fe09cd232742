// Package upstream holds one adapter per vendor API. An adapter knows how
// its vendor's token endpoint is asked and answers, and which headers its
// API calls carry; it builds requests and parses answers, nothing more:
// caching, retries and scheduling belong to the broker.
package upstream

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
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

// post sends a token request and reads the answer. A transport failure
// comes back as a *broker.FetchError without the URL, which for Inspera
// carries the client_id in its query.
func post(ctx context.Context, client *http.Client, rawURL, contentType string, body []byte, h http.Header) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return nil, nil, fmt.Errorf("token request: %w", err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, &broker.FetchError{Err: stripURL(err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody))
	if err != nil {
		return nil, nil, &broker.FetchError{Err: fmt.Errorf("reading the answer: %w", stripURL(err))}
	}
	return resp, b, nil
}

func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// seconds is a lifetime given as a JSON number or string ("3600"), as some
// token endpoints do.
type seconds int64

func (s *seconds) UnmarshalJSON(b []byte) error {
	str := strings.Trim(string(b), `"`)
	if str == "" || str == "null" {
		*s = 0
		return nil
	}
	f, err := strconv.ParseFloat(str, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("lifetime %q is not a number", str)
	}
	// A negative lifetime is none given; a huge one is capped rather than
	// left to wrap negative in duration.
	*s = seconds(min(max(f, 0), maxSeconds))
	return nil
}

// maxSeconds is the longest lifetime a time.Duration holds, in seconds.
const maxSeconds = float64(math.MaxInt64 / time.Second)

func (s seconds) duration() time.Duration { return time.Duration(s) * time.Second }

// vendorError builds the error for a token answer that is not a token,
// reading the vendor's error code and description from the named fields. A
// field may also be an object, as Inspera's OAuth2Exception is; then its
// own "error" or "message" is used.
func vendorError(resp *http.Response, body []byte, codeField, descField string) *broker.FetchError {
	fe := &broker.FetchError{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header, time.Now())}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) == nil {
		fe.Code = text(m[codeField])
		fe.Description = text(m[descField])
	}
	return fe
}

// text reads a JSON string, or an object's "error"/"message" string.
func text(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return clip(s)
	}
	var o struct{ Error, Message string }
	if json.Unmarshal(raw, &o) == nil {
		return clip(cmp.Or(o.Error, o.Message))
	}
	return ""
}

// retryAfter reads a Retry-After header given in seconds or as an HTTP date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var secs int
	if _, err := fmt.Sscanf(v, "%d", &secs); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// clip bounds vendor text carried into errors and logs.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
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
