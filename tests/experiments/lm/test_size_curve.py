"""``seednorm lm --size-curve``: the plan is validated, each norm's grid grows until its best rate is inside, the
report's paired differences are those of the runs, finished runs are reused (and runs of other settings refused),
and the curve redraws with the GPU study's point."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from seednorm_experiments.lm import main
from seednorm_experiments.lm.ablation import primary_metric, zero_shot_bpb
from seednorm_experiments.lm.presets import get_preset
from seednorm_experiments.lm.size_curve import Point, SizeCurvePlan, _grown, best_rates, parse_points
from seednorm_experiments.lm.size_curve_report import main as redraw
from seednorm_experiments.lm.study import Run

SMOKE = get_preset("smoke")


def _run(norm: str, lr: float, loss: float, seed: int = 0, diverged: bool = False) -> Run:
    return Run(norm, seed, lr, {"diverged": diverged, "history": [{"loss": loss}] * 10, "final_eval": {}})


def test_parse_points() -> None:
    assert parse_points(["48x2", "192X4"]) == ((48, 2), (192, 4))
    for bad in ("48", "x2", "48x0", "ax2", "48x2x1"):
        with pytest.raises(ValueError, match="expected WIDTHxLAYERS"):
            parse_points([bad])


@pytest.mark.parametrize("kwargs, message", [
    ({"norms": ("seednorm", "layernorm")}, "compares rmsnorm"),
    ({"norms": ("rmsnorm",)}, "compares rmsnorm"),
    ({"norms": ("rmsnorm", "nonorm")}, "compares rmsnorm"),
    ({"seeds": 1}, ">= 2 seeds"),
    ({"lrs": (1e-3,)}, ">= 2 distinct"),
    ({"lrs": (1e-3, 1e-3)}, ">= 2 distinct"),
    ({"points": ((32, 1), (32, 1))}, "distinct"),
    ({"points": ((33, 1),)}, "not a multiple"),
    ({"points": ((32, 1),), "clip_off": (64, 1)}, "clip-off point"),
    ({"extend": -1}, "extend"),
])
def test_plan_is_validated(kwargs: dict, message: str) -> None:
    base = {"points": ((32, 1),), "clip_off": None}
    with pytest.raises(ValueError, match=message):
        SizeCurvePlan(SMOKE, **{**base, **kwargs})


def test_points_run_cheapest_first_then_the_clip_off_check() -> None:
    plan = SizeCurvePlan(SMOKE, points=((64, 2), (32, 4), (32, 1), (64, 1)), clip_off=(64, 2))
    assert [p.key for p in plan.ordered_points()] == ["d32-l1", "d32-l4", "d64-l1", "d64-l2", "d64-l2-noclip"]
    assert Point(64, 2, clip=False).preset(SMOKE).grad_clip is None
    assert Point(64, 2).preset(SMOKE).grad_clip == SMOKE.grad_clip


def test_grid_grows_outward_until_the_best_rate_is_inside() -> None:
    plan = SizeCurvePlan(SMOKE, points=((32, 1),), lrs=(2e-3, 4e-3), extend=1, clip_off=None)
    rates = {"rmsnorm": [2e-3, 4e-3], "seednorm": [2e-3, 4e-3]}
    runs = [_run("rmsnorm", 2e-3, 3.0, s) for s in (0, 1)] + [_run("rmsnorm", 4e-3, 2.0, s) for s in (0, 1)]
    runs += [_run("seednorm", 2e-3, 2.0, s) for s in (0, 1)] + [_run("seednorm", 4e-3, 3.0, s) for s in (0, 1)]
    assert _grown(plan, rates, runs)
    assert rates == {"rmsnorm": [2e-3, 4e-3, 8e-3], "seednorm": [2e-3, 4e-3, 1e-3]}
    # still on the edge, but each side may grow only once (extend=1)
    runs += [_run("rmsnorm", 8e-3, 1.0, s) for s in (0, 1)] + [_run("seednorm", 1e-3, 1.0, s) for s in (0, 1)]
    assert not _grown(plan, rates, runs)
    assert best_rates(runs) == {"rmsnorm": 8e-3, "seednorm": 1e-3}


def test_a_norm_that_lost_a_seed_everywhere_grows_downward() -> None:
    plan = SizeCurvePlan(SMOKE, points=((32, 1),), lrs=(2e-3, 4e-3), extend=1, clip_off=None)
    rates = {"rmsnorm": [2e-3, 4e-3], "seednorm": [2e-3, 4e-3]}
    runs = [_run("rmsnorm", lr, 2.0, s) for lr in (2e-3, 4e-3) for s in (0, 1)]
    runs += [_run("rmsnorm", 6e-3, 2.0)]  # not in rates: ignored by the edge test
    runs += [_run("seednorm", lr, 9.0, s, diverged=s == 1) for lr in (2e-3, 4e-3) for s in (0, 1)]
    assert best_rates(runs)["seednorm"] is None
    assert _grown(plan, rates, runs)
    assert rates["seednorm"] == [2e-3, 4e-3, 1e-3]


ARGV = ["--size-curve", "--preset", "smoke", "--points", "16x1,32x1", "--size-lrs", "3e-3,6e-3", "--seeds", "2",
        "--extend", "1", "--clip-off-point", "32x1", "--no-progress"]


def test_size_curve_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "curve"
    assert main([*ARGV, "--out", str(out)]) == 0
    trained = capsys.readouterr().out
    assert trained.count(" seed ") >= 2 * 2 * 2 * 2 + 2 * 2  # 2 points × 2 norms × 2 rates × 2 seeds + clip-off
    summary = json.loads((out / "summary.json").read_text())
    points = {p["key"]: p for p in summary["points"]}
    assert set(points) == {"d16-l1", "d32-l1", "d32-l1-noclip"}
    assert points["d16-l1"]["non_embedding_params"] < points["d32-l1"]["non_embedding_params"]
    for key in ("d16-l1", "d32-l1"):
        p = points[key]
        assert p["complete"]
        for norm, lrs in p["rates"].items():
            assert set(lrs) >= {3e-3, 6e-3} and len(lrs) <= 4  # grown at most once per side
            assert p["best_lr"][norm] in lrs
        # the report's Δ is SeeDNorm at its best rate − RMSNorm at its best, paired by seed, from the runs
        runs = [Run(r["variant"], r["seed"], r["lr"], {"diverged": r["diverged"], "final_eval": r["final_eval"],
                                                        "history": []}) for r in summary["runs"][key]]
        for name, metric in (("in_domain_bpb", primary_metric), ("zero_shot_bpb", zero_shot_bpb)):
            diffs = [metric(next(r for r in runs if r.norm == "seednorm" and r.seed == s
                                 and r.lr == p["best_lr"]["seednorm"]))
                     - metric(next(r for r in runs if r.norm == "rmsnorm" and r.seed == s
                                   and r.lr == p["best_lr"]["rmsnorm"])) for s in (0, 1)]
            assert math.isclose(p["delta"]["seednorm"][name]["mean"], sum(diffs) / 2, abs_tol=1e-12)
            assert p["delta"]["seednorm"][name]["n"] == 2
    assert points["d32-l1-noclip"]["best_lr"] == points["d32-l1"]["best_lr"]
    report = (out / "report.md").read_text()
    for section in ("Each norm at its own best rate", "Every shared rate", "Clip-off check", "size_curve.png"):
        assert section in report
    assert (out / "size_curve.png").stat().st_size > 10_000

    # a second run reuses every finished run (nothing trains) and --report-only writes the same tables
    assert main([*ARGV, "--out", str(out)]) == 0
    assert " seed " not in capsys.readouterr().out
    before = report.split("## Every shared rate")[0].split("Protocol")[1]
    assert main([*ARGV, "--report-only", "--out", str(out)]) == 0
    assert (out / "report.md").read_text().split("## Every shared rate")[0].split("Protocol")[1] == before

    # runs of other settings in the same folder stop the command before anything trains: one line, exit 2
    capsys.readouterr()
    assert main([*ARGV, "--steps", "10", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seednorm lm: error:") and "\n" not in err and "d16-l1" in err


def test_curve_redraws_with_the_gpu_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = {"norms": ["rmsnorm", "seednorm"], "tokens_per_run": 1000, "seeds": 2, "points": [
        {"key": f"d{d}-l2", "dim": d, "n_layers": 2, "clip": True, "non_embedding_params": 12 * d * d,
         "delta": {"seednorm": {"in_domain_bpb": {"mean": 0.01, "ci95": 0.02, "n": 2},
                                "zero_shot_bpb": {"mean": -0.01, "ci95": 0.02, "n": 2}}}} for d in (48, 96)]}
    gpu = {"non_embedding_params": 25_000_000, "tokens_per_run": 52_000_000,
           "delta": {"seednorm": {"lr": 3e-3, "in_domain_bpb": -0.02, "zero_shot_bpb": -0.03}}}
    (tmp_path / "s.json").write_text(json.dumps(summary))
    (tmp_path / "g.json").write_text(json.dumps(gpu))
    png = tmp_path / "curve.png"
    assert redraw([str(tmp_path / "s.json"), "--gpu", str(tmp_path / "g.json"), "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000
    assert redraw([str(tmp_path / "missing.json"), "--out", str(png)]) == 2
    assert "missing.json does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--points", "48"], "expected WIDTHxLAYERS"),
    (["--points", "16x1", "--clip-off-point", "32x1"], "clip-off point"),
    (["--preset", "gpu"], "own learning-rate grid"),
    (["--moe-experts", "2", "--moe-top-k", "3"], "between 1 and --moe-experts"),
    (["--seeds", "1"], ">= 2 seeds"),
])
def test_size_curve_bad_arguments_are_clear_errors(argv: list[str], message: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--size-curve", "--preset", "smoke", "--points", "16x1", "--clip-off-point", "none"]
    assert main([*base, *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
