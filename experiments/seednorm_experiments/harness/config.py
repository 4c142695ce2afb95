"""What a run is: the study's :class:`Task`, the :class:`TrainConfig`, the :class:`TrainResult` written to
``result.json``, the gradient-norm groups of a model's parameters (:func:`param_kinds`), and the run's fingerprint
(:func:`run_fingerprint`: every setting that shapes the result, and its SHA-256)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seednorm import NORMS, __version__, dynamic_parameters

from .distributed import world_size as launch_world_size

__all__ = ["RECORD_DIGEST_KEY", "RESULT_NAME", "Task", "TrainConfig", "TrainResult", "fingerprint_diff",
           "fingerprint_digest", "param_kinds", "record_digest", "run_fingerprint"]

RESULT_NAME = "result.json"
RECORD_DIGEST_KEY = "record_sha256"
"""The key of a run record's SHA-256 over every other value it holds (:func:`record_digest`)."""

# Layers whose ``weight`` is a gain γ (one per feature), for the gradient-norm group "gamma": every norm of the
# library's registry, and torch's own RMSNorm and LayerNorm (the parents of the library's).
_NORM_TYPES = (*NORMS.values(), nn.RMSNorm, nn.LayerNorm)


def param_kinds(model: nn.Module) -> dict[str, str]:
    """Gradient-norm group of every parameter, by name: ``alpha``/``beta`` (SeeDNorm's dynamic parameters, as
    ``seednorm.dynamic_parameters`` names them), ``gamma`` (the gain ``weight`` of any norm of ``seednorm.NORMS``
    or torch's RMSNorm, LayerNorm), ``matrix`` (≥ 2 dims: linear, embedding), ``other`` (biases, DyT's and Derf's
    scalars, ...)."""
    dynamic = dynamic_parameters(model)
    kinds = {}
    for mod_name, module in model.named_modules():
        for leaf, p in module.named_parameters(recurse=False):
            name = f"{mod_name}.{leaf}" if mod_name else leaf
            if name in dynamic:
                kinds[name] = dynamic[name]
            elif isinstance(module, _NORM_TYPES) and leaf == "weight":
                kinds[name] = "gamma"
            else:
                kinds[name] = "matrix" if p.ndim >= 2 else "other"
    return kinds


@dataclass
class Task:
    """What a study trains.

    - ``build_model()``: a fresh model, called after seeding (so its init depends on the seed only).
    - ``batches(step, rank, world_size)``: this rank's shard of global batch ``step``; must be a pure
      function of its arguments (that is what makes resume exact and DDP equal to one process).
    - ``loss(model, batch)``: scalar mean loss over the shard (called with the DDP/FSDP-wrapped model).
    - ``tokens(batch)``: items in the shard, for tokens/s.
    - ``evaluate(model)``: optional, a dict of floats; runs on every rank (FSDP needs all of them).
    - ``signature``: JSON data naming everything besides the :class:`TrainConfig` that shapes the result
      (model, data, evaluation settings, and what ``TrainConfig.param_groups`` does); part of the run's
      fingerprint (:func:`run_fingerprint`), which a resumed checkpoint and a reused result must match.
    - ``kinds(model)``: gradient-norm group of each parameter name (default :func:`param_kinds`).
    """

    name: str
    build_model: Callable[[], nn.Module]
    batches: Callable[[int, int, int], Any]
    loss: Callable[[nn.Module, Any], torch.Tensor]
    tokens: Callable[[Any], int]
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    signature: dict[str, Any] = field(default_factory=dict)
    kinds: Callable[[nn.Module], dict[str, str]] = param_kinds


@dataclass
class TrainConfig:
    """How to train. Learning rate at step s: warmup linear to ``lr``, then cosine to ``min_lr_ratio·lr``.

    ``grad_clip``: max global gradient norm (None: no clipping). ``clip_groups``: the gradient-norm
    groups that count towards and are scaled by clipping (None: all but those in ``group_clip``).
    ``group_clip``: ``{group: max_norm}``, groups clipped separately on their own gradient norm (e.g.
    ``{"alpha": 0.1, "beta": 0.1}``); they must not also be in ``clip_groups``; logged per step as
    ``clipped/<group>``. ``param_groups(model)``: optimizer
    groups (default ``seednorm.param_groups(model, weight_decay, decay_gain=decay_gain)``; a callable cannot be
    fingerprinted, so the task's ``signature`` must say what it does).
    ``precision``: "auto" | "fp32" | "bf16". ``parallel``: "auto" (DDP when launched with several
    ranks) | "ddp" | "fsdp" | "none". ``diverge_above``: stop and flag the run diverged when the loss
    exceeds it (non-finite losses always do). ``stop_at``: checkpoint and stop after that many steps,
    as an interruption would. ``ckpt_every``/``eval_every``: 0 disables the periodic ones (a
    checkpoint is still written at the end and at ``stop_at``).
    """

    out_dir: Path
    steps: int
    lr: float
    warmup: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    decay_gain: bool = False
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    clip_groups: tuple[str, ...] | None = None
    group_clip: dict[str, float] | None = None
    param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None
    precision: str = "auto"
    parallel: str = "auto"
    seed: int = 0
    resume: bool = False
    stop_at: int | None = None
    ckpt_every: int = 0
    eval_every: int = 0
    diverge_above: float | None = None
    progress: bool = True
    tensorboard: bool = True
    desc: str = ""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.steps < 1 or self.warmup < 0 or self.warmup > self.steps:
            raise ValueError(f"need steps >= 1 and 0 <= warmup <= steps, got {self.steps=} {self.warmup=}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.parallel not in ("auto", "ddp", "fsdp", "none"):
            raise ValueError(f"parallel must be 'auto', 'ddp', 'fsdp' or 'none', got {self.parallel!r}")
        both = set(self.group_clip or ()) & set(self.clip_groups or ())
        if both:
            raise ValueError(f"groups {sorted(both)} are in both clip_groups and group_clip; clip each one way")
        if any(not v > 0 for v in (self.group_clip or {}).values()):
            raise ValueError(f"group_clip max-norms must be > 0, got {self.group_clip}")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that shape the result (all but where it is written, how often it is checkpointed,
        how it is shown, and where it stops early): a resumed or reused run must share them."""
        keys = ("steps", "lr", "warmup", "min_lr_ratio", "weight_decay", "decay_gain", "betas", "eps",
                "grad_clip", "clip_groups", "group_clip", "precision", "seed", "eval_every", "diverge_above")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in
                ((k, getattr(self, k)) for k in keys)}


@dataclass
class TrainResult:
    """Outcome of :func:`train`. ``history``: one dict per optimizer step (step, loss, lr, grad_norm,
    clipped, ``gn/<group>``, tokens_per_s); ``evals``: ``{"step": s, **metrics}`` rows;
    ``tokens_per_s``: median training throughput over steps after the first 10% (all ranks)."""

    name: str
    history: list[dict[str, float]]
    evals: list[dict[str, float]]
    final_eval: dict[str, float]
    tokens_per_s: float
    clip_fraction: float
    diverged: bool
    interrupted: bool
    num_params: int
    wall_s: float
    world_size: int
    fingerprint: dict[str, Any] = field(default_factory=dict)
    fingerprint_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        """The ``result.json`` content: every field, and :data:`RECORD_DIGEST_KEY` = :func:`record_digest` of
        them, so that a value edited afterwards is detected when the record is read."""
        record = dataclasses.asdict(self)
        return {**record, RECORD_DIGEST_KEY: record_digest(record)}



def run_fingerprint(task: Task, config: TrainConfig, world_size: int | None = None) -> dict[str, Any]:
    """Everything that shapes a run's result, as JSON data: ``config.fingerprint()``, the task's name and
    ``signature``, the world size (default: that of the launch, ``WORLD_SIZE``) and the seednorm version.
    Stored in the checkpoint and in ``result.json``; resuming or reusing a run requires an equal one."""
    world = launch_world_size() if world_size is None else world_size
    raw = {**config.fingerprint(), "world_size": world, "task": task.name, "signature": task.signature,
           "seednorm": __version__}
    return json.loads(json.dumps(raw, sort_keys=True))


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``fingerprint`` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a run record without its own :data:`RECORD_DIGEST_KEY` (every value a
    report can read: history, evaluations, results, fingerprint)."""
    body = {k: v for k, v in record.items() if k != RECORD_DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fingerprint_diff(stored: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """``"key: stored -> now"`` for every leaf that differs (nested keys joined by dots)."""
    out = []
    for key in sorted(set(stored) | set(now), key=str):
        a, b = stored.get(key, "<unset>"), now.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += fingerprint_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out

