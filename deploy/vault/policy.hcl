# tokenproxy's Vault policy, for a KV v2 mount at secret/. Nothing else
# should hold these rules: tokenproxy is the only reader of the vendors'
# credentials, and the only reader and writer of the fleet's shared tokens.

# The vendors' credentials, secret/tokenproxy/<name>: read only. The KV
# version tokenproxy reports comes back with the read, so it needs nothing
# under secret/metadata/. It finds each mount's KV version by asking
# sys/internal/ui/mounts/<path>, as the vault CLI does; Vault answers that to
# any token holding some capability under the mount, so no sys/ rule is needed.
path "secret/data/tokenproxy/*" {
  capabilities = ["read"]
}

# The fleet's shared tokens (CONTRACT.md §7, `sharing.vault.path:
# secret/tokenproxy/shared`), one record per upstream: read them, and write
# them with check-and-set, which creates a record or updates it. The most
# specific rule wins, so this one, not the read-only one above, applies here.
# No delete, list or metadata access: tokenproxy needs none.
path "secret/data/tokenproxy/shared/*" {
  capabilities = ["create", "read", "update"]
}

# For a KV v1 mount, the data lives at the path itself instead, e.g.:
# path "kv/tokenproxy/*" {
#   capabilities = ["read"]
# }
