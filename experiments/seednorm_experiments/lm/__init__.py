"""The language-model study: the same small Llama-style decoder trained with RMSNorm, LayerNorm, DyT, Derf and
SeeDNorm on Shakespeare's plays + Python code, scored in-domain and zero-shot; and the ablation of SeeDNorm's knobs.

    cli.py             ``seednorm lm``: options, checks, main
    presets.py         named sizes (smoke, quick, standard, full)
    data.py            the offline corpora (raw texts: ..texts), the tokenizer, batches by step
    model.py           the decoder; every norm from ``seednorm.build_norm``
    study.py           the grid of (norm, seed) runs on the harness, the learning-rate sweep, the throughput benchmark
    report.py          the study's report.md and plots
    sweep.py           each norm's best learning rate from a sweep
    recipes.py         the ablation's configurations (SeeDNorm knobs, DyT's LM recipe)
    ablation.py        the ablation's phases, shared between processes
    ablation_report.py the ablation's report.md, summary.json and plots
    step_cost.py       ``python -m seednorm_experiments.lm.step_cost``: training-step cost vs RMSNorm

``main(argv)`` is ``seednorm lm``.
"""

from .cli import main

__all__ = ["main"]
