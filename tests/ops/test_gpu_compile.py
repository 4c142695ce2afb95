"""Every Triton kernel specialization the launchers start compiles to PTX and a cubin for sm_90 and sm_80, no GPU.

This catches what the interpreter cannot: lowering, dtype and register-allocation errors, and launches a GPU would
refuse (shared memory, registers per block). compile_check.py runs in subprocesses (one per target, in parallel)
without TRITON_INTERPRET, behind a stand-in driver, and reports one record per (target, specialization).

A cold compile of all of them takes one to two minutes on two busy cores, so Triton's cache lives in
``~/.cache/seednorm/triton-test-<hash>`` (``$XDG_CACHE_HOME`` if set), the hash taken over the kernel sources and
the Triton version; with it warm the test takes seconds. A cached entry is a compile that succeeded for these
exact sources and Triton (Triton's own key), and a failure is never cached, so the cache cannot hide one.
A register spill above ``MAX_SPILL_BYTES`` per thread fails; a smaller one is reported (a warning).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import pytest

import seednorm
from seednorm.ops.sigma import ACTIVATION_CODES

triton = pytest.importorskip("triton")
HERE = Path(__file__).parent
OPS = Path(seednorm.__file__).resolve().parent / "ops"  # the seednorm under test, not whichever one is installed
TARGETS = ("sm_90", "sm_80")
DTYPES = {"float32", "bfloat16", "float16"}
# Spilled bytes per thread (ptxas stack) a launched specialization may have: eight 4-byte words. The backward kernels
# loop over rows, so a spill there is paid on every row (up to 1,088 B per thread before their re-tiling; none now).
# The one spill left is the forward row kernel's at 32 warps with the dropout mask on sm_90 (24 B, 2 of 17
# specializations): once per row, outside any loop, an L1 hit.
MAX_SPILL_BYTES = 32


def cache_dir() -> Path:
    """Triton's cache for this test, keyed by the kernel sources and the Triton version."""
    digest = hashlib.sha256(triton.__version__.encode())
    for source in ("triton.py", "sigma.py"):
        digest.update((OPS / source).read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "seednorm" / f"triton-test-{digest.hexdigest()[:16]}"


@pytest.fixture(scope="module")
def records() -> list[dict]:
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError:
        pytest.skip("this Triton has no NVIDIA backend")
    if not Path(get_ptxas(90).path).exists():
        pytest.skip("this Triton ships no ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(OPS.parents[1]), str(HERE)])
    env["TRITON_CACHE_DIR"] = str(cache_dir())
    procs = [subprocess.Popen([sys.executable, str(HERE / "compile_check.py"), "--target", t], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for t in TARGETS]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        out += json.loads(stdout.strip().splitlines()[-1])["kernels"]
    return out


def _describe(r: dict) -> str:
    return f"{r['target']} {r['kernel']} {r['options']} {r['dtypes']} (from {r['calls'][0]})"


def test_every_specialization_compiles_to_ptx_and_a_cubin(records):
    failed = [f"{_describe(r)}: {r['error']}" for r in records if "error" in r]
    assert not failed, f"{len(failed)} of {len(records)} failed to compile:\n" + "\n".join(failed)
    for target in TARGETS:
        got = [r for r in records if r["target"] == target]
        assert got and all({"ptx", "cubin"} <= set(r["asm"]) for r in got)
        assert {f"sm_{r['arch']}" for r in got} == {target}


def test_each_launch_fits_a_block(records):
    """What the driver would refuse at launch: more than 1024 threads, shared memory past the opt-in maximum,
    threads × registers per thread past the 64 Ki registers of a block."""
    too_big = [f"{_describe(r)}: {32 * r['num_warps']} threads > 1024" for r in records if r["num_warps"] > 32]
    too_big += [f"{_describe(r)}: shared {r['shared']} > {r['max_shared']}" for r in records
                if r["shared"] > r["max_shared"]]
    too_big += [f"{_describe(r)}: {r['reg']} registers × {32 * r['num_warps']} threads > 65536" for r in records
                if r["reg"] * 32 * r["num_warps"] > 65536]
    assert not too_big, "\n".join(too_big)


def test_the_specializations_cover_every_kernel_and_option(records):
    """Both layouts of both directions, and per kernel every σ, x dtype, parameter dtype, head count 1, 3 and 16,
    with and without γ, the residual, dropout (a given mask, a generated one, with given rows), centering and
    bias."""
    source = (OPS / "triton.py").read_text()
    assert {r["kernel"] for r in records} == set(re.findall(r"^def (_\w+_kernel)\(", source, re.M))
    seen: dict[tuple[str, str], set] = defaultdict(set)
    for r in records:
        for option, value in r["options"].items():
            seen[r["kernel"], option].add(value)
        seen[r["kernel"], "x"].add(r["dtypes"]["X"])
        seen[r["kernel"], "params"].add(r["dtypes"].get("A", r["dtypes"].get("B")))
    for (kernel, option), values in seen.items():
        expected = {
            "ACT": set(ACTIVATION_CODES.values()), "HAS_W": {True, False}, "HAS_RES": {True, False},
            "HAS_DS": {True, False}, "x": DTYPES, "params": DTYPES, "H": {1, 3, 16},
            "HAS_KEEP": {True, False}, "CENTER": {True, False}, "HAS_BIAS": {True, False},
            "DROPOUT": {True, False}, "HAS_ROWS": {True, False},
        }.get(option)
        if expected is not None:
            assert values == expected, f"{kernel} {option}: {values} != {expected}"


def test_no_register_spills(records):
    """No specialization spills more than ``MAX_SPILL_BYTES`` per thread (stack bytes; the kernels keep no local
    arrays), one line per (target, kernel, warps); smaller spills are reported as a warning."""
    worst: dict[tuple, list] = defaultdict(list)
    for r in records:
        worst[r["target"], r["kernel"], r["num_warps"]].append(r)
    lines, too_many = [], []
    for (target, kernel, warps), rs in sorted(worst.items()):
        spilling = [r for r in rs if r["stack"] > 0]
        if spilling:
            top = max(spilling, key=lambda r: r["stack"])
            line = (f"{target} {kernel} num_warps={warps}: {len(spilling)}/{len(rs)} specializations spill, "
                    f"up to {top['stack']} B/thread at {top['reg']} registers ({top['calls'][0]})")
            (too_many if top["stack"] > MAX_SPILL_BYTES else lines).append(line)
    assert not too_many, f"register spills over {MAX_SPILL_BYTES} B/thread:\n" + "\n".join(too_many)
    if lines:
        warnings.warn("register spills:\n" + "\n".join(lines), stacklevel=1)
