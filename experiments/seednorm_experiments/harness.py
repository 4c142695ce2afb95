"""One training loop for every study.

A study describes *what* to train with a :class:`Task` (model factory, a batch function that is
deterministic in the step number, a loss, an optional evaluation) and *how* with a
:class:`TrainConfig`; :func:`train` does the rest the same way for every study:

- seeds (python, numpy, torch) so that a run is a function of ``config.seed``;
- fused AdamW (one kernel per parameter group) over ``seednorm.param_groups`` (weight decay on matrices and on
  SeeDNorm's α, β; none on gains and biases unless ``decay_gain``), linear warmup then cosine decay to
  ``min_lr_ratio · lr``;
- gradient clipping by global norm, with the norm of every parameter group (``alpha``, ``beta``,
  ``gamma``, ``matrix``, ``other``: :func:`param_kinds`) and whether the step was clipped logged each step;
- bf16 autocast where the device supports it well (``precision="auto"``: CUDA with bf16), else fp32;
- DDP or FSDP (FSDP2 ``fully_shard``) when launched by ``torchrun`` -- gloo on CPU, nccl on GPU -- with
  no change to the study: every rank calls ``task.batches(step, rank, world_size)`` for its shard of
  the global batch;
- atomic checkpoints (temp file + ``os.replace``; a SHA-256 over the payload detects corruption) with
  model, optimizer, scheduler, the RNG states of every rank and the step, which is the data position
  because batches are a function of the step; ``resume=True`` continues bit-exactly;
- a tqdm progress bar with loss and tokens/s; per-step metrics to ``metrics.csv`` and TensorBoard;
  ``result.json`` at the end;
- the run's fingerprint (:func:`run_fingerprint`: every setting that shapes the result, and its SHA-256) in the
  checkpoint and in ``result.json``: resuming from a checkpoint of other settings is a :class:`CheckpointError`,
  and :mod:`seednorm_experiments.runs` reuses a finished run only when its fingerprint matches.

Minimal use::

    task = Task(name="toy", build_model=lambda: nn.Linear(4, 1),
                batches=lambda step, rank, world: make_batch(step, rank, world),
                loss=lambda model, batch: F.mse_loss(model(batch[0]), batch[1]),
                tokens=lambda batch: batch[0].shape[0])
    result = train(task, TrainConfig(steps=100, lr=1e-2, warmup=10, out_dir=Path("runs/toy")))
    result.history[-1]["loss"], result.final_eval, result.tokens_per_s, result.clip_fraction

Extension points for ablations: ``TrainConfig.param_groups`` replaces the optimizer groups (e.g. an LR
multiplier for α/β), ``Task.kinds`` changes which groups gradient norms are logged for,
``TrainConfig.clip_groups`` removes groups from global clipping and ``TrainConfig.group_clip`` clips
groups separately, each on its own norm with its own max-norm.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from seednorm import AdaSeeDNorm, DyT, LayerNorm, RMSNorm, SeeDNorm, __version__
from seednorm import param_groups as seednorm_param_groups

__all__ = [
    "CheckpointError",
    "Task",
    "TrainConfig",
    "TrainResult",
    "benchmark",
    "fingerprint_diff",
    "fingerprint_digest",
    "param_kinds",
    "run_fingerprint",
    "step_costs",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]

_MAGIC = b"SEEDNORM-CKPT-1\n"
CHECKPOINT_NAME = "checkpoint.pt"
RESULT_NAME = "result.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted, or belongs to a different run."""


_NORM_TYPES = (SeeDNorm, AdaSeeDNorm, RMSNorm, LayerNorm, DyT, nn.RMSNorm, nn.LayerNorm)


def param_kinds(model: nn.Module) -> dict[str, str]:
    """Gradient-norm group of every parameter, by name: ``alpha``/``beta`` (SeeDNorm's dynamic
    parameters), ``gamma`` (the gain ``weight`` of any norm layer), ``matrix`` (≥ 2 dims: linear,
    embedding), ``other`` (biases, DyT's scalar a, ...)."""
    kinds = {}
    for mod_name, module in model.named_modules():
        for leaf, p in module.named_parameters(recurse=False):
            name = f"{mod_name}.{leaf}" if mod_name else leaf
            if isinstance(module, (SeeDNorm, AdaSeeDNorm)) and leaf in ("alpha", "beta"):
                kinds[name] = leaf
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
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# run fingerprints


def run_fingerprint(task: Task, config: TrainConfig, world_size: int | None = None) -> dict[str, Any]:
    """Everything that shapes a run's result, as JSON data: ``config.fingerprint()``, the task's name and
    ``signature``, the world size (default: that of the launch, ``WORLD_SIZE``) and the seednorm version.
    Stored in the checkpoint and in ``result.json``; resuming or reusing a run requires an equal one."""
    world = _world_size() if world_size is None else world_size
    raw = {**config.fingerprint(), "world_size": world, "task": task.name, "signature": task.signature,
           "seednorm": __version__}
    return json.loads(json.dumps(raw, sort_keys=True))


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``fingerprint`` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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


# ----------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    A crash at any point leaves either the previous checkpoint or the new one, never a torn file.
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; :class:`CheckpointError` if it is missing,
    truncated or corrupted (its SHA-256 does not match)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume (run without resume to start)")
    data = path.read_bytes()
    header_len = len(_MAGIC) + 65
    if not data.startswith(_MAGIC) or len(data) < header_len:
        raise CheckpointError(f"{path} is not a seednorm checkpoint (bad header); it was left untouched")
    digest, payload = data[len(_MAGIC): header_len - 1].decode("ascii", "replace"), data[header_len:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path} is corrupted (checksum mismatch); it was left untouched")
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------------------------
# distributed setup


@dataclass
class _Dist:
    rank: int
    world: int
    device: torch.device
    mode: str  # "none" | "ddp" | "fsdp"


def _setup_dist(parallel: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    if parallel == "auto":
        parallel = "ddp" if world > 1 else "none"
    if parallel != "none" and world == 1 and not dist.is_initialized():
        parallel = "none"
    return _Dist(rank, world, device, parallel)


def _local() -> _Dist:
    """This process alone: no collective is called, even when a process group exists (a ``torchrun`` launch
    whose other ranks may already have returned)."""
    cuda = torch.cuda.is_available()
    return _Dist(0, 1, torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu"), "none")


def _world_size() -> int:
    """The number of ranks :func:`train` runs on (set up or not yet)."""
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def _wrap(model: nn.Module, d: _Dist) -> nn.Module:
    if d.mode == "ddp":
        return nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if d.device.index
                                                   is not None else None)
    if d.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if isinstance(module, nn.ModuleList):
                for block in module:
                    fully_shard(block)
        fully_shard(model)
    return model


def _all_mean(x: torch.Tensor, d: _Dist) -> float:
    if d.world > 1:
        x = x.detach().clone()
        dist.all_reduce(x)
        x /= d.world
    return float(x.detach())


def _full(x: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP2 shard) as its full value; plain tensors unchanged."""
    return x.full_tensor() if hasattr(x, "full_tensor") else x


# ----------------------------------------------------------------------------------------------
# training


def _lr_lambda(steps: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def _autocast(device: torch.device, precision: str):
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def _rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": (torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                                       float(gauss))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Metrics:
    """Per-step rows to metrics.csv (rewritten on resume from the checkpoint's history) and TensorBoard."""

    def __init__(self, out_dir: Path, history: list[dict[str, float]], start: int, tensorboard: bool):
        self.path = out_dir / "metrics.csv"
        self.writer = None
        self.fields: list[str] | None = None
        with open(self.path, "w", newline="") as f:
            if history:
                self.fields = list(history[0])
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(history)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=start if start else None)

    def row(self, row: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as f:
            if self.fields is None:
                self.fields = list(row)
                csv.DictWriter(f, self.fields).writeheader()
            csv.DictWriter(f, self.fields).writerow(row)
        if self.writer is not None:
            for k, v in row.items():
                if k != "step":
                    self.writer.add_scalar(f"train/{k}", v, int(row["step"]))

    def evals(self, step: int, metrics: dict[str, float]) -> None:
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"eval/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _state_dicts(model: nn.Module, opt: torch.optim.Optimizer, d: _Dist) -> tuple[dict, dict]:
    if d.mode == "none":
        return model.state_dict(), opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _load_state_dicts(model: nn.Module, opt: torch.optim.Optimizer, ckpt: dict, d: _Dist) -> None:
    if d.mode == "none":
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, opt, model_state_dict=ckpt["model"], optim_state_dict=ckpt["optimizer"],
                   options=StateDictOptions(full_state_dict=True))


def _check_resumable(ckpt: dict, fingerprint: dict, path: Path) -> None:
    for key in ("format", "step", "fingerprint", "model", "optimizer", "scheduler", "rng", "history"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks {key!r}; it was left untouched")
    diff = fingerprint_diff(ckpt["fingerprint"], fingerprint)
    if diff:
        raise CheckpointError(f"{path} belongs to a different run (checkpoint -> now: {'; '.join(diff)}); "
                              "write this run to another folder, or delete that one to start over")


@contextmanager
def _train_mode(model: nn.Module, training: bool) -> Iterator[None]:
    was = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was)


class _Trainer:
    """A task's model with its optimizer, schedule, autocast and clipping, set up as :func:`train` runs them;
    :meth:`step` is one training step, the same in :func:`train` and :func:`benchmark`."""

    def __init__(self, task: Task, config: TrainConfig, d: _Dist) -> None:
        self.task, self.config, self.d = task, config, d
        _seed_all(config.seed)
        model = task.build_model().to(d.device)
        self.num_params = sum(p.numel() for p in model.parameters())
        groups_of = task.kinds(model)
        self.model = _wrap(model, d)
        self.inner = self.model.module if d.mode == "ddp" else self.model
        params = dict(self.inner.named_parameters())  # after wrapping: FSDP2 replaces them with DTensors
        groups = (config.param_groups(self.inner) if config.param_groups is not None
                  else seednorm_param_groups(self.inner, config.weight_decay, decay_gain=config.decay_gain))
        # The fused AdamW updates each group in one call: on CPU ~4× cheaper than foreach at the studies' sizes.
        self.opt = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                                     fused=d.device.type in ("cpu", "cuda"))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(config.steps, config.warmup,
                                                                            config.min_lr_ratio))
        self.autocast = _autocast(d.device, config.precision)
        self.by_group: dict[str, list[torch.nn.Parameter]] = {}
        for n, p in params.items():
            self.by_group.setdefault(groups_of[n], []).append(p)
        self.separate = dict(config.group_clip or {})
        unknown = (set(config.clip_groups or ()) | set(self.separate)) - set(self.by_group)
        if unknown:
            raise ValueError(f"clip_groups/group_clip {sorted(unknown)} name no parameter group; this model has "
                             f"{sorted(self.by_group)}")
        self.clipping = (sorted(set(self.by_group) - set(self.separate)) if config.clip_groups is None
                         else sorted(config.clip_groups))
        self.clip_params = [p for g in self.clipping for p in self.by_group[g]]

    def step(self, batch: Any) -> tuple[dict[str, float], bool]:
        """Forward, backward, gradient norms per group, clipping, then the optimizer and schedule step unless
        the loss diverged. Returns the step's log row (loss, lr, grad_norm, clipped, ``clipped/<group>``,
        ``gn/<group>``) and whether it diverged."""
        config = self.config
        with self.autocast():
            loss = self.task.loss(self.model, batch)
        loss.backward()
        norms = {g: _full(torch.nn.utils.get_total_norm(grads)) for g, grads in sorted(
            (g, [p.grad for p in ps if p.grad is not None]) for g, ps in self.by_group.items()) if grads}
        clip_norm = torch.linalg.vector_norm(torch.stack([norms.get(g, torch.zeros(())) for g in self.clipping]))
        total = torch.linalg.vector_norm(torch.stack(list(norms.values())))
        clipped = config.grad_clip is not None and bool(clip_norm > config.grad_clip)
        if config.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(self.clip_params, config.grad_clip, clip_norm)
        group_clipped = {}
        for g, max_norm in sorted(self.separate.items()):
            group_clipped[f"clipped/{g}"] = float(g in norms and bool(norms[g] > max_norm))
            if g in norms:
                torch.nn.utils.clip_grads_with_norm_(self.by_group[g], max_norm, norms[g])
        loss_value = _all_mean(loss, self.d)
        diverged = not math.isfinite(loss_value) or (config.diverge_above is not None
                                                     and loss_value > config.diverge_above)
        row = {"loss": loss_value, "lr": self.sched.get_last_lr()[0], "grad_norm": float(total),
               "clipped": float(clipped), **group_clipped, **{f"gn/{g}": float(v) for g, v in norms.items()}}
        if not diverged:
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
        return row, diverged


def benchmark(tasks: dict[str, Task], config: TrainConfig, *, rounds: int = 20, steps: int = 2,
              warmup: int = 3) -> dict[str, list[float]]:
    """Training tokens/s of each task's step exactly as :func:`train` runs it (optimizer, clipping,
    autocast), in this process alone (no collective, also under ``torchrun``), timed round-robin: ``rounds`` ×
    ``steps`` timed steps per task after ``warmup`` untimed ones, so that load from other processes hits every
    task alike. Returns the per-round tokens/s of each task (round i of every task ran back to back: see
    :func:`step_costs`). Nothing is written."""
    d = _local()
    trainers = {name: _Trainer(task, config, d) for name, task in tasks.items()}
    for trainer in trainers.values():
        for i in range(warmup):
            trainer.step(trainer.task.batches(i, 0, 1))
    speeds: dict[str, list[float]] = {name: [] for name in trainers}
    for r in range(rounds):
        for name, trainer in trainers.items():
            t0, tokens = time.perf_counter(), 0
            for i in range(steps):
                batch = trainer.task.batches(warmup + r * steps + i, 0, 1)
                trainer.step(batch)
                tokens += trainer.task.tokens(batch)
            speeds[name].append(tokens / (time.perf_counter() - t0))
    return speeds


def step_costs(speeds: dict[str, list[float]], baseline: str) -> dict[str, list[float]]:
    """Per-round step cost of each task relative to ``baseline`` (its tokens/s ÷ the task's) from
    :func:`benchmark`'s rounds: each round timed the tasks back to back, so a change in the machine's speed
    cancels in the ratio."""
    base = speeds[baseline]
    return {name: [b / x for b, x in zip(base, s, strict=True)] for name, s in speeds.items()}


def train(task: Task, config: TrainConfig) -> TrainResult:
    """Train ``task`` as ``config`` says; see the module docstring. Returns the :class:`TrainResult`
    (also written to ``out_dir/result.json`` by rank 0 unless interrupted via ``stop_at``).

    Raises :class:`CheckpointError` when ``config.resume`` is set and the checkpoint is missing,
    corrupted or from a different run; nothing is written in that case.
    """
    from tqdm.auto import tqdm

    d = _setup_dist(config.parallel)
    out = config.out_dir
    ckpt_path = out / CHECKPOINT_NAME
    fingerprint = run_fingerprint(task, config, d.world)
    digest = fingerprint_digest(fingerprint)
    ckpt = None
    if config.resume:
        ckpt = load_checkpoint(ckpt_path)
        _check_resumable(ckpt, fingerprint, ckpt_path)
    if d.rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    trainer = _Trainer(task, config, d)
    model, inner, opt, sched = trainer.model, trainer.inner, trainer.opt, trainer.sched

    start, history, evals = 0, [], []
    if ckpt is not None:
        _load_state_dicts(model, opt, ckpt, d)
        sched.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"][d.rank])
        start, history, evals = ckpt["step"], list(ckpt["history"]), list(ckpt["evals"])

    def checkpoint(step: int) -> None:
        model_sd, opt_sd = _state_dicts(model, opt, d)
        rng = [_rng_state()]
        if d.world > 1:
            rng = [None] * d.world
            dist.all_gather_object(rng, _rng_state())
        if d.rank == 0:
            save_checkpoint(ckpt_path, {"format": 1, "step": step, "fingerprint": fingerprint,
                                        "fingerprint_sha256": digest,
                                        "model": model_sd, "optimizer": opt_sd,
                                        "scheduler": sched.state_dict(), "rng": rng,
                                        "history": history, "evals": evals})
        if d.world > 1:
            dist.barrier()

    def evaluate(step: int) -> dict[str, float]:
        if task.evaluate is None:
            return {}
        with _train_mode(inner, False), torch.no_grad(), trainer.autocast():
            metrics = {k: float(v) for k, v in task.evaluate(inner).items()}
        evals.append({"step": step, **metrics})
        if metrics_log is not None:
            metrics_log.evals(step, metrics)
        return metrics

    metrics_log = _Metrics(out, history, start, config.tensorboard) if d.rank == 0 else None
    end = config.steps if config.stop_at is None else min(config.steps, config.stop_at)
    bar = tqdm(total=config.steps, initial=start, desc=config.desc or task.name, dynamic_ncols=True,
               disable=not config.progress or d.rank != 0, mininterval=1.0, leave=False)
    diverged, t_start = False, time.perf_counter()
    model.train()
    for step in range(start, end):
        t0 = time.perf_counter()
        batch = task.batches(step, d.rank, d.world)
        row, diverged = trainer.step(batch)
        tok_s = 0.0 if diverged else task.tokens(batch) * d.world / (time.perf_counter() - t0)
        row = {"step": step, **row, "tokens_per_s": tok_s}
        history.append(row)
        if diverged:
            break
        if metrics_log is not None:
            metrics_log.row(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
        if config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 < config.steps:
            evaluate(step + 1)
        if config.ckpt_every and (step + 1) % config.ckpt_every == 0 and step + 1 < end:
            checkpoint(step + 1)
    bar.close()

    interrupted = not diverged and end < config.steps
    final_eval: dict[str, float] = {}
    if not interrupted and not diverged:
        done = evals and evals[-1]["step"] == end  # resumed a run that had finished
        final_eval = ({k: v for k, v in evals[-1].items() if k != "step"} if done else evaluate(end))
    if not diverged:
        checkpoint(end)
    if metrics_log is not None:
        metrics_log.close()
    speeds = [r["tokens_per_s"] for r in history[len(history) // 10:] if r["tokens_per_s"] > 0]
    result = TrainResult(
        name=task.name, history=history, evals=evals, final_eval=final_eval,
        tokens_per_s=float(np.median(speeds)) if speeds else 0.0,
        clip_fraction=float(np.mean([r["clipped"] for r in history])) if history else 0.0,
        diverged=diverged, interrupted=interrupted, num_params=trainer.num_params,
        wall_s=time.perf_counter() - t_start, world_size=d.world, fingerprint=fingerprint,
        fingerprint_sha256=digest)
    if d.rank == 0 and not interrupted:
        tmp = out / f".{RESULT_NAME}.tmp"
        tmp.write_text(json.dumps(result.to_json()))
        os.replace(tmp, out / RESULT_NAME)
    return result
