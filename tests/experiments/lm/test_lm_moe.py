"""The mixture-of-experts option of the language-model study: router top-k, the load-balancing loss, the MoE model's
forward and backward, the dense model left as it is, and a smoke study with experts end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seednorm_experiments.lm import main
from seednorm_experiments.lm.data import load_corpus
from seednorm_experiments.lm.model import Llama, LMConfig, MoE, SwiGLU, load_balancing_loss
from seednorm_experiments.lm.presets import get_preset
from seednorm_experiments.lm.study import _lm_loss, make_task


def _tiny(**kw) -> LMConfig:
    return LMConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, seq_len=8, **kw)


def test_load_balancing_loss_against_hand_computed_values() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])  # P = (0.4, 0.4, 0.2)
    top1 = torch.tensor([[0], [1]])  # f = (1/2, 1/2, 0): 3 · (0.2 + 0.2 + 0) = 1.2
    top2 = torch.tensor([[0, 1], [1, 2]])  # f = (1/4, 1/2, 1/4): 3 · (0.1 + 0.2 + 0.05) = 1.05
    torch.testing.assert_close(load_balancing_loss(probs, top1, 3), torch.tensor(1.2))
    torch.testing.assert_close(load_balancing_loss(probs, top2, 3), torch.tensor(1.05))
    uniform = torch.full((4, 4), 0.25)
    torch.testing.assert_close(load_balancing_loss(uniform, torch.tensor([[0], [1], [2], [3]]), 4), torch.tensor(1.0))


def test_router_picks_the_top_k_experts_and_weights_them_by_probability() -> None:
    torch.manual_seed(0)
    moe = MoE(_tiny(moe_experts=4, moe_top_k=2)).double()
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    probs, weights, chosen = moe.route(x.reshape(-1, 16))
    torch.testing.assert_close(probs, F.softmax(x.reshape(-1, 16) @ moe.router.weight.T, -1).float())
    for row in range(6):  # the two most probable experts, their (not renormalised) probabilities
        assert set(chosen[row].tolist()) == set(probs[row].argsort(descending=True)[:2].tolist())
        torch.testing.assert_close(weights[row], probs[row, chosen[row]])
    expected = torch.stack([sum(w * moe.experts[e](t) for w, e in zip(weights[i].double(), chosen[i].tolist(),
                                                                       strict=True))
                            for i, t in enumerate(x.reshape(-1, 16))]).view_as(x)
    torch.testing.assert_close(moe(x), expected)
    torch.testing.assert_close(moe.load.sum(), torch.tensor(1.0))


def test_moe_model_forward_backward_and_aux_loss() -> None:
    torch.manual_seed(0)
    model = Llama(_tiny(moe_experts=4, moe_top_k=2, norm="seednorm", qk_norm=True))
    x = torch.randint(0, 50, (3, 8))
    assert model(x).shape == (3, 8, 50)
    assert all(isinstance(b.mlp, MoE) and len(b.mlp.experts) == 4 for b in model.blocks)
    assert 1 <= float(model.aux_loss.detach()) <= 4  # the mean of two blocks', each in [1, E]
    loss = _lm_loss(model, (x, torch.randint(0, 50, (3, 8))))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # every expert, even one given no token
    dense_mlp = 3 * 16 * model.cfg.hidden
    assert model.cfg.inactive_params() == 2 * (4 - 2) * dense_mlp


def test_model_aux_loss_is_the_mean_over_the_blocks_as_olmoe() -> None:
    torch.manual_seed(0)
    model = Llama(_tiny(moe_experts=4, moe_top_k=2))
    torch.nn.init.zeros_(model.blocks[0].mlp.router.weight)  # uniform router: P_e = 1/4, so E·Σ f_e·P_e = Σ f_e = 1
    with torch.no_grad():
        model.blocks[1].mlp.router.weight[0].fill_(1.0)  # expert 0 favoured: a block loss above 1
        model(torch.randint(0, 50, (3, 8)))
    first, second = (float(b.mlp.aux_loss) for b in model.blocks)
    assert first == pytest.approx(1.0) and second > 1.0
    assert float(model.aux_loss) == pytest.approx((first + second) / 2)  # not their sum
    model.blocks[0].mlp.aux_loss, model.blocks[1].mlp.aux_loss = torch.tensor(1.2), torch.tensor(1.05)
    torch.testing.assert_close(model.aux_loss, torch.tensor(1.125))


def test_aux_loss_enters_the_gradient_not_the_logged_value() -> None:
    x, y = torch.randint(0, 50, (3, 8)), torch.randint(0, 50, (3, 8))
    grads, values = [], []
    for coef in (0.0, 0.5):
        torch.manual_seed(0)
        model = Llama(_tiny(moe_experts=4, moe_top_k=1, moe_aux_coef=coef))
        loss = _lm_loss(model, (x, y))
        loss.backward()
        values.append(float(loss.detach()))
        grads.append(model.blocks[0].mlp.router.weight.grad.clone())
    assert values[0] == values[1]  # the cross-entropy
    assert not torch.allclose(grads[0], grads[1])


def test_bad_moe_config() -> None:
    with pytest.raises(ValueError, match="moe_top_k"):
        _tiny(moe_experts=2, moe_top_k=3)
    with pytest.raises(ValueError, match="moe_aux_coef"):
        _tiny(moe_experts=2, moe_aux_coef=-1.0)


def test_dense_default_is_unchanged() -> None:
    """Dense (the default): SwiGLU MLPs, no aux loss, and a fingerprint that names no MoE field, so run folders
    of the dense study stay reusable."""
    model = Llama(_tiny())
    assert all(type(b.mlp) is SwiGLU for b in model.blocks) and model.aux_loss is None
    assert not any("router" in n or "experts" in n for n, _ in model.named_parameters())
    preset = get_preset("smoke")
    corpus = load_corpus(preset.vocab_size, preset.max_chars)
    dense = make_task(preset, corpus, "rmsnorm", 0, None).signature["model"]
    assert not any(k.startswith("moe_") for k in dense)
    moe = make_task(preset, corpus, "rmsnorm", 0, None,
                    model_overrides={"moe_experts": 4, "moe_top_k": 2}).signature["model"]
    assert (moe["moe_experts"], moe["moe_top_k"], moe["moe_aux_coef"]) == (4, 2, 0.01)
    assert moe["moe_aux_over_blocks"] == "mean"


def test_moe_smoke_study_end_to_end(tmp_path: Path) -> None:
    assert main(["--preset", "smoke", "--norms", "rmsnorm", "seednorm", "--moe-experts", "4", "--moe-top-k", "2",
                 "--out", str(tmp_path), "--no-progress", "--no-throughput"]) == 0
    report = (tmp_path / "report.md").read_text()
    for needle in ("mixture of 4 experts, top 2", "active)", "Expert routing", "Difference to RMSNorm"):
        assert needle in report
    result = json.loads((tmp_path / "runs" / "seednorm" / "seed0" / "result.json").read_text())
    assert not result["diverged"] and {"moe/balance", "moe/max_load"} <= set(result["final_eval"])
    assert result["fingerprint"]["signature"]["model"]["moe_experts"] == 4


def test_moe_arguments_are_checked(capsys) -> None:
    assert main(["--preset", "smoke", "--moe-experts", "2", "--moe-top-k", "3"]) == 2
    assert "--moe-top-k 3 exceeds --moe-experts 2" in capsys.readouterr().err
    assert main(["--ablation", "--preset", "smoke", "--moe-experts", "2"]) == 2
    assert "--moe-experts applies to the study" in capsys.readouterr().err
