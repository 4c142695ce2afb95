"""Pick each norm's learning rate from a sweep: the rate with the lowest mean final training loss
(last 10% of steps) over its seeds, among the rates where no seed diverged. Runs are
:class:`~seednorm_experiments.lm.study.Run` (``norm`` may be any configuration name, e.g. an ablation variant)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from ..report import plot_lines
from .study import Run

__all__ = ["best_lrs", "plot_sweep", "sweep_table"]


def sweep_table(runs: Sequence[Run]) -> tuple[list[float], dict[str, list[float]]]:
    """The swept rates (ascending) and, per norm, the mean final loss at each rate (``nan`` where every
    seed diverged or the rate was not run)."""
    lrs = sorted({r.lr for r in runs})
    table: dict[str, list[float]] = {}
    for norm in dict.fromkeys(r.norm for r in runs):
        table[norm] = [statistics.fmean([r.final_loss for r in runs if r.norm == norm and r.lr == lr
                                         and not r.diverged] or [math.nan]) for lr in lrs]
    return lrs, table


def best_lrs(runs: Sequence[Run]) -> dict[str, float]:
    """Per norm, the swept rate with the lowest mean final loss among the rates where none of its seeds
    diverged (a rate that lost a seed is not a rate to recommend, whatever its survivors reached). ValueError
    when a norm lost a seed at every rate (nothing to choose from)."""
    lrs, table = sweep_table(runs)
    out = {}
    for norm, losses in table.items():
        lost = {r.lr for r in runs if r.norm == norm and r.diverged}
        finite = [(loss, lr) for loss, lr in zip(losses, lrs, strict=True) if not math.isnan(loss) and lr not in lost]
        if not finite:
            raise ValueError(f"{norm!r} diverged at every swept rate; widen the sweep to lower learning rates")
        out[norm] = min(finite)[1]
    return out


def plot_sweep(runs: Sequence[Run], path: Path, *, title: str = "Learning-rate sweep") -> None:
    """Final training loss against the learning rate (log scale), one line per norm."""
    lrs, table = sweep_table(runs)
    plot_lines(lrs, table, path, xlabel="peak learning rate", ylabel="final train loss (nats/token)",
               title=title, logx=True)
