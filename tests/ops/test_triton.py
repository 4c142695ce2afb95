"""The Triton kernels against the float64 reference, on CPU under TRITON_INTERPRET=1 (tiny shapes).

The interpreter must be switched on before triton is imported, and triton is already imported (without it) by
the time this file runs, so the cases run in a subprocess (interpret_check.py) and this file checks its report.
On a CUDA machine the same cases also run on the GPU kernels in process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cases import CASES, NONFINITE_PLACES, NONFINITE_VALUES, Case, check, check_nonfinite, nonfinite_id

import seednorm

pytest.importorskip("triton")
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def interpreted() -> dict[str, dict[str, str]]:
    src = Path(seednorm.__file__).resolve().parents[1]  # the seednorm under test, not whichever one is installed
    path = os.pathsep.join([str(src), str(HERE.parent), str(HERE)])
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, str(HERE / "interpret_check.py")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", ["row", "chunked"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_interpreted_kernels_match_reference(interpreted, layout, case):
    assert interpreted[f"{layout}-{case.id}"] == {}


NONFINITE = [(a, p, v) for a in ("tanh", "sigmoid", "hardtanh", "softsign") for p in NONFINITE_PLACES
             for v in NONFINITE_VALUES]


@pytest.mark.parametrize("layout", ["row", "chunked"])
@pytest.mark.parametrize("nonfinite", NONFINITE, ids=lambda c: nonfinite_id(*c))
def test_interpreted_kernels_propagate_nonfinite_values(interpreted, layout, nonfinite):
    """NaN and ±Inf in x or a parameter: the reference's NaN/±Inf positions and finite values (test_nonfinite.py)."""
    assert interpreted[f"{layout}-nonfinite-{nonfinite_id(*nonfinite)}"] == {}


# On a GPU: the same cases, plus widths that take the chunked kernels at their real limits, and a bigger bf16 one.
GPU_CASES = CASES + [
    Case((8, 65536)),
    Case((16, 16384), dtype=torch.bfloat16),  # row-tile forward, chunked backward
    Case((4, 24576), num_heads=3, activation="sigmoid", residual=True),
    Case((256, 4096), dtype=torch.bfloat16, residual=True),
    Case((64, 8192), num_heads=16, dtype=torch.bfloat16, param_dtype=torch.bfloat16),
]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.id)
def test_gpu_kernels_match_reference(case):
    assert check(case, "triton", "cuda") == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("nonfinite", NONFINITE, ids=lambda c: nonfinite_id(*c))
def test_gpu_kernels_propagate_nonfinite_values(nonfinite):
    assert check_nonfinite(*nonfinite, "triton", "cuda") == {}
