#!/usr/bin/env bash
# bench/startup_pair.sh: first starts of two convenor binaries, alternated in one run; the
# before/after comparison of start-up in BENCHMARKS.md.
#
#   bash bench/startup_pair.sh CPUS BINARY_A BINARY_B [ROUNDS] [MEETINGS]
#
# Generates a config of MEETINGS (5,000) meetings with examples/bench_tool (built here), then
# for ROUNDS (3) rounds times BINARY_A and BINARY_B in turn with bench/startup.py, pinned to
# CPUS (`1`, or `0,1` for both), 3 runs each: prints each series' cold (empty state directory)
# READY and first-200 medians. Only 127.0.0.1 is contacted; everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
CPUS=$1
A=$(realpath "$2")
B=$(realpath "$3")
ROUNDS=${4:-3}
MEETINGS=${5:-5000}
WORK=$(mktemp -d /tmp/convenor-startup.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet --example bench_tool
"${CARGO_TARGET_DIR:-target}/release/examples/bench_tool" config --meetings "$MEETINGS" --templates-dir "$PWD/templates" \
  >"$WORK/config.toml"
for _ in $(seq "$ROUNDS"); do
  for bin in "$A" "$B"; do
    python3 bench/startup.py --binary "$bin" --config "$WORK/config.toml" \
      --label "$(basename "$bin")" --work "$WORK" --port 18591 --cpus "$CPUS" --runs 3 --cold-only
  done
done
