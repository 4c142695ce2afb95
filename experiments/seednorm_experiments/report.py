"""Tables and plots for studies: mean ± std over seeds, 95% confidence intervals (Student t), paired
differences to a baseline (same seed, same data order), and PNG figures drawn with matplotlib's Agg
canvas (no display needed).

What a plot claims is decided here, once: a title names its intervals through :func:`interval_note` ("mean of 4
seeds, 95% CI"; "1 seed, no interval" -- never a CI over one seed), bar charts start their y axis at zero, and
legends sit outside the axes (:func:`outside_legend`), where they cover no data.

    s = summarize([2.64, 2.65, 2.63])            # Stat(mean, std, n, ci95)
    str(s)                                       # '2.640 ± 0.010'
    paired_diff({0: 2.70, 1: 2.69}, {0: 2.64, 1: 2.65})   # SeeDNorm − RMSNorm, paired by seed
    markdown_table(["norm", "loss"], [["rmsnorm", str(s)]])
    plot_curves({"rmsnorm": [[...], [...]]}, steps, "loss.png", ylabel="train loss")
    plot_bars({"bible": {"rmsnorm": [...], "seednorm": [...]}}, "zeroshot.png", ylabel="bits/byte")
    step_costs({"rmsnorm": [100.0, 50.0], "seednorm": [50.0, 50.0]}, "rmsnorm")   # {..., "seednorm": [2.0, 1.0]}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Stat", "figure", "interval_note", "markdown_table", "outside_legend", "paired_diff", "plot_bars",
           "plot_curves", "plot_lines", "set_title", "step_cost_document", "step_cost_rows", "step_costs", "summarize"]


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation, count and the half-width of the 95% t-interval of the mean
    (``nan`` for n < 2)."""

    mean: float
    std: float
    n: int
    ci95: float

    def format(self, digits: int = 3, ci: bool = False) -> str:
        """``mean ± std`` (or ``mean ± ci95`` with ``ci=True``, written ``[lo, hi]``)."""
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        if ci:
            lo, hi = self.mean - self.ci95, self.mean + self.ci95
            return f"{self.mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    def __str__(self) -> str:
        return self.format()


def summarize(values: Sequence[float]) -> Stat:
    """Mean ± sample std and the 95% Student-t confidence half-width of the mean of ``values``."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize needs at least one value")
    n = int(x.size)
    if n < 2:
        return Stat(float(x[0]), math.nan, 1, math.nan)
    std = float(x.std(ddof=1))
    return Stat(float(x.mean()), std, n, float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)))


def paired_diff(a: Mapping[int, float], b: Mapping[int, float]) -> Stat:
    """Statistics of ``a[seed] − b[seed]`` over the seeds both have (a paired comparison)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("paired_diff: the two runs share no seed")
    return summarize([a[s] - b[s] for s in seeds])


def step_costs(speeds: Mapping[str, Sequence[float]], baseline: str) -> dict[str, list[float]]:
    """Per-round step cost of each task relative to ``baseline`` (the baseline's tokens/s ÷ the task's, that is the
    task's time ÷ the baseline's: above 1, the task is slower) from
    :func:`seednorm_experiments.harness.benchmark`'s rounds: each round timed the tasks back to back, so a change
    in the machine's speed cancels in the ratio."""
    base = speeds[baseline]
    return {name: [b / x for b, x in zip(base, s, strict=True)] for name, s in speeds.items()}


STEP_COST_COLUMNS = ("best {unit}", "median {unit}", "cost (best)", "cost (median)", "cost (paired median)")


def step_cost_rows(speeds: Mapping[str, Sequence[float]], baseline: str, lead: Sequence[str]) -> list[list[str]]:
    """One table row per task of :func:`seednorm_experiments.harness.benchmark`'s rounds: ``lead`` cells, the task,
    its best and median throughput, and its step cost vs ``baseline`` as the ratio of best rounds, of median rounds
    and the median of the per-round ratios (:func:`step_costs`, the one that cancels load from other processes)."""
    base, costs = speeds[baseline], step_costs(speeds, baseline)
    return [[*lead, name, f"{max(s):,.0f}", f"{float(np.median(s)):,.0f}", f"{max(base) / max(s):.3f}",
             f"{float(np.median(base)) / float(np.median(s)):.3f}", f"{float(np.median(costs[name])):.3f}"]
            for name, s in speeds.items()]


def step_cost_document(title: str, lead: Sequence[str], rows: Sequence[Sequence[str]], *, machine: str, date: str,
                       command: str, rounds: int, steps: int, warmup: int, baseline: str, unit: str,
                       note: str = "") -> str:
    """The markdown report of a step-cost measurement: title, machine, date, command, how it was timed, the
    table of :func:`step_cost_rows` (``lead`` names its leading columns) and an optional note."""
    header = [*lead, "norm", *(c.format(unit=unit) for c in STEP_COST_COLUMNS)]
    return "\n".join([
        f"# {title}",
        "",
        f"- Machine: {machine}",
        f"- Date: {date}",
        f"- Command: `{command.strip()}`",
        f"- Timing: the study's training step, round-robin, {rounds} rounds × {steps} steps per norm after {warmup} "
        f"warm-up steps; cost = {baseline}'s {unit} ÷ the norm's (best rounds, median rounds, median of per-round "
        "ratios)",
        *([f"- Note: {note}"] if note else []),
        "",
        markdown_table(header, rows),
        "",
    ])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def figure(width: float = 7.0, height: float = 4.2):
    """A matplotlib ``(Figure, Axes)`` on the Agg canvas (no display), constrained layout, the studies' size."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def interval_note(counts: Sequence[int], what: str = "seeds") -> str:
    """What the error bars of a plot are, from the number of ``what`` behind each bar or point: ``mean of 4 seeds,
    95% CI``; ``mean of 2-4 seeds, 95% CI``; ``1 seed, no interval``; with some of one: ``1-3 seeds, 95% CI where
    there are 2 or more``."""
    ns = sorted(set(counts))
    if not ns:
        return f"no {what}"
    lo, hi = ns[0], ns[-1]
    span = f"{lo}" if lo == hi else f"{lo}-{hi}"
    if hi < 2:
        return f"{span} {what[:-1] if what.endswith('s') else what}, no interval"
    if lo < 2:
        return f"{span} {what}, 95% CI where there are 2 or more"
    return f"mean of {span} {what}, 95% CI"


def set_title(ax, title: str) -> None:
    """The axes' title, from their left edge: a long title runs on above the legend's column (beside the axes)
    instead of being cut off at the figure's left edge."""
    ax.set_title(title, loc="left", fontsize="medium")


def outside_legend(ax, fontsize: str = "small") -> None:
    """The legend to the right of the axes (outside the data; constrained layout makes room for it)."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _titled(title: str, note: str) -> str:
    return f"{title}\n({note})" if title else note


def _ema(y: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty_like(y)
    acc = y[..., 0]
    for i in range(y.shape[-1]):
        acc = alpha * acc + (1 - alpha) * y[..., i] if i else acc
        out[..., i] = acc
    return out


def plot_curves(curves: Mapping[str, Sequence[Sequence[float]]], steps: Sequence[float], path: Path, *,
                ylabel: str, xlabel: str = "step", title: str = "", smooth: float = 0.0,
                logy: bool = False) -> None:
    """One line per label (mean over seeds) with a shaded band from the lowest to the highest seed.

    ``curves[label]`` is a list of per-seed sequences aligned with ``steps`` (shorter ones, e.g.
    diverged runs, are cut to the shortest); ``smooth`` is an EMA factor in [0, 1).
    """
    fig, ax = figure()
    for label, runs in curves.items():
        n = min(len(r) for r in runs)
        y = _ema(np.asarray([r[:n] for r in runs], dtype=np.float64), smooth)
        x = np.asarray(steps[:n])
        (line,) = ax.plot(x, y.mean(0), label=f"{label} (n={len(runs)})", lw=1.4)
        if len(runs) > 1:
            ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2, lw=0)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    set_title(ax, title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    outside_legend(ax)
    fig.savefig(path)


def plot_bars(groups: Mapping[str, Mapping[str, Sequence[float]]], path: Path, *, ylabel: str,
              title: str = "", baseline: str | None = None) -> None:
    """Grouped bars: one group per key of ``groups`` (e.g. an evaluation domain), one bar per label
    (e.g. a norm), height = mean over seeds, error bar = 95% CI (none for a bar of one seed). Values are per seed,
    in the same seed order for every label. With ``baseline`` the bars show the paired difference to that label
    instead (seed by seed), and the baseline itself is left out. The title gets what the bars are
    (:func:`interval_note`); the y axis starts at zero (differences: it spans zero)."""
    fig, ax = figure(max(6.0, 1.6 * len(groups) + 2), 4.2)
    labels = list(dict.fromkeys(lbl for g in groups.values() for lbl in g if lbl != baseline))
    width = 0.8 / max(1, len(labels))
    counts = []
    for i, label in enumerate(labels):
        stats = []
        for g in groups.values():
            vals = g.get(label, [])
            if baseline is not None:
                stats.append(paired_diff(dict(enumerate(vals)), dict(enumerate(g[baseline]))))
            else:
                stats.append(summarize(vals))
        counts += [s.n for s in stats]
        x = np.arange(len(groups)) + (i - (len(labels) - 1) / 2) * width
        ax.bar(x, [s.mean for s in stats], width, yerr=[0 if math.isnan(s.ci95) else s.ci95 for s in stats],
               capsize=3, label=label)
    ax.set_xticks(np.arange(len(groups)), list(groups))
    note = interval_note(counts, "paired seeds" if baseline is not None else "seeds")
    ax.set(ylabel=ylabel if baseline is None else f"{ylabel} − {baseline}")
    set_title(ax, _titled(title, note))
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylim(*_with_zero(ax.get_ylim()))
    ax.grid(alpha=0.3, axis="y")
    outside_legend(ax)
    fig.savefig(path)


def _with_zero(limits: tuple[float, float]) -> tuple[float, float]:
    """Axis limits widened to include zero: a bar's height is read from zero, so the axis starts there."""
    lo, hi = limits
    return min(lo, 0.0), max(hi, 0.0)


def plot_lines(x: Sequence[float], ys: Mapping[str, Sequence[float]], path: Path, *, xlabel: str,
               ylabel: str, title: str = "", logx: bool = False,
               yerr: Mapping[str, Sequence[float]] | None = None) -> None:
    """Plain lines with markers, e.g. the fraction of diverged runs per norm against the learning rate.
    ``yerr[label]``: optional symmetric error bars (e.g. the std over seeds) for that line."""
    fig, ax = figure()
    for label, y in ys.items():
        err = None if yerr is None or label not in yerr else yerr[label][: len(y)]
        ax.errorbar(x[: len(y)], y, yerr=err, marker="o", capsize=3, label=label)
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(list(x), [f"{v:g}" for v in x])  # label the measured points, not powers of ten
        ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel=ylabel)
    set_title(ax, title)
    ax.grid(alpha=0.3)
    outside_legend(ax)
    fig.savefig(path)
