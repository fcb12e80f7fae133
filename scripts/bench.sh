#!/usr/bin/env bash
# Runs every benchmark in release (each scenario at its issue's size and at a tenth of it) and regenerates
# BENCHMARKS.md from the figures. Takes about 10 minutes on a 2-core machine once built; run it on an otherwise
# idle machine, since the figures are wall-clock.
#
#   scripts/bench.sh                     # everything
#   scripts/bench.sh wallet_sync payouts # some benches (the report then covers only those)
set -euo pipefail
cd "$(dirname "$0")/.."
benches=("$@")
[ ${#benches[@]} -eq 0 ] && benches=(sandbox_throughput wallet_sync tx_sync payouts reconcile)
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
export PFSYNC_BENCH_RESULTS="$(cd "$target" && pwd)/bench-results.jsonl"
rm -f "$PFSYNC_BENCH_RESULTS"
for b in "${benches[@]}"; do
  echo "== cargo bench --bench $b"
  cargo bench --locked --bench "$b"
done
cargo bench --locked --bench report
