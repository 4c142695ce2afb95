"""Compile every Triton kernel specialization the launchers start, for real GPU targets, on a machine without a GPU.

Run by test_gpu_compile.py in a subprocess, because TRITON_INTERPRET must be unset before triton is imported:
    env -u TRITON_INTERPRET PYTHONPATH=src:tests/ops python tests/ops/compile_check.py
Prints one JSON line: {"launches": calls' launches seen, "kernels": one record per (target, specialization)}.

A stand-in driver (no CUDA needed) makes each target current in turn; ``forward`` and ``backward`` of
``seednorm.ops.triton`` run on CPU tensors with a ``launch`` that only records (kernel, grid, arguments), so the
specializations come from the launchers' own choices (row or chunked layout by width, tile, warps, constexprs).
Launches with the same signature (kernel, argument dtypes, Triton's integer and alignment specializations,
constexprs, options) are compiled once per target with ``warmup_kernel``: Triton lowers them to PTX and runs
ptxas to a cubin, and nothing is launched. cuobjdump then reads each cubin's registers and stack (spills).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from itertools import product
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.runtime.driver import driver

import seednorm.ops.triton as kernels
from seednorm.ops.sigma import ACTIVATION_CODES

TARGETS = {"sm_90": GPUTarget("cuda", 90, 32), "sm_80": GPUTarget("cuda", 80, 32)}
MAX_SHARED = {90: 232448, 80: 166912}  # opt-in shared memory per block (bytes): the driver refuses more at launch
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ROWS = 5  # more rows than the CPU grid's 4 programs, so row counts and rows per program are generic integers


class StandInDriver(DriverBase):
    """A CUDA driver without a device: device i has target ``targets[i]``; anything that would run refuses."""

    def __init__(self, targets: list[GPUTarget]) -> None:
        self.targets = targets
        self.device = 0

    @classmethod
    def is_active(cls) -> bool:
        return False  # never picked on its own: set with driver.set_active

    def get_current_target(self) -> GPUTarget:
        return self.targets[self.device]

    def get_current_device(self) -> int:
        return self.device

    def set_current_device(self, device: int) -> None:
        self.device = device

    def get_current_stream(self, device: int) -> int:
        return 0

    def get_device_capability(self, device: int) -> tuple[int, int]:
        arch = self.targets[device].arch
        return arch // 10, arch % 10

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_device_interface(self) -> Any:
        raise RuntimeError("the stand-in driver compiles only; there is no device")

    def map_python_to_cpp_type(self, ty: str) -> str:
        raise RuntimeError("the stand-in driver compiles only; it builds no launcher")

    def get_benchmarker(self) -> Any:
        raise RuntimeError("the stand-in driver compiles only; it benchmarks nothing")


@dataclass
class Launch:
    kernel: Any
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    calls: list[str] = field(default_factory=list)  # the calls that start this specialization

    @property
    def signature(self) -> tuple:
        """What Triton compiles a specialization for: dtypes, integers equal to 1 or divisible by 16, pointers
        aligned to 16 bytes, constexprs and options (jit.py's binder keys on the same)."""

        def spec(a: Any) -> Any:
            if isinstance(a, torch.Tensor):
                return str(a.dtype), a.data_ptr() % 16 == 0
            if isinstance(a, bool) or not isinstance(a, int):
                return type(a).__name__
            return "1" if a == 1 else "16" if a % 16 == 0 else "int"

        return self.kernel.__name__, tuple(map(spec, self.args)), tuple(sorted(self.kwargs.items()))


def widths() -> list[tuple[int, int]]:
    """(heads, D) on both sides of MAX_TILE_BWD and MAX_TILE_FWD, so both directions take both layouts.

    Row tiles pad to (next_pow2(H), next_pow2(D/H)); 8 channels per head past a limit double the padded tile.
    """
    fwd, bwd = kernels.MAX_TILE_FWD, kernels.MAX_TILE_BWD
    return [
        (1, 40),  # narrow, D not a multiple of 16: row both ways, 4 warps
        (1, bwd),  # the widest backward row tile
        (1, fwd // 2),  # the forward row tile at 16 warps; backward chunked
        (1, fwd),  # the widest forward row tile; backward chunked
        (1, fwd + 8),  # chunked both ways
        (3, 3 * 40),  # three heads padded to four
        (3, 3 * (fwd // 4)),  # the widest forward row tile with three heads; backward chunked
        (3, 3 * (fwd // 4 + 8)),  # chunked both ways, a chunk loop per head
        (16, bwd),  # sixteen heads at the widest backward row tile
        (16, 16 * (fwd // 16 + 8)),  # chunked both ways, narrower chunks (BLOCK < CHUNK)
    ]


# The options at each width: each σ once, every x dtype and parameter dtype, γ and residual in all four pairings,
# and the layer's forms: plain, the vision recipe (dropout), a converted LayerNorm (centering and bias), both.
# Dropout: "generated" in the kernels (what the layer runs), with a DTensor shard's global "rows", or a given "mask".
OPTIONS = [  # (x dtype, parameter dtype, γ, residual, dropout, centering, bias)
    (torch.float32, torch.float32, True, True, None, False, False),
    (torch.bfloat16, torch.bfloat16, False, True, "generated", True, True),
    (torch.float16, torch.float32, True, False, "mask", False, False),
    (torch.bfloat16, torch.float16, False, False, "rows", True, True),
]


def calls() -> list[tuple[str, str, dict[str, Any]]]:
    """(name, "forward" | "backward", keyword arguments) of the calls whose launches cover the kernels.

    At every width of ``widths()`` the four ``OPTIONS``, each with a different σ (rotating with the width, so
    σ meets several dtypes); at the widest row tiles (one head) also every (x dtype, parameter dtype) pair with
    γ, residual, mask, centering and bias, the launches that hold the most registers.
    """
    activations = list(ACTIVATION_CODES)
    configs = [(heads, d, *option, activations[(j + k) % len(activations)])
               for k, (heads, d) in enumerate(widths()) for j, option in enumerate(OPTIONS)]
    for d in sorted({kernels.MAX_TILE_BWD, kernels.MAX_TILE_FWD}):
        configs += [(1, d, xdt, pdt, True, True, "generated", True, True, "tanh")
                    for xdt, pdt in product(DTYPES, DTYPES)]
    out = []
    for heads, d, xdt, pdt, has_w, res, keep, center, bias, act in configs:
        flags = {"-noweight": not has_w, "-res": res, f"-{keep}": keep, "-center": center, "-bias": bias}
        name = f"{d}-h{heads}-{str(xdt)[6:]}-p{str(pdt)[6:]}-{act}" + "".join(f for f, on in flags.items() if on)
        x = torch.randn(ROWS, d, dtype=xdt)
        p = [torch.randn(d, dtype=pdt) for _ in range(4)]
        common = {"weight": p[0] if has_w else None, "alpha": p[1], "beta": p[2], "bias": p[3] if bias else None,
                  "keep": torch.rand(ROWS, d) if keep == "mask" else None, "num_heads": heads, "activation": act,
                  "dot_scale": 1.0}
        if keep in ("generated", "rows"):
            common.update(rng=torch.tensor([1, 2]), rows=torch.arange(ROWS) if keep == "rows" else None, dropout=0.1)
        out.append((name, "forward", {"x": x, "residual": torch.randn_like(x) if res else None, "eps": 1e-5,
                                      "center": center, **common}))
        out.append((name, "backward", {"dy": torch.randn_like(x), "x": x, "rstd": torch.ones(ROWS),
                                       "t": torch.zeros(ROWS, heads), "mean": torch.zeros(ROWS) if center else None,
                                       "dsummed": torch.randn_like(x) if res else None, **common}))
    return out


def _record(into: list[Launch], kernel: Any, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    into.append(Launch(kernel, grid, args, kwargs))


def specializations() -> tuple[int, list[Launch]]:
    """(number of launches the calls make, one Launch per distinct signature)."""
    unique: dict[tuple, Launch] = {}
    seen = 0
    for name, direction, arguments in calls():
        recorded: list[Launch] = []
        getattr(kernels, direction)(**arguments, launch=partial(_record, recorded))
        seen += len(recorded)
        for launch in recorded:
            unique.setdefault(launch.signature, launch).calls.append(f"{direction} {name}")
    return seen, list(unique.values())


def resources(cubin_path: str) -> dict[str, int]:
    """Registers per thread, stack bytes per thread (register spills: ptxas -v counts the same bytes for these
    kernels), shared and local bytes of the one function in a cubin, from cuobjdump."""
    tool = triton.knobs.nvidia.cuobjdump.path
    out = subprocess.run([tool, "--dump-resource-usage", cubin_path], capture_output=True, text=True, check=True)
    line = next(ln for ln in out.stdout.splitlines() if "REG:" in ln)
    fields = dict(f.split(":", 1) for f in line.split())
    return {k.lower(): int(fields[k]) for k in ("REG", "STACK", "SHARED", "LOCAL")}


def compile_all(launches: list[Launch], target_names: list[str]) -> list[dict[str, Any]]:
    """One record per (target, launch): what Triton produced and the cubin's resources, or the error raised."""
    stand_in = StandInDriver([TARGETS[n] for n in target_names])
    driver.set_active(stand_in)
    records = []
    for device, target_name in enumerate(target_names):
        stand_in.device = device  # Triton keeps a binder and a kernel cache per device, so per target
        for launch in launches:
            dtypes = {n: str(a.dtype)[6:] for n, a in zip(launch.kernel.arg_names, launch.args, strict=False)
                      if isinstance(a, torch.Tensor)}
            record: dict[str, Any] = {"target": target_name, "kernel": launch.kernel.__name__,
                                      "options": launch.kwargs, "dtypes": dtypes, "calls": launch.calls}
            start = time.perf_counter()
            try:
                compiled = kernels.warmup_kernel(launch.kernel, launch.grid, *launch.args, **launch.kwargs)
                md = compiled.metadata
                record.update(asm=sorted(compiled.asm), arch=md.target.arch, num_warps=md.num_warps,
                              shared=md.shared, max_shared=MAX_SHARED[md.target.arch])
                cubin = next(p for f, p in compiled.metadata_group.items() if f.endswith(".cubin"))
                record.update(resources(cubin))
            except Exception as err:  # report every specialization, not just the first failure
                record["error"] = f"{type(err).__name__}: {err}"[-3000:]
            record["seconds"] = round(time.perf_counter() - start, 3)
            records.append(record)
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=list(TARGETS), help="default: all of them")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("unset TRITON_INTERPRET: the interpreter compiles nothing", file=sys.stderr)
        return 2
    seen, launches = specializations()
    print(json.dumps({"launches": seen, "kernels": compile_all(launches, args.target or list(TARGETS))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
