"""``seednorm lm --size-curve --arch olmo2``: the size curve's plan on OLMo-core's OLMo2 with the site variants; the
named sizes are OLMo-core's, the Llama curve's variants and fingerprints stay, the report's answers are the runs'
paired differences read the conservative way, and a smoke curve runs end to end, its report rebuilt from records."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("olmo_core")

from seednorm_experiments.lm import main  # noqa: E402
from seednorm_experiments.lm.ablation import primary_metric, zero_shot_bpb  # noqa: E402
from seednorm_experiments.lm.olmo import build_olmo2  # noqa: E402
from seednorm_experiments.lm.olmo_curve import CURVES, NORMS, OLMO2_SIZES, curve_preset  # noqa: E402
from seednorm_experiments.lm.olmo_curve_report import reading  # noqa: E402
from seednorm_experiments.lm.presets import get_preset  # noqa: E402
from seednorm_experiments.lm.recipes import KNOBS, SITE_KNOBS, VARIANTS  # noqa: E402
from seednorm_experiments.lm.size_curve import SizeCurvePlan, parse_points  # noqa: E402
from seednorm_experiments.lm.study import Run, model_config  # noqa: E402
from seednorm_experiments.report import Stat  # noqa: E402


def test_named_sizes_are_olmo_cores() -> None:
    from olmo_core.nn.transformer import TransformerConfig

    for name, (dim, layers, heads) in OLMO2_SIZES.items():
        config = getattr(TransformerConfig, name)(vocab_size=100)
        assert (config.d_model, config.n_layers, config.block.sequence_mixer.n_heads) == (dim, layers, heads)
    assert parse_points(["olmo2_30M", "64x2"], OLMO2_SIZES) == ((256, 4), (64, 2))
    with pytest.raises(ValueError, match="or one of olmo2_14M"):
        parse_points(["olmo2_1M"], OLMO2_SIZES)


def test_site_variants_leave_the_ablation_and_the_llama_fingerprints_alone() -> None:
    assert set(SITE_KNOBS) == set(NORMS) - {"rmsnorm"}
    assert not set(SITE_KNOBS) & set(KNOBS)  # the ablation's default knobs are what they were
    assert KNOBS == ("seednorm-noclip", "seednorm-clip0.1", "seednorm-lr0.1", "seednorm-nowd", "seednorm-dot-rsqrt",
                     "seednorm-dot-inv", "seednorm-heads")
    for name, variant in VARIANTS.items():  # a variant's fingerprint names its sites only when it has some
        assert ("sites" in variant.signature()) == (name in SITE_KNOBS)
    recipe = VARIANTS["seednorm-blocks-dot-rsqrt"].model_overrides(256, 8)
    assert recipe == {"norm_kwargs": {"dot_scale": 1 / 16}, "placement": ("attn", "mlp")}
    assert VARIANTS["seednorm-blocks-qk"].model_overrides(64, 2) == {"placement": ("attn", "mlp", "qk")}


def test_every_curve_preset_makes_a_valid_plan() -> None:
    for name, curve in CURVES.items():
        preset = curve_preset(name)
        assert preset.name == f"olmo2-{name}" and not preset.lr_grid
        plan = SizeCurvePlan(preset, points=parse_points(curve.points, OLMO2_SIZES), norms=NORMS, lrs=curve.lrs,
                             seeds=curve.seeds, extend=curve.extend, clip_off=None, arch="olmo2")
        assert plan.seeds >= 2
    assert parse_points(CURVES["standard"].points, OLMO2_SIZES) == ((128, 4), (256, 4))
    assert parse_points(CURVES["gpu"].points, OLMO2_SIZES) == ((384, 8),)
    with pytest.raises(ValueError, match="--norms dyt"):
        SizeCurvePlan(curve_preset("smoke"), points=((32, 1),), norms=("rmsnorm", "dyt"), clip_off=None, arch="olmo2")


def _stat(mean: float, ci: float) -> Stat:
    return Stat(mean, ci, 4, ci)


def test_reading_is_no_stronger_than_the_intervals() -> None:
    below, straddles, above = _stat(-0.02, 0.01), _stat(-0.02, 0.03), _stat(0.02, 0.01)
    assert reading(True, False, {"a": below, "b": below}).startswith("lower bpb")
    assert reading(True, False, {"a": above, "b": above}).startswith("higher bpb")
    assert reading(True, False, {"a": below, "b": straddles}) == "not resolved: an interval includes 0"
    assert reading(True, False, {"a": below, "b": above}) == "not resolved: an interval includes 0"
    assert reading(True, True, {"a": below, "b": below}).startswith("not resolved: a chosen rate is on its grid")
    assert reading(False, False, {"a": below, "b": below}) == "not finished"
    assert reading(True, False, {"a": below, "b": None}) == "no interval"


ARGV = ["--size-curve", "--arch", "olmo2", "--preset", "smoke", "--steps", "6", "--no-progress",
        "--norms", "rmsnorm", "seednorm-blocks", "seednorm-blocks-final"]


def test_olmo2_curve_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "curve"
    assert main([*ARGV, "--out", str(out)]) == 0
    assert capsys.readouterr().out.count(" seed ") == 3 * 2 * 2  # 3 norms × 2 rates × 2 seeds, no growth, no clip-off
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arch"] == "olmo2" and [p["key"] for p in summary["points"]] == ["d32-l1"]
    runs = [Run(r["variant"], r["seed"], r["lr"], {"diverged": r["diverged"], "final_eval": r["final_eval"],
                                                    "history": []}) for r in summary["runs"]["d32-l1"]]
    result = json.loads(next(out.glob("d32-l1/seednorm-blocks-final/lr*/seed0/result.json")).read_text())
    model = result["fingerprint"]["signature"]["model"]
    assert model["arch"] == "olmo2" and model["placement"] == ["attn", "mlp", "final"] and model["n_heads"] == 2
    pairs = {(c["norm"], c["versus"]): c for c in summary["comparisons"]}
    assert set(pairs) == {("seednorm-blocks", "rmsnorm"), ("seednorm-blocks-final", "rmsnorm"),
                          ("seednorm-blocks-final", "seednorm-blocks")}
    report = (out / "report.md").read_text()
    for (a, b), c in pairs.items():  # each answer is a at its best rate − b at its best, paired by seed, from the runs
        lr_a, lr_b = c["lr"]
        assert (lr_a, lr_b) == (summary["points"][0]["best_lr"][a], summary["points"][0]["best_lr"][b])
        for name, metric in (("in_domain_bpb", primary_metric), ("zero_shot_bpb", zero_shot_bpb)):
            diffs = [metric(next(r for r in runs if r.norm == a and r.seed == s and r.lr == lr_a))
                     - metric(next(r for r in runs if r.norm == b and r.seed == s and r.lr == lr_b)) for s in (0, 1)]
            assert math.isclose(c["deltas"][name]["mean"], sum(diffs) / 2, abs_tol=1e-12)
        assert c["edge"] and c["reading"] == "not resolved: a chosen rate is on its grid's edge"  # 2 rates, no growth
        assert f"32 × 1, {a} − {b}: **{c['reading']}**; Δ in-domain bpb {c['deltas']['in_domain_bpb']['mean']:+.3f}" \
            in report
    for needle in ("# OLMo2:", "OLMo-core's OLMo2 (reordered-norm blocks", "Does SeeDNorm help on the reordered-norm",
                   "QK-norm and the final norm are converted"):
        assert needle in report
    assert json.loads((out / "runs.jsonl").read_text().splitlines()[0])["study"] == "lm-size-curve"

    # --report-only rebuilds the same report from the records, training nothing
    assert main([*ARGV, "--report-only", "--out", str(out)]) == 0
    assert " seed " not in capsys.readouterr().out
    rebuilt = (out / "report.md").read_text()
    assert rebuilt.split("Protocol")[1] == report.split("Protocol")[1]


def test_olmoe_curve_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--moe-experts`` with ``--arch olmo2``: OLMoE's layout trains on CPU, named in runs, report and summary."""
    out = tmp_path / "moe"
    argv = ["--size-curve", "--arch", "olmo2", "--preset", "smoke", "--moe-experts", "3", "--steps", "4",
            "--norms", "rmsnorm", "seednorm-blocks", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert capsys.readouterr().out.count(" seed ") == 2 * 2 * 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["moe"] == {"experts": 3, "top_k": 2} and summary["arch"] == "olmo2"
    assert all(not r["diverged"] and math.isfinite(r["final_loss"]) for r in summary["runs"]["d32-l1"])
    result = json.loads(next(out.glob("d32-l1/seednorm-blocks/lr*/seed0/result.json")).read_text())
    model = result["fingerprint"]["signature"]["model"]
    assert (model["arch"], model["moe_experts"], model["moe_top_k"]) == ("olmo2", 3, 2)
    report = (out / "report.md").read_text()
    assert report.startswith("# OLMoE:") and "dropless mixture of 3 SwiGLU experts" in report
    assert "## The OLMoE questions" in report
    point = summary["points"][0]  # every expert counted, and what one token uses (2 of 3 experts)
    cfg = model_config(get_preset("smoke", dim=32, n_layers=1, n_heads=2), 384, "rmsnorm", moe_experts=3)
    built = build_olmo2(dataclasses.replace(cfg, arch="olmo2"))
    qk_norms = 2 * 32  # OLMo2's QK-norm gains, which the Llama count (the study's measure) does not have
    assert point["non_embedding_params"] + qk_norms == sum(p.numel() for p in built.parameters()) - 384 * 32
    expert = 3 * 32 * 96
    assert point["active_non_embedding_params"] == point["non_embedding_params"] - expert
    assert f"{point['non_embedding_params']:,} ({point['active_non_embedding_params']:,} active)" in report
    assert main([*argv, "--report-only"]) == 0
    assert (out / "report.md").read_text().split("Protocol")[1] == report.split("Protocol")[1]


@pytest.mark.parametrize(("argv", "message"), [
    (["--preset", "smoke", "--points", "olmo2_14M"], "has 8 heads, the preset 2"),
    (["--preset", "full"], "has the presets"),
    (["--preset", "smoke", "--norms", "rmsnorm", "layernorm"], "--norms layernorm"),
    (["--preset", "smoke", "--placement", "attn", "mlp"], "--placement do not apply"),
])
def test_olmo2_curve_bad_arguments_are_clear_errors(argv: list[str], message: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--size-curve", "--arch", "olmo2", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
