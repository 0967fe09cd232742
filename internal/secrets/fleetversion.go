package secrets

import (
	"strconv"
	"strings"
	"time"
)

// VaultVersion is the FleetVersion of version n of the KV v2 secret at path
// (<mount>/<path>, as in vault:<mount>/<path>), created at created (the
// version's created_time, Vault's clock): "vault:<path>#<n>@<RFC 3339 UTC>".
// Nothing in it is secret.
//
// The number alone does not order versions across replicas: a secret
// deleted with `vault kv metadata delete` and written again starts at 1,
// and another path has numbers of its own. The path says which secret a
// version is of, and created_time orders the versions of one path across
// such a re-creation (CompareFleet); both come with every read of the data
// (no metadata read, which tokenproxy's policy does not grant).
func VaultVersion(path string, n int, created time.Time) string {
	return "vault:" + strings.Trim(path, "/") + "#" + strconv.Itoa(n) + "@" + created.UTC().Format(time.RFC3339Nano)
}

// Order is how one credential version stands to another (CompareFleet).
type Order int

const (
	// Same: the same version of the same credentials.
	Same Order = iota
	// Older: an earlier version of the same secret.
	Older
	// Newer: a later version of the same secret.
	Newer
	// Other: credentials with no order between them: another secret, a
	// file: or env: fingerprint, or a version in the format written before
	// VaultVersion (a bare number).
	// Any change counts as newer, from the replica that sees it.
	Other
)

// CompareFleet is how fleet version a stands to b (both FleetVersion
// values, b perhaps read from the fleet's store). Versions of one Vault
// path order by when they were written (created_time, Vault's clock): a
// number alone does not, since a path deleted with `vault kv metadata
// delete` and written again starts at 1, and the version written last is
// what a replica reading the path now gets, whatever its number. So a
// replica still holding a deleted secret's version is behind one written
// after it, waits to read it and mints nothing from the deleted one.
// Versions of different paths, fingerprints and bare numbers have no order:
// Other.
func CompareFleet(a, b string) Order {
	if a == b {
		return Same
	}
	pa, _, ta, okA := parseVaultVersion(a)
	pb, _, tb, okB := parseVaultVersion(b)
	switch {
	case !okA || !okB || pa != pb:
		return Other
	case ta.Before(tb):
		return Older
	case ta.After(tb):
		return Newer
	}
	return Other // two versions written at the same instant: cannot tell
}

// ShownFleetVersion is the part of a fleet version fit for logs, /status and
// errors: a Vault KV version's number, or "" (a fingerprint is never shown,
// nor a bare number from an older record, which may be anything).
func ShownFleetVersion(fleet string) string {
	if _, n, _, ok := parseVaultVersion(fleet); ok {
		return strconv.Itoa(n)
	}
	return ""
}

// parseVaultVersion reads what VaultVersion writes. The path may hold '#'
// and '@', so the number and time are taken from the right.
func parseVaultVersion(s string) (path string, n int, created time.Time, ok bool) {
	rest, found := strings.CutPrefix(s, "vault:")
	if !found {
		return "", 0, time.Time{}, false
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return "", 0, time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, rest[at+1:])
	if err != nil {
		return "", 0, time.Time{}, false
	}
	hash := strings.LastIndexByte(rest[:at], '#')
	if hash < 0 {
		return "", 0, time.Time{}, false
	}
	n, err = strconv.Atoi(rest[hash+1 : at])
	if err != nil || n < 0 {
		return "", 0, time.Time{}, false
	}
	return rest[:hash], n, t, true
}
