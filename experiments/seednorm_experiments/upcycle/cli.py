"""``seednorm upcycle``: convert a pretrained model (SmolLM2-135M) to SeeDNorm and keep training it.

    seednorm upcycle --preset quick --out results/upcycle_quick      # ≈ 1 hour on 2 CPU cores
    seednorm upcycle --preset smoke                                  # seconds (what the tests run); runs/upcycle_smoke
    seednorm upcycle --preset quick --arms rmsnorm-norms seednorm-norms --domain folio
    seednorm upcycle --preset quick --out results/upcycle_quick --report-only
    seednorm upcycle --probe --preset smoke --probe-steps 3          # the first steps of each arm: a table

Every arm (continued training as shipped with RMSNorm; converted to SeeDNorm with the paper's defaults or with
dot scale 1/√D; norm-only tuning of γ vs γ, α, β; with --arms, seednorm.UpcycleRecipe and each of its parts)
starts from the same weights -- a SeeDNorm arm from their exact
conversion, checked -- and sees the same batches per seed. Each arm sweeps its learning rate on seed 0 and runs more
seeds at its best one; every run is scored on held-out text of the adaptation domain and on text the model knew
before (modern-spelling plays, Python code): bits per byte and cloze, paired by seed, with 95% CIs. Writes
``OUT/report.md``, ``OUT/summary.json`` and PNG plots. ``--probe`` trains no study: it prints each arm's first
AdamW steps on one batch (with --out, also OUT/probe.md and OUT/probe.json).

List options take space- or comma-separated items. Finished runs in OUT are reused and interrupted ones resumed
(rerun the same command to continue); several processes may run the same command at once and share the grid
(e.g. two with --threads 1 on two cores); a run folder holding a run of other settings stops the command before it
trains. Exit codes: 0 done; 2 a bad argument, an unusable run folder or a missing data package (one line on
stderr); 130 interrupted by Ctrl-C (one line; rerun the same command to continue); see ``seednorm_experiments.args``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..args import REPORT, check_out_dir, out_dir, positive_int, report_errors
from ..common import Listed, default_out
from ..runs import EXPECTED_ERRORS
from .arms import ARMS, DEFAULT_ARMS, get_arm
from .data import DOMAINS
from .presets import PRESETS, Preset, get_preset
from .probe import PROBE_ARMS, PROBE_FILES

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The options of ``seednorm upcycle``; defaults are given in each help text."""
    p = argparse.ArgumentParser(prog="seednorm upcycle", description=__doc__.replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="quick", help="study size (default: %(default)s)")
    p.add_argument("--arms", action=Listed, metavar="ARM", default=None,
                   help="arms to train (default: " + " ".join(DEFAULT_ARMS) + "; also: "
                   + " ".join(a for a in ARMS if a not in DEFAULT_ARMS) + ")")
    p.add_argument("--domain", choices=DOMAINS, default="bible", help="adaptation domain (default: %(default)s)")
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds at each arm's best rate (default: the "
                   "preset's)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--out", type=out_dir, default=None, help="output folder (default: runs/upcycle_<preset>)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's; 1 "
                   "wastes least when other jobs share the cores)")
    p.add_argument("--report-only", action="store_true", help="train nothing: rebuild the report, summary and plots "
                   "of the study in --out (the same options as the command that made it) from its run records "
                   "(runs.jsonl) or finished run folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--probe", action="store_true", help="train nothing on disk: take --probe-steps AdamW steps of "
                   "each arm on one fixed batch and print each arm's loss, the first step's change of β, |s| after "
                   "it, α/γ and the norm inputs (default arms: " + " ".join(PROBE_ARMS) + "); with --out, also "
                   "written to OUT/probe.md and OUT/probe.json")
    p.add_argument("--probe-steps", type=positive_int, default=1, help="steps the probe takes (default: "
                   "%(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``seednorm upcycle ...``: run the study and write its report; returns the exit code (0 done, 2 a bad argument
    or an unusable run folder, one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "seednorm upcycle " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    return report_errors(parser.prog, lambda: _study(args, command), (argparse.ArgumentError, *EXPECTED_ERRORS))


def _study(args: argparse.Namespace, command: str) -> int:
    try:  # every setting is checked before anything loads or trains
        preset = get_preset(args.preset, steps=args.steps)  # every field checked, warmup <= steps too
        default = PROBE_ARMS if args.probe else DEFAULT_ARMS
        arms = [get_arm(a).name for a in dict.fromkeys(default if args.arms is None else args.arms)]
        if not arms:
            raise ValueError("--arms: give at least one arm")
        if args.probe and args.report_only:
            raise ValueError("--probe and --report-only exclude each other")
        if args.probe and args.probe_steps > 10:
            raise ValueError(f"--probe-steps must be 1 to 10 (the first steps), got {args.probe_steps}")
        if args.probe:
            out = None if args.out is None else check_out_dir(args.out, files=PROBE_FILES)
        else:
            out = check_out_dir(args.out or default_out("upcycle", preset.name), files=(REPORT,))
    except ValueError as e:
        raise argparse.ArgumentError(None, str(e)) from None
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        return _probe(preset, arms, args.probe_steps, args.domain, out, command)

    from ..records import study_records
    from .report import write_report
    from .study import Study

    t0 = time.perf_counter()
    with study_records(out, "upcycle", command, report_only=args.report_only) as records:
        study = Study(preset, arms, args.seeds or preset.seeds, out, domain=args.domain, progress=not args.no_progress)
        base, runs = study.run()
        records.check_complete()
        path = write_report(out, preset, base, runs, domain=args.domain, command=records.command,
                            wall_s=None if args.report_only else time.perf_counter() - t0)
    print(f"wrote {path} ({records.summary()})")
    return 0


def _probe(preset: Preset, arms: list[str], steps: int, domain: str, out: Path | None, command: str) -> int:
    """``--probe``: print the probe's table (and write it to ``out`` when given)."""
    from ..records import provenance
    from .probe import format_probe, probe, write_probe

    result = {"command": command, "machine": provenance(), **probe(preset, arms, steps, domain=domain)}
    print(format_probe(result), end="")
    if out is not None:
        for path in write_probe(out, result):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
