"""One writer per run folder: two ``seednorm lm`` processes on the same ``--out`` never write one run at once. The
first claims the run; the second waits for it and reuses the finished run (the default) or, with ``--fresh``,
refuses with one line, and the run's metrics.csv holds every step once."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import seednorm
from seednorm_experiments import claims

SRC = str(Path(seednorm.__file__).resolve().parents[1])
SMOKE = ["--preset", "smoke", "--norms", "seednorm", "--no-progress", "--no-throughput"]

# The first process trains its first step only once the test lets it (GATE exists), so the second one surely meets
# the run while it is being trained.
_GATED = """
import sys, time
from pathlib import Path
from seednorm_experiments.harness import trainer
from seednorm_experiments.lm import main

gate = Path(sys.argv[1])
step = trainer.Trainer.step
def gated_step(self, batch):
    deadline = time.time() + 120
    while not gate.exists() and time.time() < deadline:
        time.sleep(0.05)
    return step(self, batch)
trainer.Trainer.step = gated_step
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private corpus cache shared by both processes (built once, here, so that neither races to build it)."""
    from seednorm_experiments.lm.data import load_corpus
    from seednorm_experiments.lm.presets import get_preset

    cache = tmp_path / "cache"
    env = {**os.environ, "SEEDNORM_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    old = os.environ.get("SEEDNORM_CACHE")
    os.environ["SEEDNORM_CACHE"] = str(cache)
    try:
        p = get_preset("smoke")
        load_corpus(p.vocab_size, p.max_chars)
    finally:
        if old is None:
            os.environ.pop("SEEDNORM_CACHE")
        else:
            os.environ["SEEDNORM_CACHE"] = old
    return env


def _wait_for(what, timeout: float = 120.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if what():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("resume", [True, False], ids=["reuse waits and reuses", "fresh refuses"])
def test_a_second_process_on_a_run_being_trained_never_writes_it(tmp_path: Path, env: dict[str, str],
                                                                 resume: bool) -> None:
    out, gate = tmp_path / "out", tmp_path / "gate"
    run = out / "runs" / "seednorm" / "seed0"
    argv = [*SMOKE, "--out", str(out), *([] if resume else ["--fresh"])]
    first = subprocess.Popen([sys.executable, "-c", _GATED, str(gate), *argv], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: (run / "metrics.csv").exists() or first.poll() is not None)  # first is training
        err_path = tmp_path / "second.err"
        with open(err_path, "w") as err:
            second = subprocess.Popen([sys.executable, "-m", "seednorm_experiments.lm", *argv], env=env,
                                      stdout=subprocess.DEVNULL, stderr=err, text=True)
            # the second meets the run while the first holds it: it waits (the default) or ends (--fresh)
            _wait_for(lambda: second.poll() is not None or "waiting for" in err_path.read_text(), 90)
            gate.touch()
            second_rc = second.wait(timeout=300)
        first_out, first_err = first.communicate(timeout=300)
    finally:
        gate.touch()
        first.kill()
    assert first.returncode == 0, first_err[-3000:]
    second_err = err_path.read_text()
    if resume:
        assert second_rc == 0, second_err[-3000:]
        assert f"waiting for process {first.pid}, which trains {run}" in second_err
    else:
        assert second_rc == 2, second_err[-3000:]
        line = second_err.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, line
        assert line.startswith("seednorm lm: error: ") and f"{run} is being trained by another process" in line
    rows = list(csv.reader((run / "metrics.csv").open()))
    steps = [r[0] for r in rows[1:]]
    assert rows[0][0] == "step" and steps == [str(s) for s in range(12)], rows  # one header, every step once
    assert len(list((run / "tb").iterdir())) == 1  # one writer's TensorBoard events
    assert not (run / claims.CLAIM_NAME).exists()  # released
    result = json.loads((run / "result.json").read_text())
    assert [r["step"] for r in result["history"]] == list(range(12))


def test_the_claim_is_released_when_the_run_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that raises lets go of its folder, so the next command (or process) can train it."""
    from seednorm_experiments import runs

    def boom(task, config):
        assert (config.out_dir / claims.CLAIM_NAME).read_text() == str(os.getpid())
        raise RuntimeError("boom")

    monkeypatch.setattr(runs, "train", boom)
    config = runs.TrainConfig(out_dir=tmp_path / "run", steps=1, lr=1e-3)
    for reuse in (True, False):
        with pytest.raises(RuntimeError, match="boom"):
            runs.train_or_reuse(None, config, reuse=reuse)  # type: ignore[arg-type]
        assert not (tmp_path / "run" / claims.CLAIM_NAME).exists()


def test_a_run_held_by_this_process_stays_held(tmp_path: Path) -> None:
    """Inside :func:`claims.work` (the ablation, size curve, upcycle) the folder is this process's already: the run
    goes on, and the claim is left for work to release."""
    assert claims.claim(tmp_path)
    with claims.hold(tmp_path, wait=False):
        pass
    assert (tmp_path / claims.CLAIM_NAME).read_text() == str(os.getpid())
