#!/usr/bin/env bash
# The project's whole test run, as CI runs it (.ci/run calls this script).
# Needs only Go: it builds the Vault server the integration tests use (once,
# about ten minutes, cached outside the tree) and fetches staticcheck from
# the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "vault server for the integration tests"
TOKENPROXY_VAULT_BIN=$(tools/vault/build.sh)
export TOKENPROXY_VAULT_BIN
"$TOKENPROXY_VAULT_BIN" version

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted"
	exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

step "go test -race"
go test -race ./...

step "broker tests, 20 times over (fake clock: they must never flake)"
go test -race -count=20 ./internal/broker/

step "fuzzing, a few seconds per target"
for target in $(grep -rhoE '^func (Fuzz[A-Za-z0-9_]+)' --include='*_test.go' . | sed 's/^func //'); do
	pkg=$(dirname "$(grep -rlE "^func $target\(" --include='*_test.go' . | head -n 1)")
	echo "-- $target ($pkg)"
	go test -run='^$' -fuzz="^$target\$" -fuzztime="${FUZZTIME:-5s}" "$pkg"
done

step "all tests passed"
