"""The vision study: a compact ViT whose norms come from ``seednorm.build_norm``, trained on offline image data,
scored in distribution and under distribution shifts, with SeeDNorm's head-count ablation. ``main(argv)`` is
``seednorm vit``."""

from .study import main

__all__ = ["main"]
