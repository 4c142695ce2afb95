"""The study's ConvNeXt: channels-first norms against a float64 reference, where each kind of norm sits, the
presets and options, and the ConvNeXt study end to end (smoke)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seednorm import SeeDNorm
from seednorm_experiments.vit import main
from seednorm_experiments.vit.cli import build_parser, resolve_preset
from seednorm_experiments.vit.convnext import ConvNeXt, ConvNeXtConfig, channels_first_norm
from seednorm_experiments.vit.evals import DEFAULT_SHIFTS
from seednorm_experiments.vit.presets import CONVNEXT_PRESETS
from seednorm_experiments.vit.study import plan, run_name, run_signature


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm"])
def test_channels_first_norm_normalizes_dim_1_like_a_float64_reference(name: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3, 5) * 3 + 1
    norm = channels_first_norm(name, 8)
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn_like(p))
    gain = next(v for k, v in norm.named_parameters() if k.endswith("weight")).double().view(1, 8, 1, 1)
    x64 = x.double()
    if name == "layernorm":
        bias = next(v for k, v in norm.named_parameters() if k.endswith("bias")).double().view(1, 8, 1, 1)
        centered = x64 - x64.mean(dim=1, keepdim=True)
        reference = centered / (centered.pow(2).mean(dim=1, keepdim=True) + 1e-6).sqrt() * gain + bias
    else:
        reference = x64 / (x64.pow(2).mean(dim=1, keepdim=True) + 1e-6).sqrt() * gain
    torch.testing.assert_close(norm(x).double(), reference, rtol=1e-5, atol=1e-5)


def test_channels_first_seednorm_matches_the_1d_layer_on_channels_last_rows() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3, 3)
    norm = channels_first_norm("seednorm", 8, num_heads=2)
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    layer = SeeDNorm(8, num_heads=2)
    layer.load_state_dict({k.split(".")[-1]: v for k, v in norm.state_dict().items()})
    expected = layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-6)


def test_convnext_places_channels_first_norms_in_stem_and_downsampling() -> None:
    config = ConvNeXtConfig(stem=4, dims=(8, 16), depths=(1, 2), norm="rmsnorm")
    model = ConvNeXt(config)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    channels = {"stem.1": 8, "downsample.0.0": 8, "stages.0.0.norm": 8, "stages.1.0.norm": 16,
                "stages.1.1.norm": 16, "norm": 16}
    for name, dim in channels.items():  # every norm normalizes its dim channels, wherever they sit
        x = torch.randn(2, dim, 3, 3) if name in ("stem.1", "downsample.0.0") else torch.randn(2, 3, dim)
        y = model.get_submodule(name)(x * 5.0)
        rows = y.movedim(1, -1) if x.dim() == 4 else y
        torch.testing.assert_close(rows.pow(2).mean(-1), torch.ones(rows.shape[:-1]), rtol=1e-3, atol=1e-3)
    # stage 0 at 7×7 after a stride-4 stem, stage 1 at 3×3; layer scale starts at 1e-6
    assert torch.all(model.stages[0][0].gamma == 1e-6)
    with pytest.raises(ValueError, match="stages"):
        ConvNeXtConfig(stem=4, dims=(8, 16, 32, 64), depths=(1, 1, 1, 1))


def test_convnext_presets_and_options() -> None:
    preset = resolve_preset(build_parser().parse_args(["--model", "convnext", "--preset", "smoke",
                                                       "--norms", "layernorm,seednorm"]))
    assert isinstance(preset.model, ConvNeXtConfig) and preset.heads == ()
    specs = plan(preset, 2)
    assert [s.label for s in specs] == ["layernorm"] * 2 + ["seednorm/2h"] * 2 and {s.grid for s in specs} == {"main"}
    assert specs[2].model.norm_kwargs == {"num_heads": 2, "dynamic_dropout": 0.1, "dot_scale": "dim"}
    names = {run_name(s, run_signature(s, preset, "seednorm", DEFAULT_SHIFTS)) for s in specs}
    assert len(names) == 4
    for bad in (["--heads", "2"], ["--ablation-dim", "32"], ["--backend", "timm"], ["--seednorm-heads", "3"]):
        with pytest.raises(ValueError):
            resolve_preset(build_parser().parse_args(["--model", "convnext", "--preset", "smoke", *bad]))
    assert CONVNEXT_PRESETS["quick"].model.dims == (32, 64)


@pytest.mark.slow
def test_convnext_smoke_end_to_end(tmp_path: Path) -> None:
    args = ["--model", "convnext", "--preset", "smoke", "--out", str(tmp_path), "--no-progress", "--no-tensorboard"]
    assert main(args) == 0
    report = (tmp_path / "report.md").read_text()
    for needle in ("# Vision study: mnist, ConvNeXt dims (8, 16), depths (1, 1)", "| seednorm/2h |", "| dyt |",
                   "seednorm/2h − layernorm", "channels-first", "Command: `seednorm vit --model convnext"):
        assert needle in report, needle
    assert "head-count ablation" not in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["runs"]) == 2 * len(CONVNEXT_PRESETS["smoke"].norms)
    assert all(0 <= r["final_eval"]["clean"] <= 1 for r in summary["runs"])
