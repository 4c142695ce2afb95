"""The ``seednorm`` command: ``seednorm lm|vit|upcycle|bench [options]`` (``seednorm <command> --help`` for each); exit
codes as ``args.py`` says."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "lm": ("seednorm_experiments.lm", "language-model study: RMSNorm vs LayerNorm vs DyT vs SeeDNorm, zero-shot evals"),
    "vit": ("seednorm_experiments.vit", "vision study: the same comparison on a small ViT under distribution shift"),
    "upcycle": ("seednorm_experiments.upcycle", "upcycling: SmolLM2-135M converted to SeeDNorm and trained on"),
    "bench": ("seednorm_experiments.bench", "kernel benchmarks: time and bandwidth of every implementation"),
}


def _usage() -> str:
    lines = ["usage: seednorm <command> [options]", "", "commands:"]
    lines += [f"  {name:<7} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to ``<module>.main(rest_of_argv)``; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] not in COMMANDS:
        print(f"seednorm: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
