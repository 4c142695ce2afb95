"""Processes sharing a grid: claims are exclusive, and :func:`claims.work` runs each unfinished item once."""

from __future__ import annotations

import os
from pathlib import Path

from seednorm_experiments import claims


def test_work_runs_each_unfinished_item_once_in_order_and_releases_its_claim(tmp_path: Path) -> None:
    items = ["a", "b", "c"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "done").write_text("")
    ran = []

    def run(item: str) -> None:
        assert (tmp_path / item / claims.CLAIM_NAME).read_text() == str(os.getpid())  # held while it runs
        ran.append(item)
        (tmp_path / item / "done").write_text("")

    yielded = list(claims.work(items, lambda i: tmp_path / i, lambda i: (tmp_path / i / "done").is_file(), run, 0.01))
    assert ran == yielded == ["a", "c"]
    assert not list(tmp_path.glob("*/" + claims.CLAIM_NAME))


def test_a_claim_held_by_a_live_process_is_respected(tmp_path: Path) -> None:
    (tmp_path / claims.CLAIM_NAME).write_text(str(os.getppid()))  # a live process (our parent) holds it
    assert not claims.claim(tmp_path)
    (tmp_path / claims.CLAIM_NAME).unlink()
    assert claims.claim(tmp_path) and claims.claim(tmp_path)  # ours, and still ours
