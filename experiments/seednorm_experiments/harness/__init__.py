"""One training loop for every study.

A study describes *what* to train with a :class:`Task` (model factory, a batch function that is
deterministic in the step number, a loss, an optional evaluation) and *how* with a
:class:`TrainConfig`; :func:`train` does the rest the same way for every study:

- seeds (python, numpy, torch) so that a run is a function of ``config.seed``;
- fused AdamW (one kernel per parameter group) over ``seednorm.param_groups`` (weight decay on matrices and on
  SeeDNorm's α, β; none on gains and biases unless ``decay_gain``), linear warmup then cosine decay to
  ``min_lr_ratio · lr``;
- gradient clipping by global norm, with the norm of every parameter group (``alpha``, ``beta``,
  ``gamma``, ``matrix``, ``other``: :func:`param_kinds`, which asks ``seednorm.dynamic_parameters`` for
  α, β) and whether the step was clipped logged each step;
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

One concern a file: :mod:`.config` (Task, TrainConfig, TrainResult, fingerprints, parameter groups),
:mod:`.trainer` (the Trainer and the loop), :mod:`.checkpoint`, :mod:`.distributed`, :mod:`.schedule`,
:mod:`.rng`, :mod:`.metrics` (CSV/TensorBoard), :mod:`.benchmark` (throughput on this process alone). The
statistic over :func:`benchmark`'s rounds, ``step_costs``, is in :mod:`seednorm_experiments.report`.
"""

from .benchmark import benchmark
from .checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from .config import (
    RECORD_DIGEST_KEY,
    RESULT_NAME,
    Task,
    TrainConfig,
    TrainResult,
    fingerprint_diff,
    fingerprint_digest,
    param_kinds,
    record_digest,
    run_fingerprint,
)
from .trainer import train

__all__ = [
    "CHECKPOINT_NAME",
    "RECORD_DIGEST_KEY",
    "RESULT_NAME",
    "CheckpointError",
    "Task",
    "TrainConfig",
    "TrainResult",
    "benchmark",
    "fingerprint_diff",
    "fingerprint_digest",
    "load_checkpoint",
    "param_kinds",
    "record_digest",
    "run_fingerprint",
    "save_checkpoint",
    "train",
]
