"""The Derf baseline (Dynamic erf, arXiv 2512.10938) against the float64 reference: forward, the gradients of x, α,
s, γ, b, finite differences, dtypes, odd shapes, the module and bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from reference import derf_ref, derf_ref_grads

import seednorm
from seednorm import Derf, build_norm

RTOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}
NAMES = ["x", "alpha", "shift", "weight", "bias"]


def params(D: int, dtype=torch.float64, bias: bool = True):
    """Non-trivial α, s, γ, b so every term of the formula matters."""
    alpha = torch.tensor([0.7], dtype=dtype)
    shift = torch.tensor([-0.3], dtype=dtype)
    weight = 1 + 0.5 * torch.randn(D, dtype=dtype)
    return alpha, shift, weight, (0.5 * torch.randn(D, dtype=dtype) if bias else None)


def assert_near(actual, expected, rtol):
    actual, expected = actual.double(), expected.double()
    bound = rtol * (expected.abs().max().item() + 1)
    err = (actual - expected).abs().max().item()
    assert err <= bound, f"max error {err:.3g} > {bound:.3g}"


def run(x, alpha, shift, weight, bias):
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (x, alpha, shift, weight, bias)]
    y = seednorm.derf(*leaves)
    dy = torch.randn_like(y)
    y.backward(dy)
    return y, dy, {name: t.grad for name, t in zip(NAMES, leaves, strict=True) if t is not None}


@pytest.mark.parametrize("shape", [(1, 1), (5, 123), (3, 7, 256), (2, 3, 1, 64), (64,)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_gradients_match_reference(shape, dtype, bias):
    x = 2 * torch.randn(shape, dtype=dtype)
    p = params(shape[-1], dtype, bias)
    y, dy, grads = run(x, *p)
    assert y.dtype == dtype and y.shape == x.shape
    assert_near(y, derf_ref(x, *p), RTOL[dtype])
    expected = derf_ref_grads(x, *p, dy)
    assert set(grads) == set(expected)
    for name, g in grads.items():
        assert g.dtype == dtype and g.shape == expected[name].shape
        assert_near(g, expected[name], RTOL[dtype] * 100)  # α, s sum over every element


def test_gradcheck_float64():
    x = torch.randn(3, 2, 8, dtype=torch.float64, requires_grad=True)
    p = tuple(t.requires_grad_() for t in params(8))
    assert torch.autograd.gradcheck(seednorm.derf, (x, *p))
    assert torch.autograd.gradgradcheck(seednorm.derf, (x, *p))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_input_matches_float32(dtype):
    x = torch.randn(7, 96).to(dtype)
    p = params(96, torch.float32)
    y, _, grads = run(x, *p)
    y32, _, _ = run(x.float(), *p)
    assert y.dtype == dtype and grads["x"].dtype == dtype
    assert_near(y, y32, RTOL[dtype])


def test_module_parameters_init_and_formula():
    norm = Derf(20)
    assert [n for n, _ in norm.named_parameters()] == ["alpha", "shift", "weight", "bias"]
    assert norm.alpha.shape == norm.shift.shape == (1,)
    assert norm.alpha.item() == 0.5 and norm.shift.item() == 0.0  # the released code's initial values
    x = torch.randn(3, 20)
    torch.testing.assert_close(norm(x), torch.erf(0.5 * x))
    assert Derf(20, bias=False).bias is None
    custom = Derf(4, alpha_init=2.0, shift_init=0.25, dtype=torch.float64)
    with torch.no_grad():
        for p in custom.parameters():
            p.uniform_()
    custom.reset_parameters()
    assert custom.alpha.item() == 2.0 and custom.shift.item() == 0.25 and custom.weight.dtype == torch.float64
    assert torch.equal(custom.weight, torch.ones(4, dtype=torch.float64))
    assert "alpha_init=2.0, shift_init=0.25" in repr(custom)


def test_module_trains_round_trips_and_is_built_by_name():
    norm = build_norm("derf", 16, alpha_init=0.8)
    assert type(norm) is Derf and norm.alpha.item() == pytest.approx(0.8)
    assert "derf" in seednorm.NORMS
    x = torch.randn(8, 16)
    (norm(x) * torch.randn(8, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in norm.parameters())
    fresh = Derf(16)
    fresh.load_state_dict(copy.deepcopy(norm.state_dict()))
    assert torch.equal(fresh(x), norm(x))
    assert norm.to(torch.bfloat16)(x.bfloat16()).dtype == torch.bfloat16


def test_compile_fullgraph_matches_eager():
    norm = Derf(32)
    compiled = torch.compile(norm, fullgraph=True, backend="inductor")
    x = torch.randn(4, 32)
    torch.testing.assert_close(compiled(x), norm(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: seednorm.derf(torch.randn(2, 7), *params(8, torch.float32)), ValueError, "last dimension must be 8"),
        (lambda: seednorm.derf(torch.ones(2, 8, dtype=torch.int64), *params(8, torch.float32)), TypeError,
         "floating"),
        (lambda: seednorm.derf(torch.randn(2, 8), torch.ones(2), torch.zeros(1), torch.ones(8), None), ValueError,
         r"alpha must have shape \(1,\)"),
        (lambda: seednorm.derf(torch.randn(2, 8), torch.ones(1), torch.zeros(8), torch.ones(8), None), ValueError,
         r"shift must have shape \(1,\)"),
        (lambda: seednorm.derf(torch.randn(2, 8), torch.ones(1), torch.zeros(1), torch.ones(8), torch.zeros(7)),
         ValueError, r"bias must have shape \(8,\)"),
        (lambda: seednorm.derf(torch.randn(2, 8), 0.5, torch.zeros(1), torch.ones(8), None), TypeError,
         "alpha must be a torch.Tensor"),
        (lambda: seednorm.derf(torch.randn(2, 8), torch.ones(1).to("meta"), torch.zeros(1), torch.ones(8), None),
         ValueError, "alpha is on meta"),
        (lambda: Derf(8, alpha_init=float("nan")), ValueError, "alpha_init must be a finite number"),
        (lambda: Derf(8, shift_init="0"), ValueError, "shift_init must be a finite number"),
        (lambda: Derf((2, 8)), ValueError, "last dimension"),
        (lambda: Derf(8)(torch.randn(2, 9)), ValueError, "last dimension must be 8"),
    ],
)
def test_bad_input_raises_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
