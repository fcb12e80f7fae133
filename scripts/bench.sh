#!/usr/bin/env bash
# Runs every benchmark in release (each scenario at its issue's size and at a tenth of it) and regenerates
# BENCHMARKS.md from the figures. Takes about 10 minutes on a 2-core machine once built; run it on an otherwise
# idle machine, since the figures are wall-clock.
#
#   scripts/bench.sh                     # everything
#   scripts/bench.sh wallet_sync payouts # rerun some benches; the others keep their last figures
set -euo pipefail
cd "$(dirname "$0")/.."
benches=("$@")
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
export PFSYNC_BENCH_RESULTS="$(cd "$target" && pwd)/bench-results.jsonl"
if [ ${#benches[@]} -eq 0 ]; then
  benches=(sandbox_throughput wallet_sync tx_sync payouts live_payouts reconcile follow_latency)
  rm -f "$PFSYNC_BENCH_RESULTS"
else
  # Drop the named benches' old figures; keep the rest. They live in the target dir: on a new machine (or
  # target dir) there are none, and the regenerated BENCHMARKS.md would hold only the benches rerun now.
  if [ ! -s "$PFSYNC_BENCH_RESULTS" ]; then
    echo "warning: no earlier figures in $PFSYNC_BENCH_RESULTS; BENCHMARKS.md will hold only: ${benches[*]}" >&2
    echo "         (run scripts/bench.sh with no arguments to regenerate every section)" >&2
  fi
  touch "$PFSYNC_BENCH_RESULTS"
  for b in "${benches[@]}"; do
    grep -v "\"bench\":\"$b\"" "$PFSYNC_BENCH_RESULTS" > "$PFSYNC_BENCH_RESULTS.tmp" || true
    mv "$PFSYNC_BENCH_RESULTS.tmp" "$PFSYNC_BENCH_RESULTS"
  done
fi
for b in "${benches[@]}"; do
  echo "== cargo bench --bench $b"
  cargo bench --locked --bench "$b"
done
cargo bench --locked --bench report
