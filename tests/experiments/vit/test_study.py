"""The vision study end to end (smoke preset), and the pieces that make it exact: batches, the run plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from ports import free_port

import seednorm
from seednorm_experiments.vit import main
from seednorm_experiments.vit.cli import build_parser, resolve_preset
from seednorm_experiments.vit.data import Batches, load_mnist
from seednorm_experiments.vit.evals import DEFAULT_SHIFTS, parse_shift
from seednorm_experiments.vit.presets import PRESETS, get_preset
from seednorm_experiments.vit.study import plan, run_name, run_signature


def parse_args(argv: list[str]):
    return build_parser().parse_args(argv)


@pytest.fixture(scope="module")
def digits():
    return load_mnist().split(0.2, seed=0)[1]  # 1,000 images: enough for the batch tests


def test_batches_are_a_pure_function_of_seed_and_step(digits) -> None:
    a, b = Batches(digits, 64, seed=1, max_shift=2), Batches(digits, 64, seed=1, max_shift=2)
    for step in (0, 15, 16, 40):  # 15 and 16 straddle the first epoch boundary (1000 / 64)
        xa, ya = a(step, 0, 1)
        xb, yb = b(step, 0, 1)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.shape == (64, 1, 28, 28)
    assert not torch.equal(a(0, 0, 1)[0], Batches(digits, 64, seed=2, max_shift=2)(0, 0, 1)[0])


def test_ddp_shards_concatenate_to_the_single_process_batch(digits) -> None:
    batches = Batches(digits, 64, seed=0, max_shift=2)
    for step in (0, 15):
        whole = batches(step, 0, 1)
        shards = [batches(step, rank, 4) for rank in range(4)]
        assert torch.equal(torch.cat([s[0] for s in shards]), whole[0])
        assert torch.equal(torch.cat([s[1] for s in shards]), whole[1])
    with pytest.raises(ValueError, match="not divisible by the world size"):
        batches(0, 0, 3)


def test_each_epoch_visits_every_image_once(digits) -> None:
    batches = Batches(digits, 100, seed=0, max_shift=0)
    seen = torch.cat([batches(step, 0, 1)[0] for step in range(10)]).flatten(1)
    assert torch.equal(torch.unique(seen, dim=0), torch.unique(digits.images.flatten(1), dim=0))
    with pytest.raises(ValueError, match="batch_size"):
        Batches(digits, 0, seed=0, max_shift=0)


def test_plan_and_run_names() -> None:
    preset = replace(PRESETS["smoke"], norms=("layernorm", "seednorm"), heads=(1, 4))
    specs = plan(preset, seeds=2)
    assert [s.label for s in specs] == ["layernorm"] * 2 + ["seednorm/2h"] * 2 + ["layernorm"] * 2 + [
        "seednorm/1h"] * 2 + ["seednorm/4h"] * 2
    names = [run_name(s, run_signature(s, preset, "seednorm", DEFAULT_SHIFTS)) for s in specs]
    assert len(set(names)) == len(specs) and names[0].startswith("main-layernorm-d16-s0-")
    main_seed = specs[2].model.norm_kwargs
    assert main_seed == {"num_heads": 2, "dynamic_dropout": preset.model.drop_path, "dot_scale": "dim"}
    wide = [s.model for s in specs if s.grid == "heads"]
    assert {(m.dim, m.depth) for m in wide} == {(preset.ablation_dim, preset.ablation_depth)}
    assert {m.norm_kwargs.get("dot_scale") for m in wide} == {None, preset.ablation_dot_scale}
    faster = replace(specs[0], lr=specs[0].lr * 2)
    augmented = replace(preset, max_shift=preset.max_shift + 1)
    for spec, settings, shifts in ((faster, preset, DEFAULT_SHIFTS), (specs[0], augmented, DEFAULT_SHIFTS),
                                   (specs[0], preset, DEFAULT_SHIFTS[:1])):
        assert run_name(spec, run_signature(spec, settings, "seednorm", shifts)) != names[0]
    assert run_name(specs[0], run_signature(specs[0], preset, "timm", DEFAULT_SHIFTS)) != names[0]


def test_cli_overrides() -> None:
    preset = resolve_preset(parse_args(["--preset", "smoke", "--norms", "dyt,seednorm", "--heads", "none",
                                        "--seeds", "3", "--dot-scale", "0.5", "--seednorm-heads", "4",
                                        "--ablation-dot-scale", "dim"]))
    assert preset.ablation_dot_scale == "dim"
    assert (preset.norms, preset.heads, preset.seeds, preset.dot_scale, preset.seednorm_heads) == (
        ("dyt", "seednorm"), (), 3, 0.5, 4)
    assert not [s for s in plan(preset, 1) if s.grid == "heads"]
    spaced = resolve_preset(parse_args(["--preset", "smoke", "--norms", "dyt", "seednorm", "--heads", "1", "2,4"]))
    assert (spaced.norms, spaced.heads) == (("dyt", "seednorm"), (1, 2, 4))
    assert parse_args(["--shifts", "noise=0.1", "rotate=5"]).shifts == (parse_shift("noise=0.1"),
                                                                        parse_shift("rotate=5"))
    assert parse_args(["--shifts", "none"]).shifts == ()
    for bad in (["--shifts", "blur=2"], ["--dot-scale", "big"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    for bad in (["--norms", "batchnorm"], ["--heads", "3"], ["--seednorm-heads", "5"]):
        with pytest.raises(ValueError):
            resolve_preset(parse_args(["--preset", "smoke", *bad]))


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--preset", "smoke", "--out", str(tmp_path), "--no-progress", "--no-tensorboard", "--threads", "1"]
    assert main(args) == 0
    report = (tmp_path / "report.md").read_text()
    for needle in ("| norm | params | clean | noise=0.4 | contrast=0.3 | rotate=30 | sklearn_digits |",
                   "| seednorm/2h |", "| dyt |", "| derf |", "seednorm/2h − layernorm",
                   "## SeeDNorm head-count ablation",
                   "| seednorm/1h |", "![heads.png](heads.png)", "Command: `seednorm vit --preset smoke"):
        assert needle in report, needle
    for png in ("loss.png", "accuracy.png", "shifts.png", "heads.png", "heads_loss.png", "heads_accuracy.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["runs"]) == 16 and all(0 <= r["final_eval"]["clean"] <= 1 for r in summary["runs"])
    runs = sorted((tmp_path / "runs").iterdir())
    assert all((r / "metrics.csv").is_file() and (r / "checkpoint.pt").is_file() for r in runs)

    # a second call reuses finished runs; a run without result.json resumes from its checkpoint
    stamps = {r.name: (r / "result.json").stat().st_mtime_ns for r in runs}
    (runs[0] / "result.json").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert all((r / "result.json").stat().st_mtime_ns == stamps[r.name] for r in runs[1:])
    again = json.loads((tmp_path / "summary.json").read_text())
    assert [r["final_eval"] for r in again["runs"]] == [r["final_eval"] for r in summary["runs"]]


@pytest.mark.parametrize(("extra", "row", "transfer"), [
    (["--backend", "timm"], "| seednorm/2h |", True),
    (["--dataset", "animals", "--norms", "dyt"], "| dyt |", False),
])
def test_single_norm_single_seed_variants(tmp_path: Path, extra: list[str], row: str, transfer: bool) -> None:
    args = ["--preset", "smoke", "--norms", "seednorm", "--heads", "none", "--seeds", "1", "--steps", "2",
            "--out", str(tmp_path), "--no-progress", "--no-tensorboard", *extra]
    assert main(args) == 0
    report = (tmp_path / "report.md").read_text()
    assert row in report and "head-count ablation" not in report and "Paired" not in report
    assert ("sklearn_digits" in report) == transfer


def test_torchrun_two_process_smoke_study_writes_its_report(tmp_path: Path) -> None:
    """The README's DDP command at the smoke size: ``torchrun --nproc-per-node 2 -m seednorm_experiments.vit``."""
    src = str(Path(seednorm.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "PET_MASTER_PORT": str(free_port())}  # torchrun's --master-port
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "seednorm_experiments.vit",
           "--preset", "smoke", "--out", str(tmp_path / "vit"), "--no-progress"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| seednorm/2h |" in (tmp_path / "vit" / "report.md").read_text()
    assert all(json.loads((r / "result.json").read_text())["world_size"] == 2
               for r in (tmp_path / "vit" / "runs").iterdir())


@pytest.mark.parametrize("dropout", [None, 0.0])
def test_step_cost_times_the_main_grids_models_and_training(monkeypatch, digits, dropout) -> None:
    """measure_throughput times the main grid's ViTs (SeeDNorm with the recipe's heads, dot scale and dynamic dropout,
    or the dropout asked for) with run_one's training settings, through the harness benchmark."""
    from seednorm_experiments.vit import study

    seen = {}

    def fake_benchmark(tasks, config, *, rounds, steps):
        seen.update(tasks=tasks, config=config, rounds=rounds, steps=steps)
        return {name: [1.0] * rounds for name in tasks}

    monkeypatch.setattr(study, "benchmark", fake_benchmark)
    preset = PRESETS["smoke"]
    data = study.StudyData(digits, digits, {})
    speeds = study.measure_throughput(preset, data, ["layernorm", "seednorm"], rounds=3, dynamic_dropout=dropout)
    assert speeds == {"layernorm": [1.0] * 3, "seednorm": [1.0] * 3} and seen["steps"] == 2
    norms = [m for m in seen["tasks"]["seednorm"].build_model().modules() if isinstance(m, seednorm.SeeDNorm)]
    expected = preset.model.drop_path if dropout is None else dropout
    assert norms and all(m.dynamic_dropout == expected and m.num_heads == preset.seednorm_heads for m in norms)
    assert not any(isinstance(m, seednorm.SeeDNorm) for m in seen["tasks"]["layernorm"].build_model().modules())
    config = seen["config"]
    assert (config.lr, config.weight_decay, config.grad_clip, config.steps) == (
        preset.lr, preset.weight_decay, preset.grad_clip, preset.steps)


def test_step_cost_cli_times_the_convnext_and_writes_its_table(tmp_path: Path) -> None:
    """``vit.step_cost --model convnext``: the ConvNeXt's stage widths in the table, LayerNorm at 1.000, SeeDNorm's
    ratio the quotient of the images/s it prints."""
    from seednorm_experiments.vit import step_cost

    out = tmp_path / "convnext.md"
    assert step_cost.main(["--model", "convnext", "--preset", "smoke", "--rounds", "2", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Vision study (convnext): training-step cost vs LayerNorm")
    rows = {r.split(" | ")[2]: r.strip("| ").split(" | ") for r in text.splitlines() if r.startswith("| smoke |")}
    widths = "/".join(map(str, get_preset("smoke", model="convnext").model.dims))
    assert set(rows) == {"layernorm", "seednorm"} and all(r[1] == widths for r in rows.values())
    assert rows["layernorm"][-1] == "1.000"
    best = {n: float(r[3].replace(",", "")) for n, r in rows.items()}
    assert abs(float(rows["seednorm"][5]) - best["layernorm"] / best["seednorm"]) < 0.02
