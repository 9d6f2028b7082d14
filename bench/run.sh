#!/usr/bin/env bash
# Runs the peer benchmarks and summarises them:
#   bash bench/run.sh                      # from the repository root, or
#   COUNT=3 BENCHTIME=500ms bash run.sh    # from bench/, with overrides
# Environment: COUNT (default 6), BENCHTIME (default 1s), CPU (default
# 1,2,8), BENCH (benchmark regexp, default .).
# Writes results.txt (raw go test output), results.md (median tables) and
# chart.png (ns/op medians) next to this script.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

COUNT="${COUNT:-6}"
BENCHTIME="${BENCHTIME:-1s}"
CPU="${CPU:-1,2,8}"
BENCH="${BENCH:-.}"

# The library is the working tree beside this directory (replace => ../):
# record which state of it was measured.
lib=$(git -C .. describe --always --dirty 2>/dev/null || echo unknown)

{
	echo "agentcache: $lib"
	go test -run=NONE -bench="$BENCH" -benchmem -count="$COUNT" -benchtime="$BENCHTIME" -cpu "$CPU" .
} | tee results.txt

go run ./cmd/table -in results.txt -chart chart.png | tee results.md
