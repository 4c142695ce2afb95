"""seednorm.seednorm against the float64 reference of docs/spec.md: forward, all four gradients, dtypes, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import seednorm_ref, seednorm_ref_grads

import seednorm

ACTS = ["tanh", "sigmoid", "hardtanh", "softsign"]
# Relative tolerance of a result computed in float32 and returned in each dtype.
RTOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def params(D: int, dtype=torch.float32, scale: float = 0.5):
    """Non-trivial γ, α, β so every term of the formula matters."""
    gamma = 1 + scale * torch.randn(D, dtype=dtype)
    alpha = 1 + scale * torch.randn(D, dtype=dtype)
    beta = scale * torch.randn(D, dtype=dtype) / math.sqrt(D)
    return gamma, alpha, beta


def assert_near(actual, expected, rtol, magnitude: float = 0.0):
    """|actual − expected| ≤ rtol · (max(max|expected|, magnitude) + 1), elementwise, in float64.

    ``magnitude`` is the size of the terms that cancel into ``expected``, where that is larger than the result.
    """
    actual, expected = actual.double(), expected.double()
    bound = rtol * (max(expected.abs().max().item(), magnitude) + 1)
    err = (actual - expected).abs().max().item()
    assert err <= bound, f"max error {err:.3g} > {bound:.3g}"


def run(x, gamma, alpha, beta, **kw):
    """Forward and backward of the implementation with a fixed random upstream gradient."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, gamma, alpha, beta)]
    y = seednorm.seednorm(leaves[0], leaves[1], leaves[2], leaves[3], **kw)
    dy = torch.randn_like(y)
    y.backward(dy)
    return y, dy, {k: t.grad for k, t in zip(["x", "weight", "alpha", "beta"], leaves, strict=True)}


SHAPES = [(1, 1), (1, 16), (5, 123), (3, 7, 256), (2, 8192), (2, 3, 1, 64), (64,)]
SHAPES_HEADS = [(shape, h) for shape in SHAPES for h in (1, 2, 4, 16) if shape[-1] % h == 0]


@pytest.mark.parametrize(("shape", "num_heads"), SHAPES_HEADS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_gradients_match_reference(shape, num_heads, dtype):
    D = shape[-1]
    x = 3 * torch.randn(shape, dtype=dtype)
    gamma, alpha, beta = params(D, dtype)
    eps = 1e-6
    y, dy, grads = run(x, gamma, alpha, beta, num_heads=num_heads, eps=eps)
    assert y.dtype == dtype and y.shape == x.shape
    assert_near(y, seednorm_ref(x, gamma, alpha, beta, num_heads=num_heads, eps=eps), RTOL[dtype])
    expected = seednorm_ref_grads(x, gamma, alpha, beta, dy, num_heads=num_heads, eps=eps)
    for name, g in grads.items():
        assert g.dtype == dtype
        assert_near(g, expected[name], RTOL[dtype] * 10)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dot_scale", [1.0, 0.125, "dim"])
def test_activations_and_dot_scale_match_reference(activation, dot_scale):
    x = torch.randn(6, 5, 48, dtype=torch.float64)
    gamma, alpha, beta = params(48, torch.float64, scale=2.0)
    kw = {"num_heads": 4, "eps": 1e-5, "activation": activation}
    y, dy, grads = run(x, gamma, alpha, beta, dot_scale=dot_scale, **kw)
    k = 4 / 48 if dot_scale == "dim" else dot_scale
    assert_near(y, seednorm_ref(x, gamma, alpha, beta, dot_scale=k, **kw), 1e-12)
    expected = seednorm_ref_grads(x, gamma, alpha, beta, dy, dot_scale=k, **kw)
    for name, g in grads.items():
        assert_near(g, expected[name], 1e-12)


def test_non_contiguous_input():
    base = torch.randn(64, 10)
    x = base.t()  # (10, 64), strided in both dims
    gamma, alpha, beta = params(64)
    y, dy, grads = run(x, gamma, alpha, beta, num_heads=2, eps=1e-6)
    assert_near(y, seednorm_ref(x, gamma, alpha, beta, num_heads=2, eps=1e-6), RTOL[torch.float32])
    assert_near(grads["x"], seednorm_ref_grads(x, gamma, alpha, beta, dy, num_heads=2, eps=1e-6)["x"], 2e-4)


@pytest.mark.parametrize("num_heads", [1, 2])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softsign"])
def test_gradcheck_float64(num_heads, activation):
    x = torch.randn(3, 2, 8, dtype=torch.float64, requires_grad=True)
    gamma, alpha, beta = (t.requires_grad_() for t in params(8, torch.float64, scale=1.0))

    def f(x, g, a, b):
        return seednorm.seednorm(x, g, a, b, num_heads=num_heads, eps=1e-5, activation=activation)

    assert torch.autograd.gradcheck(f, (x, gamma, alpha, beta))
    assert torch.autograd.gradgradcheck(f, (x, gamma, alpha, beta))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_heads", [1, 4])
def test_low_precision_input_matches_float32(dtype, num_heads):
    x = torch.randn(7, 96).to(dtype)
    gamma, alpha, beta = params(96)
    kw = {"num_heads": num_heads, "eps": 1e-6}
    y, _, grads = run(x, gamma, alpha, beta, **kw)
    y32, _, _ = run(x.float(), gamma, alpha, beta, **kw)
    assert y.dtype == dtype and grads["x"].dtype == dtype
    assert_near(y, y32, RTOL[dtype])


def test_low_precision_parameters_are_upcast():
    x = torch.randn(4, 32)
    gamma, alpha, beta = params(32)
    y_bf16 = seednorm.seednorm(x, gamma.bfloat16(), alpha.bfloat16(), beta.bfloat16(), eps=1e-6)
    y_ref = seednorm_ref(x, gamma.bfloat16(), alpha.bfloat16(), beta.bfloat16(), eps=1e-6)
    assert y_bf16.dtype == torch.float32
    assert_near(y_bf16, y_ref, RTOL[torch.float32])


def test_eps_none_uses_the_rmsnorm_default():
    x = 1e-4 * torch.randn(3, 16)  # small enough that ε matters
    gamma, alpha, _ = params(16)
    y = seednorm.seednorm(x, gamma, alpha, torch.zeros(16))
    assert torch.allclose(y, F.rms_norm(x, (16,), gamma, None), rtol=1e-6, atol=0)


def test_center_is_layernorm_at_init():
    x = 5 + torch.randn(4, 3, 40)
    w, b = torch.randn(40), torch.randn(40)
    y = seednorm.seednorm(x, w, torch.ones(40), torch.zeros(40), b, center=True, eps=1e-5)
    torch.testing.assert_close(y, F.layer_norm(x, (40,), w, b, 1e-5), rtol=1e-5, atol=1e-5)


def test_center_matches_reference_on_centered_input():
    x = 5 + torch.randn(4, 24, dtype=torch.float64)
    gamma, alpha, beta = params(24, torch.float64, scale=1.0)
    bias = torch.randn(24, dtype=torch.float64)
    y = seednorm.seednorm(x, gamma, alpha, beta, bias, num_heads=2, center=True, eps=1e-5)
    xc = x - x.mean(-1, keepdim=True)
    assert_near(y, seednorm_ref(xc, gamma, alpha, beta, num_heads=2, eps=1e-5) + bias, 1e-12)


def test_weight_none_means_unit_gain():
    x = torch.randn(3, 12)
    _, alpha, beta = params(12)
    torch.testing.assert_close(
        seednorm.seednorm(x, None, alpha, beta, eps=1e-6), seednorm.seednorm(x, torch.ones(12), alpha, beta, eps=1e-6)
    )


def test_dynamic_dropout_only_in_training():
    x = torch.randn(64, 32)
    gamma, alpha, beta = params(32)
    kw = {"eps": 1e-6, "dynamic_dropout": 0.5}
    evaluated = seednorm.seednorm(x, gamma, alpha, beta, training=False, **kw)
    assert torch.equal(evaluated, seednorm.seednorm(x, gamma, alpha, beta, eps=1e-6))
    trained = seednorm.seednorm(x, gamma, alpha, beta, training=True, **kw)
    # Each element either lost its dynamic term (then y = γ ⊙ x̂) or kept it scaled by 1/(1 − p).
    xhat = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    dropped = torch.isclose(trained, gamma * xhat, rtol=1e-5, atol=1e-6)
    dyn = torch.tanh(x @ beta).unsqueeze(-1) * alpha
    kept = torch.isclose(trained, (2 * dyn + gamma) * xhat, rtol=1e-5, atol=1e-6)
    assert bool((dropped | kept).all())
    assert 0.3 < dropped.float().mean().item() < 0.7


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_dynamic_dropout_mask_is_the_kernels_mask_of_one_draw(p, dtype):
    """The mask is the Philox mask (``seednorm.ops.philox.keep_mask``) of one (seed, offset) draw from the same
    generator state, which it advances by that draw alone; 0 or 1/(1 − p) in the compute dtype."""
    from seednorm.functional import dynamic_dropout_mask
    from seednorm.ops import philox

    torch.manual_seed(7)
    expected = philox.keep_mask(philox.draw("cpu"), (3, 5, 40), p, dtype)
    after_expected = torch.rand(4)
    torch.manual_seed(7)
    x = torch.empty(3, 5, 40, dtype=dtype)
    mask = dynamic_dropout_mask(x, p)
    assert torch.equal(mask, expected) and mask.dtype == dtype
    assert torch.equal(torch.rand(4), after_expected)
    scale = torch.tensor(0.0 if p == 1 else 1 / (1 - p), dtype=dtype)
    assert bool(((mask == 0) | (mask == scale)).all())
    assert dynamic_dropout_mask(x, 0.0) is None
    assert dynamic_dropout_mask(x.to(torch.bfloat16), p).dtype == torch.float32  # the compute dtype


def test_nan_and_inf_propagate_like_rmsnorm():
    """A non-finite element poisons its own row, as in RMSNorm; other rows are untouched; nothing is masked."""
    x = torch.randn(3, 8)
    x[0, 2] = float("nan")
    x[1, 5] = float("inf")
    gamma, alpha, beta = params(8)
    r = F.rms_norm(x, (8,), gamma, 1e-6)
    for b in (torch.zeros(8), beta):
        y = seednorm.seednorm(x, gamma, alpha, b, eps=1e-6)
        assert y[0].isnan().all() and r[0].isnan().all()  # NaN: the whole row, in both
        assert y[1].isnan().any() and r[1].isnan().any()  # Inf: non-finite output, in both
        torch.testing.assert_close(y[2], seednorm.seednorm(x[2], gamma, alpha, b, eps=1e-6))


# ---------------------------------------------------------------------------------------------------------
# Property-based: random shapes, heads, activations, dtypes and magnitudes agree with the reference.


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.integers(1, 4), min_size=0, max_size=2),
    head_width=st.integers(1, 40),
    num_heads=st.sampled_from([1, 2, 3, 4, 8]),
    activation=st.sampled_from(ACTS),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]),
    log_magnitude=st.floats(-6, 15),
    seed=st.integers(0, 2**16),
)
def test_property_agrees_with_reference(rows, head_width, num_heads, activation, dtype, log_magnitude, seed):
    if dtype == torch.float16:
        log_magnitude = min(log_magnitude, 2.0)  # fp16 overflows at 65504: x itself must be representable
    if dtype == torch.bfloat16:
        log_magnitude = min(log_magnitude, 15.0)
    gen = torch.Generator().manual_seed(seed)
    D = head_width * num_heads
    x = (torch.randn(*rows, D, generator=gen, dtype=torch.float64) * 10**log_magnitude).to(dtype)
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32  # gradients come back in this dtype
    gamma, alpha = (1 + 0.5 * torch.randn(D, generator=gen, dtype=pdtype) for _ in range(2))
    beta = torch.randn(D, generator=gen, dtype=pdtype) * 10 ** (-log_magnitude) / math.sqrt(D)
    if not torch.isfinite(F.rms_norm(x.float(), (D,), None, None)).all():
        return  # outside RMSNorm's own finite range
    leaves = [t.clone().requires_grad_() for t in (x, gamma, alpha, beta)]
    kw = {"num_heads": num_heads, "activation": activation, "eps": torch.finfo(dtype).eps}
    y = seednorm.seednorm(*leaves, **kw)
    assert y.dtype == dtype
    assert_near(y, seednorm_ref(x, gamma, alpha, beta, **kw), RTOL[dtype] * 2)
    if dtype in (torch.float32, torch.float64) and activation != "hardtanh":
        dy = torch.randn(y.shape, generator=gen, dtype=dtype)
        y.backward(dy)
        expected = seednorm_ref_grads(x, gamma, alpha, beta, dy, **kw)
        rms = torch.sqrt(x.double().pow(2).mean(-1) + kw["eps"]).min().item()
        # ∂L/∂x is a difference of terms of size |g|·|dy|/RMS(x); ∂L/∂β is proportional to x.
        terms = {"x": dy.abs().max().item() * (gamma.abs() + alpha.abs()).max().item() / rms}
        for leaf, name in zip(leaves, ["x", "weight", "alpha", "beta"], strict=True):
            scale = 10**log_magnitude if name == "beta" else 1.0
            assert_near(leaf.grad / scale, expected[name] / scale, RTOL[dtype] * 50, terms.get(name, 0.0))


# ---------------------------------------------------------------------------------------------------------
# Bad input: clear errors that name the problem.


def _ones(D):
    return torch.ones(D), torch.ones(D), torch.zeros(D)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: seednorm.seednorm(torch.randn(2, 7), *_ones(8)), ValueError, "last dimension must be 8"),
        (lambda: seednorm.seednorm(torch.tensor(1.0), *_ones(1)), ValueError, "last dimension"),
        (lambda: seednorm.seednorm(torch.ones(2, 8, dtype=torch.int64), *_ones(8)), TypeError, "floating"),
        (lambda: seednorm.seednorm(torch.ones(2, 8, dtype=torch.complex64), *_ones(8)), TypeError, "floating"),
        (lambda: seednorm.seednorm(torch.randn(2, 9), *_ones(9), num_heads=2), ValueError, "does not divide"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), *_ones(8), num_heads=0), ValueError, "num_heads"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), *_ones(8), eps=0.0), ValueError, "eps"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), *_ones(8), eps=-1e-6), ValueError, "eps"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), *_ones(8), activation="gelu"), ValueError, "activation"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), *_ones(8), dynamic_dropout=-0.1), ValueError, "dropout"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), *_ones(8), dot_scale="sqrt"), ValueError, "dot_scale"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), torch.ones(7), *_ones(8)[1:]), ValueError, "weight"),
        (lambda: seednorm.seednorm([1.0], *_ones(1)), TypeError, "torch.Tensor"),
        (lambda: seednorm.rms_norm(torch.randn(2, 7), torch.ones(8)), ValueError, "last dimension must be 8"),
        (lambda: seednorm.layer_norm(torch.ones(2, 8, dtype=torch.int32), None, None), TypeError, "floating"),
        (lambda: seednorm.dyt(torch.randn(2, 7), torch.ones(1), torch.ones(8), None), ValueError, "last dim"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), *_ones(8), eps=True), ValueError, "eps"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), *_ones(8), eps=1e-50), ValueError, "normal torch.float32"),
        (lambda: seednorm.seednorm(torch.randn(2, 8, dtype=torch.bfloat16), *_ones(8), eps=1e39), ValueError,
         "normal torch.float32"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), *_ones(8), num_heads=2.0), ValueError, "num_heads"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), *_ones(8), dynamic_dropout=True), ValueError, "dropout"),
        (lambda: seednorm.seednorm(torch.randn(2, 8), *_ones(8), dot_scale=True), ValueError, "dot_scale"),
        (lambda: seednorm.seednorm(torch.randn(2, 0), *_ones(0), dot_scale="dim"), ValueError, "width D"),
    ],
)
def test_bad_input_raises_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("impl", ["reference", "cpp", "compiled"])
@pytest.mark.parametrize("place", ["weight", "alpha", "beta"])
def test_parameter_on_another_device_is_refused_before_any_kernel(impl, place):
    """A meta parameter (data_ptr 0) was read as absent by the C++ kernel: plain RMSNorm output and no error."""
    x, given = torch.randn(3, 8), dict(zip(["weight", "alpha", "beta"], params(8), strict=True))
    given[place] = given[place].to("meta")
    with pytest.raises(ValueError, match=f"{place} is on meta but the input is on cpu"):
        seednorm.seednorm(x, given["weight"], given["alpha"], given["beta"], eps=1e-5, impl=impl)


def test_cpp_kernel_refuses_parameters_it_cannot_read():
    """The same guard where the C++ kernel takes raw pointers, for callers of the op itself."""
    x, (w, a, b) = torch.randn(3, 8), params(8)
    with pytest.raises(ValueError, match="needs CPU parameters, got alpha on meta"):
        seednorm.ops.seednorm_fused(x, w, a.to("meta"), b, num_heads=1, eps=1e-5, activation="tanh", dot_scale=1.0,
                                    impl="cpp")


@pytest.mark.parametrize("impl", ["reference", "cpp", "compiled"])
def test_mixed_parameter_dtypes_lose_no_precision(impl):
    """γ float32 with α, β bfloat16: every value computed as given (γ = 1.001 is not a bfloat16 number)."""
    x = 3 * torch.randn(5, 48)
    gamma = torch.full((48,), 1.001)
    alpha, beta = (p.to(torch.bfloat16) for p in params(48)[1:])
    y = seednorm.seednorm(x, gamma, alpha, beta, eps=1e-5, impl=impl)
    assert_near(y, seednorm_ref(x, gamma, alpha, beta, eps=1e-5), RTOL[torch.float32])


def test_numpy_scalars_are_accepted():
    np = pytest.importorskip("numpy")
    x, (w, a, b) = torch.randn(3, 8), params(8)
    y = seednorm.seednorm(x, w, a, b, num_heads=np.int64(2), eps=np.float32(1e-5), dot_scale=np.float64(0.5),
                          dynamic_dropout=np.float32(0.0))
    expected = seednorm.seednorm(x, w, a, b, num_heads=2, eps=float(np.float32(1e-5)), dot_scale=0.5)
    assert torch.equal(y, expected)


def test_functional_form_takes_the_fused_path_by_default(monkeypatch):
    """The functional form defaults to impl="auto", as the module does; the reference is one argument away."""
    calls = []
    fused = seednorm.ops.seednorm_fused
    monkeypatch.setattr(seednorm.ops, "seednorm_fused", lambda *a, **k: calls.append(k["impl"]) or fused(*a, **k))
    monkeypatch.delenv("SEEDNORM_IMPL", raising=False)
    x, d = torch.randn(3, 5, 24), 24
    w, a, b = torch.ones(d), torch.ones(d), torch.randn(d) * 0.1
    y = seednorm.seednorm(x, w, a, b)
    assert calls == [seednorm.ops.resolve_impl("auto", x)] and calls[0] != "reference"
    ref = seednorm.seednorm(x, w, a, b, impl="reference")
    assert len(calls) == 1
    torch.testing.assert_close(y, ref)


def test_remembered_option_checks_still_refuse_a_bool_that_equals_an_accepted_number():
    """The option checks are remembered per set of options; True == 1 and hash alike, and must not share an entry."""
    x, d = torch.randn(2, 8), 8
    w, a, b = torch.ones(d), torch.ones(d), torch.zeros(d)
    seednorm.seednorm(x, w, a, b, num_heads=1, eps=1.0, dot_scale=1.0)
    for bad in ({"num_heads": True}, {"eps": True}, {"dot_scale": True}):
        with pytest.raises(ValueError):
            seednorm.seednorm(x, w, a, b, **{"num_heads": 1, "eps": 1.0, "dot_scale": 1.0, **bad})
    with pytest.raises(ValueError):  # an unhashable option is checked, not remembered
        seednorm.seednorm(x, w, a, b, num_heads=[1])
