"""`seednorm lm` end to end on the smoke preset, resume of a study, and clear errors for bad arguments."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from seednorm_experiments.cli import main as cli_main
from seednorm_experiments.lm import main


def run(argv: list[str]) -> tuple[int, str, str]:
    """``seednorm lm argv``: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def smoke_call(tmp_path_factory) -> tuple[Path, str, str]:
    out = tmp_path_factory.mktemp("lm-smoke")
    code, stdout, stderr = run(["--preset", "smoke", "--norms", "rmsnorm", "seednorm", "--out", str(out),
                                "--lr-sweep", "--no-progress"])
    assert code == 0
    return out, stdout, stderr


@pytest.fixture(scope="module")
def smoke(smoke_call) -> Path:
    return smoke_call[0]


def test_every_run_says_k_of_n_and_the_last_line_counts_the_trained_runs(smoke_call) -> None:
    out, stdout, stderr = smoke_call
    n = 2 * (1 + 2)  # 2 norms x 1 seed, in the main grid and at each of the sweep's 2 rates
    started = re.findall(r"^run (\d+) of (\d+): .* \(training\)$", stderr, re.MULTILINE)
    assert started == [(str(k), str(n)) for k in range(1, n + 1)]
    assert re.search(rf"^run 1 of {n} after \d+ s; {n - 1} to go, about .* at the mean of the 1 trained so far",
                     stderr, re.MULTILINE)
    assert stdout.strip() == f"wrote {out / 'report.md'} ({n} runs trained now)"
    assert f"(this call: {n} runs trained now; its {n} runs trained for" in (out / "report.md").read_text()


def test_smoke_study_writes_report_and_plots(smoke: Path) -> None:
    report = (smoke / "report.md").read_text()
    for needle in ("`smoke` preset", "seednorm lm --preset smoke", "bible (zero-shot)", "folio (spelling shift)",
                   "Cloze accuracy",
                   "Difference to RMSNorm", "step cost vs RMSNorm", "Learning-rate sweep"):
        assert needle in report
    for png in ("loss.png", "bpb.png", "cloze.png", "grad_norm.png", "lr_sweep.png", "lr_sweep_loss.png"):
        assert (smoke / png).read_bytes()[:4] == b"\x89PNG"
    result = json.loads((smoke / "runs" / "seednorm" / "seed0" / "result.json").read_text())
    assert len(result["history"]) == 12 and not result["diverged"]
    assert {"bpb/folio", "bpb/bible", "bpb/docstrings", "cloze/bible"} <= set(result["final_eval"])
    assert {"gn/alpha", "gn/beta", "gn/gamma", "gn/matrix"} <= set(result["history"][0])
    sweep = json.loads((smoke / "sweep" / "seednorm" / "lr0.9" / "seed0" / "result.json").read_text())
    assert sweep["diverged"]  # 300× the preset's learning rate blows up


def test_resume_reuses_finished_runs_and_completes_checkpointed_ones(smoke: Path) -> None:
    """Runs with result.json are reused; a run that has only its checkpoint continues from it (the
    harness tests cover an exact resume from the middle of a run)."""
    done = smoke / "runs" / "rmsnorm" / "seed0" / "result.json"
    before = done.read_text()
    cut = smoke / "runs" / "seednorm" / "seed0" / "result.json"
    full = json.loads(cut.read_text())
    cut.unlink()
    for name in ("runs.jsonl", "report.md"):  # the run folders alone (a recorded run is reused without its folder)
        (smoke / name).unlink()
    code, stdout, stderr = run(["--preset", "smoke", "--norms", "rmsnorm", "seednorm", "--out", str(smoke),
                                "--resume", "--no-progress", "--no-throughput"])
    assert code == 0 and done.read_text() == before
    assert "run 2 of 2: seednorm seed 0 (resuming from its checkpoint)" in stderr  # the reused one counts as done
    assert stdout.strip().endswith("(1 run trained now, 1 reused (1 from their folders))")
    again = json.loads(cut.read_text())
    assert again["history"] == full["history"] and again["final_eval"] == full["final_eval"]


@pytest.mark.parametrize("argv, message", [
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--norms", "batchnorm"], "--norms: unknown norm(s) ['batchnorm']"),
    (["--norms", "rmsnorm,batchnorm"], "--norms: unknown norm(s) ['batchnorm']"),
    (["--placement", "pre"], "--placement: unknown placement"),
    (["--seeds", "0"], "--seeds"),
])
def test_bad_arguments_are_clear_errors(argv, message, capsys) -> None:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own checks (types, choices)
        code = e.code
    assert code == 2 and message in capsys.readouterr().err


def test_cli_dispatch(capsys) -> None:
    assert cli_main([]) == 0 and "lm" in capsys.readouterr().out
    assert cli_main(["nope"]) == 2 and "unknown command" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["lm", "--preset", "huge"])
