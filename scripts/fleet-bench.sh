#!/usr/bin/env bash
# The fleet benchmark (docs/fleet.md): real tokenproxy processes sharing
# their tokens through one Vault dev server, measured. Run on demand, not in
# CI; it takes about three minutes and wants a few GiB of memory for the
# twenty replicas. Extra arguments go to the test, e.g.
#   scripts/fleet-bench.sh -fleet.replicas 50 -fleet.sizes 1,10 -fleet.lifetime 20s
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENPROXY_VAULT_BIN=${TOKENPROXY_VAULT_BIN:-$(tools/vault/build.sh)}
export TOKENPROXY_VAULT_BIN
# Without -race: the numbers are the binary's, not the race detector's.
go test -tags fleetbench -run '^TestFleetBenchmark$' -count 1 -timeout 30m -v ./e2e/ -args "$@" |
	grep -E '^\s*(--- |\S+_test\.go:|ok|FAIL|PASS)' | sed 's/^ *//'
