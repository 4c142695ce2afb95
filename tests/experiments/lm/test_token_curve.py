"""``seednorm lm --size-curve --token-factors``: factor 1 is the size curve itself (same keys, presets, folders and
run fingerprints, and the same report and summary byte for byte), longer factors get their own keys, presets, grids
and warmup by the preset's rule, the report's token section and plots are made and rebuilt from the records alone,
and bad factors are one-line errors."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from seednorm_experiments.harness import fingerprint_digest, run_fingerprint
from seednorm_experiments.lm import main
from seednorm_experiments.lm import size_curve_report as report
from seednorm_experiments.lm.ablation import primary_metric
from seednorm_experiments.lm.presets import get_preset
from seednorm_experiments.lm.size_curve import Point, SizeCurvePlan, _Runs, load_size_curve
from seednorm_experiments.lm.study import Run, study_corpus
from seednorm_experiments.records import RECORDS_NAME

SMOKE = get_preset("smoke")
QUICK = get_preset("quick", steps=200)
ROOT = Path(__file__).resolve().parents[3]


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return int(e.code)


@pytest.fixture(scope="module")
def corpus():
    return study_corpus(SMOKE)


def _digest(runs: _Runs, job) -> str:
    return fingerprint_digest(run_fingerprint(*runs.spec(job), world_size=1))


def test_factor_one_is_the_size_curve() -> None:
    """The committed curve's point keys and presets are what a plan of factor 1 makes."""
    plain, explicit = SizeCurvePlan(QUICK), SizeCurvePlan(QUICK, token_factors=(1,))
    assert plain == explicit and plain.ordered_points() == explicit.ordered_points()
    keys = [p.key for p in plain.ordered_points()]
    assert keys == ["d48-l2", "d96-l2", "d192-l2", "d192-l4", "d384-l2", "d384-l2-noclip"]
    committed = json.loads((ROOT / "results/lm_size_curve/summary.json").read_text())
    assert set(committed["runs"]) == set(keys)
    preset = Point(48, 2).preset(QUICK)
    assert preset == dataclasses.replace(QUICK, name="quick-d48-l2", dim=48, n_layers=2)
    assert preset.steps == 200


def test_factor_one_keeps_the_run_folders_and_fingerprints(corpus, tmp_path: Path) -> None:
    points = ((16, 1), (32, 1))
    plain = _Runs(SizeCurvePlan(SMOKE, points=points, clip_off=(32, 1)), corpus, tmp_path)
    longer = _Runs(SizeCurvePlan(SMOKE, points=points, clip_off=(32, 1), token_factors=(1, 2)), corpus, tmp_path)
    for point in plain.plan.ordered_points():
        assert point in longer.plan.ordered_points()
        for norm in ("rmsnorm", "seednorm"):
            a, b = plain.job(point, norm, 1, 3e-3), longer.job(point, norm, 1, 3e-3)
            assert a.out == b.out == tmp_path / point.key / norm / "lr0.003" / "seed1"
            assert _digest(plain, a) == _digest(longer, b)
    # the size curve's preset as it was written before the token axis: same run, same fingerprint
    job = plain.job(Point(16, 1), "seednorm", 0, 3e-3)
    today = dataclasses.replace(SMOKE, name="smoke-d16-l1", dim=16, n_layers=1, grad_clip=SMOKE.grad_clip)
    task, cfg = plain.variant_spec(job, today, plain.evaluator, "")
    assert fingerprint_digest(run_fingerprint(task, cfg, world_size=1)) == _digest(plain, job)


def test_longer_factors_have_their_own_keys_presets_order_and_warmup(corpus, tmp_path: Path) -> None:
    base = dataclasses.replace(SMOKE, warmup=5)  # 12 steps: warmup capped at 12 // 5 = 2; 48 steps: 5
    plan = SizeCurvePlan(base, points=((32, 1), (16, 1)), clip_off=(32, 1), token_factors=(4, 1, 2))
    assert [p.key for p in plan.ordered_points()] == [
        "d16-l1", "d16-l1-t2x", "d16-l1-t4x", "d32-l1", "d32-l1-t2x", "d32-l1-t4x", "d32-l1-noclip"]
    long = Point(16, 1, factor=4)
    assert long.preset(base).name == "smoke-d16-l1-t4x" and long.preset(base).steps == 48
    runs = _Runs(plan, corpus, tmp_path)
    warmup = {f: runs.spec(runs.job(Point(16, 1, factor=f), "rmsnorm", 0, 3e-3))[1] for f in (1, 4)}
    assert (warmup[1].steps, warmup[1].warmup) == (12, 2)
    assert (warmup[4].steps, warmup[4].warmup) == (48, 5)
    assert runs.job(long, "rmsnorm", 0, 3e-3).out == tmp_path / "d16-l1-t4x" / "rmsnorm" / "lr0.003" / "seed0"


@pytest.mark.parametrize("factors, message", [
    ((), "distinct integers >= 1"), ((1, 0), "distinct integers >= 1"), ((1, 2, 2), "distinct integers >= 1"),
    ((1, 1.5), "distinct integers >= 1"), ((1, True), "distinct integers >= 1"), ((2, 4), "must include 1"),
])
def test_token_factors_are_validated(factors: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SizeCurvePlan(SMOKE, points=((16, 1),), clip_off=None, token_factors=factors)


BASE = ["--size-curve", "--preset", "smoke", "--points", "16x1", "--size-lrs", "3e-3,6e-3", "--seeds", "2",
        "--extend", "0", "--no-progress"]


@pytest.mark.parametrize("factors, message", [
    (["0"], "--token-factors: must be >= 1, got 0"),
    (["x"], "--token-factors: expected an integer >= 1, got 'x'"),
    (["1.5"], "--token-factors: expected an integer >= 1"),
    (["1", "2", "2"], "must be distinct integers >= 1, got [1, 2, 2]"),
    (["4"], "must include 1"),
])
def test_bad_token_factors_are_one_line(factors: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    assert _exit_code([*BASE, "--clip-off-point", "none", "--token-factors", *factors, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("seednorm lm: error: ") and message in lines[-1], lines
    assert sum("error:" in line for line in lines) == 1 and (len(lines) == 1 or lines[0].startswith("usage:"))
    assert not out.exists()


def test_token_curve_end_to_end(corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "curve"
    argv = [*BASE, "--clip-off-point", "16x1", "--token-factors", "1", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    trained = capsys.readouterr().out
    assert trained.count(" seed ") == 2 * 2 * 2 * 2 + 2 * 2  # 2 factors × 2 norms × 2 rates × 2 seeds + clip-off
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["d16-l1", "d16-l1-noclip", "d16-l1-t2x"]
    result = json.loads(next((out / "d16-l1-t2x").glob("*/lr*/seed0/result.json")).read_text())
    assert len(result["history"]) == 2 * SMOKE.steps

    summary = json.loads((out / "summary.json").read_text())
    assert [p["key"] for p in summary["points"]] == ["d16-l1", "d16-l1-noclip"]  # the size curve: factor 1
    assert summary["token_factors"] == [1, 2]
    lengths = {p["key"]: p for p in summary["token_curve"]}
    assert list(lengths) == ["d16-l1", "d16-l1-t2x"]
    one, two = lengths["d16-l1"], lengths["d16-l1-t2x"]
    assert (one["factor"], two["factor"]) == (1, 2) and two["tokens_per_run"] == 2 * one["tokens_per_run"]
    assert math.isclose(two["tokens_per_param"], two["tokens_per_run"] / two["non_embedding_params"])
    assert summary["points"][1]["best_lr"] == one["best_lr"]  # the clip-off check at factor 1's rates
    runs = [Run(r["variant"], r["seed"], r["lr"], {"diverged": r["diverged"], "final_eval": r["final_eval"],
                                                    "history": []}) for r in summary["runs"]["d16-l1-t2x"]]
    best = two["best_lr"]
    diffs = [primary_metric(next(r for r in runs if (r.norm, r.seed, r.lr) == ("seednorm", s, best["seednorm"])))
             - primary_metric(next(r for r in runs if (r.norm, r.seed, r.lr) == ("rmsnorm", s, best["rmsnorm"])))
             for s in (0, 1)]
    assert math.isclose(two["delta"]["seednorm"]["in_domain_bpb"]["mean"], sum(diffs) / 2, abs_tol=1e-12)

    text = (out / "report.md").read_text()
    section = text.split("## SeeDNorm − RMSNorm against training tokens")[1]
    assert "- 16 × 1, seednorm: ×1: " in section and "; ×2: " in section  # the reading comes first
    assert section.index("- 16 × 1, seednorm") < section.index("| width × layers | length |")
    assert "| 16 × 1 | ×2 | 24 | 6,144 |" in section and "(edge)" in section  # --extend 0: rates on the edge
    assert "Clip-off check" in text and "token_curve.png" in section and "gap_curve.png" in section
    for png in ("size_curve.png", "token_curve.png", "gap_curve.png"):
        assert (out / png).stat().st_size > 10_000

    # --report-only rebuilds the same report and summary from the report, records and summary alone
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("report.md", RECORDS_NAME, "summary.json"):
        shutil.copy(out / name, copy / name)
    assert main([*argv, "--report-only", "--out", str(copy)]) == 0
    for name in ("report.md", "summary.json"):
        assert (copy / name).read_bytes() == (out / name).read_bytes(), name
    assert (copy / "gap_curve.png").stat().st_size > 10_000 and not (copy / "d16-l1").exists()

    # one factor, given or not, writes the size curve's report and summary as they were, byte for byte
    monkeypatch.setattr(report, "provenance", lambda wall_s: "a machine")
    written = {}
    for name, extra in (("plain", {}), ("explicit", {"token_factors": (1,)})):
        plan = SizeCurvePlan(SMOKE, points=((16, 1),), lrs=(3e-3, 6e-3), seeds=2, extend=0, clip_off=(16, 1),
                             **extra)
        runs = load_size_curve(plan, corpus, out)
        assert set(runs) == {"d16-l1", "d16-l1-noclip"}
        report.write_size_curve_report(tmp_path / name, plan, runs, command="c", vocab_size=corpus.vocab_size)
        written[name] = {f: (tmp_path / name / f).read_bytes() for f in ("report.md", "summary.json")}
        assert not (tmp_path / name / "token_curve.png").exists()
    assert written["plain"] == written["explicit"]
    assert b"training tokens" not in written["plain"]["report.md"]
    assert b"token_curve" not in written["plain"]["summary.json"]
