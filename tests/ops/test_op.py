"""The fused custom op (C++ and compiled kernels, in process) against the float64 reference; registration, dispatch."""

from __future__ import annotations

import pytest
import torch
from cases import CASES, Case, check, make_inputs

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
    torch.library.opcheck(
        torch.ops.seednorm.forward.default,
        (x, w, a, b, inp["residual"], 2, 1e-5, "tanh", 1.0, impl),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


@pytest.mark.parametrize("impl", ["cpp", "compiled"])
def test_eager_path_equals_the_registered_op(impl):
    """Eager calls skip the custom op's dispatch (ops.op._EagerFused); outputs and all gradients are identical."""
    inp = make_inputs(Case((3, 5, 32), residual=True))
    args = (inp["x"], inp["weight"], inp["alpha"], inp["beta"], inp["residual"], 2, 1e-5, "tanh", 1.0, impl)
    results = []
    for fn in (ops.op._EagerFused.apply, torch.ops.seednorm.forward.default):
        leaves = [a.detach().clone().requires_grad_() for a in args[:5]]
        y, _, _, summed = fn(*leaves, *args[5:])
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
def test_uncovered_options_fall_back_to_reference(kw):
    x = torch.randn(3, 8)
    p = torch.randn(8)
    torch.manual_seed(1)
    fused = seednorm.seednorm(x, p, p, p, eps=1e-5, impl="compiled", **kw)
    torch.manual_seed(1)
    assert torch.equal(fused, seednorm.seednorm(x, p, p, p, eps=1e-5, impl="reference", **kw))


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
