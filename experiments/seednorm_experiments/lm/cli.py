"""``seednorm lm``: the language-model study's command line.

    seednorm lm --preset standard --out results/lm_standard    # every norm × 3 seeds, report in results/lm_standard
    seednorm lm --preset smoke --norms rmsnorm seednorm        # seconds (what the tests run); runs/lm_smoke
    seednorm lm --preset quick --moe-experts 4 --moe-top-k 2   # the mixture-of-experts model (OLMoE-style)
    seednorm lm --arch olmo2 --preset smoke                    # OLMo-core's OLMo2, rmsnorm vs seednorm (docs/olmo.md)
    seednorm lm --arch olmo2 --moe-experts 8 --preset smoke    # OLMo-core's OLMoE layout (docs/olmo.md)
    seednorm lm --ablation --preset quick --steps 200 --seeds 6 --out results/lm_ablation
    seednorm lm --size-curve --preset quick --steps 200 --out runs/lm_size_curve   # SeeDNorm − RMSNorm vs size
    seednorm lm --size-curve --arch olmo2 --preset quick       # OLMo2: which of its norms to convert (docs/olmo.md)
    torchrun --nproc_per_node 2 -m seednorm_experiments.lm --preset smoke   # DDP (gloo on CPU, nccl on GPU)

The study trains the same small Llama-style decoder with each norm (every seed gives every norm the same init and
data order), evaluates bits per byte and cloze accuracy in-domain and on three never-seen domains, and writes
``OUT/report.md`` with PNG plots; ``--ablation`` runs the fair comparison (each norm at its own best learning rate)
and the ablation of SeeDNorm's knobs instead, ``--size-curve`` the difference SeeDNorm − RMSNorm against model size
(each norm at its best rate at each size; with ``--token-factors`` also against training tokens).

List options take space- or comma-separated items (``--norms rmsnorm seednorm`` = ``--norms rmsnorm,seednorm``).
Finished runs in OUT (or recorded in its runs.jsonl) are reused and interrupted ones resumed, only when they were
made with the same settings: a run folder holding a run of other settings stops the command before it trains;
``--fresh`` trains every run of the study again. Exit codes: 0 done; 2 a bad argument, an unusable run folder or a
missing data package (one line on stderr); 130 interrupted by Ctrl-C (one line: finished runs are kept, and the same
command continues); see ``seednorm_experiments.args``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..args import REPORT, check_out_dir, nonnegative_int, out_dir, positive_float, positive_int, report_errors
from ..common import BASELINE, Listed, check_norms, default_norms, default_out, is_main_process
from ..progress import expect
from ..runs import EXPECTED_ERRORS
from .ablation import MAIN
from .model import ARCHS, SITES
from .presets import PRESETS, get_preset, parse_overrides
from .size_curve import CLIP_OFF, EXTEND, LRS, NORMS, POINTS, SEEDS, TOKEN_FACTORS, SizeCurvePlan, parse_points

__all__ = ["build_parser", "main"]

ABLATION_LRS = tuple(1e-3 * 2**k for k in range(8))
ABLATION_SEEDS = 6


def build_parser() -> argparse.ArgumentParser:
    """The options of ``seednorm lm``; defaults are given in each help text."""
    p = argparse.ArgumentParser(prog="seednorm lm", description=__doc__.replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="quick", help="study size (default: %(default)s)")
    p.add_argument("--norms", action=Listed, metavar="NORM", default=None,
                   help="norms to compare (default: " + " ".join(default_norms(BASELINE)) + "); in the ablation, "
                   "main norms of recipes.VARIANTS, there " + " ".join(MAIN) + " unless given (derf is one, with "
                   "DyT's LM recipe)")
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds per norm (default: the preset's; "
                   f"{ABLATION_SEEDS} in the ablation, {SEEDS} per rate in the size curve)")
    p.add_argument("--out", type=out_dir, default=None,
                   help="output folder (default: runs/lm_<preset>, runs/lm_ablation_<preset> for --ablation)")
    p.add_argument("--lr-sweep", action="store_true", help="also sweep the learning rate (stability plot)")
    p.add_argument("--sweep-only", action="store_true", help="run only the learning-rate sweep")
    p.add_argument("--fresh", action="store_true", help="train every run of the study from scratch (default: reuse "
                   "finished runs and resume interrupted ones of these same settings; another run in --out is an "
                   "error)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs and resume interrupted ones: the "
                   "default, so this changes nothing")
    p.add_argument("--placement", action=Listed, metavar="SITE", default=SITES,
                   help="norm sites that take the chosen norm, the others stay RMSNorm (default: all of "
                   + " ".join(SITES) + ")")
    p.add_argument("--qk-norm", action="store_true", help="add a norm on each head's queries and keys")
    p.add_argument("--arch", choices=ARCHS, default="llama", help="the decoder: llama (ours, pre-norm) or olmo2 "
                   "(OLMo-core's OLMo2: reordered-norm blocks, QK-norm; rmsnorm and seednorm only, in the size curve "
                   "also their variants of lm.olmo_curve.NORMS; needs OLMo-core) (default: %(default)s)")
    p.add_argument("--moe-experts", type=nonnegative_int, default=0, metavar="E",
                   help="mixture of E experts in place of each MLP, OLMoE-style; with --arch olmo2 OLMo-core's "
                   "OLMoE layout (default: 0, dense)")
    p.add_argument("--moe-top-k", type=positive_int, default=2, metavar="K",
                   help="experts per token with --moe-experts (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default: the preset's)")
    p.add_argument("--override", nargs="+", action="extend", default=[], metavar="FIELD=VALUE",
                   help="set preset fields, e.g. --override dim=32 n_layers=1 compile=false (a size for tests and "
                   "dry runs; every field of presets.Preset)")
    p.add_argument("--no-throughput", action="store_true", help="skip the round-robin throughput benchmark")
    p.add_argument("--throughput-rounds", type=positive_int, default=None, metavar="N",
                   help="a preset with lr_grid (gpu): time the training step, N rounds of 2 steps per norm (default: "
                   "no timing; 20 rounds take about a minute on one GPU)")
    p.add_argument("--recipe", action="store_true", help="a preset with lr_grid (gpu): also train SeeDNorm's 1/√D "
                   "dot-scale recipe at SeeDNorm's best rate (default: the grid only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--report-only", action="store_true", help="train nothing: rebuild the report, summary and plots "
                   "of the study in --out (the same options as the command that made it) from its run records "
                   "(runs.jsonl) or finished run folders")
    a = p.add_argument_group("ablation: sweep, best-LR comparison, SeeDNorm knobs, longer, wider")
    a.add_argument("--ablation", action="store_true", help="run the ablation instead of the study (always "
                   "reuses finished runs of the same settings; several processes may share one --out)")
    a.add_argument("--ablation-lrs", action=Listed, metavar="LR", type=positive_float, default=ABLATION_LRS,
                   help="learning rates of the sweep (default: " + " ".join(f"{x:g}" for x in ABLATION_LRS) + ")")
    a.add_argument("--knobs", action=Listed, metavar="KNOB", default=None,
                   help="SeeDNorm knob variants (default: every one of recipes.KNOBS; the layer's ablation forms "
                   "recipes.FORM_KNOBS, e.g. seednorm-no-beta, are selectable)")
    a.add_argument("--long-factors", action=Listed, metavar="F", type=positive_int, default=(4,),
                   help="one long phase per factor, training that many times the steps (default: 4)")
    a.add_argument("--wide-dim", type=positive_int, default=None,
                   help="width of the wide phase (default: 2 × the preset's)")
    a.add_argument("--carry", type=nonnegative_int, default=1,
                   help="best knob variants carried into the long and wide phases (default: %(default)s)")
    a.add_argument("--dim", type=positive_int, default=None, help="width (default: the preset's; the "
                   "ablation's base width)")
    a.add_argument("--until", default=None, help="stop after this phase: sweep, base, long<f>x or wide "
                   "(default: run every phase)")
    c = p.add_argument_group("size curve: SeeDNorm − RMSNorm against model size (seednorm_experiments.lm.size_curve)")
    c.add_argument("--size-curve", action="store_true", help="run the size curve instead of the study (reuses "
                   "finished runs of the same settings; several processes may share one --out); --report-only "
                   "writes its report from finished runs")
    c.add_argument("--points", action=Listed, metavar="WxL", default=None,
                   help="model sizes, width x layers (default: " + " ".join(f"{d}x{n}" for d, n in POINTS) + "; "
                   "with --arch olmo2 also OLMo-core's named sizes, e.g. olmo2_14M, default the preset's in "
                   "lm.olmo_curve.CURVES)")
    c.add_argument("--size-lrs", action=Listed, metavar="LR", type=positive_float, default=None,
                   help="starting learning-rate grid of every norm at every size (default: "
                   + " ".join(f"{x:g}" for x in LRS) + "; --arch olmo2: the preset's); it grows outward until each "
                   "norm's best rate is inside")
    c.add_argument("--extend", type=nonnegative_int, default=None,
                   help=f"rates each grid may grow per side (default: {EXTEND}; --arch olmo2: the preset's)")
    c.add_argument("--token-factors", action=Listed, metavar="F", type=positive_int, default=TOKEN_FACTORS,
                   help="train every point at F × the steps for each F, each with its own rate grid (default: "
                   + " ".join(map(str, TOKEN_FACTORS)) + "); with more than one, the report adds SeeDNorm − RMSNorm "
                   "against training tokens")
    c.add_argument("--sensitivity", action="store_true",
                   help="train every run of every grid again from its init moved up by one ulp (same seed and data) "
                   "and report how far each result moved: the float-level noise floor at each rate")
    c.add_argument("--clip-off-point", default=None, metavar="WxL",
                   help="the size of the clip-off check, one of --points, or 'none' (default: {}x{}; --arch olmo2: "
                   "none)".format(*CLIP_OFF))
    c.add_argument("--gpu-summary", type=Path, default=None, metavar="JSON",
                   help="summary.json of seednorm lm --preset gpu, drawn on the curve's axes when it exists")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``seednorm lm ...``: run the study or the ablation and write its report; returns the exit code (0 done, 2 a
    bad argument or an unusable run folder, one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "seednorm lm " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    body = _size_curve if args.size_curve else _ablation if args.ablation else _study

    def run() -> int:
        if args.sensitivity and not args.size_curve:
            raise argparse.ArgumentError(None, "--sensitivity applies to --size-curve only")
        return body(args, command)

    return report_errors(parser.prog, run, (argparse.ArgumentError, *EXPECTED_ERRORS))


def _overrides(args: argparse.Namespace, **options: object) -> dict[str, object]:
    """Preset fields from ``--override`` then the options given on their own (``--steps``, ``--lr``, ``--dim``)."""
    return {**parse_overrides(args.override), **{k: v for k, v in options.items() if v is not None}}


def _ablation(args: argparse.Namespace, command: str) -> int:

    from .ablation import AblationPlan, load_runs, run_ablation
    from .ablation_report import write_ablation_report
    from .recipes import KNOBS

    try:  # every setting is checked before anything trains
        preset = get_preset(args.preset, **_overrides(args, steps=args.steps, dim=args.dim))
        plan = AblationPlan(preset, seeds=args.seeds or ABLATION_SEEDS, lrs=tuple(args.ablation_lrs),
                            knobs=tuple(args.knobs or KNOBS), long_factors=tuple(args.long_factors),
                            wide_dim=args.wide_dim, carry=args.carry,
                            norms=tuple(dict.fromkeys(args.norms)) if args.norms else MAIN)
        if args.moe_experts:
            raise ValueError("--moe-experts applies to the study; the ablation trains the dense model")
        if args.arch != "llama":
            raise ValueError("--arch applies to the study; the ablation trains our Llama-style model")
        if args.until is not None and args.until not in plan.phases:
            raise ValueError(f"--until {args.until!r} is not a phase of this plan: {plan.phases}")
        out = check_out_dir(args.out or default_out("lm_ablation", preset.name), files=(REPORT,))
    except ValueError as e:
        raise argparse.ArgumentError(None, str(e)) from None
    return _runs_then_report(
        args, out, "lm-ablation", command, lambda: load_runs(plan, out),
        lambda: run_ablation(plan, out, progress=not args.no_progress, until=args.until),
        lambda runs, wall_s, cmd: write_ablation_report(out, plan, runs, command=cmd, wall_s=wall_s))


def _runs_then_report(args: argparse.Namespace, out: Path, study: str, command: str, load: Callable[[], Any],
                      train: Callable[[], Any], write: Callable[[Any, float | None, str], Path]) -> int:
    """The planned studies' (ablation, size curve) last steps: one torch thread per process (several processes share
    the plan, each writing the report and records when its share is done), the runs trained (``train``) or, with
    ``--report-only``, only loaded from the records (``load``), then ``write(runs, wall_s, command)`` (``wall_s``
    None for a report-only call; ``command`` the one that trained the runs) and ``runs.jsonl`` (:mod:`..records`)."""
    import torch

    from ..records import study_records

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with study_records(out, study, command, report_only=args.report_only) as records:
        runs = load() if args.report_only else train()
        records.check_complete()
        path = write(runs, None if args.report_only else time.perf_counter() - t0, records.command)
    print(f"wrote {path} ({records.summary()})")
    return 0


def _size_curve(args: argparse.Namespace, command: str) -> int:
    from .size_curve import load_size_curve, run_size_curve
    from .size_curve_report import write_size_curve_report
    from .study import study_corpus

    try:  # every setting is checked before anything trains
        if args.ablation or args.qk_norm or args.lr_sweep or args.sweep_only or tuple(args.placement) != SITES:
            raise ValueError("--size-curve trains each variant with its own norm sites: --ablation, --qk-norm, "
                             "--lr-sweep, --sweep-only and --placement do not apply")
        plan = _size_curve_plan(args)
        if plan.arch == "olmo2":
            _check_olmo2(args, plan.preset, ())
        out = check_out_dir(args.out or default_out("lm_size_curve", plan.preset.name), files=(REPORT,))
    except ValueError as e:
        raise argparse.ArgumentError(None, str(e)) from None
    corpus = study_corpus(plan.preset)
    return _runs_then_report(
        args, out, "lm-size-curve", command, lambda: load_size_curve(plan, corpus, out),
        lambda: run_size_curve(plan, corpus, out, progress=not args.no_progress),
        lambda runs, wall_s, cmd: write_size_curve_report(out, plan, runs, command=cmd, vocab_size=corpus.vocab_size,
                                                     wall_s=wall_s, gpu_summary=args.gpu_summary,
                                                     pack_sha256=corpus.source.get("pack_sha256")))


def _size_curve_plan(args: argparse.Namespace) -> SizeCurvePlan:
    """The size curve's plan from the options (ValueError naming the first bad one): the Llama curve's defaults, or
    with ``--arch olmo2`` the preset's OLMo2 curve (:data:`.olmo_curve.CURVES`); options given win."""
    from .olmo_curve import CURVES, OLMO2_SIZES, curve_preset
    from .olmo_curve import NORMS as OLMO2_NORMS

    olmo2 = args.arch == "olmo2"
    overrides = _overrides(args, steps=args.steps)
    preset = curve_preset(args.preset, **overrides) if olmo2 else get_preset(args.preset, **overrides)
    if preset.lr_grid:
        raise ValueError(f"preset {preset.name!r} runs its own learning-rate grid; the Llama size curve is a CPU study "
                         "(quick or standard)")
    curve = CURVES[args.preset] if olmo2 else None
    named = OLMO2_SIZES if olmo2 else None
    items = args.points or (curve.points if curve else [f"{d}x{n}" for d, n in POINTS])
    points = parse_points(items, named)
    for item in items:
        if named and item in named and named[item][2] != preset.n_heads:
            raise ValueError(f"--points {item}: OLMo-core's {item} has {named[item][2]} heads, the preset "
                             f"{preset.n_heads} (set them with --override n_heads={named[item][2]})")
    clip_text = args.clip_off_point or ("none" if olmo2 else "{}x{}".format(*CLIP_OFF))
    clip_off = None if clip_text.lower() == "none" else parse_points([clip_text], named)[0]
    return SizeCurvePlan(preset, points=points, lrs=tuple(args.size_lrs or (curve.lrs if curve else LRS)),
                         seeds=args.seeds or (curve.seeds if curve else SEEDS),
                         extend=args.extend if args.extend is not None else curve.extend if curve else EXTEND,
                         clip_off=clip_off, token_factors=tuple(args.token_factors), sensitivity=args.sensitivity,
                         norms=tuple(dict.fromkeys(args.norms)) if args.norms else OLMO2_NORMS if olmo2 else NORMS,
                         arch=args.arch, moe_experts=args.moe_experts, moe_top_k=args.moe_top_k)


def _study(args: argparse.Namespace, command: str) -> int:
    from ..records import study_records
    from .report import write_report
    from .study import measure_throughput, run_lr_sweep, run_study

    try:  # every setting is checked before anything trains
        preset = get_preset(args.preset, **_overrides(args, steps=args.steps, lr=args.lr))
    except ValueError as e:
        raise argparse.ArgumentError(None, str(e)) from None
    if preset.lr_grid:
        return _gpu_study(args, command, preset)
    try:
        if args.recipe or args.throughput_rounds:
            raise ValueError("--recipe and --throughput-rounds apply to a preset with lr_grid (gpu); this study "
                             "times the step unless --no-throughput")
        norms = check_norms(args.norms or (("rmsnorm", "seednorm") if args.arch == "olmo2"
                                           else default_norms(BASELINE)))
        if set(args.placement) - set(SITES):
            raise ValueError(f"--placement: unknown placement {sorted(set(args.placement) - set(SITES))}; "
                             f"choose from {', '.join(SITES)}")
        if args.moe_experts and args.moe_top_k > args.moe_experts:
            raise ValueError(f"--moe-top-k {args.moe_top_k} exceeds --moe-experts {args.moe_experts}")
        if args.arch == "olmo2":
            _check_olmo2(args, preset, norms)
        out = check_out_dir(args.out or default_out("lm" if args.arch == "llama" else f"lm_{args.arch}", preset.name),
                            files=(REPORT,))
    except ValueError as e:
        raise argparse.ArgumentError(None, str(e)) from None
    seeds = args.seeds or preset.seeds
    moe = {"moe_experts": args.moe_experts, "moe_top_k": args.moe_top_k, "arch": args.arch}
    if args.fresh and args.resume:
        raise argparse.ArgumentError(None, "--fresh and --resume contradict each other: give one")
    kw = {"resume": not args.fresh, "placement": args.placement, "qk_norm": args.qk_norm,
          "progress": not args.no_progress, **moe}
    t0 = time.perf_counter()
    with study_records(out, "lm", command, report_only=args.report_only, write=is_main_process()) as records:
        sweeps = len(preset.lr_sweep) if args.lr_sweep or args.sweep_only else 0
        expect(len(norms) * seeds * ((0 if args.sweep_only else 1) + sweeps))
        runs = [] if args.sweep_only else run_study(preset, norms, seeds, out, **kw)
        sweep = run_lr_sweep(preset, norms, seeds, out, **kw) if args.lr_sweep or args.sweep_only else []
        if not is_main_process():
            return 0
        records.check_complete()
        bench = None
        if runs and not args.no_throughput:
            bench = records.measurement("throughput", lambda: measure_throughput(
                preset, norms, placement=args.placement, qk_norm=args.qk_norm, **moe),
                "timing each norm's training step (the report's step cost)")
        path = write_report(out, preset, runs, command=records.command, throughput=bench, sweep=sweep,
                            wall_s=None if args.report_only else time.perf_counter() - t0, **moe)
    print(f"wrote {path} ({records.summary()})")
    return 0


def _check_olmo2(args: argparse.Namespace, preset: Any, norms: Sequence[str]) -> None:
    """``--arch olmo2``: every run's model is one OLMo2 can be (:func:`.olmo.check_olmo2`), and OLMo-core imports."""
    from .olmo import check_olmo2, import_olmo_core
    from .study import model_config

    if args.qk_norm:
        raise ValueError("--arch olmo2 has its QK-norm always (convert it or not with --placement qk): --qk-norm does "
                         "not apply")
    for norm in norms:
        check_olmo2(model_config(preset, preset.vocab_size, norm, args.placement))
    try:
        import_olmo_core()
    except ImportError as err:
        raise ValueError(str(err)) from None


def _gpu_study(args: argparse.Namespace, command: str, preset) -> int:
    """The learning-rate grid of a preset with ``lr_grid`` (:mod:`.gpu`): its own runs and report."""
    import torch

    from seednorm import ops

    from .gpu import check_one_pass, run_gpu_study
    from .gpu_report import write_gpu_report
    from .study import study_corpus

    if args.lr_sweep or args.sweep_only or args.ablation or args.moe_experts or args.qk_norm \
            or tuple(args.placement) != SITES or args.arch != "llama":
        raise argparse.ArgumentError(None, f"preset {preset.name!r} runs its own learning-rate grid: --lr-sweep, "
                                     "--sweep-only, --moe-experts, --qk-norm, --placement and --arch do not apply")
    try:  # every setting is checked before anything trains: the run folder, the corpus pack, one pass
        out = check_out_dir(args.out or default_out("lm", preset.name), files=(REPORT,))
        corpus = study_corpus(preset)
        check_one_pass(preset, corpus)
    except ValueError as e:
        raise argparse.ArgumentError(None, str(e)) from None
    from ..records import study_records

    device = "cuda" if torch.cuda.is_available() else "cpu"
    impl = ops.resolve_impl("auto", torch.empty(0, device=device, dtype=torch.bfloat16))
    t0 = time.perf_counter()

    def write(runs, throughput):
        if is_main_process():
            write_gpu_report(out, preset, runs, corpus, command=records.command, throughput=throughput,
                             wall_s=None if args.report_only else time.perf_counter() - t0, impl=impl)

    with study_records(out, "lm-gpu", command, report_only=args.report_only, write=is_main_process()) as records:
        runs, throughput = run_gpu_study(preset, out, resume=not args.fresh, progress=not args.no_progress,
                                         recipe=args.recipe,
                                         throughput_rounds=0 if args.no_throughput else args.throughput_rounds or 0,
                                         write=None if args.report_only else write)
        records.check_complete()
        write(runs, throughput)
    print(f"wrote {out / 'report.md'} ({records.summary()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
