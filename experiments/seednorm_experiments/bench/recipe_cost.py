"""What each part of the vision recipe costs in one norm call on CPU, against LayerNorm's call at the same shape.

    python -m seednorm_experiments.bench.recipe_cost                  # the ViT quick preset's shape: (128, 50, 64)
    python -m seednorm_experiments.bench.recipe_cost --batch 64 --tokens 50 --width 128 --out /tmp/recipe.md

The vision recipe's SeeDNorm (``num_heads`` heads, dot scale 1/(D/h), dynamic dropout p on σ(s)·α) is built up one
part at a time, each a layer forward + backward (``y.backward(dy)``) on a (batch, tokens, width) float32 input with
one torch thread, in training mode, ``impl="auto"`` (the C++ kernels: the benchmark refuses to run without them):

1. LayerNorm (``torch.nn.LayerNorm``, ATen's kernels), the vision baseline;
2. SeeDNorm, one head, no dropout;
3. the recipe's heads and dot scale, no dropout;
4. dynamic dropout with the mask given as a tensor (``seednorm.ops.seednorm_fused(keep=...)``, the mask drawn once
   before timing): the kernels' extra work on a mask, without drawing it;
5. the recipe as the studies run it: the mask generated in the kernels (Philox4x32-10, in the forward and again in
   the backward, so that nothing of the input's size is kept for it).

Each row is the part's cost (its call minus the row above) and the call's total; the difference of rows 5 and 4 is
what drawing the mask twice costs beyond reading a stored one. Times are thread CPU time, the median of ``--repeats``
calls, round-robin in blocks (``bench.profile.measure``). Writes the table to ``--out`` (default
``runs/bench/recipe-cost-cpu.md``) with the machine, the load average and the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

import seednorm
from seednorm.ops import op, philox

from ..args import out_file, positive_int
from ..common import bench_command, bench_out
from .profile import BLOCK, cpu_table_out, measure, one_thread, write_document

DEFAULT_NAME = "recipe-cost-cpu.md"
PARTS = {
    "layernorm": "LayerNorm (the vision baseline)",
    "plain": "SeeDNorm, 1 head, no dropout",
    "heads": "+ {heads} heads, dot scale 1/{head_dim}",
    "given mask": "+ dynamic dropout {p}, the mask given as a tensor",
    "recipe": "+ the mask drawn in the kernels (Philox, forward and backward): the recipe",
}


def part_calls(batch: int, tokens: int, width: int, heads: int, p: float) -> dict[str, Callable[[], None]]:
    """One forward + backward per part of the recipe (see the module docstring), on a (batch, tokens, width)
    input."""
    torch.manual_seed(0)
    x = torch.randn(batch, tokens, width, requires_grad=True)
    dy = torch.randn_like(x)
    head_dim = width // heads
    layernorm = torch.nn.LayerNorm(width)
    plain = seednorm.SeeDNorm(width)
    multi = seednorm.SeeDNorm(width, num_heads=heads, dot_scale=1 / head_dim)
    recipe = seednorm.SeeDNorm(width, num_heads=heads, dot_scale=1 / head_dim, dynamic_dropout=p)
    keep = philox.keep_mask(philox.draw(x.device), x.shape, p, torch.float32)
    leaves = [x, *layernorm.parameters(), *plain.parameters(), *multi.parameters(), *recipe.parameters()]
    for module in (layernorm, plain, multi, recipe):
        module.train()

    def backward(y: torch.Tensor) -> None:
        y.backward(dy)
        for leaf in leaves:
            leaf.grad = None

    def given_mask() -> torch.Tensor:
        return op.seednorm_fused(x, multi.weight, multi.alpha, multi.beta, num_heads=heads,
                                 eps=torch.finfo(x.dtype).eps, activation="tanh", dot_scale=1 / head_dim, impl="cpp",
                                 keep=keep)

    return {
        "layernorm": lambda: backward(layernorm(x)),
        "plain": lambda: backward(plain(x)),
        "heads": lambda: backward(multi(x)),
        "given mask": lambda: backward(given_mask()),
        "recipe": lambda: backward(recipe(x)),
    }


def table(times: dict[str, float], heads: int, head_dim: int, p: float) -> list[str]:
    """Markdown rows: each part's cost (µs, and × LayerNorm's call) and the call's total (× LayerNorm's)."""
    base = times["layernorm"]
    lines = ["| part | its cost µs | its cost ÷ LayerNorm's call | the call µs | the call ÷ LayerNorm's |",
             "|---|---|---|---|---|"]
    previous = 0.0
    for key, label in PARTS.items():
        total = times[key]
        part = total - previous
        previous = total
        lines.append(f"| {label.format(heads=heads, head_dim=head_dim, p=p)} | {part:.0f} | {part / base:.2f}× | "
                     f"{total:.0f} | {total / base:.2f}× |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Time every part and write the table; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m seednorm_experiments.bench.recipe_cost",
                                description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=positive_int, default=128,
                   help="batch (default: %(default)s, the ViT quick preset's)")
    p.add_argument("--tokens", type=positive_int, default=50,
                   help="tokens per image (default: %(default)s: 7 × 7 patches and the class token)")
    p.add_argument("--width", type=positive_int, default=64, help="width D (default: %(default)s)")
    p.add_argument("--heads", type=positive_int, default=4, help="SeeDNorm heads (default: %(default)s)")
    p.add_argument("--dropout", type=float, default=0.1, help="dynamic dropout p (default: %(default)s)")
    p.add_argument("--repeats", type=positive_int, default=300, help="calls per part (default: %(default)s)")
    p.add_argument("--warmup", type=positive_int, default=20, help="calls per part first (default: %(default)s)")
    p.add_argument("--out", type=out_file, help=f"the table (default: {bench_out(DEFAULT_NAME)})")
    p.add_argument("--note", default="", help="a line about the conditions (load, other jobs)")
    args = p.parse_args(argv)
    if args.width % args.heads:
        p.error(f"--heads must divide --width, got {args.heads} and {args.width}")
    if not 0.0 < args.dropout < 1.0:
        p.error(f"--dropout must be in (0, 1), got {args.dropout}")
    out = cpu_table_out(p, args.out, DEFAULT_NAME)
    times, load = one_thread(lambda: measure(part_calls(args.batch, args.tokens, args.width, args.heads,
                                                        args.dropout), args.repeats, args.warmup))
    command = bench_command(p.prog, sys.argv[1:] if argv is None else argv, None if args.out else out)
    timing = (f"input ({args.batch}, {args.tokens}, {args.width}) float32, training, one layer forward + backward; "
              f"each value the median of {args.repeats} calls' thread CPU time, the parts round-robin in blocks of "
              f"{BLOCK} calls after {args.warmup} warm-up calls each; a part's cost is its call minus the row above "
              "(see `python -m seednorm_experiments.bench.recipe_cost --help`)")
    write_document(out, "The vision recipe's parts: cost of one norm call (CPU)", command, load, timing, args.note,
                   table(times, args.heads, args.width // args.heads, args.dropout))
    return 0

if __name__ == "__main__":
    sys.exit(main())
