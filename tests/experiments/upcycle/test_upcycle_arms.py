"""The pretrained model, its exact conversion and which parameters each arm trains, against hand counts."""

from __future__ import annotations

import torch

from seednorm import SeeDNorm
from seednorm_experiments.upcycle.arms import (
    ARMS,
    CONVERSION_TOLERANCE,
    DEFAULT_ARMS,
    build_arm,
    convert_checked,
    probe_ids,
)
from seednorm_experiments.upcycle.pretrained import CausalLM, load_base, quiet_gguf_reading, weights_sha256

D, HIDDEN, KV, VOCAB = 576, 1536, 192, 49152  # SmolLM2-135M: width, MLP width, key/value width, vocabulary
LAYER = 2 * D * D + 2 * D * KV + 3 * D * HIDDEN  # q, o; k, v; gate, up, down
NORMS_1 = 3 * D  # one layer's two norms and the final norm


def test_reading_the_gguf_file_writes_no_per_tensor_bar(capfd) -> None:
    from transformers import modeling_gguf_pytorch_utils as gguf_reader

    with quiet_gguf_reading():
        assert sum(gguf_reader.tqdm(range(5), desc="per-tensor bar")) == 10
    assert "per-tensor bar" not in capfd.readouterr().err
    assert sum(gguf_reader.tqdm(range(5), desc="per-tensor bar")) == 10  # the reader's own bar is back afterwards
    assert "per-tensor bar" in capfd.readouterr().err


def test_one_layer_model_has_the_hand_counted_parameters() -> None:
    model = load_base(1)
    assert len(model.model.layers) == 1 and model.config.num_hidden_layers == 1
    assert sum(p.numel() for p in model.parameters()) == VOCAB * D + LAYER + NORMS_1  # embeddings tied to the head
    assert weights_sha256(1) == weights_sha256(1) and len(weights_sha256(1)) == 64


def test_conversion_copies_every_norm_and_computes_rmsnorm_in_float64() -> None:
    lm = load_base(1)
    gains = {n: m.weight.detach().clone() for n, m in lm.named_modules() if type(m).__name__ == "LlamaRMSNorm"}
    eps = lm.config.rms_norm_eps
    assert convert_checked(lm, ARMS["seednorm"]) <= 1e-4  # float32 logits of the probe batch, up to ~40
    layers = {n: m for n, m in lm.named_modules() if isinstance(m, SeeDNorm)}
    assert set(layers) == set(gains) and len(layers) == 3
    x = torch.randn(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * torch.tensor(
        [[1e-3], [1.0], [30.0]], dtype=torch.float64)
    for name, layer in layers.items():
        assert torch.equal(layer.weight.detach(), gains[name]) and not layer.beta.detach().any()
        expected = gains[name].double() * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        with torch.no_grad():
            torch.testing.assert_close(layer.double()(x), expected, atol=1e-12, rtol=1e-12)
    layer = load_base(1)
    convert_checked(layer, ARMS["seednorm-rsqrt"])
    assert layer.model.norm.dot_scale == 1 / 24  # 1/√576


def test_each_arm_trains_what_it_says() -> None:
    trained = {name: sum(p.numel() for p in build_arm(load_base(1), ARMS[name]).parameters() if p.requires_grad)
               for name in DEFAULT_ARMS}  # the recipe arms: test_the_recipe_arms_convert_exactly_...
    full = VOCAB * D + LAYER + NORMS_1
    assert trained == {"rmsnorm": full, "seednorm": full + 2 * NORMS_1, "seednorm-rsqrt": full + 2 * NORMS_1,
                       "rmsnorm-norms": NORMS_1, "seednorm-norms": 3 * NORMS_1}  # γ; γ, α, β


def test_a_converted_model_starts_where_the_original_does() -> None:
    ids = probe_ids(VOCAB)
    original = CausalLM(load_base(1)).eval()
    converted = build_arm(load_base(1), ARMS["seednorm-norms"]).eval()
    with torch.no_grad():
        a, b = original(ids), converted(ids)
    torch.testing.assert_close(b, a, atol=CONVERSION_TOLERANCE * float(a.abs().max()), rtol=0)


def test_the_default_arms_keep_their_signatures_and_the_recipe_arms_name_their_parts() -> None:
    assert DEFAULT_ARMS == ("rmsnorm", "seednorm", "seednorm-rsqrt", "rmsnorm-norms", "seednorm-norms")
    assert {name: ARMS[name].signature() for name in DEFAULT_ARMS} == {  # what committed runs were fingerprinted by
        name: {"arm": name, "norm": name.split("-")[0], "trainable": "norms" if name.endswith("norms") else "all",
               "dot_scale": "rsqrt" if name == "seednorm-rsqrt" else 1.0} for name in DEFAULT_ARMS}
    parts = {name: {k: v for k, v in ARMS[name].signature().items() if k not in ("arm", "norm", "trainable")}
             for name in ARMS if name not in DEFAULT_ARMS}
    assert parts == {
        "seednorm-upcycle": {"dot_scale": "dim", "alpha_init": 0.01, "lr_scale": 0.01},
        "seednorm-upcycle-gain": {"dot_scale": "dim", "alpha_init": 0.1, "alpha_relative": True, "lr_scale": 0.01},
        "seednorm-alpha": {"dot_scale": 1.0, "alpha_init": 0.01},
        "seednorm-alpha-gain": {"dot_scale": 1.0, "alpha_init": 0.1, "alpha_relative": True},
        "seednorm-dim": {"dot_scale": "dim"},
        "seednorm-lrscale": {"dot_scale": 1.0, "lr_scale": 0.01},
        "seednorm-upcycle-norms": {"dot_scale": "dim", "alpha_init": 0.01, "lr_scale": 0.01},
    }
    assert ARMS["seednorm-upcycle-norms"].trainable == "norms" and ARMS["seednorm-upcycle-norms"].reference == (
        "rmsnorm-norms")
    assert all(ARMS[name].param_groups(0.1, 1e-4) is None for name in DEFAULT_ARMS)  # the harness's own groups


def test_the_recipe_arms_convert_exactly_with_their_alpha_dot_scale_and_rates() -> None:
    base = load_base(1)
    gains = {n: m.weight.detach().clone() for n, m in base.named_modules() if type(m).__name__ == "LlamaRMSNorm"}
    ids = probe_ids(VOCAB)
    for name, alpha, dot, scale in [
        ("seednorm-upcycle", 0.01, "dim", 0.01), ("seednorm-upcycle-gain", 0.1, "dim", 0.01),
        ("seednorm-alpha", 0.01, 1.0, 1.0), ("seednorm-dim", 1.0, "dim", 1.0), ("seednorm-lrscale", 1.0, 1.0, 0.01),
    ]:
        arm = ARMS[name]
        model = build_arm(load_base(1), arm)
        layers = {n.removeprefix("lm."): m for n, m in model.named_modules() if isinstance(m, SeeDNorm)}
        assert set(layers) == set(gains)
        full = VOCAB * D + LAYER + NORMS_1
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == full + 2 * NORMS_1, name
        for n, layer in layers.items():
            want = gains[n] * alpha if arm.alpha_relative else torch.full((D,), alpha)
            assert torch.equal(layer.alpha.detach(), want) and layer.dot_scale == dot, name
        groups = arm.param_groups(0.1, 2e-4)
        if scale == 1.0:
            assert groups is None
        else:
            lrs = {g["name"]: g["lr"] for g in groups(model)}
            assert lrs == {"decay": 2e-4, "seednorm": 2e-4 * scale, "no_decay": 2e-4}, name
        with torch.no_grad():
            assert float(model.eval()(ids).sub(CausalLM(base)(ids)).abs().max()) <= 1e-4, name


def test_the_study_gives_a_rate_scaled_arm_its_groups_and_the_others_the_harness_defaults() -> None:
    from pathlib import Path
    from types import SimpleNamespace

    from seednorm import convert_to_seednorm
    from seednorm_experiments.upcycle.presets import get_preset
    from seednorm_experiments.upcycle.study import Study

    study = SimpleNamespace(preset=get_preset("smoke"), out=Path("unused"), progress=False,
                            corpus=SimpleNamespace(token_bytes=[1] * 16))
    assert all(Study.config(study, ARMS[name], 0, 1e-4).param_groups is None for name in DEFAULT_ARMS)
    groups = Study.config(study, ARMS["seednorm-upcycle"], 0, 3e-4).param_groups
    model = convert_to_seednorm(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.RMSNorm(8)), recipe="upcycle")
    assert {g["name"]: (g["lr"], g["weight_decay"]) for g in groups(model)} == {
        "decay": (3e-4, 0.1), "seednorm": (3e-4 * 0.01, 0.1), "no_decay": (3e-4, 0.0)}
