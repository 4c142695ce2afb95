"""Per-step metrics of a run: one row per optimizer step in ``metrics.csv`` and, optionally, TensorBoard scalars
(``train/<key>`` per step, ``eval/<key>`` per evaluation) under ``tb/``."""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["METRICS_NAME", "MetricsLog"]

METRICS_NAME = "metrics.csv"


class MetricsLog:
    """Writes ``out_dir/metrics.csv`` (rewritten from ``history``, the rows a resumed checkpoint holds, then
    appended to row by row) and, with ``tensorboard``, ``out_dir/tb`` (purged past ``start`` on resume)."""

    def __init__(self, out_dir: Path, history: list[dict[str, float]], start: int, tensorboard: bool) -> None:
        self.path = out_dir / METRICS_NAME
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
        """Append one step's row (its keys, from the first row, are the CSV header)."""
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
        """An evaluation's metrics at ``step`` (TensorBoard only; ``result.json`` holds every evaluation)."""
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"eval/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
