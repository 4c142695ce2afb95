"""Training-step cost of each norm in the LM study's models, relative to RMSNorm (target: SeeDNorm ≤ 1.05×).

    python -m seednorm_experiments.lm.step_cost                   # quick + standard, 60 rounds, all norms
    python -m seednorm_experiments.lm.step_cost --presets quick --rounds 100 --norms rmsnorm seednorm

Times the study's own training step (``seednorm_experiments.lm.study.measure_throughput``: the harness's forward,
backward, per-group gradient norms, clipping and fused AdamW) round-robin, ``--rounds`` × 2 steps per norm, and
prints, per preset and norm: tokens/s of the best and the median round and the step cost vs RMSNorm as the ratio
of best rounds, of median rounds, and the median of the per-round ratios (``harness.step_costs``, as the study's
report gives it: each round times every norm back to back, so load from other processes cancels in it). Writes
the table to ``--out`` (default ``benchmarks/results/lm-step-cost-cpu.md``) with the machine and the command.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

from seednorm_experiments.bench.kernels import machine, versions
from seednorm_experiments.lm.presets import NORM_NAMES, get_preset
from seednorm_experiments.lm.study import measure_throughput
from seednorm_experiments.report import markdown_table, step_costs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["quick", "standard"])
    p.add_argument("--norms", nargs="+", default=list(NORM_NAMES))
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/lm-step-cost-cpu.md"))
    p.add_argument("--note", default="", help="a line about the conditions (load, other jobs)")
    args = p.parse_args(argv)
    norms = ["rmsnorm"] + [n for n in args.norms if n != "rmsnorm"]
    rows = []
    for name in args.presets:
        preset = get_preset(name)
        speeds = measure_throughput(preset, norms, rounds=args.rounds)
        base, costs = speeds["rmsnorm"], step_costs(speeds, "rmsnorm")
        for norm, s in speeds.items():
            paired = statistics.median(costs[norm])
            row = [name, f"{preset.dim}", norm, f"{max(s):,.0f}", f"{statistics.median(s):,.0f}",
                   f"{max(base) / max(s):.3f}", f"{statistics.median(base) / statistics.median(s):.3f}",
                   f"{paired:.3f}"]
            rows.append(row)
            print(" | ".join(row), flush=True)
    header = ["preset", "width", "norm", "best tokens/s", "median tokens/s", "cost (best)", "cost (median)",
              "cost (paired median)"]
    command = "python -m seednorm_experiments.lm.step_cost " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = "\n".join([
        "# LM study: training-step cost vs RMSNorm",
        "",
        f"- Machine: {machine('cpu')}",
        f"- Versions: {versions()}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `{command.strip()}`",
        f"- Timing: the study's training step, round-robin, {args.rounds} rounds × 2 steps per norm after 3 "
        "warm-up steps; cost = RMSNorm's tokens/s ÷ the norm's (best rounds, median rounds, median of per-round "
        "ratios)",
        *([f"- Note: {args.note}"] if args.note else []),
        "",
        markdown_table(header, rows),
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
