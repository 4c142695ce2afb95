"""Fault injection for the C++ kernel cache and the CPU fallback of impl="auto".

Each case runs a fresh interpreter (``CHILD``) against a cache of its own: a corrupted library may crash the process
that loads it (SIGBUS on a truncated file), and the build, its failure and the fallback warning happen once per
process. The child runs SeeDNorm forward and backward three times (the C++ kernels, or impl="auto" through the
module), compares y with the float64 reference, and reports errors, fallback warnings and the library it loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import seednorm

SRC = str(Path(seednorm.__file__).parents[1])
TESTS = str(Path(__file__).parents[1])
OTHER_UID = 65534  # "nobody": a user other than the one running the tests
IS_ROOT = os.geteuid() == 0

CHILD = r"""
import json, sys, warnings
import torch
sys.path.insert(0, sys.argv[2])
from reference import seednorm_ref
import seednorm
from seednorm.ops import cpu, resolve_impl

mode = sys.argv[1]
torch.manual_seed(0)
x = torch.randn(5, 7, 30, requires_grad=True)
w, a, b = torch.randn(30), torch.randn(30), torch.randn(30) * 0.3
report = {"errors": []}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(3):
        y = None
        try:
            if mode == "auto":
                layer = seednorm.SeeDNorm(30, num_heads=3, eps=1e-5)
                with torch.no_grad():
                    layer.weight.copy_(w), layer.alpha.copy_(a), layer.beta.copy_(b)
                y = layer(x)
            else:
                y = seednorm.seednorm(x, w, a, b, num_heads=3, eps=1e-5, impl="cpp")
            y.sum().backward()
        except Exception as e:
            report["errors"].append(f"{type(e).__name__}: {e}")
    report["impl"] = resolve_impl("auto", x.detach())
report["warnings"] = [str(m.message) for m in caught if str(m.message).startswith("seednorm:")]
if y is not None:
    ref = seednorm_ref(x, w, a, b, num_heads=3, eps=1e-5)
    report["err"] = ((y.double() - ref).abs().max() / ref.abs().max()).item()
if mode == "cpp" and not report["errors"]:
    report["library"] = cpu.library()._name
print(json.dumps(report))
"""


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SEEDNORM_IMPL", "CXX")}
    env.update(SEEDNORM_CACHE=str(cache), PYTHONPATH=SRC, OMP_NUM_THREADS="1", **extra)
    return env


def _child(mode: str, cache: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, mode, TESTS], env=_env(cache, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _report(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"the child died (exit status {proc.returncode}):\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def run(mode: str, cache: Path, **extra: str) -> dict:
    return _report(_child(mode, cache, **extra))


def _ok(report: dict) -> None:
    assert report["errors"] == []
    assert report["err"] < 2e-5


def _sidecar(lib: Path) -> Path:
    return lib.with_suffix(".sha256")


def _record(lib: Path) -> str:
    """The sidecar the build writes for the library as it is now: its SHA-256 and its size."""
    data = lib.read_bytes()
    return f"{hashlib.sha256(data).hexdigest()} {len(data)}\n"


def _verified(lib: Path) -> bool:
    return _sidecar(lib).read_text() == _record(lib)


def _fake_compiler(tmp_path: Path, message: str) -> tuple[Path, Path]:
    """A "compiler" that answers --version but fails every build with ``message``; it counts its builds of the
    kernels."""
    count = tmp_path / "builds"
    cxx = tmp_path / "fake-c++"
    cxx.write_text(
        f'#!/bin/sh\nif [ "$1" = --version ]; then echo "fake-c++ 1.0"; exit 0; fi\n'
        f'case "$*" in *cpu_kernels.cpp*) echo build >> "{count}";; esac\necho "{message}" >&2\nexit 1\n'
    )
    cxx.chmod(0o755)
    return cxx, count


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, Path]:
    """A cache holding a freshly built library, and the library's path relative to it."""
    cache = tmp_path_factory.mktemp("good") / "cache"
    report = run("cpp", cache)
    _ok(report)
    return cache, Path(report["library"]).relative_to(cache)


@pytest.fixture
def copy(good, tmp_path) -> tuple[Path, Path]:
    """A private copy of the good cache (modes preserved), and the path of its library."""
    cache, rel = good
    shutil.copytree(cache, tmp_path / "cache", symlinks=True)
    return tmp_path / "cache", tmp_path / "cache" / rel


@pytest.fixture(scope="module")
def copying(good, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A "compiler" that builds by copying the good library (a rebuild in milliseconds, not a C++ build), appending
    a line to ``$BUILD_LOG`` per build; a cache it has filled, and its library's path relative to that cache."""
    where = tmp_path_factory.mktemp("copying")
    cxx = where / "copying-c++"
    cxx.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo "copying-c++ 1.0"; exit 0; fi\n'
        'while [ "$#" -gt 1 ]; do if [ "$1" = -o ]; then out="$2"; fi; shift; done\n'
        f'echo build >> "${{BUILD_LOG:-/dev/null}}"\ncp "{good[0] / good[1]}" "$out"\n'
    )
    cxx.chmod(0o755)
    report = run("cpp", where / "cache", CXX=str(cxx))
    _ok(report)
    return cxx, where / "cache", Path(report["library"]).relative_to(where / "cache")


@pytest.fixture
def copied(copying, tmp_path) -> tuple[Path, Path, dict[str, str]]:
    """A private copy of the copying compiler's cache, its library, and the environment that rebuilds it (the
    builds logged to ``tmp_path / "builds"``)."""
    cxx, cache, rel = copying
    shutil.copytree(cache, tmp_path / "cache", symlinks=True)
    return tmp_path / "cache", tmp_path / "cache" / rel, {"CXX": str(cxx), "BUILD_LOG": str(tmp_path / "builds")}


def test_fresh_cache_is_private_and_library_has_a_digest(good):
    """The cache the ``good`` fixture's child built from nothing (one real C++ build serves every test here)."""
    cache, rel = good
    lib = cache / rel
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(lib.parent.stat().st_mode) == 0o700
    assert lib.stat().st_mode & 0o022 == 0
    assert _verified(lib)


def test_a_build_is_announced_on_the_library_logger_once(good, tmp_path, monkeypatch, caplog):
    """In process, the build replaced by a copy of the good library: one INFO line when it starts and one with its
    time, under ``seednorm.ops.cpu`` (silent unless the program configures logging); a verified library, none."""
    from seednorm.ops import cpu

    built = good[0] / good[1]

    def copy_build(cxx, kdir, lib, sidecar):
        shutil.copyfile(built, lib)
        lib.chmod(0o700)
        sidecar.write_text(_record(lib))

    monkeypatch.setenv("SEEDNORM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu, "_build", copy_build)
    with caplog.at_level(logging.INFO, logger="seednorm"):
        cpu._load()
        cpu._load()  # now built and verified: loaded without a word
    lines = [r.getMessage() for r in caplog.records if r.name == "seednorm.ops.cpu"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("building the C++ CPU kernels with ") and "once per machine" in lines[0]
    assert re.fullmatch(r"built the C\+\+ CPU kernels in \d+\.\d s", lines[1])


def _damage(lib: Path, damage: str, sidecar: str) -> None:
    """Damage the library, then leave its sidecar as built ("stale"), make it describe the damaged file in the
    current format ("matching") or the older digest-only one ("matching, digest only"), or remove it."""
    good = lib.read_bytes()
    lib.write_bytes({"truncated": good[: len(good) // 2], "garbage": os.urandom(len(good)), "empty": b""}[damage])
    if sidecar == "matching":
        _sidecar(lib).write_text(_record(lib))
    elif sidecar == "matching, digest only":
        _sidecar(lib).write_text(hashlib.sha256(lib.read_bytes()).hexdigest() + "\n")
    elif sidecar == "missing":
        _sidecar(lib).unlink()


@pytest.mark.parametrize("sidecar", ["stale", "matching", "matching, digest only", "missing"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_library_is_rebuilt_not_loaded(copied, damage, sidecar):
    """Even a sidecar that matches the damaged file never gets it loaded: dlopen of a truncated library is a SIGBUS
    that would kill the child (run() fails on a dead child). It is rebuilt once and loaded."""
    cache, lib, env = copied
    _damage(lib, damage, sidecar)
    report = run("cpp", cache, **env)
    _ok(report)
    assert Path(report["library"]) == lib and _verified(lib)
    assert Path(env["BUILD_LOG"]).read_text().count("build") == 1


def test_truncated_library_with_matching_sidecar_is_rebuilt_under_auto(copied):
    cache, lib, env = copied
    _damage(lib, "truncated", "matching")
    report = run("auto", cache, **env)
    _ok(report)
    assert report["impl"] == "cpp" and report["warnings"] == [] and _verified(lib)


def test_elf_check_finds_every_cut_of_a_built_library(good):
    """In process (nothing is loaded): the whole library passes, any prefix of it fails, and so do non-libraries."""
    from seednorm.ops.cpu import elf_problem

    data = (good[0] / good[1]).read_bytes()
    assert elf_problem(data) is None
    for cut in (0, 3, 20, 63, 64, 1000, len(data) // 2, len(data) - 1):
        assert elf_problem(data[:cut]) is not None, cut
    assert elf_problem(os.urandom(len(data))) is not None
    executable = Path(sys.executable).resolve().read_bytes()[:64]  # an ELF header without the rest of its file
    assert elf_problem(executable) is not None


def _marker_library(tmp_path: Path) -> tuple[Path, Path]:
    """A shared library that creates a marker file when loaded."""
    marker = tmp_path / "loaded"
    src = tmp_path / "marker.cpp"
    src.write_text(f'#include <cstdio>\n__attribute__((constructor)) static void mark() {{\n'
                   f'  if (FILE* f = std::fopen("{marker}", "w")) std::fclose(f);\n}}\n')
    out = tmp_path / "marker.so"
    subprocess.run([shutil.which("g++") or "c++", "-shared", "-fPIC", str(src), "-o", str(out)], check=True)
    return out, marker


@pytest.mark.parametrize("how", ["foreign owner", "writable by others"])
def test_untrusted_library_is_never_loaded(copy, tmp_path, how):
    """A library in the cache's place with a matching digest is still refused when it is not the user's own."""
    if how == "foreign owner" and not IS_ROOT:
        pytest.skip("giving a file to another user needs root")
    cache, lib = copy
    planted, marker = _marker_library(tmp_path)
    shutil.copyfile(planted, lib)
    if _sidecar(lib).exists():
        _sidecar(lib).write_text(_record(lib))
    if how == "foreign owner":
        os.chown(lib, OTHER_UID, OTHER_UID)
        if _sidecar(lib).exists():
            os.chown(_sidecar(lib), OTHER_UID, OTHER_UID)
    else:
        lib.chmod(0o777)
    report = run("cpp", cache)
    _ok(report)
    assert not marker.exists(), "the planted library was loaded"
    st = lib.stat()
    assert st.st_uid == os.geteuid() and st.st_mode & 0o022 == 0 and _verified(lib)


@pytest.mark.parametrize("how", ["foreign owner", "writable by others"])
def test_untrusted_cache_directory_is_refused(copy, how):
    if how == "foreign owner" and not IS_ROOT:
        pytest.skip("giving a directory to another user needs root")
    cache, lib = copy
    if how == "foreign owner":
        os.chown(lib.parent, OTHER_UID, OTHER_UID)
    else:
        lib.parent.chmod(0o777)
    report = run("cpp", cache)
    assert len(report["errors"]) == 3
    assert all("refusing" in e and "SEEDNORM_CACHE" in e for e in report["errors"]), report["errors"]


@pytest.mark.parametrize("how", ["a file", "under a file", "read-only"])
def test_unusable_cache_is_explained_and_auto_falls_back(tmp_path, how):
    if how == "read-only" and IS_ROOT:
        pytest.skip("root writes into read-only directories; the file cases cover root")
    cache = tmp_path / "cache"
    if how == "a file":
        cache.write_text("not a directory")
    elif how == "under a file":
        (tmp_path / "file").write_text("not a directory")
        cache = tmp_path / "file" / "cache"
    else:
        cache.mkdir()
        cache.chmod(0o500)
    try:
        report = run("cpp", cache)
    finally:
        if how == "read-only":
            cache.chmod(0o700)
    assert len(report["errors"]) == 3
    assert all(e.startswith("KernelUnavailable") and "SEEDNORM_CACHE" in e for e in report["errors"])
    assert report["impl"] == "compiled"  # g++ works here: Inductor's path is next in line
    assert len(report["warnings"]) == 1 and "SEEDNORM_CACHE" in report["warnings"][0]


def test_failed_build_shows_compiler_output_and_is_not_retried(tmp_path):
    cxx, builds = _fake_compiler(tmp_path, "fake-c++: this build fails")
    report = run("cpp", tmp_path / "cache", CXX=str(cxx))
    assert len(report["errors"]) == 3
    assert all("fake-c++: this build fails" in e for e in report["errors"]), report["errors"]
    assert builds.read_text().count("build") == 1


def test_broken_compiler_runs_reference_with_one_warning(tmp_path):
    """A compiler that exists but builds nothing: neither the C++ kernels nor Inductor can work."""
    cxx, _builds = _fake_compiler(tmp_path, "fake-c++: this build fails")
    report = run("auto", tmp_path / "cache", CXX=str(cxx))
    _ok(report)
    assert report["impl"] == "reference"
    assert len(report["warnings"]) == 1
    assert "fake-c++: this build fails" in report["warnings"][0] and "SEEDNORM_IMPL" in report["warnings"][0]


def test_missing_compiler_runs_reference_with_one_warning(tmp_path):
    report = run("auto", tmp_path / "cache", CXX=str(tmp_path / "no-such-c++"))
    _ok(report)
    assert report["impl"] == "reference"
    assert len(report["warnings"]) == 1 and "compiler" in report["warnings"][0]


@pytest.mark.slow
def test_concurrent_builds_into_one_fresh_cache(tmp_path):
    cache = tmp_path / "cache"
    children = [_child("cpp", cache) for _ in range(3)]
    reports = [_report(c) for c in children]
    for report in reports:
        _ok(report)
    libs = {r["library"] for r in reports}
    assert len(libs) == 1 and _verified(Path(libs.pop()))
    assert not [p for p in Path(reports[0]["library"]).parent.iterdir() if p.name.startswith(".build-")]
