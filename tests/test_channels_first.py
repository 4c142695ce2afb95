"""Channels-first norms (spec §6b): SeeDNorm2d and ``build_norm(..., channels_first=True)`` against a float64 oracle
applied position by position, every option, odd shapes, gradients, dtypes, the no-copy fused path, compile, fx,
the weight-decay registry and bad inputs."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seednorm
from seednorm import NORMS, AdaSeeDNorm, AdaSeeDNorm2d, SeeDNorm, SeeDNorm2d, build_norm
from seednorm.ops import cpu, op

SIGMA = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hardtanh": lambda s: s.clamp(-1, 1),
    "softsign": lambda s: s / (1 + s.abs()),
}


def token_oracle(v, gamma, alpha, beta, bias, *, num_heads=1, eps, activation="tanh", dot_scale=1.0, center=False,
                 beta_mode="dot"):
    """Spec §1, §3, §6 for ONE token v ∈ R^C (float64): y = [σ(s)·α + γ] ⊙ v/RMS(v) + b."""
    C = v.numel()
    if center:
        v = v - v.mean()
    scale = num_heads / C if dot_scale == "dim" else dot_scale
    sigma = SIGMA[activation]
    a = torch.ones(C, dtype=v.dtype) if alpha is None else alpha.expand(C)
    if beta_mode == "dot":
        d = C // num_heads
        heads = [slice(h * d, (h + 1) * d) for h in range(num_heads)]
        dynamic = torch.cat([sigma(scale * (v[c] * beta[c]).sum()) * a[c] for c in heads])
    else:
        dynamic = sigma(scale * v * (1.0 if beta is None else beta)) * a
    g = dynamic + (torch.zeros(C, dtype=v.dtype) if gamma is None else gamma)
    y = g * v / torch.sqrt((v * v).mean() + eps)
    return y if bias is None else y + bias


def oracle(x, layer, **extra):
    """The channels-first layer's output, token by token: each position's C channels through ``token_oracle``."""
    p = {name: None if t is None else t.detach().double()
         for name, t in (("gamma", layer.weight), ("alpha", layer.alpha), ("beta", layer.beta), ("bias", layer.bias))}
    eps = torch.finfo(x.dtype).eps if layer.eps is None else layer.eps
    opts = {"num_heads": layer.num_heads, "eps": eps, "activation": layer.activation, "dot_scale": layer.dot_scale,
            "center": layer.center, "beta_mode": layer.beta_mode, **extra}
    x = x.detach().double()
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        for pos in itertools.product(*(range(k) for k in x.shape[2:])):
            index = (n, slice(None), *pos)
            out[index] = token_oracle(x[index], **p, **opts)
    return out


def randomized(layer: nn.Module) -> nn.Module:
    """Parameters away from init (β ≠ 0 so that the dynamic term matters)."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            offset = 1.0 if name in ("weight", "alpha") else 0.0
            p.copy_(torch.randn_like(p) * (0.6 if name == "beta" else 0.3) + offset)
    return layer


OPTIONS = [
    ({}, 7),
    ({"num_heads": 3}, 9),
    ({"num_heads": 3, "dot_scale": "dim", "activation": "softsign"}, 9),
    ({"alpha_mode": "scalar", "activation": "hardtanh", "dot_scale": 0.5}, 7),
    ({"alpha_mode": "none", "gamma_mode": "none", "activation": "sigmoid"}, 8),
    ({"beta_mode": "elementwise"}, 7),
    ({"beta_mode": "none", "dot_scale": 0.25}, 7),
    ({"center": True, "bias": True, "eps": 1e-3}, 7),
    ({"num_heads": 2, "center": True, "bias": True, "dynamic_dropout": 0.3}, 8),  # eval mode: no dropout
]
SPATIAL = [(5, 3), (), (4,), (2, 3, 2)]


@pytest.mark.parametrize("spatial", SPATIAL, ids=str)
@pytest.mark.parametrize(("options", "channels"), OPTIONS, ids=lambda v: str(v))
def test_matches_the_per_position_oracle_float64(options, channels, spatial):
    layer = randomized(SeeDNorm2d(channels, **options, dtype=torch.float64)).eval()
    x = 2 * torch.randn(2, channels, *spatial, dtype=torch.float64) + 0.5
    y = layer(x)
    assert y.shape == x.shape and y.dtype == torch.float64
    torch.testing.assert_close(y, oracle(x, layer), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("options", "channels"), OPTIONS[:5] + OPTIONS[7:8], ids=lambda v: str(v))
def test_float32_and_bfloat16_within_tolerance_of_the_oracle(options, channels, memory_format, dtype, tol):
    """impl="auto" (the fused op wherever it covers the options), input in either memory layout."""
    layer = randomized(SeeDNorm2d(channels, **options)).eval()
    x = (2 * torch.randn(2, channels, 5, 3) + 0.5).to(dtype).contiguous(memory_format=memory_format)
    y = layer.to(dtype)(x)
    assert y.dtype == dtype and y.shape == x.shape
    expected = oracle(x, layer.float(), eps=torch.finfo(dtype).eps if layer.eps is None else layer.eps)
    torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize(("options", "channels"), [({}, 7), ({"num_heads": 3}, 9), ({"center": True, "bias": True}, 6),
                                                   ({"beta_mode": "elementwise", "alpha_mode": "scalar"}, 5)],
                         ids=str)
def test_gradcheck_float64(options, channels):
    layer = randomized(SeeDNorm2d(channels, **options, dtype=torch.float64))
    x = torch.randn(2, channels, 3, 2, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_float32_gradients_match_the_float64_oracle(memory_format):
    layer = randomized(SeeDNorm2d(9, num_heads=3))
    x = torch.randn(2, 9, 4, 3).contiguous(memory_format=memory_format).requires_grad_()
    dy = torch.randn(2, 9, 4, 3)
    (layer(x) * dy).sum().backward()
    ref = randomized(SeeDNorm2d(9, num_heads=3, dtype=torch.float64))
    ref.load_state_dict(layer.state_dict())
    x64 = x.detach().double().requires_grad_()
    (oracle_autograd(x64, ref) * dy.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)
    for p, q in zip(layer.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad.double(), q.grad, rtol=1e-4, atol=1e-4)


def oracle_autograd(x, layer):
    """``oracle`` with gradients flowing to x and the layer's parameters."""
    eps = torch.finfo(x.dtype).eps if layer.eps is None else layer.eps
    rows = []
    for n in range(x.shape[0]):
        for pos in itertools.product(*(range(k) for k in x.shape[2:])):
            rows.append(token_oracle(x[(n, slice(None), *pos)], layer.weight, layer.alpha, layer.beta, layer.bias,
                                     num_heads=layer.num_heads, eps=eps, activation=layer.activation,
                                     dot_scale=layer.dot_scale))
    C = x.shape[1]
    return torch.stack(rows).view(x.shape[0], *x.shape[2:], C).movedim(-1, 1)


def test_dynamic_dropout_drops_elements_of_the_dynamic_term_per_position():
    """Training mode: every element's gain is γ (dropped) or σ(s)·α/(1 − p) + γ (kept), about p dropped; the same
    mask, for the same seed, as the channels-last layer on the moved input."""
    p = 0.4
    layer = randomized(SeeDNorm2d(8, num_heads=2, dynamic_dropout=p, dtype=torch.float64)).train()
    x = torch.randn(3, 8, 6, 5, dtype=torch.float64)
    torch.manual_seed(1)
    y = layer(x)
    flat = SeeDNorm(8, num_heads=2, dynamic_dropout=p, dtype=torch.float64).train()
    flat.load_state_dict(layer.state_dict())
    torch.manual_seed(1)
    torch.testing.assert_close(y, flat(x.movedim(1, -1)).movedim(-1, 1), rtol=0, atol=0)
    full = oracle(x, layer)  # no dropout
    x_hat = x / torch.sqrt(x.pow(2).mean(1, keepdim=True) + torch.finfo(torch.float64).eps)
    static = layer.weight.detach().view(1, 8, 1, 1) * x_hat
    kept = static + (full - static) / (1 - p)
    is_dropped = torch.isclose(y, static, rtol=0, atol=1e-12)
    is_kept = torch.isclose(y, kept, rtol=0, atol=1e-12)
    assert bool((is_dropped | is_kept).all())
    assert abs(is_dropped.double().mean().item() - p) < 0.08


def test_channels_last_input_runs_the_fused_op_in_place(monkeypatch):
    """x in torch.channels_last (or channels_last_3d): the kernel reads x's own memory (no copy); contiguous NCHW
    input gets one contiguous copy; the centering form with its bias runs the same kernel in place. The layer's
    default impl="auto", where it picks the C++ kernels."""
    if op.resolve_impl("auto", torch.randn(2, 8)) != "cpp":
        pytest.skip("impl='auto' does not pick the C++ kernels here")
    seen = []
    kernel = cpu.forward

    def spy(rows, *args):
        seen.append((rows.data_ptr(), rows.is_contiguous()))
        return kernel(rows, *args)

    monkeypatch.setattr(cpu, "forward", spy)
    layer = randomized(SeeDNorm2d(8, num_heads=2))
    for shape, fmt in (((2, 8, 5, 3), torch.channels_last), ((2, 8, 3, 4, 2), torch.channels_last_3d)):
        x = torch.randn(shape).contiguous(memory_format=fmt)
        assert x.movedim(1, -1).is_contiguous() and x.movedim(1, -1).data_ptr() == x.data_ptr()
        seen.clear()
        y = layer(x)
        assert seen == [(x.data_ptr(), True)]
        assert y.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(y.double(), oracle(x, layer), rtol=2e-5, atol=2e-5)
    x = torch.randn(2, 5, 8).transpose(1, 2)  # any tensor whose C is innermost: (N, L, C) seen as (N, C, L)
    seen.clear()
    layer(x)
    assert seen == [(x.data_ptr(), True)]
    x = torch.randn(2, 8, 5, 3)  # contiguous NCHW: C is not innermost
    seen.clear()
    layer(x)
    assert len(seen) == 1 and seen[0][0] != x.data_ptr()
    seen.clear()
    x = x.contiguous(memory_format=torch.channels_last)
    centered = randomized(SeeDNorm2d(8, center=True, bias=True))
    y = centered(x)
    assert seen == [(x.data_ptr(), True)]
    torch.testing.assert_close(y.double(), oracle(x, centered), rtol=2e-5, atol=2e-5)


def test_state_dict_moves_between_seednorm_and_seednorm2d():
    flat = randomized(SeeDNorm(12, num_heads=4, center=True, bias=True))
    cf = SeeDNorm2d(12, num_heads=4, center=True, bias=True)
    assert list(cf.state_dict()) == list(flat.state_dict()) == ["alpha", "beta", "weight", "bias"]
    cf.load_state_dict(flat.state_dict())
    x = torch.randn(2, 12, 3, 3)
    torch.testing.assert_close(cf(x), flat(x.movedim(1, -1)).movedim(-1, 1), rtol=0, atol=0)
    assert isinstance(cf, SeeDNorm) and repr(cf).startswith("SeeDNorm2d(12, num_heads=4")


@pytest.mark.parametrize("name", sorted(NORMS))
def test_build_norm_channels_first_gives_every_norm_over_dim_1(name):
    cf = randomized(build_norm(name, 6, channels_first=True))
    flat = build_norm(name, 6)
    flat.load_state_dict(cf.state_dict())
    assert type(cf).__name__ == type(flat).__name__ + "2d" and isinstance(cf, type(flat))
    assert build_norm(name, 6, channels_first=True).__class__ is type(cf)  # one class per norm, made once
    x = torch.randn(2, 6, 4, 3) + 0.3
    torch.testing.assert_close(cf(x), flat(x.movedim(1, -1)).movedim(-1, 1), rtol=0, atol=0)
    if name in ("rmsnorm", "layernorm"):  # and against the formula directly
        xc = x - x.mean(1, keepdim=True) if name == "layernorm" else x
        eps = cf.eps if cf.eps is not None else torch.finfo(x.dtype).eps
        y = cf.weight.view(1, 6, 1, 1) * xc / torch.sqrt(xc.pow(2).mean(1, keepdim=True) + eps)
        y = y + cf.bias.view(1, 6, 1, 1) if name == "layernorm" else y
        torch.testing.assert_close(cf(x), y, rtol=1e-5, atol=1e-5)


def test_build_norm_channels_first_takes_classes_and_partials():
    assert type(build_norm(SeeDNorm, 8, channels_first=True, num_heads=2)) is SeeDNorm2d
    layer = build_norm(functools.partial(SeeDNorm, num_heads=4), 8, channels_first=True)
    assert type(layer) is SeeDNorm2d and layer.num_heads == 4
    assert build_norm("seednorm", 8, channels_first=True).__class__ is SeeDNorm2d
    assert seednorm.channels_first_class(SeeDNorm2d) is SeeDNorm2d
    with pytest.raises(TypeError, match="needs a norm name, a module class or a functools.partial"):
        build_norm(lambda d: SeeDNorm(d), 8, channels_first=True)


def test_ada_seednorm2d_takes_scale_and_shift_of_shape_n_c_1_1():
    layer = randomized(AdaSeeDNorm2d(6, num_heads=2, dtype=torch.float64))
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    scale, shift = torch.randn(2, 6, 1, 1, dtype=torch.float64), torch.randn(2, 6, 1, 1, dtype=torch.float64)
    y = layer(x, scale, shift)
    base = oracle(x, _Ada(layer))
    torch.testing.assert_close(y, base * (1 + scale) + shift, rtol=1e-12, atol=1e-12)
    assert isinstance(layer, AdaSeeDNorm)
    with pytest.raises(ValueError, match=r"does not broadcast to the channels-first input.*\(N, C, 1, 1\)"):
        layer(x, torch.randn(2, 6), shift)


class _Ada:
    """AdaSeeDNorm's attributes as ``oracle`` reads a SeeDNorm's: γ = 1, no bias, no centering."""

    def __init__(self, layer):
        self.weight, self.alpha, self.beta, self.bias = torch.ones_like(layer.alpha), layer.alpha, layer.beta, None
        self.eps, self.num_heads, self.activation = layer.eps, layer.num_heads, layer.activation
        self.dot_scale, self.center, self.beta_mode = layer.dot_scale, False, layer.beta_mode


def test_compile_fullgraph_matches_eager_on_channels_last_input():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), randomized(SeeDNorm2d(8, num_heads=2)), nn.GELU())
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 6, 5).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    compiled(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5)


def test_fx_symbolic_trace_keeps_the_checks_out_of_the_graph():
    model = nn.Sequential(nn.Conv2d(3, 9, 1), randomized(SeeDNorm2d(9, num_heads=3)), nn.Conv2d(9, 4, 1)).eval()
    traced = torch.fx.symbolic_trace(model)
    targets = [str(n.target) for n in traced.graph.nodes if n.op == "call_function"]
    assert sum("to_channels_last" in t for t in targets) == 1 and sum("seednorm_call" in t for t in targets) == 1
    x = torch.randn(2, 3, 5, 3)
    torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)


def test_weight_decay_policy_finds_alpha_and_beta():
    rms = build_norm("rmsnorm", 8, channels_first=True)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), SeeDNorm2d(8), AdaSeeDNorm2d(8), rms)
    assert seednorm.dynamic_parameters(model) == {"1.alpha": "alpha", "1.beta": "beta", "2.alpha": "alpha",
                                                  "2.beta": "beta"}
    groups = {g["name"]: g["params"] for g in seednorm.param_groups(model, 0.05)}
    assert {id(p) for p in groups["seednorm"]} == {id(model[i].get_parameter(n)) for i in (1, 2)
                                                   for n in ("alpha", "beta")}


def test_bad_inputs_name_the_problem_and_the_fix():
    layer = SeeDNorm2d(8)
    with pytest.raises(ValueError, match=r"built for C = 8, got shape \(2, 7, 5\); build it with num_channels=7, or "
                                         r"use SeeDNorm for input with the channels last"):
        layer(torch.randn(2, 7, 5))
    with pytest.raises(ValueError, match=r"SeeDNorm2d takes channels-first input \(N, C, \*spatial\).*rank 1; add "
                                         r"the batch dim"):
        layer(torch.randn(8))
    with pytest.raises(ValueError, match="rank 0"):
        layer(torch.tensor(1.0))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"num_heads=3 does not divide the width 8 .*choose a num_heads that divides"):
        SeeDNorm2d(8, num_heads=3)
    with pytest.raises(ValueError, match=r"LayerNorm2d normalizes over dim 1 .* use LayerNorm for"):
        build_norm("layernorm", 4, channels_first=True)(torch.randn(2, 3, 4))


def test_zero_spatial_dims_normalize_each_row():
    layer = randomized(SeeDNorm2d(6, num_heads=2))
    x = torch.randn(5, 6)
    flat = SeeDNorm(6, num_heads=2)
    flat.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), flat(x), rtol=0, atol=0)


def test_reference_fp32_matches_layer_norm_at_init_in_centering_form():
    layer = SeeDNorm2d(7, center=True, bias=True, eps=1e-6)
    x = torch.randn(2, 7, 5, 3) * 3 + 1
    expected = F.layer_norm(x.movedim(1, -1), (7,), eps=1e-6).movedim(-1, 1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "cpp", "compiled"])
@pytest.mark.parametrize("spatial", [(0, 3), (4, 0)], ids=str)
def test_empty_spatial_dim_in_training_with_dropout_centering_and_bias(impl, spatial):
    """No positions at all: the output keeps the input's shape, and every gradient is zeros of its tensor's shape."""
    layer = randomized(SeeDNorm2d(8, num_heads=2, center=True, bias=True, dynamic_dropout=0.3, impl=impl)).train()
    x = torch.randn(2, 8, *spatial, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
        torch.testing.assert_close(p.grad.double(), torch.zeros(p.shape, dtype=torch.float64), rtol=0, atol=0)
