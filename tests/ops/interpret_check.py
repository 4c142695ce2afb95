"""Run every case of cases.py through the Triton kernels under the CPU interpreter; print {case: failures} as JSON.

Run by test_triton.py in a subprocess, because TRITON_INTERPRET=1 must be set before triton is imported:
    TRITON_INTERPRET=1 PYTHONPATH=src:tests:tests/ops python tests/ops/interpret_check.py
Each case (and each non-finite case) runs twice: with the whole-row kernels, and with the chunked kernels (forced
by tiny MAX_TILE_* and CHUNK*, so rows span several chunks and heads several loop iterations).
"""

from __future__ import annotations

import json
import os
import sys

import torch
from cases import CASES, NONFINITE_PLACES, NONFINITE_VALUES, check, check_nonfinite, nonfinite_id

import seednorm.ops.triton as kernels
from seednorm.ops.sigma import ACTIVATION_CODES


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("set TRITON_INTERPRET=1 to run the Triton kernels on CPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    results = {}
    row = (kernels.MAX_TILE_FWD, kernels.MAX_TILE_BWD, kernels.CHUNK, kernels.CHUNK_BWD)
    for layout, limits in (("row", row), ("chunked", (16, 16, 32, 16))):
        kernels.MAX_TILE_FWD, kernels.MAX_TILE_BWD, kernels.CHUNK, kernels.CHUNK_BWD = limits
        for case in CASES:
            try:
                results[f"{layout}-{case.id}"] = check(case, "triton")
            except Exception as err:  # report every case, not just the first crash
                results[f"{layout}-{case.id}"] = {"error": f"{type(err).__name__}: {err}"}
        for activation in ACTIVATION_CODES:
            for place in NONFINITE_PLACES:
                for value in NONFINITE_VALUES:
                    key = f"{layout}-nonfinite-{nonfinite_id(activation, place, value)}"
                    try:
                        results[key] = check_nonfinite(activation, place, value, "triton")
                    except Exception as err:
                        results[key] = {"error": f"{type(err).__name__}: {err}"}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
