"""The vision study: a compact ViT whose norms come from ``seednorm.build_norm``, trained on offline image data,
scored in distribution and under distribution shifts, with SeeDNorm's head-count ablation; the same for a small
ConvNeXt (``--model convnext``), and MAE pre-training of the ViT scored by a linear probe and fine-tuning
(``--model mae``).

    cli.py         ``seednorm vit``: options, checks, main
    presets.py     named sizes (smoke, quick, full) of each model
    data.py        the offline image sets, the study's split, batches (and MAE's masking noise) by step
    model.py       the ViT (this package's or timm's); every norm from ``seednorm.build_norm``
    convnext.py    the ConvNeXt: channels-first norms in stem and downsampling, channels-last ones in blocks
    mae.py         MAE (masking, per-patch targets, masked loss, light decoder) and the linear probe
    evals.py       accuracy in distribution, under shifts and on a transfer set
    study.py       the supervised grid of runs on the harness, each in a folder named by its settings
    mae_study.py   per (norm, seed): MAE pre-training, then probe and fine-tuning runs
    report.py      report.md, the PNGs and summary.json (supervised)
    mae_report.py  the same for MAE: reconstruction, probe and fine-tuning

``main(argv)`` is ``seednorm vit``.
"""

from .cli import main

__all__ = ["main"]
