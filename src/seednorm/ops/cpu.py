"""The CPU path: hand-written C++/OpenMP kernels (``cpu_kernels.cpp``), one pass per row, built on first use.

Forward and backward each run as one parallel loop over rows: a row is read from memory once and stays in L1
for its second sweep, and the backward's dγ, dα, dβ are float32 partial sums per thread, added up at the end.
This reads x (and dy) once where Inductor's kernels (``compiled.py``) and compiled RMSNorm read them twice, and
waits on fewer OpenMP barriers, which matters when the cores are shared.

The library is compiled with the system C++ compiler (``$CXX`` or g++, the one TorchInductor needs anyway) and
loaded with ctypes; the foreign calls release the GIL. Threads follow ``torch.get_num_threads()``.
All tensors here are 2-D (M, D) with a contiguous last dim; x may be float32, bfloat16 or float16; a given dropout
mask is float32. In-kernel dropout (``rng``, ``rows``, ``dropout``: ``philox.py``) generates the mask row by row.

The kernel cache is ``$SEEDNORM_CACHE/kernels`` (default ``~/.cache/seednorm/kernels``): created private (0700),
and used only while it is a directory owned by the user and not writable by group or others. It holds
``cpu_kernels_<key>.so``, keyed by a hash of the source, compiler, flags, machine and cache format, beside
``cpu_kernels_<key>.sha256``, the SHA-256 and the size in bytes of the library as built, published (each
atomically) after it. A library is loaded only if it is a regular file owned by the user, not writable by group
or others, has the recorded size and digest, and is a whole shared object (on ELF systems: an ELF header of this
platform's class and byte order, of a shared object, whose program and section headers and segments all lie
within the file). dlopen of a file cut short kills the process with SIGBUS rather than failing, so nothing is
loaded before these checks; anything that fails them (truncated, garbage, empty, foreign, no or an old sidecar)
is rebuilt in place, so concurrent processes building into one cache each publish a complete file. A failed
build or an unusable cache is remembered for the process: later calls raise the same ``KernelUnavailable`` (with
the compiler's output) without retrying.

A build is announced on the ``seednorm.ops.cpu`` logger at INFO: one line when it starts (it takes seconds, once per
machine) and one with its time when it is done. Like every library's, these lines are shown only when the program
configures ``logging`` (e.g. ``logging.basicConfig(level=logging.INFO)``); the ``seednorm`` command shows them.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch import Tensor

from . import philox
from .sigma import ACTIVATION_CODES

SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
CACHE_ENV = "SEEDNORM_CACHE"
CACHE_FORMAT = "2"  # part of the key: what the sidecar records (2: digest and size); older caches keep their files
_OUTPUT_TAIL = 4000  # characters of compiler output kept in an error
logger = logging.getLogger(__name__)

_P, _I64, _F, _I = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
_SIGNATURES = {
    "seednorm_forward": [_P, _I64, _P, _I64, _P, _I64, _P, _I64, _I, _P, _P, _P, _P, _I, _P, _I64, _P, _P, _I64, _F,
                         _P, _P, _P, _I64, _I64, _I64, _F, _F, _I, _I],
    "seednorm_backward": [_P, _I64, _P, _I64, _P, _I64, _P, _I64, _I, _P, _P, _P, _P, _I, _P, _I64, _P, _P, _I64, _F,
                          _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _F, _I, _I],
}


class KernelUnavailable(RuntimeError):
    """The C++ kernels cannot be built or loaded here; the message says why and what to do."""


def compiler() -> str | None:
    """The C++ compiler to build with (``$CXX``, else g++) as a path, or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def cache_root() -> Path:
    """``$SEEDNORM_CACHE`` when set and not empty, else ~/.cache/seednorm."""
    value = os.environ.get(CACHE_ENV)
    return Path(value) if value else Path.home() / ".cache" / "seednorm"


def _cache_hint(root: Path) -> str:
    where = f"${CACHE_ENV}={root}" if os.environ.get(CACHE_ENV) else f"the default cache {root}"
    return (f"{where} is not usable; set ${CACHE_ENV} to a directory of your own, or choose "
            "impl='compiled' or 'reference' (or SEEDNORM_IMPL)")


def _private(st: os.stat_result) -> str | None:
    """Why a file or directory with this status is not trusted (None when it is): owner and write bits."""
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def kernel_dir() -> Path:
    """The kernel cache directory, created private (0700) if missing; raises ``KernelUnavailable`` when it
    cannot be created or is not private to this user (a build into it explains when it is not writable)."""
    try:
        root = cache_root()
    except (RuntimeError, KeyError) as e:  # no home directory to put the default cache in
        raise KernelUnavailable(f"no place for the kernel cache ({e}); set ${CACHE_ENV} to a directory") from e
    kdir = root / "kernels"
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        kdir.mkdir(mode=0o700, exist_ok=True)
        st = os.stat(kdir)
    except OSError as e:  # a file in the way, a read-only or missing parent, no permission
        raise KernelUnavailable(f"cannot create the kernel cache {kdir}: {e.strerror or e}. {_cache_hint(root)}") \
            from e
    why = _private(st)
    if why is not None:
        raise KernelUnavailable(f"refusing the kernel cache {kdir}: it is {why}. {_cache_hint(root)}")
    return kdir


ELF = not sys.platform.startswith(("darwin", "win32", "cygwin"))  # the platforms whose shared objects are ELF


def elf_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole ELF shared object of this platform's class and byte order (None when it is):
    a bad header, or a program header table, a segment or the section header table reaching past its end."""
    if len(data) < 52 or data[:4] != b"\x7fELF":
        return "not an ELF file"
    bits = {1: 32, 2: 64}.get(data[4])
    order = {1: "<", 2: ">"}.get(data[5])
    if bits != struct.calcsize("P") * 8 or order != ("<" if sys.byteorder == "little" else ">"):
        return f"an ELF file of another class or byte order (EI_CLASS {data[4]}, EI_DATA {data[5]})"
    header = order + ("HHIQQQIHHHHHH" if bits == 64 else "HHIIIIIHHHHHH")
    if len(data) < 16 + struct.calcsize(header):
        return "its ELF header is cut short"
    e_type, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _ = struct.unpack_from(header, data, 16)
    if e_type != 3:  # ET_DYN
        return f"not a shared object (ELF type {e_type})"
    program = order + ("IIQQQQQQ" if bits == 64 else "IIIIIIII")
    if phnum == 0 or phentsize < struct.calcsize(program) or phoff + phnum * phentsize > len(data):
        return "its program headers are missing or reach past the end of the file"
    if shoff + shnum * shentsize > len(data):
        return "its section headers reach past the end of the file"
    for i in range(phnum):
        fields = struct.unpack_from(program, data, phoff + i * phentsize)
        offset, filesz = (fields[2], fields[5]) if bits == 64 else (fields[1], fields[4])
        if offset + filesz > len(data):
            return f"segment {i} reaches past the end of the file ({offset + filesz} > {len(data)} bytes)"
    return None


def _sidecar_text(data: bytes) -> str:
    """What the sidecar records of a library as built: its SHA-256 and its size in bytes."""
    return f"{hashlib.sha256(data).hexdigest()} {len(data)}\n"


def _verified(lib: Path, sidecar: Path) -> bool:
    """``lib`` and ``sidecar`` are regular files (not links) private to this user, ``lib`` has the size and the
    digest ``sidecar`` records, and it is a whole shared object (``elf_problem``; on ELF platforms)."""
    try:
        for path in (lib, sidecar):
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or _private(st) is not None:
                return False
        recorded = sidecar.read_text().split()
        if len(recorded) != 2 or not recorded[1].isdigit() or os.lstat(lib).st_size != int(recorded[1]):
            return False  # no size recorded (an older cache), or a library of another size than the build's
        data = lib.read_bytes()
        return _sidecar_text(data).split() == recorded and not (ELF and elf_problem(data))
    except (OSError, UnicodeDecodeError):
        return False


def _build(cxx: str, kdir: Path, lib: Path, sidecar: Path) -> None:
    """Compile into a private temporary directory, then publish the library and its digest (each atomically,
    the library first): a concurrent reader sees a complete file or none, and verifies it before loading."""
    try:
        with tempfile.TemporaryDirectory(dir=kdir, prefix=".build-") as tmp:
            built, digest = Path(tmp) / lib.name, Path(tmp) / sidecar.name
            try:
                proc = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True)
            except OSError as e:
                raise KernelUnavailable(f"cannot run the C++ compiler {cxx}: {e.strerror or e}") from e
            if proc.returncode != 0 or not built.is_file():
                output = (proc.stderr or proc.stdout).strip()[-_OUTPUT_TAIL:] or "(no output)"
                raise KernelUnavailable(
                    f"building the CPU kernels with {cxx} failed (exit status {proc.returncode}); set $CXX to a "
                    f"working compiler, or choose impl='compiled' or 'reference' (or SEEDNORM_IMPL). "
                    f"Compiler output:\n{output}"
                )
            os.chmod(built, 0o700)  # whatever the umask: the loader refuses files writable by others
            data = built.read_bytes()
            problem = elf_problem(data) if ELF else None
            if problem is not None:
                raise KernelUnavailable(f"the C++ compiler {cxx} built {built.name}, which is {problem}; set $CXX "
                                        "to a working compiler, or choose impl='compiled' or 'reference' (or "
                                        "SEEDNORM_IMPL)")
            digest.write_text(_sidecar_text(data))
            os.chmod(digest, 0o600)
            os.replace(built, lib)
            os.replace(digest, sidecar)
    except OSError as e:  # the cache turned unwritable or full under us
        raise KernelUnavailable(f"cannot write the kernel cache {kdir}: {e.strerror or e}. "
                                f"{_cache_hint(cache_root())}") from e


def _load() -> ctypes.CDLL:
    cxx = compiler()
    if cxx is None:
        raise KernelUnavailable(
            f"the CPU kernels need a C++ compiler and found none ({os.environ.get('CXX', 'g++')!r} is not an "
            "executable on PATH); set $CXX or install g++, or choose impl='compiled' or 'reference' (or "
            "SEEDNORM_IMPL)"
        )
    code = SOURCE.read_bytes()
    salt = " ".join([cxx, *FLAGS, platform.machine(), platform.node(), CACHE_FORMAT])
    key = hashlib.sha256(code + salt.encode()).hexdigest()
    kdir = kernel_dir()
    lib, sidecar = kdir / f"cpu_kernels_{key[:16]}.so", kdir / f"cpu_kernels_{key[:16]}.sha256"
    if not _verified(lib, sidecar):
        logger.info("building the C++ CPU kernels with %s into %s (once per machine and compiler; about 10-20 s)",
                    cxx, kdir)
        t0 = time.perf_counter()
        _build(cxx, kdir, lib, sidecar)
        logger.info("built the C++ CPU kernels in %.1f s", time.perf_counter() - t0)
        if not _verified(lib, sidecar):  # replaced under us since: never hand dlopen an unchecked file
            raise KernelUnavailable(f"the CPU kernels {lib} changed after they were built; {_cache_hint(kdir.parent)}")
    try:
        loaded = ctypes.CDLL(str(lib))
        for name, argtypes in _SIGNATURES.items():
            getattr(loaded, name).argtypes = argtypes
            getattr(loaded, name).restype = None
    except (OSError, AttributeError) as e:
        raise KernelUnavailable(f"cannot load the CPU kernels {lib}: {e}") from e
    return loaded


_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: KernelUnavailable | None = None


def library() -> ctypes.CDLL:
    """The kernels, built (once per source, compiler, flags and machine) and loaded on first call.

    Raises ``KernelUnavailable`` saying why (no compiler, a failed build with its output, an unusable cache);
    the failure is remembered, so later calls raise it again without rebuilding.
    """
    global _library, _failure
    if _library is not None:
        return _library
    with _lock:
        if _library is None and _failure is None:
            try:
                _library = _load()
            except KernelUnavailable as e:
                _failure = e
        if _failure is not None:
            raise _failure
        return _library


def unavailable() -> str | None:
    """Why the C++ kernels cannot run here, or None when they can (builds and loads them on first call)."""
    try:
        library()
    except KernelUnavailable as e:
        return str(e)
    return None


def inductor_unavailable() -> str | None:
    """Why TorchInductor cannot compile CPU kernels here, or None when it can: the C++ compiler Inductor
    would use must build a small OpenMP shared library."""
    try:
        from torch._inductor import cpp_builder

        cxx = cpp_builder.get_cpp_compiler()
    except Exception as e:  # InvalidCxxCompiler, or whatever else the lookup raises
        return f"TorchInductor finds no working C++ compiler ({type(e).__name__}: {e})"
    try:
        with tempfile.TemporaryDirectory(prefix="seednorm-probe-") as tmp:
            src = Path(tmp) / "probe.cpp"
            src.write_text('extern "C" int seednorm_probe(int n) {\n#pragma omp parallel for\n'
                           "for (int i = 0; i < n; ++i) {}\nreturn n; }\n")
            cmd = [cxx, "-O1", "-fopenmp", "-shared", "-fPIC", str(src), "-o", str(Path(tmp) / "probe.so")]
            proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        return f"TorchInductor's C++ compiler {cxx} cannot run: {e.strerror or e}"
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()[-_OUTPUT_TAIL:] or "(no output)"
        return f"TorchInductor's C++ compiler {cxx} cannot build a shared library:\n{output}"
    return None


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _ready(p: Tensor, dtype: torch.dtype) -> bool:
    """Whether the kernels read parameter ``p`` as it is: a contiguous CPU tensor of ``dtype``."""
    return p.dtype == dtype and p.is_cpu and p.is_contiguous()


def _params(*params: Tensor | None) -> tuple[list[Tensor | None], int]:
    """γ, α, β, bias contiguous in one dtype the kernels read: their own when they share a supported one, else
    float32 (exact for every supported dtype, so mixed dtypes lose nothing); no copy when they already are.

    The kernels read raw pointers, so a parameter that is not a CPU tensor is refused here (a meta tensor's
    pointer is null, which the kernels would take for an absent parameter).
    """
    weight, alpha, beta, bias = params
    dtype = alpha.dtype
    if dtype in DTYPES and _ready(alpha, dtype) and _ready(beta, dtype) and (weight is None or _ready(weight, dtype)) \
            and (bias is None or _ready(bias, dtype)):
        return list(params), DTYPES[dtype]  # the common case: read as they are
    for name, p in zip(("weight", "alpha", "beta", "bias"), params, strict=True):
        if p is not None and p.device.type != "cpu":
            raise ValueError(f"impl='cpp' needs CPU parameters, got {name} on {p.device}")
    dtypes = {p.dtype for p in params if p is not None}
    dtype = alpha.dtype if len(dtypes) == 1 and alpha.dtype in DTYPES else torch.float32
    if not all(p is None or (p.dtype == dtype and p.is_contiguous()) for p in params):
        params = tuple(None if p is None else p.detach().to(dtype).contiguous() for p in params)
    return list(params), DTYPES[dtype]


def _mask(keep: Tensor | None) -> tuple[Tensor | None, int]:
    """The dropout mask as float32 rows with a contiguous last dim, and its row stride (0 when absent)."""
    if keep is None:
        return None, 0
    keep = keep if keep.dtype == torch.float32 and keep.stride(-1) == 1 else keep.float().contiguous()
    return keep, keep.stride(0)


def _dropout(rng: Tensor | None, rows: Tensor | None, p: float) -> tuple[Tensor | None, Tensor | None, int, float]:
    """The kernels' in-kernel dropout arguments: (seed, offset) and the global row indices as contiguous int64 CPU
    tensors (None when absent), the keep threshold and the value of a kept element."""
    if rng is None:
        return None, None, 0, 0.0
    if rng.device.type != "cpu" or (rows is not None and rows.device.type != "cpu"):
        raise ValueError("impl='cpp' needs the dropout seed and rows on the CPU")
    rng = rng if rng.dtype == torch.int64 and rng.is_contiguous() else rng.to(torch.int64).contiguous()
    if rows is not None:
        rows = rows.reshape(-1).to(torch.int64).contiguous()
    return rng, rows, philox.threshold(p), philox.scale(p)


def forward(
    x: Tensor, residual: Tensor | None, weight: Tensor | None, alpha: Tensor, beta: Tensor, bias: Tensor | None,
    keep: Tensor | None, num_heads: int, eps: float, activation: str, dot_scale: float, center: bool,
    rng: Tensor | None = None, rows: Tensor | None = None, dropout: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """(y, 1/RMS (M,), σ(s) (M, H) float32, mean (M,) float32 or None, x + residual or None) for x, residual,
    keep (M, D); ``center`` normalizes x − mean(x). ``rng`` (seed, offset) draws the dropout mask of probability
    ``dropout`` in the kernel instead (``rows``: (M,) global row indices, or None)."""
    m, d = x.shape
    y = torch.empty((m, d), dtype=x.dtype)
    rstd = torch.empty(m, dtype=torch.float32)
    t = torch.empty((m, num_heads), dtype=torch.float32)
    mean = torch.empty(m, dtype=torch.float32) if center else None
    summed = None if residual is None else torch.empty((m, d), dtype=x.dtype)
    (w, a, b, c), pdtype = _params(weight, alpha, beta, bias)
    k, sk = _mask(keep)
    seed, row_ids, thr, kscale = _dropout(rng, rows, dropout)
    library().seednorm_forward(
        _ptr(x), x.stride(0), _ptr(residual), 0 if residual is None else residual.stride(0),
        _ptr(summed), d, _ptr(y), d, DTYPES[x.dtype], _ptr(w), _ptr(a), _ptr(b), _ptr(c), pdtype, _ptr(k), sk,
        _ptr(seed), _ptr(row_ids), thr, kscale, _ptr(rstd), _ptr(t), _ptr(mean), m, d, num_heads, eps, dot_scale,
        ACTIVATION_CODES[activation], torch.get_num_threads(),
    )
    return y, rstd, t, mean, summed


def backward(
    dy: Tensor, x: Tensor, weight: Tensor | None, alpha: Tensor, beta: Tensor, bias: Tensor | None,
    keep: Tensor | None, rstd: Tensor, t: Tensor, mean: Tensor | None, dsummed: Tensor | None, num_heads: int,
    activation: str, dot_scale: float, rng: Tensor | None = None, rows: Tensor | None = None, dropout: float = 0.0,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor | None]:
    """(dx, dγ, dα, dβ, db) for dy, x, keep (M, D); ``mean`` (the forward's, centering form) or None;
    ``dsummed`` is added to dx; parameter gradients in their dtypes. ``rng``, ``rows``, ``dropout``: the forward's
    in-kernel dropout, whose mask is generated again."""
    m, d = x.shape
    dy = dy if dy.dtype == x.dtype else dy.to(x.dtype)
    dx = torch.empty((m, d), dtype=x.dtype)
    dweight, dalpha, dbeta, dbias = (torch.empty(d, dtype=torch.float32) for _ in range(4))
    (w, a, b, c), pdtype = _params(weight, alpha, beta, bias)
    k, sk = _mask(keep)
    seed, row_ids, thr, kscale = _dropout(rng, rows, dropout)
    library().seednorm_backward(
        _ptr(dy), dy.stride(0), _ptr(x), x.stride(0), _ptr(dsummed), 0 if dsummed is None else dsummed.stride(0),
        _ptr(dx), d, DTYPES[x.dtype], _ptr(w), _ptr(a), _ptr(b), _ptr(c), pdtype, _ptr(k), sk,
        _ptr(seed), _ptr(row_ids), thr, kscale,
        _ptr(rstd.contiguous()), _ptr(t.contiguous()), _ptr(None if mean is None else mean.contiguous()),
        _ptr(dweight), _ptr(dalpha), _ptr(dbeta), _ptr(dbias), m, d, num_heads, dot_scale,
        ACTIVATION_CODES[activation], torch.get_num_threads(),
    )
    return (dx, None if weight is None else dweight.to(weight.dtype), dalpha.to(alpha.dtype), dbeta.to(beta.dtype),
            None if bias is None else dbias.to(bias.dtype))
