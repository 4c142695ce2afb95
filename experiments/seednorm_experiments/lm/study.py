"""The language-model study: train the same decoder with each norm and seed on the harness, evaluate
in-domain and zero-shot, optionally sweep the learning rate, and measure training throughput.

Layout of ``out``: ``runs/<norm>/seed<k>/`` (one harness run each: checkpoint, metrics.csv, tb/,
result.json), ``sweep/<norm>/lr<x>/seed<k>/`` for ``--lr-sweep``, ``throughput.json``, and the
report files written by ``report.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..common import check_norms, final_loss
from ..harness import Task, TrainConfig, benchmark
from ..runs import check_reusable, train_or_reuse
from ..text_evals import bits_per_byte, cloze_accuracy, cloze_items
from .data import EVAL_DOMAINS, Corpus, OnePassBatches, load_corpus, train_batch
from .model import SITES, Llama, LMConfig
from .presets import Preset

__all__ = ["Evaluator", "Run", "make_task", "measure_throughput", "model_fields", "nudged", "run_lr_sweep", "run_study",
           "study_corpus", "train_config"]


@dataclass
class Run:
    """One finished training run: its norm, seed, learning rate and the harness's result.json."""

    norm: str
    seed: int
    lr: float
    result: dict[str, Any]

    @property
    def diverged(self) -> bool:
        return bool(self.result["diverged"])

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 10% of steps (:func:`..common.final_loss`)."""
        return final_loss(self.result["history"])


def model_config(preset: Preset, vocab_size: int, norm: str, placement: Sequence[str] = SITES,
                 qk_norm: bool = False, moe_experts: int = 0, moe_top_k: int = 2) -> LMConfig:
    """The study's model for ``preset``: dense, or a mixture of ``moe_experts`` experts, top ``moe_top_k``."""
    return LMConfig(vocab_size=vocab_size, dim=preset.dim, n_layers=preset.n_layers, n_heads=preset.n_heads,
                    seq_len=preset.seq_len, qk_norm=qk_norm, norm=norm, placement=tuple(placement),
                    moe_experts=moe_experts, moe_top_k=moe_top_k)


def _lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy. A mixture-of-experts model adds ``moe_aux_coef`` × its load-balancing loss
    to the gradient as ``coef · (aux − aux.detach())``: the value, which the harness logs and checks for
    divergence, stays the cross-entropy (comparable with the dense model's); the evaluation logs the balance."""
    x, y = batch
    device = next(model.parameters()).device
    logits = model(x.to(device))
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten())
    inner = getattr(model, "module", model)  # DDP wraps the model
    aux = getattr(inner, "aux_loss", None)  # OLMo-core's model (--arch olmo2) adds its own to the gradient
    if aux is None:
        return loss
    return loss + inner.cfg.moe_aux_coef * (aux - aux.detach())


_EVAL_FIELDS = ("eval_windows", "cloze_items", "cloze_context", "cloze_length")


class Evaluator:
    """Bits per byte on every evaluation domain and cloze accuracy on each, items built once (on first use)."""

    def __init__(self, preset: Preset, corpus: Corpus) -> None:
        self.preset, self.corpus = preset, corpus
        self.items: dict[str, Any] | None = None

    @property
    def settings(self) -> dict[str, Any]:
        """What the evaluation depends on besides the model and the corpus."""
        return {k: getattr(self.preset, k) for k in _EVAL_FIELDS}

    def __call__(self, model: nn.Module) -> dict[str, float]:
        if self.items is None:
            p = self.preset
            self.items = {d: cloze_items(self.corpus.tokens[d], items=p.cloze_items, context=p.cloze_context,
                                         length=p.cloze_length, seed=i) for i, d in enumerate(EVAL_DOMAINS)}
        out = {}
        if getattr(model, "aux_loss", None) is not None or getattr(model, "is_moe", False):  # ours, OLMo-core's
            out.update(self.routing(model))
        for d in EVAL_DOMAINS:
            out[f"bpb/{d}"] = bits_per_byte(model, self.corpus.tokens[d], self.corpus.token_bytes,
                                            seq_len=self.preset.seq_len, windows=self.preset.eval_windows)
            out[f"cloze/{d}"] = cloze_accuracy(model, *self.items[d])
        return out


    def routing(self, model: Llama) -> dict[str, float]:
        """A mixture of experts' routing on a fixed batch (global training batch 0 of seed 0): ``moe/balance``,
        the load-balancing loss per block (1: balanced), and ``moe/max_load``, E × the largest expert's share of
        the assignments (1: balanced, E/K: it takes every token), both averaged over the blocks (OLMo-core's MoE:
        :func:`.olmo.routing`)."""
        x, _ = train_batch(self.corpus, 0, 0, 1, batch_size=self.preset.batch_size, seq_len=self.preset.seq_len,
                           seed=0)
        x = x.to(next(model.parameters()).device)
        if getattr(model, "is_moe", False):
            from .olmo import routing

            return routing(model, x)
        model(x)
        moes = [block.mlp for block in model.blocks]
        return {"moe/balance": float(model.aux_loss),
                "moe/max_load": sum(float(m.load.max()) * len(m.load) for m in moes) / len(moes)}


_UNSET_OK = ("norm_kwargs", "site_norm_kwargs", "embed_scale")  # in the signature only when set
_DEFAULT_ARCH = "llama"  # in the signature only when another (earlier runs' fingerprints stay)
_MOE_FIELDS = ("moe_experts", "moe_top_k", "moe_hidden", "moe_aux_coef")  # in the signature only with experts


def _model_signature(cfg: LMConfig) -> dict[str, Any]:
    """The model fields of a run's fingerprint: every field, but those of :data:`_UNSET_OK` only when set and the
    mixture-of-experts fields only with experts (a dense model's fingerprint does not name them), ``arch`` only when
    not "llama", then how the
    load-balancing loss is taken over the blocks (their mean, :attr:`Llama.aux_loss`; OLMo-core's weight divided over
    the blocks) and, for OLMo-core's MoE, its router z-loss weight and its router's weight decayed as a matrix."""
    signature = {k: v for k, v in vars(cfg).items()
                 if (v or k not in _UNSET_OK) and (cfg.moe or k not in _MOE_FIELDS)
                 and (k != "arch" or v != _DEFAULT_ARCH)}
    if not cfg.moe:
        return signature
    if cfg.arch == "olmo2":
        from .olmo import MOE_Z_LOSS

        signature |= {"moe_z_loss": MOE_Z_LOSS, "moe_router_weight": "matrix, decayed"}
    return {**signature, "moe_aux_over_blocks": "mean"}


def make_task(preset: Preset, corpus: Corpus, norm: str, seed: int, evaluator: Evaluator | None,
              placement: Sequence[str] = SITES, qk_norm: bool = False,
              model_overrides: dict[str, Any] | None = None, signature: dict[str, Any] | None = None,
              nudge_init: bool = False) -> Task:
    """The harness task of one (norm, seed) run: data order and init depend on the seed only, so runs
    of different norms with the same seed are paired. ``model_overrides``: further :class:`LMConfig`
    fields (e.g. ``norm_kwargs``, ``embed_scale``; see :mod:`.recipes`). ``signature``: further settings
    that shape the run (e.g. what ``TrainConfig.param_groups`` does), added to the task's signature.
    ``nudge_init``: every parameter of the seed's init moved up by one ulp (:func:`nudged`), a float-level
    perturbation for measuring how far training amplifies it."""
    cfg = dataclasses.replace(model_config(preset, corpus.vocab_size, norm, placement, qk_norm),
                              **(model_overrides or {}))
    if preset.one_pass:
        batches = OnePassBatches(corpus, batch_size=preset.batch_size, seq_len=preset.seq_len, seed=seed)
        batches.require(preset.steps)
    else:
        batches = lambda step, rank, world: train_batch(  # noqa: E731
            corpus, step, rank, world, batch_size=preset.batch_size, seq_len=preset.seq_len, seed=seed)
    extra = {k: True for k in ("compile", "one_pass") if getattr(preset, k)}  # named only when set
    if nudge_init:
        extra["init_nudge"] = "+1 ulp"
    return Task(
        name=f"lm-{preset.name}-{norm}",
        build_model=lambda: nudged(_built(cfg, preset.compile)) if nudge_init else _built(cfg, preset.compile),
        batches=batches,
        loss=_lm_loss,
        tokens=lambda batch: batch[0].numel(),
        evaluate=evaluator,
        signature={"model": _model_signature(cfg),
                   "batch_size": preset.batch_size, "max_chars": preset.max_chars, "corpus": corpus.key,
                   "eval": evaluator.settings if evaluator is not None else None, **extra, **(signature or {})},
    )


def nudged(model: nn.Module) -> nn.Module:
    """``model`` with every parameter element x replaced in place by the next float above it (``nextafter(x, +∞)``:
    a relative change of ~6e-8 in float32; 0 becomes the smallest subnormal). Returns ``model``."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.nextafter(p, torch.full_like(p, math.inf)))
    return model


def _built(cfg: LMConfig, compile: bool) -> nn.Module:
    """The model (:class:`Llama`, or OLMo-core's OLMo2 for ``arch="olmo2"``); with ``compile``, compiled in place
    (``nn.Module.compile``: parameter and state-dict names stay)."""
    if cfg.arch == "olmo2":
        from .olmo import build_olmo2

        model = build_olmo2(cfg)
    else:
        model = Llama(cfg)
    if compile:
        model.compile()
    return model


def study_corpus(preset: Preset) -> Corpus:
    """The preset's corpus: the base corpus, or the corpus pack (:func:`.corpus_pack.default_pack_dir`)."""
    if preset.corpus == "pack":
        from .corpus_pack import default_pack_dir, pack_source

        return load_corpus(preset.vocab_size, preset.max_chars, texts=pack_source(default_pack_dir()))
    return load_corpus(preset.vocab_size, preset.max_chars)


def _train_all(runs: list[tuple[Task, TrainConfig]], resume: bool) -> list[dict[str, Any]]:
    """Every run's result: with ``resume``, finished runs are reused and interrupted ones resumed (all checked
    to be these runs before anything trains, :mod:`..runs`); without, each is trained from scratch."""
    if resume:
        check_reusable(runs)
    return [train_or_reuse(task, cfg, reuse=resume) for task, cfg in runs]


def train_config(preset: Preset, out: Path, seed: int, lr: float, steps: int, resume: bool, progress: bool,
                 desc: str, vocab_size: int) -> TrainConfig:
    """The harness settings of one run: the preset's schedule at ``lr`` for ``steps`` steps into ``out``; a run
    diverges when its loss exceeds ln(vocab) + 1 (worse than guessing uniformly)."""
    return TrainConfig(out_dir=out, steps=steps, lr=lr, warmup=min(preset.warmup, steps // 5),
                       weight_decay=preset.weight_decay, grad_clip=preset.grad_clip, seed=seed, resume=resume,
                       ckpt_every=preset.ckpt_every, eval_every=preset.eval_every if steps == preset.steps else 0,
                       diverge_above=math.log(vocab_size) + 1.0, progress=progress, desc=desc)


def model_fields(moe_experts: int = 0, moe_top_k: int = 2, arch: str = "llama") -> dict[str, Any]:
    """The :class:`LMConfig` fields of the study's mixture of experts (none when dense) and architecture (none for
    the default)."""
    return ({"moe_experts": moe_experts, "moe_top_k": moe_top_k} if moe_experts else {}) \
        | ({"arch": arch} if arch != _DEFAULT_ARCH else {})


def run_study(preset: Preset, norms: Sequence[str], seeds: int, out: Path, *, resume: bool = False,
              placement: Sequence[str] = SITES, qk_norm: bool = False, progress: bool = True,
              moe_experts: int = 0, moe_top_k: int = 2, arch: str = "llama") -> list[Run]:
    """Train every (seed, norm) pair -- seeds outer, so a cut-short study still has paired seeds. ``moe_experts``
    > 0: the mixture-of-experts model (top ``moe_top_k``) instead of the dense one; ``arch="olmo2"``: OLMo-core's
    OLMo2 (:mod:`.olmo`)."""
    norms = check_norms(norms)
    corpus = study_corpus(preset)
    evaluator = Evaluator(preset, corpus)
    grid = [(norm, seed) for seed in range(seeds) for norm in norms]
    fields = model_fields(moe_experts, moe_top_k, arch)
    jobs = [(make_task(preset, corpus, norm, seed, evaluator, placement, qk_norm, fields),
             train_config(preset, out / "runs" / norm / f"seed{seed}", seed, preset.lr, preset.steps, resume,
                           progress, f"{norm} seed {seed}", corpus.vocab_size)) for norm, seed in grid]
    return [Run(norm, seed, preset.lr, result) for (norm, seed), result in zip(grid, _train_all(jobs, resume),
                                                                              strict=True)]


def run_lr_sweep(preset: Preset, norms: Sequence[str], seeds: int, out: Path, *, resume: bool = False,
                 placement: Sequence[str] = SITES, qk_norm: bool = False, progress: bool = True,
                 moe_experts: int = 0, moe_top_k: int = 2, arch: str = "llama") -> list[Run]:
    """Train each norm at ``preset.lr × m`` for every multiplier m of ``preset.lr_sweep`` for
    ``preset.sweep_steps`` steps (no evaluation); a run diverges when its loss becomes non-finite or
    exceeds ln(vocab) + 1, i.e. worse than guessing uniformly."""
    norms = check_norms(norms)
    corpus = study_corpus(preset)
    steps = preset.sweep_steps or preset.steps
    grid = [(norm, seed, preset.lr * mult) for mult in preset.lr_sweep for seed in range(seeds) for norm in norms]
    fields = model_fields(moe_experts, moe_top_k, arch)
    jobs = [(make_task(preset, corpus, norm, seed, None, placement, qk_norm, fields),
             dataclasses.replace(train_config(preset, out / "sweep" / norm / f"lr{lr:g}" / f"seed{seed}", seed, lr,
                                              steps, resume, progress, f"sweep {norm} lr {lr:g} seed {seed}",
                                               corpus.vocab_size), ckpt_every=0)) for norm, seed, lr in grid]
    return [Run(norm, seed, lr, result) for (norm, seed, lr), result in zip(grid, _train_all(jobs, resume),
                                                                            strict=True)]


def measure_throughput(preset: Preset, norms: Sequence[str], *, rounds: int = 40, steps: int = 2,
                       placement: Sequence[str] = SITES, qk_norm: bool = False, moe_experts: int = 0,
                       moe_top_k: int = 2, arch: str = "llama") -> dict[str, list[float]]:
    """Training tokens/s of each norm: the study's own training step (:func:`harness.benchmark`: same
    optimizer groups, clipping and schedule as :func:`run_study`), seed 0, timed round-robin, ``rounds`` ×
    ``steps`` steps per norm. Returns the per-round tokens/s of each norm (round i of every norm ran back to
    back)."""
    corpus = study_corpus(preset)
    fields = model_fields(moe_experts, moe_top_k, arch)
    tasks = {norm: make_task(preset, corpus, norm, 0, None, placement, qk_norm, fields) for norm in check_norms(norms)}
    config = train_config(preset, Path("."), 0, preset.lr, preset.steps, False, False, "", corpus.vocab_size)
    return benchmark(tasks, config, rounds=rounds, steps=steps)
