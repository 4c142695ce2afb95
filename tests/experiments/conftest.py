"""Fixtures shared by the GPU script's dry-run test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def kernel_cache() -> str:
    """A cache with the C++ kernels built (this process's: usually built already), which the dry runs share, so
    that none builds them again (the lm stage runs them) and the later ones reuse the first's tokenized corpus."""
    from seednorm.ops import cpu

    cpu.unavailable()  # builds them here if they are not (without a compiler the dry runs do without them too)
    return str(cpu.cache_root())
