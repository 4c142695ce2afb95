"""OLMo-core's MoE copy kernels (``olmo_core.kernels.moe``) run by Triton's interpreter against the CPU forms of
``seednorm_experiments.lm.olmo_moe_cpu``; prints {case: failure or "ok"} as JSON.

Run by test_olmo_moe_cpu.py in a subprocess, because TRITON_INTERPRET=1 must be set before triton is imported:
    TRITON_INTERPRET=1 PYTHONPATH=src:experiments python tests/experiments/lm/olmo_moe_interpret_check.py
The kernels are called through their autotuner's function with one block size (the autotuner itself benchmarks on a
GPU); a row wider than the block takes several iterations. Copies must be equal bit for bit; the weights'
gradient, a sum over the row in another order, to float rounding. The bfloat16 cases' weights are powers of two, so
that x × weight is exact: the interpreter converts float32 to bfloat16 by truncation, where compiled Triton
(``fp_downcast_rounding`` "rtne", its default) and torch round to nearest even.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from olmo_core.kernels import moe as triton_kernels

from seednorm_experiments.lm import olmo_moe_cpu


def routing(tokens: int, top_k: int, experts: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(indices, bin_ids, bins) as OLMo-core's router makes them: copy ids sorted by expert, one expert left empty."""
    g = torch.Generator().manual_seed(seed)
    choice = torch.stack([torch.randperm(experts - 1, generator=g)[:top_k] for _ in range(tokens)]).flatten()
    bin_ids, indices = torch.sort(choice, stable=True)
    bins = torch.cumsum(torch.bincount(bin_ids, minlength=experts), 0)
    return indices.int(), bin_ids.int(), bins.int()


def triton_gather(x, indices, bin_ids, weights, bins, top_k, block):
    out = torch.empty(indices.shape[0], x.shape[1], dtype=x.dtype)
    triton_kernels._padded_copy.fn[(indices.shape[0],)](
        x, out, indices, bin_ids, weights, bins, bins, NUM_COLUMNS=x.shape[1], TOP_K=top_k, BLOCK_X=block,
        A_TO_B=True, SCALE=weights is not None)
    return out


def triton_scatter(x, indices, bin_ids, weights, bins, top_k, block):
    out = torch.empty(indices.shape[0] // top_k, top_k, x.shape[1], dtype=x.dtype)
    triton_kernels._padded_copy.fn[(indices.shape[0],)](
        out, x, indices, bin_ids, weights, bins, bins, NUM_COLUMNS=x.shape[1], TOP_K=top_k, BLOCK_X=block,
        A_TO_B=False, SCALE=weights is not None)
    return out.sum(dim=1) if top_k > 1 else out.view(-1, x.shape[1])


def triton_wgrad(x, grad, indices, bin_ids, bins, top_k, block):
    out = torch.empty(indices.shape[0], dtype=x.dtype)
    triton_kernels._padded_copy_wgrad.fn[(indices.shape[0],)](
        x, grad, out, indices, bin_ids, bins, bins, NUM_COLUMNS=x.shape[1], TOP_K=top_k, BLOCK_X=block)
    return out


def compare(actual: torch.Tensor, expected: torch.Tensor, exact: bool) -> str:
    """"ok", or what differs: ``exact`` bit for bit, else to float rounding."""
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return f"shape/dtype {tuple(actual.shape)} {actual.dtype} != {tuple(expected.shape)} {expected.dtype}"
    if exact:
        return "ok" if torch.equal(actual, expected) else f"max diff {(actual - expected).abs().max().item():.3g}"
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2}[actual.dtype]
    try:
        torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)
        return "ok"
    except AssertionError as err:
        return str(err).splitlines()[0]


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("set TRITON_INTERPRET=1 to run OLMo-core's Triton kernels on CPU", file=sys.stderr)
        return 2
    results = {}
    for tokens, width, top_k, experts, block in ((7, 13, 2, 5, 64), (5, 70, 3, 4, 64), (6, 9, 1, 3, 64),
                                                 (4, 200, 2, 6, 64)):
        indices, bin_ids, bins = routing(tokens, top_k, experts, seed=tokens)
        for dtype in (torch.float32, torch.bfloat16):
            name = f"T{tokens} D{width} k{top_k} E{experts} {str(dtype).removeprefix('torch.')}"
            x = torch.randn(tokens, width).to(dtype)
            copies = torch.randn(tokens * top_k, width).to(dtype)
            grad = torch.randn(tokens, width).to(dtype)
            weights = (torch.rand(tokens * top_k) if dtype == torch.float32
                       else 2.0 ** torch.randint(-3, 2, (tokens * top_k,)).float()).to(dtype)
            for w in (None, weights):
                tag = f"{name} {'weighted' if w is not None else 'plain'}"
                results[f"gather {tag}"] = compare(
                    olmo_moe_cpu.gather(x, indices, bin_ids, w, bins, top_k),
                    triton_gather(x, indices, bin_ids, w, bins, top_k, block), exact=True)
                results[f"scatter {tag}"] = compare(
                    olmo_moe_cpu.scatter(copies, indices, bin_ids, w, bins, top_k),
                    triton_scatter(copies, indices, bin_ids, w, bins, top_k, block), exact=True)
            results[f"scatter_wgrad {name}"] = compare(
                olmo_moe_cpu.scatter_wgrad(copies, grad, indices, bin_ids, bins, top_k),
                triton_wgrad(copies, grad, indices, bin_ids, bins, top_k, block), exact=False)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
