"""``report.md``, the PNGs and ``summary.json`` of the MAE study, from each stage's ``result.json`` content.

Reconstruction losses are the masked loss of the pre-training objective (per-patch normalized pixels, hidden
patches only), on the test split under one fixed mask per image; accuracies in percent, as the supervised report
gives them (:mod:`.report`: the same tables, statistics and chance rule). Paired differences are by seed against
the vision baseline with a 95% Student-t interval (``seednorm_experiments.report``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..common import VISION_BASELINE, final_loss
from ..report import markdown_table, paired_diff, plot_bars, plot_curves, summarize
from .evals import Shift
from .mae_study import STAGES, MAEResults, MAERun
from .presets import MAEPreset
from .report import accuracy_percent, accuracy_rows, paired_rows

__all__ = ["write_mae_report"]

Groups = dict[str, list[tuple[MAERun, dict[str, Any]]]]


def _stage_groups(results: MAEResults, stage: str) -> Groups:
    """label → [(run, the stage's record)]; a stage left out after a diverged pre-training is that (diverged)
    pre-training's record, so it counts at chance."""
    groups: Groups = {}
    for run, stages in results:
        groups.setdefault(run.label, []).append((run, stages[stage] or stages["pretrain"]))  # type: ignore[arg-type]
    return groups


def _recon(result: dict[str, Any]) -> float:
    return float("nan") if result["diverged"] else result["final_eval"]["recon"]


def _recon_rows(groups: Groups) -> list[list[str]]:
    rows = []
    for label, runs in groups.items():
        rows.append([label, f"{runs[0][1]['num_params']:,}",
                     summarize([final_loss(r["history"]) for _, r in runs]).format(3),
                     summarize([_recon(r) for _, r in runs]).format(3),
                     f"{sum(r['diverged'] for _, r in runs)}/{len(runs)}",
                     f"{max(max(row['grad_norm'] for row in r['history']) for _, r in runs):.2f}",
                     f"{np.mean([r['tokens_per_s'] for _, r in runs]):,.0f}"])
    return rows


def _recon_diff(groups: Groups, label: str) -> Any:
    return paired_diff({run.seed: _recon(r) for run, r in groups[label]},
                       {run.seed: _recon(r) for run, r in groups[VISION_BASELINE]})


def _recon_plots(out: Path, groups: Groups, title: str) -> list[str]:
    names = ["mae_loss.png", "mae_recon.png"]
    for name, source, key, ylabel in ((names[0], "history", "loss", "train reconstruction loss (EMA 0.9)"),
                                      (names[1], "evals", "recon", "test reconstruction loss")):
        curves, steps = {}, []
        for label, runs in groups.items():
            rows = [r[source] for _, r in runs if r[source]]
            if rows:
                curves[label] = [[row[key] for row in rs] for rs in rows]
                steps = max(steps, [row["step"] for row in max(rows, key=len)], key=len)
        plot_curves(curves, steps, out / name, ylabel=ylabel, title=title, smooth=0.9 if source == "history" else 0,
                    logy=source == "history")
    return names


def _accuracy_section(out: Path, title: str, stage: str, groups: Groups, conditions: list[str],
                      chance: float) -> list[str]:
    header = ["norm", "params", *conditions, "final train loss", "diverged", "max grad norm", "images/s"]
    lines = [f"## {title}", "", markdown_table(header, accuracy_rows(groups, conditions, chance)), ""]
    if VISION_BASELINE in groups and len(groups) > 1:
        lines += [f"Paired difference to {VISION_BASELINE} (same seeds), percentage points, mean [95% CI]:", "",
                  markdown_table(["", *conditions], paired_rows(groups, VISION_BASELINE, conditions, chance)), ""]
    plot_bars({c: {label: [accuracy_percent(r, c, chance) for _, r in runs] for label, runs in groups.items()}
               for c in conditions}, out / f"{stage}_shifts.png", ylabel="accuracy (%)",
              title=f"{title}: final accuracy")
    return [*lines, f"![{stage}_shifts.png]({stage}_shifts.png)", ""]


def _reading(groups: dict[str, Groups], chance: float) -> list[str]:
    """Plain statements computed from the numbers (no interpretation beyond them)."""
    pre = groups["pretrain"]
    means = {label: summarize([_recon(r) for _, r in runs]).mean for label, runs in pre.items()}
    best = min(means, key=means.get)
    lines = [f"- Lowest mean test reconstruction loss: {best} ({means[best]:.3f})."]
    if VISION_BASELINE not in pre or len(next(iter(pre.values()))) < 2:
        return lines
    for label in pre:
        if label == VISION_BASELINE:
            continue
        cells = [f"reconstruction {_recon_diff(pre, label).format(3, ci=True)}"]
        for stage in ("probe", "finetune"):
            diff = paired_diff({run.seed: accuracy_percent(r, "clean", chance) for run, r in groups[stage][label]},
                               {run.seed: accuracy_percent(r, "clean", chance)
                                for run, r in groups[stage][VISION_BASELINE]})
            verdict = "CI excludes 0" if abs(diff.mean) > diff.ci95 else "CI includes 0"
            cells.append(f"{stage} clean {diff.format(1, ci=True)} points ({verdict})")
        lines.append(f"- {label} − {VISION_BASELINE}: " + "; ".join(cells) + ".")
    return lines


def write_mae_report(out: Path, preset: MAEPreset, results: MAEResults, *, shifts: Sequence[Shift],
                     transfer: Sequence[str], command: str, machine: str) -> None:
    """Write ``out/report.md``, ``out/*.png`` and ``out/summary.json``."""
    out.mkdir(parents=True, exist_ok=True)
    conditions = ["clean", *(s.name for s in shifts), *transfer]
    encoder = preset.model.encoder
    chance = 1.0 / encoder.num_classes
    groups = {stage: _stage_groups(results, stage) for stage in STAGES}
    seeds = len(next(iter(groups["pretrain"].values())))
    lines = [
        f"# Vision study: {preset.dataset}, {preset.model.describe()}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}.",
        "",
        f"Setup: {preset.dataset} 80/20 stratified split (fixed), pixels standardized with the training split's "
        f"mean {encoder.pixel_mean} and std {encoder.pixel_std}, patch {encoder.patch_size}, "
        f"{encoder.attn_heads} attention heads, mean pooling, drop path {encoder.drop_path}. "
        f"Pre-training: {preset.model.keep} of {encoder.num_patches} patches visible (mask ratio "
        f"{preset.model.mask_ratio}), target the per-patch normalized pixels of the hidden ones, "
        f"{preset.pretrain_steps} steps at lr {preset.pretrain_lr}. Linear probe: frozen encoder, BatchNorm "
        f"without affine, one Linear, {preset.probe_steps} steps at lr {preset.probe_lr}, no weight decay. "
        f"Fine-tuning: the whole ViT, {preset.finetune_steps} steps at lr {preset.finetune_lr}. Every stage: "
        f"AdamW, warmup {preset.warmup}, cosine, weight decay {preset.weight_decay} (matrices and SeeDNorm α, β; "
        f"none in the probe), no gradient clipping, batch {preset.batch_size}, random translation "
        f"±{preset.max_shift} px. Every norm of encoder and decoder is the row's; SeeDNorm: "
        f"{preset.seednorm_heads} heads, dynamic dropout = drop path, dot scale {preset.dot_scale!r}. Shifts "
        f"are applied to the test split; " + (f"{', '.join(transfer)} is zero-shot transfer. " if transfer else "")
        + f"Mean ± std over {seeds} seeds; diverged runs count at chance ({100 * chance:.0f}%).",
        "",
        "## Pre-training: masked reconstruction",
        "",
        markdown_table(["norm", "params", "final train loss", "test reconstruction loss", "diverged",
                        "max grad norm", "images/s"], _recon_rows(groups["pretrain"])),
        "",
    ]
    if VISION_BASELINE in groups["pretrain"] and len(groups["pretrain"]) > 1 and seeds > 1:
        rows = [[f"{label} − {VISION_BASELINE}", _recon_diff(groups["pretrain"], label).format(3, ci=True)]
                for label in groups["pretrain"] if label != VISION_BASELINE]
        lines += [f"Paired difference of the test reconstruction loss to {VISION_BASELINE} (same seeds; lower is "
                  "better), mean [95% CI]:", "", markdown_table(["", "test reconstruction loss"], rows), ""]
    lines += [f"![{name}]({name})" for name in _recon_plots(out, groups["pretrain"], preset.model.describe())]
    lines += [""]
    lines += _accuracy_section(out, "Linear probe (frozen encoder)", "probe", groups["probe"], conditions, chance)
    lines += _accuracy_section(out, "Fine-tuning", "finetune", groups["finetune"], conditions, chance)
    lines += ["## Reading", "", *_reading(groups, chance), ""]
    (out / "report.md").write_text("\n".join(lines))
    summary = {"preset": asdict(preset), "command": command, "machine": machine, "runs": [
        {"label": run.label, "seed": run.seed, **{stage: None if r is None else {
            "diverged": r["diverged"], "final_eval": r["final_eval"], "final_train_loss": final_loss(r["history"]),
            "num_params": r["num_params"], "wall_s": r["wall_s"]} for stage, r in stages.items()}}
        for run, stages in results]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
