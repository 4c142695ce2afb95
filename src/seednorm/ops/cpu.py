"""The CPU path: hand-written C++/OpenMP kernels (``cpu_kernels.cpp``), one pass per row, built on first use.

Forward and backward each run as one parallel loop over rows: a row is read from memory once and stays in L1
for its second sweep, and the backward's dγ, dα, dβ are float32 partial sums per thread, added up at the end.
This reads x (and dy) once where Inductor's kernels (``compiled.py``) and compiled RMSNorm read them twice, and
waits on fewer OpenMP barriers, which matters when the cores are shared.

The library is compiled with the system C++ compiler (``$CXX`` or g++, the one TorchInductor needs anyway)
into ``$SEEDNORM_CACHE`` (default ~/.cache/seednorm) under a hash of the source and flags, and loaded with
ctypes; the foreign calls release the GIL. Threads follow ``torch.get_num_threads()``.
All tensors here are 2-D (M, D) with a contiguous last dim; x may be float32, bfloat16 or float16.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
ACT_CODES = {"tanh": 0, "sigmoid": 1, "hardtanh": 2, "softsign": 3}

_P, _I64, _F, _I = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
_SIGNATURES = {
    "seednorm_forward": [_P, _I64, _P, _I64, _P, _I64, _P, _I64, _I, _P, _P, _P, _I, _P, _P, _I64, _I64, _I64,
                         _F, _F, _I, _I],
    "seednorm_backward": [_P, _I64, _P, _I64, _P, _I64, _P, _I64, _I, _P, _P, _P, _I, _P, _P, _P, _P, _P, _I64,
                          _I64, _I64, _F, _I, _I],
}


def compiler() -> str | None:
    """The C++ compiler to build with, or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


@functools.cache
def library() -> ctypes.CDLL:
    """Build (once per source, flags and machine) and load the kernels."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("the CPU kernels need a C++ compiler (set $CXX or install g++); or use impl='compiled'")
    code = SOURCE.read_bytes()
    key = hashlib.sha256(code + " ".join([cxx, *FLAGS, platform.machine(), platform.node()]).encode()).hexdigest()
    cache = Path(os.environ.get("SEEDNORM_CACHE", Path.home() / ".cache" / "seednorm"))
    target = cache / f"cpu_kernels_{key[:16]}.so"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            built = Path(tmp) / target.name
            proc = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"building the CPU kernels failed:\n{proc.stderr[-4000:]}")
            os.replace(built, target)  # atomic: concurrent builders each publish a complete file
    lib = ctypes.CDLL(str(target))
    for name, argtypes in _SIGNATURES.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = None
    return lib


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _params(weight: Tensor | None, alpha: Tensor, beta: Tensor) -> tuple[list[Tensor | None], int]:
    """γ, α, β contiguous in one dtype the kernels read: their own when they share a supported one, else float32
    (exact for every supported dtype, so mixed dtypes lose nothing); no copy when they already are.

    The kernels read raw pointers, so a parameter that is not a CPU tensor is refused here (a meta tensor's
    pointer is null, which the kernels would take for an absent parameter).
    """
    params = [weight, alpha, beta]
    for name, p in zip(("weight", "alpha", "beta"), params, strict=True):
        if p is not None and p.device.type != "cpu":
            raise ValueError(f"impl='cpp' needs CPU parameters, got {name} on {p.device}")
    dtypes = {p.dtype for p in params if p is not None}
    dtype = alpha.dtype if len(dtypes) == 1 and alpha.dtype in DTYPES else torch.float32
    if not all(p is None or (p.dtype == dtype and p.is_contiguous()) for p in params):
        params = [None if p is None else p.detach().to(dtype).contiguous() for p in params]
    return params, DTYPES[dtype]


def forward(
    x: Tensor, residual: Tensor | None, weight: Tensor | None, alpha: Tensor, beta: Tensor, num_heads: int,
    eps: float, activation: str, dot_scale: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """(y, 1/RMS (M,), σ(s) (M, H) float32, x + residual or None) for x, residual (M, D)."""
    m, d = x.shape
    y = torch.empty((m, d), dtype=x.dtype)
    rstd = torch.empty(m, dtype=torch.float32)
    t = torch.empty((m, num_heads), dtype=torch.float32)
    summed = None if residual is None else torch.empty((m, d), dtype=x.dtype)
    (w, a, b), pdtype = _params(weight, alpha, beta)
    library().seednorm_forward(
        _ptr(x), x.stride(0), _ptr(residual), 0 if residual is None else residual.stride(0),
        _ptr(summed), d, _ptr(y), d, DTYPES[x.dtype], _ptr(w), _ptr(a), _ptr(b), pdtype,
        _ptr(rstd), _ptr(t), m, d, num_heads, eps, dot_scale, ACT_CODES[activation], torch.get_num_threads(),
    )
    return y, rstd, t, summed


def backward(
    dy: Tensor, x: Tensor, weight: Tensor | None, alpha: Tensor, beta: Tensor, rstd: Tensor, t: Tensor,
    dsummed: Tensor | None, num_heads: int, activation: str, dot_scale: float,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """(dx, dγ, dα, dβ) for dy, x (M, D); ``dsummed`` is added to dx; parameter gradients in their dtypes."""
    m, d = x.shape
    dy = dy if dy.dtype == x.dtype else dy.to(x.dtype)
    dx = torch.empty((m, d), dtype=x.dtype)
    dweight, dalpha, dbeta = (torch.empty(d, dtype=torch.float32) for _ in range(3))
    (w, a, b), pdtype = _params(weight, alpha, beta)
    library().seednorm_backward(
        _ptr(dy), dy.stride(0), _ptr(x), x.stride(0), _ptr(dsummed), 0 if dsummed is None else dsummed.stride(0),
        _ptr(dx), d, DTYPES[x.dtype], _ptr(w), _ptr(a), _ptr(b), pdtype, _ptr(rstd.contiguous()),
        _ptr(t.contiguous()), _ptr(dweight), _ptr(dalpha), _ptr(dbeta), m, d, num_heads, dot_scale,
        ACT_CODES[activation], torch.get_num_threads(),
    )
    return dx, None if weight is None else dweight.to(weight.dtype), dalpha.to(alpha.dtype), dbeta.to(beta.dtype)
