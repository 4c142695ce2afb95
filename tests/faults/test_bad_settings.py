"""Every preset field and every option is range-checked before any work: a bad one is one line on stderr, exit 2,
and nothing is written to ``--out`` -- in every study (lm and its ablation and size curve, vit, upcycle)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from seednorm_experiments import cli
from seednorm_experiments.lm import presets as lm_presets
from seednorm_experiments.upcycle import presets as upcycle_presets
from seednorm_experiments.vit import presets as vit_presets

LM = ["lm", "--preset", "smoke", "--norms", "seednorm", "--no-progress", "--no-throughput"]
LM_BAD = {  # override: what the message says
    "n_layers=-1": "n_layers must be an integer >= 1, got -1",
    "n_layers=0": "n_layers must be an integer >= 1",
    "dim=0": "dim must be an integer >= 1",
    "dim=-32": "dim must be an integer >= 1",
    "dim=30": "heads of even width",
    "n_heads=0": "n_heads must be an integer >= 1",
    "n_heads=3": "heads of even width",
    "batch_size=0": "batch_size must be an integer >= 1",
    "seq_len=0": "seq_len must be an integer >= 1",
    "seq_len=16": "must fit in seq_len=16",
    "steps=0": "steps must be an integer >= 1",
    "lr=inf": "lr must be a finite number > 0, got inf",
    "lr=nan": "lr must be a finite number > 0",
    "lr=0": "lr must be a finite number > 0",
    "lr=-0.001": "lr must be a finite number > 0",
    "warmup=-1": "warmup must be an integer >= 0",
    "seeds=0": "seeds must be an integer >= 1",
    "vocab_size=100": "vocab_size must exceed the 256 byte symbols",
    "eval_windows=0": "eval_windows must be an integer >= 1",
    "cloze_items=0": "cloze_items must be an integer >= 1",
    "cloze_context=0": "cloze_context must be an integer >= 1",
    "cloze_length=-1": "cloze_length must be an integer >= 1",
    "max_chars=0": "max_chars must be an integer >= 1 or none",
    "weight_decay=-0.1": "weight_decay must be a finite number >= 0",
    "weight_decay=inf": "weight_decay must be a finite number >= 0",
    "grad_clip=0": "grad_clip must be a finite number > 0",
    "grad_clip=nan": "grad_clip must be a finite number > 0",
    "eval_every=-1": "eval_every must be an integer >= 0",
    "ckpt_every=-5": "ckpt_every must be an integer >= 0",
    "lr_sweep=1,0": "lr_sweep must be one or more finite numbers > 0",
    "lr_sweep=": "lr_sweep must be one or more finite numbers > 0",
    "lr_sweep=1,inf": "lr_sweep must be one or more finite numbers > 0",
    "sweep_steps=-1": "sweep_steps must be an integer >= 0",
    "lr_grid=-1": "lr_grid must be finite numbers > 0",
    "name=": "name must be a non-empty name",
    "name=../up": "name must be a non-empty name without path separators",
    "corpus=other": "corpus must be 'base' or 'pack'",
}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    return code, err


def _refused(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str], prog: str) -> str:
    code, err = _run([*argv, "--out", str(out)], capsys)
    assert code == 2, err
    lines = err.splitlines()
    assert "Traceback" not in err and lines[-1].startswith(f"seednorm {prog}: error: "), err
    assert len(lines) == 1 or lines[0].startswith("usage:"), err  # argparse's own errors follow its usage
    assert sum("error:" in line for line in lines) == 1, err
    assert not out.exists()  # nothing written, not even the folder
    return lines[-1]


@pytest.mark.parametrize("mode, override", [(m, o) for m in ("study", "ablation", "size curve") for o in LM_BAD
                                            if m == "study" or not o.startswith(("lr_grid", "name="))])
def test_lm_bad_override_is_one_line_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     override: str, mode: str) -> None:
    extra = {"study": [], "ablation": ["--ablation", "--until", "sweep", "--knobs", "seednorm-lr0.1"],
             "size curve": ["--size-curve", "--points", "32x1", "--clip-off-point", "none"]}[mode]
    argv = [*LM, *extra, "--override", override]
    if mode != "study":
        argv.remove("--no-throughput")
    err = _refused(argv, tmp_path / "out", capsys, "lm")
    assert LM_BAD[override] in err, err


@pytest.mark.parametrize("options, message", [
    (["--steps", "0"], "--steps: must be >= 1"),
    (["--lr", "inf"], "--lr: must be a finite number > 0"),
    (["--ablation", "--dim", "30"], "heads of even width"),
    (["--ablation", "--wide-dim", "30"], "heads of even width"),  # the last phase's width, checked first
    (["--size-curve", "--points", "34x1", "--clip-off-point", "none"], "heads of even width"),
    (["--size-curve", "--points", "32x1", "--clip-off-point", "none", "--override", "grad_clip=-1"],
     "grad_clip must be a finite number > 0"),
])
def test_lm_bad_option_is_one_line_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   options: list[str], message: str) -> None:
    argv = ["lm", "--preset", "smoke", "--no-progress", *options]
    assert message in _refused(argv, tmp_path / "out", capsys, "lm")


VIT = ["vit", "--preset", "smoke", "--norms", "rmsnorm", "--heads", "none", "--seeds", "1", "--no-progress"]


@pytest.mark.parametrize("options, message", [
    (["--dot-scale", "nan"], "dot_scale must be a finite number > 0 or 'dim', got nan"),
    (["--dot-scale", "-1"], "dot_scale must be a finite number > 0 or 'dim', got -1.0"),
    (["--dot-scale", "inf"], "dot_scale must be a finite number > 0"),
    (["--dot-scale", "0"], "dot_scale must be a finite number > 0"),
    (["--ablation-dot-scale", "inf", "--heads", "1"], "ablation_dot_scale must be a finite number > 0"),
    (["--ablation-lr", "0"], "--ablation-lr: must be a finite number > 0"),
    (["--heads", "3"], "--heads: 3 heads must divide the width 32"),
    (["--steps", "0"], "--steps: must be >= 1"),
    (["--model", "convnext", "--dot-scale", "nan"], "dot_scale must be a finite number > 0"),
    (["--model", "mae", "--dot-scale", "-0.5"], "dot_scale must be a finite number > 0"),
    (["--model", "mae", "--mask-ratio", "1"], "mask ratio must be a number in (0, 1)"),
])
def test_vit_bad_option_is_one_line_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    options: list[str], message: str) -> None:
    argv = [*VIT, *options]
    if "--model" in options and options[1] != "vit":
        argv[argv.index("--heads"):argv.index("--heads") + 2] = []  # the head ablation is the ViT's
        if "--heads" in options:
            pytest.fail("bad case")
    assert message in _refused(argv, tmp_path / "out", capsys, "vit")


@pytest.mark.parametrize("options, message", [
    (["--steps", "0"], "--steps: must be >= 1"),
    (["--seeds", "0"], "--seeds: must be >= 1"),
    (["--threads", "0"], "--threads: must be >= 1"),
    (["--preset", "quick", "--steps", "1"], "--steps 1 is below the preset's 2 warmup steps"),
    (["--arms", "nonsense"], "nonsense"),
])
def test_upcycle_bad_option_is_one_line_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        options: list[str], message: str) -> None:
    argv = ["upcycle", "--preset", "smoke", "--no-progress", *options]
    assert message in _refused(argv, tmp_path / "out", capsys, "upcycle")


# Every field of every preset is checked where the preset is made (the CLIs' overrides go through it).

@pytest.mark.parametrize("field, value", [
    ("layers", 0), ("layers", 31), ("seq_len", 0), ("batch_size", -1), ("steps", 0), ("warmup", -1), ("seeds", 0),
    ("lr_mults", ()), ("lr_mults", (1.0, math.inf)), ("lr_mults", (0.0,)), ("eval_windows", 0),
    ("eval_seq_len", 0), ("cloze_items", 0), ("cloze_context", 0), ("cloze_length", 0), ("max_chars", 0),
    ("weight_decay", math.nan), ("grad_clip", 0.0), ("ckpt_every", -1), ("name", ""), ("warmup", 99),
    ("width", 64), ("width", 0),
])
def test_upcycle_preset_fields_are_range_checked(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field if field != "warmup" or value == -1 else "warmup steps"):
        upcycle_presets.get_preset("smoke", **{field: value})


_VIT_SMOKE = {"vit": vit_presets.PRESETS["smoke"], "convnext": vit_presets.CONVNEXT_PRESETS["smoke"],
              "mae": vit_presets.MAE_PRESETS["smoke"]}
_VIT_BAD = [
    ("batch_size", 0), ("warmup", -1), ("weight_decay", -1.0), ("max_shift", -1), ("eval_every", -1),
    ("ckpt_every", -1), ("eval_limit", 0), ("seeds", 0), ("seednorm_heads", 0), ("dot_scale", math.inf),
    ("dot_scale", "auto"), ("dataset", "cifar"), ("norms", ()),
    ("steps", 0), ("lr", math.nan), ("grad_clip", 0.0), ("ablation_depth", 0), ("ablation_steps", 0),
    ("ablation_lr", -1.0), ("pretrain_lr", math.inf), ("probe_steps", 0), ("finetune_lr", 0.0),
]


@pytest.mark.parametrize("model, field, value", [(m, f, v) for m, base in _VIT_SMOKE.items() for f, v in _VIT_BAD
                                                 if hasattr(base, f)])
def test_vit_preset_fields_are_range_checked(model: str, field: str, value: object) -> None:
    base = _VIT_SMOKE[model]
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(base, **{field: value})


def test_vit_model_fields_are_range_checked() -> None:
    smoke = vit_presets.PRESETS["smoke"]
    with pytest.raises(ValueError, match="depth must be an integer >= 1"):
        dataclasses.replace(smoke, model=dataclasses.replace(smoke.model, depth=0))
    mae = vit_presets.MAE_PRESETS["smoke"]
    with pytest.raises(ValueError, match="decoder_depth must be an integer >= 1"):
        dataclasses.replace(mae, model=dataclasses.replace(mae.model, decoder_depth=0))


def test_every_shipped_preset_is_in_range() -> None:
    for table in (lm_presets.PRESETS, upcycle_presets.PRESETS, vit_presets.PRESETS, vit_presets.CONVNEXT_PRESETS,
                  vit_presets.MAE_PRESETS):
        for preset in table.values():
            dataclasses.replace(preset)  # checked again: none is out of range
