"""``report.md``, ``summary.json`` and ``loss.png`` of the ``gpu`` preset's study (:mod:`.gpu`): one row per run,
each norm at its best rate against RMSNorm's best (read against :data:`RESOLUTION_BPB`), the corpus pack's hash,
the measured step cost when timed and the FLOP-based estimate."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from ..common import BASELINE
from ..records import provenance
from ..report import markdown_table, plot_curves, step_costs
from .ablation import primary_metric, zero_shot_bpb, zero_shot_cloze
from .data import EVAL_DOMAINS, EVAL_SETS, Corpus
from .gpu import ASSUMED_TFLOPS, RECIPE, best_lr, non_embedding_params, train_flops
from .presets import Preset
from .study import Run

__all__ = ["RESOLUTION_BPB", "write_gpu_report"]

RESOLUTION_BPB = 0.01
"""The smallest difference in bits per byte that one seed can be read as resolving. On the CPU size curve
(results/lm_size_curve) the seed-to-seed spread of a norm's in-domain bits per byte at one rate was 0.01-0.05 and
the paired 95% intervals of SeeDNorm − RMSNorm were ±0.02-0.06 wide with 4 seeds; a longer run evaluated on more
text spreads less, but one seed measures no spread at all, so nothing below ~0.01 is read as a difference."""


def _label(run: Run) -> str:
    return f"{run.norm} @ {run.lr:g}"


def _runs_table(runs: Sequence[Run]) -> list[str]:
    rows = []
    for r in runs:
        if r.diverged:
            rows.append([_label(r), "diverged"] + ["–"] * (len(EVAL_DOMAINS) + 4))
            continue
        e = r.result["final_eval"]
        rows.append([_label(r), f"{r.final_loss:.4f}", *(f"{e[f'bpb/{d}']:.4f}" for d in EVAL_DOMAINS),
                     f"{primary_metric(r):.4f}", f"{zero_shot_cloze(r):.3f}", f"{r.result['tokens_per_s']:,.0f}",
                     f"{r.result['wall_s']:.0f}"])
    header = ["run (variant @ lr)", "train loss", *(f"bpb {d}" for d in EVAL_DOMAINS), "bpb in-domain mean",
              "cloze zero-shot mean", "tokens/s", "wall s"]
    return ["\n### Every run (seed 0; bits per byte: lower is better)\n", markdown_table(header, rows)]


def _best_runs(runs: Sequence[Run]) -> tuple[Run | None, dict[str, Run | None]]:
    """RMSNorm's run at its best rate (:func:`.gpu.best_lr`; None: diverged at every rate) and each other variant's
    (None where it diverged at every rate)."""
    def at_best(variant: str) -> Run | None:
        lr = best_lr(list(runs), variant)
        return None if lr is None else next(r for r in runs if r.norm == variant and r.lr == lr)

    return at_best(BASELINE), {v: at_best(v) for v in dict.fromkeys(r.norm for r in runs if r.norm != BASELINE)}


def _best_table(runs: Sequence[Run]) -> list[str]:
    base, best = _best_runs(runs)
    if base is None:
        return ["\nRMSNorm diverged at every rate: no comparison."]
    rows = []
    for variant, r in best.items():
        if r is None:
            rows.append([variant, "diverged"] + ["–"] * (len(EVAL_DOMAINS) + 2))
            continue
        cells = [f"{r.result['final_eval'][f'bpb/{d}'] - base.result['final_eval'][f'bpb/{d}']:+.4f}"
                 for d in EVAL_DOMAINS]
        delta = primary_metric(r) - primary_metric(base)
        rows.append([variant, f"{r.lr:g}", f"{delta:+.4f}", _reading(delta), *cells])
    return [f"\n### Each norm at its best rate minus RMSNorm at its best ({base.lr:g}); one seed, no interval\n",
            f"One seed resolves nothing below ~{RESOLUTION_BPB:g} bits per byte: a smaller Δ is no difference "
            "either way, and a larger one is a single draw, not an interval (the CPU size curve's seed-to-seed "
            "spread at one rate was 0.01-0.05 bpb; only more seeds measure it here).\n",
            markdown_table(["variant", "best lr", "Δ bpb in-domain mean", "reading (one seed)",
                            *(f"Δ bpb {d}" for d in EVAL_DOMAINS)], rows)]


def _reading(delta: float) -> str:
    """What one seed's in-domain Δ can say (:data:`RESOLUTION_BPB`)."""
    if abs(delta) < RESOLUTION_BPB:
        return f"unresolved (within ±{RESOLUTION_BPB:g})"
    return f"{'lower' if delta < 0 else 'higher'} by more than {RESOLUTION_BPB:g} (one draw)"


def _throughput(bench: dict[str, list[float]] | None, preset: Preset) -> list[str]:
    if not bench or BASELINE not in bench:
        return ["\nStep cost: not timed (`--throughput-rounds N` times it)."]
    costs = step_costs(bench, BASELINE)
    rows = [[n, f"{statistics.median(s):,.0f}", f"{max(s):,.0f}", f"{statistics.median(costs[n]):.3f}"]
            for n, s in bench.items()]
    how = ("compiled, " if preset.compile else "") + "bf16 autocast on CUDA"
    return [f"\n### Training step ({how}; {len(bench[BASELINE])} rounds × 2 steps per norm, round-robin; goal: "
            "SeeDNorm ≤ 1.02× RMSNorm)\n",
            markdown_table(["norm", "median tokens/s", "best tokens/s", "step cost vs RMSNorm (median of rounds)"],
                           rows)]


def _summary(preset: Preset, runs: Sequence[Run], vocab_size: int) -> dict:
    """``summary.json``: the model size, tokens per run, every run, and each variant at its best rate minus RMSNorm
    at its best (``delta``: in-domain and zero-shot bits per byte; one seed) -- what the size curve plots."""
    base, best = _best_runs(runs)
    delta = {} if base is None else {
        variant: {"lr": r.lr, "in_domain_bpb": primary_metric(r) - primary_metric(base),
                  "zero_shot_bpb": zero_shot_bpb(r) - zero_shot_bpb(base)} for variant, r in best.items() if r}
    return {"preset": preset.name, "dim": preset.dim, "n_layers": preset.n_layers,
            "non_embedding_params": non_embedding_params(preset, vocab_size),
            "tokens_per_run": preset.tokens_per_run, "seeds": 1, "resolution_bpb": RESOLUTION_BPB,
            "baseline_lr": base.lr if base else None,
            "delta": delta,
            "runs": [{"variant": r.norm, "lr": r.lr, "diverged": r.diverged, "final_eval": r.result["final_eval"]}
                     for r in runs]}


def write_gpu_report(out: Path, preset: Preset, runs: Sequence[Run], corpus: Corpus, *, command: str,
                     throughput: dict[str, list[float]] | None = None, wall_s: float | None = None,
                     impl: str = "") -> Path:
    """Write ``out/report.md``, ``out/summary.json`` (:func:`_summary`) and ``loss.png`` when a run finished;
    returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    flops = train_flops(preset, corpus.vocab_size)
    n = non_embedding_params(preset, corpus.vocab_size)
    pack = corpus.source.get("pack_sha256")
    lines = [f"# Language-model study — `{preset.name}` preset (learning-rate grid)\n",
             f"Command: `{command}`\n",
             f"Machine: {provenance(wall_s)}.\n",
             f"Setup: Llama-style decoder, {preset.n_layers} layers, width {preset.dim}, {preset.n_heads} heads, "
             f"vocab {corpus.vocab_size} (byte-level BPE), {preset.seq_len}-token context; {n:,} non-embedding "
             f"parameters; {preset.steps} steps × {preset.batch_size} sequences = {preset.tokens_per_run:,} tokens "
             f"per run{', at most one pass over the training text (disjoint windows)' if preset.one_pass else ''}; "
             f"AdamW, warmup {preset.warmup}, cosine to 10%, weight decay {preset.weight_decay}, clip "
             f"{preset.grad_clip}; {'torch.compile, ' if preset.compile else ''}bf16 autocast on CUDA"
             + (f", SeeDNorm through `impl={impl!r}`" if impl else "") + ".\n",
             "Corpus: " + (f"pack sha256 `{pack}` ({corpus.source.get('pack_files', 0):,} package source files "
                           "beside the plays and the standard library; manifest in the pack)" if pack else
                           "plays + this interpreter's standard library")
             + f"; evaluation: {EVAL_SETS}; "
             f"cache key `{corpus.key}`.\n",
             f"Estimate: {flops:.3g} FLOP per run (6·(N + V·d)·tokens + 12·L·T·d·tokens) ≈ "
             f"{flops / (ASSUMED_TFLOPS * 1e12):.0f} s at an assumed {ASSUMED_TFLOPS:g} TFLOP/s.\n"]
    if runs:
        lines += _runs_table(runs) + _best_table(runs)
        if not any(r.norm == RECIPE for r in runs):
            lines.append(f"\nThe 1/√D dot-scale recipe (`{RECIPE}`) was not run (`--recipe` runs it at SeeDNorm's "
                         "best rate).")
    lines += _throughput(throughput, preset)
    done = [r for r in runs if not r.diverged]
    if done:
        plot_curves({_label(r): [[h["loss"] for h in r.result["history"]]] for r in done},
                    list(range(preset.steps)), out / "loss.png", ylabel="training loss (nats/token)",
                    title=f"Training loss, EMA 0.9 — {preset.name}", smooth=0.9)
        lines.append("\n![training loss](loss.png)")
    (out / "summary.json").write_text(json.dumps(_summary(preset, runs, corpus.vocab_size), indent=1))
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
