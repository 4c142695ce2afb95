"""``seednorm upcycle --probe`` at the smoke preset (one layer of a 96-wide random model of SmolLM2-135M's
architecture): the first AdamW steps of the
paper's conversion and of the upcycle recipe, against closed forms (Adam's first step, the converted α, the norm
inputs)."""

from __future__ import annotations

import json

import pytest
import torch

from seednorm_experiments import cli
from seednorm_experiments.upcycle.data import load_corpus, train_batch
from seednorm_experiments.upcycle.presets import get_preset
from seednorm_experiments.upcycle.pretrained import load_base, load_tokenizer

ARMS = ["rmsnorm", "seednorm", "seednorm-upcycle"]
LAYERS = ["layers.0.input_layernorm", "layers.0.post_attention_layernorm", "norm"]


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    argv = ["upcycle", "--probe", "--preset", "smoke", "--arms", ",".join(ARMS), "--probe-steps", "2", "--out",
            str(out)]
    return cli.main(argv), out


@pytest.mark.slow
def test_probe_prints_and_writes_the_first_steps_of_each_arm(probed):
    code, out = probed
    assert code == 0
    table = (out / "probe.md").read_text()
    assert table.startswith("Upcycle probe (smoke preset): a 96-wide random model of SmolLM2-135M's architecture, "
                            "1 layer; batch 2 × 16 tokens")
    assert "| seednorm-upcycle | 0.0001 (1e-06) |" in table and "| layers.0.input_layernorm |" in table
    result = json.loads((out / "probe.json").read_text())
    assert list(result["arms"]) == ARMS and result["steps"] == 2
    arms = result["arms"]
    assert all(len(a["losses"]) == 3 for a in arms.values())
    start = arms["rmsnorm"]["losses"][0]
    assert all(abs(a["losses"][0] - start) <= 1e-4 for a in arms.values())  # every arm starts from one function
    assert arms["rmsnorm"]["beta_grad_norm"] is None and arms["seednorm"]["beta_grad_norm"] > 0

    preset = get_preset("smoke")
    base = load_base(preset.layers, preset.width)
    gains = {"layers.0.input_layernorm": base.model.layers[0].input_layernorm.weight,
             "layers.0.post_attention_layernorm": base.model.layers[0].post_attention_layernorm.weight,
             "norm": base.model.norm.weight}
    x, _ = train_batch(load_corpus(load_tokenizer(), "bible", preset.max_chars).tokens["train"], 0, 0, 1,
                       batch_size=preset.batch_size, seq_len=preset.seq_len, seed=0)
    with torch.no_grad():
        embedded = base.model.embed_tokens(x)  # what the first norm reads
    # (arm, α, rate of α and β, the smallest share of the rate the largest |Δβ| reaches: see Adam's first step below)
    for name, alpha, rate, reach in (("seednorm", 1.0, 1e-4, 0.99), ("seednorm-upcycle", 0.01, 1e-6, 0.5)):
        layers = arms[name]["layers"]
        assert list(layers) == LAYERS
        for layer, row in layers.items():
            median = float(gains[layer].detach().abs().median())
            assert row["median_abs_gamma"] == pytest.approx(median)
            assert row["alpha_over_gamma"] == pytest.approx(alpha / median)
            # Adam's first step from β = 0: |Δβ| = rate · |g| / (|g| + ε), never above the rate (float32 rounding
            # above) and ≈ the rate where |g| ≫ ε = 1e-8; the recipe's gradients are ~1e-7 in this small random
            # model (~1e-6 in the real one), so ε takes up to half off them
            top = rate * (1 + 1e-6)
            assert reach * rate <= row["max_abs_dbeta"] <= top and row["mean_abs_dbeta"] <= top
        first = layers["layers.0.input_layernorm"]
        assert first["mean_abs_x"] == pytest.approx(float(embedded.abs().mean()), rel=1e-5)
        assert first["max_abs_x"] == pytest.approx(float(embedded.abs().max()), rel=1e-5)
    s_paper = max(r["max_abs_s_after"] for r in arms["seednorm"]["layers"].values())
    s_recipe = max(r["max_abs_s_after"] for r in arms["seednorm-upcycle"]["layers"].values())
    assert s_recipe < s_paper / 1000  # 0.01 of the rate, and 1/96 of the dot product


@pytest.mark.parametrize(("args", "message"), [
    (["--report-only"], "--probe and --report-only exclude each other"),
    (["--probe-steps", "11"], "--probe-steps must be 1 to 10"),
    (["--arms", "nope"], "unknown arm 'nope'"),
])
def test_bad_probe_arguments_are_one_line_and_exit_2(args, message, capsys, tmp_path):
    assert cli.main(["upcycle", "--probe", "--preset", "smoke", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
