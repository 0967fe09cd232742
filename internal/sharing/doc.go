// Package sharing owns where the fleet-wide token lives (CONTRACT.md §7):
// one Record per upstream in a Store with check-and-set writes (Vault KV v2,
// or Memory in tests). The protocol by which replicas agree on who mints is
// the broker's (internal/broker/shared.go; its states and races in that
// package's doc).
//
// # Storage
//
// Vault keeps upstream <name>'s Record as the KV v2 secret
// <sharing.vault.path>/<name>, and the Store's version is the secret's KV
// version: Save(cas) is a KV v2 write with options.cas, and Vault's "check-
// and-set parameter did not match the current version" (HTTP 400) is
// ErrConflict. A secret that does not exist loads as version 0; one whose
// latest version was deleted or destroyed loads as the zero Record with that
// version, so that the next Save writes over it. The secret's data is a flat
// object of strings, one key per Record field (the table is at recordField in
// format.go): snake_case keys, times in RFC 3339 with nanoseconds in UTC ("" for
// none), numbers as decimal strings. Reading also takes JSON numbers, any
// time offset, and keys it does not know; anything else is a malformed
// record, an error that names the key and never the value.
//
// The store uses the secrets.Vault that reads credentials (its login, token
// renewal, re-login after a 403 that Vault meant for the token, and mount
// detection), and the policy it needs is read, create and update on
// <mount>/data/<prefix>/* (minimalPolicy in vault_test.go says why each).
package sharing
