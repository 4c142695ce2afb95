"""The ``seednorm`` command: ``seednorm lm|vit|upcycle|bench [options]`` (``seednorm <command> --help`` for each),
``seednorm --version``; exit codes as ``args.py`` says (130 after Ctrl-C, with one line on stderr)."""

from __future__ import annotations

import importlib
import platform
import sys
from collections.abc import Sequence

COMMANDS = {
    "lm": ("seednorm_experiments.lm", "language-model study: RMSNorm vs LayerNorm vs DyT vs SeeDNorm, zero-shot evals"),
    "vit": ("seednorm_experiments.vit", "vision study: the same comparison on a small ViT under distribution shift"),
    "upcycle": ("seednorm_experiments.upcycle", "upcycling: SmolLM2-135M converted to SeeDNorm, trained on the Bible"),
    "bench": ("seednorm_experiments.bench", "kernel benchmarks: time and bandwidth of every implementation"),
}


def _usage() -> str:
    lines = ["usage: seednorm <command> [options]", "       seednorm --version", "", "commands:"]
    lines += [f"  {name:<7} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def version() -> str:
    """One line: the library's and the experiments' versions, then torch's and Python's (for bug reports)."""
    import torch

    import seednorm
    import seednorm_experiments

    return (f"seednorm {seednorm.__version__}, seednorm-experiments {seednorm_experiments.__version__} "
            f"(torch {torch.__version__}, Python {platform.python_version()})")


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to ``<module>.main(rest_of_argv)``; returns its exit code."""
    from .args import interrupted
    from .progress import library_notices

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(version())
        return 0
    if args[0] not in COMMANDS:
        print(f"seednorm: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:  # a study's own Ctrl-C line comes from args.report_errors; this one covers imports and argument parsing
        module = importlib.import_module(COMMANDS[args[0]][0])
        with library_notices():  # e.g. the one-time build of the C++ kernels, with its time
            return int(module.main(args[1:]) or 0)
    except KeyboardInterrupt:
        if args[0] == "bench":
            return interrupted("seednorm bench", "rerun the command to measure every cell",
                               "the table keeps the cells measured so far")
        return interrupted(f"seednorm {args[0]}")


if __name__ == "__main__":
    sys.exit(main())
