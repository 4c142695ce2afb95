"""``seednorm lm --size-curve --sensitivity``: every run of the grid again from its init moved up by one ulp, and the
report's "how far it moved" columns are those of the runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from seednorm_experiments.lm import main
from seednorm_experiments.lm.ablation import primary_metric
from seednorm_experiments.lm.size_curve import Point
from seednorm_experiments.lm.study import Run, nudged

ARGV = ["--size-curve", "--preset", "smoke", "--points", "16x1", "--norms", "rmsnorm", "seednorm", "--size-lrs",
        "3e-3,6e-2", "--seeds", "2", "--extend", "0", "--clip-off-point", "none", "--sensitivity", "--no-progress"]


def test_nudged_moves_every_element_to_the_next_float() -> None:
    model = nn.Linear(7, 5)
    with torch.no_grad():
        model.bias.zero_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert nudged(model) is model
    for name, p in model.named_parameters():
        up = torch.nextafter(before[name], torch.tensor(math.inf))
        assert torch.equal(p.detach(), up)
        assert bool((p.detach() > before[name]).all())
    assert float(model.bias.detach().max()) < 1e-44  # 0 becomes the smallest subnormal, nothing more


def test_nudged_point_has_its_own_folder() -> None:
    assert Point(48, 2, nudged=True).key == "d48-l2-ulp"
    assert Point(48, 2, factor=4, nudged=True).key == "d48-l2-t4x-ulp"
    assert Point(48, 2).key == "d48-l2"  # the unnudged layout is the size curve's, so its runs are shared


def test_sensitivity_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sens"
    assert main([*ARGV, "--out", str(out)]) == 0
    assert capsys.readouterr().out.count(" seed ") == 2 * 2 * 2 * 2  # 2 norms × 2 rates × 2 seeds, twice
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["sensitivity"]
    assert {(r["norm"], r["lr"]) for r in rows} == {(n, lr) for n in ("rmsnorm", "seednorm") for lr in (3e-3, 6e-2)}
    runs = {key: [Run(r["variant"], r["seed"], r["lr"], {"diverged": r["diverged"], "final_eval": r["final_eval"],
                                                         "history": []}) for r in rs]
            for key, rs in summary["runs"].items()}
    assert set(runs) == {"d16-l1", "d16-l1-ulp"}
    by = {(key, r.norm, r.lr, r.seed): r for key, rs in runs.items() for r in rs}
    moved_somewhere = False
    for row in rows:
        def pick(key: str, s: int, row: dict = row) -> Run:
            return by[key, row["norm"], row["lr"], s]

        both = [s for s in (0, 1) if not (pick("d16-l1", s).diverged or pick("d16-l1-ulp", s).diverged)]
        assert row["seeds"] == len(both)
        if both:
            moved = [abs(primary_metric(pick("d16-l1-ulp", s)) - primary_metric(pick("d16-l1", s))) for s in both]
            assert math.isclose(row["bpb_moved"]["mean"], sum(moved) / len(moved), abs_tol=1e-12)
            assert math.isclose(row["bpb_moved"]["max"], max(moved), abs_tol=1e-12)
            moved_somewhere |= max(moved) > 0
    assert moved_somewhere  # the nudge reaches the result: a float-level change, not none
    report = (out / "report.md").read_text()
    assert "## Sensitivity to a one-ulp change of the init" in report and "sensitivity.png" in report
    assert (out / "sensitivity.png").stat().st_size > 10_000

    # --report-only rebuilds the same section from the records
    section = report.split("## Sensitivity")[1]
    assert main([*ARGV, "--report-only", "--out", str(out)]) == 0
    assert (out / "report.md").read_text().split("## Sensitivity")[1] == section


def test_sensitivity_applies_to_the_size_curve_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--preset", "smoke", "--sensitivity", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--sensitivity applies to --size-curve only" in err and "\n" not in err
    assert not (tmp_path / "o").exists()
