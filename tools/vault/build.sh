#!/usr/bin/env bash
# Builds the Vault server used by the integration tests from the Go module
# proxy, once, into a cache outside the tree, and prints its path.
# The first build takes about ten minutes on a 2-core machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1 == "github.com/hashicorp/vault" {print $2}' "$here/go.mod")
cache=${TOKENPROXY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenproxy}
bin="$cache/vault-$version"
if [ ! -x "$bin" ]; then
	mkdir -p "$cache"
	echo "building vault $version into $bin (about ten minutes the first time)" >&2
	(cd "$here" && go build -ldflags='-s -w' -o "$bin.partial" github.com/hashicorp/vault)
	mv "$bin.partial" "$bin"
fi
echo "$bin"
