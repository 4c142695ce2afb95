"""``bash benchmarks/gpu.sh --dry-run``: every stage of the GPU script at tiny sizes on CPU (Triton through its
interpreter), checked on what each stage wrote: the stage table, the benchmark's bandwidth arithmetic, the tuning
table, the language-model report and its corpus pack hash, and no ``nan`` in any table. Also: the lm stage's options
(``--override``, ``--recipe``, ``--throughput``; the grid alone by default), and how the script finds its Python
(``$PYTHON``, else the repository's ``.venv`` without activating it) when ``python3`` on PATH is another one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seednorm_experiments.bench.kernels import traffic
from seednorm_experiments.lm.corpus_pack import verify_pack

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _table(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a run: ``python3`` on PATH is a stand-in that fails (not the project's interpreter), no
    activated virtualenv, no ``$OUT``."""
    fake = tmp / "fake-bin"
    fake.mkdir(exist_ok=True)
    (fake / "python3").write_text("#!/bin/sh\necho 'not the python of this project' >&2\nexit 3\n")
    (fake / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "VIRTUAL_ENV", "PYTHON")}
    return {**env, "PATH": f"{fake}:{env['PATH']}", "TRITON_CACHE_DIR": str(tmp / "triton-cache"), **extra}


def _run(script: Path, args: list[str], env: dict[str, str], timeout: int = 600,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, kernel_cache: str) -> Path:
    results = tmp_path_factory.mktemp("gpu-dry")
    proc = _run(SCRIPT, ["--dry-run", "--results", str(results)],
                _env(results, PYTHON=sys.executable, SEEDNORM_CACHE=kernel_cache))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"== python: {sys.executable}" in proc.stdout  # $PYTHON, not the python3 on PATH
    return results


@pytest.mark.slow
def test_every_stage_ran_and_passed(dry_run: Path) -> None:
    stages = {row["stage"]: row["status"] for row in _table((dry_run / "summary.md").read_text())}
    assert stages == dict.fromkeys(["smoke", "tests", "bench", "lm", "tune"], "ok")
    preflight = (dry_run / "preflight.txt").read_text()
    assert "optional liger_kernel:" in preflight and "corpus pack" in preflight
    assert "1 passed, 1 skipped" in (dry_run / "tests.log").read_text()  # the compile check waits for a GPU


@pytest.mark.slow
def test_bench_bandwidth_columns_follow_the_bytes_model(dry_run: Path) -> None:
    text = (dry_run / "bench.md").read_text()
    rows = _table(text[text.index("| shape"):])
    assert {(r["heads"], r["impl"]) for r in rows} == {("1", "rmsnorm eager"), ("1", "seednorm reference"),
                                                        ("1", "seednorm triton"), ("2", "seednorm reference"),
                                                        ("2", "seednorm triton")}
    assert "Not measured (not installed or failed its probe): rmsnorm liger" in text or "rmsnorm liger" in {
        r["impl"] for r in rows}
    bytes_ = traffic(16, 64, torch.float32)
    ratios = []
    for r in rows:
        for k in ("fwd", "bwd", "fwd+bwd"):
            gbps = bytes_[k] / (float(r[f"{k} ms"]) / 1e3) / 1e9
            assert float(r[f"{k} GB/s"]) == pytest.approx(gbps, rel=1e-2)  # 3 significant digits printed
            ratios.append(float(r[f"{k} % copy"]) / float(r[f"{k} GB/s"]))
    copy = float(text.split("measured in this run, ")[1].split(" GB/s")[0].replace(",", ""))
    assert all(x == pytest.approx(100 / copy, rel=2e-2) for x in ratios)  # the one copy bandwidth of the run


@pytest.mark.slow
def test_tuning_and_lm_outputs(dry_run: Path) -> None:
    assert json.loads((dry_run / "tune.json").read_text()) == {"fwd": {"64": [4, 1]}, "bwd": {"64": [4, 1]}}
    tune = _table((dry_run / "tune.md").read_text())
    assert [(r["width"], r["pass"], r["best"]) for r in tune] == [("64", "fwd", "w4 s1"), ("64", "bwd", "w4 s1")]
    report = (dry_run / "lm" / "report.md").read_text()
    assert f"pack sha256 `{verify_pack(dry_run / 'pack')}`" in report
    # by default the grid alone: RMSNorm and SeeDNorm at the two rates, no recipe run, no step timing
    runs = _table(report[report.index("| run (variant @ lr)"):report.index("### Each norm")])
    assert [r["run (variant @ lr)"] for r in runs] == ["rmsnorm @ 0.001", "seednorm @ 0.001", "rmsnorm @ 0.002",
                                                      "seednorm @ 0.002"]
    assert "--recipe" not in report.split("\n")[2] and "was not run" in report and "Step cost: not timed" in report
    assert not (dry_run / "lm" / "runs" / "seednorm-dot-rsqrt").exists()
    # the committed CPU size curve, redrawn with the GPU run's point
    assert (dry_run / "lm" / "size_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "lm size curve" not in (dry_run / "summary.md").read_text()  # no failure row


@pytest.mark.slow
def test_dry_run_tables_are_complete(dry_run: Path) -> None:
    """Every cell of every table the dry run writes holds a value: no nan, no empty cell (the benchmark compares
    against the eager RMSNorm when the compiled one is not measured, as on CPU)."""
    files = ["summary.md", "bench.md", "tune.md", "lm/report.md"]
    for name in files:
        text = (dry_run / name).read_text()
        assert not re.search(r"\bnan\b", text, re.IGNORECASE), name
        for block in re.split(r"\n(?!\|)", text):
            if block.startswith("|"):
                rows = _table(block)
                assert rows and all(v for row in rows for v in row.values()), (name, block[:300])
    bench = (dry_run / "bench.md").read_text()
    rows = _table(bench[bench.index("| shape"):])
    ratios = {(r["heads"], r["impl"]): float(r["vs rmsnorm eager"]) for r in rows}
    assert ratios[("1", "rmsnorm eager")] == 1.0 and all(v > 0 for v in ratios.values())


@pytest.mark.slow
def test_lm_options_pass_through(tmp_path: Path, kernel_cache: str) -> None:
    """--override reaches seednorm lm (after the dry run's sizes, so it wins); --recipe adds the recipe run and
    --throughput the step timing."""
    results = tmp_path / "results"
    args = ["--dry-run", "--stages", "lm", "--override", "steps=2", "eval_windows=3", "--recipe", "--throughput",
            "--results", str(results)]
    proc = _run(SCRIPT, args, _env(tmp_path, PYTHON=sys.executable, SEEDNORM_CACHE=kernel_cache))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (results / "lm" / "report.md").read_text()
    command = report.split("Command: `")[1].split("`")[0]
    assert command.endswith("--override steps=2 eval_windows=3 --recipe --throughput-rounds 2")
    assert "2 steps × 4 sequences" in report and "step cost vs RMSNorm" in report
    runs = _table(report[report.index("| run (variant @ lr)"):report.index("### Each norm")])
    assert len(runs) == 5 and runs[-1]["run (variant @ lr)"].startswith("seednorm-dot-rsqrt @ ")
    for result in (results / "lm" / "runs").glob("*/*/seed0/result.json"):
        assert len(json.loads(result.read_text())["history"]) == 2
    bad = _run(SCRIPT, ["--dry-run", "--override", "--recipe"], _env(tmp_path, PYTHON=sys.executable), timeout=60)
    assert bad.returncode == 2 and "--override needs FIELD=VALUE" in bad.stderr


def _checkout(tmp: Path) -> Path:
    """A repository root that links to this one's folders (the script finds its root from its own path)."""
    root = tmp / "repo"
    root.mkdir()
    for name in ("benchmarks", "src", "experiments", "tests", "results"):
        (root / name).symlink_to(ROOT / name)
    return root


def test_python_is_found_without_an_activated_virtualenv(tmp_path: Path) -> None:
    """No $PYTHON, no activated virtualenv, a python3 on PATH that is not the project's: the script runs with the
    repository's .venv; without one it stops at once, saying what to do."""
    root = _checkout(tmp_path)
    no_venv = _run(root / "benchmarks" / "gpu.sh", ["--dry-run", "--stages", "smoke"], _env(tmp_path), timeout=60)
    assert no_venv.returncode == 2 and "cannot import torch" in no_venv.stderr and "make install" in no_venv.stderr
    venv = root / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # stands in for make install's
    (venv / "python").chmod(0o755)
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = _run(root / "benchmarks" / "gpu.sh", ["--dry-run", "--stages", "smoke", "--results", "out"],
                _env(tmp_path), timeout=300, cwd=work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"== python: {venv / 'python'}" in proc.stdout
    # a relative --results is where the command was given
    assert [(r["stage"], r["status"]) for r in _table((work / "out" / "summary.md").read_text())] == [("smoke", "ok")]


def test_help_and_bad_arguments(tmp_path: Path) -> None:
    env = _env(tmp_path, PYTHON=sys.executable)
    helped = _run(SCRIPT, ["--help"], env, timeout=60)
    assert helped.returncode == 0 and "--override F=V" in helped.stdout and "--no-recipe" in helped.stdout
    assert "OLMO_TIMEOUT" in helped.stdout and "all but olmo" in helped.stdout
    assert all(line.startswith("#") for line in helped.stdout.splitlines())
    for args, needle in ((["--stages", "lm,train"], "unknown stage train"), (["--override", "steps"], "FIELD=VALUE"),
                         (["--bogus"], "unknown argument --bogus")):
        bad = _run(SCRIPT, args, env, timeout=60)
        assert bad.returncode == 2 and needle in bad.stderr, args
    prepare = ROOT / "benchmarks" / "gpu_prepare.sh"
    assert "3.12" in _run(prepare, ["--help"], env, timeout=60).stdout
    bad = _run(prepare, ["312"], env, timeout=60)  # refused before anything is downloaded or built
    assert bad.returncode == 2 and "must look like 3.12, got '312'" in bad.stderr
