"""timm: a ViT converted (outputs unchanged) and one built with SeeDNorm as norm_layer, forward and backward."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

from seednorm import SeeDNorm, convert_to_seednorm  # noqa: E402
from seednorm.integrations.timm import norm_layer  # noqa: E402

VIT = {"model_name": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "depth": 2, "num_classes": 10}


def seednorms(model):
    return [m for m in model.modules() if isinstance(m, SeeDNorm)]


def backward_reaches_every_beta(model, images):
    model(images).logsumexp(-1).sum().backward()
    return all(m.beta.grad is not None and m.beta.grad.abs().sum() > 0 for m in seednorms(model))


def test_converted_vit_keeps_outputs_and_trains():
    model = timm.create_model(**VIT).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(images)
    convert_to_seednorm(model, num_heads=4)
    assert len(seednorms(model)) == 2 * 2 + 1 and all(m.center and m.num_heads == 4 for m in seednorms(model))
    with torch.no_grad():
        assert torch.allclose(model(images), expected, rtol=0, atol=1e-5)
    assert backward_reaches_every_beta(model.train(), images)


def test_vit_built_with_seednorm_norm_layer_trains():
    layer = norm_layer(num_heads=4, dynamic_dropout=0.1, dot_scale="dim")
    model = timm.create_model(**VIT, norm_layer=layer, qk_norm=True)
    norms = seednorms(model)
    assert len(norms) == 2 * 4 + 1  # norm1, norm2, q_norm, k_norm per block, final norm
    assert all(m.num_heads == 4 and m.dynamic_dropout == 0.1 and not m.center for m in norms)
    assert backward_reaches_every_beta(model.train(), torch.randn(2, 3, 32, 32))


def test_converted_vit_traces_with_timm_fx_feature_extraction():
    from timm.models import create_feature_extractor

    model = convert_to_seednorm(timm.create_model(**VIT).eval(), num_heads=4)
    with torch.no_grad():
        for m in seednorms(model):
            m.beta.normal_(std=0.3)
    images = torch.randn(2, 3, 32, 32)
    extractor = create_feature_extractor(model, return_nodes={"norm": "features"})
    assert isinstance(extractor.norm, SeeDNorm)  # traced as one call, not through its checks
    with torch.no_grad():
        expected = model.forward_features(images)
        assert torch.allclose(extractor(images)["features"], expected, rtol=0, atol=1e-6)
