"""Fused SeeDNorm: one ``torch.library`` custom op (``op.py``) over Triton kernels (``triton.py``, CUDA), C++/OpenMP
kernels (``cpu.py`` + ``cpu_kernels.cpp``, CPU) and TorchInductor-compiled kernels (``compiled.py``, any device).
``seednorm.functional.seednorm(impl=...)`` dispatches here. ``decompositions()`` (``decomposition.py``) rewrites the
op in plain ATen operators for exported programs.
"""

import torch

from .decomposition import decompositions
from .op import IMPLS, check_impl, check_residual, residual_sum, resolve_impl, seednorm_fused

if torch.distributed.is_available():
    from . import sharding  # noqa: F401  (DTensor sharding rules for the op)

__all__ = [
    "IMPLS", "check_impl", "check_residual", "decompositions", "residual_sum", "resolve_impl", "seednorm_fused"
]
