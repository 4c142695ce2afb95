"""What a study call says while it works (seednorm_experiments.progress): "run k of N" with the whole grid's ETA, the
reused and trained counts, the slow steps' lines, and the library's kernel-build notice shown by the command only."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from seednorm_experiments import claims
from seednorm_experiments.claims import CLAIM_NAME
from seednorm_experiments.progress import RunGrid, active_grid, expect, library_notices, run_grid, step


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_run_k_of_n_counts_reused_runs_as_done_and_estimates_the_rest_from_the_trained_ones() -> None:
    lines: list[str] = []
    clock = Clock()
    grid = RunGrid(log=lines.append, clock=clock)
    grid.expect(5)
    grid.reused(Path("a"), "folder")
    grid.reused(Path("b"), "records")
    grid.started(Path("c"), "rmsnorm seed 0", resuming=False)
    clock.now = 60.0
    grid.finished(Path("c"))
    grid.started(Path("d"), "seednorm seed 0", resuming=True)
    clock.now = 180.0
    grid.finished(Path("d"))
    assert lines[0] == "run 3 of 5: rmsnorm seed 0 (training)"
    assert lines[1].startswith("run 3 of 5 after 60 s; 2 to go, about 2.0 min at the mean of the 1 trained so far")
    assert lines[2] == "run 4 of 5: seednorm seed 0 (resuming from its checkpoint)"
    assert lines[3].startswith("run 4 of 5 after 2.0 min; 1 to go, about 1.5 min at the mean of the 2 trained so far")
    assert grid.counts() == {"trained": 2, "folder": 1, "records": 1}
    assert grid.summary() == "2 runs trained now, 2 reused (1 from their folders, 1 from the records)"


def test_a_grid_that_grows_past_its_plan_counts_what_it_ran_and_the_last_run_has_no_eta() -> None:
    lines: list[str] = []
    grid = RunGrid(log=lines.append, clock=Clock())
    grid.expect(1)
    for name in ("a", "b"):
        grid.started(Path(name), name, resuming=False)
        grid.finished(Path(name))
    assert lines[2] == "run 2 of 2: b (training)" and lines[3] == "run 2 of 2 after 0 s"
    assert grid.summary() == "2 runs trained now"
    quiet: list[str] = []
    silent = RunGrid(log=quiet.append, quiet=True)  # a report-only call says nothing
    silent.started(Path("a"), "a", resuming=False)
    silent.finished(Path("a"))
    assert quiet == [] and silent.summary() == "1 run trained now"


def test_runs_of_other_processes_count_as_done_and_share_the_eta() -> None:
    lines: list[str] = []
    clock = Clock()
    grid = RunGrid(log=lines.append, clock=clock)
    grid.expect(6)
    grid.reused(Path("a"), "folder")
    grid.shared([Path("a"), Path("b"), Path("c")], training=1)  # a: this call reused it too; b, c: another process's
    grid.started(Path("d"), "d", resuming=False)
    clock.now = 60.0
    grid.finished(Path("d"))
    assert lines[0] == "run 4 of 6: d (training)"
    assert lines[1].startswith("run 4 of 6 after 60 s; 2 to go, about 60 s at the mean of the 1 trained so far over 2 "
                               "processes (done near ")
    grid.reused(Path("b"), "folder")  # read after the others finished: no run counted twice
    assert grid.total == 6 and grid.counts() == {"trained": 1, "folder": 2, "records": 0}


def test_claims_work_tells_the_grid_what_other_processes_finished_and_hold(tmp_path: Path) -> None:
    """Three runs: b finished by another process, c held by another (live) process that finishes it while this one
    trains a."""
    lines: list[str] = []
    folders = {name: tmp_path / name for name in "abc"}
    finished = {"b"}
    folders["c"].mkdir()
    (folders["c"] / CLAIM_NAME).write_text(str(os.getppid()))  # a live process that is not this one

    def run(name: str) -> None:
        grid = active_grid()
        grid.started(folders[name], name, resuming=False)
        finished.update({name, "c"})
        grid.finished(folders[name])

    with run_grid(log=lines.append) as grid:
        grid.expect(3)
        ran = list(claims.work(list("abc"), folders.__getitem__, finished.__contains__, run, poll_s=0.01))
    assert ran == ["a"]
    assert lines[0] == "run 2 of 3: a (training)"
    assert lines[1].startswith("run 2 of 3 after") and "1 to go" in lines[1] and "over 2 processes" in lines[1]


def test_expect_and_the_grid_exist_only_inside_a_study_call() -> None:
    expect(3)  # outside: nothing to tell
    assert active_grid() is None
    with run_grid(log=lambda line: None) as grid:
        assert active_grid() is grid
        expect(3)
        expect(2)  # a later, smaller plan never shrinks N
        assert grid.total == 3
    assert active_grid() is None


def test_a_slow_step_says_what_it_does_and_how_long_it_took() -> None:
    lines: list[str] = []
    with step("training the tokenizer", log=lines.append):
        pass
    assert lines[0] == "training the tokenizer ..." and re.fullmatch(r"training the tokenizer: done in \d+ s",
                                                                    lines[1])


def test_library_notices_reach_stderr_only_inside_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("seednorm.ops.cpu")
    log.info("not shown: a library prints nothing unless its user configures logging")
    with library_notices():
        log.info("building the C++ CPU kernels")
    log.info("not shown either")
    assert capsys.readouterr().err == "seednorm: building the C++ CPU kernels\n"
    assert not any(type(h).__name__ == "_StderrHandler" for h in logging.getLogger("seednorm").handlers)
