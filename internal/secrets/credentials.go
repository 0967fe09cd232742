// Package secrets owns where credentials come from (Vault KV, a local file,
// environment variables) behind one Source interface, and keeps the last good
// copy of each so that a failed or bad read never replaces it. It reports a
// version per copy so that the broker knows when to mint new tokens.
package secrets

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Credentials is one credentials object. Every value is secret, client_id and
// username included, so the type prints and marshals as key names only: a
// stray %v, zap.Any or json.Marshal cannot leak a value.
type Credentials struct {
	values  map[string]string
	version string
}

// NewCredentials wraps values. An empty version is replaced by a fingerprint
// of the content, so that any change is seen as a new version.
func NewCredentials(values map[string]string, version string) Credentials {
	if version == "" {
		version = Fingerprint(values)
	}
	return Credentials{values: values, version: version}
}

// Get returns the value of key, or "".
func (c Credentials) Get(key string) string { return c.values[key] }

// Version is the Vault KV version, or a fingerprint of the content.
func (c Credentials) Version() string { return c.version }

// IsZero reports whether no credentials were ever loaded.
func (c Credentials) IsZero() bool { return c.values == nil }

// Keys returns the key names, sorted.
func (c Credentials) Keys() []string {
	keys := make([]string, 0, len(c.values))
	for k := range c.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// String names the keys and version, never a value.
func (c Credentials) String() string {
	return fmt.Sprintf("credentials{version=%s keys=%s}", c.version, strings.Join(c.Keys(), ","))
}

// Format makes every fmt verb, %#v included, print String.
func (c Credentials) Format(f fmt.State, _ rune) { fmt.Fprint(f, c.String()) }

// MarshalJSON writes only the key names and version.
func (c Credentials) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Version string   `json:"version"`
		Keys    []string `json:"keys"`
	}{c.version, c.Keys()})
}

// Fingerprint is a short hash of the content, used as the version of sources
// that have none. 64 bits of SHA-256 over the sorted keys and values: enough to
// see a change, and no help in guessing a high-entropy secret.
func Fingerprint(values map[string]string) string {
	h := sha256.New()
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(values[k]), values[k])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)[:8])
}

// Check reports the first problem that makes c unusable for an upstream
// whose vendor needs keys (vendor.Description.RequiredKeys, CONTRACT.md §2):
// a missing or empty key, or a value holding CR, LF or NUL (which would let
// a secret split an HTTP header). Errors name the key, never the value.
func Check(keys []string, c Credentials) error {
	var missing []string
	for _, k := range keys {
		if c.values[k] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing key %s", strings.Join(missing, ", "))
	}
	for _, k := range c.Keys() {
		v := c.values[k]
		if !strings.ContainsAny(v, "\r\n\x00") {
			continue
		}
		if !strings.ContainsAny(strings.TrimRight(v, "\r\n"), "\r\n\x00") {
			// The usual cause: a file written with echo or an editor, stored
			// as it is (vault kv put key=@file, a YAML block scalar).
			return fmt.Errorf("key %s holds a CR, LF or NUL character: it ends with a line break, as a file written by echo or an editor does; store the value without it (printf '%%s', or tr -d '\\r\\n')", k)
		}
		return fmt.Errorf("key %s holds a CR, LF or NUL character", k)
	}
	return nil
}
