"""σ and σ' for the fused paths, with σ' written in terms of t = σ(s) so the forward saves t and nothing else."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# The one registry of σ by name: the reference path (seednorm.functional) and the fused paths both use it.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hardtanh": F.hardtanh,
    "softsign": F.softsign,
}
# The code each compiled kernel (C++ and Triton) switches on for σ.
ACTIVATION_CODES: dict[str, int] = {"tanh": 0, "sigmoid": 1, "hardtanh": 2, "softsign": 3}


def sigma(s: Tensor, activation: str) -> Tensor:
    """t = σ(s) for one of ``ACTIVATIONS``."""
    if activation in ACTIVATIONS:
        return ACTIVATIONS[activation](s)
    raise ValueError(f"unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}")


def dsigma_from_t(t: Tensor, activation: str) -> Tensor:
    """σ'(s) from t = σ(s): 1 − t², t(1 − t), [|s| < 1] = [|t| < 1], and (1 − |t|)² (softsign); NaN for NaN."""
    if activation == "tanh":
        return 1 - t * t
    if activation == "sigmoid":
        return t * (1 - t)
    if activation == "hardtanh":
        return torch.where(t.abs() < 1, 1.0, torch.where(t.isnan(), t, 0.0))  # NaN stays NaN
    if activation == "softsign":
        return (1 - t.abs()).square()
    raise ValueError(f"unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}")
