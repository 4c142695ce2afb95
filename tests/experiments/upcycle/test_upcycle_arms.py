"""The pretrained model, its exact conversion and which parameters each arm trains, against hand counts."""

from __future__ import annotations

import torch

from seednorm import SeeDNorm
from seednorm_experiments.upcycle.arms import ARMS, CONVERSION_TOLERANCE, build_arm, convert_checked, probe_ids
from seednorm_experiments.upcycle.pretrained import CausalLM, load_base, weights_sha256

D, HIDDEN, KV, VOCAB = 576, 1536, 192, 49152  # SmolLM2-135M: width, MLP width, key/value width, vocabulary
LAYER = 2 * D * D + 2 * D * KV + 3 * D * HIDDEN  # q, o; k, v; gate, up, down
NORMS_1 = 3 * D  # one layer's two norms and the final norm


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
    trained = {name: sum(p.numel() for p in build_arm(load_base(1), arm).parameters() if p.requires_grad)
               for name, arm in ARMS.items()}
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
