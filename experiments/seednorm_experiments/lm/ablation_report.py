"""``report.md``, ``summary.json`` and PNG plots of ``seednorm lm --ablation`` (see :mod:`.ablation`).

Sections: the protocol; the learning-rate sweep (``sweep.png``: final loss against the rate, one line
per norm); the main norms at their own best rates; the SeeDNorm knob table; the gap to RMSNorm against
training tokens (``gap_vs_tokens.png``, ``gap_curve.png``) and width; instrumentation (``gradnorm_<norm>.png``:
per-group gradient norms; ``gn_beta.png``: β's gradient norm per knob variant; ``clipped.png``: clipped
steps). Differences are paired by seed (same init RNG and data order) with 95% t-intervals.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from seednorm.modules import DYNAMIC_PARAMETERS

from ..common import BASELINE
from ..records import provenance
from ..report import Stat, interval_note, markdown_table, paired_diff, plot_bars, plot_curves, plot_lines, summarize
from .ablation import AblationPlan, primary_metric, zero_shot_bpb, zero_shot_cloze
from .data import EVAL_SETS
from .recipes import get_variant
from .study import Run
from .sweep import best_lrs, plot_sweep, sweep_table

__all__ = ["METRICS", "write_ablation_report"]

GROUPS = (*DYNAMIC_PARAMETERS, "gamma", "matrix", "other")
"""The gradient-norm groups the harness logs (``gn/<group>``): SeeDNorm's α, β, norm gains, matrices, the rest."""


METRICS: dict[str, Callable[[Run], float]] = {
    "in-domain bpb": primary_metric,
    "zero-shot bpb": zero_shot_bpb,
    "train loss": lambda r: r.final_loss,
    "zero-shot cloze": zero_shot_cloze,
}


def _ok(runs: Sequence[Run], variant: str) -> list[Run]:
    return [r for r in runs if r.norm == variant and not r.diverged]


def _diff(runs: Sequence[Run], variant: str, metric: Callable[[Run], float]) -> Stat | None:
    ref = {r.seed: metric(r) for r in _ok(runs, BASELINE)}
    mine = {r.seed: metric(r) for r in _ok(runs, variant)}
    return paired_diff(mine, ref) if set(mine) & set(ref) else None


def _fmt(stat: Stat | None) -> str:
    return "–" if stat is None else stat.format(3, ci=True)


def _mean_of(runs: Sequence[Run], key: str) -> float:
    vals = [statistics.fmean(h.get(key, math.nan) for h in r.result["history"]) for r in runs]
    return statistics.fmean(vals) if vals else math.nan


def _fmt_gn(value: float) -> str:
    """A mean gradient norm, or "–" for a variant without that parameter."""
    return f"{value:.3f}" if math.isfinite(value) else "–"


def _count(runs: Sequence[Run], variant: str) -> str:
    all_ = [r for r in runs if r.norm == variant]
    return f"{len(_ok(runs, variant))}/{len(all_)}"


def _protocol(plan: AblationPlan, lrs: dict[str, float]) -> list[str]:
    p, wide_p = plan.preset, plan.phase_preset("wide")
    longs = [plan.phase_preset(ph) for ph in plan.phases if ph.startswith("long")]
    return [
        "## Protocol\n",
        f"Model: Llama-style decoder, {p.n_layers} layers, width {p.dim}, {p.n_heads} heads, vocab "
        f"{p.vocab_size} (byte-level BPE), {p.seq_len}-token context, tied embeddings. Training: "
        f"{p.batch_size} × {p.seq_len} tokens per step, AdamW (β 0.9/0.95), linear warmup "
        f"{min(p.warmup, p.steps // 5)} steps then cosine to 10%, weight decay {p.weight_decay} on matrices (and on "
        f"SeeDNorm's α, β unless a knob says otherwise), global gradient clip {p.grad_clip}; data: modern "
        "Shakespeare plays + Python standard-library code; evaluation: "
        f"{EVAL_SETS}, 4-way cloze accuracy.\n",
        "1. **Sweep** — every main norm at each learning rate "
        f"{', '.join(f'{x:g}' for x in plan.lrs)} (seed 0, {p.steps} steps = {p.tokens_per_run:,} tokens); "
        "each norm's rate is the one with the lowest final training loss (mean of the last 10% of steps)"
        + (f": {', '.join(f'{n} {lr:g}' for n, lr in lrs.items())}." if lrs else ".") + "\n"
        f"2. **Base** — each main norm at its own best rate, every SeeDNorm knob variant at SeeDNorm's best "
        f"rate, {plan.seeds} seeds each ({p.steps} steps, {p.tokens_per_run:,} tokens).\n"
        f"3. **Long** — RMSNorm, SeeDNorm and the {plan.carry} knob variant(s) with the best base in-domain "
        "bits/byte, " + " and ".join(f"{q.steps} steps ({q.tokens_per_run:,} tokens, {q.steps // p.steps}× base)"
                                    for q in longs) + ", same rates (seeds outer: a phase cut short stays paired).\n"
        f"4. **Wide** — the same configurations at width {wide_p.dim} ({p.steps} steps), same rates.\n",
        "Seed k gives every configuration the same data order and the same RNG stream for the init, so "
        "differences to RMSNorm are paired by seed: mean [95% t-interval] over seeds. DyT uses its published "
        "language-model recipe (learnable embedding scale initialised at √d; α0 = 0.8 for attention-input, "
        "0.2 for FFN-input and final norms — the smallest-model row of the DyT paper's LLaMA table, "
        "arXiv 2503.10622), not the plain α0 = 0.5.\n",
    ]


def _sweep_section(sweep: Sequence[Run], out: Path) -> list[str]:
    lrs, table = sweep_table(sweep)
    best = best_lrs(sweep)
    plot_sweep(sweep, out / "sweep.png", title="Learning-rate sweep (seed 0): final train loss")
    rows = [[f"{lr:g}"] + [("diverged" if math.isnan(table[n][i]) else f"{table[n][i]:.3f}")
                           + (" **best**" if best.get(n) == lr else "") for n in table] for i, lr in enumerate(lrs)]
    return ["\n## Learning-rate sweep\n", "Final training loss (nats/token, last 10% of steps), seed 0.\n",
            markdown_table(["lr"] + list(table), rows), "\n![sweep](sweep.png)\n"]


def _main_section(base: Sequence[Run], norms: Sequence[str]) -> list[str]:
    rows = []
    for v in norms:
        ok = _ok(base, v)
        if not ok:
            continue
        cells = [str(summarize([m(r) for r in ok])) for m in METRICS.values()]
        diffs = [_fmt(_diff(base, v, m)) if v != BASELINE else "–" for m in list(METRICS.values())[:2]]
        rows.append([f"{v} ({_count(base, v)}), lr {ok[0].lr:g}"] + cells + diffs)
    return ["\n## The main norms, each at its own best learning rate\n",
            "Mean ± std over seeds; the last two columns are the paired difference to RMSNorm (negative = "
            "better than RMSNorm).\n",
            markdown_table(["norm (ok/total), lr"] + list(METRICS) + ["Δ in-domain bpb", "Δ zero-shot bpb"], rows)]


def _knob_section(base: Sequence[Run], knobs: Sequence[str]) -> list[str]:
    rows = []
    for v in ("seednorm", *knobs):
        ok = _ok(base, v)
        if not ok:
            continue
        cells = [_fmt(_diff(base, v, m)) for m in METRICS.values()]
        rows.append([v, get_variant(v).note, _count(base, v)] + cells
                    + [f"{_mean_of(ok, 'clipped'):.2f}", _fmt_gn(_mean_of(ok, 'gn/beta'))])
    ref = _ok(base, BASELINE)
    if ref:
        rows.append([BASELINE, "baseline", _count(base, BASELINE)] + ["0"] * len(METRICS)
                    + [f"{_mean_of(ref, 'clipped'):.2f}", "–"])
    return ["\n## SeeDNorm knobs (base length), difference to RMSNorm paired by seed\n",
            "Mean [95% CI] of SeeDNorm variant − RMSNorm (negative bpb / loss = SeeDNorm better; positive cloze "
            "= better). Clipped: fraction of steps where the global clip fired; ‖∇β‖: mean over steps.\n",
            markdown_table(["variant", "setting", "ok/total"] + [f"Δ {m}" for m in METRICS]
                           + ["clipped", "‖∇β‖"], rows)]


def _horizon_section(runs: dict[str, list[Run]], plan: AblationPlan, out: Path) -> list[str]:
    later = plan.phases[2:]
    configs = list(dict.fromkeys(r.norm for ph in later for r in runs[ph] if r.norm != BASELINE))
    if not configs:
        return []
    p, wide_p = plan.preset, plan.phase_preset("wide")
    lengths = ["base"] + sorted((ph for ph in later if ph.startswith("long")), key=lambda ph: int(ph[4:-1]))
    cols = [(ph, f"{ph}: width {p.dim}, {plan.phase_preset(ph).tokens_per_run / 1e3:.0f}k tokens")
            for ph in lengths] + [("wide", f"wide: width {wide_p.dim}, {p.tokens_per_run / 1e3:.0f}k tokens")]
    lines = ["\n## Does the gap close with more tokens or more width?\n"]
    for name, metric in list(METRICS.items())[:3]:
        rows = [[c] + [f"{_fmt(_diff(runs[ph], c, metric))} (n={len(_ok(runs[ph], c))})" for ph, _ in cols]
                for c in configs]
        lines += [f"\n{name}, variant − RMSNorm, mean [95% CI]:\n",
                  markdown_table(["variant"] + [label for _, label in cols], rows)]
    done = [ph for ph in lengths if _ok(runs[ph], BASELINE)]
    x = [plan.phase_preset(ph).tokens_per_run for ph in done]
    ys, err, counts = {}, {}, []
    for c in configs:
        stats = [_diff(runs[ph], c, primary_metric) for ph in done]
        if len(done) > 1 and all(stats):
            ys[c] = [s.mean for s in stats]
            err[c] = [0.0 if math.isnan(s.ci95) else s.ci95 for s in stats]
            counts += [s.n for s in stats]
    if ys:
        plot_lines(x, ys, out / "gap_vs_tokens.png", xlabel="training tokens", logx=True,
                   ylabel="in-domain bits/byte − RMSNorm", yerr=err,
                   title=f"Gap to RMSNorm vs training tokens (width {p.dim}; {interval_note(counts, 'paired seeds')})")
        lines.append("\n![gap vs tokens](gap_vs_tokens.png)\n")
    curves, longest = {}, done[-1]
    long_p = plan.phase_preset(longest)
    ref = {r.seed: [h["loss"] for h in r.result["history"]] for r in _ok(runs[longest], BASELINE)}
    for c in configs:
        diffs = [[a - b for a, b in zip(_ema([h["loss"] for h in r.result["history"]]), _ema(ref[r.seed]),
                                        strict=False)] for r in _ok(runs[longest], c) if r.seed in ref]
        if diffs:
            curves[c] = diffs
    if curves and longest != "base":
        plot_curves(curves, [s * long_p.batch_size * long_p.seq_len for s in range(long_p.steps)],
                    out / "gap_curve.png", xlabel="training tokens", ylabel="train loss − RMSNorm (EMA 0.98)",
                    title=f"Gap along the {longest} runs (mean over seeds, band min..max)")
        lines.append("![gap along training](gap_curve.png)\n")
    return lines


def _ema(y: Sequence[float], a: float = 0.98) -> list[float]:
    out, acc = [], y[0]
    for v in y:
        acc = a * acc + (1 - a) * v
        out.append(acc)
    return out


def _instrumentation(base: Sequence[Run], norms: Sequence[str], knobs: Sequence[str], steps: int,
                     out: Path) -> list[str]:
    lines = ["\n## Instrumentation: gradient norms per parameter group and clipping\n",
             "Per-step gradient norm of each parameter group before clipping (mean over seeds, band min..max, "
             "EMA 0.9, log scale): α, β = SeeDNorm's dynamic parameters, γ = norm gains, matrix = linear and "
             "embedding weights, other = DyT's α, the embedding scale, biases.\n"]
    for v in norms:
        ok = _ok(base, v)
        if not ok:
            continue
        curves = {g: [[h[f"gn/{g}"] for h in r.result["history"]] for r in ok]
                  for g in GROUPS if f"gn/{g}" in ok[0].result["history"][0]}
        plot_curves(curves, list(range(steps)), out / f"gradnorm_{v}.png", ylabel="gradient norm", smooth=0.9,
                    logy=True, title=f"Gradient norm per parameter group — {v}")
        lines.append(f"![gradient norms {v}](gradnorm_{v}.png)\n")
    beta = {v: [[h["gn/beta"] for h in r.result["history"]] for r in _ok(base, v)] for v in ("seednorm", *knobs)
            if _ok(base, v) and "gn/beta" in _ok(base, v)[0].result["history"][0]}  # a variant without β has none
    if beta:
        plot_curves(beta, list(range(steps)), out / "gn_beta.png", ylabel="‖∇β‖", smooth=0.9, logy=True,
                    title="β's gradient norm per SeeDNorm variant")
        lines.append("![beta gradient norm](gn_beta.png)\n")
    clip = {"clipped steps": {v: [r.result["clip_fraction"] for r in _ok(base, v)]
                              for v in (*norms, *knobs) if len(_ok(base, v)) > 1}}
    if clip["clipped steps"]:
        plot_bars(clip, out / "clipped.png", ylabel="fraction of steps clipped (global clip)",
                  title="Clipped steps per configuration")
        lines.append("![clipped steps](clipped.png)\n")
    return lines


def _summary(runs: dict[str, list[Run]]) -> dict:
    return {phase: [{"variant": r.norm, "seed": r.seed, "lr": r.lr, "diverged": r.diverged,
                     "final_loss": r.final_loss, "clip_fraction": r.result["clip_fraction"],
                     "tokens_per_s": r.result["tokens_per_s"], "num_params": r.result["num_params"],
                     "final_eval": r.result["final_eval"]} for r in rs] for phase, rs in runs.items()}


def write_ablation_report(out: Path, plan: AblationPlan, runs: dict[str, list[Run]], *, command: str,
                          wall_s: float | None = None) -> Path:
    """Write ``out/report.md``, ``out/summary.json`` (every finished run, without per-step history) and
    the PNGs from the finished runs of each phase; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    n_sweep = len(plan.lrs) * len(plan.norms)
    lrs = best_lrs(runs["sweep"]) if len(runs["sweep"]) == n_sweep else {}
    lines = ["# SeeDNorm ablation and fair comparison\n", f"Command: `{command}`\n",
             f"Machine: {provenance(wall_s)}.\n",
             "Finished runs per phase: " + ", ".join(f"{p} {len(rs)}" for p, rs in runs.items()) + ".\n"]
    lines += _protocol(plan, lrs)
    if runs["sweep"]:
        lines += _sweep_section(runs["sweep"], out)
    if runs["base"]:
        lines += _main_section(runs["base"], plan.norms) + _knob_section(runs["base"], plan.knobs)
        lines += _horizon_section(runs, plan, out)
        lines += _instrumentation(runs["base"], plan.norms, plan.knobs, plan.preset.steps, out)
    (out / "summary.json").write_text(json.dumps(_summary(runs), indent=1))
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
