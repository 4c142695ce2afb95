"""Kernel benchmark: SeeDNorm (each implementation) beside RMSNorm baselines, forward, backward and both.

    python -m seednorm_experiments.bench                          # default shapes, fp32 and bf16, on CUDA when present
    python -m seednorm_experiments.bench --device cpu --quick     # 4096×1024 only, fewer repetitions
    seednorm bench --shapes 4096x1024,4096x4096 --dtypes fp32
    seednorm bench --widths 1024,4096 --rows 4096,16384 --heads 1,16 --impls "seednorm triton,rmsnorm liger"

``--widths`` × ``--rows`` is the grid of ``benchmarks/gpu.sh`` (it replaces ``--shapes``); ``--heads`` runs SeeDNorm
with each head count (RMSNorm rows, which do not depend on it, are measured with the first only); ``--impls``
keeps the named candidates (a known one that cannot run here, e.g. Liger not installed, is listed as missing).
The copy bandwidth of the device (a device-to-device copy of ``--copy-mb`` MB, bytes read + written over time) is
measured in the same run; ``% copy`` columns are GB/s over it, ``% peak`` over ``--peak-gbps`` (the nominal HBM
peak). The report is rewritten after every cell, so a run stopped by a time limit leaves the cells it finished.
Under ``TRITON_INTERPRET=1`` the Triton op runs on CPU too (slowly: for dry runs of the GPU script).

Times are medians after warm-up. On CUDA each measurement is ``triton.testing.do_bench`` (L2 flushed between
calls; backward timed on a retained graph). On CPU the candidates are run round-robin, one repetition each in
turn, so that load from other processes on the machine spreads evenly over them.

Bytes model (the minimum traffic, the same for SeeDNorm and RMSNorm, spec §5), with s = bytes per element:
forward reads x and writes y (2·M·D·s); backward reads x and dy and writes dx (3·M·D·s); parameters and the
per-row statistics are counted too (weights read once per pass, gradients written once). GB/s = bytes / time.
Memory: peak allocated during forward+backward on CUDA, and on every device the bytes saved for backward
beyond the inputs and parameters (SeeDNorm's fused op keeps 1/RMS and σ(s), RMSNorm keeps 1/RMS).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from seednorm import functional as SF
from seednorm import ops
from seednorm.ops.op import HAS_TRITON

from ..args import check_out_file, nonnegative_int, out_file, positive_float, positive_int
from ..common import bench_command, bench_out, machine

SHAPES = ((4096, 1024), (4096, 4096), (16384, 4096), (4096, 16384))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EPS = 1e-6
BASELINE = "rmsnorm compiled"
BASELINES = (BASELINE, "rmsnorm eager")
"""The ``vs`` column's reference, the first of these that the run measures (the compiled RMSNorm unless
``--impls`` leaves it out, as the CPU dry run of the GPU script does: compiling on CPU costs more than the run)."""


@dataclass
class Case:
    """Inputs of one benchmark cell: x, dy (M, D) and the leaves whose gradients the backward computes."""

    x: Tensor
    dy: Tensor
    gamma: Tensor
    alpha: Tensor
    beta: Tensor

    @property
    def leaves(self) -> list[Tensor]:
        return [self.x, self.gamma, self.alpha, self.beta]


KNOWN_IMPLS = ("rmsnorm eager", BASELINE, "seednorm reference", "seednorm compiled", "seednorm triton",
               "seednorm cpp", "rmsnorm liger", "rmsnorm quack")


def make_case(m: int, d: int, dtype: torch.dtype, device: str) -> Case:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, d, generator=g).to(device, dtype).requires_grad_()
    dy = torch.randn(m, d, generator=g).to(device, dtype)
    gamma = torch.ones(d, device=device, dtype=dtype, requires_grad=True)
    alpha = torch.ones(d, device=device, dtype=dtype, requires_grad=True)
    beta = (torch.randn(d, generator=g) / d).to(device, dtype).requires_grad_()
    return Case(x, dy, gamma, alpha, beta)


def candidates(device: str, heads: int = 1) -> dict[str, Callable[[Case], Tensor]]:
    """name → forward(case) for every implementation available on this device (SeeDNorm with ``heads`` heads);
    the Triton op on CPU only under ``TRITON_INTERPRET=1``."""
    rms_compiled = torch.compile(lambda x, w: F.rms_norm(x, x.shape[-1:], w, EPS), dynamic=False)
    found: dict[str, Callable[[Case], Tensor]] = {
        "rmsnorm eager": lambda c: F.rms_norm(c.x, c.x.shape[-1:], c.gamma, EPS),
        BASELINE: lambda c: rms_compiled(c.x, c.gamma),
    }
    if device == "cuda":
        native = ["triton"]
    else:
        native = ["cpp"] if ops.cpu.unavailable() is None else []
        if os.environ.get("TRITON_INTERPRET") == "1" and HAS_TRITON:
            native.append("triton")
    impls = ["reference", "compiled", *native]
    for impl in impls:
        found[f"seednorm {impl}"] = lambda c, impl=impl: SF.seednorm(
            c.x, c.gamma, c.alpha, c.beta, num_heads=heads, eps=EPS, impl=impl
        )
    if device == "cuda":
        found.update(_third_party())
    return found


def copy_bandwidth(device: str, megabytes: float, reps: int = 10) -> float:
    """GB/s of a device-to-device copy of ``megabytes`` MB (bytes read + bytes written over the median time)."""
    n = max(1, int(megabytes * 1e6) // 4)
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    if device == "cuda":
        from triton.testing import do_bench

        seconds = do_bench(lambda: dst.copy_(src), warmup=5, rep=max(reps, 20), return_mode="median") / 1e3
    else:
        samples = []
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            dst.copy_(src)
            samples.append(time.perf_counter() - t0)
        seconds = statistics.median(samples[1:])
    return 2 * src.nbytes / seconds / 1e9


def _third_party() -> dict[str, Callable[[Case], Tensor]]:
    """Liger's and Quack's RMSNorm, when installed and callable as expected (checked on a small input)."""
    found: dict[str, Callable[[Case], Tensor]] = {}
    try:
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction

        found["rmsnorm liger"] = lambda c: LigerRMSNormFunction.apply(c.x, c.gamma, EPS)
    except ImportError:
        pass
    try:
        from quack.rmsnorm import rmsnorm as quack_rmsnorm

        found["rmsnorm quack"] = lambda c: quack_rmsnorm(c.x, c.gamma, eps=EPS)
    except ImportError:
        pass
    probe = make_case(256, 1024, torch.bfloat16, "cuda")
    for name, fn in list(found.items()):
        try:
            fn(probe).backward(probe.dy)
        except Exception as err:  # a third-party API that changed: report and go on without it
            print(f"skipping {name}: {type(err).__name__}: {err}", file=sys.stderr)
            del found[name]
    return found


def traffic(m: int, d: int, dtype: torch.dtype) -> dict[str, int]:
    """The bytes model of the module docstring, for forward, backward and both."""
    s = torch.finfo(dtype).bits // 8
    params = 3 * d * s
    stats = 2 * m * 4
    fwd = 2 * m * d * s + params + stats
    bwd = 3 * m * d * s + 2 * params + stats
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def saved_bytes(fn: Callable[[Case], Tensor], case: Case) -> int:
    """Bytes autograd keeps for backward beyond the inputs and parameters (unique storages)."""
    known = {t.untyped_storage().data_ptr() for t in case.leaves}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in known:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(case)
    return sum(seen.values())


def _clear_grads(case: Case) -> None:
    for t in case.leaves:
        t.grad = None


def time_cpu(fns: dict[str, Callable[[Case], Tensor]], case: Case, reps: int, warmup: int) -> dict[str, dict]:
    """Median fwd, bwd, fwd+bwd seconds per candidate, candidates interleaved repetition by repetition."""
    samples = {name: {"fwd": [], "bwd": [], "fwd+bwd": []} for name in fns}
    for rep in range(warmup + reps):
        for name, fn in fns.items():
            _clear_grads(case)
            t0 = time.perf_counter()
            y = fn(case)
            t1 = time.perf_counter()
            y.backward(case.dy)
            t2 = time.perf_counter()
            if rep >= warmup:
                for key, value in (("fwd", t1 - t0), ("bwd", t2 - t1), ("fwd+bwd", t2 - t0)):
                    samples[name][key].append(value)
    return {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}


def time_cuda(fns: dict[str, Callable[[Case], Tensor]], case: Case, reps: int, warmup: int) -> dict[str, dict]:
    """Median fwd, bwd (retained graph), fwd+bwd seconds per candidate with ``triton.testing.do_bench``."""
    from triton.testing import do_bench

    out = {}
    for name, fn in fns.items():
        def fwd_bwd(fn=fn):
            fn(case).backward(case.dy)

        y = fn(case)
        kw = {"warmup": warmup, "rep": reps, "return_mode": "median", "grad_to_none": case.leaves}
        out[name] = {
            "fwd": do_bench(lambda fn=fn: fn(case), **kw) / 1e3,
            "bwd": do_bench(lambda y=y: y.backward(case.dy, retain_graph=True), **kw) / 1e3,
            "fwd+bwd": do_bench(fwd_bwd, **kw) / 1e3,
        }
        del y
    return out


def peak_cuda_bytes(fn: Callable[[Case], Tensor], case: Case) -> int:
    """Peak memory allocated during one forward+backward, above what was allocated before it."""
    _clear_grads(case)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn(case).backward(case.dy)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def device_slug(device: str) -> str:
    if device == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")


def parse_shapes(text: str) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"shapes must look like 4096x1024,4096x4096, got {text!r}")
    return shapes


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma list of positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="seednorm bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shapes", type=parse_shapes, default=list(SHAPES),
                   help="MxD,... (default: " + ",".join(f"{m}x{d}" for m, d in SHAPES) + ")")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16, fp16")
    p.add_argument("--quick", action="store_true", help="4096x1024 only and fewer repetitions (CPU smoke run)")
    p.add_argument("--reps", type=positive_int, default=None, help="CPU: timed repetitions; CUDA: do_bench rep in ms")
    p.add_argument("--warmup", type=nonnegative_int, default=None,
                   help="CPU: untimed repetitions; CUDA: do_bench warmup ms")
    p.add_argument("--out", type=out_file, default=None,
                   help=f"results file (default: {bench_out('<device>.md')})")
    p.add_argument("--note", default="", help="a line written under the header (e.g. what else ran meanwhile)")
    p.add_argument("--peak-gbps", type=positive_float, default=None,
                   help="nominal memory bandwidth peak: adds '%% peak' columns")
    p.add_argument("--widths", type=_int_list, default=None, help="D,... : with --rows, the grid of shapes "
                   "(replaces --shapes)")
    p.add_argument("--rows", type=_int_list, default=None, help="M,... : with --widths, the grid of shapes")
    p.add_argument("--heads", type=_int_list, default=[1], help="SeeDNorm head counts, comma list (default: 1)")
    p.add_argument("--impls", default=None, help="comma list of candidates to keep (default: every one available; "
                   "known: " + ", ".join(KNOWN_IMPLS) + ")")
    p.add_argument("--copy-mb", type=positive_float, default=None,
                   help="size of the copy that measures the device's bandwidth (default: 2048 on CUDA, 64 on CPU)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if (args.widths is None) != (args.rows is None):
        p.error("--widths and --rows go together")
    if args.widths is not None:
        args.shapes = [(m, d) for d in args.widths for m in args.rows]
    if args.quick:
        args.shapes = [(4096, 1024)]
    bad_heads = [(m, d, h) for m, d in args.shapes for h in args.heads if d % h]
    if bad_heads:
        p.error(f"--heads must divide every width, got {bad_heads[0][2]} for width {bad_heads[0][1]}")
    if args.impls is not None:
        args.impls = [name.strip() for name in args.impls.split(",") if name.strip()]
        unknown = sorted(set(args.impls) - set(KNOWN_IMPLS))
        if unknown or not args.impls:
            p.error(f"--impls: unknown {unknown or args.impls}; known: {', '.join(KNOWN_IMPLS)}")
    args.copy_mb = args.copy_mb or (2048.0 if args.device == "cuda" else 64.0)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not dtypes or any(d not in DTYPES for d in dtypes):
        p.error(f"--dtypes must be a comma list of {sorted(DTYPES)}, got {args.dtypes!r}")
    args.dtypes = dtypes
    cpu = args.device == "cpu"
    args.reps = args.reps or (10 if args.quick else 30 if cpu else 200)
    args.warmup = (3 if cpu else 50) if args.warmup is None else args.warmup
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available")
    args.default_out = args.out is None
    try:  # the default, like --out, is checked before the benchmark runs
        args.out = check_out_file(args.out or bench_out(f"{device_slug(args.device)}.md"))
    except ValueError as e:
        p.error(str(e))
    return args


def _selected(fns: dict[str, Callable[[Case], Tensor]], args: argparse.Namespace) -> dict[str, Callable]:
    return fns if args.impls is None else {k: v for k, v in fns.items() if k in args.impls}


def run(args: argparse.Namespace, on_cell: Callable[[list[dict], str], None] | None = None
        ) -> tuple[list[dict], str]:
    """Measure every cell; returns the rows and the markdown report (``on_cell(rows, report)`` after each cell)."""
    torch._dynamo.config.recompile_limit = 64  # one compiled graph per shape and dtype, for every candidate
    per_heads = {h: _selected(candidates(args.device, h), args) for h in args.heads}
    available = set().union(*per_heads.values())
    args.missing = [] if args.impls is None else [n for n in args.impls if n not in available]
    if args.missing:
        print(f"not measured (cannot run here): {', '.join(args.missing)}", file=sys.stderr)
    args.baseline = next((b for b in BASELINES if b in per_heads[args.heads[0]]), None)
    args.copy_gbps = copy_bandwidth(args.device, args.copy_mb)
    print(f"copy bandwidth: {args.copy_gbps:,.4g} GB/s ({args.copy_mb:g} MB device-to-device)", flush=True)
    rows: list[dict] = []
    for m, d in args.shapes:
        for dt in args.dtypes:
            case = make_case(m, d, DTYPES[dt], args.device)
            for h in args.heads:
                fns = per_heads[h] if h == args.heads[0] else {
                    k: v for k, v in per_heads[h].items() if not k.startswith("rmsnorm")}
                if not fns:
                    continue
                timer = time_cuda if args.device == "cuda" else time_cpu
                times = timer(fns, case, args.reps, args.warmup)
                bytes_ = traffic(m, d, DTYPES[dt])
                base = _baseline_times(rows, times, m, d, dt, args.baseline)
                for name, fn in fns.items():
                    rows.append(_row(args, name, fn, case, times[name], bytes_, base, m, d, dt, h))
                    print(" | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in rows[-1].values()),
                          flush=True)
                if on_cell:
                    on_cell(rows, report(rows, args))
            del case
    return rows, report(rows, args)


def _baseline_times(rows: list[dict], times: dict[str, dict], m: int, d: int, dt: str,
                    baseline: str | None) -> float | None:
    """The baseline's (:data:`BASELINES`) forward+backward seconds of this shape and dtype: measured now or in an
    earlier head count's cell (None when no baseline is among the candidates)."""
    if baseline is None:
        return None
    if baseline in times:
        return times[baseline]["fwd+bwd"]
    for row in rows:
        if row["shape"] == f"{m}x{d}" and row["dtype"] == dt and row["impl"] == baseline:
            return row["fwd+bwd ms"] / 1e3
    return None


def _row(args: argparse.Namespace, name: str, fn: Callable[[Case], Tensor], case: Case, times: dict[str, float],
         bytes_: dict[str, int], base: float | None, m: int, d: int, dt: str, heads: int) -> dict:
    """One table row: times, GB/s, % of the measured copy bandwidth and of the nominal peak, memory."""
    row: dict = {"shape": f"{m}x{d}", "dtype": dt, "heads": heads, "impl": name,
                 **{k + " ms": v * 1e3 for k, v in times.items()}}
    for k in ("fwd", "bwd", "fwd+bwd"):
        row[f"{k} GB/s"] = bytes_[k] / times[k] / 1e9
    for k in ("fwd", "bwd", "fwd+bwd"):
        row[f"{k} % copy"] = 100 * row[f"{k} GB/s"] / args.copy_gbps
    if args.peak_gbps:
        for k in ("fwd", "bwd", "fwd+bwd"):
            row[f"{k} % peak"] = 100 * row[f"{k} GB/s"] / args.peak_gbps
    row[f"vs {args.baseline or 'rmsnorm'}"] = times["fwd+bwd"] / base if base else "n/a (no RMSNorm measured)"
    row["saved MB"] = saved_bytes(fn, case) / 2**20
    if args.device == "cuda":
        row["peak MB"] = peak_cuda_bytes(fn, case) / 2**20
    return row


def report(rows: list[dict], args: argparse.Namespace) -> str:
    """Markdown: machine, versions, command, the bytes model and one table."""
    auto = ops.resolve_impl("auto", torch.empty(0, device=args.device))
    default_out = args.out if args.default_out else None  # the command line then names where the table went
    cols = list(rows[0])
    lines = [
        f"# SeeDNorm kernel benchmark: {args.device}",
        "",
        f"- Machine: {machine()}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Command: `{bench_command('python -m seednorm_experiments.bench', args.argv, default_out)}`",
        f"- Timing: median of {args.reps} {'ms of do_bench' if args.device == 'cuda' else 'repetitions'} after "
        f"{args.warmup} warm-up; `impl=\"auto\"` runs `seednorm {auto}` here",
        "- Bytes model: forward 2·M·D·s, backward 3·M·D·s (s = bytes per element), plus parameters and per-row "
        "statistics; GB/s = bytes / time",
        (f"- `vs {args.baseline}`: forward+backward time over the {args.baseline.split()[-1]} RMSNorm's in the same "
         "run" + ("" if args.baseline == BASELINE else " (the compiled one was not measured)") if args.baseline else
         "- `vs rmsnorm`: n/a, no RMSNorm among the implementations measured"),
        "- `saved MB`: tensors autograd keeps for backward beyond inputs and parameters"
        + ("; `peak MB`: peak allocated during forward+backward" if args.device == "cuda" else ""),
    ]
    lines.append(f"- `% copy`: GB/s over the copy bandwidth measured in this run, {args.copy_gbps:,.4g} GB/s (a "
                 f"{args.copy_mb:g} MB device-to-device copy, bytes read + written)")
    if args.peak_gbps:
        lines.append(f"- `% peak`: GB/s over the nominal memory bandwidth peak, {args.peak_gbps:g} GB/s")
    if args.missing:
        lines.append(f"- Not measured (not installed or failed its probe): {', '.join(args.missing)}")
    if args.note:
        lines.append(f"- Note: {args.note}")
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m seednorm_experiments.bench`` and ``seednorm bench``."""
    args = parse_args(argv)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, text = run(args, on_cell=lambda rows, text: out.write_text(text))
    out.write_text(text)
    print()
    print(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
