"""Hostile folders in ``--out`` are one line on stderr and exit 2, never a traceback, in every study (the lm study with
--resume, its ablation and size curve, vit, upcycle): a run's result.json, checkpoint.pt or the report that is a
folder, a run folder or its parent that is a file, a symlink loop or a symlink to a file, a dangling ``--out``
symlink, an ``--out`` that cannot be created, an unreadable record."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from study_faults import drop_records, private_cache  # noqa: F401 (private_cache: autouse)

from seednorm_experiments import cli

STUDIES = {
    "lm": ["lm", "--preset", "smoke", "--norms", "seednorm", "--no-progress", "--no-throughput", "--resume"],
    "ablation": ["lm", "--ablation", "--preset", "smoke", "--seeds", "2", "--ablation-lrs", "1e-3", "1e-2", "--knobs",
                 "seednorm-lr0.1", "--until", "sweep", "--steps", "3", "--no-progress"],
    "size curve": ["lm", "--size-curve", "--preset", "smoke", "--points", "32x1", "--clip-off-point", "none",
                   "--size-lrs", "1e-3", "1e-2", "--extend", "0", "--seeds", "2", "--steps", "3",
                   "--norms", "rmsnorm", "seednorm", "--no-progress"],
    "vit": ["vit", "--preset", "smoke", "--norms", "rmsnorm", "--heads", "none", "--seeds", "1", "--no-progress"],
    "upcycle": ["upcycle", "--preset", "smoke", "--arms", "rmsnorm-norms", "--seeds", "1", "--no-progress"],
}


def _main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


_finished: dict[str, Path] = {}


def finished(study: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study's ``--out`` with every run finished (made once per module)."""
    if study not in _finished:
        out = tmp_path_factory.mktemp(study.replace(" ", "_")) / "out"
        assert _main([*STUDIES[study], "--out", str(out)]) == 0
        _finished[study] = out
    return _finished[study]


def first_run(out: Path) -> Path:
    return sorted(out.rglob("result.json"))[0].parent


def _replace_by_folder(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


def result_is_a_folder(out: Path) -> Path:
    path = first_run(out) / "result.json"
    _replace_by_folder(path)
    return path


def checkpoint_is_a_folder(out: Path) -> Path:
    run = first_run(out)
    (run / "result.json").unlink()
    _replace_by_folder(run / "checkpoint.pt")
    return run / "checkpoint.pt"


def report_is_a_folder(out: Path) -> Path:
    _replace_by_folder(out / "report.md")
    return out / "report.md"


def run_parent_is_a_file(out: Path) -> Path:
    parent = first_run(out).parent
    shutil.rmtree(parent)
    parent.write_text("not a folder")
    return parent


def run_is_a_symlink_loop(out: Path) -> Path:
    run = first_run(out)
    shutil.rmtree(run)
    run.symlink_to(run.name)
    return run


def run_is_a_symlink_to_a_file(out: Path) -> Path:
    run = first_run(out)
    shutil.rmtree(run)
    (out / "a_file").write_text("not a folder")
    run.symlink_to(out / "a_file")
    return run


CASES: dict[str, Callable[[Path], Path]] = {f.__name__.replace("_", " "): f for f in (
    result_is_a_folder, checkpoint_is_a_folder, report_is_a_folder, run_parent_is_a_file, run_is_a_symlink_loop,
    run_is_a_symlink_to_a_file)}


def _one_line(capsys: pytest.CaptureFixture[str], prog: str) -> str:
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert "Traceback" not in err and lines, err
    assert lines[-1].startswith(f"seednorm {prog}: error: "), err
    assert len(lines) == 1 or lines[0].startswith("usage:"), err  # argparse's errors follow its usage
    return lines[-1]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("study", list(STUDIES))
def test_a_hostile_run_folder_is_one_line(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                          capsys: pytest.CaptureFixture[str], study: str, case: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(finished(study, tmp_path_factory), out, symlinks=True)
    drop_records(out)
    bad = CASES[case](out)
    capsys.readouterr()
    assert _main([*STUDIES[study], "--out", str(out)]) == 2
    line = _one_line(capsys, STUDIES[study][0])
    assert str(bad) in line, line


@pytest.mark.parametrize("study", list(STUDIES))
def test_a_dangling_or_uncreatable_out_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   study: str) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    for out, message in [(link, "dangling symlink"), (link / "sub", "dangling symlink"),
                         (Path("/proc/seednorm-out"), "cannot be created")]:
        assert _main([*STUDIES[study], "--out", str(out)]) == 2
        assert message in _one_line(capsys, STUDIES[study][0])
        assert not (tmp_path / "nowhere").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
@pytest.mark.parametrize("study", list(STUDIES))
def test_an_unreadable_record_is_one_line(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                          capsys: pytest.CaptureFixture[str], study: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(finished(study, tmp_path_factory), out, symlinks=True)
    path = first_run(out) / "result.json"
    path.chmod(0)
    try:
        assert _main([*STUDIES[study], "--out", str(out)]) == 2
        assert str(path) in _one_line(capsys, STUDIES[study][0])
    finally:
        path.chmod(0o644)


def test_an_oserror_about_a_path_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The last net under every study: a file the study writes late (a plot, summary.json) that turns out to be a
    folder is one line naming it, not a traceback; an OSError about no path stays a traceback (a bug)."""
    from seednorm_experiments.args import report_errors

    def body() -> int:
        raise IsADirectoryError(21, "Is a directory", "/x/summary.json")

    assert report_errors("seednorm vit", body, ()) == 2
    assert capsys.readouterr().err.strip() == ("seednorm vit: error: /x/summary.json: Is a directory; fix or remove "
                                                "that path, or choose another --out")

    def bug() -> int:
        raise OSError("no path")

    with pytest.raises(OSError):
        report_errors("seednorm vit", bug, ())
