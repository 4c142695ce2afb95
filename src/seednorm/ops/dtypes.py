"""The compute-precision rule every path follows (spec §8): float64 stays float64, every other floating dtype is
computed in float32, and results are cast back to the input's dtype."""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
