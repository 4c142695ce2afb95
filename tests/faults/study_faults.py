"""What the study fault tests share: a private kernel/corpus cache per test module, the ``seednorm lm`` exit code,
the one-line error check, snapshots of a study folder, and a study folder's run folders without its records."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from seednorm_experiments import lm


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``SEEDNORM_CACHE`` in a temporary folder for the importing module (its corpora and kernels built there once)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEEDNORM_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def exit_code(argv: list[str]) -> int:
    """``seednorm lm argv``'s exit code (argparse's own errors included)."""
    try:
        return lm.main(argv)
    except SystemExit as e:
        return e.code


PROGRESS = re.compile(r"^run \d+ of \d+[: ]|^building the corpus |^seednorm: (building|built) the C\+\+"
                      r"| \.\.\.$|: done in ")
"""A line saying what the study was doing (seednorm_experiments.progress), which may come before its error."""


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the command printed on stderr after any lines of what it was doing (no traceback)."""
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not PROGRESS.search(line)]
    assert not any("Traceback" in line for line in err) and len(err) == 1, err
    return err[0]


def snapshot(out: Path, suffixes: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """Every file under ``out`` (those with one of ``suffixes`` when given), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and (suffixes is None or p.suffix in suffixes)}


def drop_records(out: Path) -> None:
    """Leave the run folders alone in ``out``: a study reuses a run recorded in its runs.jsonl without its folder."""
    for name in ("runs.jsonl", "report.md"):
        (out / name).unlink()
