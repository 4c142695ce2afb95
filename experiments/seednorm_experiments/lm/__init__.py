"""The language-model study: ``seednorm lm [--preset smoke|quick|standard|full] [--norms ...] [--seeds N]
[--out DIR] [--lr-sweep] [--resume]``, and ``seednorm lm --ablation ...``: the fair comparison (each norm
at its own best learning rate) and the ablation of SeeDNorm's knobs (:mod:`.ablation`).

Trains the same small Llama-style decoder (:mod:`.model`) with RMSNorm, LayerNorm, DyT and SeeDNorm on
Shakespeare's plays + Python code (:mod:`.data`), evaluates bits per byte and cloze accuracy in-domain
and on three never-seen domains (:mod:`.evals`), and writes ``DIR/report.md`` with PNG plots
(:mod:`.summary`). Runs under ``torchrun`` use DDP (gloo on CPU, nccl on GPU) with no change.

Runs in ``DIR`` are reused only when they were made with the same settings (:mod:`..runs`): with ``--resume``
(and always in the ablation) a run folder holding a run of other settings stops the command before it trains,
with exit code 2 and one line naming the folder and the settings that differ; choose another ``--out`` or
delete that folder. Without ``--resume`` every run of the study is trained from scratch.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..args import check_out_dir, nonnegative_int, out_dir, positive_float, positive_int, report_errors
from .model import SITES
from .presets import NORM_NAMES, PRESETS, get_preset

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seednorm lm", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="quick", help=f"one of {list(PRESETS)}")
    p.add_argument("--norms", nargs="+", default=list(NORM_NAMES), help="norms to compare")
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds per norm (default: the preset's)")
    p.add_argument("--out", type=out_dir, default=None, help="output folder (default: runs/lm-<preset>)")
    p.add_argument("--lr-sweep", action="store_true", help="also sweep the learning rate (stability plot)")
    p.add_argument("--sweep-only", action="store_true", help="run only the learning-rate sweep")
    p.add_argument("--resume", action="store_true", help="reuse finished runs, resume interrupted ones (only "
                   "runs of these same settings: another run in --out is an error)")
    p.add_argument("--placement", nargs="+", default=list(SITES),
                   help=f"norm sites that take the chosen norm (others stay RMSNorm), from {list(SITES)}")
    p.add_argument("--qk-norm", action="store_true", help="add a norm on each head's queries and keys")
    p.add_argument("--steps", type=positive_int, default=None, help="override the preset's training steps")
    p.add_argument("--lr", type=positive_float, default=None, help="override the preset's peak learning rate")
    p.add_argument("--no-throughput", action="store_true", help="skip the round-robin throughput benchmark")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    a = p.add_argument_group("ablation: sweep, best-LR comparison, SeeDNorm knobs, longer, wider")
    a.add_argument("--ablation", action="store_true", help="run the ablation instead of the study (always "
                   "reuses finished runs of the same settings; several processes may share one --out)")
    a.add_argument("--ablation-lrs", type=positive_float, nargs="+", default=[1e-3 * 2**k for k in range(8)],
                   help="learning rates of the sweep")
    a.add_argument("--knobs", nargs="+", default=None, help="SeeDNorm knob variants (default: all of recipes.KNOBS)")
    a.add_argument("--long-factors", type=positive_int, nargs="+", default=[4],
                   help="one long phase per factor, training that many times the steps")
    a.add_argument("--wide-dim", type=positive_int, default=None,
                   help="width of the wide phase (default: 2 × the preset's)")
    a.add_argument("--carry", type=nonnegative_int, default=1,
                   help="best knob variants carried into the long and wide phases")
    a.add_argument("--report-only", action="store_true", help="only write the ablation report from finished runs")
    a.add_argument("--dim", type=positive_int, default=None,
                   help="override the preset's width (the ablation's base width)")
    a.add_argument("--until", default=None, help="stop after this phase (sweep, base, long<f>x, wide)")
    return p


def _ablation(args: argparse.Namespace, parser: argparse.ArgumentParser, command: str) -> int:
    import torch

    from .ablation import AblationPlan, load_runs, run_ablation
    from .recipes import KNOBS

    try:
        preset = get_preset(args.preset, steps=args.steps, dim=args.dim)
        plan = AblationPlan(preset, seeds=args.seeds or 6, lrs=tuple(args.ablation_lrs),
                            knobs=tuple(args.knobs or KNOBS), long_factors=tuple(args.long_factors),
                            wide_dim=args.wide_dim, carry=args.carry)
        if args.until is not None and args.until not in plan.phases:
            raise ValueError(f"--until {args.until!r} is not a phase of this plan: {plan.phases}")
        out = check_out_dir(args.out or Path("runs") / f"lm-ablation-{preset.name}")
    except ValueError as e:
        parser.error(str(e))
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    runs = (load_runs(plan, out) if args.report_only
            else run_ablation(plan, out, progress=not args.no_progress, until=args.until))
    from .ablation_report import write_ablation_report

    path = write_ablation_report(out, plan, runs, command=command,
                                 wall_s=None if args.report_only else time.perf_counter() - t0)
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study from command-line arguments; returns the exit code (see `seednorm_experiments.cli`: argument
    errors and unusable run folders exit with 2 and one line on stderr)."""
    from ..runs import EXPECTED_ERRORS

    parser = _parser()
    args = parser.parse_args(argv)
    command = "seednorm lm " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    if args.ablation or args.report_only:
        return report_errors(parser.prog, lambda: _ablation(args, parser, command), EXPECTED_ERRORS)
    return report_errors(parser.prog, lambda: _study(args, parser, command), EXPECTED_ERRORS)


def _study(args: argparse.Namespace, parser: argparse.ArgumentParser, command: str) -> int:
    from .study import check_norms, is_main_process, measure_throughput, run_lr_sweep, run_study
    from .summary import write_report

    try:
        preset = get_preset(args.preset, steps=args.steps, lr=args.lr)
        norms = check_norms(args.norms)
        if set(args.placement) - set(SITES):
            raise ValueError(f"unknown placement {sorted(set(args.placement) - set(SITES))}; choose from {SITES}")
        out = check_out_dir(args.out or Path("runs") / f"lm-{preset.name}")
    except ValueError as e:
        parser.error(str(e))
    seeds = args.seeds or preset.seeds
    kw = {"resume": args.resume, "placement": args.placement, "qk_norm": args.qk_norm,
          "progress": not args.no_progress}
    t0 = time.perf_counter()
    runs = [] if args.sweep_only else run_study(preset, norms, seeds, out, **kw)
    sweep = run_lr_sweep(preset, norms, seeds, out, **kw) if args.lr_sweep or args.sweep_only else []
    if not is_main_process():
        return 0
    bench = None
    if runs and not args.no_throughput:
        bench = measure_throughput(preset, norms, placement=args.placement, qk_norm=args.qk_norm)
    path = write_report(out, preset, runs, command=command, throughput=bench, sweep=sweep,
                        wall_s=time.perf_counter() - t0)
    print(f"wrote {path}")
    return 0
