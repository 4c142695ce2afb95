"""Benchmarks without ``--out`` write under ``runs/bench/`` (git-ignored), never into ``benchmarks/`` or ``results/``,
and the command line their table records names the file it wrote, so it reruns to the same place."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import seednorm
import seednorm_experiments
from seednorm_experiments import cli
from seednorm_experiments.lm import step_cost as lm_step_cost
from seednorm_experiments.vit import step_cost as vit_step_cost

PATHS = [str(Path(m.__file__).resolve().parents[1]) for m in (seednorm, seednorm_experiments)]


def _tuning(*argv: str) -> int:
    """The Triton tuning on CPU: in a fresh process, as Triton's interpreter must be on before Triton loads."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(PATHS)}
    done = subprocess.run([sys.executable, "-m", "seednorm_experiments.bench.tuning", *argv], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.returncode


# each entry point at the smallest size its options allow, and the table it writes by default
ENTRY_POINTS = {
    "bench": (lambda: cli.main(["bench", "--device", "cpu", "--shapes", "64x48", "--dtypes", "fp32", "--reps", "1",
                                "--warmup", "0", "--copy-mb", "1", "--impls", "rmsnorm eager,seednorm reference"]),
              "cpu.md", "python -m seednorm_experiments.bench --device cpu"),
    "tuning": (lambda: _tuning("--device", "cpu", "--widths", "64", "--rows", "8", "--reps", "1", "--warps", "4",
                               "--stages", "1"),
               "tuning.md", "python -m seednorm_experiments.bench.tuning --device cpu"),
    "vit.step_cost": (lambda: vit_step_cost.main(["--preset", "smoke", "--rounds", "1"]),
                      "vit-step-cost-cpu.md", "python -m seednorm_experiments.vit.step_cost --preset smoke"),
    "lm.step_cost": (lambda: lm_step_cost.main(["--presets", "smoke", "--rounds", "1", "--norms", "seednorm"]),
                     "lm-step-cost-cpu.md", "python -m seednorm_experiments.lm.step_cost --presets smoke"),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_benchmark_without_out_writes_under_runs_only(entry, tmp_path: Path, monkeypatch) -> None:
    run, name, command = ENTRY_POINTS[entry]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEEDNORM_IMPL", raising=False)  # the vision table's command would name it first
    assert run() == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert f"runs/bench/{name}" in written
    assert not (tmp_path / "benchmarks").exists() and not (tmp_path / "results").exists()
    assert all(p.startswith("runs/") for p in written), written
    recorded = next(line for line in (tmp_path / "runs" / "bench" / name).read_text().splitlines()
                    if line.startswith("- Command:"))
    assert recorded.startswith(f"- Command: `{command}") and recorded.endswith(f" --out runs/bench/{name}`")


def test_an_explicit_out_is_where_it_writes_and_the_command_names_it_once(tmp_path: Path, monkeypatch) -> None:
    """``--out benchmarks/results/<file>`` still writes there: the committed tables are made that way."""
    monkeypatch.chdir(tmp_path)
    out = "benchmarks/results/lm-step-cost-cpu.md"
    assert lm_step_cost.main(["--presets", "smoke", "--rounds", "1", "--norms", "seednorm", "--out", out]) == 0
    assert not (tmp_path / "runs").exists()
    command = next(line for line in (tmp_path / out).read_text().splitlines() if line.startswith("- Command:"))
    assert command == ("- Command: `python -m seednorm_experiments.lm.step_cost --presets smoke --rounds 1 --norms "
                       f"seednorm --out {out}`")
