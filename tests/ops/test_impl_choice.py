"""Choosing the implementation: ``SeeDNorm(impl=)`` and ``$SEEDNORM_IMPL`` (what impl="auto" stands for)."""

from __future__ import annotations

import pytest
import torch

import seednorm
from seednorm import ops


@pytest.fixture
def ran(monkeypatch) -> list[str]:
    """The impl of every call that reaches the fused op (the reference path never does)."""
    calls: list[str] = []
    fused = ops.seednorm_fused

    def spy(*args, **kw):
        calls.append(kw["impl"])
        return fused(*args, **kw)

    monkeypatch.setattr(ops, "seednorm_fused", spy)
    return calls


@pytest.mark.parametrize("impl", ["reference", "compiled"])
def test_env_chooses_what_auto_runs(monkeypatch, ran, impl):
    monkeypatch.setenv("SEEDNORM_IMPL", impl)
    x = torch.randn(3, 5, 12)
    assert ops.resolve_impl("auto", x) == impl
    layer = seednorm.SeeDNorm(12)
    ref = seednorm.SeeDNorm(12, impl="reference")
    torch.testing.assert_close(layer(x), ref(x), rtol=2e-5, atol=1e-6)
    assert ran == ([] if impl == "reference" else ["compiled"])


def test_explicit_impl_beats_env(monkeypatch, ran):
    monkeypatch.setenv("SEEDNORM_IMPL", "compiled")
    x = torch.randn(4, 10)
    assert ops.resolve_impl("reference", x) == "reference"
    seednorm.SeeDNorm(10, impl="reference")(x)
    assert ran == []


def test_bad_env_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("SEEDNORM_IMPL", "fastest")
    with pytest.raises(ValueError, match=r"\$SEEDNORM_IMPL must be one of .*'fastest'"):
        seednorm.SeeDNorm(8)(torch.randn(2, 8))


def test_module_impl_argument(ran):
    x = torch.randn(2, 3, 16)
    layer = seednorm.SeeDNorm(16, num_heads=2, impl="compiled")
    assert "impl='compiled'" in repr(layer)
    torch.testing.assert_close(layer(x), seednorm.SeeDNorm(16, num_heads=2, impl="reference")(x), rtol=2e-5,
                               atol=1e-6)
    assert ran == ["compiled"]
    with pytest.raises(ValueError, match=r"impl must be one of .*'fast'"):
        seednorm.SeeDNorm(16, impl="fast")


def test_an_eager_call_does_not_ask_the_onnx_exporter(monkeypatch):
    """Outside a tracer no ONNX export can run: the exporter's flag (about a microsecond per call, on every layer's
    every call) is read only under torch.compile/export or torch.jit.trace (tests/integrations/test_onnx.py)."""
    import torch.onnx

    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: pytest.fail("asked outside a tracer"))
    x = torch.randn(3, 8, requires_grad=True)
    assert ops.resolve_impl("auto", x) != "reference"
    seednorm.SeeDNorm(8)(x).sum().backward()
