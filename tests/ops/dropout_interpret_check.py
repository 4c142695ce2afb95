"""The Triton kernels' in-kernel dropout masks under the CPU interpreter; prints {key: mask as a list} as JSON.

Run by test_dropout.py in a subprocess, because TRITON_INTERPRET=1 must be set before triton is imported:
    TRITON_INTERPRET=1 PYTHONPATH=src:tests:tests/ops python tests/ops/dropout_interpret_check.py
Each mask is read off the forward (``revealed_mask``) for the whole-row kernels and for the chunked ones (forced by
tiny MAX_TILE_* and CHUNK), and off the backward's dα for a single row (dα = t·k⊙δ⊙x̂ = k/2 there).
"""

from __future__ import annotations

import json
import os
import sys

from dropout_cases import MASK_CASES, one_row, revealed_grad_mask, revealed_mask

import seednorm.ops.triton as kernels


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("set TRITON_INTERPRET=1 to run the Triton kernels on CPU", file=sys.stderr)
        return 2
    results: dict[str, list] = {}
    row = (kernels.MAX_TILE_FWD, kernels.MAX_TILE_BWD, kernels.CHUNK)
    for layout, limits in (("row", row), ("chunked", (16, 16, 32))):
        kernels.MAX_TILE_FWD, kernels.MAX_TILE_BWD, kernels.CHUNK = limits
        for key, case in MASK_CASES.items():
            results[f"{layout}-{key}"] = revealed_mask("triton", **case).tolist()
            results[f"{layout}-grad-{key}"] = revealed_grad_mask("triton", **one_row(case)).tolist()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
