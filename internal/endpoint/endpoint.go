// Package endpoint owns the rules for the URLs a config names (an
// upstream's base_url and token_url, a custom token.url, Vault's address,
// the trace collector's endpoint): what makes one a place a connection can
// go, and what keeps a credential out of one (Check), and which requests
// reach a base_url's host in forward-proxy mode (SameHost). Config
// validation and the vendor descriptions' checks both use Check, so that
// every URL-valued key refuses the same things; the data plane and config
// validation both use SameHost, so that validate's warnings follow routing.
package endpoint

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Plain says where a URL may use http rather than https.
type Plain int

const (
	// LoopbackOnly: https, or http to this machine (local simulators).
	// For URLs a credential or token is sent to: it must never cross a
	// network in clear text.
	LoopbackOnly Plain = iota
	// AnyHost: http or https to any host. For URLs that carry no
	// credential of ours (a trace collector) or whose TLS is the
	// operator's call (Vault's address, as Vault's own client allows).
	AnyHost
)

// The faults Check reports, for callers that add advice of their own
// (errors.Is). PortError is the other.
var (
	ErrNotAbsolute = errors.New("is not an absolute URL")
	ErrScheme      = errors.New("must be an http or https URL")
	ErrPlainHTTP   = errors.New("must use https (http is allowed only for a loopback host)")
	ErrUserInfo    = errors.New("must not carry user info")
	ErrQuery       = errors.New("must not have a query or fragment")
)

// PortError is a port no TCP connection can use: not a number, or outside
// 1–65535 (RFC 793 §3.1: 16 bits; port 0 is reserved and cannot be dialled).
type PortError struct {
	// Port is the number as written, or "" when it is not a number: then
	// it is not shown, since a URL that does not parse may hold a password
	// where its port would be (https://user:secret/path).
	Port string
}

func (e *PortError) Error() string {
	if e.Port == "" {
		return "has a port that is not a number; a port is 1 to 65535 (or none, for the scheme's default)"
	}
	return fmt.Sprintf("port %s is out of range; a port is 1 to 65535 (or none, for the scheme's default)", e.Port)
}

// Check returns what keeps raw from being an endpoint URL, or nil: it must
// be absolute with a host name, http(s) as plain allows, without user info,
// query or fragment, and with a port, if any, from 1 to 65535 (an empty one,
// "https://h:/", is the scheme's default, RFC 3986 §3.2.3). Its errors
// never quote raw.
func Check(raw string, plain Plain) error {
	u, err := url.Parse(raw)
	if err != nil {
		if _, ok := rawPort(raw); ok {
			// url.Parse refuses a port that is not digits; say so.
			return &PortError{}
		}
		return ErrNotAbsolute
	}
	switch {
	case u.Host == "" || u.Opaque != "" || u.Hostname() == "":
		return ErrNotAbsolute
	case u.Scheme != "http" && u.Scheme != "https" && plain == AnyHost:
		return ErrScheme
	case u.Scheme != "https" && !(u.Scheme == "http" && (plain == AnyHost || IsLoopback(u.Hostname()))):
		return ErrPlainHTTP
	case u.User != nil:
		return ErrUserInfo
	case u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(raw, "?#"):
		return ErrQuery
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return &PortError{Port: p}
		}
	}
	return nil
}

// rawPort is the port of a URL that url.Parse refused, when its authority
// has one that is not digits: true when that is what is wrong with it.
func rawPort(raw string) (string, bool) {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "", false
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	rest = rest[strings.LastIndexByte(rest, '@')+1:]
	_, port, err := net.SplitHostPort(rest)
	if err != nil || port == "" {
		return "", false
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return port, true
		}
	}
	return "", false
}

// IsLoopback reports whether host (no port) names this machine only:
// localhost or a loopback address.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// SameHost reports whether a request for req reaches the host of base, as
// forward-proxy mode matches them (CONTRACT.md §3): the host names agree
// (case aside), and the request names base's port when base names one, or,
// when base names none, no port or a default one (80 or 443).
func SameHost(base, req *url.URL) bool {
	if !strings.EqualFold(base.Hostname(), req.Hostname()) {
		return false
	}
	if p := base.Port(); p != "" {
		return req.Port() == p
	}
	switch req.Port() {
	case "", "80", "443":
		return true
	}
	return false
}
