"""Kernel benchmarks: ``python -m seednorm_experiments.bench`` (or ``seednorm bench``); see ``kernels.py``."""

from .kernels import main

__all__ = ["main"]
