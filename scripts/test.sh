#!/usr/bin/env bash
# The project's whole test run, as CI runs it (.ci/run calls this script).
# Needs Go, and root with access to Debian's mirrors where a command is
# missing (need, below, installs its package with apt-get); it builds the
# Vault server the integration tests use (once, about ten minutes, cached
# outside the tree) and fetches staticcheck from the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# need installs the Debian packages that provide a missing command (as root,
# from Debian's mirrors): CI starts on a machine that has only Go.
need() {
	command -v "$1" >/dev/null && return
	echo "installing Debian's ${*:2} for $1"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${@:2}" >/dev/null
}

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
# The fleet benchmark is built only with its tag (scripts/fleet-bench.sh);
# vetting it here keeps it compiling.
go vet -tags fleetbench ./e2e/

step "staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

step "go test -race"
# e2e/statuspage_test.go renders the status page in headless Chromium, and
# fails without it.
need chromium chromium fonts-dejavu-core
# e2e/generic_test.go runs a real OAuth 2 server, oidc-provider, under node;
# the lock file pins it and everything it pulls in.
need npm nodejs npm
npm ci --prefix e2e/testdata/oidc --no-audit --no-fund
go test -race ./...

step "the deployment kit (deploy/, a module of its own): kustomize, API types, embedded configs"
(cd deploy && go vet ./... && go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./... && go test -race ./...)

step "alert rules: promtool check rules, promtool test rules"
need promtool prometheus
promtool check rules deploy/monitoring/rules.yaml
promtool test rules deploy/monitoring/rules_test.yaml

step "systemd unit: systemd-analyze verify and security"
need systemd-analyze systemd
unitdir=$(mktemp -d)
trap 'rm -rf "$unitdir"' EXIT
CGO_ENABLED=0 go build -o "$unitdir/tokenproxy" ./cmd/tokenproxy
# verify wants ExecStart's binary to exist: point it at the one just built.
sed "s#/usr/local/bin/tokenproxy#$unitdir/tokenproxy#" deploy/systemd/tokenproxy.service >"$unitdir/tokenproxy.service"
systemd-analyze verify "$unitdir/tokenproxy.service"
# The exposure score (0 safest, 10 least) measured 1.1; fail if it grows.
systemd-analyze security --offline=yes --threshold=15 "$unitdir/tokenproxy.service" | tail -n 1

step "broker tests, 20 times over (fake clock: they must never flake)"
go test -race -count=20 ./internal/broker/

step "the benchmark kit (bench/, a module of its own): vet, staticcheck, tests, and every peer's injection"
(cd bench && go vet ./... && go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./... && go test -race ./...)
# Starts the upstream, tokenproxy, nginx, HAProxy and Caddy (installing the
# Debian packages when missing) and checks that each injects both headers:
# what BENCHMARKS.md publishes is only as good as this. No load is applied;
# timings on a shared machine are no test.
bench/run.sh --check-only

step "fuzzing, a few seconds per target"
# A count, not a duration: with a duration, Go 1.26's fuzzing coordinator
# can fail a target with a bare "context deadline exceeded" as the time
# runs out (golang/go#75804, fixed in Go 1.27; seen here once, on
# FuzzSecondsJSON, with no failing input). 20,000 runs take 1-6 s per
# target on the 2-core machines here.
for target in $(grep -rhoE '^func (Fuzz[A-Za-z0-9_]+)' --include='*_test.go' . | sed 's/^func //'); do
	pkg=$(dirname "$(grep -rlE "^func $target\(" --include='*_test.go' . | head -n 1)")
	echo "-- $target ($pkg)"
	go test -run='^$' -fuzz="^$target\$" -fuzztime="${FUZZTIME:-20000x}" "$pkg"
done

step "all tests passed"
