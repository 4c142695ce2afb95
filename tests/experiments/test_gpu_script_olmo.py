"""``bash benchmarks/gpu.sh --dry-run --stages olmo``: the GPU script's olmo stage at tiny sizes on CPU (a module of its
own, so that the test runner can give it a worker of its own beside the other dry runs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_gpu_script import SCRIPT, _env, _run, _table

from seednorm_experiments.lm.corpus_pack import verify_pack


@pytest.mark.slow
def test_olmo_stage_runs_the_olmo2_curve_when_named(tmp_path: Path, kernel_cache: str) -> None:
    """The olmo stage (named only: not among the default stages) trains the OLMo2 size curve's gpu preset, tiny in a
    dry run, on the corpus pack, whose hash the report names; its report is copied to $OUT."""
    pytest.importorskip("olmo_core")
    results, out = tmp_path / "results", tmp_path / "out"
    out.mkdir()
    proc = _run(SCRIPT, ["--dry-run", "--stages", "olmo", "--results", str(results)],
                _env(tmp_path, PYTHON=sys.executable, SEEDNORM_CACHE=kernel_cache, OUT=str(out)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [(r["stage"], r["status"]) for r in _table((results / "summary.md").read_text())] == [("olmo", "ok")]
    report = (results / "olmo" / "report.md").read_text()
    assert report.startswith("# OLMo2:") and "--size-curve --arch olmo2 --preset gpu" in report
    assert f"corpus pack sha256 `{verify_pack(results / 'pack')}`, at most one pass" in report
    summary = json.loads((results / "olmo" / "summary.json").read_text())
    assert len(summary["runs"]["d32-l1"]) == 5 * 2 * 2  # 5 variants × the preset's 2 rates × 2 seeds
    assert (out / "olmo-report.md").read_text() == report
    assert "stage olmo" in (results / "preflight.txt").read_text()
