"""UpcycleRecipe: a conversion of a trained model for further training that bounds the first steps, and still
equals the source at init (float64, against the closed form)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import seednorm
from seednorm import SeeDNorm, UpcycleRecipe, convert_to_seednorm

D = 16


class Stack(nn.Module):
    """Two linear + RMSNorm blocks with trained-looking gains (some negative, none 1)."""

    def __init__(self, dim: int = D) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))
        self.norm = nn.ModuleList(nn.RMSNorm(dim, eps=1e-6) for _ in range(2))
        with torch.no_grad():
            for norm in self.norm:
                norm.weight.copy_(torch.randn(dim) * 0.2 + 0.1)

    def forward(self, x):
        for proj, norm in zip(self.proj, self.norm, strict=True):
            x = x + norm(proj(x))
        return x


def _rms(x: torch.Tensor, gain: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return gain * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _inputs() -> torch.Tensor:
    scales = torch.tensor([1e-3, 1.0, 30.0, 2e4], dtype=torch.float64).view(4, 1, 1)  # up to a trained stream's
    return torch.randn(4, 3, D, dtype=torch.float64) * scales


@pytest.mark.parametrize("recipe", [UpcycleRecipe(), UpcycleRecipe(alpha_init=0.1, alpha_relative=True), "upcycle"])
def test_the_converted_model_equals_the_source_at_init(recipe):
    model = Stack().double()
    x = _inputs()
    with torch.no_grad():
        before = model(x)
        gains = [norm.weight.clone() for norm in model.norm]
        convert_to_seednorm(model, recipe=recipe)
        assert all(isinstance(norm, SeeDNorm) for norm in model.norm)
        torch.testing.assert_close(model(x), before, atol=1e-12, rtol=1e-12)
        for norm, gain in zip(model.norm, gains, strict=True):
            torch.testing.assert_close(norm(x), _rms(x, gain), atol=1e-12, rtol=1e-12)


def test_alpha_is_the_constant_or_a_fraction_of_each_channels_gain():
    constant = convert_to_seednorm(Stack().double(), recipe="upcycle")
    for norm in constant.norm:
        assert norm.alpha_init == 0.01 and torch.equal(norm.alpha.detach(), torch.full((D,), 0.01, dtype=torch.float64))
    model = Stack().double()
    gains = [norm.weight.detach().clone() for norm in model.norm]
    convert_to_seednorm(model, recipe=UpcycleRecipe(alpha_init=0.1, alpha_relative=True))
    for norm, gain in zip(model.norm, gains, strict=True):
        assert norm.alpha_init == 0.1 and torch.equal(norm.alpha.detach(), gain * 0.1)
    paper = convert_to_seednorm(Stack())  # without a recipe: the paper's α = 1, dot scale 1
    assert all(norm.alpha_init == 1.0 and norm.dot_scale == 1.0 for norm in paper.norm)


def test_dot_scale_is_one_over_the_width_in_the_layers_function():
    model = convert_to_seednorm(Stack().double(), recipe=UpcycleRecipe(alpha_init=0.3), num_heads=4)
    norm = model.norm[0]
    assert norm.dot_scale == "dim"
    x = _inputs()[:3]  # scales where tanh is not saturated at β = 1 / 1000
    with torch.no_grad():
        norm.beta.fill_(1e-3)
        heads, h = x.view(*x.shape[:-1], 4, D // 4), D // 4
        s = heads.sum(-1, keepdim=True) * 1e-3 / h  # one s per head, dot scale 1/(D/num_heads)
        gain = torch.tanh(s) * norm.alpha.view(4, h) + norm.weight.view(4, h)
        expected = (gain * heads).reshape(x.shape) / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        torch.testing.assert_close(norm(x), expected, atol=1e-12, rtol=1e-12)


def test_param_groups_scale_the_rate_of_alpha_and_beta_only():
    recipe = UpcycleRecipe(dynamic_lr_scale=0.05)
    model = convert_to_seednorm(Stack(), recipe=recipe)
    groups = {g["name"]: g for g in recipe.param_groups(model, 0.1, lr=2e-3)}
    assert {id(p) for p in groups["seednorm"]["params"]} == {
        id(p) for norm in model.norm for p in (norm.alpha, norm.beta)}
    assert math.isclose(groups["seednorm"]["lr"], 1e-4) and groups["seednorm"]["weight_decay"] == 0.1
    assert groups["decay"]["lr"] == groups["no_decay"]["lr"] == 2e-3
    assert recipe.param_groups(model, 0.1, lr=2e-3) == seednorm.param_groups(model, 0.1, lr=2e-3,
                                                                             dynamic_lr_scale=0.05)


def test_the_recipe_bounds_the_first_adam_step_on_a_large_residual_stream():
    """The mechanism it exists for: Adam moves every β element by ~lr whatever the gradient, so with x ~ 10⁴ the
    paper's s = ⟨x, β⟩ saturates tanh after one step and α = 1 (10 × γ) rewrites the gain; the recipe's does not."""
    x = torch.randn(8, D) * 1e4
    target = torch.randn(8, D) * 0.1

    def first_step(recipe):
        norm = nn.RMSNorm(D, eps=1e-6)
        with torch.no_grad():
            norm.weight.fill_(0.1)
        if recipe != "rmsnorm":
            norm = convert_to_seednorm(norm, recipe=recipe)
        groups = (recipe.param_groups(norm, 0.0, lr=1e-3) if isinstance(recipe, UpcycleRecipe)
                  else seednorm.param_groups(norm, 0.0, lr=1e-3))
        opt = torch.optim.AdamW(groups, lr=1e-3)
        before = norm(x).detach()
        (norm(x) - target).square().mean().backward()
        opt.step()
        with torch.no_grad():
            return float((norm(x) - before).abs().max() / before.abs().max())

    rmsnorm = first_step("rmsnorm")  # γ's own step: lr / γ = 1%
    assert first_step(None) > 50 * rmsnorm  # the paper's defaults: the output moves by more than its own size
    assert first_step(UpcycleRecipe()) < 2 * rmsnorm  # β moves by lr/100, and σ(s) counts × α = 0.01
    assert first_step(UpcycleRecipe(alpha_init=0.1, alpha_relative=True)) < 2 * rmsnorm


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha_init": 0.0}, ValueError, "alpha_init must be a finite non-zero number"),
        ({"alpha_init": float("nan")}, ValueError, "alpha_init must be a finite non-zero number"),
        ({"alpha_init": True}, ValueError, "alpha_init must be a finite non-zero number"),
        ({"alpha_init": "0.01"}, ValueError, "alpha_init must be a finite non-zero number"),
        ({"alpha_relative": 1}, TypeError, "alpha_relative must be True or False"),
        ({"dot_scale": 0.0}, ValueError, "dot_scale must be 'dim'"),
        ({"dot_scale": -1.0}, ValueError, "dot_scale must be 'dim'"),
        ({"dot_scale": "sqrt"}, ValueError, "dot_scale must be 'dim'"),
        ({"dot_scale": float("inf")}, ValueError, "dot_scale must be 'dim'"),
        ({"dynamic_lr_scale": 0}, ValueError, "dynamic_lr_scale must be a finite number > 0"),
        ({"dynamic_lr_scale": -0.1}, ValueError, "dynamic_lr_scale must be a finite number > 0"),
        ({"dynamic_lr_scale": None}, ValueError, "dynamic_lr_scale must be a finite number > 0"),
    ],
)
def test_bad_recipe_values_are_one_error_naming_the_field(kwargs, error, match):
    with pytest.raises(error, match=match):
        UpcycleRecipe(**kwargs)


def test_bad_recipe_arguments_to_the_conversion_change_nothing():
    model = Stack()
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        convert_to_seednorm(model, recipe="fast")
    with pytest.raises(TypeError, match="recipe must be None"):
        convert_to_seednorm(model, recipe={"alpha_init": 0.01})
    with pytest.raises(ValueError, match="sets alpha_init and dot_scale"):
        convert_to_seednorm(model, recipe="upcycle", alpha_init=0.5)
    with pytest.raises(ValueError, match="sets alpha_init and dot_scale"):
        convert_to_seednorm(model, recipe="upcycle", dot_scale="dim")
    with torch.no_grad():
        model.norm[1].weight.zero_()
    with pytest.raises(ValueError, match=r"'norm\.1': its γ is 0 everywhere"):
        convert_to_seednorm(model, recipe=UpcycleRecipe(alpha_relative=True))

    class ScalarAlpha(SeeDNorm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, alpha_mode="scalar", **kwargs)

    with pytest.raises(ValueError, match="alpha_relative needs a per-channel α"):
        convert_to_seednorm(model, recipe=UpcycleRecipe(alpha_relative=True), layer_class=ScalarAlpha)
    assert all(type(norm) is nn.RMSNorm for norm in model.norm)  # nothing converted


def test_transformers_convert_takes_the_recipe_and_reloads_a_per_channel_alpha(tmp_path):
    transformers = pytest.importorskip("transformers")
    from seednorm.integrations import transformers as sn_hf

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    ids = torch.randint(3, 64, (1, 8))
    with torch.no_grad():
        before = model(ids).logits
    sn_hf.convert(model, recipe=UpcycleRecipe(alpha_init=0.1, alpha_relative=True))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, atol=1e-5, rtol=0)
    norm = model.model.norm
    assert torch.equal(norm.alpha.detach(), norm.weight.detach() * 0.1)
    assert model.config.seednorm["layers"]["model.norm"]["dot_scale"] == "dim"
    model.save_pretrained(tmp_path)
    reloaded = sn_hf.from_pretrained(transformers.LlamaForCausalLM, tmp_path)
    assert torch.equal(reloaded.model.norm.alpha, norm.alpha)
