"""``report.md``, the PNGs and ``summary.json`` of the vision study, from the runs' ``result.json`` contents.

Accuracies are in percent, mean ± sample std over seeds; paired differences (same seed, same data order) carry a
95% Student-t interval. A diverged run (non-finite loss) has no final evaluation and is scored at chance level.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..common import VISION_BASELINE, final_loss
from ..report import markdown_table, paired_diff, plot_bars, plot_curves, plot_lines, summarize
from .convnext import ConvNeXtConfig
from .evals import Shift
from .model import ViTConfig
from .presets import Preset
from .study import Results, RunSpec

__all__ = ["accuracy_percent", "accuracy_rows", "paired_rows", "write_report"]


def _architecture(model: ViTConfig | ConvNeXtConfig) -> str:
    if isinstance(model, ConvNeXtConfig):
        return (f"{model.stem}×{model.stem} stem, {model.kernel_size}×{model.kernel_size} depthwise convolutions, "
                f"layer scale {model.layer_scale:g}, stem and downsampling norms over channels (channels-first)")
    return f"patch {model.patch_size}, {model.attn_heads} attention heads, {model.pool} pooling"


def accuracy_percent(result: dict[str, Any], condition: str, chance: float) -> float:
    """Final accuracy (%) under ``condition``; chance for a diverged run."""
    return 100 * (chance if result["diverged"] else result["final_eval"][condition])


def _by_label(results: Results, grid: str) -> dict[str, list[tuple[RunSpec, dict[str, Any]]]]:
    groups: dict[str, list[tuple[RunSpec, dict[str, Any]]]] = {}
    for spec, result in results:
        if spec.grid == grid:
            groups.setdefault(spec.label, []).append((spec, result))
    return groups


def accuracy_rows(groups: dict[str, list], conditions: list[str], chance: float) -> list[list[str]]:
    rows = []
    for label, runs in groups.items():
        accs = [str(summarize([accuracy_percent(r, c, chance) for _, r in runs]).format(1)) for c in conditions]
        rows.append([
            label, f"{runs[0][1]['num_params']:,}", *accs,
            summarize([final_loss(r["history"]) for _, r in runs]).format(3),
            f"{sum(r['diverged'] for _, r in runs)}/{len(runs)}",
            f"{max(max(row['grad_norm'] for row in r['history']) for _, r in runs):.2f}",
            f"{np.mean([r['tokens_per_s'] for _, r in runs]):,.0f}",
        ])
    return rows


def paired_rows(groups: dict[str, list], baseline: str, conditions: list[str], chance: float) -> list[list[str]]:
    base = {spec.seed: r for spec, r in groups[baseline]}
    rows = []
    for label, runs in groups.items():
        if label == baseline:
            continue
        cells = []
        for c in conditions:
            diff = paired_diff({s.seed: accuracy_percent(r, c, chance) for s, r in runs},
                               {seed: accuracy_percent(r, c, chance) for seed, r in base.items()})
            cells.append(diff.format(1, ci=True))
        rows.append([f"{label} − {baseline}", *cells])
    return rows


def _curves(runs: list, key: str, source: str) -> tuple[list[list[float]], list[float]]:
    """Per-seed curves of ``key`` from ``history`` or ``evals`` rows, and their steps."""
    rows = [r[source] for _, r in runs if r[source]]
    longest = max(rows, key=len, default=[])
    return [[row[key] for row in rs] for rs in rows], [row["step"] for row in longest]


def _plots(out: Path, groups: dict[str, list], prefix: str, title: str) -> list[str]:
    """Training-loss and test-accuracy curves per label (runs without any rows are left out)."""
    names = [f"{prefix}loss.png", f"{prefix}accuracy.png"]
    for name, key, source, scale, ylabel in ((names[0], "loss", "history", 1, "train loss (EMA 0.9)"),
                                             (names[1], "clean", "evals", 100, "test accuracy (%)")):
        curves, steps = {}, []
        for label, runs in groups.items():
            runs_curves, runs_steps = _curves(runs, key, source)
            if runs_curves:
                curves[label] = [[scale * v for v in c] for c in runs_curves]
                steps = max(steps, runs_steps, key=len)
        plot_curves(curves, steps, out / name, ylabel=ylabel, title=title, smooth=0.9 if source == "history" else 0,
                    logy=source == "history")
    return names


def write_report(out: Path, preset: Preset, results: Results, *, shifts: Sequence[Shift], transfer: Sequence[str],
                 command: str, machine: str) -> None:
    """Write ``out/report.md``, ``out/*.png`` and ``out/summary.json``."""
    out.mkdir(parents=True, exist_ok=True)
    conditions = ["clean", *(s.name for s in shifts), *transfer]
    chance = 1.0 / preset.model.num_classes
    header = ["norm", "params", *conditions, "final train loss", "diverged", "max grad norm", "images/s"]
    main = _by_label(results, "main")
    seeds = len(next(iter(main.values())))
    clipping = "no gradient clipping" if preset.grad_clip is None else f"gradient clipping at {preset.grad_clip}"
    lines = [
        f"# Vision study: {preset.dataset}, {preset.model.describe()}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}.",
        "",
        f"Setup: {preset.dataset} 80/20 stratified split (fixed), pixels standardized with the training split's "
        f"mean {preset.model.pixel_mean} and std {preset.model.pixel_std}, {_architecture(preset.model)}, "
        f"drop path {preset.model.drop_path}; "
        f"AdamW lr {preset.lr}, warmup {preset.warmup}, cosine, weight decay {preset.weight_decay} (matrices and "
        f"SeeDNorm α, β), {clipping}, batch {preset.batch_size}, {preset.steps} steps, random "
        f"translation ±{preset.max_shift} px. SeeDNorm: {preset.seednorm_heads} heads, dynamic dropout = drop "
        f"path, dot scale {preset.dot_scale!r}. Shifts are applied to the test split; "
        + (f"{', '.join(transfer)} is zero-shot transfer. " if transfer else "")
        + f"Accuracy in %, mean ± std over {seeds} seeds; diverged runs count at chance ({100 * chance:.0f}%). "
        "`max grad norm`: largest global gradient norm of any step of any seed (before clipping, if any).",
        "",
        "## Accuracy in distribution and under shift",
        "",
        markdown_table(header, accuracy_rows(main, conditions, chance)),
        "",
    ]
    if VISION_BASELINE in main and len(main) > 1:
        lines += [f"Paired difference to {VISION_BASELINE} (same seeds), percentage points, mean [95% CI]:", "",
                  markdown_table(["", *conditions], paired_rows(main, VISION_BASELINE, conditions, chance)), ""]
    figures = _plots(out, main, "", f"{preset.dataset}, d={preset.model.dim}")
    plot_bars({c: {label: [accuracy_percent(r, c, chance) for _, r in runs] for label, runs in main.items()}
               for c in conditions}, out / "shifts.png", ylabel="accuracy (%)", title="final accuracy")
    figures.append("shifts.png")
    lines += [f"![{name}]({name})" for name in figures] + [""]

    heads = _by_label(results, "heads")
    if heads:
        lines += _head_section(out, preset, heads, conditions, chance)
    lines += ["## Reading", "", *_reading(main, heads, chance), ""]
    (out / "report.md").write_text("\n".join(lines))
    summary = {"preset": asdict(preset), "command": command, "machine": machine, "runs": [
        {"grid": s.grid, "label": s.label, "seed": s.seed, "dim": s.model.dim, "diverged": r["diverged"],
         "final_eval": r["final_eval"], "final_train_loss": final_loss(r["history"]), "num_params": r["num_params"],
         "wall_s": r["wall_s"]} for s, r in results]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


def _head_section(out: Path, preset: Preset, heads: dict[str, list], conditions: list[str],
                  chance: float) -> list[str]:
    seed_runs = {label: runs for label, runs in heads.items() if label.startswith("seednorm")}
    counts = [runs[0][0].model.norm_kwargs["num_heads"] for runs in seed_runs.values()]
    stats = [summarize([accuracy_percent(r, "clean", chance) for _, r in runs]) for runs in seed_runs.values()]
    ys = {"SeeDNorm": [s.mean for s in stats]}
    err = {"SeeDNorm": [0.0 if np.isnan(s.std) else s.std for s in stats]}
    if VISION_BASELINE in heads:
        ref = summarize([accuracy_percent(r, "clean", chance) for _, r in heads[VISION_BASELINE]])
        ys[f"{VISION_BASELINE} (reference)"] = [ref.mean] * len(counts)
    plot_lines(counts, ys, out / "heads.png", xlabel="SeeDNorm heads", ylabel="test accuracy (%) ± std",
               title=f"head-count ablation, d={preset.ablation_dim}, lr {preset.ablation_lr}", logx=True, yerr=err)
    names = ["heads.png", *_plots(out, heads, "heads_", f"d={preset.ablation_dim}, lr {preset.ablation_lr}")]
    header = ["norm", "params", *conditions, "final train loss", "diverged", "max grad norm", "images/s"]
    return [
        f"## SeeDNorm head-count ablation (d={preset.ablation_dim}, depth {preset.ablation_depth}, "
        f"lr {preset.ablation_lr}, {preset.ablation_steps} steps)",
        "",
        f"The main recipe at width {preset.ablation_dim}, depth {preset.ablation_depth}, a higher learning rate "
        f"and dot scale {preset.ablation_dot_scale!r}: with a scale of 1 the variance of s_h = x_h·β_hᵀ grows "
        f"with the D/heads channels of a head (spec §3), so one head ({preset.ablation_dim} channels) should be "
        f"the least stable. {VISION_BASELINE} at the same width and learning rate is the reference.",
        "",
        markdown_table(header, accuracy_rows(heads, conditions, chance)),
        "",
        *[f"![{name}]({name})" for name in names],
        "",
    ]


def _reading(main: dict[str, list], heads: dict[str, list], chance: float) -> list[str]:
    """Plain statements computed from the numbers (no interpretation beyond them)."""
    means = {label: summarize([accuracy_percent(r, "clean", chance) for _, r in runs]).mean
             for label, runs in main.items()}
    best = max(means, key=means.get)
    lines = [f"- Highest mean clean accuracy: {best} ({means[best]:.1f}%)."]
    seed_label = next((label for label in main if label.startswith("seednorm")), None)
    if seed_label and VISION_BASELINE in main and len(main[seed_label]) > 1:
        diff = paired_diff({s.seed: accuracy_percent(r, "clean", chance) for s, r in main[seed_label]},
                           {s.seed: accuracy_percent(r, "clean", chance) for s, r in main[VISION_BASELINE]})
        verdict = ("excludes 0" if abs(diff.mean) > diff.ci95 else "includes 0: no significant difference")
        lines.append(f"- {seed_label} − {VISION_BASELINE}, clean: {diff.format(1, ci=True)} points; "
                     f"the 95% CI {verdict}.")
    seed_heads = {label: runs for label, runs in heads.items() if label.startswith("seednorm")}
    if seed_heads:
        acc = {label: summarize([accuracy_percent(r, "clean", chance) for _, r in runs])
               for label, runs in seed_heads.items()}
        top = max(acc, key=lambda k: acc[k].mean)
        div = {label: sum(r["diverged"] for _, r in runs) for label, runs in seed_heads.items()}
        lines.append(f"- Head ablation: best {top} ({acc[top].format(1)}%); diverged runs per setting: "
                     + ", ".join(f"{k} {v}/{len(seed_heads[k])}" for k, v in div.items()) + ".")
    return lines
