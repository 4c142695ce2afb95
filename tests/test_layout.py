"""The repository's shape: the library wheel carries the library alone, and imports point one way."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_graph_has_no_cycles_and_points_one_way():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "check_imports.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_import_checker_finds_a_cycle_and_an_upward_import():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import check_imports
    finally:
        sys.path.pop(0)
    graph = {
        "seednorm.ops.op": {"seednorm.functional"},
        "seednorm.functional": {"seednorm.ops.op"},
        "seednorm.modules": {"seednorm_experiments.harness"},
        "seednorm_experiments.harness": set(),
    }
    found = check_imports.problems(graph)
    assert any("cycle" in line and "seednorm.functional" in line for line in found)
    assert any("seednorm.ops.op imports seednorm.functional, a layer above it" in line for line in found)
    assert any("must not import the experiments" in line for line in found)


def test_library_wheel_has_no_experiment_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("seednorm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "seednorm/ops/cpu_kernels.cpp" in names and "seednorm/py.typed" in names
    assert not [n for n in names if "experiments" in n or "studies" in n or "bench" in n], names
    metadata = next(n for n in names if n.endswith("METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert requires == ["Requires-Dist: torch>=2.4"]
