"""``seednorm vit``: the vision study's command line.

    seednorm vit --preset quick --out results/vit_quick --runs-dir runs/vit_quick   # the README's table and plots
    seednorm vit --preset smoke --out /tmp/vit          # seconds; what the tests run
    seednorm vit --model convnext --preset quick --out results/vit_convnext_quick   # the ConvNeXt
    seednorm vit --model mae --preset quick --out results/vit_mae_quick   # MAE pre-training, probe, fine-tune
    torchrun --nproc-per-node 2 -m seednorm_experiments.vit --preset quick   # DDP (the harness does it)

A compact ViT with each norm (LayerNorm, RMSNorm, DyT, multi-head SeeDNorm), trained on offline image data, scored in
distribution and under distribution shifts, plus SeeDNorm's head-count ablation. --model convnext trains a small
ConvNeXt the same way (no head ablation); --model mae pre-trains the ViT as a masked autoencoder, then scores its
encoder by a linear probe and by fine-tuning, each in distribution and under the shifts. OUT gets report.md, the PNGs
and summary.json; every run lives in its own folder under RUNS, and re-running the command reuses finished runs and
resumes interrupted ones (only runs of the same settings).

List options take space- or comma-separated items (--norms dyt seednorm = --norms dyt,seednorm; --heads none skips
the ablation). Exit codes: 0 done; 2 a bad argument, an unusable run folder or a missing data package (one line on
stderr); 130 interrupted by Ctrl-C (one line; rerun the same command to continue); see seednorm_experiments.args.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence

import torch

from ..args import REPORT, check_out_dir, out_dir, positive_float, positive_int, report_errors
from ..common import Listed, default_out, is_main_process
from ..records import study_records
from ..runs import EXPECTED_ERRORS
from .data import DATASETS, load_study_data
from .evals import DEFAULT_SHIFTS, Shift, parse_shift
from .mae_report import write_mae_report
from .mae_study import run_mae_study, standardized_mae
from .presets import MODELS, PRESETS, MAEPreset, Preset, get_mae_preset, get_preset
from .report import write_report
from .study import run_study, standardized

__all__ = ["build_parser", "main", "resolve_preset"]


def build_parser() -> argparse.ArgumentParser:
    """The options of ``seednorm vit``; defaults are given in each help text."""
    p = argparse.ArgumentParser(prog="seednorm vit", description=__doc__.replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list(MODELS), default="vit",
                   help="the supervised ViT, the supervised ConvNeXt, or MAE pre-training of the ViT with a linear "
                   "probe and fine-tuning (default: %(default)s)")
    p.add_argument("--preset", choices=list(PRESETS), default="quick", help="study size (default: %(default)s)")
    p.add_argument("--norms", action=Listed, metavar="NORM",
                   help="norms of the main grid (default: the preset's, every norm)")
    p.add_argument("--heads", action=Listed, metavar="H", type=positive_int,
                   help="SeeDNorm head counts of the ablation; 'none' skips it (default: the preset's)")
    p.add_argument("--seednorm-heads", type=positive_int,
                   help="SeeDNorm heads in the main grid (default: the preset's)")
    p.add_argument("--dot-scale", type=_dot_scale, help="SeeDNorm dot scale in the main grid: a number or 'dim' "
                   "(= heads/D) (default: the preset's)")
    p.add_argument("--ablation-dot-scale", type=_dot_scale,
                   help="SeeDNorm dot scale in the head ablation (default: the preset's)")
    p.add_argument("--ablation-dim", type=positive_int, help="ViT width of the head ablation (default: the preset's)")
    p.add_argument("--ablation-lr", type=positive_float,
                   help="learning rate of the head ablation (default: the preset's)")
    p.add_argument("--seeds", type=positive_int, help="seeds per setting, mean ± std over them (default: the "
                   "preset's)")
    p.add_argument("--dataset", choices=[name for name in DATASETS if name != "sklearn_digits"],
                   help="training data; the shifts follow (default: the preset's)")
    p.add_argument("--steps", type=positive_int, help="training steps of the main grid; with --model mae, of the "
                   "pre-training (default: the preset's)")
    p.add_argument("--mask-ratio", type=_mask_ratio, help="--model mae: fraction of the patches hidden in "
                   "pre-training (default: the preset's, 0.75)")
    p.add_argument("--shifts", action=Listed, metavar="KIND=VALUE", type=_shift,
                   help="distribution shifts; 'none': clean only (default: "
                   + " ".join(s.name for s in DEFAULT_SHIFTS) + ")")
    p.add_argument("--backend", choices=["seednorm", "timm"], default="seednorm",
                   help="this package's compact ViT or timm's VisionTransformer with the same norms "
                   "(default: %(default)s)")
    p.add_argument("--out", type=out_dir, help="report folder (default: runs/vit_<preset>; "
                   "runs/vit_<model>_<preset> for convnext and mae)")
    p.add_argument("--runs-dir", type=out_dir, help="per-run folders (default: OUT/runs)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default: 1: these models gain "
                   "nothing from more, and on shared cores extra OpenMP threads spin and slow everything down)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard events")
    p.add_argument("--report-only", action="store_true", help="train nothing: rebuild the report, summary and plots "
                   "of the study in --out (the same options as the command that made it) from its run records "
                   "(runs.jsonl) or finished run folders")
    return p


def _dot_scale(text: str) -> float | str:
    try:
        return text if text == "dim" else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dot scale must be a number or 'dim', got {text!r}") from None


def _mask_ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0.0 < ratio < 1.0:
        raise argparse.ArgumentTypeError(f"mask ratio must be a number in (0, 1), got {text!r}")
    return ratio


def _shift(text: str) -> Shift:
    try:
        return parse_shift(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_VIT_ONLY = ("heads", "ablation_dim", "ablation_lr", "ablation_dot_scale")


def resolve_preset(args: argparse.Namespace) -> Preset | MAEPreset:
    """The preset of ``--model`` with the command line's overrides applied; ValueError naming a bad one (or an
    option the model does not have)."""
    if args.model != "vit":
        given = [f"--{name.replace('_', '-')}" for name in _VIT_ONLY if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: the head-count ablation is the ViT's (--model vit)")
        if args.backend != "seednorm":
            raise ValueError(f"--backend {args.backend}: --model {args.model} is this package's only")
    if args.model == "mae":
        return get_mae_preset(args.preset, norms=args.norms, seednorm_heads=args.seednorm_heads,
                              dataset=args.dataset, pretrain_steps=args.steps, seeds=args.seeds,
                              dot_scale=args.dot_scale, mask_ratio=args.mask_ratio)
    if args.mask_ratio is not None:
        raise ValueError("--mask-ratio: only --model mae masks patches")
    return get_preset(args.preset, args.model, norms=args.norms, heads=args.heads, seednorm_heads=args.seednorm_heads,
                      dataset=args.dataset, steps=args.steps, seeds=args.seeds, ablation_dim=args.ablation_dim,
                      ablation_lr=args.ablation_lr, dot_scale=args.dot_scale,
                      ablation_dot_scale=args.ablation_dot_scale)


def main(argv: Sequence[str] | None = None) -> int:
    """``seednorm vit ...``: run the study (reusing finished runs, resuming interrupted ones) and write its report;
    returns the exit code (0 done, 2 a bad argument or an unusable run folder, one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "seednorm vit " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    return report_errors(parser.prog, lambda: _study(args, command), (argparse.ArgumentError, *EXPECTED_ERRORS))


def _study(args: argparse.Namespace, command: str) -> int:
    try:  # every setting is checked before anything trains
        preset = resolve_preset(args)
        study = "vit" if args.model == "vit" else f"vit_{args.model}"
        out = check_out_dir(args.out or default_out(study, args.preset), files=(REPORT,))
        runs_dir = check_out_dir(args.runs_dir or out / "runs")
    except ValueError as e:
        raise argparse.ArgumentError(None, str(e)) from None
    torch.set_num_threads(args.threads)
    shifts = DEFAULT_SHIFTS if args.shifts is None else args.shifts
    data = load_study_data(preset.dataset, preset.eval_limit)
    t0 = time.perf_counter()
    kind = "vit" if args.model == "vit" else f"vit-{args.model}"
    with study_records(out, kind, command, report_only=args.report_only, write=is_main_process()) as records:
        if isinstance(preset, MAEPreset):
            preset = standardized_mae(preset, data)
            mae_results = run_mae_study(preset, data, runs_dir, shifts=shifts, progress=not args.no_progress,
                                        tensorboard=not args.no_tensorboard)
            write, results = write_mae_report, mae_results
        else:
            preset = standardized(preset, data)
            results = run_study(preset, data, runs_dir, backend=args.backend, shifts=shifts,
                                progress=not args.no_progress, tensorboard=not args.no_tensorboard)
            write = write_report
        if not is_main_process():
            return 0
        records.check_complete()
        write(out, preset, results, shifts=shifts, transfer=sorted(data.transfer), command=records.command,
              machine=records.provenance(None if args.report_only else time.perf_counter() - t0))
    print(f"report: {out / 'report.md'} ({records.summary()})", flush=True)
    return 0


