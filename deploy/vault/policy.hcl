# Read-only policy for tokenproxy's credentials (KV v2 at secret/).
#
# tokenproxy reads secret/data/tokenproxy/<name>; the KV version it reports
# comes back with that read, so it needs nothing under secret/metadata/.
#
# It also finds each mount's KV version by asking sys/internal/ui/mounts/<path>,
# as the vault CLI does. Vault answers that to any token holding some capability
# under the mount, so the rule below is enough; no sys/ rule is needed.
path "secret/data/tokenproxy/*" {
  capabilities = ["read"]
}

# For a KV v1 mount, the data lives at the path itself instead, e.g.:
# path "kv/tokenproxy/*" {
#   capabilities = ["read"]
# }
