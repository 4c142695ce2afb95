"""ONNX export: ``torch.onnx.export`` records the reference math as plain ONNX operators, and onnxruntime agrees."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

ort = pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime (requirements-dev.txt)")
onnx = pytest.importorskip("onnx", reason="ONNX export tests need onnx (requirements-dev.txt)")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript (requirements-dev.txt)")

import seednorm  # noqa: E402
from seednorm import AdaSeeDNorm, SeeDNorm, SeeDNorm2d  # noqa: E402

D = 16


def randomize(model: nn.Module) -> nn.Module:
    """Gains, α, β and biases that look trained (β = 0 at init would make the dynamic term a constant), eval mode."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.5)
    return model.eval()


def export(model: nn.Module, args: tuple, path, dynamic_shapes=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation and progress notes
        torch.onnx.export(model, args, str(path), dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False)
    graph = onnx.load(str(path))
    domains = {node.domain for node in graph.graph.node} | {f.domain for f in graph.functions}
    assert domains <= {"", "ai.onnx"}, f"custom ONNX domains in the graph: {domains}"
    return graph


def run(path, *args: torch.Tensor) -> list:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})


def check(actual, expected: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    torch.testing.assert_close(torch.from_numpy(actual), expected, rtol=rtol, atol=atol)


def batch_seq():
    return ({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")},)


LAYERS = {
    "heads2_tanh": {"num_heads": 2},
    "sigmoid": {"activation": "sigmoid"},
    "hardtanh": {"activation": "hardtanh", "num_heads": 4},
    "softsign": {"activation": "softsign"},
    "dot_scale_dim": {"num_heads": 4, "dot_scale": "dim"},
    "dot_scale_number": {"dot_scale": 0.25},
    "center_bias": {"center": True, "bias": True},
    "scalar_alpha": {"alpha_mode": "scalar"},
    "elementwise_beta": {"beta_mode": "elementwise"},
    "impl_cpp": {"impl": "cpp", "num_heads": 2},  # an explicit fused backend still exports the reference
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_seednorm_layer_exports_and_matches(name, tmp_path):
    model = randomize(nn.Sequential(nn.Linear(D, D), SeeDNorm(D, **LAYERS[name])))
    x = torch.randn(2, 5, D)
    export(model, (x,), tmp_path / "m.onnx", batch_seq())
    x2 = torch.randn(3, 7, D)
    with torch.no_grad():
        check(run(tmp_path / "m.onnx", x2)[0], model(x2))


def test_dynamic_batch_and_sequence(tmp_path):
    model = randomize(SeeDNorm(D, num_heads=2))
    export(model, (torch.randn(2, 5, D),), tmp_path / "m.onnx", batch_seq())
    for shape in ((1, 1, D), (4, 33, D), (2, 5, D)):
        x = torch.randn(shape)
        with torch.no_grad():
            check(run(tmp_path / "m.onnx", x)[0], model(x))


def test_seednorm2d(tmp_path):
    """Dynamic batch, height and width (the norm runs over channels at every position)."""
    model = randomize(SeeDNorm2d(8, num_heads=2, center=True, bias=True))
    x = torch.randn(2, 8, 5, 6)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("h"), 3: torch.export.Dim("w")}
    export(model, (x,), tmp_path / "m.onnx", (dims,))
    for shape in ((3, 8, 5, 6), (1, 8, 9, 2), (2, 8, 4, 4)):
        x2 = torch.randn(shape)
        with torch.no_grad():
            check(run(tmp_path / "m.onnx", x2)[0], model(x2))


def test_ada_seednorm(tmp_path):
    model = randomize(AdaSeeDNorm(D, num_heads=2))
    x, scale, shift = torch.randn(2, 5, D), torch.randn(2, 1, D), torch.randn(2, 1, D)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    export(model, (x, scale, shift), tmp_path / "m.onnx", ({0: batch, 1: seq}, {0: batch}, {0: batch}))
    args = torch.randn(3, 9, D), torch.randn(3, 1, D), torch.randn(3, 1, D)
    with torch.no_grad():
        check(run(tmp_path / "m.onnx", *args)[0], model(*args))


class ResidualNorm(nn.Module):
    """The functional form with ``residual=``: returns (y, x + residual)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = randomize(SeeDNorm(D, num_heads=2))

    def forward(self, x, residual):
        n = self.norm
        return seednorm.seednorm(x, n.weight, n.alpha, n.beta, num_heads=2, residual=residual)


def test_functional_with_residual(tmp_path):
    model = ResidualNorm().eval()
    x, r = torch.randn(2, 5, D), torch.randn(2, 5, D)
    export(model, (x, r), tmp_path / "m.onnx", batch_seq() * 2)
    x2, r2 = torch.randn(3, 4, D), torch.randn(3, 4, D)
    y, summed = run(tmp_path / "m.onnx", x2, r2)
    with torch.no_grad():
        y_ref, summed_ref = model(x2, r2)
    check(y, y_ref)
    check(summed, summed_ref)


def test_float16(tmp_path):
    model = randomize(SeeDNorm(D, num_heads=2)).half()
    x = torch.randn(2, 5, D).half()
    export(model, (x,), tmp_path / "m.onnx", batch_seq())
    x2 = torch.randn(3, 7, D).half()
    try:
        out = run(tmp_path / "m.onnx", x2)[0]
    except Exception as e:  # an operator without a float16 kernel in this onnxruntime build
        pytest.skip(f"onnxruntime's CPU provider cannot run the float16 graph: {e}")
    with torch.no_grad():
        expected = model(x2)
    assert out.dtype == expected.numpy().dtype
    check(out, expected, rtol=1e-3, atol=1e-3)  # one float16 rounding of the same float32 math


def test_torchscript_exporter(tmp_path):
    model = randomize(SeeDNorm(D, num_heads=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(model, (torch.randn(2, 5, D),), str(tmp_path / "m.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch", 1: "seq"}})
    x2 = torch.randn(3, 7, D)
    with torch.no_grad():
        check(run(tmp_path / "m.onnx", x2)[0], model(x2))


def test_eager_runs_the_fused_op_again_after_export(tmp_path, monkeypatch):
    """The export flag is read per call: outside an export the layer takes its kernels as before."""
    from seednorm.ops import op

    model = randomize(SeeDNorm(D, impl="cpp"))
    export(model, (torch.randn(2, 5, D),), tmp_path / "m.onnx")
    assert not op.onnx_exporting()
    assert op.resolve_impl("cpp", torch.randn(2, D)) == "cpp"


class Logits(nn.Module):
    """A transformers causal LM as a function of its token ids (no cache): what the exporter traces."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, ids):
        return self.lm(input_ids=ids, use_cache=False).logits


def converted_lm(name: str) -> nn.Module:
    pytest.importorskip("transformers")
    from test_transformers import tiny_model

    model = tiny_model(name)
    model.config.use_cache = False
    seednorm.convert_to_seednorm(model)
    return Logits(randomize(model)).eval()


def test_converted_llama(tmp_path):
    wrapped = converted_lm("llama")
    ids = torch.randint(3, 96, (2, 12))
    export(wrapped, (ids,), tmp_path / "m.onnx", batch_seq())
    ids2 = torch.randint(3, 96, (3, 9))
    with torch.no_grad():
        # a whole model: within 1e-5 of the largest logit (onnxruntime sums the matmuls in another order)
        expected = wrapped(ids2)
        check(run(tmp_path / "m.onnx", ids2)[0], expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_converted_gpt2_with_centering(tmp_path):
    """GPT-2's LayerNorms become the centering form (center=True, bias=True); the graph has the mean subtracted."""
    wrapped = converted_lm("gpt2")
    norms = [m for m in wrapped.modules() if isinstance(m, SeeDNorm)]
    assert len(norms) == 5 and all(m.center and m.bias is not None for m in norms)
    export(wrapped, (torch.randint(3, 96, (2, 12)),), tmp_path / "m.onnx", batch_seq())
    for shape in ((3, 9), (1, 1), (4, 40)):
        ids = torch.randint(3, 96, shape)
        with torch.no_grad():
            check(run(tmp_path / "m.onnx", ids)[0], wrapped(ids))  # float32 logits within 1e-5


def test_converted_convnext(tmp_path):
    """timm's ConvNeXt, every LayerNorm2d converted to SeeDNorm2d(center=True, bias=True); a dynamic batch (dynamic
    height and width: ``test_seednorm2d``, as they cost the exporter twice the time on a whole network)."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("convnext_atto", num_classes=10, depths=(1, 1, 1, 1))
    seednorm.convert_to_seednorm(model, num_heads=4)
    norms = [m for m in model.modules() if isinstance(m, SeeDNorm)]
    assert len(norms) == 9 and all(isinstance(m, SeeDNorm2d) and m.center for m in norms)
    model = randomize(model)
    export(model, (torch.randn(2, 3, 64, 64),), tmp_path / "m.onnx", ({0: torch.export.Dim("batch")},))
    for batch in (1, 3):
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            expected = model(x)
        # a whole network: within 1e-5 of the largest logit (convolutions sum in another order in onnxruntime)
        check(run(tmp_path / "m.onnx", x)[0], expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
