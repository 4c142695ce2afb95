"""Training-step cost of each norm in the vision study's ViT or ConvNeXt vs LayerNorm (target: SeeDNorm ≤ 1.05×).

    python -m seednorm_experiments.vit.step_cost                          # quick, 60 rounds, LayerNorm and SeeDNorm
    python -m seednorm_experiments.vit.step_cost --rounds 100 --norms layernorm rmsnorm dyt seednorm
    SEEDNORM_IMPL=reference python -m seednorm_experiments.vit.step_cost  # SeeDNorm on the reference path
    python -m seednorm_experiments.vit.step_cost --dynamic-dropout 0      # the recipe without its dropout mask
    python -m seednorm_experiments.vit.step_cost --model convnext         # the ConvNeXt's step

Times the study's own training step (``seednorm_experiments.vit.study.measure_throughput``: the main grid's model,
SeeDNorm with the paper's vision recipe, its dynamic dropout on; the harness's forward, backward, clipping and
AdamW) round-robin, ``--rounds`` × 2 steps per norm, with ``--threads`` torch threads as ``seednorm vit`` runs,
and prints, per norm: images/s of the best and the median round and the step cost vs LayerNorm as the ratio of
best rounds, of median rounds, and the median of the per-round ratios (``report.step_cost_rows``, as the LM
study's ``step_cost`` gives them). Writes the table to ``--out`` (default ``runs/bench/<model>-step-cost-cpu.md``)
with the machine, the implementation SeeDNorm ran and the command (with the ``--out`` it wrote to: the committed
tables were written with ``--out benchmarks/results/<file>``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from ..args import check_out_file, out_file, positive_int
from ..common import VISION_BASELINE, Listed, bench_command, bench_out, check_norms, machine
from ..report import step_cost_document, step_cost_rows
from .data import load_study_data
from .presets import MODELS, PRESETS, get_preset
from .study import measure_throughput, seednorm_kwargs, standardized


def main(argv: list[str] | None = None) -> int:
    """Time every norm of ``--norms`` on ``--preset`` and write the table; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m seednorm_experiments.vit.step_cost",
                                description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=[m for m in MODELS if m != "mae"], default="vit",
                   help="the main grid's model to time (default: %(default)s)")
    p.add_argument("--preset", choices=list(PRESETS), default="quick", help="preset to time (default: %(default)s)")
    p.add_argument("--norms", action=Listed, metavar="NORM", default=("seednorm",),
                   help=f"norms to time, {VISION_BASELINE} always (default: seednorm)")
    p.add_argument("--rounds", type=positive_int, default=60, help="rounds of 2 steps per norm (default: %(default)s)")
    p.add_argument("--dynamic-dropout", type=_probability, metavar="P",
                   help="SeeDNorm's dynamic dropout (default: the recipe's, the preset's drop-path rate)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default: %(default)s, as seednorm vit)")
    p.add_argument("--out", type=out_file,
                   help=f"the table (default: {bench_out('<model>-step-cost-cpu.md')})")
    p.add_argument("--note", default="", help="a line about the conditions (load, other jobs)")
    args = p.parse_args(argv)
    try:
        norms = check_norms([VISION_BASELINE, *args.norms])
        out = args.out or check_out_file(bench_out(f"{args.model}-step-cost-cpu.md"))
    except ValueError as e:
        p.error(str(e))
    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset, model=args.model)
    data = load_study_data(preset.dataset, preset.eval_limit)
    preset = standardized(preset, data)
    speeds = measure_throughput(preset, data, norms, rounds=args.rounds, dynamic_dropout=args.dynamic_dropout)
    width = "/".join(map(str, preset.model.dims)) if args.model == "convnext" else f"{preset.model.dim}"
    rows = step_cost_rows(speeds, VISION_BASELINE, [args.preset, width])
    for row in rows:
        print(" | ".join(row), flush=True)
    impl = os.environ.get("SEEDNORM_IMPL") or "auto"
    kwargs = seednorm_kwargs(preset, preset.seednorm_heads, preset.dot_scale)
    if args.dynamic_dropout is not None:
        kwargs["dynamic_dropout"] = args.dynamic_dropout
    recipe = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    command = bench_command(p.prog, sys.argv[1:] if argv is None else argv, None if args.out else out)
    if impl != "auto":
        command = f"SEEDNORM_IMPL={impl} {command}"
    note = "; ".join(filter(None, [f"SeeDNorm: {recipe}, impl={impl}, batch {preset.batch_size}", args.note]))
    text = step_cost_document(
        f"Vision study ({args.model}): training-step cost vs LayerNorm", ["preset", "width"], rows, machine=machine(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), command=command, rounds=args.rounds, steps=2,
        warmup=3, baseline="LayerNorm", unit="images/s", note=note,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1), got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
