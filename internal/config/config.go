// Package config owns tokenproxy's configuration file: its typed form, the
// strict YAML decoding that names every unknown or mistyped key by its path,
// the defaults, and the one Validate that reports every problem at once.
package config

import (
	"bytes"
	"errors"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file (CONTRACT.md §2).
type Config struct {
	Listen          string              `yaml:"listen"`
	AdminListen     string              `yaml:"admin_listen"`
	LogLevel        string              `yaml:"log_level"`
	ShutdownTimeout Duration            `yaml:"shutdown_timeout"`
	DrainDelay      Duration            `yaml:"drain_delay"`
	Secrets         Secrets             `yaml:"secrets"`
	Upstreams       map[string]Upstream `yaml:"upstreams"`
	Sharing         *Sharing            `yaml:"sharing"`

	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers, on either listener (slow-header clients).
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
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
}

// Sharing makes the replicas of a fleet use one token per upstream,
// coordinated through Vault KV v2 check-and-set (CONTRACT.md §7).
type Sharing struct {
	Vault              SharingVault `yaml:"vault"`
	Lease              Duration     `yaml:"lease"`
	OnStoreUnavailable string       `yaml:"on_store_unavailable"`
}

// SharingVault is where the shared tokens live: <kv-v2-mount>/<prefix>.
type SharingVault struct {
	Path string `yaml:"path"`
}

// IsShared reports whether upstream name's token is shared across the fleet.
func (c *Config) IsShared(name string) bool {
	u, ok := c.Upstreams[name]
	return ok && c.Sharing != nil && (u.Shared == nil || *u.Shared)
}

// Defaults, applied before validation.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultAdminListen     = "127.0.0.1:9901"
	DefaultLogLevel        = "info"
	DefaultShutdownTimeout = 20 * time.Second
	DefaultPollInterval    = 60 * time.Second
	DefaultTimeout         = 30 * time.Second
	DefaultTokenTimeout    = 10 * time.Second
	DefaultRefreshFraction = 0.75
	DefaultReplayMaxBytes  = 1 << 20
	DefaultMaxConnections  = 64
	DefaultReauthMin       = 10 * time.Second
	DefaultLease           = 30 * time.Second

	DefaultReadHeaderTimeout = 10 * time.Second
)

// Duration is a time.Duration written as "30s" in YAML.
type Duration struct{ time.Duration }

// UnmarshalYAML parses a Go duration string. A malformed one is left at
// zero: checkNode has already reported it with its key path.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	d.Duration, _ = time.ParseDuration(n.Value)
	return nil
}

// MarshalYAML writes the duration back as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Load reads, decodes, defaults and validates the file at path. A config that
// cannot be used returns a *Problems error listing every problem.
func Load(path string) (*Config, error) {
	cfg, ps := Inspect(path)
	if len(ps) > 0 {
		return nil, &ps
	}
	return cfg, nil
}

// Parse is Load for bytes already in hand.
func Parse(b []byte) (*Config, error) {
	cfg, ps := parse(b)
	if len(ps) > 0 {
		return nil, &ps
	}
	return cfg, nil
}

// Inspect returns every problem of the file at path, and the config as far
// as it could be decoded (nil when it could not be read or parsed), so that
// `tokenproxy validate` can check what it can of a broken config.
func Inspect(path string) (*Config, Problems) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, Problems{{Path: "(file)", Msg: err.Error()}}
	}
	return parse(b)
}

func parse(b []byte) (*Config, Problems) {
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Problems{{Path: "(file)", Msg: "empty config"}}
		}
		return nil, Problems{{Path: "(file)", Msg: "not valid YAML: " + err.Error()}}
	}
	if root.Content[0].Kind != yaml.MappingNode {
		return nil, Problems{{Path: "(file)", Msg: "must be a mapping of settings"}}
	}
	var ps Problems
	checkNode(&ps, "", root.Content[0], typeOfConfig)
	cfg := &Config{}
	// Decoding skips unknown keys and leaves mistyped values at zero; both
	// are already in ps, and the rest is still worth validating.
	var te *yaml.TypeError
	if err := root.Content[0].Decode(cfg); err != nil && !errors.As(err, &te) {
		return nil, append(ps, Problem{Path: "(file)", Msg: err.Error()})
	}
	cfg.applyDefaults()
	return cfg, append(ps, cfg.Validate()...)
}

func (c *Config) applyDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.ShutdownTimeout.Duration == 0 {
		c.ShutdownTimeout.Duration = DefaultShutdownTimeout
	}
	if c.ReadHeaderTimeout.Duration == 0 {
		c.ReadHeaderTimeout.Duration = DefaultReadHeaderTimeout
	}
	if c.Secrets.PollInterval.Duration == 0 {
		c.Secrets.PollInterval.Duration = DefaultPollInterval
	}
	if v := c.Secrets.Vault; v != nil {
		if v.Address == "" {
			v.Address = os.Getenv("VAULT_ADDR")
		}
		if v.PollInterval.Duration == 0 {
			v.PollInterval.Duration = DefaultPollInterval
		}
		a := &v.Auth
		if a.Mount == "" {
			a.Mount = a.Method
		}
		if a.Method == "kubernetes" && a.JWTFile == "" {
			a.JWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
		}
	}
	if s := c.Sharing; s != nil {
		if s.Lease.Duration == 0 {
			s.Lease.Duration = DefaultLease
		}
		if s.OnStoreUnavailable == "" {
			s.OnStoreUnavailable = "local"
		}
	}
	for name, u := range c.Upstreams {
		if u.TokenURL == "" {
			u.TokenURL = DefaultTokenURL(u.Type, u.BaseURL)
		}
		if u.Timeout.Duration == 0 {
			u.Timeout.Duration = DefaultTimeout
		}
		if u.TokenTimeout.Duration == 0 {
			u.TokenTimeout.Duration = DefaultTokenTimeout
		}
		if u.RefreshFraction == 0 {
			u.RefreshFraction = DefaultRefreshFraction
		}
		if u.ReplayMaxBytes == 0 {
			u.ReplayMaxBytes = DefaultReplayMaxBytes
		}
		if u.MaxConnections == 0 {
			u.MaxConnections = DefaultMaxConnections
		}
		if u.ReauthMinInterval.Duration == 0 {
			u.ReauthMinInterval.Duration = DefaultReauthMin
		}
		c.Upstreams[name] = u
	}
}

// DefaultTokenURL is the token endpoint a type uses when token_url is not
// set, built on the whole base URL, path included (VENDORS.md). Prodoscore has
// none: its token endpoint lives on another host and must be configured.
func DefaultTokenURL(typ, baseURL string) string {
	if baseURL == "" {
		return ""
	}
	base := trimSlash(baseURL)
	switch typ {
	case "prominsight":
		return base + "/api/v1/auth/token"
	case "inspera":
		return base + "/api/authenticate/token/"
	case "hgem":
		return base + "/connect/token"
	}
	return ""
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// PollInterval is how often the credentials of a source are re-read.
func (c *Config) PollInterval(source string) time.Duration {
	if source == "vault" && c.Secrets.Vault != nil {
		return c.Secrets.Vault.PollInterval.Duration
	}
	return c.Secrets.PollInterval.Duration
}
