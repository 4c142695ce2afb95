#!/usr/bin/env bash
# The GPU run in one call: the GPU tests of the fused op, then the kernel benchmark.
#
#   bash benchmarks/gpu.sh            # from the repository root, with torch + triton + pytest importable
#
# Writes benchmarks/results/<gpu-name>.md (the table) and benchmarks/results/<gpu-name>-tests.log; the benchmark
# runs even when a test fails, and the script then exits with the tests' status.
# Targets: at 4096x4096 bf16 and above, Triton forward >= 85 % and backward >= 70 % of HBM peak.
# Set PEAK_GBPS to override the peak used for the '% peak' columns; BENCH_ARGS to pass more bench options.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD/src:$PWD/experiments${PYTHONPATH:+:$PYTHONPATH}"

name="$("$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0))')"
slug="$(echo "$name" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-|-$//g')"
case "$name" in  # published HBM peaks (GB/s)
  *H200*) peak=4800 ;;
  *H100*PCIe*) peak=2000 ;;
  *H100*) peak=3350 ;;
  *A100*80GB*) peak=2039 ;;
  *A100*) peak=1555 ;;
  *) peak="" ;;
esac
peak="${PEAK_GBPS:-$peak}"
mkdir -p benchmarks/results
echo "== $name (peak ${peak:-unknown} GB/s)"

echo "== GPU tests"
status=0
"$PY" -m pytest tests/ops -q -p no:cacheprovider 2>&1 | tee "benchmarks/results/$slug-tests.log" || status=$?

echo "== benchmark"
# shellcheck disable=SC2086
"$PY" -m seednorm_experiments.bench --device cuda --out "benchmarks/results/$slug.md" ${peak:+--peak-gbps $peak} \
  --note "GPU tests: $(tail -n 1 "benchmarks/results/$slug-tests.log")" ${BENCH_ARGS:-}
exit $status
