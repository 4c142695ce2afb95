"""Training throughput of several tasks, timed round-robin on this process alone."""

from __future__ import annotations

import time

from .config import Task, TrainConfig
from .distributed import local
from .trainer import Trainer

__all__ = ["benchmark"]


def benchmark(tasks: dict[str, Task], config: TrainConfig, *, rounds: int = 20, steps: int = 2,
              warmup: int = 3) -> dict[str, list[float]]:
    """Training tokens/s of each task's step exactly as :func:`~seednorm_experiments.harness.train` runs it
    (optimizer, clipping, autocast), in this process alone (no collective, also under ``torchrun``), timed
    round-robin: ``rounds`` × ``steps`` timed steps per task after ``warmup`` untimed ones, so that load from other
    processes hits every task alike. Returns the per-round tokens/s of each task (round i of every task ran back
    to back: see :func:`seednorm_experiments.report.step_costs`). Nothing is written."""
    d = local()
    trainers = {name: Trainer(task, config, d) for name, task in tasks.items()}
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
