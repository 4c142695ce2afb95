"""Reading the dropout mask a fused path generates, for test_dropout.py and dropout_interpret_check.py.

With x = 1, β = 0, σ = sigmoid (t = 1/2), α = 1, γ = 0 and ε = 1e-30 (1/RMS = 1 exactly in float32) the layer is
y = k/2 element-wise, so 2·y is the mask k bit for bit; for one row with δ = 1, dα = t·k⊙δ⊙x̂ = k/2 too, which
reads the mask the backward generates.
"""

from __future__ import annotations

import torch
from torch import Tensor

import seednorm
from seednorm import ops

EPS = 1e-30


def _layer_inputs(shape: tuple[int, ...], device: str = "cpu") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    d = shape[-1]
    return (torch.ones(shape, device=device), torch.zeros(d, device=device), torch.ones(d, device=device),
            torch.zeros(d, device=device))


def revealed_mask(impl: str, shape: tuple[int, ...], p: float, rng: list[int] | None = None,
                  rows: list[int] | None = None, num_heads: int = 1, device: str = "cpu") -> Tensor:
    """The mask impl applies to an input of ``shape`` on ``device`` (returned on the CPU): from ``rng`` = [seed,
    offset] through the fused op (``rows``: global row indices), or, without ``rng``, through ``seednorm.seednorm``
    in training (its own draw)."""
    x, gamma, alpha, beta = _layer_inputs(shape, device)
    kw = {"num_heads": num_heads, "eps": EPS, "activation": "sigmoid"}
    if rng is None:
        y = seednorm.seednorm(x, gamma, alpha, beta, dynamic_dropout=p, training=True, impl=impl, **kw)
    else:
        row_ids = None if rows is None else torch.tensor(rows, dtype=torch.int64, device=device).view(shape[:-1])
        y = ops.seednorm_fused(x, gamma, alpha, beta, impl=impl, dot_scale=1.0, dropout=p,
                               rng=torch.tensor(rng, dtype=torch.int64, device=device), rows=row_ids, **kw)
    return (2 * y).cpu()


def revealed_grad_mask(impl: str, shape: tuple[int, ...], p: float, rng: list[int],
                       rows: list[int] | None = None, num_heads: int = 1, device: str = "cpu") -> Tensor:
    """The mask the backward generates for a single row (``shape`` = (1, D)), read off dα = k/2."""
    assert shape[0] == 1 and len(shape) == 2
    x, gamma, alpha, beta = _layer_inputs(shape, device)
    alpha.requires_grad_()
    row_ids = None if rows is None else torch.tensor(rows, dtype=torch.int64, device=device)
    y = ops.seednorm_fused(x, gamma, alpha, beta, impl=impl, num_heads=num_heads, eps=EPS, activation="sigmoid",
                           dot_scale=1.0, dropout=p, rng=torch.tensor(rng, dtype=torch.int64, device=device),
                           rows=row_ids)
    y.sum().backward()
    return (2 * alpha.grad).cpu()


# (seed, offset), shapes and probabilities the C++ and Triton masks are compared on: odd widths, a seed and an
# offset with both 32-bit words set, the largest seed and offset drawn, given global row indices, p = 1.
MASK_CASES = {
    "odd": {"shape": (3, 5, 37), "p": 0.3, "rng": [12345, 0]},
    "words": {"shape": (7, 19), "p": 0.5, "rng": [0x0123456789ABCDEF, (1 << 32) - 3], "num_heads": 1},
    "largest": {"shape": (2, 33), "p": 0.1, "rng": [(1 << 62) - 1, (1 << 62) - 1 - 66]},
    "heads": {"shape": (4, 48), "p": 0.75, "rng": [99, 7], "num_heads": 4},
    "rows": {"shape": (3, 21), "p": 0.4, "rng": [5, 11], "rows": [1000, 3, (1 << 40) + 1]},
    "all": {"shape": (2, 9), "p": 1.0, "rng": [1, 2]},
}


def one_row(case: dict) -> dict:
    """A case of ``MASK_CASES`` cut to its first row, for ``revealed_grad_mask``."""
    return {**case, "shape": (1, case["shape"][-1]), **({"rows": case["rows"][:1]} if "rows" in case else {})}
