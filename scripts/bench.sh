#!/usr/bin/env bash
# Measures tokenproxy against a baseline in the same run: a call made
# directly to an HTTPS upstream versus the same call through the data plane,
# and the broker's warm token path versus a bare mutex read. benchstat (from
# the Go module proxy) prints each pair side by side with the difference.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results.txt}
mkdir -p "$(dirname "$out")"
go test -run '^$' -bench . -benchmem -count "${COUNT:-6}" ./internal/proxy/ ./internal/broker/ | tee "$out"
echo
go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da -col /path "$out"
