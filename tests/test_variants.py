"""SeeDNorm's ablation forms (spec §6) against the float64 reference: forward, every gradient, finite differences,
the fused paths that serve them, dtypes, the parameter registry, options round trips and bad arguments."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from reference import seednorm_ref, seednorm_ref_grads, seednorm_variant_ref, seednorm_variant_ref_grads
from torch import nn

import seednorm
from seednorm import SeeDNorm
from seednorm.convert import layer_options

RTOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}
FORMS = list(itertools.product(["vector", "scalar", "none"], ["dot", "elementwise", "none"], ["vector", "none"]))
FORM_IDS = [f"alpha={a}-beta={b}-gamma={g}" for a, b, g in FORMS]


def assert_near(actual, expected, rtol):
    actual, expected = actual.double(), expected.double()
    bound = rtol * (expected.abs().max().item() + 1)
    err = (actual - expected).abs().max().item()
    assert err <= bound, f"max error {err:.3g} > {bound:.3g}"


def layer(dim, alpha_mode, beta_mode, gamma_mode, *, num_heads=1, dtype=torch.float32, **kw) -> SeeDNorm:
    """A layer of the given form with non-trivial parameters, so every term of its formula matters."""
    norm = SeeDNorm(dim, num_heads=num_heads, alpha_mode=alpha_mode, beta_mode=beta_mode, gamma_mode=gamma_mode,
                    dtype=dtype, **kw)
    with torch.no_grad():
        if norm.weight is not None:
            norm.weight.copy_(1 + 0.5 * torch.randn(dim))
        if norm.alpha is not None:
            norm.alpha.copy_(1 + 0.5 * torch.randn(norm.alpha.shape))
        if norm.beta is not None:
            norm.beta.copy_(torch.randn(dim) / math.sqrt(dim if beta_mode == "dot" else 1))
    return norm


def ref_args(norm: SeeDNorm) -> dict:
    scale = norm.num_heads / norm.normalized_shape[0] if norm.dot_scale == "dim" else norm.dot_scale
    return {"beta_mode": norm.beta_mode, "num_heads": norm.num_heads, "eps": norm.eps,
            "activation": norm.activation, "dot_scale": scale}


def run(norm: SeeDNorm, x: torch.Tensor):
    """Forward and backward with a fixed random upstream gradient: y, dy and {name: gradient}."""
    x = x.clone().requires_grad_()
    norm.zero_grad()
    y = norm(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    grads = {name: p.grad for name, p in norm.named_parameters()}
    return y, dy, {"x": x.grad, **grads}


@pytest.mark.parametrize(("alpha_mode", "beta_mode", "gamma_mode"), FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_form_matches_the_reference(alpha_mode, beta_mode, gamma_mode, dtype):
    heads = 4 if beta_mode == "dot" else 1
    norm = layer(48, alpha_mode, beta_mode, gamma_mode, num_heads=heads, dtype=dtype, eps=1e-6, impl="reference")
    x = 3 * torch.randn(5, 3, 48, dtype=dtype)
    y, dy, grads = run(norm, x)
    kw = ref_args(norm)
    assert_near(y, seednorm_variant_ref(x, norm.weight, norm.alpha, norm.beta, **kw), RTOL[dtype])
    expected = seednorm_variant_ref_grads(x, norm.weight, norm.alpha, norm.beta, dy, **kw)
    assert set(grads) == set(expected)  # a gradient for exactly the parameters the form has
    for name, g in grads.items():
        assert g.shape == expected[name].shape and g.dtype == dtype
        assert_near(g, expected[name], RTOL[dtype] * 10)


@pytest.mark.parametrize(("alpha_mode", "beta_mode", "gamma_mode"), FORMS, ids=FORM_IDS)
def test_every_form_passes_gradcheck(alpha_mode, beta_mode, gamma_mode):
    """The implementation's gradients against finite differences in float64 (and second order)."""
    heads = 2 if beta_mode == "dot" else 1
    norm = layer(8, alpha_mode, beta_mode, gamma_mode, num_heads=heads, dtype=torch.float64, eps=1e-5)
    names = [n for n, _ in norm.named_parameters()]
    x = torch.randn(3, 2, 8, dtype=torch.float64, requires_grad=True)

    def f(x, *params):
        return torch.func.functional_call(norm, dict(zip(names, params, strict=True)), (x,))

    inputs = (x, *(p.detach().clone().requires_grad_() for p in norm.parameters()))
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def test_reference_of_the_forms_is_the_paper_layer_at_the_defaults():
    x = torch.randn(4, 24, dtype=torch.float64)
    norm = layer(24, "vector", "dot", "vector", num_heads=2, dtype=torch.float64)
    dy = torch.randn_like(x)
    kw = {"num_heads": 2, "eps": 1e-6}
    assert torch.equal(seednorm_variant_ref(x, norm.weight, norm.alpha, norm.beta, **kw),
                       seednorm_ref(x, norm.weight, norm.alpha, norm.beta, **kw))
    general = seednorm_variant_ref_grads(x, norm.weight, norm.alpha, norm.beta, dy, **kw)
    paper = seednorm_ref_grads(x, norm.weight, norm.alpha, norm.beta, dy, **kw)
    for name in paper:
        torch.testing.assert_close(general[name], paper[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["cpp", "compiled"])
@pytest.mark.parametrize(("alpha_mode", "gamma_mode"), [("scalar", "vector"), ("none", "vector"),
                                                        ("vector", "none"), ("scalar", "none"), ("none", "none")])
def test_fused_op_serves_scalar_or_absent_alpha_and_absent_gamma(impl, alpha_mode, gamma_mode, monkeypatch):
    if impl == "cpp" and seednorm.ops.op.cpu.unavailable():
        pytest.skip(f"no C++ kernels here: {seednorm.ops.op.cpu.unavailable()}")
    calls = []
    fused = seednorm.ops.seednorm_fused
    monkeypatch.setattr(seednorm.ops, "seednorm_fused", lambda *a, **k: calls.append(k["impl"]) or fused(*a, **k))
    norm = layer(64, alpha_mode, "dot", gamma_mode, num_heads=4, eps=1e-6, impl=impl)
    x = 2 * torch.randn(6, 64)
    y, dy, grads = run(norm, x)
    assert calls == [impl]
    kw = ref_args(norm)
    assert_near(y, seednorm_variant_ref(x, norm.weight, norm.alpha, norm.beta, **kw), RTOL[torch.float32])
    expected = seednorm_variant_ref_grads(x, norm.weight, norm.alpha, norm.beta, dy, **kw)
    assert set(grads) == set(expected)
    for name, g in grads.items():
        assert g.shape == expected[name].shape
        assert_near(g, expected[name], RTOL[torch.float32] * 20)


@pytest.mark.parametrize("beta_mode", ["elementwise", "none"])
def test_elementwise_forms_run_the_reference_whatever_impl_asks(beta_mode, monkeypatch):
    monkeypatch.setattr(seednorm.ops, "seednorm_fused", lambda *a, **k: pytest.fail("the fused op ran"))
    norm = layer(16, "vector", beta_mode, "vector", impl="compiled", eps=1e-6)
    x = torch.randn(3, 16)
    assert_near(norm(x), seednorm_variant_ref(x, norm.weight, norm.alpha, norm.beta, **ref_args(norm)),
                RTOL[torch.float32])


@pytest.mark.parametrize(("alpha_mode", "beta_mode", "gamma_mode"), FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_input_matches_float32(alpha_mode, beta_mode, gamma_mode, dtype):
    norm = layer(96, alpha_mode, beta_mode, gamma_mode, eps=1e-6)
    x = torch.randn(7, 96).to(dtype)
    y, _, grads = run(norm, x)
    y32, _, _ = run(norm, x.float())
    assert y.dtype == dtype and grads["x"].dtype == dtype
    assert_near(y, y32, RTOL[dtype])


@pytest.mark.parametrize("shape", [(1, 1), (5, 123), (2, 3, 1, 7), (64,)], ids=str)
@pytest.mark.parametrize("beta_mode", ["dot", "elementwise", "none"])
def test_odd_shapes(shape, beta_mode):
    norm = layer(shape[-1], "scalar", beta_mode, "none", dtype=torch.float64, eps=1e-6)
    x = torch.randn(shape, dtype=torch.float64)
    y, dy, grads = run(norm, x)
    assert y.shape == x.shape
    kw = ref_args(norm)
    assert_near(y, seednorm_variant_ref(x, None, norm.alpha, norm.beta, **kw), 1e-12)
    expected = seednorm_variant_ref_grads(x, None, norm.alpha, norm.beta, dy, **kw)
    for name, g in grads.items():
        assert_near(g, expected[name], 1e-10)


def test_parameters_and_state_dict_hold_exactly_the_terms_of_the_form():
    assert [n for n, _ in SeeDNorm(8).named_parameters()] == ["alpha", "beta", "weight"]
    scalar = SeeDNorm(8, alpha_mode="scalar", alpha_init=0.5)
    assert tuple(scalar.alpha.shape) == (1,) and torch.equal(scalar.alpha, torch.full((1,), 0.5))
    bare = SeeDNorm(8, alpha_mode="none", beta_mode="none", gamma_mode="none", bias=True)
    assert bare.alpha is None and bare.beta is None and bare.weight is None
    assert list(bare.state_dict()) == ["bias"]
    assert set(SeeDNorm(8, beta_mode="elementwise").state_dict()) == {"alpha", "beta", "weight"}
    bare.reset_parameters()  # skips what the form lacks


def test_defaults_are_the_paper_layer_and_repr_names_only_other_forms():
    norm = SeeDNorm(8)
    assert (norm.alpha_mode, norm.beta_mode, norm.gamma_mode) == ("vector", "dot", "vector")
    assert "mode" not in repr(norm)
    text = repr(SeeDNorm(8, alpha_mode="scalar", beta_mode="elementwise", gamma_mode="none"))
    assert "alpha_mode='scalar'" in text and "beta_mode='elementwise'" in text and "gamma_mode='none'" in text


def test_without_gamma_the_layer_starts_at_zero_and_beta_learns():
    norm = SeeDNorm(16, gamma_mode="none")
    x = torch.randn(4, 16)
    y = norm(x)
    assert torch.equal(y, torch.zeros_like(y))
    (y * torch.randn_like(y)).sum().backward()
    assert norm.beta.grad.abs().sum() > 0


def test_dynamic_parameters_lists_what_each_form_has():
    model = nn.ModuleDict({
        "paper": SeeDNorm(8),
        "scalar": SeeDNorm(8, alpha_mode="scalar", beta_mode="elementwise"),
        "no_alpha": SeeDNorm(8, alpha_mode="none"),
        "no_beta": SeeDNorm(8, beta_mode="none", gamma_mode="none"),
        "bare": SeeDNorm(8, alpha_mode="none", beta_mode="none"),
    })
    assert seednorm.dynamic_parameters(model) == {
        "paper.alpha": "alpha", "paper.beta": "beta",
        "scalar.alpha": "alpha", "scalar.beta": "beta",
        "no_alpha.beta": "beta",
        "no_beta.alpha": "alpha",
    }
    groups = {g["name"]: g["params"] for g in seednorm.param_groups(model, 0.1)}
    assert len(groups["seednorm"]) == 6


@pytest.mark.parametrize(("alpha_mode", "beta_mode", "gamma_mode"), FORMS, ids=FORM_IDS)
def test_layer_options_and_state_dict_rebuild_every_form(alpha_mode, beta_mode, gamma_mode):
    norm = layer(12, alpha_mode, beta_mode, gamma_mode, eps=1e-5)
    options = layer_options(norm)
    assert (options["alpha_mode"], options["beta_mode"], options["gamma_mode"]) == (alpha_mode, beta_mode,
                                                                                     gamma_mode)
    buf = io.BytesIO()
    torch.save(norm.state_dict(), buf)
    buf.seek(0)
    fresh = SeeDNorm(**options)
    fresh.load_state_dict(torch.load(buf))
    x = torch.randn(3, 12)
    assert torch.equal(fresh(x), norm(x))
    assert layer_options(fresh) == options


def test_a_converted_hf_model_with_variant_layers_survives_save_and_reload(tmp_path):
    transformers = pytest.importorskip("transformers")
    from seednorm.integrations import transformers as sn_hf

    config = transformers.LlamaConfig(vocab_size=96, pad_token_id=0, bos_token_id=1, eos_token_id=2, hidden_size=32,
                                      intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64)
    model = sn_hf.convert(transformers.AutoModelForCausalLM.from_config(config).eval())
    blocks = model.model.layers
    blocks[0].input_layernorm = sn_hf.HFSeeDNorm(32, alpha_mode="scalar", beta_mode="elementwise", eps=1e-6)
    blocks[1].input_layernorm = sn_hf.HFSeeDNorm(32, alpha_mode="none", beta_mode="none", gamma_mode="none",
                                                 eps=1e-6)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or name.endswith("norm.weight"):
                p.add_(0.3 * torch.randn_like(p))
    ids = torch.randint(3, 96, (2, 9))
    with torch.no_grad():
        expected = model(ids).logits
    model.save_pretrained(tmp_path)
    reloaded = sn_hf.from_pretrained(transformers.AutoModelForCausalLM, tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, expected)
    norms = {n: layer_options(m) for n, m in reloaded.named_modules() if isinstance(m, SeeDNorm)}
    assert norms == {n: layer_options(m) for n, m in model.named_modules() if isinstance(m, SeeDNorm)}
    assert norms["model.layers.1.input_layernorm"]["gamma_mode"] == "none"


# ---------------------------------------------------------------------------------------------------------
# Bad arguments: clear errors that name the problem.


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: SeeDNorm(8, alpha_mode="matrix"), ValueError, "alpha_mode must be one of"),
        (lambda: SeeDNorm(8, beta_mode="outer"), ValueError, "beta_mode must be one of"),
        (lambda: SeeDNorm(8, gamma_mode=False), ValueError, "gamma_mode must be one of"),
        (lambda: SeeDNorm(8, gamma_mode="scalar"), ValueError, "gamma_mode must be one of"),
        (lambda: SeeDNorm(8, num_heads=2, beta_mode="elementwise"), ValueError, "num_heads must be 1"),
        (lambda: SeeDNorm(8, num_heads=2, beta_mode="none"), ValueError, "num_heads must be 1"),
        (lambda: SeeDNorm(8, alpha_init=0.0, beta_mode="elementwise"), ValueError, "alpha_init=0"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), None, torch.ones(8), None), ValueError,
         "beta must be None exactly when beta_mode='none'"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), None, torch.ones(8), torch.ones(8), beta_mode="none"),
         ValueError, "beta must be None exactly"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), None, torch.ones(2), torch.ones(8)), ValueError,
         "last dimension must be 2"),  # the width is α's when α is a vector
        (lambda: seednorm.seednorm(torch.randn(2, 8), None, torch.ones(8, 1), torch.ones(8)), ValueError,
         r"alpha must have shape \(8,\)"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), None, torch.ones(1), torch.ones(7)), ValueError,
         "last dimension must be 7"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), None, None, torch.ones(8), beta_mode="cross"), ValueError,
         "beta_mode must be one of"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), None, torch.ones(8), torch.ones(8), num_heads=2,
                                   beta_mode="elementwise"), ValueError, "num_heads must be 1"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), None, torch.ones(1, dtype=torch.int64), torch.ones(8)),
         TypeError, "alpha must be a real floating-point"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_alpha_init_zero_is_allowed_where_it_cannot_lock_the_gradients():
    assert torch.equal(SeeDNorm(8, alpha_init=0.0, beta_mode="none").alpha, torch.zeros(8))
    assert SeeDNorm(8, alpha_init=0.0, alpha_mode="none").alpha is None


@pytest.mark.parametrize(("alpha_mode", "beta_mode", "gamma_mode"), [("scalar", "dot", "none"),
                                                                     ("none", "elementwise", "vector")])
def test_compile_fullgraph_and_fx_trace_match_eager(alpha_mode, beta_mode, gamma_mode):
    model = nn.Sequential(nn.Linear(16, 32), layer(32, alpha_mode, beta_mode, gamma_mode), nn.Linear(32, 4))
    x = torch.randn(4, 5, 16)
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    compiled(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5)
    traced = torch.fx.symbolic_trace(model.eval())
    torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
