"""Exported programs: ``torch.export`` → ``torch.export.save`` → load and run in a fresh process, with the fused op
(the loading process imports seednorm) or decomposed to plain ATen (it needs nothing); ONNX and AOTInductor from
the exported program."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

import seednorm
from seednorm import AdaSeeDNorm, SeeDNorm, SeeDNorm2d

D, C = 16, 8


class AllForms(nn.Module):
    """Every layer form on one path: SeeDNorm with heads and options (σ, dot scale, centering, bias, a shared α, an
    element-wise β), SeeDNorm2d, AdaSeeDNorm and the functional form with ``residual=`` (returning both outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(D, D)
        self.heads = SeeDNorm(D, num_heads=4, activation="softsign", dot_scale="dim")
        self.centered = SeeDNorm(D, num_heads=2, center=True, bias=True)
        self.shared_alpha = SeeDNorm(D, alpha_mode="scalar", activation="hardtanh")  # the fused op, α expanded
        self.elementwise = SeeDNorm(D, beta_mode="elementwise")  # the reference math (no fused form)
        self.image = SeeDNorm2d(C, num_heads=2)
        self.ada = AdaSeeDNorm(D, num_heads=2)
        self.res = SeeDNorm(D)
        with torch.no_grad():  # parameters that look trained (β = 0 would make the dynamic term a constant)
            for p in self.parameters():
                if p.dim() == 1:
                    p.add_(torch.randn_like(p) * 0.5)

    def forward(self, x, image, scale, shift):
        h = self.elementwise(self.shared_alpha(self.centered(self.heads(self.up(x)))))
        h = self.ada(h, scale, shift)
        r = self.res
        y, summed = seednorm.seednorm(h, r.weight, r.alpha, r.beta, residual=x, impl="auto")
        return y, summed, self.image(image)


def inputs(batch: int) -> tuple[torch.Tensor, ...]:
    return torch.randn(batch, 5, D), torch.randn(batch, C, 3, 4), torch.randn(batch, 1, D), torch.randn(batch, 1, D)


def export(model: nn.Module) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch")
    shapes = ({0: batch}, {0: batch}, {0: batch}, {0: batch})
    return torch.export.export(model, inputs(2), dynamic_shapes=shapes)


def holds_the_op(ep: torch.export.ExportedProgram) -> bool:
    return any(node.target is torch.ops.seednorm.forward.default for node in ep.graph.nodes)


LOAD = """
import sys

import torch

kind, path, args_file, out_file = sys.argv[1:5]
if "--import-seednorm" in sys.argv:
    import seednorm
else:  # as if seednorm were not installed

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "seednorm":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NotInstalled())
args = torch.load(args_file)
if kind == "program":
    run = torch.export.load(path).module()
else:
    run = torch._inductor.aoti_load_package(path)
with torch.no_grad():
    torch.save(run(*args), out_file)
"""


KEEP_ENV = ("PATH", "PYTHONPATH", "HOME", "TMPDIR", "TORCHINDUCTOR_CACHE_DIR")  # nothing of this process else


def run_fresh(kind: str, path, tmp_path, args: tuple, *, import_seednorm: bool):
    """Load ``path`` (an exported program, or an AOTInductor package) in a fresh Python process, with or without
    ``import seednorm`` (then seednorm cannot be imported at all), and run it on ``args``: (its outputs or None,
    the process's stderr)."""
    torch.save(args, tmp_path / "args.pt")
    out = tmp_path / "out.pt"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k in KEEP_ENV}
    command = [sys.executable, "-c", LOAD, kind, str(path), str(tmp_path / "args.pt"), str(out)]
    done = subprocess.run(command + ["--import-seednorm"] * import_seednorm, env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    return (torch.load(out) if done.returncode == 0 else None), done.stderr


def check(got, expected, stderr: str = "", rtol: float = 1e-5, atol: float = 1e-5) -> None:
    assert got is not None, stderr[-3000:]  # what the fresh process said when it failed
    torch.testing.assert_close(tuple(got), tuple(expected), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AllForms().eval()


@pytest.fixture(scope="module")
def program(model):
    ep = export(model)
    count = sum(node.target is torch.ops.seednorm.forward.default for node in ep.graph.nodes)
    assert count == 6  # the fused kernels, as torch.compile traces them (not for the element-wise β: no fused form)
    return ep


def test_saved_program_runs_in_a_fresh_process_that_imports_seednorm(model, program, tmp_path):
    torch.export.save(program, tmp_path / "model.pt2")
    args = inputs(3)
    got, stderr = run_fresh("program", tmp_path / "model.pt2", tmp_path, args, import_seednorm=True)
    with torch.no_grad():
        check(got, model(*args), stderr)  # the kernels of the export (the C++ ones on this CPU): float32 rounding


def test_loading_without_seednorm_names_the_op_and_the_import(program, tmp_path):
    torch.export.save(program, tmp_path / "model.pt2")
    got, stderr = run_fresh("program", tmp_path / "model.pt2", tmp_path, inputs(1), import_seednorm=False)
    assert got is None
    assert "We failed to resolve torch.ops.seednorm.forward.default to an operator" in stderr
    assert "Please import the custom op to register it before deserializing" in stderr


def test_decomposed_program_needs_no_seednorm(model, program, tmp_path):
    plain = program.run_decompositions(seednorm.ops.decompositions())
    assert not holds_the_op(plain)
    assert {node.target.namespace for node in plain.graph.nodes if node.op == "call_function"
            and isinstance(node.target, torch._ops.OpOverload)} == {"aten"}
    torch.export.save(plain, tmp_path / "model.pt2")
    args = inputs(4)
    got, stderr = run_fresh("program", tmp_path / "model.pt2", tmp_path, args, import_seednorm=False)
    with torch.no_grad():
        check(got, model(*args), stderr)


def test_decomposition_equals_the_op_output_by_output():
    """All five outputs of seednorm::forward (y, 1/RMS, σ(s), mean, x + residual), their shapes and dtypes, in
    float16 and with a dropout mask too, given or generated in the kernels from a (seed, offset)."""
    cases = ((torch.float32, True, False), (torch.float16, False, True), (torch.bfloat16, True, "generated"))
    for dtype, center, dropout in cases:
        x, res = torch.randn(3, 4, D, dtype=dtype), torch.randn(3, 4, D, dtype=dtype)
        w, a, b, bias = (torch.randn(D) for _ in range(4))
        keep = (torch.rand(3, 4, D) > 0.25) / 0.75 if dropout is True else None  # the dynamic-dropout mask
        args = (x, w, a, b, bias, res, keep, 2, 1e-6, "tanh", 0.5, center, "cpp")
        if dropout == "generated":
            args += (torch.tensor([123456789, 42]), None, 0.25)
        expected = torch.ops.seednorm.forward(*args)
        got = seednorm.ops.decomposition.forward(*args)
        for e, g in zip(expected, got, strict=True):
            assert g.dtype == e.dtype and g.shape == e.shape
            torch.testing.assert_close(g, e, rtol=1e-3 if dtype == torch.float16 else 1e-5, atol=1e-5)


def test_onnx_export_of_the_decomposed_program(model, program, tmp_path):
    """``torch.onnx.export`` has no translation for the op: it names it. The decomposed program exports to plain ONNX,
    and onnxruntime agrees."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception, match="No ONNX function found for <OpOverload.op='seednorm.forward'"):
            torch.onnx.export(program, (), str(tmp_path / "op.onnx"), dynamo=True, verbose=False)
        plain = program.run_decompositions(seednorm.ops.decompositions())
        torch.onnx.export(plain, (), str(tmp_path / "m.onnx"), dynamo=True, verbose=False)
    assert {node.domain for node in onnx.load(str(tmp_path / "m.onnx")).graph.node} <= {"", "ai.onnx"}
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    args = inputs(3)
    got = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), args, strict=True)})
    with torch.no_grad():
        check([torch.from_numpy(g) for g in got], model(*args))


def aoti_package(ep: torch.export.ExportedProgram, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._inductor.aoti_compile_and_package(ep, package_path=str(path))


@pytest.mark.slow
def test_aoti_package_carries_the_op_where_seednorm_is_imported(model, program, tmp_path):
    """AOTInductor calls the Python-registered op back through the dispatcher: the package runs in a Python process
    that imports seednorm, and nowhere else."""
    path = aoti_package(program, tmp_path / "model.pt2")
    args = inputs(3)
    got, stderr = run_fresh("aoti", path, tmp_path, args, import_seednorm=True)
    with torch.no_grad():
        check(got, model(*args), stderr)
    got, stderr = run_fresh("aoti", path, tmp_path, args, import_seednorm=False)
    assert got is None
    assert "Could not find schema for seednorm::forward" in stderr


@pytest.mark.slow
def test_aoti_package_of_the_decomposed_program_needs_no_seednorm(model, program, tmp_path):
    path = aoti_package(program.run_decompositions(seednorm.ops.decompositions()), tmp_path / "model.pt2")
    args = inputs(3)
    got, stderr = run_fresh("aoti", path, tmp_path, args, import_seednorm=False)
    with torch.no_grad():
        check(got, model(*args), stderr)
