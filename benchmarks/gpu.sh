#!/usr/bin/env bash
# The GPU run in one call: a smoke stage, the GPU tests of the fused op, then the kernel benchmark.
#
#   bash benchmarks/gpu.sh            # from the repository root, with torch + triton + pytest importable
#
# Writes benchmarks/results/<gpu-name>.md (the table) and benchmarks/results/<gpu-name>-tests.log; the benchmark
# runs even when a test fails, and the script then exits with the tests' status. The smoke stage (under a
# minute) stops the script at once when the GPU, Triton or the fused op is broken.
# Targets: at 4096x4096 bf16 and above, Triton forward >= 85 % and backward >= 70 % of HBM peak.
# Set PEAK_GBPS to override the peak used for the '% peak' columns; BENCH_ARGS to pass more bench options;
# SMOKE_TIMEOUT (seconds, default 60) to give a slow first import more time.
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

echo "== smoke (stops the script when it fails)"
# Within a minute: seednorm imports, Triton compiles and runs a trivial kernel, and one forward/backward of SeeDNorm
# with impl="triton" matches impl="reference" in float32. Then which optional benchmark baselines import.
smoke="$(mktemp "${TMPDIR:-/tmp}/seednorm-smoke-XXXXXX.py")"  # a file: triton.jit reads its kernel's source
trap 'rm -f "$smoke"' EXIT
cat > "$smoke" <<'PYEOF'
import importlib
import sys

step = "import torch, triton and seednorm"
try:
    import torch
    import triton
    import triton.language as tl

    import seednorm

    step = "a trivial Triton kernel (compile and run)"

    @triton.jit
    def _add_one(X, N: tl.constexpr):
        offs = tl.arange(0, N)
        tl.store(X + offs, tl.load(X + offs) + 1.0)

    ones = torch.zeros(128, device="cuda")
    _add_one[(1,)](ones, N=128)
    torch.cuda.synchronize()
    assert torch.equal(ones, torch.ones_like(ones)), "the kernel ran but wrote wrong values"

    step = "SeeDNorm impl='triton' vs impl='reference' (float32, forward and backward)"
    torch.manual_seed(0)
    x = torch.randn(64, 1024, device="cuda")
    dy = torch.randn_like(x)
    results = {}
    for impl in ("reference", "triton"):
        layer = seednorm.SeeDNorm(1024, num_heads=2, impl=impl, device="cuda")
        with torch.no_grad():  # the same β for both: σ away from 0, so α and β matter
            layer.beta.copy_(torch.linspace(-0.1, 0.1, 1024))
        xi = x.clone().requires_grad_()
        y = layer(xi)
        y.backward(dy)
        results[impl] = [y, xi.grad, layer.weight.grad, layer.alpha.grad, layer.beta.grad]
    torch.cuda.synchronize()
    for name, ref, out in zip(("y", "dx", "dγ", "dα", "dβ"), results["reference"], results["triton"]):
        err = (out - ref).abs().max().item() / (ref.abs().max().item() + 1)
        assert err <= 1e-4, f"{name}: relative error {err:.1e} > 1e-4"
except Exception as err:
    print(f"smoke: {step} failed: {type(err).__name__}: {err}", file=sys.stderr)
    sys.exit(1)
print(f"smoke: ok (torch {torch.__version__}, triton {triton.__version__}, seednorm from {seednorm.__file__})")
missing = []
for module, package in (("liger_kernel", "liger-kernel"), ("quack", "quack-kernels")):
    try:
        importlib.import_module(module)
        print(f"optional baseline {module}: imports")
    except Exception as err:
        missing.append(package)
        print(f"optional baseline {module}: MISSING ({type(err).__name__}: {err})")
if missing:
    print(f"the benchmark leaves out their rows; to include them: pip install {' '.join(missing)}")
PYEOF
if ! timeout "${SMOKE_TIMEOUT:-60}" "$PY" "$smoke"; then
  echo "smoke stage failed (or ran past ${SMOKE_TIMEOUT:-60} s): fix the setup above before the long run; stopping." >&2
  exit 1
fi

echo "== GPU tests"
status=0
"$PY" -m pytest tests/ops -q -p no:cacheprovider 2>&1 | tee "benchmarks/results/$slug-tests.log" || status=$?

echo "== benchmark"
# shellcheck disable=SC2086
"$PY" -m seednorm_experiments.bench --device cuda --out "benchmarks/results/$slug.md" ${peak:+--peak-gbps $peak} \
  --note "GPU tests: $(tail -n 1 "benchmarks/results/$slug-tests.log")" ${BENCH_ARGS:-}
exit $status
