#!/usr/bin/env bash
# Go benchmarks of the data plane, printed by benchstat.
#
#   scripts/bench.sh                  this working tree, each benchmark against
#                                     its baseline in the same run (a call made
#                                     directly vs through tokenproxy; the broker's
#                                     warm token vs a bare mutex read)
#   BASE=<rev> scripts/bench.sh       the same benchmarks at <rev> and in this
#                                     working tree (or at NEW=<rev>), run
#                                     alternately, compared side by side
#
# The benchmarks: internal/proxy's and internal/broker's (each revision's
# own, built with go test -c from a copy of that revision), and bench/binary's
# BenchmarkBinary (built once from this tree) run against each revision's
# tokenproxy binary: the same requests through the real process, with the
# process's allocations, bytes and CPU per request. Rows compare by name, so
# a rebuilt data plane keeps its benchmarks' names (DEVELOPERS.md).
#
# Settings: COUNT=6 rounds, BENCHTIME=1s, BENCH=. (a -bench pattern for the
# package benchmarks), PKGS="./internal/proxy ./internal/broker". Raw outputs
# and benchstat's tables go to bench/results/go-<UTC time>/ (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
COUNT=${COUNT:-6} BENCHTIME=${BENCHTIME:-1s} BENCH=${BENCH:-.}
PKGS=${PKGS:-./internal/proxy ./internal/broker}
out=${1:-bench/results/go-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
benchstat=(go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tokenproxy-gobench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# build SIDE REV: the package test binaries and tokenproxy of REV (empty:
# this working tree) into $tmp/SIDE; the source tree's path into $tmp/SIDE/src.
build() {
	local side=$1 rev=$2 src=$root pkg
	mkdir -p "$tmp/$side"
	if [ -n "$rev" ]; then
		src=$tmp/$side/tree
		mkdir -p "$src"
		git archive "$rev" | tar -x -C "$src"
	fi
	echo "$src" >"$tmp/$side/src"
	echo "building $side (${rev:-working tree})" >&2
	for pkg in $PKGS; do
		# A package this revision lacks is left out of its side.
		if [ -d "$src/$pkg" ]; then
			(cd "$src" && go test -c -o "$tmp/$side/$(basename "$pkg").test" "$pkg")
		else
			echo "  $pkg: not in ${rev:-the working tree}, left out" >&2
		fi
	done
	(cd "$src" && CGO_ENABLED=0 go build -o "$tmp/$side/tokenproxy" ./cmd/tokenproxy)
}

# measure SIDE: one round of every benchmark of SIDE, appended to $out/SIDE.txt.
measure() {
	local side=$1 src pkg bin
	src=$(<"$tmp/$side/src")
	for pkg in $PKGS; do
		bin=$tmp/$side/$(basename "$pkg").test
		[ -x "$bin" ] || continue
		(cd "$src/$pkg" && "$bin" -test.run '^$' -test.bench "$BENCH" -test.benchmem -test.count 1 -test.benchtime "$BENCHTIME") |
			grep -E '^(Benchmark|goos|goarch|pkg|cpu)' >>"$out/$side.txt"
	done
	"$tmp/binary.test" -test.run '^$' -test.bench . -test.count 1 -test.benchtime "$BENCHTIME" -tokenproxy "$tmp/$side/tokenproxy" |
		grep -E '^(Benchmark|goos|goarch|pkg|cpu)' >>"$out/$side.txt"
}

(cd bench && go test -c -o "$tmp/binary.test" ./binary)
if [ -z "${BASE:-}" ]; then
	build new ""
	for i in $(seq 1 "$COUNT"); do
		echo "round $i of $COUNT" >&2
		measure new
	done
	"${benchstat[@]}" -col /path "$out/new.txt" | tee "$out/benchstat.txt"
	exit
fi

base=$(git rev-parse --short "$BASE^{commit}")
new=${NEW:+$(git rev-parse --short "$NEW^{commit}")}
build base "$base"
build new "$new"
# Alternate, and swap which side goes first each round, so that a machine
# getting busier or quieter during the run weighs on both alike.
for i in $(seq 1 "$COUNT"); do
	echo "round $i of $COUNT" >&2
	if [ $((i % 2)) = 1 ]; then measure base; measure new; else measure new; measure base; fi
done
{
	echo "base: $base ($BASE); new: ${new:-working tree at $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ', with changes')}"
	"${benchstat[@]}" "base=$out/base.txt" "new=$out/new.txt"
} | tee "$out/benchstat.txt"
echo "raw results and benchstat's tables in $out" >&2
