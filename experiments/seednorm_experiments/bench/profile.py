"""Where the time of one SeeDNorm call goes on CPU: a layer's forward + backward, peeled one layer of code at a time.

    python -m seednorm_experiments.bench.profile                  # widths 48 64 128 256 384, input (8, 64, D)
    python -m seednorm_experiments.bench.profile --widths 64 --repeats 500 --out /tmp/profile.md

Each stage calls the same forward + backward (``y.backward(dy)``, or the two op functions) one level further
down the library, so the difference between two stages is the cost of the code between them:

1. ``SeeDNorm`` layer: ``layer(x)`` (the module's options and call), as the LM study's models call it, with
   ``impl="auto"`` (the C++ kernels here: the benchmark refuses to run without them);
2. functional: ``seednorm.seednorm(x, γ, α, β)`` (argument checks, option resolution, the choice of ``impl``);
3. fused op: ``seednorm.ops.seednorm_fused(..., impl="cpp")`` (the op's own checks and the eager dispatch);
4. autograd Function: the op's eager ``torch.autograd.Function`` (``apply``, saving for backward, the autograd
   engine's run of the backward);
5. kernels: ``seednorm.ops.cpu``'s forward and backward on (M, D) rows (output allocation, the ctypes calls,
   the C++).

Beside them ``seednorm.RMSNorm`` (``F.rms_norm``, what the LM study's baseline runs), forward + backward.
Times are CPU time of the calling thread (``time.thread_time_ns``) with one torch thread, so time slices lost to
other processes on a shared machine do not count (cache and core sharing still do); each value is the median of
``--repeats`` calls, the stages round-robin in blocks of 20 calls (``measure``). Writes the table to ``--out`` (default
``runs/bench/profile-cpu.md``) with the machine, the load average and the command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

import seednorm
from seednorm.ops import op

from ..args import check_out_file, out_file, positive_int
from ..common import Listed, bench_command, bench_out, machine

DEFAULT_NAME = "profile-cpu.md"
T = TypeVar("T")
BLOCK = 20  # calls of one stage in a row
STAGES = ("SeeDNorm layer", "functional", "fused op", "autograd Function", "kernels")
WHAT = {  # what the code between a stage and the next one does
    "SeeDNorm layer": "module: options dict, the call into the functional form",
    "functional": "argument checks, option resolution, choice of impl",
    "fused op": "the fused op's checks, eager dispatch",
    "autograd Function": "autograd: Function.apply, saved tensors, the engine's backward, reshapes",
    "kernels": "kernels: allocations, ctypes calls, C++ (forward + backward)",
}


def stage_calls(d: int, rows: int) -> dict[str, Callable[[], None]]:
    """One forward + backward per stage (and of the RMSNorm baseline) at width ``d``: input (8, rows / 8, d)."""
    torch.manual_seed(0)
    x = torch.randn(8, rows // 8, d, requires_grad=True)
    dy = torch.randn_like(x)
    layer, rms = seednorm.SeeDNorm(d), seednorm.RMSNorm(d)  # impl "auto", as the studies run it
    w, a, b = layer.weight, layer.alpha, layer.beta
    eps = torch.finfo(x.dtype).eps
    leaves = [x, w, a, b, rms.weight]
    x2, dy2 = x.detach().reshape(-1, d), dy.reshape(-1, d)
    options = {"num_heads": 1, "eps": eps, "activation": "tanh", "dot_scale": 1.0, "impl": "cpp"}

    def backward(y: torch.Tensor) -> None:
        y.backward(dy)
        for leaf in leaves:
            leaf.grad = None

    def kernels() -> None:
        _y, rstd, t, _mean, _s = op.cpu.forward(x2, None, w, a, b, None, None, 1, eps, "tanh", 1.0, False)
        op.cpu.backward(dy2, x2, w, a, b, None, None, rstd, t, None, None, 1, "tanh", 1.0)

    return {
        "SeeDNorm layer": lambda: backward(layer(x)),
        "functional": lambda: backward(seednorm.seednorm(x, w, a, b)),
        "fused op": lambda: backward(op.seednorm_fused(x, w, a, b, **options)),
        "autograd Function": lambda: backward(_first(
            op._EagerFused.apply(x, w, a, b, None, None, None, 1, eps, "tanh", 1.0, False, "cpp"))),
        "kernels": kernels,
        "RMSNorm layer": lambda: backward(rms(x)),
    }


def _first(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """y of the eager Function's outputs: y alone, or first of a tuple (the code before this benchmark existed
    returned the statistics too; the profile of that code is committed beside this one's)."""
    return out[0] if isinstance(out, tuple) else out


def measure(calls: dict[str, Callable[[], None]], repeats: int, warmup: int, block: int = BLOCK) -> dict[str, float]:
    """Median thread CPU time (µs) of each call: blocks of ``block`` calls of one stage, the stages round-robin.

    In blocks, because a call right after another stage's pays for that stage's memory (allocator pages handed
    back and faulted in again: up to 100 µs after an RMSNorm backward at D=64), which is not this stage's cost;
    the median leaves the first call of a block out."""
    samples: dict[str, list[int]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(warmup):
            call()
    for _ in range(-(-repeats // block)):
        for name, call in calls.items():
            for _ in range(block):
                start = time.thread_time_ns()
                call()
                samples[name].append(time.thread_time_ns() - start)
    return {name: statistics.median(s) / 1000 for name, s in samples.items()}


def table(times: dict[int, dict[str, float]]) -> list[str]:
    """Markdown rows: what each layer of code adds (µs and % of the layer's call) per width, then the totals."""
    widths = sorted(times)
    head = "| part of one SeeDNorm forward + backward | " + " | ".join(f"D={d} µs (%)" for d in widths) + " |"
    lines = [head, "|---|" + "---|" * len(widths)]
    for i, stage in enumerate(STAGES):
        cells = []
        for d in widths:
            t = times[d]
            below = t[STAGES[i + 1]] if i + 1 < len(STAGES) else 0.0
            part = t[stage] - below
            cells.append(f"{part:.1f} ({100 * part / t[STAGES[0]]:.0f}%)")
        lines.append(f"| {WHAT[stage]} | " + " | ".join(cells) + " |")
    for label, key in (("**SeeDNorm layer, total**", "SeeDNorm layer"),
                       ("RMSNorm layer (F.rms_norm)", "RMSNorm layer")):
        lines.append(f"| {label} | " + " | ".join(f"{times[d][key]:.1f}" for d in widths) + " |")
    lines.append("| SeeDNorm ÷ RMSNorm | " + " | ".join(
        f"{times[d]['SeeDNorm layer'] / times[d]['RMSNorm layer']:.2f}×" for d in widths) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Time every stage at every width and write the table; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m seednorm_experiments.bench.profile",
                                description=__doc__.splitlines()[0])
    p.add_argument("--widths", action=Listed, metavar="D", type=positive_int, default=(48, 64, 128, 256, 384),
                   help="widths D (default: 48 64 128 256 384)")
    p.add_argument("--rows", type=positive_int, default=512, help="rows M = 8 × T (default: %(default)s)")
    p.add_argument("--repeats", type=positive_int, default=2000, help="calls per stage (default: %(default)s)")
    p.add_argument("--warmup", type=positive_int, default=50, help="calls per stage first (default: %(default)s)")
    p.add_argument("--out", type=out_file, help=f"the table (default: {bench_out(DEFAULT_NAME)})")
    p.add_argument("--note", default="", help="a line about the conditions (load, other jobs, the code timed)")
    args = p.parse_args(argv)
    if args.rows % 8:
        p.error(f"--rows must be a multiple of 8 (the batch of 8), got {args.rows}")
    out = cpu_table_out(p, args.out, DEFAULT_NAME)
    times, load = one_thread(lambda: {d: measure(stage_calls(d, args.rows), args.repeats, args.warmup)
                                      for d in args.widths})
    command = bench_command(p.prog, sys.argv[1:] if argv is None else argv, None if args.out else out)
    timing = (f"input (8, {args.rows // 8}, D) float32, impl auto (C++), γ α β, 1 head, training; each value "
              f"the median of {args.repeats} calls' thread CPU time, the stages round-robin in blocks of {BLOCK} calls "
              f"after {args.warmup} warm-up calls each; "
              "a row is a stage minus the next one (see `python -m seednorm_experiments.bench.profile --help`)")
    write_document(out, "Profile: where the time of one SeeDNorm call goes (CPU)", command, load, timing, args.note,
                   table(times))
    return 0


def cpu_table_out(parser: argparse.ArgumentParser, given: Path | None, default_name: str) -> Path:
    """The file a CPU timing table goes to (``given``, else ``runs/bench/<default_name>``, checked), after checking
    that the C++ kernels it times are there; the parser's error (exit 2) otherwise."""
    try:
        out = given or check_out_file(bench_out(default_name))
    except ValueError as e:
        parser.error(str(e))
    if op.cpu.unavailable() is not None:
        parser.error(f"the C++ kernels are unavailable here: {op.cpu.unavailable()}")
    return out


def one_thread(run: Callable[[], T]) -> tuple[T, str]:
    """``run()``'s result with one torch thread (the count restored after), and the load-average line around it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    before = os.getloadavg()
    try:
        result = run()
    finally:
        torch.set_num_threads(threads)
    after = os.getloadavg()
    load = (f"{', '.join(f'{v:.2f}' for v in before)} before, {', '.join(f'{v:.2f}' for v in after)} after")
    return result, load


def write_document(out: Path, title: str, command: str, load: str, timing: str, note: str, rows: list[str]) -> None:
    """Write (and print) a CPU timing table to ``out``: its title, the machine (timed with 1 torch thread), date,
    command, load average, how it was timed, the note if any, then ``rows``."""
    lines = [
        f"# {title}", "",
        f"- Machine: {machine()}; timed with 1 torch thread",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `{command}`",
        f"- Load average (1, 5, 15 min): {load}",
        f"- Timing: {timing}",
    ]
    if note:
        lines.append(f"- Note: {note}")
    text = "\n".join([*lines, "", *rows]) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
