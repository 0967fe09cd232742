package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/endpoint"
	"github.com/tokenproxy/tokenproxy/internal/suggest"
	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

// The values an enumerated key takes.
var (
	// Types are the upstream types: the built-in vendors, then the generic
	// types that describe a fifth API in the config (vendor.Generic).
	Types       = append(slices.Clone(vendor.Builtins), vendor.Generic...)
	LogLevels   = []string{"debug", "info", "warn", "error"}
	AuthMethods = []string{"kubernetes", "approle", "token"}
)

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9-]+$`)
	prefixRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ListenerProblems checks the data and admin listen addresses (keys listen
// and admin_listen): each a host:port, and not the same address.
func ListenerProblems(listen, admin string) Problems {
	var ps Problems
	okListen := checkListen(&ps, "listen", listen)
	okAdmin := checkListen(&ps, "admin_listen", admin)
	if okListen && okAdmin && sameListener(listen, admin) {
		ps = append(ps, Problem{Path: "listen", Also: []string{"admin_listen"},
			Msg: fmt.Sprintf("%q and admin_listen %q are the same address; the data and admin planes need one each", listen, admin)})
	}
	return ps
}

// Validate checks a decoded, defaulted config and returns every problem.
// It reads nothing from disk or the network.
func (c *Config) Validate() Problems {
	ps := ListenerProblems(c.Listen, c.AdminListen)
	checkOneOf(&ps, "log_level", c.LogLevel, LogLevels)
	// A zero timeout or interval is refused rather than given a meaning:
	// net/http reads 0 as "no limit", a poll every 0s would never stop.
	if c.ShutdownTimeout.Duration <= 0 {
		ps.add("shutdown_timeout", "must be positive")
	}
	if c.ReadHeaderTimeout.Duration <= 0 {
		ps.add("read_header_timeout", "must be positive")
	}
	if c.Secrets.PollInterval.Duration <= 0 {
		ps.add("secrets.poll_interval", "must be positive")
	}
	if len(c.Upstreams) == 0 {
		ps.add("upstreams", "at least one upstream is required")
	}
	var vaultRefs []string // the credentials keys that name vault:
	for _, name := range c.UpstreamNames() {
		u := c.Upstreams[name]
		p := join("upstreams", name)
		if !nameRE.MatchString(name) {
			ps.add(p, "route name must match [a-z0-9-]+")
		}
		checkOneOf(&ps, p+".type", u.Type, Types)
		checkURL(&ps, p+".base_url", u.BaseURL)
		u.validateVendor(&ps, p)
		src, _, err := ParseRef(u.Credentials)
		if err != nil {
			ps.add(p+".credentials", "%s", err)
		}
		if src == "vault" && err == nil {
			vaultRefs = append(vaultRefs, p+".credentials")
		}
		if u.Timeout.Duration <= 0 {
			ps.add(p+".timeout", "must be positive")
		}
		if u.TokenTimeout.Duration <= 0 {
			ps.add(p+".token_timeout", "must be positive")
		}
		if u.RefreshFraction < 0.1 || u.RefreshFraction > 0.95 {
			ps.add(p+".refresh_fraction", "must be between 0.1 and 0.95")
		}
		if u.ReplayMaxBytes < 0 {
			ps.add(p+".replay_max_bytes", "must not be negative")
		}
		if u.MaxConnections < 0 {
			ps.add(p+".max_connections", "must not be negative")
		}
		if u.Shared != nil && c.Sharing == nil {
			ps.add(p+".shared", "needs a top-level sharing section (CONTRACT §7)")
		}
	}
	if c.Sharing != nil {
		c.validateSharing(&ps)
	}
	if c.Tracing != nil {
		c.Tracing.validate(&ps)
	}
	if c.Secrets.Vault == nil {
		// On the reference, not on the missing section: that has no line,
		// and the user may have meant file: or env: there.
		for _, key := range vaultRefs {
			ps.add(key, "starts with vault:, but there is no secrets.vault section (Vault's address and auth) to read it with")
		}
	}
	if v := c.Secrets.Vault; v != nil {
		// Read with a file, an address not written there came from $VAULT_ADDR.
		v.validate(&ps, c.lines != nil && c.lines["secrets.vault.address"] == 0)
	}
	return ps
}

// validateSharing checks the sharing section (CONTRACT.md §7): it needs
// secrets.vault, a path naming a mount and a prefix, a lease at least twice
// the largest token_timeout of the shared upstreams (a holder must be able to
// mint and write back within it), and a known on_store_unavailable.
func (c *Config) validateSharing(ps *Problems) {
	s := c.Sharing
	if c.Secrets.Vault == nil {
		ps.add("sharing", "needs secrets.vault: shared tokens are kept in Vault")
	}
	mount, prefix, _ := strings.Cut(strings.Trim(s.Vault.Path, "/"), "/")
	switch {
	case s.Vault.Path == "":
		ps.add("sharing.vault.path", "required: <kv-v2-mount>/<prefix>, e.g. secret/tokenproxy/shared")
	case mount == "" || strings.Trim(prefix, "/") == "" || strings.Contains(s.Vault.Path, "//"):
		ps.add("sharing.vault.path", "%q must be <kv-v2-mount>/<prefix>, e.g. secret/tokenproxy/shared", s.Vault.Path)
	}
	if s.Lease.Duration <= 0 {
		ps.add("sharing.lease", "must be positive")
	}
	var longest time.Duration
	var which string
	for _, name := range c.UpstreamNames() {
		if u := c.Upstreams[name]; c.IsShared(name) && u.TokenTimeout.Duration > longest {
			longest, which = u.TokenTimeout.Duration, name
		}
	}
	if s.Lease.Duration > 0 && s.Lease.Duration < 2*longest {
		*ps = append(*ps, Problem{Path: "sharing.lease", Also: []string{join(join("upstreams", which), "token_timeout")},
			Msg: fmt.Sprintf("%s is less than twice the token_timeout of upstream %s (%s): a holder must be able to mint and write back within its lease", s.Lease.Duration, which, longest)})
	}
	checkOneOf(ps, "sharing.on_store_unavailable", s.OnStoreUnavailable, []string{"local", "fail"})
}

// validate checks the tracing section. Plain http is allowed to any host:
// spans carry no credential (a collector's own credentials go in
// OTEL_EXPORTER_OTLP_HEADERS, never in the URL).
func (t *Tracing) validate(ps *Problems) {
	err := endpoint.Check(t.Endpoint, endpoint.AnyHost)
	switch {
	case t.Endpoint == "":
		ps.add("tracing.endpoint", "required: the OTLP/HTTP collector, e.g. http://127.0.0.1:4318")
	case errors.Is(err, endpoint.ErrNotAbsolute) || errors.Is(err, endpoint.ErrScheme):
		// Not echoed: a malformed URL may still hold a password.
		ps.add("tracing.endpoint", "must be an http(s) URL, e.g. http://127.0.0.1:4318")
	case errors.Is(err, endpoint.ErrUserInfo):
		ps.add("tracing.endpoint", "must not carry user info; put a collector's credentials in OTEL_EXPORTER_OTLP_HEADERS")
	case err != nil:
		ps.add("tracing.endpoint", "%s", err)
	}
	if r := t.SampleRatio; r < 0 || r > 1 || r != r {
		ps.add("tracing.sample_ratio", "must be between 0 and 1")
	}
	if t.ServiceName == "" {
		ps.add("tracing.service_name", "must not be empty (leave the key out for %s)", DefaultServiceName)
	}
}

// validate checks the secrets.vault section; fromEnv says the address is
// $VAULT_ADDR's, not written in the file, so that a problem says where to
// look.
func (v *Vault) validate(ps *Problems, fromEnv bool) {
	err := endpoint.Check(v.Address, endpoint.AnyHost)
	what := "the address"
	if fromEnv {
		what = "$VAULT_ADDR"
	}
	switch {
	case v.Address == "" && os.Getenv("VAULT_ADDR") != "":
		// Written empty: the default, $VAULT_ADDR, was decoded over.
		ps.add("secrets.vault.address", "must not be empty (leave the key out to use $VAULT_ADDR)")
	case v.Address == "":
		*ps = append(*ps, Problem{Path: "secrets.vault.address", Msg: "required (or set $VAULT_ADDR)", Env: "VAULT_ADDR"})
	case errors.Is(err, endpoint.ErrNotAbsolute) || errors.Is(err, endpoint.ErrScheme):
		// Shown without user info: a malformed URL may still hold a password.
		ps.add("secrets.vault.address", "%s %q is not an http(s) URL", what, RedactURL(v.Address))
	case errors.Is(err, endpoint.ErrUserInfo):
		// Every message naming the address (a failed login, a failed read,
		// /status, check's lines) would carry it; Vault takes no
		// credentials there anyway.
		ps.add("secrets.vault.address", "%s must not carry user info (a name or password before @): Vault reads none from its address, and every message naming it would show it; log in with auth", what)
	case err != nil && fromEnv:
		ps.add("secrets.vault.address", "$VAULT_ADDR: %s", err)
	case err != nil:
		ps.add("secrets.vault.address", "%s", err)
	}
	a := v.Auth
	switch a.Method {
	case "kubernetes":
		if a.Role == "" {
			ps.add("secrets.vault.auth.role", "required for method kubernetes")
		}
	case "approle":
		if a.RoleIDFile == "" {
			ps.add("secrets.vault.auth.role_id_file", "required for method approle")
		}
		if a.SecretIDFile == "" {
			ps.add("secrets.vault.auth.secret_id_file", "required for method approle")
		}
	case "token":
		if a.TokenFile == "" && os.Getenv("VAULT_TOKEN") == "" {
			*ps = append(*ps, Problem{Path: "secrets.vault.auth.token_file", Msg: "required for method token when $VAULT_TOKEN is not set", Env: "VAULT_TOKEN"})
		}
	default:
		checkOneOf(ps, "secrets.vault.auth.method", a.Method, AuthMethods)
	}
	if v.PollInterval.Duration <= 0 {
		ps.add("secrets.vault.poll_interval", "must be positive")
	}
}

// checkOneOf reports a value outside its enumeration, with the nearest
// known one.
func checkOneOf(ps *Problems, key, value string, known []string) {
	if !slices.Contains(known, value) {
		ps.add(key, "%q is not one of %s%s", value, strings.Join(known, ", "), suggest.DidYouMean(value, known))
	}
}

// checkListen reports whether addr is a host:port to listen on.
func checkListen(ps *Problems, key, addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		ps.add(key, "%q is not host:port", addr)
		return false
	}
	n, err := strconv.Atoi(port)
	switch {
	case err != nil || strings.Trim(port, "0123456789") != "":
		ps.add(key, "%q has no valid port: a port is a number from 0 (any free port) to 65535", addr)
		return false
	case n > 65535:
		ps.add(key, "%q has no valid port: %s is out of range; a port is 0 (any free port) to 65535", addr, port)
		return false
	}
	return true
}

// sameListener reports whether two valid host:port addresses would claim
// the same socket, so that the second listener could not bind: the same
// non-zero port on the same address, however written (localhost is
// 127.0.0.1, as Go listens on it; ::ffff:127.0.0.1 is 127.0.0.1), or on a
// wildcard ("", 0.0.0.0, ::), which Go binds dual-stack and so covers every
// address. Port 0 never conflicts: each listener gets its own port. Other
// host names are compared as written, not resolved (validate stays off the
// network).
func sameListener(a, b string) bool {
	hostA, portA, _ := net.SplitHostPort(a)
	hostB, portB, _ := net.SplitHostPort(b)
	pa, _ := strconv.Atoi(portA)
	pb, _ := strconv.Atoi(portB)
	if pa != pb || pa == 0 {
		return false
	}
	ipA, ipB := listenIP(hostA), listenIP(hostB)
	switch {
	case ipA == nil || ipB == nil:
		return strings.EqualFold(hostA, hostB)
	case ipA.IsUnspecified() || ipB.IsUnspecified():
		return true
	}
	return ipA.Equal(ipB)
}

// listenIP is the address Go binds for host, or nil for a name it would
// have to resolve.
func listenIP(host string) net.IP {
	switch strings.ToLower(host) {
	case "":
		return net.IPv6unspecified
	case "localhost":
		return net.IPv4(127, 0, 0, 1)
	}
	return net.ParseIP(host)
}

// checkURL checks a URL a credential or token is sent to (endpoint.Check,
// LoopbackOnly): credentials must never cross a network in clear text.
func checkURL(ps *Problems, key, raw string) {
	if raw == "" {
		ps.add(key, "required")
		return
	}
	switch err := endpoint.Check(raw, endpoint.LoopbackOnly); {
	case errors.Is(err, endpoint.ErrNotAbsolute):
		ps.add(key, "%q is not an absolute URL", RedactURL(raw))
	case err != nil:
		ps.add(key, "%s", err)
	}
}

// ParseRef splits a credentials reference into its source (vault, file, env)
// and the rest, and checks its form.
func ParseRef(ref string) (source, rest string, err error) {
	source, rest, _ = strings.Cut(ref, ":")
	switch source {
	case "vault":
		mount, path, _ := strings.Cut(rest, "/")
		if mount == "" || strings.Trim(path, "/") == "" {
			return source, rest, errors.New("vault reference must be vault:<kv-mount>/<path>")
		}
	case "file":
		if rest == "" {
			return source, rest, errors.New("file reference must be file:<path>")
		}
	case "env":
		if !prefixRE.MatchString(rest) {
			return source, rest, errors.New("env reference must be env:<PREFIX> with PREFIX a variable-name prefix")
		}
	case "":
		return source, rest, errors.New("required")
	default:
		// Never echo the value: a secret pasted here by mistake must not reach a log.
		return "", rest, errors.New("must be a reference (vault:, file: or env:), never a value")
	}
	return source, rest, nil
}

// UpstreamNames returns the route names in a stable order.
func (c *Config) UpstreamNames() []string {
	names := make([]string, 0, len(c.Upstreams))
	for n := range c.Upstreams {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Warnings are accepted but worth an operator's attention, each located
// as Locate does.
func (c *Config) Warnings() []Problem {
	var ws []Problem
	if host, _, _ := net.SplitHostPort(c.Listen); !endpoint.IsLoopback(host) {
		ws = append(ws, Problem{Path: "listen", Msg: c.Listen + " is not a loopback address: anything that reaches it can call the upstreams with their credentials"})
	}
	if host, _, _ := net.SplitHostPort(c.AdminListen); !endpoint.IsLoopback(host) {
		ws = append(ws, Problem{Path: "admin_listen", Msg: c.AdminListen + " is not a loopback address: anything that reaches it can read upstream state"})
	}
	ws = append(ws, c.forwardShadows()...)
	for i := range ws {
		ws[i] = c.Locate(ws[i])
	}
	return ws
}

// forwardShadows warns of upstreams that forward-proxy mode (CONTRACT.md
// §3) cannot tell apart. A request in absolute form goes to the upstream
// whose base_url has its host and port (no port in a base_url takes none,
// 80 or 443) and the longest base path the request's path lies under, the
// first by name among equals (internal/proxy, Table.forward). So where two
// base_urls have the same host, an overlapping port and the same path, the
// later by name is reached only by route (/{name}/...) for those requests.
// Two accounts at one vendor are a real setup in route mode: a warning,
// not a problem.
func (c *Config) forwardShadows() []Problem {
	type base struct {
		name string
		u    *url.URL
	}
	var bases []base // by name: the proxy's order among equal paths
	for _, name := range c.UpstreamNames() {
		if u, err := url.Parse(c.Upstreams[name].BaseURL); err == nil && u.Host != "" {
			bases = append(bases, base{name, u})
		}
	}
	var ws []Problem
	for j, b := range bases {
		for _, a := range bases[:j] {
			hosts, ok := sharedHost(a.u, b.u)
			if !ok || forwardPath(a.u) != forwardPath(b.u) {
				continue
			}
			where := "under its path " + forwardPath(b.u) + "/"
			if forwardPath(b.u) == "" {
				where = "at any path"
			}
			ws = append(ws, Problem{Path: join(join("upstreams", b.name), "base_url"), Also: []string{join(join("upstreams", a.name), "base_url")},
				Msg: fmt.Sprintf("upstreams %s and %s have the same host and path: forward-proxy requests (HTTP_PROXY) for %s %s all reach %s, the first by name; %s gets them only by route (/%s/...)",
					a.name, b.name, hosts, where, a.name, b.name, b.name)})
			break // one warning per shadowed upstream, naming the one that wins
		}
	}
	return ws
}

// sharedHost reports whether a forward-proxy request can match both base
// URLs' hosts, by the proxy's own rule (endpoint.SameHost: a request that
// one base matches and that names the other), and names the requests that
// do.
func sharedHost(a, b *url.URL) (string, bool) {
	switch {
	case endpoint.SameHost(a, b):
		return b.Host, true
	case endpoint.SameHost(b, a):
		return a.Host, true
	}
	return "", false
}

// forwardPath is a base URL's path as forward-proxy matching compares it:
// escaped, without a trailing slash.
func forwardPath(u *url.URL) string { return strings.TrimSuffix(u.EscapedPath(), "/") }

// validateVendor checks what u's vendor description asks of it: a token_url
// where the vendor has no default, the scope rule, settings the vendor
// reads, and, for the generic types, the description itself (each problem
// at its key path under upstreams.<name>).
func (u *Upstream) validateVendor(ps *Problems, p string) {
	blocks := []struct {
		typ     string
		present bool
	}{{vendor.TypeOAuth2, u.OAuth2 != nil}, {vendor.TypeCustom, u.Custom != nil}, {vendor.TypeStatic, u.Static != nil}}
	for _, b := range blocks {
		if b.present && u.Type != b.typ {
			ps.add(p+"."+b.typ, "is for type %s only", b.typ)
		}
	}
	var inner []vendor.Problem
	switch u.Type {
	case vendor.TypeOAuth2:
		if u.OAuth2 != nil {
			inner = u.OAuth2.Check()
		}
	case vendor.TypeCustom:
		if u.Custom == nil {
			ps.add(p+".custom", "required for type custom: the vendor's description (docs/adding-an-api.md)")
		} else {
			inner = u.Custom.Check()
		}
	case vendor.TypeStatic:
		if u.Static == nil {
			ps.add(p+".static", "required for type static: the headers every API call carries")
		} else {
			inner = u.Static.Check()
		}
	}
	for _, vp := range inner {
		ps.add(join(p, u.Type)+"."+vp.Path, "%s", vp.Msg)
	}
	d, ok := u.Vendor()
	if !ok {
		return // an unknown type or a missing section, reported above
	}
	switch {
	case d.Token == nil && u.TokenURL != "":
		ps.add(p+".token_url", "type %s has no token endpoint", u.Type)
	case d.Token != nil && u.TokenURL == "" && u.BaseURL == "" && d.TokenURL("https://h") != "":
		// The default token endpoint is built on base_url, whose absence
		// is reported already.
	case d.Token != nil && u.TokenURL == "":
		ps.add(p+".token_url", "required for type %s (it has no default token endpoint)", u.Type)
	case u.TokenURL != d.TokenURL(u.BaseURL):
		// A derived token_url has the base_url's problems, already reported.
		checkURL(ps, p+".token_url", u.TokenURL)
	}
	if msg := d.CheckScope(u.Scope); msg != "" {
		ps.add(p+".scope", "%s (the vendor refuses a scope without it)", msg)
	}
	if u.Audience != "" && !d.Uses("audience") {
		ps.add(p+".audience", "type %s sends no audience", u.Type)
	}
	if u.Type == vendor.TypeStatic && u.Shared != nil && *u.Shared {
		ps.add(p+".shared", "a static upstream has no token to share")
	}
}
