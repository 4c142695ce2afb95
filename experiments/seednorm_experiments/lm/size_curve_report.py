"""``report.md``, ``summary.json`` and ``size_curve.png`` of ``seednorm lm --size-curve`` (see :mod:`.size_curve`).

The plot redraws from the summaries alone, so the GPU run's point can be added where the CPU runs are not:

    python -m seednorm_experiments.lm.size_curve_report results/lm_size_curve/summary.json \\
        --gpu results/lm_gpu/summary.json --out results/lm_size_curve/size_curve.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..common import BASELINE
from ..records import provenance
from ..report import Stat, figure, markdown_table, paired_diff, summarize
from .ablation import primary_metric, zero_shot_bpb
from .data import IN_DOMAIN, ZERO_SHOT
from .gpu import non_embedding_params
from .size_curve import Point, SizeCurvePlan, best_rates
from .study import Run

__all__ = ["plot_size_curve", "write_size_curve_report"]


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
    return {
        "key": point.key, "dim": point.dim, "n_layers": point.n_layers, "clip": point.clip,
        "non_embedding_params": non_embedding_params(point.preset(plan.preset), vocab_size),
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
            rows.append([f"{point.dim} × {point.n_layers}{partial}", f"{s['non_embedding_params']:,}",
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


def _every_rate_table(plan: SizeCurvePlan, points: Sequence[tuple[Point, list[Run], dict]]) -> list[str]:
    rows = []
    for point, runs, s in points:
        for n in (n for n in plan.norms if n != BASELINE):
            for lr in sorted(set(s["rates"][BASELINE]) & set(s["rates"][n])):
                lost = {m: sum(r.diverged for r in runs if r.norm == m and r.lr == lr) for m in (BASELINE, n)}
                rows.append([f"{point.dim} × {point.n_layers}", n, f"{lr:g}",
                             _mean(_at(runs, BASELINE, lr), lambda r: r.final_loss),
                             _mean(_at(runs, n, lr), lambda r: r.final_loss),
                             _fmt(_paired(runs, n, lr, lr, primary_metric)),
                             f"{lost[BASELINE]} / {lost[n]}"])
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


def plot_size_curve(summary: Mapping[str, Any], path: Path, gpu: Mapping[str, Any] | None = None) -> None:
    """Δ bits per byte (norm − RMSNorm, each at its best rate) against non-embedding parameters, 95% CIs; the
    2-layer points joined, other depths as their own markers, the GPU run's Δ (one seed, no interval) as a star."""
    fig, ax = figure()
    points = [p for p in summary["points"] if p["clip"]]
    depths = sorted({p["n_layers"] for p in points})
    series = [(norm, key) for norm in summary["norms"][1:] for key in ("in_domain_bpb", "zero_shot_bpb")]
    for i, (norm, key) in enumerate(series):
        colour = f"C{i}"
        dodge = 1.05 ** (i - (len(series) - 1) / 2)  # side by side on the log axis, so the intervals stay readable
        for depth, marker in zip(depths, "osD^v", strict=False):
            ps = sorted((p for p in points if p["n_layers"] == depth and p["delta"][norm][key]),
                        key=lambda p: p["non_embedding_params"])
            if ps:
                d = [p["delta"][norm][key] for p in ps]
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
    ax.set(xlabel="non-embedding parameters", ylabel="Δ bits/byte vs RMSNorm (negative = better)",
           title=f"Each norm at its best rate − RMSNorm at its best, {summary['tokens_per_run']:,} tokens per run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    fig.savefig(path)


def write_size_curve_report(out: Path, plan: SizeCurvePlan, runs: Mapping[str, list[Run]], *, command: str,
                            vocab_size: int, wall_s: float | None = None, gpu_summary: Path | None = None) -> Path:
    """Write ``out/report.md``, ``out/summary.json`` (per point, and every run without its history) and
    ``out/size_curve.png`` from the finished runs; ``gpu_summary``: the ``gpu`` preset's ``summary.json``, drawn on
    the same axes when it exists. Returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    p = plan.preset
    sizes = ", ".join(f"{d} × {n}" for d, n in plan.points)
    lines = ["# SeeDNorm − RMSNorm against model size\n", f"Command: `{command}`\n",
             f"Machine: {provenance(wall_s)}.\n",
             f"Protocol: Llama-style decoder, {p.n_heads} heads, vocab {vocab_size} (byte-level BPE), "
             f"{p.seq_len}-token context, tied embeddings, at each width × layers of {sizes}; "
             f"{p.steps} steps × {p.batch_size} sequences = {p.tokens_per_run:,} tokens per run; AdamW (β 0.9/0.95), "
             f"warmup {p.warmup}, cosine to 10%, weight decay {p.weight_decay} on matrices and SeeDNorm's α, β, global "
             f"gradient clip {p.grad_clip}. Each norm starts from the rates {', '.join(f'{x:g}' for x in plan.lrs)} "
             f"with {plan.seeds} seeds per rate; its grid grows by halving or doubling (at most {plan.extend} rates "
             "per side) until its best rate is inside. Seed k gives every norm and rate the same data order and init "
             "RNG stream. Held-out evaluation: bits per byte in-domain "
             f"({', '.join(IN_DOMAIN)}) and zero-shot ({', '.join(ZERO_SHOT)}).\n"]
    grid, summary_points = [], []
    for point in plan.ordered_points():
        if point.key not in runs or not point.clip:
            continue
        s = _point_summary(plan, point, runs[point.key], vocab_size)
        grid.append((point, runs[point.key], s))
        summary_points.append(s)
    if grid:
        lines += _best_table(plan, grid) + _every_rate_table(plan, grid)
    if plan.clip_off:
        free_key = Point(*plan.clip_off, clip=False).key
        clipped = next((g for g in grid if (g[0].dim, g[0].n_layers) == plan.clip_off), None)
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
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if summary_points:
        plot_size_curve(summary, out / "size_curve.png", gpu)
        lines += ["\n## The curve\n",
                  "Δ bits per byte of each norm at its best rate minus RMSNorm at its best, against the parameters "
                  "outside the embedding, 95% CIs"
                  + (f"; the star: the GPU preset's run ({gpu_summary})" if gpu else
                     "; no GPU run on these axes yet (the `gpu` preset's summary.json was not given or not found)")
                  + ".\n", "![size curve](size_curve.png)"]
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
