"""MAE: masking, targets and loss against hand-computed values, the encoder's blindness to hidden patches, the
masking noise's determinism, and the study end to end (smoke): the probe trains only its head."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from seednorm_experiments.harness import CHECKPOINT_NAME, load_checkpoint
from seednorm_experiments.vit import main
from seednorm_experiments.vit.cli import build_parser, resolve_preset
from seednorm_experiments.vit.data import Batches, MaskedBatches, load_mnist
from seednorm_experiments.vit.evals import DEFAULT_SHIFTS
from seednorm_experiments.vit.mae import (
    MAE,
    LinearProbe,
    MAEConfig,
    encoder_state,
    masked_mse,
    patch_targets,
    random_masking,
)
from seednorm_experiments.vit.mae_study import mae_plan, stage_signature
from seednorm_experiments.vit.model import ViT, ViTConfig
from seednorm_experiments.vit.presets import MAE_PRESETS


def tiny(norm: str = "layernorm", **kwargs) -> MAEConfig:
    encoder = ViTConfig(dim=16, depth=2, attn_heads=2, pool="mean", norm=norm, norm_kwargs=kwargs)
    return MAEConfig(encoder, decoder_dim=8, decoder_depth=1, decoder_heads=2, mask_ratio=0.75)


def test_random_masking_keeps_the_smallest_noise() -> None:
    noise = torch.tensor([[0.5, 0.1, 0.9, 0.3], [0.2, 0.8, 0.4, 0.6]])
    ids_keep, mask, ids_restore = random_masking(noise, keep=2)
    assert ids_keep.tolist() == [[1, 3], [0, 2]]
    assert mask.tolist() == [[1, 0, 1, 0], [0, 1, 0, 1]]
    # ids_restore[i] is patch i's rank in the sorted noise: sorted order of row 0 is 1, 3, 0, 2
    assert ids_restore.tolist() == [[2, 0, 3, 1], [0, 3, 1, 2]]


def test_patch_targets_are_per_patch_normalized_with_unbiased_variance() -> None:
    patches = torch.tensor([[[0.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]]], dtype=torch.float64)
    # patch 0: mean 1.5, unbiased var (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; patch 1: constant → 0
    expected = torch.tensor([[[-1.5, -0.5, 0.5, 1.5], [0.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    expected[0, 0] /= (5.0 / 3.0 + 1e-6) ** 0.5
    torch.testing.assert_close(patch_targets(patches), expected, rtol=0, atol=1e-15)


def test_masked_mse_counts_only_hidden_patches() -> None:
    target = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    assert masked_mse(torch.zeros_like(target), target, mask).item() == pytest.approx((1 + 9) / 2)


def test_mae_loss_is_the_masked_mse_of_its_prediction_against_a_float64_reference() -> None:
    torch.manual_seed(0)
    model = MAE(tiny()).double().eval()
    images, noise = torch.rand(3, 1, 28, 28, dtype=torch.float64), torch.rand(3, 16, dtype=torch.float64)
    loss, pred, mask = model.reconstruct(images, noise)
    assert pred.shape == (3, 16, 49) and mask.sum().item() == 3 * 12
    patches = model.encoder.patchify(images)  # standardize is the identity at mean 0, std 1
    target = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    reference = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=0)


def test_the_prediction_depends_on_visible_patches_only() -> None:
    torch.manual_seed(0)
    model = MAE(tiny()).eval()
    images, noise = torch.rand(1, 1, 28, 28), torch.rand(1, 16)
    _, pred, mask = model.reconstruct(images, noise)
    hidden, visible = mask[0].nonzero()[0].item(), (mask[0] == 0).nonzero()[0].item()

    def change(patch: int) -> torch.Tensor:
        row, col = divmod(patch, 4)
        x = images.clone()
        x[..., 7 * row:7 * row + 7, 7 * col:7 * col + 7] += 1.0
        return x

    assert torch.equal(model.reconstruct(change(hidden), noise)[1], pred)
    assert not torch.allclose(model.reconstruct(change(visible), noise)[1], pred)


def test_masked_batches_add_deterministic_noise_that_shards_like_the_images() -> None:
    digits = load_mnist().split(0.2, seed=0)[1]
    a, b = MaskedBatches(digits, 64, 1, 0, 16), MaskedBatches(digits, 64, 1, 0, 16)
    images, labels, noise = a(5, 0, 1)
    assert torch.equal(noise, b(5, 0, 1)[2]) and noise.shape == (64, 16) and noise.min() >= 0 and noise.max() < 1
    assert not torch.equal(noise, a(6, 0, 1)[2])
    assert not torch.equal(noise, MaskedBatches(digits, 64, 2, 0, 16)(5, 0, 1)[2])
    plain = Batches(digits, 64, 1, 0)(5, 0, 1)
    assert torch.equal(images, plain[0]) and torch.equal(labels, plain[1])
    shards = [a(5, rank, 2) for rank in range(2)]
    assert torch.equal(torch.cat([s[2] for s in shards]), noise)


def test_linear_probe_trains_its_head_only_and_keeps_the_encoder_in_eval_mode() -> None:
    torch.manual_seed(0)
    encoder = ViT(tiny("seednorm", num_heads=2, dynamic_dropout=0.5).encoder)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    probe = LinearProbe(encoder, 10).train()
    assert not probe.encoder.training and probe.bn.training
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    images, labels = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    torch.testing.assert_close(probe(images), probe(images))  # eval-mode encoder: no dropout noise
    opt = torch.optim.AdamW(probe.parameters(), lr=0.1)
    head = probe.head.weight.clone()
    torch.nn.functional.cross_entropy(probe(images), labels).backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert not torch.equal(head, probe.head.weight)


def test_encoder_state_is_the_vit_inside_the_mae() -> None:
    mae = MAE(tiny())
    vit = ViT(mae.config.encoder)
    missing = vit.load_state_dict(encoder_state(mae.state_dict()), strict=False).missing_keys
    assert missing == ["head.weight", "head.bias"]
    assert [n for n, p in mae.named_parameters() if p.grad is None] == [n for n, _ in mae.named_parameters()]
    mae(torch.rand(2, 1, 28, 28), torch.rand(2, 16)).backward()  # every parameter takes part (DDP needs it)
    assert all(p.grad is not None for p in mae.parameters())
    images = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(vit.eval().features(images), mae.encoder.eval()(images), rtol=0, atol=0)


def test_stage_fingerprints_follow_their_pretraining_and_the_mask_ratio() -> None:
    preset = MAE_PRESETS["smoke"]
    run = mae_plan(preset)[0]
    probe = stage_signature(run, "probe", preset, DEFAULT_SHIFTS, "a" * 64)
    assert stage_signature(run, "probe", preset, DEFAULT_SHIFTS, "b" * 64) != probe
    assert stage_signature(run, "finetune", preset, DEFAULT_SHIFTS, "a" * 64) != probe
    masked = replace(run, model=replace(run.model, mask_ratio=0.5))
    assert stage_signature(masked, "pretrain", preset, (), None) != stage_signature(run, "pretrain", preset, (), None)
    seed_run = next(r for r in mae_plan(preset) if r.label.startswith("seednorm"))
    assert seed_run.model.encoder.norm_kwargs == {"num_heads": 2, "dynamic_dropout": 0.1, "dot_scale": "dim"}


def test_mae_cli_options() -> None:
    preset = resolve_preset(build_parser().parse_args(["--model", "mae", "--preset", "smoke", "--steps", "3",
                                                       "--mask-ratio", "0.5", "--norms", "dyt"]))
    assert (preset.pretrain_steps, preset.model.mask_ratio, preset.model.keep, preset.norms) == (3, 0.5, 8, ("dyt",))
    for bad in (["--model", "mae", "--heads", "2"], ["--model", "mae", "--backend", "timm"], ["--mask-ratio", "0.5"],
                ["--model", "mae", "--seednorm-heads", "3"]):
        with pytest.raises(ValueError):
            resolve_preset(build_parser().parse_args(["--preset", "smoke", *bad]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--mask-ratio", "1"])


@pytest.mark.slow
def test_mae_smoke_end_to_end(tmp_path: Path) -> None:
    args = ["--model", "mae", "--preset", "smoke", "--norms", "layernorm,seednorm", "--out", str(tmp_path),
            "--no-progress", "--no-tensorboard"]
    assert main(args) == 0
    report = (tmp_path / "report.md").read_text()
    for needle in ("## Pre-training: masked reconstruction", "| seednorm/2h |", "## Linear probe (frozen encoder)",
                   "## Fine-tuning", "seednorm/2h − layernorm", "| norm | params | clean | noise=0.4 |",
                   "Command: `seednorm vit --model mae --preset smoke"):
        assert needle in report, needle
    for png in ("mae_loss.png", "mae_recon.png", "probe_shifts.png", "finetune_shifts.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["runs"]) == 4 and all(0 <= r["probe"]["final_eval"]["clean"] <= 1 for r in summary["runs"])
    runs = {d.name.rsplit("-", 1)[0]: d for d in (tmp_path / "runs").iterdir()}  # without the settings' hash
    assert len(runs) == 12
    states = {name: load_checkpoint(d / CHECKPOINT_NAME)["model"] for name, d in runs.items()}
    pre, probe, tuned = (states[f"mae-{stage}-seednorm-2h-d16-s0"] for stage in ("pretrain", "probe", "finetune"))
    encoder = encoder_state(pre)
    # the probe's encoder is the pre-trained one, untouched by its training; fine-tuning moved it
    assert all(torch.equal(probe[f"encoder.{k}"], v) for k, v in encoder.items())
    assert any(not torch.equal(tuned[k], v) for k, v in encoder.items() if not k.startswith("head."))
    # a second call reuses every stage
    stamps = {d.name: (d / "result.json").stat().st_mtime_ns for d in runs.values()}
    assert main(args) == 0
    assert all((d / "result.json").stat().st_mtime_ns == stamps[d.name] for d in runs.values())
