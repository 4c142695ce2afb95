"""What every study shares: the norms it compares, its baseline, the final training loss, the rule that grows a rate
grid whose best rate is on its edge, the machine line of a report, where its runs and benchmark tables go by default,
and the list convention of its command line.

Run reuse and resume by fingerprint live in :mod:`seednorm_experiments.runs`, the argument types and the exit codes
in :mod:`seednorm_experiments.args`.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from seednorm import NORMS

__all__ = ["BASELINE", "NORM_NAMES", "STUDY_NORMS", "VISION_BASELINE", "Listed", "bench_command", "bench_out",
           "check_norms", "cpu_model", "default_norms", "default_out", "final_loss", "grown_rate", "is_main_process",
           "machine", "versions"]

NORM_NAMES: tuple[str, ...] = tuple(NORMS)
"""Every norm a study can train, by its ``seednorm.build_norm`` name (the library's registry, in its order)."""

STUDY_NORMS: tuple[str, ...] = ("rmsnorm", "layernorm", "dyt", "derf", "seednorm")
"""The norms the studies compare unless ``--norms`` says otherwise: the paper's comparison (RMSNorm, LayerNorm, DyT,
SeeDNorm) and Derf, the strongest point-wise baseline since, in the library's order."""

BASELINE = "rmsnorm"
"""The norm the language-model study measures the others against: the one Llama-style decoders use."""

VISION_BASELINE = "layernorm"
"""The norm the vision study measures the others against: the one ViTs (and the paper's vision baselines) use."""


def default_norms(baseline: str) -> tuple[str, ...]:
    """The norms of :data:`STUDY_NORMS`, ``baseline`` first (tables and plots lead with it)."""
    return (baseline, *(n for n in STUDY_NORMS if n != baseline))


def check_norms(norms: Sequence[str]) -> list[str]:
    """``norms`` without repeats, in order; ValueError naming the unknown ones and the choices."""
    unknown = [n for n in norms if n not in NORM_NAMES]
    if unknown or not norms:
        raise ValueError(f"--norms: unknown norm(s) {unknown}; choose from {', '.join(NORM_NAMES)}")
    return list(dict.fromkeys(norms))


def final_loss(history: Sequence[Mapping[str, Any]]) -> float:
    """The final training loss of a run: the mean of ``row["loss"]`` over the last 10% of its steps (at least one),
    since one batch's loss is noisy. ``history``: ``result.json``'s per-step rows."""
    losses = [row["loss"] for row in history]
    tail = losses[-max(1, len(losses) // 10):]
    return float(sum(tail) / len(tail))


def grown_rate(rates: Sequence[float], start: Sequence[float], best: float | None, extend: int, down: float,
               up: float) -> float | None:
    """The rate to add to a sweep of ``rates`` (grown from ``start``) whose ``best`` rate lies on its edge:
    ``min(rates) / down`` when ``best`` is the lowest rate (or None: every rate lost a seed), ``max(rates) * up`` when
    it is the highest, each while fewer than ``extend`` rates lie beyond ``start`` on that side; None otherwise."""
    lo, hi = min(rates), max(rates)
    if best in (lo, None) and sum(lr < min(start) for lr in rates) < extend:
        return lo / down
    if best == hi and sum(lr > max(start) for lr in rates) < extend:
        return hi * up
    return None


def is_main_process() -> bool:
    """Whether this process is rank 0 (or not under ``torchrun``): the one that prints and writes reports."""
    return int(os.environ.get("RANK", "0")) == 0


def default_out(study: str, preset: str) -> Path:
    """Where a study writes when no ``--out`` is given: ``runs/<study>_<preset>``."""
    return Path("runs") / f"{study}_{preset}"


def bench_out(name: str) -> Path:
    """Where a benchmark writes its table when no ``--out`` is given: ``runs/bench/<name>``, git-ignored, so that a
    benchmark never overwrites the committed tables of ``benchmarks/results/`` unless ``--out`` names them."""
    return Path("runs") / "bench" / name


def bench_command(prog: str, argv: Sequence[str], out: Path | None = None) -> str:
    """The command line a benchmark table records: ``prog`` and its arguments, with ``--out out`` appended when the
    table went to the default path (``out``: that path; None when ``--out`` was given), so that the command names
    the file it wrote and reruns to the same place."""
    args = [*argv, *(["--out", str(out)] if out is not None else [])]
    return " ".join([prog, shlex.join(args)]).strip()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            found = re.search(r"model name\s*:\s*(.*)", f.read())
        if found:
            return found.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> str:
    """``torch X, triton Y, python Z`` (triton ``not installed`` when absent)."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    return f"torch {torch.__version__}, triton {triton_version}, python {platform.python_version()}"


def machine() -> str:
    """One line describing this machine for a report: CPU model, cores and torch threads; the GPU (name, memory,
    SMs) when CUDA is available; the torch, triton and python versions."""
    parts = [f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        parts.append(f"{props.name} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs)")
    return "; ".join([*parts, versions()])


class Listed(argparse.Action):
    """argparse ``action=`` of a list option (``nargs="+"``): the items may be space- or comma-separated, or both
    (``--norms a b``, ``--norms a,b``); empty items and ``none`` are dropped (``--heads none``: an empty list).
    ``type=`` converts each item, as usual; the option's value is a tuple."""

    def __init__(self, option_strings: Sequence[str], dest: str, nargs: str = "+",
                 type: Callable[[str], Any] | None = None, **kwargs: Any) -> None:  # noqa: A002 (argparse's name)
        super().__init__(option_strings, dest, nargs=nargs, **kwargs)
        self.convert = type or str

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        items = [item.strip() for value in values for item in value.split(",")]
        converted = []
        for item in items:
            if item and item != "none":
                try:
                    converted.append(self.convert(item))
                except (argparse.ArgumentTypeError, ValueError) as e:
                    raise argparse.ArgumentError(self, str(e) or f"invalid value {item!r}") from None
        setattr(namespace, self.dest, tuple(converted))
