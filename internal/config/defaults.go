package config

import (
	"errors"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// Every default of the config file, in one place (STYLE.md 12). They are in
// place before the file is decoded: a key left out, or written with no value
// (`timeout:`), keeps its default; a key written is decoded over it and then
// validated, so that an explicit value, zero included, is either honoured or
// refused with a problem on its key path, never replaced. What an explicit
// zero means, key by key, is in configs/all.yaml and the README.
//
// A few defaults depend on other keys and are derived after decoding, for
// an empty value only (derive): an upstream's token_url (from its type and
// base_url) and scope (its vendor's), and the Vault login's auth.mount (the
// method's name) and, for kubernetes, jwt_file. An empty string there means
// "the default", as it does in what /config and yaml.Marshal write.
const (
	DefaultListen             = "127.0.0.1:8080"
	DefaultAdminListen        = "127.0.0.1:9901"
	DefaultLogLevel           = "info"
	DefaultShutdownTimeout    = 20 * time.Second
	DefaultReadHeaderTimeout  = 10 * time.Second
	DefaultPollInterval       = 60 * time.Second
	DefaultTimeout            = 30 * time.Second
	DefaultTokenTimeout       = 10 * time.Second
	DefaultRefreshFraction    = 0.75
	DefaultReplayMaxBytes     = 1 << 20
	DefaultMaxConnections     = 64
	DefaultReauthMin          = 10 * time.Second
	DefaultLease              = 30 * time.Second
	DefaultOnStoreUnavailable = "local"
	DefaultSampleRatio        = 1.0
	DefaultServiceName        = "tokenproxy"

	// DefaultJWTFile is where Kubernetes mounts the service account token
	// (auth method kubernetes).
	DefaultJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// Defaults is the config of a file that sets nothing: every top-level
// default, no upstreams, and none of the optional sections.
func Defaults() Config {
	return Config{
		Listen:            DefaultListen,
		AdminListen:       DefaultAdminListen,
		LogLevel:          DefaultLogLevel,
		ShutdownTimeout:   Duration{DefaultShutdownTimeout},
		ReadHeaderTimeout: Duration{DefaultReadHeaderTimeout},
		Secrets:           Secrets{PollInterval: Duration{DefaultPollInterval}},
	}
}

// DefaultUpstream is an upstream entry that sets nothing: the settings
// beyond type, base_url and credentials at their defaults. Code that builds
// a config (tests) starts from it, as the file's entries do.
func DefaultUpstream() Upstream {
	return Upstream{
		Timeout:           Duration{DefaultTimeout},
		TokenTimeout:      Duration{DefaultTokenTimeout},
		RefreshFraction:   DefaultRefreshFraction,
		ReplayMaxBytes:    DefaultReplayMaxBytes,
		MaxConnections:    DefaultMaxConnections,
		ReauthMinInterval: Duration{DefaultReauthMin},
	}
}

// DefaultVault is a secrets.vault section that sets nothing. The address
// comes from $VAULT_ADDR, read when the file is, as the vault CLI reads it.
func DefaultVault() Vault {
	return Vault{Address: os.Getenv("VAULT_ADDR"), PollInterval: Duration{DefaultPollInterval}}
}

// DefaultSharing is a sharing section that sets nothing but its
// required vault.path.
func DefaultSharing() Sharing {
	return Sharing{Lease: Duration{DefaultLease}, OnStoreUnavailable: DefaultOnStoreUnavailable}
}

// DefaultTracing is a tracing section that sets nothing but its required
// endpoint.
func DefaultTracing() Tracing {
	return Tracing{SampleRatio: DefaultSampleRatio, ServiceName: DefaultServiceName}
}

// Upstreams are the upstream entries by route name. Each entry is decoded
// over DefaultUpstream.
type Upstreams map[string]Upstream

// UnmarshalYAML decodes every entry, a mistyped one included, so that
// Validate still sees it; mistyped values come back as one *yaml.TypeError
// (the schema has reported them with their key paths already).
func (m *Upstreams) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{"upstreams: not a mapping"}}
	}
	if *m == nil {
		*m = Upstreams{}
	}
	var typeErrs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		var name string
		if err := n.Content[i].Decode(&name); err != nil {
			typeErrs = append(typeErrs, err.Error())
			continue
		}
		u := DefaultUpstream()
		var te *yaml.TypeError
		if err := n.Content[i+1].Decode(&u); errors.As(err, &te) {
			typeErrs = append(typeErrs, te.Errors...)
		} else if err != nil {
			return err
		}
		(*m)[name] = u
	}
	if len(typeErrs) > 0 {
		return &yaml.TypeError{Errors: typeErrs}
	}
	return nil
}

// The sections below start from their defaults when written; a section
// left out stays nil.

// UnmarshalYAML decodes the secrets.vault section over its defaults.
func (v *Vault) UnmarshalYAML(n *yaml.Node) error {
	*v = DefaultVault()
	type plain Vault
	return n.Decode((*plain)(v))
}

// UnmarshalYAML decodes the sharing section over its defaults.
func (s *Sharing) UnmarshalYAML(n *yaml.Node) error {
	*s = DefaultSharing()
	type plain Sharing
	return n.Decode((*plain)(s))
}

// UnmarshalYAML decodes the tracing section over its defaults.
func (t *Tracing) UnmarshalYAML(n *yaml.Node) error {
	*t = DefaultTracing()
	type plain Tracing
	return n.Decode((*plain)(t))
}

// derive fills the defaults that depend on other keys, where the file left
// them empty.
func (c *Config) derive() {
	if v := c.Secrets.Vault; v != nil {
		a := &v.Auth
		if a.Mount == "" {
			a.Mount = a.Method
		}
		if a.Method == "kubernetes" && a.JWTFile == "" {
			a.JWTFile = DefaultJWTFile
		}
	}
	for name, u := range c.Upstreams {
		if d, ok := u.Vendor(); ok {
			if u.TokenURL == "" {
				u.TokenURL = d.TokenURL(u.BaseURL)
			}
			if u.Scope == "" {
				// Shown as in force (/config), and sent as it is.
				u.Scope = d.Scope.Default
			}
		}
		c.Upstreams[name] = u
	}
}
