// Package secrets owns where credentials come from (Vault KV, a local file,
// environment variables) behind one Source interface, and keeps the last good
// copy of each so that a failed or bad read never replaces it. It reports a
// version per copy so that the broker knows when to mint new tokens.
package secrets

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"sort"
	"strings"
)

// Credentials is one credentials object. Every value is secret, client_id and
// username included, so the type prints and marshals as key names only: a
// stray %v, zap.Any or json.Marshal cannot leak a value.
type Credentials struct {
	values  map[string]string
	version string // shown: the source's version, or a keyed fingerprint
	fleet   string // compared across replicas: the source's version, or Fingerprint
}

// NewCredentials wraps values. An empty version (a source without
// versions) is replaced by fingerprints of the content, so that any change
// is seen as a new version: Version shows one keyed for this process,
// FleetVersion compares one the same on every replica.
func NewCredentials(values map[string]string, version string) Credentials {
	c := Credentials{values: values, version: version, fleet: version}
	if version == "" {
		c.version, c.fleet = processFingerprint(values), Fingerprint(values)
	}
	return c
}

// NewVersioned wraps values read from a source that numbers its versions:
// version is shown as it is (a Vault KV version number) and fleet is what
// replicas compare (VaultVersion), never shown.
func NewVersioned(values map[string]string, version, fleet string) Credentials {
	return Credentials{values: values, version: version, fleet: fleet}
}

// Get returns the value of key, or "".
func (c Credentials) Get(key string) string { return c.values[key] }

// Version is the version fit to show (/status, logs) and to tell, within
// this process, one read from the next: the Vault KV version as it is, or
// for a source without versions "hmac-sha256:" and a fingerprint keyed with
// a random key of this process. The fingerprint changes whenever the
// content does, differs between processes, and cannot be checked against a
// guessed credential (CONTRACT.md §2: every value is secret; a bare hash of
// a weak API key could be).
func (c Credentials) Version() string { return c.version }

// FleetVersion is the version replicas compare through the fleet's store
// (CONTRACT.md §7) with CompareFleet: for a Vault KV v2 secret VaultVersion
// (its path, version number and the version's created_time), else
// Fingerprint, the same on every replica that read the same content. Never
// show it: an unkeyed hash lets a guessed credential be checked offline
// (ShownFleetVersion is the part fit to show).
func (c Credentials) FleetVersion() string { return c.fleet }

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

// Fingerprint is a short hash of the content, the FleetVersion of sources
// that have none: 64 bits of SHA-256 over the sorted keys and values, the
// same wherever the same content is read. It is kept only where the
// credentials themselves may be read (the fleet's store in Vault), never
// shown.
func Fingerprint(values map[string]string) string {
	return "sha256:" + hex.EncodeToString(digest(sha256.New(), values)[:8])
}

// processKey keys the fingerprints this process shows.
var processKey = func() []byte {
	k := make([]byte, 32)
	rand.Read(k) // never fails (crypto/rand, Go 1.24)
	return k
}()

// processFingerprint is the Version of content without one: HMAC-SHA256
// (RFC 2104) keyed with processKey, 64 bits of it.
func processFingerprint(values map[string]string) string {
	return "hmac-sha256:" + hex.EncodeToString(digest(hmac.New(sha256.New, processKey), values)[:8])
}

// digest hashes the sorted keys and values, each length-prefixed so that
// no two contents write the same bytes.
func digest(h hash.Hash, values map[string]string) []byte {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(values[k]), values[k])
	}
	return h.Sum(nil)
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
