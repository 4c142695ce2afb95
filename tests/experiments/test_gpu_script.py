"""``bash benchmarks/gpu.sh --dry-run``: every stage of the GPU script at tiny sizes on CPU (Triton through its
interpreter), checked on what each stage wrote: the stage table, the benchmark's bandwidth arithmetic, the tuning
table, the language-model report and its corpus pack hash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seednorm_experiments.bench.kernels import traffic
from seednorm_experiments.lm.corpus_pack import verify_pack

ROOT = Path(__file__).resolve().parents[2]


def _table(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("gpu-dry")
    env = {**os.environ, "PYTHON": sys.executable, "TRITON_CACHE_DIR": str(results / "triton-cache")}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", "--results", str(results)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
    runs = [line for line in report.splitlines() if line.startswith("| rmsnorm @") or line.startswith("| seednorm")]
    assert len([r for r in runs if " @ " in r]) == 5
    # the committed CPU size curve, redrawn with the GPU run's point
    assert (dry_run / "lm" / "size_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "lm size curve" not in (dry_run / "summary.md").read_text()  # no failure row
