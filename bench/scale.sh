#!/usr/bin/env bash
# Runs the Scale benchmarks at every size and summarises them:
#   bash bench/scale.sh              # from the repository root, or
#   COUNT=1 bash scale.sh            # from bench/, one run of each size
# Environment: COUNT (runs of each size, default 3), SCALE_MAX (largest
# size, default 1e7). With the defaults it takes about 6 minutes on 2 cores
# and peaks at about 7 GB of memory (10^7 entries).
# Writes scale.txt (raw go test output), scale.md (median tables) and
# scale.png (the medians against the size) next to this script.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

COUNT="${COUNT:-3}"
export SCALE_MAX="${SCALE_MAX:-1e7}"

# The library is the working tree beside this directory (replace => ../):
# record which state of it was measured.
lib=$(git -C .. describe --always --dirty 2>/dev/null || echo unknown)

{
	echo "agentcache: $lib"
	go test -run=NONE -bench='^BenchmarkScale' -benchtime=1x -count="$COUNT" -timeout=60m .
} | tee scale.txt

go run ./cmd/scalechart -in scale.txt -chart scale.png | tee scale.md
