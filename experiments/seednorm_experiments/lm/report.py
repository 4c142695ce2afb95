"""``report.md`` and PNG plots of a language-model study from its runs (see :mod:`.study`).

Tables: per norm, mean ± std over seeds of the final training loss, bits per byte on every evaluation
domain and cloze accuracy; the paired difference to RMSNorm (same seed = same init RNG and data order)
with its 95% confidence interval; training throughput and clipping. Plots: ``loss.png`` (training loss,
mean over seeds, band = min..max), ``bpb.png``, ``bpb_vs_rmsnorm.png``, ``cloze.png``, ``grad_norm.png``, and for an LR
sweep ``lr_sweep.png`` (fraction of runs that diverged) and ``lr_sweep_loss.png``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from ..common import BASELINE
from ..records import provenance
from ..report import markdown_table, paired_diff, plot_bars, plot_curves, plot_lines, step_costs, summarize
from .ablation import zero_shot_cloze
from .data import EVAL_DOMAINS, EVAL_SETS, domain_label
from .olmo import MOE_Z_LOSS
from .presets import Preset
from .study import Run, model_config

__all__ = ["write_report"]


def _by_norm(runs: Sequence[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.norm, []).append(r)
    return out


def _metric(run: Run, key: str) -> float:
    return run.final_loss if key == "loss" else run.result["final_eval"][key]


def _results_tables(groups: dict[str, list[Run]]) -> list[str]:
    bpb_keys = ["loss"] + [f"bpb/{d}" for d in EVAL_DOMAINS]
    cloze_keys = [f"cloze/{d}" for d in EVAL_DOMAINS]
    rows_bpb, rows_cloze = [], []
    for norm, runs in groups.items():
        ok = [r for r in runs if not r.diverged]
        tag = f"{norm} ({len(ok)}/{len(runs)})"
        cell = (lambda k, ok=ok: str(summarize([_metric(r, k) for r in ok])) if ok else "diverged")  # noqa: E731
        rows_bpb.append([tag] + [cell(k) for k in bpb_keys])
        rows_cloze.append([tag] + [cell(k) for k in cloze_keys])
    return [
        "### Final training loss (nats/token, last 10% of steps) and bits per byte (lower is better)\n",
        markdown_table(["norm (runs ok/total)", "train loss"] + [domain_label(d) for d in EVAL_DOMAINS], rows_bpb),
        "\n### Cloze accuracy, 4 choices (chance 0.25; higher is better)\n",
        markdown_table(["norm (runs ok/total)"] + [domain_label(d) for d in EVAL_DOMAINS], rows_cloze),
    ]


def _diff_table(groups: dict[str, list[Run]]) -> list[str]:
    if BASELINE not in groups:
        return []
    base = {r.seed: r for r in groups[BASELINE] if not r.diverged}
    keys = ["loss"] + [f"bpb/{d}" for d in EVAL_DOMAINS] + ["cloze/zero-shot mean"]

    def value(run: Run, key: str) -> float:
        if key == "cloze/zero-shot mean":
            return zero_shot_cloze(run)
        return _metric(run, key)

    rows = []
    for norm, runs in groups.items():
        ok = {r.seed: r for r in runs if not r.diverged and r.seed in base}
        if norm == BASELINE or not ok:
            continue
        cells = []
        for k in keys:
            d = paired_diff({s: value(r, k) for s, r in ok.items()}, {s: value(base[s], k) for s in ok})
            cells.append(d.format(3, ci=True))
        rows.append([f"{norm} (n={len(ok)})"] + cells)
    header = ["norm − RMSNorm", "train loss"] + [f"bpb {d}" for d in EVAL_DOMAINS] + ["cloze, zero-shot mean"]
    return ["\n### Difference to RMSNorm, paired by seed: mean [95% CI] (negative loss/bpb = better than "
            "RMSNorm; positive cloze = better)\n", markdown_table(header, rows)]


def _routing_table(groups: dict[str, list[Run]]) -> list[str]:
    rows = [[norm] + [str(summarize([r.result["final_eval"][k] for r in runs if not r.diverged]))
                      for k in ("moe/balance", "moe/max_load")] for norm, runs in groups.items()
            if any(not r.diverged for r in runs)]
    return ["\n### Expert routing at the end of training\n",
            "On a fixed batch (training batch 0 of seed 0), mean ± std over seeds, averaged over the blocks: the "
            "load-balancing loss E·Σ f_e·P_e (1: balanced) and E × the busiest expert's share of the token "
            "assignments (1: balanced, E/K: it takes every token).\n",
            markdown_table(["norm", "load-balancing loss", "max load"], rows)]


def _throughput_table(groups: dict[str, list[Run]], bench: dict[str, list[float]] | None) -> list[str]:
    costs = step_costs(bench, BASELINE) if bench and BASELINE in bench else {}
    rounds = len(bench[BASELINE]) if costs else 0
    rows = []
    for norm, runs in groups.items():
        speeds = [r.result["tokens_per_s"] for r in runs]
        clip = statistics.fmean(r.result["clip_fraction"] for r in runs)
        row = [norm, f"{statistics.median(speeds):,.0f} ({min(speeds):,.0f}–{max(speeds):,.0f})", f"{clip:.2f}"]
        if bench and norm in bench:
            row.append(f"{statistics.median(bench[norm]):,.0f} ({max(bench[norm]):,.0f})")
            if costs:
                ratios = costs[norm]
                quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
                row.append(f"{statistics.median(ratios):.3f} ({quartiles[0]:.3f}–{quartiles[2]:.3f})")
            else:
                row.append("–")
        else:
            row += ["–", "–"]
        rows.append(row)
    return ["\n### Throughput and clipping\n",
            "Training tokens/s: each run's median over its steps, then the median (min–max) over runs; the "
            "runs ran one after another, so load from other jobs, if any, hits them unevenly. Clipped steps: "
            "fraction of steps whose gradient norm exceeded the clip, mean over runs. The round-robin benchmark "
            f"times the study's own training step (optimizer, clipping, schedule) for every norm in turn, {rounds} "
            "rounds of 2 steps after 3 warm-up steps: tokens/s of the median (best) round. Step cost = this norm's "
            "time ÷ RMSNorm's in the same round (above 1: slower), median (quartiles) over rounds: each round times "
            "the norms back to back, so a change in the machine's speed cancels in it.\n",
            markdown_table(["norm", "training tokens/s", "clipped steps", "benchmark tokens/s",
                            "step cost vs RMSNorm"], rows)]


def _sweep_section(sweep: Sequence[Run], out: Path) -> list[str]:
    lrs = sorted({r.lr for r in sweep})
    groups = _by_norm(sweep)
    frac = {n: [statistics.fmean(r.diverged for r in rs if r.lr == lr) for lr in lrs] for n, rs in groups.items()}
    loss = {n: [statistics.fmean([r.final_loss for r in rs if r.lr == lr and not r.diverged] or [math.nan])
                for lr in lrs] for n, rs in groups.items()}
    plot_lines(lrs, frac, out / "lr_sweep.png", xlabel="peak learning rate", ylabel="fraction of runs diverged",
               title="Stability: runs whose loss went non-finite or above ln(V)+1", logx=True)
    plot_lines(lrs, loss, out / "lr_sweep_loss.png", xlabel="peak learning rate",
               ylabel="final train loss (non-diverged runs)", title="Learning-rate sweep", logx=True)
    rows = [[f"{lr:g}"] + [f"{frac[n][i]:.2f} / {loss[n][i]:.3f}" for n in groups] for i, lr in enumerate(lrs)]
    return ["\n## Learning-rate sweep\n",
            "Cells: fraction of seeds diverged / mean final train loss of the others.\n",
            markdown_table(["lr"] + list(groups), rows),
            "\n![fraction diverged](lr_sweep.png)\n\n![final loss](lr_sweep_loss.png)"]


def write_report(out: Path, preset: Preset, runs: Sequence[Run], *, command: str,
                 throughput: dict[str, list[float]] | None = None, sweep: Sequence[Run] = (),
                 wall_s: float | None = None, moe_experts: int = 0, moe_top_k: int = 2, arch: str = "llama") -> Path:
    """Write ``out/report.md`` and its PNGs; returns the report's path. ``moe_experts`` > 0: the runs trained the
    mixture-of-experts model (top ``moe_top_k``); ``arch="olmo2"``: OLMo-core's OLMo2 (:mod:`.olmo`)."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Language-model study — `{preset.name}` preset\n",
             f"Command: `{command}`\n",
             f"Machine: {provenance(wall_s)}.\n"]
    if runs:
        groups = _by_norm(runs)
        seeds = sorted({r.seed for r in runs})
        params = {n: rs[0].result["num_params"] for n, rs in groups.items()}
        moe = model_config(preset, preset.vocab_size, BASELINE, moe_experts=moe_experts, moe_top_k=moe_top_k)
        if moe.moe:
            inactive = moe.inactive_params()
            if arch == "olmo2":
                model = (f"OLMo-core's OLMoE layout: reordered-norm MoE blocks (the norms on the attention and "
                         f"expert outputs; QK-norm over the full width; SeeDNorm by seednorm.integrations.olmo_core."
                         f"convert_config) with OLMo-core's dropless mixture of {moe_experts} experts, top "
                         f"{moe_top_k}, SwiGLU of width {moe.expert_hidden}; load-balancing loss × "
                         f"{moe.moe_aux_coef:g} and router z-loss × {MOE_Z_LOSS:g}, divided over the blocks, in the "
                         "gradient, the train loss below is the cross-entropy")
            else:
                model = (f"Llama-style decoder with a mixture of {moe_experts} experts, top {moe_top_k}, in place of "
                         f"each MLP (OLMoE-style: pre-norms before attention and the experts, final norm; dropless; "
                         f"experts SwiGLU of width {moe.expert_hidden}; Switch load-balancing loss, averaged over the "
                         f"blocks, × {moe.moe_aux_coef:g} in the gradient, the train loss below is the cross-entropy)")
            counts = ", ".join(f"{n} {p:,} ({p - inactive:,} active)" for n, p in params.items())
        elif arch == "olmo2":
            model = ("OLMo-core's OLMo2 decoder (reordered-norm blocks: the norms on the attention and MLP outputs; "
                     "QK-norm over the full width; SeeDNorm by seednorm.integrations.olmo_core.convert_config)")
            counts = ", ".join(f"{n} {p:,}" for n, p in params.items())
        else:
            model = "Llama-style decoder"
            counts = ", ".join(f"{n} {p:,}" for n, p in params.items())
        lines += [f"Setup: {model}, {preset.n_layers} layers, width {preset.dim}, {preset.n_heads} "
                  f"heads, vocab {preset.vocab_size} (byte-level BPE), {preset.seq_len}-token context; "
                  f"{preset.steps} steps × {preset.batch_size} sequences = {preset.tokens_per_run:,} tokens per "
                  f"run; AdamW lr {preset.lr:g} (warmup {preset.warmup}, cosine to 10%), weight decay "
                  f"{preset.weight_decay} on matrices and SeeDNorm's α, β, clip {preset.grad_clip}; seeds "
                  f"{seeds}. Parameters: {counts}.\n",
                  f"Training data: modern-spelling Shakespeare plays + Python standard-library code (docstrings "
                  f"removed). Evaluation: {EVAL_SETS}.\n"]
        lines += _results_tables(groups) + _diff_table(groups)
        if moe.moe:
            lines += _routing_table(groups)
        lines += _throughput_table(groups, throughput)
        ok = {n: [r for r in rs if not r.diverged] for n, rs in groups.items()}
        plot_curves({n: [[h["loss"] for h in r.result["history"]] for r in ok[n] or rs] for n, rs in groups.items()},
                    list(range(preset.steps)), out / "loss.png", ylabel="training loss (nats/token)",
                    title=f"Training loss, EMA 0.9 (band: min..max over seeds) — {preset.name}", smooth=0.9)
        plot_curves({n: [[h["grad_norm"] for h in r.result["history"]] for r in ok[n] or rs]
                     for n, rs in groups.items()}, list(range(preset.steps)), out / "grad_norm.png",
                    ylabel="global gradient norm (before clipping)", logy=True, smooth=0.9,
                    title=f"Gradient norm, EMA 0.9; clip at {preset.grad_clip}")
        bpb = {domain_label(d): {n: [r.result["final_eval"][f"bpb/{d}"] for r in rs] for n, rs in ok.items() if rs}
               for d in EVAL_DOMAINS}
        cloze = {domain_label(d): {n: [r.result["final_eval"][f"cloze/{d}"] for r in rs] for n, rs in ok.items() if rs}
                 for d in EVAL_DOMAINS}
        plot_bars(bpb, out / "bpb.png", ylabel="bits per byte", title="Bits per byte")
        plot_bars(cloze, out / "cloze.png", ylabel="cloze accuracy", title="Cloze accuracy")
        if BASELINE in ok and all(len(ok[n]) == len(ok[BASELINE]) for n in ok) and len(ok[BASELINE]) > 1:
            plot_bars(bpb, out / "bpb_vs_rmsnorm.png", ylabel="bits per byte", baseline=BASELINE,
                      title="Difference to RMSNorm, paired by seed")
            lines.append("\n![bits per byte minus RMSNorm](bpb_vs_rmsnorm.png)")
        lines += ["\n![training loss](loss.png)\n", "![bits per byte](bpb.png)\n", "![cloze accuracy](cloze.png)\n",
                  "![gradient norm](grad_norm.png)"]
    if sweep:
        lines += _sweep_section(sweep, out)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
