"""Training-step cost of each norm in the LM study's models, relative to RMSNorm (target: SeeDNorm ≤ 1.05×).

    python -m seednorm_experiments.lm.step_cost                   # quick + standard, 60 rounds, all norms
    python -m seednorm_experiments.lm.step_cost --presets quick --rounds 100 --norms rmsnorm seednorm

Times the study's own training step (``seednorm_experiments.lm.study.measure_throughput``: the harness's forward,
backward, per-group gradient norms, clipping and fused AdamW) round-robin, ``--rounds`` × 2 steps per norm, and
prints, per preset and norm: tokens/s of the best and the median round and the step cost vs RMSNorm as the ratio
of best rounds, of median rounds, and the median of the per-round ratios (``report.step_costs``, as the study's
report gives it: each round times every norm back to back, so load from other processes cancels in it). Writes
the table to ``--out`` (default ``runs/bench/lm-step-cost-cpu.md``) with the machine and the command (with the
``--out`` it wrote to: the committed table was written with ``--out benchmarks/results/lm-step-cost-cpu.md``).
"""

from __future__ import annotations

import argparse
import sys
import time

from ..args import check_out_file, out_file, positive_int
from ..common import BASELINE, Listed, bench_command, bench_out, check_norms, default_norms, machine
from ..report import step_cost_document, step_cost_rows
from .presets import PRESETS, get_preset
from .study import measure_throughput

DEFAULT_NAME = "lm-step-cost-cpu.md"


def main(argv: list[str] | None = None) -> int:
    """Time every norm of ``--norms`` on every preset of ``--presets`` and write the table; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m seednorm_experiments.lm.step_cost", description=__doc__.splitlines()[0])
    p.add_argument("--presets", action=Listed, metavar="PRESET",
                   type=_preset, default=("quick", "standard"),
                   help="presets to time (default: quick standard)")
    p.add_argument("--norms", action=Listed, metavar="NORM", default=default_norms(BASELINE),
                   help=f"norms to time, {BASELINE} always (default: every norm)")
    p.add_argument("--rounds", type=positive_int, default=60, help="rounds of 2 steps per norm (default: %(default)s)")
    p.add_argument("--out", type=out_file, help=f"the table (default: {bench_out(DEFAULT_NAME)})")
    p.add_argument("--note", default="", help="a line about the conditions (load, other jobs)")
    args = p.parse_args(argv)
    try:
        norms = check_norms([BASELINE, *args.norms])
        out = args.out or check_out_file(bench_out(DEFAULT_NAME))
    except ValueError as e:
        p.error(str(e))
    rows = []
    for name in args.presets:
        preset = get_preset(name)
        speeds = measure_throughput(preset, norms, rounds=args.rounds)
        for row in step_cost_rows(speeds, BASELINE, [name, f"{preset.dim}"]):
            rows.append(row)
            print(" | ".join(row), flush=True)
    command = bench_command(p.prog, sys.argv[1:] if argv is None else argv, None if args.out else out)
    text = step_cost_document(
        "LM study: training-step cost vs RMSNorm", ["preset", "width"], rows, machine=machine(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), command=command, rounds=args.rounds, steps=2,
        warmup=3, baseline="RMSNorm", unit="tokens/s", note=args.note,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0


def _preset(name: str) -> str:
    if name not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return name


if __name__ == "__main__":
    sys.exit(main())
