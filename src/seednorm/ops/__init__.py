"""Fused SeeDNorm: one ``torch.library`` custom op (``op.py``) over Triton kernels (``triton.py``, CUDA), C++/OpenMP
kernels (``cpu.py`` + ``cpu_kernels.cpp``, CPU) and TorchInductor-compiled kernels (``compiled.py``, any device).
``seednorm.functional.seednorm(impl=...)`` dispatches here. ``decompositions()`` (``decomposition.py``) rewrites the
op in plain ATen operators for exported programs. The DTensor sharding rules (``sharding.py``) are registered when
``torch.distributed.tensor`` is first imported (``after_import.py``), so that ``import seednorm`` does not import it.
"""

import torch

from .after_import import after_import
from .decomposition import decompositions
from .op import IMPLS, check_impl, check_residual, residual_sum, resolve_impl, seednorm_fused


def _register_sharding() -> None:
    from . import sharding  # noqa: F401  (importing it registers the op's DTensor sharding rules)


if torch.distributed.is_available():  # once torch.distributed.tensor is imported, by whoever: not here
    after_import("torch.distributed.tensor", _register_sharding)

__all__ = [
    "IMPLS", "check_impl", "check_residual", "decompositions", "residual_sum", "resolve_impl", "seednorm_fused"
]
