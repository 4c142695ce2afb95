"""The training loop: :class:`Trainer` (a task's model with its optimizer, schedule, autocast and clipping;
:meth:`Trainer.step` is one training step) and :func:`train`, which runs it from setup to ``result.json``."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from seednorm import param_groups as seednorm_param_groups

from .checkpoint import (
    CHECKPOINT_NAME,
    check_resumable,
    load_checkpoint,
    load_model_and_optimizer,
    model_and_optimizer_state,
    save_checkpoint,
)
from .config import RESULT_NAME, Task, TrainConfig, TrainResult, fingerprint_digest, run_fingerprint
from .distributed import DistContext, all_mean, full_tensor, setup_distributed, wrap
from .metrics import MetricsLog
from .rng import rng_state, seed_all, set_rng_state
from .schedule import warmup_cosine

__all__ = ["Trainer", "autocast_context", "train"]

CHECKPOINT_FORMAT = 1


def autocast_context(device: torch.device, precision: str) -> Callable[[], AbstractContextManager[Any]]:
    """A factory of the forward pass's autocast context: bf16 for ``precision="bf16"``, and for "auto" on a CUDA
    device that supports bf16; none (fp32) otherwise."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


@contextmanager
def _train_mode(model: nn.Module, training: bool) -> Iterator[None]:
    was = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was)


class Trainer:
    """A task's model with its optimizer, schedule, autocast and clipping, set up as :func:`train` runs them;
    :meth:`step` is one training step, the same in :func:`train` and
    :func:`~seednorm_experiments.harness.benchmark`."""

    def __init__(self, task: Task, config: TrainConfig, d: DistContext) -> None:
        self.task, self.config, self.d = task, config, d
        seed_all(config.seed)
        model = task.build_model().to(d.device)
        self.num_params = sum(p.numel() for p in model.parameters())
        groups_of = task.kinds(model)
        self.model = wrap(model, d)
        self.inner = self.model.module if d.mode == "ddp" else self.model
        params = dict(self.inner.named_parameters())  # after wrapping: FSDP2 replaces them with DTensors
        groups = (config.param_groups(self.inner) if config.param_groups is not None
                  else seednorm_param_groups(self.inner, config.weight_decay, decay_gain=config.decay_gain))
        # The fused AdamW updates each group in one call: on CPU ~4× cheaper than foreach at the studies' sizes.
        self.opt = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                                     fused=d.device.type in ("cpu", "cuda"))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_cosine(config.steps, config.warmup,
                                                                               config.min_lr_ratio))
        self.autocast = autocast_context(d.device, config.precision)
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
        norms = {g: full_tensor(torch.nn.utils.get_total_norm(grads)) for g, grads in sorted(
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
        loss_value = all_mean(loss, self.d)
        diverged = not math.isfinite(loss_value) or (config.diverge_above is not None
                                                     and loss_value > config.diverge_above)
        row = {"loss": loss_value, "lr": self.sched.get_last_lr()[0], "grad_norm": float(total),
               "clipped": float(clipped), **group_clipped, **{f"gn/{g}": float(v) for g, v in norms.items()}}
        if not diverged:
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
        return row, diverged

    def evaluate(self) -> dict[str, float] | None:
        """The task's evaluation of the (unwrapped) model in eval mode, without gradients, under autocast; None
        when the task has none. Every rank calls it (FSDP gathers parameters in the forward)."""
        if self.task.evaluate is None:
            return None
        with _train_mode(self.inner, False), torch.no_grad(), self.autocast():
            return {k: float(v) for k, v in self.task.evaluate(self.inner).items()}

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds of the trainer: ``model``, ``optimizer`` (full state dicts), ``scheduler`` and
        ``rng`` (the RNG state of every rank, by rank). A collective under DDP/FSDP: every rank calls it."""
        model_state, optimizer_state = model_and_optimizer_state(self.model, self.opt, wrapped=self.d.mode != "none")
        rng = [rng_state()]
        if self.d.world > 1:
            rng = [None] * self.d.world
            dist.all_gather_object(rng, rng_state())
        return {"model": model_state, "optimizer": optimizer_state, "scheduler": self.sched.state_dict(), "rng": rng}

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load what :meth:`state` saved: model, optimizer, schedule and this rank's RNG state."""
        load_model_and_optimizer(self.model, self.opt, ckpt, wrapped=self.d.mode != "none")
        self.sched.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"][self.d.rank])


@dataclass
class _RunRecord:
    """What a run keeps and writes into its folder: the per-step ``history`` and the ``evals`` rows (both in
    every checkpoint and in ``result.json``), ``metrics.csv``/TensorBoard (rank 0's ``log``), the checkpoint and
    ``result.json``."""

    out_dir: Path
    fingerprint: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    log: MetricsLog | None = None

    def evaluate(self, trainer: Trainer, step: int) -> dict[str, float]:
        """Run the task's evaluation at ``step`` and record it (``{}`` when the task has none)."""
        metrics = trainer.evaluate()
        if metrics is None:
            return {}
        self.evals.append({"step": step, **metrics})
        if self.log is not None:
            self.log.evals(step, metrics)
        return metrics

    def checkpoint(self, trainer: Trainer, step: int) -> None:
        """Write ``checkpoint.pt`` at ``step`` (rank 0 writes, every rank takes part)."""
        state = trainer.state()
        if trainer.d.rank == 0:
            save_checkpoint(self.out_dir / CHECKPOINT_NAME, {
                "format": CHECKPOINT_FORMAT, "step": step, "fingerprint": self.fingerprint,
                "fingerprint_sha256": fingerprint_digest(self.fingerprint), **state,
                "history": self.history, "evals": self.evals})
        if trainer.d.world > 1:
            dist.barrier()

    def write_result(self, result: TrainResult) -> None:
        """Write ``result.json`` atomically (temp file + ``os.replace``)."""
        tmp = self.out_dir / f".{RESULT_NAME}.tmp"
        tmp.write_text(json.dumps(result.to_json()))
        os.replace(tmp, self.out_dir / RESULT_NAME)


def _due(every: int, step: int) -> bool:
    """Whether a periodic action (every ``every`` steps; 0: never) falls after ``step`` steps."""
    return bool(every) and step % every == 0


def train(task: Task, config: TrainConfig) -> TrainResult:
    """Train ``task`` as ``config`` says; see :mod:`seednorm_experiments.harness`. Returns the
    :class:`TrainResult` (also written to ``out_dir/result.json`` by rank 0 unless interrupted via ``stop_at``).

    Raises :class:`CheckpointError` when ``config.resume`` is set and the checkpoint is missing,
    corrupted or from a different run; nothing is written in that case.
    """
    from tqdm.auto import tqdm

    # Setup. Join the launch's process group and name the run by its fingerprint. A checkpoint to resume from is
    # read and checked before anything is written, so a missing, damaged or foreign one leaves the folder as it
    # was. The trainer seeds every generator, then builds the model, optimizer and schedule.
    d = setup_distributed(config.parallel)
    run = _RunRecord(config.out_dir, run_fingerprint(task, config, d.world))
    ckpt = None
    if config.resume:
        ckpt = load_checkpoint(config.out_dir / CHECKPOINT_NAME)
        check_resumable(ckpt, run.fingerprint, config.out_dir / CHECKPOINT_NAME)
    if d.rank == 0:
        config.out_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(task, config, d)

    # Resume. Model, optimizer, schedule and this rank's RNG state come back from the checkpoint; its step is the
    # data position (batches are a function of the step), and its history and evaluations carry on.
    start = 0
    if ckpt is not None:
        trainer.restore(ckpt)
        start, run.history, run.evals = ckpt["step"], list(ckpt["history"]), list(ckpt["evals"])
    if d.rank == 0:
        run.log = MetricsLog(config.out_dir, run.history, start, config.tensorboard)
    end = config.steps if config.stop_at is None else min(config.steps, config.stop_at)
    bar = tqdm(total=config.steps, initial=start, desc=config.desc or task.name, dynamic_ncols=True,
               disable=not config.progress or d.rank != 0, mininterval=1.0, leave=False)

    # Loop: one optimizer step per global batch, from `start` to `end` (`stop_at` ends early, as an interruption).
    diverged, t_start = False, time.perf_counter()
    trainer.model.train()
    for step in range(start, end):
        # Batch: this rank's shard of global batch `step`.
        t0 = time.perf_counter()
        batch = task.batches(step, d.rank, d.world)
        # Step: forward, backward, per-group gradient norms, clipping; the optimizer steps unless the loss diverged.
        row, diverged = trainer.step(batch)
        # Log: the row joins the history (a diverged step too, then the run stops), metrics.csv and the bar.
        tokens_per_s = 0.0 if diverged else task.tokens(batch) * d.world / (time.perf_counter() - t0)
        row = {"step": step, **row, "tokens_per_s": tokens_per_s}
        run.history.append(row)
        if diverged:
            break
        if run.log is not None:
            run.log.row(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        # Eval: every `eval_every` steps, but not after the last one (the final evaluation below is that one).
        if _due(config.eval_every, step + 1) and step + 1 < config.steps:
            run.evaluate(trainer, step + 1)
        # Checkpoint: every `ckpt_every` steps, but not at `end` (written below).
        if _due(config.ckpt_every, step + 1) and step + 1 < end:
            run.checkpoint(trainer, step + 1)
    bar.close()

    # Finish. A run that reached `config.steps` is evaluated once more (unless it resumed an already finished
    # run, whose final evaluation is the last one recorded); every run that did not diverge is checkpointed at
    # `end`; a finished or diverged run writes result.json, an interrupted one does not.
    interrupted = not diverged and end < config.steps
    final_eval: dict[str, float] = {}
    if not interrupted and not diverged:
        if run.evals and run.evals[-1]["step"] == end:
            final_eval = {k: v for k, v in run.evals[-1].items() if k != "step"}
        else:
            final_eval = run.evaluate(trainer, end)
    if not diverged:
        run.checkpoint(trainer, end)
    if run.log is not None:
        run.log.close()
    speeds = [r["tokens_per_s"] for r in run.history[len(run.history) // 10:] if r["tokens_per_s"] > 0]
    result = TrainResult(
        name=task.name, history=run.history, evals=run.evals, final_eval=final_eval,
        tokens_per_s=float(np.median(speeds)) if speeds else 0.0,
        clip_fraction=float(np.mean([r["clipped"] for r in run.history])) if run.history else 0.0,
        diverged=diverged, interrupted=interrupted, num_params=trainer.num_params,
        wall_s=time.perf_counter() - t_start, world_size=d.world, fingerprint=run.fingerprint,
        fingerprint_sha256=fingerprint_digest(run.fingerprint))
    if d.rank == 0 and not interrupted:
        run.write_result(result)
    return result
