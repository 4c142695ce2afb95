"""``seednorm::forward`` written in plain ATen operators: the decomposition that turns an exported program holding
the custom op into one that any runtime of ``torch.export`` programs can run.

    ep = torch.export.export(model, args)                 # holds torch.ops.seednorm.forward (the fused kernels)
    ep = ep.run_decompositions(seednorm.ops.decompositions())   # plain ATen: no seednorm needed to load or run it

What needs it. An exported program that holds the op runs only where ``import seednorm`` registered the op (and
there with the kernels chosen at export time: ``impl`` is a constant of the graph). AOTInductor packages the op as
a call back into Python (such a package runs only in a Python process that imported seednorm), and the ONNX
exporter has no translation for it; the decomposed program needs neither.

Why it is not in torch's global decomposition table (``torch._decomp.decomposition_table``), where
``torch.onnx.export`` would find it by itself: TorchInductor treats an op with a registered decomposition but no
lowering as its own bug whenever the ``CI`` environment variable is set (as on every GitHub Actions runner), and
``torch.compile`` of any model with SeeDNorm would fail there.

The decomposition computes the op's five outputs (y, 1/RMS, σ(s), the row mean or an empty tensor, x + residual or
an empty tensor) with the formulas of the compiled path (``compiled._forward``, not compiled here), which the
fused kernels are tested against. The backward op has none: exported programs for inference hold no backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from . import compiled
from .op import _op_outputs, _rows


def forward(
    x: Tensor,
    weight: Tensor | None,
    alpha: Tensor,
    beta: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    keep: Tensor | None,
    num_heads: int,
    eps: float,
    activation: str,
    dot_scale: float,
    center: bool,
    impl: str,
    rng: Tensor | None = None,
    rows: Tensor | None = None,
    dropout: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``seednorm::forward``'s outputs, same shapes and dtypes, from ATen operators (``impl`` is ignored); in-kernel
    dropout (``rng``, ``rows``, ``dropout``) becomes ``philox.keep_mask``'s tensor ops, the same mask."""
    del impl  # which kernels would have run: the math is the same
    res = None if residual is None else _rows(residual)
    mask = None if keep is None else _rows(keep)
    row_ids = None if rows is None else rows.reshape(-1)
    y, sumsq, t, mean, summed = compiled._forward(
        _rows(x), res, weight, alpha, beta, bias, mask, num_heads, eps, activation, dot_scale, center, rng, row_ids,
        dropout,
    )
    rstd = torch.rsqrt(sumsq / x.shape[-1] + eps)
    return _op_outputs(x, num_heads, y, rstd, t, mean, summed)


def decompositions() -> dict[torch._ops.OpOverload, Callable]:
    """``torch.export``'s default decomposition table plus ``seednorm::forward`` → :func:`forward`: pass it to
    ``ExportedProgram.run_decompositions`` for a program in plain core ATen."""
    table = torch.export.default_decompositions()
    table[torch.ops.seednorm.forward.default] = forward
    return table

