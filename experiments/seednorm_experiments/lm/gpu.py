"""The ``gpu`` preset's study: a short learning-rate grid of RMSNorm and SeeDNorm on one GPU, with the FLOP-based
estimate of its wall time; on request the 1/√D dot-scale recipe and the training-step cost.

    seednorm lm --preset gpu --out results/lm_gpu                 # 4 runs, ≈ 36-55 s of training each (below)
    seednorm lm --preset gpu --recipe --throughput-rounds 20      # + the recipe run and the step-cost timing
    seednorm lm --preset gpu --override dim=32 n_layers=1 ...      # the same path at a tiny size (tests, dry run)

Runs, in order (seed 0; every run sees the same init and the same windows of the corpus, one pass at most):

1. RMSNorm and SeeDNorm (paper defaults) at ``preset.lr × m`` for each m of ``preset.lr_grid``; each norm's best
   rate is the one with the lowest held-out in-domain bits per byte (:func:`.ablation.primary_metric`);
2. with ``throughput_rounds``: the training-step cost SeeDNorm/RMSNorm and tokens/s of the compiled bf16 step
   (:func:`.study.measure_throughput`);
3. with ``recipe``: SeeDNorm with the small-model recipe (``seednorm-dot-rsqrt``: dot_scale = 1/√D) at SeeDNorm's
   best rate.

Both extras are off by default, so that the study and a smoke test fit in about 8 minutes of one GPU. The report
is rewritten after every run and after the timing, so a study cut short by its time limit still leaves one. Layout
of ``out``: ``runs/<variant>/lr<x>/seed0/`` and ``report.md``.

Wall-time estimate (:func:`train_flops`): 6·N·tokens for the matrix products (N: every weight a token passes
through, the tied output projection included) plus 12·L·T·d per token for attention's two products (forward and
backward, counted as dense), over an assumed achievable ``ASSUMED_TFLOPS`` of bf16 on one H100 or H200.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from ..common import BASELINE
from ..progress import expect
from ..records import measure
from ..runs import check_reusable, train_or_reuse
from .ablation import primary_metric
from .data import Corpus, OnePassBatches
from .model import Llama
from .presets import Preset
from .recipes import get_variant
from .study import Evaluator, Run, make_task, measure_throughput, model_config, study_corpus, train_config

__all__ = ["ASSUMED_TFLOPS", "GRID_NORMS", "RECIPE", "best_lr", "check_one_pass", "non_embedding_params",
           "run_gpu_study", "train_flops"]

GRID_NORMS = (BASELINE, "seednorm")
RECIPE = "seednorm-dot-rsqrt"
ASSUMED_TFLOPS = 200.0
"""Assumed achievable bf16 rate of the whole training step on one H100 or H200 (the same compute, 989 TFLOP/s dense
bf16 nominal), TFLOP/s: a quarter of the ~790 TFLOP/s reached by large matrix products there (512-wide products,
the norms, softmax and the optimizer run far below it)."""


def non_embedding_params(preset: Preset, vocab_size: int, moe_experts: int = 0, moe_top_k: int = 2) -> int:
    """Parameters of the RMSNorm model outside the token embedding (built on the meta device: no memory); with
    ``moe_experts``, of its mixture-of-experts form (every expert counted)."""
    cfg = model_config(preset, vocab_size, BASELINE, moe_experts=moe_experts, moe_top_k=moe_top_k)
    with torch.device("meta"):
        model = Llama(cfg)
    return sum(p.numel() for p in model.parameters()) - model.embed.weight.numel()


def train_flops(preset: Preset, vocab_size: int) -> float:
    """FLOP of one run: tokens × (6·(N + V·d) + 12·L·T·d), N = :func:`non_embedding_params`."""
    per_token = (6 * (non_embedding_params(preset, vocab_size) + vocab_size * preset.dim)
                 + 12 * preset.n_layers * preset.seq_len * preset.dim)
    return float(per_token) * preset.tokens_per_run


def check_one_pass(preset: Preset, corpus: Corpus) -> None:
    """ValueError when ``preset.steps`` batches need more than one pass over ``corpus``'s training text."""
    if preset.one_pass:
        OnePassBatches(corpus, batch_size=preset.batch_size, seq_len=preset.seq_len, seed=0).require(preset.steps)


def best_lr(runs: list[Run], variant: str) -> float | None:
    """The learning rate of ``variant``'s run with the lowest :func:`.ablation.primary_metric` (None: all diverged)."""
    ok = [r for r in runs if r.norm == variant and not r.diverged]
    return min(ok, key=primary_metric).lr if ok else None


def run_gpu_study(preset: Preset, out: Path, *, resume: bool = False, progress: bool = True, recipe: bool = False,
                  throughput_rounds: int = 0,
                  write: Callable[[list[Run], dict[str, list[float]] | None], object] | None = None
                  ) -> tuple[list[Run], dict[str, list[float]] | None]:
    """Train the grid, then time the step (``throughput_rounds`` > 0) and train the recipe run (``recipe``);
    ``write(runs, throughput)`` after each (the report). Returns (runs, per-round tokens/s of RMSNorm and SeeDNorm,
    or None with ``throughput_rounds=0``)."""
    if not preset.lr_grid:
        raise ValueError(f"preset {preset.name!r} has no lr_grid")
    corpus = study_corpus(preset)
    evaluator = Evaluator(preset, corpus)

    def job(variant: str, lr: float) -> tuple:
        v = get_variant(variant)
        task = make_task(preset, corpus, v.norm, 0, evaluator,
                         model_overrides=v.model_overrides(preset.dim, preset.n_heads))
        config = train_config(preset, out / "runs" / variant / f"lr{lr:g}" / "seed0", 0, lr, preset.steps, resume,
                              progress, f"{variant} lr {lr:g}", corpus.vocab_size)
        return task, dataclasses.replace(config, **v.train_overrides(lr, preset.weight_decay))

    grid = [(variant, preset.lr * m) for m in preset.lr_grid for variant in GRID_NORMS]
    jobs = [job(v, lr) for v, lr in grid]  # every setting is checked (one pass, run folders) before training
    if resume:
        check_reusable(jobs)
    expect(len(jobs) + int(recipe))
    runs: list[Run] = []
    throughput = None
    for (variant, lr), (task, config) in zip(grid, jobs, strict=True):
        runs.append(Run(variant, 0, lr, train_or_reuse(task, config, reuse=resume)))
        if write:
            write(runs, throughput)
    if throughput_rounds:
        throughput = measure("throughput", lambda: measure_throughput(preset, GRID_NORMS, rounds=throughput_rounds),
                             "timing each norm's training step (the report's step cost)")
        if write:
            write(runs, throughput)
    lr = best_lr(runs, "seednorm")
    if recipe and lr is not None:
        task, config = job(RECIPE, lr)
        runs.append(Run(RECIPE, 0, lr, train_or_reuse(task, config, reuse=resume)))
        if write:
            write(runs, throughput)
    return runs, throughput
