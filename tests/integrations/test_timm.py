"""timm: a ViT and ConvNeXts converted (outputs unchanged, then trained) and built with SeeDNorm as norm_layer."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

import seednorm  # noqa: E402
from seednorm import SeeDNorm, SeeDNorm2d, convert_to_seednorm  # noqa: E402
from seednorm.integrations.timm import named_norm_layer, norm_layer  # noqa: E402

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


# ConvNeXt: channels-first norms (timm's LayerNorm2d, RmsNorm2d) and its channels-last LayerNorm (conv_mlp=False)

CONVNEXT = {"num_classes": 10}
SHALLOW = {"depths": (1, 1, 1, 1)}  # one block a stage: 9 norms (stem, 3 downsamplings, 4 blocks, head) instead of 17
IMAGES = (2, 3, 32, 32)


def randomize_norms(model):
    """Norm parameters away from their init, so that copying them is tested."""
    with torch.no_grad():
        for m in model.modules():
            if "norm" in type(m).__name__.lower() and next(m.children(), None) is None:
                for p in m.parameters():
                    p.normal_(0.8 if p is getattr(m, "weight", None) else 0.0, 0.3)
    return model


@pytest.mark.parametrize(
    ("name", "kwargs", "kinds", "train"),
    [
        ("convnext_atto", {}, {"LayerNorm2d": 17}, True),
        ("convnext_atto", {"conv_mlp": False, **SHALLOW}, {"LayerNorm2d": 5, "LayerNorm": 4}, False),
        ("convnext_atto_rms", SHALLOW, {"RmsNorm2d": 9}, True),
    ],
)
def test_converted_convnext_keeps_outputs_and_trains(name, kwargs, kinds, train):
    """Outputs unchanged to float32 rounding; then a few AdamW steps (the paper's weight-decay groups) lower the loss
    and move every β."""
    torch.manual_seed(0)
    model = randomize_norms(timm.create_model(name, **CONVNEXT, **kwargs)).eval()
    found = {}
    for m in model.modules():
        if type(m).__name__ in kinds:
            found[type(m).__name__] = found.get(type(m).__name__, 0) + 1
    assert found == kinds
    images, labels = torch.randn(*IMAGES), torch.tensor([3, 7])
    with torch.no_grad():
        expected = model(images)
    convert_to_seednorm(model, num_heads=4)
    norms, count = seednorms(model), sum(kinds.values())
    assert len(norms) == count and sum(isinstance(m, SeeDNorm2d) for m in norms) == count - kinds.get("LayerNorm", 0)
    assert all(m.center is name.endswith("atto") and m.num_heads == 4 for m in norms)
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    if not train:
        return
    model.train()
    optimizer = torch.optim.AdamW(seednorm.param_groups(model, 0.05, lr=1e-3))
    assert [g["name"] for g in optimizer.param_groups] == ["decay", "seednorm", "no_decay"]
    assert len(optimizer.param_groups[1]["params"]) == 2 * count  # α and β of every converted layer
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(m.beta.abs().max() > 0 for m in norms)  # every β left 0


def test_convnext_built_with_seednorm2d_is_its_rmsnorm_model_at_init():
    """norm_layer=SeeDNorm2d: at init (β = 0) the same function as timm's RmsNorm2d ConvNeXt of the same seed."""
    torch.manual_seed(0)
    layer = norm_layer(num_heads=4, channels_first=True, eps=1e-6)
    model = timm.create_model("convnext_atto", **CONVNEXT, **SHALLOW, norm_layer=layer).eval()
    torch.manual_seed(0)
    rms = timm.create_model("convnext_atto", **CONVNEXT, **SHALLOW, norm_layer="rmsnorm").eval()
    norms = seednorms(model)
    assert len(norms) == 9 and all(type(m) is SeeDNorm2d and m.num_heads == 4 for m in norms)
    images = torch.randn(*IMAGES)
    with torch.no_grad():
        torch.testing.assert_close(model(images), rms(images), rtol=1e-5, atol=1e-5)
    assert backward_reaches_every_beta(model.train(), images)


@pytest.mark.parametrize("name", ["seednorm2d", "dyt2d", "derf2d"])
def test_convnext_takes_our_norm_names(name):
    model = timm.create_model("convnext_atto", **CONVNEXT, **SHALLOW, norm_layer=name)
    assert type(model.stem[1]).__name__.lower() == name and type(model.head.norm).__name__.lower() == name
    assert model(torch.randn(*IMAGES)).shape == (2, 10)


def test_named_norm_layer_layernorm_is_timms_convnext():
    torch.manual_seed(0)
    layer = named_norm_layer("layernorm", channels_first=True, eps=1e-6)
    ours = timm.create_model("convnext_atto", **CONVNEXT, **SHALLOW, norm_layer=layer).eval()
    torch.manual_seed(0)
    theirs = timm.create_model("convnext_atto", **CONVNEXT, **SHALLOW).eval()
    assert type(ours.stem[1]) is seednorm.modules.LayerNorm2d
    ours.load_state_dict(theirs.state_dict())
    images = torch.randn(*IMAGES)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), theirs(images), rtol=1e-5, atol=1e-5)


def test_converted_convnext_traces_with_timm_fx_feature_extraction():
    from timm.models import create_feature_extractor

    model = convert_to_seednorm(timm.create_model("convnext_atto", **CONVNEXT, **SHALLOW).eval(), num_heads=4)
    with torch.no_grad():
        for m in seednorms(model):
            m.beta.normal_(std=0.3)
    images = torch.randn(*IMAGES)
    extractor = create_feature_extractor(model, return_nodes={"stages.3": "features"})
    assert isinstance(extractor.get_submodule("stem.1"), SeeDNorm2d)  # traced as one call, not through its checks
    with torch.no_grad():
        torch.testing.assert_close(extractor(images)["features"], model.forward_features(images), rtol=0, atol=1e-6)
