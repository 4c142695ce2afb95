"""The fused custom op (C++ and compiled kernels, in process) against the float64 reference; registration, dispatch."""

from __future__ import annotations

import math

import pytest
import torch
from cases import CASES, RTOL, Case, check, make_inputs
from reference import seednorm_ref, seednorm_ref_grads

import seednorm
from seednorm import ops


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("impl", ["reference", "cpp", "compiled"])
def test_matches_reference(case, impl):
    assert check(case, impl) == {}


def test_wide_rows():
    """65536 channels (the C++ kernels keep no per-width limit; the compiled formulas have none to keep)."""
    assert check(Case((3, 65536), num_heads=2, residual=True), "cpp") == {}


@pytest.mark.parametrize("shape", [(1030, 64), (257, 1024), (520, 8192)])
def test_cpp_gradients_are_bitwise_reproducible_for_any_thread_count(shape):
    """The C++ backward sums its per-chunk partials in a fixed order: the same bits on every call, 1 or 2 threads."""
    inp = make_inputs(Case(shape, num_heads=2))
    x, w, a, b = (inp[k] for k in ("x", "weight", "alpha", "beta"))

    def grads() -> list[torch.Tensor]:
        leaves = [t.detach().clone().requires_grad_() for t in (x, w, a, b)]
        seednorm.seednorm(*leaves, num_heads=2, eps=1e-5, impl="cpp").backward(inp["dy"])
        return [leaf.grad for leaf in leaves]

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = grads()
        torch.set_num_threads(2)
        for _ in range(5):
            for got, want in zip(grads(), serial, strict=True):
                assert torch.equal(got, want)
    finally:
        torch.set_num_threads(threads)


def test_compiled_float64_matches_reference_tightly():
    assert check(Case((4, 40), num_heads=2, dtype=torch.float64, param_dtype=torch.float64), "compiled") == {}


@pytest.mark.parametrize("impl", ["cpp", "compiled"])
def test_opcheck(impl):
    """Schema, fake (meta) functions and autograd registration, as torch.library checks them."""
    inp = make_inputs(Case((4, 32)))
    x, w, a, b = (inp[k].requires_grad_() for k in ("x", "weight", "alpha", "beta"))
    for bias, keep, center in ((None, None, False), (inp["bias"].requires_grad_(), torch.rand(4, 32), True)):
        torch.library.opcheck(
            torch.ops.seednorm.forward.default,
            (x, w, a, b, bias, inp["residual"], keep, 2, 1e-5, "tanh", 1.0, center, impl),
            test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
        )


@pytest.mark.parametrize("impl", ["cpp", "compiled"])
def test_eager_path_equals_the_registered_op(impl):
    """Eager calls skip the custom op's dispatch (ops.op._EagerFused); outputs and all gradients are identical."""
    inp = make_inputs(Case((3, 5, 32), residual=True))
    keep = 2.0 * (torch.rand(3, 5, 32, generator=torch.Generator().manual_seed(0)) < 0.5)
    tensors = (inp["x"], inp["weight"], inp["alpha"], inp["beta"], inp["bias"], inp["residual"])
    results = []
    for fn in (ops.op._EagerFused.apply, torch.ops.seednorm.forward.default):
        leaves = [a.detach().clone().requires_grad_() for a in tensors]
        out = fn(*leaves, keep, 2, 1e-5, "tanh", 1.0, True, impl)
        y, summed = out if len(out) == 2 else (out[0], out[-1])  # the eager path returns y and x + residual only
        (y.square().sum() + summed.sum()).backward()
        results.append([y, summed, *(leaf.grad for leaf in leaves)])
    for eager, registered in zip(*results, strict=True):
        torch.testing.assert_close(eager, registered, rtol=0, atol=0)


@pytest.mark.parametrize("impl", ["cpp", "compiled"])
def test_double_backward_is_an_error_not_a_silent_zero(impl):
    """The fused paths have no second derivative (README); differentiating twice must fail loudly."""
    x = torch.randn(4, 16, requires_grad=True)
    module = seednorm.SeeDNorm(16)
    y = seednorm.seednorm(x, module.weight, module.alpha, module.beta, impl=impl)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gx.sum().backward()


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace_records_the_op_not_the_eager_path():
    """The eager path calls the kernels directly; a TorchScript trace must record the op instead."""
    module = seednorm.SeeDNorm(16)
    traced = torch.jit.trace(module, torch.randn(3, 16))
    assert "seednorm::forward" in str(traced.graph)
    x = 3 * torch.randn(5, 16)
    torch.testing.assert_close(traced(x), module(x), rtol=0, atol=0)


def test_meta_tensors_give_shapes_without_running():
    x = torch.empty(3, 5, 64, device="meta", dtype=torch.bfloat16)
    p = torch.empty(64, device="meta")
    y, summed = ops.seednorm_fused(x, p, p, p, x, num_heads=4, eps=1e-6, activation="tanh", dot_scale=1.0,
                                   impl="compiled")
    assert y.shape == summed.shape == x.shape and y.dtype == torch.bfloat16 and y.device.type == "meta"


@pytest.mark.parametrize("impl", ["cpp", "compiled"])
def test_empty_input(impl):
    inp = make_inputs(Case((0, 16)))
    x = inp["x"].requires_grad_()
    y = seednorm.seednorm(x, inp["weight"], inp["alpha"], inp["beta"], eps=1e-5, impl=impl)
    y.sum().backward()
    assert y.shape == (0, 16) and x.grad.shape == (0, 16)


def test_auto_resolution():
    cpu32, cpu64 = torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.float64)
    if ops.cpu.unavailable() is None:
        assert ops.resolve_impl("auto", cpu32) == "cpp"
    else:  # the fallback order: tests/faults/test_kernel_cache.py
        fallback = "compiled" if ops.cpu.inductor_unavailable() is None else "reference"
        assert ops.resolve_impl("auto", cpu32) == fallback
    assert ops.resolve_impl("auto", cpu64) == "reference"  # exact and twice differentiable
    assert ops.resolve_impl("triton", cpu32) == "triton"
    assert ops.resolve_impl("compiled", cpu32, fusable=False) == "reference"
    assert ops.resolve_impl("auto", torch.zeros(2, 4, device="meta")) == "reference"


@pytest.mark.parametrize(
    "kw", [{"center": True}, {"bias": torch.zeros(8)}, {"dynamic_dropout": 0.5, "training": True}], ids=str
)
def test_vision_and_centering_options_run_the_fused_op(monkeypatch, kw):
    """Dynamic dropout in training, centering and bias no longer fall back to the reference."""
    calls = []
    fused = ops.seednorm_fused
    monkeypatch.setattr(ops, "seednorm_fused", lambda *a, **k: calls.append(k["impl"]) or fused(*a, **k))
    p = torch.randn(8)
    seednorm.seednorm(torch.randn(3, 8), p, p, p, eps=1e-5, impl="cpp", **kw)
    assert calls == ["cpp"]


# A fixed mask, chosen by hand: every pattern of kept and dropped channels across rows and heads.
def _fixed_mask(shape: tuple[int, ...], p: float) -> torch.Tensor:
    index = torch.arange(math.prod(shape)).reshape(shape)
    return ((index * 7919) % 10 >= 10 * p).float() / (1 - p)


# The compiled path compiles each configuration (seconds each): float32 here, its other dtypes in CASES.
@pytest.mark.parametrize(("impl", "dtype"), [("cpp", torch.float32), ("cpp", torch.bfloat16), ("cpp", torch.float16),
                                             ("compiled", torch.float32)], ids=str)
@pytest.mark.parametrize("center", [False, True], ids=["rms", "center"])
def test_fixed_mask_matches_reference(impl, dtype, center):
    """The op with a given mask, centering and bias against the float64 closed forms, every gradient."""
    case = Case((3, 5, 60), num_heads=3, dtype=dtype, residual=True)
    inp = make_inputs(case)
    keep = _fixed_mask(case.shape, 0.3)
    names = ("x", "weight", "alpha", "beta", "bias", "residual")
    leaves = {k: inp[k].detach().clone().requires_grad_() for k in names}
    kw = {"num_heads": 3, "eps": 1e-5, "activation": "tanh", "dot_scale": 0.5}
    y, summed = ops.seednorm_fused(leaves["x"], leaves["weight"], leaves["alpha"], leaves["beta"], leaves["residual"],
                                   impl=impl, bias=leaves["bias"], keep=keep, center=center, **kw)
    (y.double() * inp["dy"].double()).sum().backward()
    x = ops.residual_sum(inp["x"], inp["residual"])
    ref_kw = {**kw, "keep": keep, "center": center, "bias": inp["bias"]}
    ref = seednorm_ref_grads(x, inp["weight"], inp["alpha"], inp["beta"], inp["dy"], **ref_kw)
    ref["y"], ref["residual"] = seednorm_ref(x, inp["weight"], inp["alpha"], inp["beta"], **ref_kw), ref["x"]
    rtol = RTOL[dtype]
    got = {"y": y, **{k: leaves[k].grad for k in names}}
    for name, value in got.items():
        tol = rtol if name == "y" else 10 * rtol
        torch.testing.assert_close(value.double(), ref[name], rtol=0, atol=tol * (ref[name].abs().max().item() + 1),
                                   msg=lambda m, name=name: f"{name}: {m}")
    assert summed.dtype == dtype and torch.equal(summed, x)


@pytest.mark.parametrize("impl", ["cpp", "compiled"])
def test_dropout_same_seed_same_result_as_the_reference(impl):
    """A seed gives the fused path the mask it gives the reference (the same draws from torch's generator): results
    agree to float32 rounding, the generator advances alike, and a different seed gives a different mask."""
    layer = seednorm.SeeDNorm(48, num_heads=4, dynamic_dropout=0.3, dot_scale="dim").train()
    with torch.no_grad():
        layer.beta.normal_(0, 0.5)
    x = 3 * torch.randn(6, 48)

    def run(impl: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        layer.impl = impl
        torch.manual_seed(seed)
        y = layer(x)
        return y, torch.rand(1)  # what the generator gives next

    (y_ref, after_ref), (y_fused, after_fused) = run("reference", 3), run(impl, 3)
    torch.testing.assert_close(y_fused, y_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(after_ref, after_fused)
    y_again, _ = run(impl, 3)
    assert torch.equal(y_again, y_fused)
    y_other, _ = run(impl, 4)
    assert not torch.allclose(y_other, y_fused)


@pytest.mark.parametrize("impl", ["cpp", "compiled"])
def test_eval_mode_has_no_dropout(impl):
    """Out of training the layer is deterministic and equals the layer without dropout; no random number is drawn."""
    layer = seednorm.SeeDNorm(32, num_heads=2, dynamic_dropout=0.5, impl=impl).eval()
    plain = seednorm.SeeDNorm(32, num_heads=2, impl=impl).eval()
    with torch.no_grad():
        layer.beta.normal_(0, 0.5)
        plain.beta.copy_(layer.beta)
    x = torch.randn(5, 32)
    torch.manual_seed(0)
    y = layer(x)
    drawn = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), drawn)
    torch.testing.assert_close(y, plain(x), rtol=0, atol=0)


def test_module_uses_auto():
    layer = seednorm.SeeDNorm(16, num_heads=2)
    x = torch.randn(3, 16)
    auto = ops.resolve_impl("auto", x)
    expected = seednorm.seednorm(x, layer.weight, layer.alpha, layer.beta, num_heads=2, impl=auto)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


def test_bad_arguments():
    x, p = torch.randn(2, 8), torch.randn(8)
    with pytest.raises(ValueError, match="impl must be one of"):
        seednorm.seednorm(x, p, p, p, impl="cuda")
    with pytest.raises(ValueError, match="residual must match"):
        seednorm.seednorm(x, p, p, p, residual=torch.randn(2, 4), impl="compiled")
    with pytest.raises(ValueError, match="residual must match"):
        seednorm.seednorm(x, p, p, p, residual=x.double(), impl="reference")
    with pytest.raises(TypeError, match="residual must be a torch.Tensor"):
        seednorm.seednorm(x, p, p, p, residual=1.0, impl="compiled")
    with pytest.raises(TypeError, match="supports inputs of dtype"):
        seednorm.seednorm(x.double(), p, p, p, impl="cpp")
    with pytest.raises(ValueError, match="runs on CPU tensors"):
        seednorm.seednorm(x.to("meta"), *[p.to("meta")] * 3, impl="cpp")
    if not ops.op.TRITON_INTERPRET:
        with pytest.raises(ValueError, match="needs a CUDA tensor"):
            seednorm.seednorm(x, p, p, p, impl="triton")
