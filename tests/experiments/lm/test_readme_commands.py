"""The README's language-model commands run as written (the DDP one with 2 processes under torchrun)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ports import free_port

import seednorm

SRC = str(Path(seednorm.__file__).resolve().parents[1])


def test_torchrun_two_process_smoke_study_writes_its_report(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m seednorm_experiments.lm --preset smoke`` from a fresh folder: both ranks
    train, rank 0 alone benchmarks throughput and writes the report (default --out runs/lm_smoke)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "PET_MASTER_PORT": str(free_port())}  # torchrun's --master-port
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "seednorm_experiments.lm",
           "--preset", "smoke"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "runs" / "lm_smoke"
    report = (out / "report.md").read_text()
    assert "step cost vs RMSNorm" in report and "seednorm lm --preset smoke" in report
    for norm in ("rmsnorm", "layernorm", "dyt", "derf", "seednorm"):  # every norm by default
        assert (out / "runs" / norm / "seed0" / "result.json").is_file()
