// Package sharing owns the fleet-wide token (CONTRACT.md §7): one Record per
// upstream in a Store with check-and-set writes (Vault KV v2, or Memory in
// tests), and the protocol by which replicas agree on who mints.
package sharing
