"""The vision study: a compact ViT whose norms come from ``seednorm.build_norm``, trained on offline image data,
scored in distribution and under distribution shifts, with SeeDNorm's head-count ablation.

    cli.py      ``seednorm vit``: options, checks, main
    presets.py  named sizes (smoke, quick, full)
    data.py     the offline image sets, the study's split, batches by step
    model.py    the ViT (this package's or timm's); every norm from ``seednorm.build_norm``
    evals.py    accuracy in distribution, under shifts and on a transfer set
    study.py    the grid of runs on the harness, each in a folder named by its settings
    report.py   report.md, the PNGs and summary.json

``main(argv)`` is ``seednorm vit``.
"""

from .cli import main

__all__ = ["main"]
