"""Study runs on disk under faults: a changed config into the same ``--out`` is refused (exit 2, one line, nothing
rewritten), a run killed by SIGKILL resumes to the uninterrupted result, a corrupt record or checkpoint is a clear
error, and an ablation claim that is still being written is not taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from study_faults import drop_records, exit_code, one_line_error, private_cache, snapshot  # noqa: F401 (autouse)

import seednorm
from seednorm_experiments.claims import CLAIM_GRACE_S
from seednorm_experiments.lm.ablation import Job
from seednorm_experiments.lm.ablation import claim as _claim

SRC = str(Path(seednorm.__file__).resolve().parents[1])
SMOKE = ["--preset", "smoke", "--norms", "seednorm", "--no-progress", "--no-throughput"]


STUDY_FILES = (".json", ".md", ".pt", ".csv")


def test_resume_with_other_steps_and_lr_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code([*SMOKE, "--out", str(tmp_path)]) == 0
    before = snapshot(tmp_path, STUDY_FILES)
    capsys.readouterr()
    assert exit_code([*SMOKE, "--out", str(tmp_path), "--resume", "--steps", "30", "--lr", "0.05"]) == 2
    err = one_line_error(capsys)
    assert "seednorm lm: error:" in err and str(tmp_path / "runs" / "seednorm" / "seed0") in err
    assert "steps: 12 -> 30" in err and "lr: 0.003 -> 0.05" in err and "another --out" in err
    assert snapshot(tmp_path, STUDY_FILES) == before  # neither the run nor the report was touched
    # the same settings are reused as they are
    assert exit_code([*SMOKE, "--out", str(tmp_path), "--resume"]) == 0
    after = snapshot(tmp_path, STUDY_FILES)
    assert after["runs/seednorm/seed0/result.json"] == before["runs/seednorm/seed0/result.json"]


def test_resume_from_a_checkpoint_of_other_settings_is_refused(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code([*SMOKE, "--out", str(tmp_path)]) == 0
    (tmp_path / "runs" / "seednorm" / "seed0" / "result.json").unlink()  # an interrupted run: checkpoint only
    capsys.readouterr()
    assert exit_code([*SMOKE, "--out", str(tmp_path), "--resume", "--lr", "0.01"]) == 2
    err = one_line_error(capsys)
    assert "checkpoint.pt belongs to a different run" in err and "lr: 0.003 -> 0.01" in err


@pytest.mark.parametrize("damage", ["garbage", "edited", "no fingerprint"])
def test_a_damaged_run_record_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               damage: str) -> None:
    assert exit_code([*SMOKE, "--out", str(tmp_path)]) == 0
    drop_records(tmp_path)
    path = tmp_path / "runs" / "seednorm" / "seed0" / "result.json"
    record = json.loads(path.read_text())
    if damage == "garbage":
        path.write_text(path.read_text()[:100])
    elif damage == "edited":
        record["fingerprint"]["steps"] = 30
        path.write_text(json.dumps(record))
    else:
        del record["fingerprint"]
        path.write_text(json.dumps(record))
    capsys.readouterr()
    assert exit_code([*SMOKE, "--out", str(tmp_path), "--resume"]) == 2
    assert str(path) in one_line_error(capsys)


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code([*SMOKE, "--out", str(tmp_path)]) == 0
    drop_records(tmp_path)
    run = tmp_path / "runs" / "seednorm" / "seed0"
    (run / "result.json").unlink()
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:-10])
    capsys.readouterr()
    assert exit_code([*SMOKE, "--out", str(tmp_path), "--resume"]) == 2
    assert "corrupted" in one_line_error(capsys)


def test_a_corrupt_corpus_cache_is_rebuilt(tmp_path: Path) -> None:
    from seednorm_experiments.lm.data import load_corpus
    from seednorm_experiments.lm.presets import get_preset

    p = get_preset("smoke")
    good = load_corpus(p.vocab_size, p.max_chars)
    cache = good.tokenizer_path.parent
    (cache / "code.npy").write_bytes((cache / "code.npy").read_bytes()[:200])  # torn
    again = load_corpus(p.vocab_size, p.max_chars)
    assert again.key == good.key and set(again.tokens) == set(good.tokens)
    assert all(again.tokens[k].equal(good.tokens[k]) for k in good.tokens)


def test_ablation_with_other_steps_and_width_into_one_out_is_refused(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--ablation", "--preset", "smoke", "--seeds", "2", "--ablation-lrs", "1e-3", "1e-2", "--knobs",
            "seednorm-lr0.1", "--until", "sweep", "--no-progress", "--out", str(tmp_path)]
    assert exit_code([*argv, "--steps", "3"]) == 0
    before = snapshot(tmp_path, STUDY_FILES)
    capsys.readouterr()
    assert exit_code([*argv, "--steps", "9", "--dim", "64"]) == 2
    err = one_line_error(capsys)
    assert "steps: 3 -> 9" in err and "dim: 32 -> 64" in err
    assert exit_code([*argv, "--steps", "9", "--dim", "64", "--report-only"]) == 2
    assert "dim: 32 -> 64" in one_line_error(capsys)
    assert snapshot(tmp_path, STUDY_FILES) == before


# ------------------------------------------------------------------------------------------------------------
# SIGKILL mid-run, then --resume

_KILLER = """
import os, signal, sys
from seednorm_experiments.harness import trainer
from seednorm_experiments.lm import main

when = sys.argv[1]
saves = 0
if when == "after checkpoint":  # killed right after the first periodic checkpoint (step 5 of 12)
    save = trainer.save_checkpoint
    def killing_save(path, state):
        save(path, state)
        os.kill(os.getpid(), signal.SIGKILL)
    trainer.save_checkpoint = killing_save  # where the training loop looks it up
else:  # killed while the second checkpoint is written: its temp file is complete, not yet in place
    replace = os.replace
    def killing_replace(src, dst):
        global saves
        if str(dst).endswith("checkpoint.pt"):
            saves += 1
            if saves == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)
    os.replace = killing_replace
main(sys.argv[2:])
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("whole")
    assert exit_code([*SMOKE, "--out", str(out)]) == 0
    return json.loads((out / "runs" / "seednorm" / "seed0" / "result.json").read_text())


@pytest.mark.parametrize("when", ["after checkpoint", "during checkpoint write"])
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path: Path, when: str, uninterrupted: dict) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", _KILLER, when, *SMOKE, "--out", str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / "runs" / "seednorm" / "seed0"
    assert (run / "checkpoint.pt").is_file() and not (run / "result.json").exists()
    assert exit_code([*SMOKE, "--out", str(tmp_path), "--resume"]) == 0
    resumed = json.loads((run / "result.json").read_text())
    keys = ("step", "loss", "lr", "grad_norm", "clipped")
    assert [[r[k] for k in keys] for r in resumed["history"]] == [[r[k] for k in keys]
                                                                   for r in uninterrupted["history"]]
    assert resumed["final_eval"] == uninterrupted["final_eval"]
    assert resumed["fingerprint_sha256"] == uninterrupted["fingerprint_sha256"]
    assert (tmp_path / "report.md").is_file()


# ------------------------------------------------------------------------------------------------------------
# ablation claims


def test_a_claim_being_written_is_not_taken_over(tmp_path: Path) -> None:
    job = Job("base", "rmsnorm", 0, 1e-2, tmp_path / "run")
    job.out.mkdir(parents=True)
    claim = job.out / ".claim"
    claim.touch()  # another process has just created it and not yet written its pid
    assert not _claim(job) and claim.read_text() == ""
    os.utime(claim, (time.time() - CLAIM_GRACE_S / 2,) * 2)
    assert not _claim(job)
    stale = time.time() - 2 * CLAIM_GRACE_S  # left empty for longer than any write takes: its writer died
    os.utime(claim, (stale, stale))
    assert _claim(job) and claim.read_text() == str(os.getpid())
    assert sorted(p.name for p in job.out.iterdir()) == [".claim"]  # no private file left behind
