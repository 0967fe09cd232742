#!/bin/sh
# Sets up Vault for tokenproxy: a KV v2 mount at secret/, the four vendors'
# credentials (placeholder values), the policy (policy.hcl: read the
# credentials; read and write the fleet's shared tokens), and an AppRole and a
# Kubernetes role that both get that policy. See README.md beside this file.
#
# Needs VAULT_ADDR and a VAULT_TOKEN allowed to manage mounts, auth methods and
# policies. Optional:
#   VAULT           the vault binary (default: vault)
#   OUT_DIR         where the AppRole's role_id and secret_id files go, each
#                   mode 0600. Default: a new private directory under $TMPDIR
#                   (or /tmp), named in the output. A directory inside a git
#                   work tree is refused: `git add -A` would commit the login.
#   SECRET_ID       unset: issue an AppRole secret_id only when the role has
#                   none, so a re-run leaves no second login behind; "new":
#                   issue another one (a rotation) and print the commands that
#                   destroy the older ones once tokenproxy uses the new one.
#   SECRET_ID_TTL   how long a secret_id can log in (default: 720h, 30 days);
#                   rotate before then. 0 would mean never expiring: refused.
#   APPROLE_BOUND_CIDRS  comma-separated CIDRs the AppRole's secret_id and
#                   tokens may be used from (e.g. the VM's address/32); default:
#                   anywhere
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
# Replace the placeholders afterwards without putting values on a command line
# and without a trailing newline (`key=@file` keeps the one echo and editors
# end a file with, and tokenproxy refuses such a value), e.g.:
#   tr -d '\r\n' <api_key.txt | vault kv patch secret/tokenproxy/hgem api_key=-
set -eu
vault=${VAULT:-vault}
here=$(cd "$(dirname "$0")" && pwd)
secret_id_ttl=${SECRET_ID_TTL:-720h}
case $secret_id_ttl in
0 | 0[smhd] | "")
	echo "setup.sh: SECRET_ID_TTL=$secret_id_ttl would let the secret_id log in forever; give it a lifetime such as 720h" >&2
	exit 2
	;;
esac
case ${SECRET_ID:-} in
"" | new) ;;
*)
	echo "setup.sh: SECRET_ID=$SECRET_ID: want unset (issue one only when the role has none) or \"new\"" >&2
	exit 2
	;;
esac

# in_git_work_tree names the work tree that holds dir, or its nearest existing
# ancestor, and fails when there is none (or no git to ask).
in_git_work_tree() {
	d=$1
	while [ ! -d "$d" ]; do d=$(dirname "$d"); done
	command -v git >/dev/null 2>&1 && git -C "$d" rev-parse --show-toplevel 2>/dev/null
}
if [ -n "${OUT_DIR:-}" ] && top=$(in_git_work_tree "$OUT_DIR"); then
	echo "setup.sh: OUT_DIR=$OUT_DIR is inside the git work tree $top: the AppRole secret_id written there could be committed; choose a directory outside it" >&2
	exit 2
fi

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
# and logs in again when they reach their max TTL, and at every start. So its
# secret_id has no use limit (secret_id_num_uses=0: a limit would lock out a
# pod that restarts often) but a lifetime (secret_id_ttl), and at most one is
# issued unless SECRET_ID=new asks for another.
if ! "$vault" auth list -format=json | grep -q '"approle/"'; then
	"$vault" auth enable approle
fi
set -- token_policies=tokenproxy token_ttl=1h token_max_ttl=24h \
	secret_id_ttl="$secret_id_ttl" secret_id_num_uses=0
if [ -n "${APPROLE_BOUND_CIDRS:-}" ]; then
	set -- "$@" secret_id_bound_cidrs="$APPROLE_BOUND_CIDRS" token_bound_cidrs="$APPROLE_BOUND_CIDRS"
fi
"$vault" write auth/approle/role/tokenproxy "$@"

role=auth/approle/role/tokenproxy
# The accessors of the role's secret_ids (not the secret_ids), one a line.
if list=$("$vault" list -format=json "$role/secret-id"); then
	older=$(printf '%s\n' "$list" | tr -d ' []{},"' | grep . || true)
elif [ $? -eq 2 ]; then # vault's "no value found": the role has none
	older=
else
	exit 1
fi
if [ -n "$older" ] && [ "${SECRET_ID:-}" != new ]; then
	echo "$role already has $(echo "$older" | wc -l | tr -d ' ') secret_id(s); no new one issued (SECRET_ID=new issues another, to rotate)"
else
	out=${OUT_DIR:-}
	if [ -z "$out" ]; then
		out=$(mktemp -d "${TMPDIR:-/tmp}/tokenproxy-approle.XXXXXX")
	fi
	(
		umask 077
		mkdir -p "$out"
		"$vault" read -field=role_id "$role/role-id" >"$out/role_id"
		"$vault" write -f -field=secret_id "$role/secret-id" >"$out/secret_id"
	)
	echo "wrote $out/role_id and $out/secret_id (mode 0600): move them where tokenproxy reads them (role_id_file, secret_id_file), then delete $out"
	echo "the secret_id expires after $secret_id_ttl: run SECRET_ID=new sh $0 before then"
	if [ -n "$older" ]; then
		echo "the older secret_ids stay valid until they expire; once every tokenproxy uses the new one, destroy them:"
		for a in $older; do
			echo "  $vault write $role/secret-id-accessor/destroy secret_id_accessor=$a"
		done
	fi
fi

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
