"""``report.md``, ``summary.json`` and PNG plots of an upcycling study from its base record and runs (:mod:`.study`).

Tables: the conversion (max |Δ logits| at conversion, the base model's evaluation); the sweep (final training
loss of every arm × rate on seed 0, the chosen rate); at each arm's chosen rate, mean ± std over seeds of the
adaptation domain's bits per byte and cloze accuracy and, seed by seed against the arm's reference (:class:`.arms.Arm`
``reference``), the paired difference with its 95% CI; forgetting (bits per byte after − before on every
forgetting domain, and paired against the reference); parameters trained and the gain per parameter; cost
(tokens/s of the runs, memory of one step). Plots: ``loss.png`` (training loss per arm at its rate),
``adaptation.png`` and ``forgetting.png`` (bits per byte before and after, bars with 95% CIs).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..records import provenance
from ..report import Stat, markdown_table, paired_diff, plot_bars, plot_curves, summarize
from .arms import ARMS
from .data import FORGETTING
from .presets import Preset
from .study import Run, best_lr, lr_tag

__all__ = ["chosen_runs", "summary", "write_report"]


def chosen_runs(runs: Sequence[Run]) -> dict[str, dict[int, Run]]:
    """Per arm, its runs at its best rate (:func:`.study.best_lr`), by seed; diverged runs left out."""
    out: dict[str, dict[int, Run]] = {}
    for arm in dict.fromkeys(r.arm for r in runs):
        mine = [r for r in runs if r.arm == arm]
        if not any(r.seed == 0 for r in mine):
            continue
        lr = best_lr(mine)
        out[arm] = {r.seed: r for r in mine if r.lr == lr and not r.diverged}
    return out


def _diverged_seeds(runs: Sequence[Run], arm: str, lr: float) -> dict[str, list[int]]:
    """``{"diverged_seeds": [...]}``: the seeds of ``arm`` at its chosen rate whose runs diverged and are left out of
    its statistics (which then flatter it), or ``{}`` when none did."""
    seeds = sorted(r.seed for r in runs if r.arm == arm and r.lr == lr and r.diverged)
    return {"diverged_seeds": seeds} if seeds else {}


def _eval(run: Run, key: str) -> float:
    return float(run.result["final_eval"][key])


def _fmt(stat: Stat, digits: int = 3, ci: bool = False) -> str:
    return stat.format(digits, ci=ci) + ("" if stat.n >= 2 else " (n=1)")


def summary(base: dict[str, Any], runs: Sequence[Run], domain: str) -> dict[str, Any]:
    """The numbers the report shows, as JSON data: per arm its rate, seeds, trainable parameters, tokens/s, memory,
    per metric the mean/std/ci95 over seeds, forgetting (after − before), and the paired differences to its
    reference arm."""
    chosen = chosen_runs(runs)
    keys = [f"{m}/{d}" for d in (domain, *FORGETTING) for m in ("bpb", "cloze")]
    out: dict[str, Any] = {"domain": domain, "base_eval": base["eval"], "arms": {}}
    for arm, by_seed in chosen.items():
        if not by_seed:
            out["arms"][arm] = {"diverged": True}
            continue
        rs = list(by_seed.values())
        entry: dict[str, Any] = {
            "lr": rs[0].lr, "seeds": sorted(by_seed), **base["arms"].get(arm, {}),
            **_diverged_seeds(runs, arm, rs[0].lr),
            "tokens_per_s": statistics.median(r.result["tokens_per_s"] for r in rs),
            "metrics": {k: vars(summarize([_eval(r, k) for r in rs])) for k in keys},
            "change": {k: vars(summarize([_eval(r, k) - base["eval"][k] for r in rs])) for k in keys},
        }
        ref = ARMS[arm].reference
        if ref in chosen and set(chosen[ref]) & set(by_seed):
            entry["vs"] = ref
            entry["paired"] = {k: vars(paired_diff({s: _eval(r, k) for s, r in by_seed.items()},
                                                   {s: _eval(r, k) for s, r in chosen[ref].items()})) for k in keys}
        out["arms"][arm] = entry
    return out


def _stat(d: dict[str, Any]) -> Stat:
    return Stat(d["mean"], d["std"], d["n"], d["ci95"])


def write_report(out: Path, preset: Preset, base: dict[str, Any], runs: Sequence[Run], *, domain: str,
                 command: str, wall_s: float | None = None) -> Path:
    """Write ``out/report.md``, ``out/summary.json`` and the plots; returns the report's path."""
    out = Path(out)
    s = summary(base, runs, domain)
    (out / "summary.json").write_text(json.dumps(s, indent=1, default=float))
    arms = [a for a in ARMS if a in {r.arm for r in runs}]
    lines = [f"# Upcycling SmolLM2-135M to SeeDNorm: preset `{preset.name}`, adapting to `{domain}`\n",
             f"Command: `{command}`  ",
             f"Machine: {provenance(wall_s)}\n",
             (f"Model: {'all 30' if preset.layers is None else f'the first {preset.layers} of 30'} decoder layers of "
              "SmolLM2-135M-Instruct dequantized from its Q4_1 GGUF (float32). Training: " if preset.width is None
              else f"Model: {preset.layers or 30} decoder layer(s) of a {preset.width}-wide model of SmolLM2-135M's "
              "architecture and tokenizer, randomly initialized (seed 0): a check of the code paths that measures "
              "nothing. Training: ")
             + f"{preset.steps} steps × {preset.batch_size} windows × {preset.seq_len} tokens "
             f"({preset.tokens_per_run:,} tokens) of the `{domain}` training split, AdamW (weight decay "
             f"{preset.weight_decay} on matrices and α, β), warmup {preset.warmup} steps then cosine, clip "
             f"{preset.grad_clip}. Evaluation per domain: bits per byte over {preset.eval_windows} windows of "
             f"{preset.eval_seq_len} tokens; {preset.cloze_items} four-way cloze items "
             f"({preset.cloze_context} + {preset.cloze_length} tokens; chance 0.25).\n"]

    lines += ["## Conversion\n",
              "Each SeeDNorm arm starts from the exact conversion of the weights (β = 0): largest |Δ logit| on a "
              "probe batch, checked before training.\n",
              markdown_table(["arm", "max abs Δ logit", "parameters trained"],
                             [[a, f"{base['arms'][a]['gap']:.2e}", f"{base['arms'][a]['trainable']:,}"]
                              for a in arms if a in base["arms"]]),
              "\nBefore training (every arm):\n",
              markdown_table(["domain", "bits/byte", "cloze"],
                             [[d, f"{base['eval'][f'bpb/{d}']:.4f}", f"{base['eval'][f'cloze/{d}']:.3f}"]
                              for d in (domain, *FORGETTING)])]

    sweep_rows = []
    for a in arms:
        mine = sorted((r for r in runs if r.arm == a and r.seed == 0), key=lambda r: r.lr)
        chosen = s["arms"].get(a, {}).get("lr")
        edge = len(mine) > 1 and chosen in (mine[0].lr, mine[-1].lr)
        cells = [f"{lr_tag(r.lr)[2:]}: " + ("diverged" if r.diverged else f"{r.final_loss:.4f}")
                 + ((" ← (edge)" if edge else " ←") if r.lr == chosen else "") for r in mine]
        sweep_rows.append([a, "; ".join(cells)])
    lines += ["\n## Learning-rate sweep (seed 0)\n",
              "Final training loss (nats/token, mean of the last 10% of steps) at each rate; ← the rate chosen "
              "for every seed (lowest loss); \"(edge)\": the lowest or highest rate the sweep ran, so the best rate "
              "may lie beyond it.\n", markdown_table(["arm", "lr: final loss"], sweep_rows)]

    d = domain
    rows = []
    for a in arms:
        e = s["arms"].get(a)
        if not e or e.get("diverged"):
            rows.append([a, "diverged", "", "", "", ""])
            continue
        m, p = e["metrics"], e.get("paired", {})
        lost = e.get("diverged_seeds", [])
        left_out = f"; seed{'s' * (len(lost) > 1)} {', '.join(map(str, lost))} diverged, left out" if lost else ""
        rows.append([f"{a} (lr {e['lr']:g}, n={len(e['seeds'])}{left_out})", _fmt(_stat(m[f"bpb/{d}"]), 4),
                     _fmt(_stat(e["change"][f"bpb/{d}"]), 4, ci=True), _fmt(_stat(m[f"cloze/{d}"])),
                     (f"{_fmt(_stat(p[f'bpb/{d}']), 4, ci=True)} vs {e['vs']}" if p else "reference"),
                     (_fmt(_stat(p[f"cloze/{d}"]), 3, ci=True) if p else "")])
    lines += [f"\n## Adaptation: held-out `{d}`\n",
              "Mean ± std over seeds; Δ = after − before, and arm − reference paired by seed, as mean [95% CI] "
              "(Student t; n=1 has no interval). Lower bits/byte is better. A seed that diverged at the chosen rate "
              "is left out of every statistic, which flatters its arm.\n",
              markdown_table(["arm", "bits/byte after", "Δ vs before", "cloze after", "bits/byte − reference",
                              "cloze − reference"], rows)]

    rows = []
    for a in arms:
        e = s["arms"].get(a)
        if not e or e.get("diverged"):
            continue
        cells = []
        for f in FORGETTING:
            cells.append(_fmt(_stat(e["change"][f"bpb/{f}"]), 4, ci=True))
            cells.append(_fmt(_stat(e["paired"][f"bpb/{f}"]), 4, ci=True) if "paired" in e else "reference")
        rows.append([a] + cells)
    header = ["arm"] + [h for f in FORGETTING for h in (f"{f}: Δ bits/byte", f"{f}: − reference")]
    lines += ["\n## Forgetting: text the model knew before\n",
              "Bits per byte after − before (positive: forgotten), and paired against the reference, mean [95% CI].\n",
              markdown_table(header, rows)]

    rows = []
    for a in arms:
        e = s["arms"].get(a)
        if not e or e.get("diverged"):
            continue
        gain = _stat(e["change"][f"bpb/{d}"])
        per = gain.mean / e["trainable"] * 1e6 if e.get("trainable") else math.nan
        mem = e.get("memory", {})
        state_mib = sum(mem.get(k, 0) for k in ("weights", "grads", "adam")) / 2**20
        peak = f"{mem['peak'] / 2**20:,.0f}" if mem.get("peak") else "—"
        rows.append([a, f"{e.get('trainable', 0):,}", f"{-gain.mean:.4f}", f"{-per:.4f}", f"{e['tokens_per_s']:,.0f}",
                     f"{state_mib:,.0f}", f"{mem.get('activations', 0) / 2**20:,.0f}", peak])
    lines += ["\n## Parameters trained, gain per parameter, cost\n",
              "Gain: bits/byte before − after on the adaptation domain (mean over seeds); per million parameters "
              "trained. Tokens/s: median over the steps of the arm's runs (this machine, shared with other jobs: "
              "compare within a study only). Memory of one training step: weights + gradients + AdamW moments, and "
              "the activations autograd saves (each storage once); the allocator's peak on CUDA.\n",
              markdown_table(["arm", "trained", "gain (bits/byte)", "gain per 1M trained", "tokens/s",
                              "weights+grads+Adam MiB", "activations MiB", "CUDA peak MiB"], rows)]

    lines += _first_steps(runs, s)
    lines += ["\n## Figures\n", "![training loss](loss.png)\n", "![adaptation](adaptation.png)\n",
              "![forgetting](forgetting.png)\n"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    _plots(out, s, runs, domain)
    return path


def _first_steps(runs: Sequence[Run], s: dict[str, Any]) -> list[str]:
    """The first steps of each arm's seed-0 run at its chosen rate: the training loss at steps 0-2 and the gradient
    norm at step 0, whole and per parameter group (as the harness logs them, before clipping)."""
    firsts = []
    for a, e in s["arms"].items():
        run = next((r for r in runs if r.arm == a and r.seed == 0 and r.lr == e.get("lr")), None)
        if run is not None:
            firsts.append((a, run))
    if not firsts:
        return []
    groups = sorted({k for _, r in firsts for k in r.result["history"][0] if k.startswith("gn/")})
    rows = []
    for a, r in firsts:
        history = r.result["history"]
        losses = [f"{h['loss']:.2f}" for h in history[:3]]
        first = history[0]
        rows.append([f"{a} (lr {r.lr:g})", " / ".join(losses), f"{first['grad_norm']:,.1f}",
                     *(f"{first[g]:,.1f}" if g in first else "—" for g in groups)])
    return ["\n## The first steps\n",
            "Seed 0 at each arm's chosen rate: training loss at steps 0, 1, 2 (nats/token), and the gradient norm at "
            "step 0 before clipping, whole and per parameter group (`other` in an RMSNorm arm: its γ, which "
            "transformers' own norm class holds, grouped with the other parameters).\n",
            markdown_table(["arm", "loss, steps 0 / 1 / 2", "gradient norm, step 0", *groups], rows)]


def _plots(out: Path, s: dict[str, Any], runs: Sequence[Run], domain: str) -> None:
    chosen = chosen_runs(runs)
    curves = {a: [[h["loss"] for h in r.result["history"]] for r in rs.values()] for a, rs in chosen.items() if rs}
    if curves:
        steps = list(range(1, max(len(c) for cs in curves.values() for c in cs) + 1))
        plot_curves(curves, steps, out / "loss.png", ylabel="train loss (nats/token)", smooth=0.6,
                    title=f"continued training on {domain}")
    bars = {a: rs for a, rs in chosen.items() if rs}
    if not bars:
        return
    base = s["base_eval"]
    groups = {f: {"before": [base[f"bpb/{f}"]], **{a: [_eval(r, f"bpb/{f}") for r in rs.values()]
                                                   for a, rs in bars.items()}} for f in (domain, *FORGETTING)}
    plot_bars({domain: groups[domain]}, out / "adaptation.png", ylabel="bits/byte (lower is better)",
              title=f"held-out {domain}: before and after")
    plot_bars({f: groups[f] for f in FORGETTING}, out / "forgetting.png", ylabel="bits/byte (lower is better)",
              title="forgetting domains: before and after")
