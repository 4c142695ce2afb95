"""Triton launch tuning: time the fused op's forward and backward kernels at every (num_warps, num_stages) of a small
grid, per width, and write the best configuration of each beside the one the dispatcher picks today.

    python -m seednorm_experiments.bench.tuning --out benchmarks/results/tuning.md      # CUDA, bf16, M=16384
    TRITON_INTERPRET=1 python -m seednorm_experiments.bench.tuning --device cpu --widths 64 --rows 8 --reps 1

Each pass (forward: ``seednorm.ops.triton.forward``; backward: ``.backward``) is called with a ``launch`` that
starts every kernel of the pass (the row kernel, or the stats and apply kernels of the chunked layout) with the
candidate ``num_warps`` and ``num_stages``; the dispatcher's own choice is timed the same way as "default". Times
are ``triton.testing.do_bench`` medians on CUDA, medians of ``--reps`` calls elsewhere. Writes (after every width)
the markdown table to ``--out`` (default ``runs/bench/tuning.md``) and ``{"fwd": {D: [num_warps, num_stages]},
"bwd": {...}}`` of the best configurations to the same name with ``.json`` (the table to copy into
``seednorm.ops.triton`` once measured on the GPU). A configuration that fails to compile or launch (too many
registers for its warps) is listed as failed and skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

from ..args import check_out_file, out_file, positive_int
from ..common import bench_command, bench_out, machine
from .kernels import DTYPES, EPS

__all__ = ["WARPS", "STAGES", "main", "tune"]

WARPS = (4, 8, 16, 32)
STAGES = (1, 2, 3)


def _timer(device: str, reps: int) -> Callable[[Callable[[], object]], float]:
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: do_bench(fn, warmup=5, rep=max(reps, 10), return_mode="median") / 1e3

    def cpu(fn: Callable[[], object]) -> float:
        fn()
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    return cpu


def _passes(m: int, d: int, dtype: torch.dtype, device: str) -> dict[str, Callable[..., object]]:
    """{"fwd", "bwd"} → call(launch) running that pass of the op once on fixed inputs (one head, tanh)."""
    from seednorm.ops import triton as kernels

    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, d, generator=g).to(device, dtype)
    dy = torch.randn(m, d, generator=g).to(device, dtype)
    gamma, alpha = torch.ones(d, device=device, dtype=dtype), torch.ones(d, device=device, dtype=dtype)
    beta = (torch.randn(d, generator=g) / d).to(device, dtype)
    _, rstd, t, _, _ = kernels.forward(x, None, gamma, alpha, beta, None, None, 1, EPS, "tanh", 1.0, False)
    return {
        "fwd": lambda launch: kernels.forward(x, None, gamma, alpha, beta, None, None, 1, EPS, "tanh", 1.0, False,
                                              launch=launch),
        "bwd": lambda launch: kernels.backward(dy, x, gamma, alpha, beta, None, None, rstd, t, None, None, 1, "tanh",
                                               1.0, launch=launch),
    }


def _launch_with(num_warps: int, num_stages: int) -> Callable[..., None]:
    def launch(kernel, grid, *args, **kwargs) -> None:
        kernel[grid](*args, **{**kwargs, "num_warps": num_warps, "num_stages": num_stages})

    return launch


def tune(widths: list[int], m: int, dtype: str, device: str, reps: int, warps: tuple[int, ...] = WARPS,
         stages: tuple[int, ...] = STAGES, on_width: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """One row per (width, pass, configuration): ``config`` ("default" or "w<warps> s<stages>"), ``ms`` (None when
    it failed), ``error``; ``on_width(rows)`` after each width."""
    from seednorm.ops import triton as kernels

    timer = _timer(device, reps)
    rows = []
    for d in widths:
        for name, call in _passes(m, d, DTYPES[dtype], device).items():
            configs: list[tuple[str, Callable[..., None]]] = [("default", kernels.launch_kernel)]
            configs += [(f"w{w} s{s}", _launch_with(w, s)) for w in warps for s in stages]
            for label, launch in configs:
                row = {"width": d, "pass": name, "config": label, "ms": None, "error": ""}
                try:
                    row["ms"] = timer(lambda call=call, launch=launch: call(launch)) * 1e3
                except Exception as err:  # out of registers or shared memory at this many warps: skip it
                    row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''}"
                rows.append(row)
                print(f"{d} {name} {label}: " + (f"{row['ms']:.4g} ms" if row["ms"] is not None else row["error"]),
                      flush=True)
        if on_width:
            on_width(rows)
    return rows


def best(rows: list[dict]) -> dict[str, dict[int, list[int]]]:
    """{"fwd"|"bwd": {width: [num_warps, num_stages]}} of the fastest configuration that ran (not "default")."""
    out: dict[str, dict[int, list[int]]] = {"fwd": {}, "bwd": {}}
    for (d, name) in dict.fromkeys((r["width"], r["pass"]) for r in rows):
        ok = [r for r in rows if r["width"] == d and r["pass"] == name and r["ms"] is not None
              and r["config"] != "default"]
        if ok:
            w, s = min(ok, key=lambda r: r["ms"])["config"].split()
            out[name][d] = [int(w[1:]), int(s[1:])]
    return out


def report(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    """Markdown: per width and pass, the default's time, the best configuration's and the speedup."""
    lines = ["# Triton launch tuning: num_warps × num_stages per width", "",
             f"- Machine: {machine()}", f"- Command: `{command}`",
             f"- Shape: {args.rows} rows × width, {args.dtype}, 1 head; configurations: num_warps {list(args.warps)} × "
             f"num_stages {list(args.stages)}", "",
             "| width | pass | default ms | best | best ms | default / best | failed |",
             "|---|---|---|---|---|---|---|"]
    chosen = best(rows)
    for (d, name) in dict.fromkeys((r["width"], r["pass"]) for r in rows):
        mine = [r for r in rows if r["width"] == d and r["pass"] == name]
        default = next((r["ms"] for r in mine if r["config"] == "default"), None)
        pick = chosen[name].get(d)
        best_ms = next((r["ms"] for r in mine if pick and r["config"] == f"w{pick[0]} s{pick[1]}"), None)
        failed = sum(r["ms"] is None for r in mine)
        speed = f"{default / best_ms:.3f}" if default and best_ms else "–"
        lines.append(f"| {d} | {name} | {default:.4g} | w{pick[0]} s{pick[1]} | {best_ms:.4g} | {speed} | {failed} |"
                     if default and pick and best_ms else f"| {d} | {name} | – | – | – | – | {failed} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m seednorm_experiments.bench.tuning``: tune, write the table and the JSON; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m seednorm_experiments.bench.tuning", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--widths", default="1024,2048,4096,8192,16384", help="comma list (default: %(default)s)")
    p.add_argument("--rows", type=positive_int, default=16384, help="M (default: %(default)s)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--reps", type=positive_int, default=20, help="CUDA: do_bench ms; CPU: calls (default: 20)")
    p.add_argument("--warps", default=",".join(map(str, WARPS)), help="num_warps to try (default: %(default)s)")
    p.add_argument("--stages", default=",".join(map(str, STAGES)), help="num_stages to try (default: %(default)s)")
    p.add_argument("--out", type=out_file, help=f"the table; the JSON beside it (default: {bench_out('tuning.md')})")
    args = p.parse_args(argv)
    try:
        widths, warps, stages = ([int(v) for v in text.split(",") if v.strip()]
                                 for text in (args.widths, args.warps, args.stages))
    except ValueError:
        p.error("--widths, --warps and --stages take comma lists of integers")
    args.warps, args.stages = tuple(warps), tuple(stages)
    try:
        out = args.out or check_out_file(bench_out("tuning.md"))
    except ValueError as e:
        p.error(str(e))
    command = bench_command(p.prog, sys.argv[1:] if argv is None else argv, None if args.out else out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(rows: list[dict]) -> None:  # after every width: a run stopped by a time limit keeps what it measured
        out.write_text(report(rows, args, command))
        out.with_suffix(".json").write_text(json.dumps(best(rows), indent=1) + "\n")

    write(tune(widths, args.rows, args.dtype, args.device, args.reps, args.warps, args.stages, on_width=write))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
