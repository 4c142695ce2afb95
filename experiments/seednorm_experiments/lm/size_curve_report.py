"""``report.md``, ``summary.json`` and ``size_curve.png`` of ``seednorm lm --size-curve`` (see :mod:`.size_curve`); with
more than one token factor also ``token_curve.png`` and ``gap_curve.png`` (SeeDNorm − RMSNorm against training
tokens, and the training-loss gap over the longest runs); with ``--sensitivity`` also ``sensitivity.png`` (how far
each run moved when its init moved by one ulp, against the learning rate).

The plot redraws from the summaries alone, so the GPU run's point can be added where the CPU runs are not:

    python -m seednorm_experiments.lm.size_curve_report results/lm_size_curve/summary.json \\
        --gpu results/lm_gpu/summary.json --out results/lm_size_curve/size_curve.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..common import BASELINE
from ..records import provenance
from ..report import Stat, figure, interval_note, markdown_table, outside_legend, paired_diff, set_title, summarize
from .ablation import primary_metric, zero_shot_bpb
from .data import EVAL_SETS
from .gpu import non_embedding_params
from .model import LMConfig
from .olmo import MOE_Z_LOSS
from .olmo_curve_report import comparisons, olmo2_section
from .size_curve import Point, SizeCurvePlan, best_rates
from .study import Run, model_config

__all__ = ["SENSITIVE_BPB", "plot_gap_curve", "plot_sensitivity", "plot_size_curve", "plot_token_curve",
           "sensitivity_rows", "write_size_curve_report"]

SENSITIVE_BPB = 0.01
"""A rate counts as sensitive where a one-ulp change of the init moves in-domain bits per byte by more than this on
average over the seeds."""


DELTAS: dict[str, Callable[[Run], float]] = {"in_domain_bpb": primary_metric, "zero_shot_bpb": zero_shot_bpb,
                                              "train_loss": lambda r: r.final_loss}


def _at(runs: Sequence[Run], norm: str, lr: float | None) -> list[Run]:
    return [r for r in runs if r.norm == norm and r.lr == lr and not r.diverged]


def _paired(runs: Sequence[Run], norm: str, lr: float | None, base_lr: float | None,
            metric: Callable[[Run], float]) -> Stat | None:
    mine = {r.seed: metric(r) for r in _at(runs, norm, lr)}
    ref = {r.seed: metric(r) for r in _at(runs, BASELINE, base_lr)}
    return paired_diff(mine, ref) if len(set(mine) & set(ref)) >= 2 else None


def _stat_json(s: Stat | None) -> dict[str, float] | None:
    return None if s is None else {"mean": s.mean, "ci95": s.ci95, "n": s.n}


def _fmt(s: Stat | None) -> str:
    return "–" if s is None else s.format(3, ci=True)


def _mean(runs: Sequence[Run], metric: Callable[[Run], float]) -> str:
    return str(summarize([metric(r) for r in runs])) if runs else "–"


def _point_summary(plan: SizeCurvePlan, point: Point, runs: Sequence[Run], vocab_size: int,
                   best: Mapping[str, float | None] | None = None) -> dict[str, Any]:
    """What the curve needs of one point: its size, each norm's best rate and rates run, and each other norm's
    paired differences to RMSNorm at the best rates (``best``: given for the clip-off check, else chosen here)."""
    best = dict(best or best_rates(runs))
    rates = {n: sorted({r.lr for r in runs if r.norm == n}) for n in plan.norms}
    base_lr = best.get(BASELINE)
    preset = point.preset(plan.preset)
    params = non_embedding_params(preset, vocab_size, plan.moe_experts, plan.moe_top_k)
    moe = model_config(preset, vocab_size, BASELINE, moe_experts=plan.moe_experts, moe_top_k=plan.moe_top_k)
    return {
        "key": point.key, "dim": point.dim, "n_layers": point.n_layers, "clip": point.clip,
        "non_embedding_params": params,
        **({"active_non_embedding_params": params - moe.inactive_params()} if moe.moe else {}),
        "best_lr": best, "rates": rates,
        "complete": all(sum(r.norm == n and r.lr == lr for r in runs) == plan.seeds for n in plan.norms
                        for lr in rates[n]) and all(rates.values()),
        "at_edge": {n: best.get(n) in (min(rs), max(rs)) for n, rs in rates.items() if rs and best.get(n)},
        "diverged": {n: sum(r.diverged for r in runs if r.norm == n) for n in plan.norms},
        "delta": {n: {k: _stat_json(_paired(runs, n, best.get(n), base_lr, m)) for k, m in DELTAS.items()}
                  for n in plan.norms if n != BASELINE},
    }


def _best_cell(runs: Sequence[Run], s: Mapping[str, Any], norm: str) -> str:
    """``lr[ (edge)]; in-domain bpb mean ± std`` of ``norm`` at its best rate (``s``: the point's summary)."""
    lr = s["best_lr"].get(norm)
    if lr is None:
        return "diverged"
    edge = " (edge)" if s["at_edge"].get(norm) else ""
    return f"{lr:g}{edge}; {_mean(_at(runs, norm, lr), primary_metric)}"


def _best_table(plan: SizeCurvePlan, points: Sequence[tuple[Point, list[Run], dict]]) -> list[str]:
    others = [n for n in plan.norms if n != BASELINE]
    rows = []
    for point, runs, s in points:
        lr = s["best_lr"]
        for n in others:
            d = {k: _paired(runs, n, lr.get(n), lr.get(BASELINE), m) for k, m in DELTAS.items()}
            partial = "" if s["complete"] else f" (partial: {len(runs)} runs)"
            active = s.get("active_non_embedding_params")
            rows.append([f"{point.dim} × {point.n_layers}{partial}",
                         f"{s['non_embedding_params']:,}" + (f" ({active:,} active)" if active else ""),
                         _best_cell(runs, s, BASELINE), n, _best_cell(runs, s, n), _fmt(d["in_domain_bpb"]),
                         _fmt(d["zero_shot_bpb"]), _fmt(d["train_loss"])])
    header = ["width × layers", "non-emb. params", f"{BASELINE}: best lr; in-domain bpb", "norm",
              "norm: best lr; in-domain bpb", "Δ in-domain bpb", "Δ zero-shot bpb", "Δ train loss"]
    return ["\n## Each norm at its own best rate\n",
            "Best lr: the rate with the lowest mean final training loss among those where no seed diverged; "
            "\"(edge)\" marks a rate still on the edge of the grid after it grew as far as allowed; \"partial\": a "
            "point whose runs are not all finished. Bits per byte: "
            "mean ± std over seeds. Δ: norm − RMSNorm, paired by seed, mean [95% CI] (negative = the norm is "
            "better).\n", markdown_table(header, rows)]


def _shared_rate_rows(plan: SizeCurvePlan, points: Sequence[tuple[Point, list[Run], dict]],
                      label: Callable[[Point], list[str]]) -> list[list[str]]:
    """One row per point, other norm and rate both it and RMSNorm ran: ``label(point)`` cells, the norm, the rate,
    each norm's final training loss, the paired Δ in-domain bpb and the diverged seeds."""
    rows = []
    for point, runs, s in points:
        for n in (n for n in plan.norms if n != BASELINE):
            for lr in sorted(set(s["rates"][BASELINE]) & set(s["rates"][n])):
                lost = {m: sum(r.diverged for r in runs if r.norm == m and r.lr == lr) for m in (BASELINE, n)}
                rows.append([*label(point), n, f"{lr:g}",
                             _mean(_at(runs, BASELINE, lr), lambda r: r.final_loss),
                             _mean(_at(runs, n, lr), lambda r: r.final_loss),
                             _fmt(_paired(runs, n, lr, lr, primary_metric)),
                             f"{lost[BASELINE]} / {lost[n]}"])
    return rows


def _every_rate_table(plan: SizeCurvePlan, points: Sequence[tuple[Point, list[Run], dict]]) -> list[str]:
    rows = _shared_rate_rows(plan, points, lambda point: [f"{point.dim} × {point.n_layers}"])
    return ["\n## Every shared rate (no selection)\n",
            "Final training loss (mean ± std over seeds) of each norm and the paired Δ in-domain bits per byte "
            "(norm − RMSNorm, mean [95% CI]) at each rate both ran; diverged seeds (RMSNorm / norm) are left out.\n",
            markdown_table(["width × layers", "norm", "lr", f"{BASELINE} train loss", "norm train loss",
                            "Δ in-domain bpb", "diverged"], rows)]


def _clip_table(plan: SizeCurvePlan, clipped: list[Run], free: list[Run], best: Mapping[str, float | None]
                ) -> list[str]:
    rows = []
    for n in plan.norms:
        on = {r.seed: primary_metric(r) for r in _at(clipped, n, best.get(n))}
        off = {r.seed: primary_metric(r) for r in _at(free, n, best.get(n))}
        diff = paired_diff(off, on) if len(set(on) & set(off)) >= 2 else None
        lost = sum(r.diverged for r in free if r.norm == n)
        rows.append([n, f"{best[n]:g}" if best.get(n) else "–", _mean(_at(free, n, best.get(n)), primary_metric),
                     _fmt(diff), str(lost)])
    for n in (n for n in plan.norms if n != BASELINE):
        rows.append([f"{n} − {BASELINE}, clip off", "", "",
                     _fmt(_paired(free, n, best.get(n), best.get(BASELINE), primary_metric)), ""])
    return ["\n## Clip-off check\n",
            f"Each norm at its best clipped rate at width {plan.clip_off[0]} × {plan.clip_off[1]} layers, gradient "
            "clipping off, same seeds. Δ: clip off − clip on (per norm), or norm − RMSNorm with the clip off; "
            "paired by seed, mean [95% CI].\n",
            markdown_table(["norm", "lr", "in-domain bpb, clip off", "Δ in-domain bpb", "diverged"], rows)]


def _token_summary(plan: SizeCurvePlan, point: Point, runs: Sequence[Run], vocab_size: int) -> dict[str, Any]:
    """:func:`_point_summary` of one (point, factor) with its length: ``factor``, ``steps``, ``tokens_per_run`` and
    ``tokens_per_param`` (tokens per run per non-embedding parameter)."""
    s = _point_summary(plan, point, runs, vocab_size)
    preset = point.preset(plan.preset)
    return {**s, "factor": point.factor, "steps": preset.steps, "tokens_per_run": preset.tokens_per_run,
            "tokens_per_param": preset.tokens_per_run / s["non_embedding_params"]}


def _verdict(s: Mapping[str, Any], norm: str) -> str:
    """One length's most conservative reading: ``ahead``/``behind`` only when the run set is complete, neither
    chosen rate is on its grid's edge and both the in-domain and the zero-shot 95% intervals are on that side of 0;
    else why not."""
    if not s["complete"]:
        return "not finished"
    if s["at_edge"].get(norm) or s["at_edge"].get(BASELINE):
        return "a chosen rate on its grid's edge"
    d = [s["delta"][norm][k] for k in ("in_domain_bpb", "zero_shot_bpb")]
    if any(x is None or math.isnan(x["ci95"]) for x in d):
        return "no interval"
    if all(x["mean"] + x["ci95"] < 0 for x in d):
        return "ahead"
    if all(x["mean"] - x["ci95"] > 0 for x in d):
        return "behind"
    return "within the noise"


def _token_section(plan: SizeCurvePlan, points: Sequence[tuple[Point, list[Run], dict]]) -> list[str]:
    """"SeeDNorm − RMSNorm against training tokens": per size and norm the conservative reading of every length,
    then a row per length (tokens, rates, paired Δ) and the Δ at every rate both norms ran."""
    others = [n for n in plan.norms if n != BASELINE]
    factors = sorted(plan.token_factors)
    reading, rows = [], []
    for size in dict.fromkeys(point.size for point, _, _ in points):
        mine = [(point, runs, s) for point, runs, s in points if point.size == size]
        for n in others:
            cells = "; ".join(f"×{point.factor}: {_verdict(s, n)}" for point, _, s in mine)
            missing = [f for f in factors if f not in {point.factor for point, _, _ in mine}]
            reading.append(f"- {size[0]} × {size[1]}, {n}: {cells}"
                           + (f"; ×{', ×'.join(map(str, missing))} not run yet" if missing else "") + ".")
        for point, runs, s in mine:
            lr = s["best_lr"]
            for n in others:
                d = {k: _paired(runs, n, lr.get(n), lr.get(BASELINE), m) for k, m in DELTAS.items()}
                partial = "" if s["complete"] else f" (partial: {len(runs)} runs)"
                rows.append([f"{size[0]} × {size[1]}", f"×{point.factor}{partial}", f"{s['steps']:,}",
                             f"{s['tokens_per_run']:,}", f"{s['tokens_per_param']:.3g}",
                             _best_cell(runs, s, BASELINE).split(";")[0], n,
                             _best_cell(runs, s, n).split(";")[0], _fmt(d["in_domain_bpb"]),
                             _fmt(d["zero_shot_bpb"]), _fmt(d["train_loss"])])
    shared = _shared_rate_rows(plan, points, lambda point: [f"{point.dim} × {point.n_layers}", f"×{point.factor}"])
    return ["\n## SeeDNorm − RMSNorm against training tokens\n",
            f"Every size trained at {', '.join(f'{f} ×' for f in factors)} the {plan.preset.steps} steps, each length "
            "with its own rate grid, grown as above, and the same seeds; each norm at its own best rate for that "
            "length. Reading first, the most conservative: a length counts as ahead (or behind) only where both the "
            "in-domain and the zero-shot 95% intervals of norm − RMSNorm are below (above) 0, every run is finished "
            "and neither chosen rate is on its grid's edge; anything else is not a finding.\n",
            *reading, "",
            "Lr: each norm's chosen rate (\"(edge)\": still on its grid's edge); tokens per parameter: tokens per run "
            "per non-embedding parameter. Δ: norm − RMSNorm at their rates, paired by seed, mean [95% CI] "
            "(negative = the norm is better).\n",
            markdown_table(["width × layers", "length", "steps", "tokens per run", "tokens / param",
                            f"{BASELINE} lr", "norm", "norm lr", "Δ in-domain bpb", "Δ zero-shot bpb",
                            "Δ train loss"], rows),
            "\nAt every rate both norms ran at each length (no selection): final training loss (mean ± std over "
            "seeds) and the paired Δ in-domain bits per byte (norm − RMSNorm, mean [95% CI]); diverged seeds "
            "(RMSNorm / norm) are left out.\n",
            markdown_table(["width × layers", "length", "norm", "lr", f"{BASELINE} train loss", "norm train loss",
                            "Δ in-domain bpb", "diverged"], shared)]


def sensitivity_rows(plan: SizeCurvePlan, point: Point, base: Sequence[Run], nudged: Sequence[Run]
                     ) -> list[dict[str, Any]]:
    """Per norm and rate of ``point``'s grid: how far each seed's run moved when its init moved up by one ulp
    (``nudged``: the same jobs from the nudged init). ``seeds``: the seeds where neither run diverged;
    ``loss_moved``/``bpb_moved``: mean and max over them of |final training loss (in-domain bpb) of the nudged run −
    the run's|; ``bpb_seed_std``: the spread of in-domain bpb between seeds of the unnudged runs, for scale;
    ``diverged``: seeds lost (unnudged, nudged)."""
    rows = []
    for norm in plan.norms:
        for lr in sorted({r.lr for r in base if r.norm == norm}):
            a = {r.seed: r for r in base if r.norm == norm and r.lr == lr}
            b = {r.seed: r for r in nudged if r.norm == norm and r.lr == lr}
            both = sorted(k for k in set(a) & set(b) if not (a[k].diverged or b[k].diverged))
            moved = {m: [abs(f(b[k]) - f(a[k])) for k in both]
                     for m, f in (("loss_moved", lambda r: r.final_loss), ("bpb_moved", primary_metric))}
            spread = [primary_metric(r) for r in a.values() if not r.diverged]
            rows.append({"key": point.key.removesuffix("-ulp"), "dim": point.dim, "n_layers": point.n_layers,
                         "factor": point.factor, "norm": norm, "lr": lr, "seeds": len(both),
                         **{m: {"mean": float(np.mean(v)), "max": float(np.max(v))} if v else None
                            for m, v in moved.items()},
                         "bpb_seed_std": float(np.std(spread, ddof=1)) if len(spread) > 1 else None,
                         "diverged": [sum(r.diverged for r in a.values()), sum(r.diverged for r in b.values())]})
    return rows


def _sensitivity_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The reading (per point and norm, the rates where a one-ulp init change moves in-domain bpb by more than
    :data:`SENSITIVE_BPB` on average) and the table of :func:`sensitivity_rows`."""
    def cell(x: Mapping[str, float] | None) -> str:
        return "–" if x is None else f"{x['mean']:.4f} / {x['max']:.4f}"

    reading, table = [], []
    for key in dict.fromkeys(r["key"] for r in rows):
        mine = [r for r in rows if r["key"] == key]
        for norm in dict.fromkeys(r["norm"] for r in mine):
            at = [r for r in mine if r["norm"] == norm and r["bpb_moved"]]
            loud = [f"{r['lr']:g}" for r in at if r["bpb_moved"]["mean"] > SENSITIVE_BPB]
            quiet = [f"{r['lr']:g}" for r in at if r["bpb_moved"]["mean"] <= SENSITIVE_BPB]
            reading.append(f"- {mine[0]['dim']} × {mine[0]['n_layers']}"
                           + (f" (× {mine[0]['factor']} steps)" if mine[0]["factor"] != 1 else "") + f", {norm}: "
                           + (f"moves by more than {SENSITIVE_BPB:g} bpb at {', '.join(loud)}" if loud else
                              f"moves by at most {SENSITIVE_BPB:g} bpb at every rate")
                           + (f"; at most {SENSITIVE_BPB:g} at {', '.join(quiet)}" if loud and quiet else "") + ".")
        for r in mine:
            table.append([f"{r['dim']} × {r['n_layers']}" + (f", × {r['factor']}" if r["factor"] != 1 else ""),
                          r["norm"], f"{r['lr']:g}", str(r["seeds"]), cell(r["loss_moved"]), cell(r["bpb_moved"]),
                          "–" if r["bpb_seed_std"] is None else f"{r['bpb_seed_std']:.4f}",
                          "{} / {}".format(*r["diverged"])])
    return ["\n## Sensitivity to a one-ulp change of the init\n",
            "Every run of the grid trained again with the same seed, data and rate from its init moved up by one ulp "
            "(every parameter element to the next float above it). A run that moves far under a float-level change "
            "has a trajectory chaotic enough that the same seed on another machine, thread count or library "
            "version can give another result: pairing by seed pairs the init and the data order, not the "
            f"trajectory. Reading (mean over seeds of |Δ in-domain bpb|, threshold {SENSITIVE_BPB:g}):\n",
            *reading, "",
            "|Δ|: nudged run − run, mean / max over the seeds where neither diverged; seed std: the spread of "
            "in-domain bpb between the seeds of the unnudged runs, for scale; diverged: seeds lost (run / nudged "
            "run).\n",
            markdown_table(["width × layers", "norm", "lr", "seeds", "|Δ train loss| mean / max",
                            "|Δ in-domain bpb| mean / max", "seed std of in-domain bpb", "diverged"], table),
            "\n![sensitivity](sensitivity.png)"]


def plot_sensitivity(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Mean |Δ in-domain bpb| under a one-ulp init change against the learning rate, one line per point and norm
    (log-log; a move of exactly 0 is drawn at 1e-6)."""
    fig, ax = figure(8.0, 4.2)
    series = list(dict.fromkeys((r["key"], r["norm"]) for r in rows))
    for i, (key, norm) in enumerate(series):
        at = sorted((r for r in rows if (r["key"], r["norm"]) == (key, norm) and r["bpb_moved"]),
                    key=lambda r: r["lr"])
        if at:
            ax.plot([r["lr"] for r in at], [max(r["bpb_moved"]["mean"], 1e-6) for r in at], color=f"C{i}",
                    marker="osD^v"[i % 5], label=f"{norm}, {at[0]['dim']} × {at[0]['n_layers']}"
                    + (f", × {at[0]['factor']}" if at[0]["factor"] != 1 else ""))
    ax.axhline(SENSITIVE_BPB, color="black", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="peak learning rate", ylabel="mean |Δ in-domain bits/byte|\nunder a one-ulp init change",
           title="How far a run moves when its init moves by one ulp (dashed: the report's threshold)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path)


def plot_token_curve(summary: Mapping[str, Any], path: Path) -> None:
    """Δ in-domain bits per byte (norm at its best rate − RMSNorm at its best, 95% CIs) against tokens per run, one
    line per size and norm (``summary["token_curve"]``)."""
    fig, ax = figure(8.0, 4.2)
    entries = summary["token_curve"]
    series = [(norm, size) for norm in summary["norms"][1:]
              for size in dict.fromkeys((p["dim"], p["n_layers"]) for p in entries)]
    counts: list[int] = []
    for i, (norm, (dim, layers)) in enumerate(series):
        dodge = 1.04 ** (i - (len(series) - 1) / 2)  # side by side on the log axis, so the intervals stay readable
        ps = sorted((p for p in entries if (p["dim"], p["n_layers"]) == (dim, layers)
                     and p["delta"][norm]["in_domain_bpb"]), key=lambda p: p["tokens_per_run"])
        if ps:
            d = [p["delta"][norm]["in_domain_bpb"] for p in ps]
            counts += [x["n"] for x in d]
            ax.errorbar([p["tokens_per_run"] * dodge for p in ps], [x["mean"] for x in d],
                        yerr=[x["ci95"] for x in d], color=f"C{i}", marker="osD^v"[i % 5], capsize=3,
                        label=f"{norm}, {dim} × {layers}")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="training tokens per run", ylabel="Δ in-domain bits/byte vs RMSNorm\n(negative = better)")
    set_title(ax, f"Each norm at its best rate − RMSNorm at its best\n({interval_note(counts, 'paired seeds')})")
    ax.grid(alpha=0.3)
    outside_legend(ax, "x-small")
    fig.savefig(path)


def _smoothed(y: np.ndarray, window: int) -> np.ndarray:
    """The moving average of ``y`` over ``window`` points (centred; the ends average what they have)."""
    kernel = np.ones(window)
    return np.convolve(y, kernel, mode="same") / np.convolve(np.ones_like(y), kernel, mode="same")


def plot_gap_curve(longest: Sequence[tuple[Point, Sequence[Run], Mapping[str, Any]]], norms: Sequence[str],
                   path: Path) -> None:
    """Norm − RMSNorm training loss against step for each size's longest runs (``longest``: point, runs and
    :func:`_token_summary`), each norm at its chosen rate: the mean over the seeds both finished, a centred moving
    average over 2% of the steps."""
    fig, ax = figure(8.0, 4.2)
    i, seeds = 0, set()
    for point, runs, s in longest:
        base = {r.seed: r for r in _at(runs, BASELINE, s["best_lr"].get(BASELINE))}
        for norm in (n for n in norms if n != BASELINE):
            mine = {r.seed: r for r in _at(runs, norm, s["best_lr"].get(norm))}
            paired = sorted(set(base) & set(mine))
            if not paired:
                continue
            n = min(len(run.result["history"]) for k in paired for run in (base[k], mine[k]))
            gap = np.mean([[a["loss"] - b["loss"] for a, b in zip(mine[k].result["history"][:n],
                                                                   base[k].result["history"][:n], strict=True)]
                           for k in paired], axis=0)
            steps = [row["step"] for row in base[paired[0]].result["history"][:n]]
            seeds.add(len(paired))
            ax.plot(steps, _smoothed(gap, max(1, n // 50)), color=f"C{i}", lw=1.3,
                    label=f"{norm}, {point.dim} × {point.n_layers}, ×{point.factor} ({n} steps)")
            i += 1
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set(xlabel="step", ylabel="Δ training loss vs RMSNorm\n(negative = better)")
    set_title(ax, "Gap over training at each norm's chosen rate, mean of "
              + ("/".join(map(str, sorted(seeds))) or "0") + " paired seeds")
    ax.grid(alpha=0.3)
    outside_legend(ax, "x-small")
    fig.savefig(path)


def plot_size_curve(summary: Mapping[str, Any], path: Path, gpu: Mapping[str, Any] | None = None) -> None:
    """Δ bits per byte (norm − RMSNorm, each at its best rate) against non-embedding parameters, 95% CIs; the
    2-layer points joined, other depths as their own markers, the GPU run's Δ (one seed, no interval) as a star."""
    fig, ax = figure(9.0, 4.4)  # room for the legend beside the axes
    points = [p for p in summary["points"] if p["clip"]]
    depths = sorted({p["n_layers"] for p in points})
    series = [(norm, key) for norm in summary["norms"][1:] for key in ("in_domain_bpb", "zero_shot_bpb")]
    counts: list[int] = []
    for i, (norm, key) in enumerate(series):
        colour = f"C{i}"
        dodge = 1.05 ** (i - (len(series) - 1) / 2)  # side by side on the log axis, so the intervals stay readable
        for depth, marker in zip(depths, "osD^v", strict=False):
            ps = sorted((p for p in points if p["n_layers"] == depth and p["delta"][norm][key]),
                        key=lambda p: p["non_embedding_params"])
            if ps:
                d = [p["delta"][norm][key] for p in ps]
                counts += [x["n"] for x in d]
                ax.errorbar([p["non_embedding_params"] * dodge for p in ps], [x["mean"] for x in d],
                            yerr=[x["ci95"] for x in d], color=colour, marker=marker, capsize=3,
                            linestyle="-" if len(ps) > 1 else "none",
                            label=f"{norm}, {key.replace('_bpb', '').replace('_', '-')} bpb, {depth} layers")
        value = ((gpu or {}).get("delta", {}).get(norm) or {}).get(key)
        if value is not None:
            ax.plot([gpu["non_embedding_params"] * dodge], [value], marker="*", markersize=14, color=colour,
                    linestyle="none", label=f"{norm}, {key.replace('_bpb', '').replace('_', '-')} bpb, GPU "
                    f"preset ({gpu.get('n_layers', '?')} layers, {gpu['tokens_per_run'] / 1e6:.0f}M tokens, 1 seed)")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="non-embedding parameters", ylabel="Δ bits/byte vs RMSNorm (negative = better)")
    set_title(ax, f"Each norm at its best rate − RMSNorm at its best, {summary['tokens_per_run']:,} tokens per run\n"
              f"({interval_note(counts, 'paired seeds')}{'; the GPU star: 1 seed, no interval' if gpu else ''})")
    ax.grid(alpha=0.3)
    outside_legend(ax, "x-small")
    fig.savefig(path)


def write_size_curve_report(out: Path, plan: SizeCurvePlan, runs: Mapping[str, list[Run]], *, command: str,
                            vocab_size: int, wall_s: float | None = None, gpu_summary: Path | None = None,
                            pack_sha256: str | None = None) -> Path:
    """Write ``out/report.md``, ``out/summary.json`` (per point, and every run without its history) and
    ``out/size_curve.png`` from the finished runs; ``gpu_summary``: the ``gpu`` preset's ``summary.json``, drawn on
    the same axes when it exists; ``pack_sha256``: the corpus pack's hash, named in the protocol (a preset trained on
    the corpus pack). Returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    p = plan.preset
    sizes = ", ".join(f"{d} × {n}" for d, n in plan.points)
    olmo2 = plan.arch == "olmo2"
    moe = (f"every MLP a dropless mixture of {plan.moe_experts} SwiGLU experts (MLP width by the Llama rule each), "
           f"each token to its {plan.moe_top_k} best, load-balancing loss weight {LMConfig.moe_aux_coef:g}"
           + (f" and router z-loss {MOE_Z_LOSS:g} (OLMoE's)" if olmo2 else "") if plan.moe_experts else "")
    if olmo2:
        model = (f"OLMo-core's {'OLMoE layout' if moe else 'OLMo2'} (reordered-norm blocks, QK-norm over the full "
                 f"width, ε 1e-6; {moe or 'MLP width by the Llama rule'}), each variant's norm sites converted to "
                 "SeeDNorm by seednorm.integrations.olmo_core")
    else:
        model = "Llama-style decoder" + (f" ({moe})" if moe else "")
    title = ("# OLMoE: SeeDNorm − RMSNorm, and which norms to convert\n" if olmo2 and moe
             else "# OLMo2: SeeDNorm − RMSNorm, and which norms to convert\n" if olmo2
             else "# SeeDNorm − RMSNorm against model size\n")
    lines = [title, f"Command: `{command}`\n",
             f"Machine: {provenance(wall_s)}.\n",
             f"Protocol: {model}, {p.n_heads} heads, vocab {vocab_size} (byte-level BPE), "
             f"{p.seq_len}-token context, tied embeddings, at each width × layers of {sizes}; "
             f"{p.steps} steps × {p.batch_size} sequences = {p.tokens_per_run:,} tokens per run; AdamW (β 0.9/0.95), "
             f"warmup {p.warmup}, cosine to 10%, weight decay {p.weight_decay} on matrices and SeeDNorm's α, β, global "
             f"gradient clip {p.grad_clip}. Each norm starts from the rates {', '.join(f'{x:g}' for x in plan.lrs)} "
             f"with {plan.seeds} seeds per rate; its grid grows by halving or doubling (at most {plan.extend} rates "
             "per side) until its best rate is inside. Seed k gives every norm and rate the same data order and init "
             "RNG stream. Evaluation: "
             f"{EVAL_SETS}"
             + (f"; corpus: the corpus pack sha256 `{pack_sha256}`"
                + (", at most one pass over its training text" if p.one_pass else "") if pack_sha256 else "") + ".\n"]
    tokens = len(plan.token_factors) > 1
    if tokens:
        lines[-1] = lines[-1][:-1] + (
            f" Token axis: every size also at {', '.join(f'{f} ×' for f in sorted(plan.token_factors) if f > 1)} the "
            "steps (warmup min(warmup, steps / 5), as the preset's rule gives it), each length with its own grid; "
            "the sections before \"SeeDNorm − RMSNorm against training tokens\" are at the preset's length (× 1).\n")
    if plan.sensitivity:
        lines[-1] = lines[-1][:-1] + (" Sensitivity: every run of every grid also trained from its init moved up by "
                                      "one ulp (same seed, data and rate).\n")
    grid, summary_points, lengths, moved = [], [], [], []
    for point in plan.ordered_points():
        if point.key not in runs or not point.clip:
            continue
        twin = dataclasses.replace(point, nudged=True)
        if twin.key in runs:
            moved += sensitivity_rows(plan, point, runs[point.key], runs[twin.key])
        if tokens:
            lengths.append((point, runs[point.key], _token_summary(plan, point, runs[point.key], vocab_size)))
        if point.factor != 1:
            continue
        s = _point_summary(plan, point, runs[point.key], vocab_size)
        grid.append((point, runs[point.key], s))
        summary_points.append(s)
    answers = [c for point, point_runs, s in grid for c in comparisons(plan.norms, point, point_runs, s)] \
        if olmo2 else []
    if olmo2:
        lines += olmo2_section(answers, "OLMoE" if plan.moe_experts else "OLMo2")
    if grid:
        lines += _best_table(plan, grid) + _every_rate_table(plan, grid)
    if plan.clip_off:
        free_key = Point(*plan.clip_off, clip=False).key
        clipped = next((g for g in grid if g[0].size == plan.clip_off), None)
        if clipped and runs.get(free_key):
            best = clipped[2]["best_lr"]
            lines += _clip_table(plan, clipped[1], runs[free_key], best)
            summary_points.append(_point_summary(plan, Point(*plan.clip_off, clip=False), runs[free_key],
                                                 vocab_size, best))
    gpu = json.loads(gpu_summary.read_text()) if gpu_summary and gpu_summary.is_file() else None
    summary = {"norms": list(plan.norms), "tokens_per_run": p.tokens_per_run, "seeds": plan.seeds,
               "points": summary_points,
               "runs": {k: [{"variant": r.norm, "seed": r.seed, "lr": r.lr, "diverged": r.diverged,
                             "final_loss": r.final_loss if not r.diverged else math.nan,
                             "final_eval": r.result["final_eval"]} for r in rs] for k, rs in runs.items()}}
    if tokens:
        lengths.sort(key=lambda g: (plan.points.index(g[0].size), g[0].factor))
        summary["token_factors"] = sorted(plan.token_factors)
        summary["token_curve"] = [s for _, _, s in lengths]
    if moved:
        summary["sensitivity"] = moved
    if plan.moe_experts:
        summary["moe"] = {"experts": plan.moe_experts, "top_k": plan.moe_top_k}
    if olmo2:
        summary["arch"] = plan.arch
        summary["comparisons"] = [{**c, "deltas": {k: _stat_json(v) for k, v in c["deltas"].items()}}
                                  for c in answers]
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if summary_points:
        plot_size_curve(summary, out / "size_curve.png", gpu)
        lines += ["\n## The curve\n",
                  "Δ bits per byte of each norm at its best rate minus RMSNorm at its best, against the parameters "
                  "outside the embedding, 95% CIs"
                  + (f"; the star: the GPU preset's run ({gpu_summary})" if gpu else
                     "; no GPU run on these axes yet (the `gpu` preset's summary.json was not given or not found)")
                  + ".\n", "![size curve](size_curve.png)"]
    if lengths:
        lines += _token_section(plan, lengths)
        plot_token_curve(summary, out / "token_curve.png")
        longest = [max((g for g in lengths if g[0].size == size), key=lambda g: g[0].factor)
                   for size in dict.fromkeys(g[0].size for g in lengths)]
        plot_gap_curve(longest, plan.norms, out / "gap_curve.png")
        lines += ["\nΔ in-domain bits per byte of each norm at its best rate minus RMSNorm at its best against the "
                  "tokens each run trained on, 95% CIs, one line per size:\n", "![token curve](token_curve.png)",
                  "\nThe gap over training at each size's longest length run so far ("
                  + ", ".join(f"{p.dim} × {p.n_layers}: × {p.factor}" for p, _, _ in longest)
                  + "): norm − RMSNorm training loss at each norm's chosen rate, the mean over the seeds both "
                  "finished, a centred moving average over 2% of the steps:\n", "![gap curve](gap_curve.png)"]
    if moved:
        lines += _sensitivity_section(moved)
        plot_sensitivity(moved, out / "sensitivity.png")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Redraw ``size_curve.png`` from a size curve's ``summary.json`` and, optionally, the GPU study's."""
    from ..args import report_errors

    p = argparse.ArgumentParser(prog="python -m seednorm_experiments.lm.size_curve_report", description=main.__doc__)
    p.add_argument("summary", type=Path, help="summary.json of seednorm lm --size-curve")
    p.add_argument("--gpu", type=Path, default=None, help="summary.json of seednorm lm --preset gpu")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = p.parse_args(argv)

    def body() -> int:
        for path in (args.summary, args.gpu):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"{path} does not exist; give the summary.json a study wrote")
        gpu = json.loads(args.gpu.read_text()) if args.gpu else None
        plot_size_curve(json.loads(args.summary.read_text()), args.out, gpu)
        print(f"wrote {args.out}")
        return 0

    return report_errors(p.prog, body, (FileNotFoundError, json.JSONDecodeError, KeyError))


if __name__ == "__main__":
    sys.exit(main())
