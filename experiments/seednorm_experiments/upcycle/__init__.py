"""The upcycling study: SmolLM2-135M converted to SeeDNorm (exactly) and trained on, against continued training as
shipped, for domain adaptation and norm-only tuning.

    cli.py         ``seednorm upcycle``: options, checks, main
    presets.py     named sizes (smoke, quick, standard, full)
    pretrained.py  the model from its GGUF file, its tokenizer, the weights' hash
    arms.py        the arms: conversion (checked exact), which parameters train, base learning rates
    data.py        adaptation and forgetting text with the model's tokenizer, batches by step
    cost.py        memory of one training step
    study.py       the base record, the sweep and the seeds on the harness (evaluations: ..text_evals)
    report.py      report.md, summary.json and plots
    probe.py       ``--probe``: each arm's first optimizer steps on one batch (loss, Δβ, |s|, α/γ, norm inputs)

``main(argv)`` is ``seednorm upcycle``.
"""

from .cli import main

__all__ = ["main"]
