// Package config owns tokenproxy's configuration file: its typed form, the
// strict YAML decoding that names every unknown or mistyped key by its path,
// the defaults, and the one Validate that reports every problem at once.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

// Config is the whole configuration file (CONTRACT.md §2).
type Config struct {
	// lines are the key paths' line numbers in the file read, for Locate.
	lines map[string]int `yaml:"-"`

	Listen          string    `yaml:"listen"`
	AdminListen     string    `yaml:"admin_listen"`
	LogLevel        string    `yaml:"log_level"`
	ShutdownTimeout Duration  `yaml:"shutdown_timeout"`
	DrainDelay      Duration  `yaml:"drain_delay"`
	Secrets         Secrets   `yaml:"secrets"`
	Upstreams       Upstreams `yaml:"upstreams"`
	Sharing         *Sharing  `yaml:"sharing"`
	Tracing         *Tracing  `yaml:"tracing"`

	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers, on either listener (slow-header clients).
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// AdminPprof serves Go's profiler under /debug/pprof/ on the admin
	// listener. Off by default: a profile shows the process's memory.
	AdminPprof bool `yaml:"admin_pprof"`
}

// Secrets says where credentials references are resolved.
type Secrets struct {
	Vault *Vault `yaml:"vault"`
	// PollInterval is how often file: and env: credentials are re-read when
	// no vault section sets one.
	PollInterval Duration `yaml:"poll_interval"`
}

// Vault configures the Vault client used for vault: references.
type Vault struct {
	Address      string    `yaml:"address"`
	Namespace    string    `yaml:"namespace"`
	CAFile       string    `yaml:"ca_file"`
	Auth         VaultAuth `yaml:"auth"`
	PollInterval Duration  `yaml:"poll_interval"`
}

// VaultAuth selects and configures the Vault login method.
type VaultAuth struct {
	Method       string `yaml:"method"`
	Mount        string `yaml:"mount"`
	Role         string `yaml:"role"`
	JWTFile      string `yaml:"jwt_file"`
	RoleIDFile   string `yaml:"role_id_file"`
	SecretIDFile string `yaml:"secret_id_file"`
	TokenFile    string `yaml:"token_file"`
}

// Upstream is one vendor API reachable under /{name}/.
type Upstream struct {
	Type        string   `yaml:"type"`
	BaseURL     string   `yaml:"base_url"`
	TokenURL    string   `yaml:"token_url"`
	Scope       string   `yaml:"scope"`
	Credentials string   `yaml:"credentials"`
	CAFile      string   `yaml:"ca_file"`
	Timeout     Duration `yaml:"timeout"`

	// Extensions beyond CONTRACT.md §2.
	TokenTimeout    Duration `yaml:"token_timeout"`
	RefreshFraction float64  `yaml:"refresh_fraction"`
	ReplayMaxBytes  int64    `yaml:"replay_max_bytes"`
	MaxConnections  int64    `yaml:"max_connections"`

	// ReauthMinInterval bounds 401-driven re-mints: at most one per
	// interval (CONTRACT.md §3).
	ReauthMinInterval Duration `yaml:"reauth_min_interval"`
	// Shared says whether this upstream's token is shared through
	// `sharing` (CONTRACT.md §7); nil means yes when sharing is configured.
	Shared *bool `yaml:"shared"`

	// Audience is sent as {audience} (type oauth2: the audience form
	// field, as Auth0 and others take it).
	Audience string `yaml:"audience,omitempty"`
	// The generic types' descriptions (docs/adding-an-api.md): one, for
	// type oauth2 (optional), custom or static.
	OAuth2 *vendor.OAuth2      `yaml:"oauth2,omitempty"`
	Custom *vendor.Description `yaml:"custom,omitempty"`
	Static *vendor.Static      `yaml:"static,omitempty"`
}

// Vendor is the description of u's vendor: a built-in one by type, or the
// one its oauth2, custom or static section gives. False for an unknown
// type, or a generic type without its section.
func (u *Upstream) Vendor() (*vendor.Description, bool) {
	switch u.Type {
	case vendor.TypeOAuth2:
		var o vendor.OAuth2
		if u.OAuth2 != nil {
			o = *u.OAuth2
		}
		d := o.Describe()
		return &d, true
	case vendor.TypeCustom:
		return u.Custom, u.Custom != nil
	case vendor.TypeStatic:
		if u.Static == nil {
			return nil, false
		}
		d := u.Static.Describe()
		return &d, true
	}
	return vendor.Builtin(u.Type)
}

// RequiredKeys are the credential keys u's vendor needs; nil for a type
// that has no description.
func (u *Upstream) RequiredKeys() []string {
	if d, ok := u.Vendor(); ok {
		return d.RequiredKeys()
	}
	return nil
}

// Sharing makes the replicas of a fleet use one token per upstream,
// coordinated through Vault KV v2 check-and-set (CONTRACT.md §7).
type Sharing struct {
	Vault              SharingVault `yaml:"vault"`
	Lease              Duration     `yaml:"lease"`
	OnStoreUnavailable string       `yaml:"on_store_unavailable"`
}

// Tracing sends OpenTelemetry spans of the data plane over OTLP/HTTP
// (protobuf); absent, nothing is traced. The exporter's standard
// environment variables (OTEL_EXPORTER_OTLP_HEADERS, _CERTIFICATE,
// _COMPRESSION, _TIMEOUT) apply too, so that a collector's credentials
// stay out of this file.
type Tracing struct {
	// Endpoint is the collector's URL: http(s)://host:4318, to which
	// /v1/traces is added when it has no path, or the full traces URL.
	Endpoint string `yaml:"endpoint"`
	// SampleRatio is the share of traces started here that are recorded,
	// 0 to 1 (default 1); a caller's traceparent decides for its own trace.
	SampleRatio float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name resource attribute (default tokenproxy).
	ServiceName string `yaml:"service_name"`
}

// SharingVault is where the shared tokens live: <kv-v2-mount>/<prefix>.
type SharingVault struct {
	Path string `yaml:"path"`
}

// IsShared reports whether upstream name's token is shared across the
// fleet. A static upstream has no token endpoint, so nothing to share.
func (c *Config) IsShared(name string) bool {
	u, ok := c.Upstreams[name]
	return ok && c.Sharing != nil && u.Type != vendor.TypeStatic && (u.Shared == nil || *u.Shared)
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration struct{ time.Duration }

// UnmarshalYAML parses a Go duration string. A malformed one leaves the
// default in place: the schema has already reported it with its key path.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if v, err := time.ParseDuration(n.Value); err == nil {
		d.Duration = v
	}
	return nil
}

// MarshalYAML writes the duration back as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Load reads, decodes, defaults and validates the file at path. A config that
// cannot be used returns a *Problems error listing every problem. Relative
// paths in it resolve against the file's directory (ResolvePaths).
func Load(path string) (*Config, error) {
	cfg, ps := Inspect(path)
	if len(ps) > 0 {
		return nil, &ps
	}
	return cfg, nil
}

// Parse is Load for bytes already in hand; relative paths stay relative to
// the working directory, and problems of the whole text are located on
// "config".
func Parse(b []byte) (*Config, error) {
	cfg, ps := parse("config", "", b)
	if len(ps) > 0 {
		return nil, &ps
	}
	return cfg, nil
}

// Inspect returns every problem of the file at path, and the config as far
// as it could be decoded (nil when it could not be read or parsed), so that
// `tokenproxy validate` can check what it can of a broken config. Problems
// of the file as a whole are located on path (and a line, for YAML syntax).
func Inspect(path string) (*Config, Problems) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // path is named already
		}
		return nil, Problems{{Path: path, Msg: "cannot read the config: " + err.Error()}}
	}
	return parse(path, filepath.Dir(path), b)
}

// parse decodes b, the text of the config file name, resolving relative
// paths against dir ("" leaves them as they are).
func parse(name, dir string, b []byte) (*Config, Problems) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Problems{{Path: name, Msg: "empty config"}}
		}
		return nil, Problems{syntaxProblem(name, b, err)}
	}
	var ps Problems
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		// Everything after the first document would be silently ignored.
		ps.add(fmt.Sprintf("%s:%d", name, next.Line), "a second YAML document starts here (after ---); one config is one document")
	case !errors.Is(err, io.EOF):
		return nil, Problems{syntaxProblem(name, b, err)}
	}
	if root.Content[0].Kind != yaml.MappingNode {
		return nil, append(ps, Problem{Path: name, Msg: "must be a mapping of settings (key: value lines)"})
	}
	s := &schema{file: name, ps: ps, lines: map[string]int{}}
	s.check("", root.Content[0], typeOfConfig)
	ps = s.ps
	cfg := Defaults()
	// Decoding skips unknown keys and leaves mistyped values at their
	// defaults; both are already in ps, and the rest is still worth
	// validating.
	var te *yaml.TypeError
	if err := root.Content[0].Decode(&cfg); err != nil && !errors.As(err, &te) {
		return nil, append(ps, Problem{Path: name, Msg: err.Error()})
	}
	cfg.ResolvePaths(dir)
	cfg.derive()
	cfg.lines = s.lines
	reported := map[string]bool{}
	for _, p := range ps {
		reported[p.Path] = true
	}
	for _, p := range cfg.Validate() {
		// A key the schema already found wrong (a negative duration, say)
		// is reported once, not again as an invalid setting.
		if !reported[p.Path] {
			ps = append(ps, cfg.Locate(p))
		}
	}
	return &cfg, ps
}

// Locate adds to p the lines of the keys it is about, when the config was
// read from a file: " (line 4)", or " (lines 1 and 2)" for two keys. A key
// that is not written (a required key left out, a default taken from the
// environment) names the line of its nearest written ancestor, and which
// one: " (line 3, under upstreams.l5)", where the key belongs.
func (c *Config) Locate(p Problem) Problem {
	var lines []string
	under := ""
	for _, k := range append([]string{p.Path}, p.Also...) {
		l, at := c.lineOf(k)
		if l == 0 {
			continue
		}
		lines = append(lines, strconv.Itoa(l))
		if at != k {
			under = at
		}
	}
	switch {
	case len(lines) == 1 && under != "":
		p.Msg += " (line " + lines[0] + ", under " + under + ")"
	case len(lines) == 1:
		p.Msg += " (line " + lines[0] + ")"
	case len(lines) > 1:
		p.Msg += " (lines " + strings.Join(lines, " and ") + ")"
	}
	return p
}

// lineOf is the line of key path k in the file, or of its nearest written
// ancestor, and the path found; 0 when neither is written.
func (c *Config) lineOf(k string) (int, string) {
	for p, ok := k, true; ok; p, ok = parentKey(p) {
		if l := c.lines[p]; l > 0 {
			return l, p
		}
	}
	return 0, ""
}

// parentKey is the key path that holds the last key of p, as join and the
// schema write paths: "a.b" for "a.b.c" and for "a.b[2]"; a quoted key's
// dots are its own. False for a top-level key.
func parentKey(p string) (string, bool) {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i > 0 {
			return p[:i], true
		}
	}
	last, quoted := -1, false
	for i := 0; i < len(p); i++ {
		switch {
		case quoted && p[i] == '\\':
			i++ // an escaped character inside a quoted key
		case p[i] == '"':
			quoted = !quoted
		case !quoted && p[i] == '.':
			last = i
		}
	}
	if last < 0 {
		return "", false
	}
	return p[:last], true
}

// syntaxProblem names a YAML syntax error of the config file name by its
// line (SyntaxError), in our words where we have some, else in the parser's.
func syntaxProblem(name string, b []byte, err error) Problem {
	line, hint := SyntaxError(b, err)
	msg := hint
	if msg == "" {
		msg = strings.TrimPrefix(err.Error(), "yaml: ")
		if _, after, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(msg, "line ") {
			msg = after
		}
	}
	where := name
	if line > 0 {
		where = fmt.Sprintf("%s:%d", name, line)
	}
	return Problem{Path: where, Msg: "not valid YAML: " + msg}
}

// SyntaxError locates err, yaml.v3's error for the text b, on the line
// where the text stops being YAML: the line after the longest run of whole
// lines, from the top, that still parses (with the same parser). yaml.v3's
// own line is the one where the enclosing block began (libyaml's context
// mark: an indentation mistake on line 4 of a mapping opened on line 1 is
// reported at line 1); it is kept only when the search gives up. line is 0
// when neither is known. hint, when not "", says what is wrong in words
// built from the text's shape alone, never quoting it (a tab in the
// indentation, a quoted string never closed), so that it is fit to show for
// a file of secrets; the parser's own message may quote the text.
func SyntaxError(b []byte, err error) (line int, hint string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if l, convErr := strconv.Atoi(n); convErr == nil {
				line, msg = l, after
			}
		}
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	if l := brokenLine(lines); l > 0 {
		line = l
	}
	if msg == "found unexpected end of stream" {
		// libyaml's words for a quoted scalar that runs to the end.
		hint = "a quoted string that starts here is never closed"
	}
	if line > 0 && line <= len(lines) {
		indent := lines[line-1][:len(lines[line-1])-len(bytes.TrimLeft(lines[line-1], " \t"))]
		if bytes.IndexByte(indent, '\t') >= 0 {
			hint = "a tab in the indentation; YAML indents with spaces only"
		}
	}
	return line, hint
}

// maxProbes bounds brokenLine's search: each probe parses the text so far.
const maxProbes = 64

// brokenLine is the 1-based number of the line after the longest prefix of
// whole lines that parses. Searching back from where the parser failed,
// rather than forward from the top, steps over prefixes that fail only
// because they end inside a quoted string or a bracket that later lines
// close. When that prefix is more than maxProbes lines back (a quote opened
// long before the end and never closed), it is the first line at which the
// text stops parsing, within maxProbes lines of the top; else 0.
func brokenLine(lines [][]byte) int {
	// The parser reads only what it needs: the lines it had read when it
	// failed are a prefix that fails.
	r := &lineReader{lines: lines}
	if parses(yaml.NewDecoder(r)) {
		return 0
	}
	failed := r.touched()
	text := bytes.Join(lines[:failed], nil)
	end := len(text)
	for k := failed - 1; k >= 0 && failed-k <= maxProbes; k-- {
		end -= len(lines[k])
		if parses(yaml.NewDecoder(bytes.NewReader(text[:end]))) {
			return k + 1
		}
	}
	end = 0
	for k := 0; k < min(failed, maxProbes); k++ {
		end += len(lines[k])
		if !parses(yaml.NewDecoder(bytes.NewReader(text[:end]))) {
			return k + 1
		}
	}
	return 0
}

// parses reports whether every document dec reads is YAML.
func parses(dec *yaml.Decoder) bool {
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// lineReader hands its lines to a reader one at most per Read, so that
// touched tells how far the reader got.
type lineReader struct {
	lines [][]byte
	n     int // lines handed out whole
	off   int // bytes handed out of lines[n]
}

func (r *lineReader) Read(p []byte) (int, error) {
	if r.n >= len(r.lines) {
		return 0, io.EOF
	}
	k := copy(p, r.lines[r.n][r.off:])
	r.off += k
	if r.off == len(r.lines[r.n]) {
		r.n, r.off = r.n+1, 0
	}
	return k, nil
}

// touched is how many lines were handed out, whole or in part.
func (r *lineReader) touched() int {
	if r.off > 0 {
		return r.n + 1
	}
	return r.n
}

// ResolvePaths makes the relative paths of the config absolute against
// dir, the config file's directory, as a user who writes
// `credentials: file:hgem.json` beside the config expects: file:
// credentials, every ca_file, and the Vault login files. Absolute paths and
// unset ones stay as they are; dir "" leaves everything as it is.
func (c *Config) ResolvePaths(dir string) {
	if dir == "" {
		return
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	resolve := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for name, u := range c.Upstreams {
		if rest, ok := strings.CutPrefix(u.Credentials, "file:"); ok {
			resolve(&rest)
			u.Credentials = "file:" + rest
		}
		resolve(&u.CAFile)
		c.Upstreams[name] = u
	}
	if v := c.Secrets.Vault; v != nil {
		resolve(&v.CAFile)
		resolve(&v.Auth.JWTFile)
		resolve(&v.Auth.RoleIDFile)
		resolve(&v.Auth.SecretIDFile)
		resolve(&v.Auth.TokenFile)
	}
}

// DefaultTokenURL is the token endpoint a built-in type uses when
// token_url is not set, built on the whole base URL, path included
// (vendor.Description.TokenURL). Prodoscore has none: its token endpoint
// lives on another host and must be configured.
func DefaultTokenURL(typ, baseURL string) string {
	if d, ok := vendor.Builtin(typ); ok {
		return d.TokenURL(baseURL)
	}
	return ""
}

// Redacted is a copy of c fit to show, as the admin plane's /config does:
// user info in a URL (validation refuses it everywhere; this is for a
// config shown before it was validated) becomes REDACTED. Nothing else needs
// hiding: credentials are references, and the Vault login's material is
// named by file path, never read into the config.
func (c *Config) Redacted() *Config {
	out := *c
	out.Upstreams = make(Upstreams, len(c.Upstreams))
	for name, u := range c.Upstreams {
		u.BaseURL, u.TokenURL = RedactURL(u.BaseURL), RedactURL(u.TokenURL)
		if u.Shared != nil {
			shared := *u.Shared
			u.Shared = &shared
		}
		out.Upstreams[name] = u
	}
	if c.Secrets.Vault != nil {
		v := *c.Secrets.Vault
		v.Address = RedactURL(v.Address)
		out.Secrets.Vault = &v
	}
	if c.Sharing != nil {
		s := *c.Sharing
		out.Sharing = &s
	}
	return &out
}

// RedactURL replaces the user info of a URL with REDACTED. A string that
// does not parse is kept only when it cannot hold user info.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil && strings.Contains(raw, "@"):
		return "REDACTED"
	case err != nil || u.User == nil:
		return raw
	}
	u.User = url.User("REDACTED")
	return u.String()
}

// PollInterval is how often the credentials of a source are re-read.
func (c *Config) PollInterval(source string) time.Duration {
	if source == "vault" && c.Secrets.Vault != nil {
		return c.Secrets.Vault.PollInterval.Duration
	}
	return c.Secrets.PollInterval.Duration
}
