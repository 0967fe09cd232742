#!/bin/sh
# Sets up Vault for tokenproxy: a KV v2 mount at secret/, the four vendors'
# credentials (placeholder values), the policy (policy.hcl: read the
# credentials; read and write the fleet's shared tokens), and an AppRole and a
# Kubernetes role that both get that policy. See README.md beside this file.
#
# Needs VAULT_ADDR and a VAULT_TOKEN allowed to manage mounts, auth methods and
# policies. Optional:
#   VAULT           the vault binary (default: vault)
#   OUT_DIR         where the AppRole role_id and secret_id files go (default: .)
#   K8S_HOST        Kubernetes API URL for the kubernetes auth method; when unset,
#                   the kubernetes method is not set up. When Vault runs inside
#                   the cluster it uses its own service account's CA and token to
#                   review tokens.
#   K8S_CA_FILE     the API server's CA (PEM), needed when Vault runs outside the
#                   cluster
#   K8S_REVIEWER_JWT_FILE  a token of a service account allowed to create
#                   TokenReviews (ClusterRole system:auth-delegator), needed when
#                   Vault runs outside the cluster: tokenproxy's own token, being
#                   for the audience "vault", cannot call the API server
#   K8S_NAMESPACE   namespace of tokenproxy's service account (default: tokenproxy)
#   K8S_SERVICE_ACCOUNT  its name (default: tokenproxy, as in deploy/kubernetes)
#
# The Kubernetes role accepts only service-account tokens minted for the
# audience "vault": the projected token deploy/kubernetes mounts into the
# tokenproxy container. A pod's default token (audience: the API server)
# cannot log in, so no other container that got one could read the secrets.
#
# Replace the placeholders afterwards without putting values on a command line,
# e.g.: vault kv patch secret/tokenproxy/hgem api_key=@api_key.txt
set -eu
vault=${VAULT:-vault}
out=${OUT_DIR:-.}
here=$(cd "$(dirname "$0")" && pwd)

# KV v2 at secret/ (a dev server already has it).
if ! "$vault" secrets list -format=json | grep -q '"secret/"'; then
	"$vault" secrets enable -path=secret -version=2 kv
fi

# Placeholders only where no secret exists yet: a re-run keeps real values.
put_if_absent() {
	path=$1
	shift
	if "$vault" kv get "$path" >/dev/null 2>&1; then
		echo "$path exists; left as it is"
	else
		"$vault" kv put "$path" "$@" >/dev/null
		echo "$path written with placeholders"
	fi
}
put_if_absent secret/tokenproxy/prominsight client_id=CHANGE-ME client_secret=CHANGE-ME
put_if_absent secret/tokenproxy/inspera client_id=CHANGE-ME api_key=CHANGE-ME
put_if_absent secret/tokenproxy/hgem api_key=CHANGE-ME client_id=CHANGE-ME client_secret=CHANGE-ME
put_if_absent secret/tokenproxy/prodoscore client_id=CHANGE-ME username=CHANGE-ME password=CHANGE-ME

# The shared tokens under secret/tokenproxy/shared/ need no setup: tokenproxy
# creates each upstream's record at its first mint.
"$vault" policy write tokenproxy "$here/policy.hcl"

# AppRole: tokens live an hour, renewable up to a day; tokenproxy renews them
# and logs in again when they reach their max TTL.
if ! "$vault" auth list -format=json | grep -q '"approle/"'; then
	"$vault" auth enable approle
fi
"$vault" write auth/approle/role/tokenproxy \
	token_policies=tokenproxy token_ttl=1h token_max_ttl=24h
"$vault" read -field=role_id auth/approle/role/tokenproxy/role-id >"$out/role_id"
(umask 077 && "$vault" write -f -field=secret_id auth/approle/role/tokenproxy/secret-id >"$out/secret_id")
echo "wrote $out/role_id and $out/secret_id"

if [ -n "${K8S_HOST:-}" ]; then
	if ! "$vault" auth list -format=json | grep -q '"kubernetes/"'; then
		"$vault" auth enable kubernetes
	fi
	set -- kubernetes_host="$K8S_HOST"
	if [ -n "${K8S_CA_FILE:-}" ]; then
		set -- "$@" kubernetes_ca_cert="@$K8S_CA_FILE"
	fi
	if [ -n "${K8S_REVIEWER_JWT_FILE:-}" ]; then
		# On stdin, not the command line, and without the newline that
		# `kubectl create token` ends with.
		tr -d '\r\n' <"$K8S_REVIEWER_JWT_FILE" | "$vault" write auth/kubernetes/config "$@" token_reviewer_jwt=-
	else
		"$vault" write auth/kubernetes/config "$@"
	fi
	"$vault" write auth/kubernetes/role/tokenproxy \
		bound_service_account_names="${K8S_SERVICE_ACCOUNT:-tokenproxy}" \
		bound_service_account_namespaces="${K8S_NAMESPACE:-tokenproxy}" \
		audience=vault \
		token_policies=tokenproxy token_ttl=1h token_max_ttl=24h
fi
