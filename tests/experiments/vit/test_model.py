"""The compact ViT: shapes, patch order, norms wired from build_norm, and the timm backend."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from seednorm import DyT, LayerNorm, RMSNorm, SeeDNorm
from seednorm_experiments.vit.model import ViT, ViTConfig, build_vit

NORM_TYPES = {"layernorm": LayerNorm, "rmsnorm": RMSNorm, "dyt": DyT, "seednorm": SeeDNorm}
SMALL = {"dim": 16, "depth": 2, "attn_heads": 2}


def norms_of(model: torch.nn.Module, kind: type) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("backend", ["seednorm", "timm"])
@pytest.mark.parametrize("norm", sorted(NORM_TYPES))
def test_every_norm_comes_from_build_norm(backend: str, norm: str) -> None:
    model = build_vit(ViTConfig(norm=norm, **SMALL), backend)
    # two per block and the final one
    assert len(norms_of(model, NORM_TYPES[norm])) == 2 * SMALL["depth"] + 1
    assert not norms_of(model, torch.nn.LayerNorm) or norm == "layernorm"
    logits = model(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_backends_have_the_same_parameter_count() -> None:
    config = ViTConfig(norm="seednorm", norm_kwargs={"num_heads": 4}, **SMALL)
    counts = [sum(p.numel() for p in build_vit(config, b).parameters()) for b in ("seednorm", "timm")]
    assert counts[0] == counts[1]


def test_seednorm_options_reach_every_layer() -> None:
    kwargs = {"num_heads": 4, "dynamic_dropout": 0.1, "dot_scale": "dim"}
    model = ViT(ViTConfig(norm="seednorm", norm_kwargs=kwargs, **SMALL))
    for layer in norms_of(model, SeeDNorm):
        assert (layer.num_heads, layer.dynamic_dropout, layer.dot_scale) == (4, 0.1, "dim")


def test_seednorm_at_init_equals_rmsnorm_model() -> None:
    """β = 0 makes SeeDNorm RMSNorm (SPEC §2), so the two ViTs agree given the same other weights."""
    cfg = dict(SMALL, pool="mean")
    rms = ViT(ViTConfig(norm="rmsnorm", **cfg)).double().eval()
    seed = ViT(ViTConfig(norm="seednorm", norm_kwargs={"num_heads": 2}, **cfg)).double().eval()
    missing, unexpected = seed.load_state_dict(rms.state_dict(), strict=False)
    assert not unexpected and all(k.endswith((".alpha", ".beta")) for k in missing)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(seed(x), rms(x), rtol=1e-12, atol=1e-12)


def test_patchify_is_row_major_patches() -> None:
    model = ViT(ViTConfig(patch_size=7, in_chans=2, **SMALL))
    images = torch.rand(2, 2, 28, 28, dtype=torch.float64)
    # reference: unfold gives (B, C·P·P, N) with channel-major features; reorder to (P, P, C)
    ref = torch.nn.functional.unfold(images, kernel_size=7, stride=7).view(2, 2, 7, 7, 16)
    ref = ref.permute(0, 4, 2, 3, 1).reshape(2, 16, 7 * 7 * 2)
    torch.testing.assert_close(model.patchify(images), ref, rtol=0, atol=0)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_pool_options(pool: str) -> None:
    model = ViT(ViTConfig(pool=pool, drop_path=0.2, **SMALL))
    assert (model.cls_token is not None) == (pool == "cls")
    assert model.pos_embed.shape[1] == 16 + (pool == "cls")
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch_size": 5}, "multiple of patch_size"),
        ({"dim": 18, "attn_heads": 4}, "divisible by attn_heads"),
        ({"pool": "max"}, "pool"),
        ({"drop_path": 1.0}, "drop_path"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ViTConfig(**kwargs)


def test_bad_input_shape_and_backend() -> None:
    model = ViT(ViTConfig(**SMALL))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 28, 28\)"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="backend"):
        build_vit(ViTConfig(**SMALL), "flax")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["seednorm", "timm"])
def test_inputs_are_standardized_before_the_patch_embedding(backend: str) -> None:
    config = ViTConfig(pixel_mean=0.25, pixel_std=0.5, **SMALL)
    plain = build_vit(replace(config, pixel_mean=0.0, pixel_std=1.0), backend).eval()
    shifted = build_vit(config, backend).eval()
    shifted.load_state_dict(plain.state_dict())
    images = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(shifted(images), plain((images - 0.25) / 0.5))
    with pytest.raises(ValueError, match="pixel_std"):
        ViTConfig(pixel_std=0.0)
