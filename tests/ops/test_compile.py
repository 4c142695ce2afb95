"""torch.compile(fullgraph=True) traces the fused op without graph breaks and gives the eager result."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

import seednorm


class Block(nn.Module):
    """Linear → SeeDNorm (impl="auto") → Linear, and a fused residual add into a second SeeDNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(24, 64)
        self.norm = seednorm.SeeDNorm(64, num_heads=2)
        self.norm2 = seednorm.SeeDNorm(64)
        self.down = nn.Linear(64, 8)
        with torch.no_grad():
            self.norm.beta.normal_(0, 0.3)
            self.norm2.beta.normal_(0, 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        n = self.norm(h)
        n2, h2 = seednorm.seednorm(n, self.norm2.weight, self.norm2.alpha, self.norm2.beta, residual=h, impl="auto")
        return self.down(n2 + h2)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_fullgraph_compile_has_no_graph_break_and_matches_eager():
    torch.manual_seed(0)
    model = Block()
    x = torch.randn(3, 5, 24)
    assert torch._dynamo.explain(model)(x).graph_break_count == 0

    y = model(x)
    y.square().sum().backward()
    eager = _grads(model)
    model.zero_grad()

    # aot_eager traces the op's fake functions and autograd formula exactly as inductor would, minus codegen.
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    yc = compiled(x)
    yc.square().sum().backward()
    torch.testing.assert_close(yc, y, rtol=1e-5, atol=1e-6)
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, eager[name], rtol=1e-5, atol=1e-6, msg=name)


def test_compiled_path_compiles_every_configuration_past_the_recompile_limit():
    """Dynamo counts recompilations per function; past the limit it would silently run the formulas eagerly. Each
    configuration of the compiled path compiles its own copy, so none of them reaches the limit (here set to 1)."""
    x, p = torch.randn(3, 12), torch.randn(12)
    configs = [("tanh", 1), ("sigmoid", 2), ("softsign", 3)]
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        for activation, heads in configs:
            y = seednorm.seednorm(x, p, p, p, num_heads=heads, activation=activation, eps=1e-5, impl="compiled")
            ref = seednorm.seednorm(x, p, p, p, num_heads=heads, activation=activation, eps=1e-5)
            torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


def test_compiling_a_model_with_seednorm_warns_nothing_about_our_code(monkeypatch, caplog):
    """Dynamo warns once per process about each cache it cannot trace; no such warning (or log record) may name
    seednorm's code. Its once-per-process memory is emptied, so an earlier compile cannot hide the warning."""
    import torch._dynamo.utils as dynamo_utils

    monkeypatch.setattr(dynamo_utils, "warn_once_cache", set())
    torch._dynamo.reset()
    package = str(Path(seednorm.__file__).parent)
    model = nn.Sequential(nn.Linear(8, 16), seednorm.SeeDNorm(16, num_heads=2, dynamic_dropout=0.1),
                          seednorm.SeeDNorm(16, impl="reference"), seednorm.SeeDNorm2d(16, center=True, bias=True))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        torch.compile(model, backend="eager")(torch.randn(3, 8)).sum().backward()
    ours = [f"{w.filename}: {w.message}" for w in caught if package in str(w.message) or package in w.filename
            or "seednorm" in str(w.message)]
    ours += [r.getMessage() for r in caplog.records if package in r.getMessage()]
    assert ours == []


def test_auto_choice_is_marked_constant_as_torch_compiler_marks_it():
    """op.py marks ``_auto_cpu`` constant without importing torch._dynamo at ``import seednorm``; the mark must be
    exactly what ``torch.compiler.assume_constant_result`` sets, in this torch."""
    from seednorm.ops import op

    def f() -> str:
        return "cpp"

    torch.compiler.assume_constant_result(f)
    assert f.__dict__ == {"_dynamo_marked_constant": True}
    assert op._auto_cpu._dynamo_marked_constant is True


def test_auto_choice_first_made_inside_a_compiled_trace_has_no_graph_break(monkeypatch):
    """A process whose first SeeDNorm call is compiled decides impl="auto" inside the trace, as a constant."""
    from seednorm.ops import op

    monkeypatch.setattr(op, "_cpu_choice", None)
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", op.FallbackWarning)  # a machine without a compiler may warn
        assert torch._dynamo.explain(seednorm.SeeDNorm(16))(torch.randn(3, 16)).graph_break_count == 0


def test_dynamic_shapes_trace_the_fused_op():
    """With symbolic batch and length dims the op's fake function gives its output shapes: the graphs hold the
    fused ops; results and gradients are eager's."""
    from torch._functorch.aot_autograd import aot_module_simplified, make_boxed_func

    torch._dynamo.reset()
    graphs: list[str] = []
    symbolic: list[bool] = []

    def backend(gm, inputs):
        symbolic.append(any(isinstance(i, torch.SymInt) for i in inputs))  # the batch and length dims

        def keep(graph, _inputs):
            graphs.append(graph.code)
            return make_boxed_func(graph)

        return aot_module_simplified(gm, inputs, fw_compiler=keep, bw_compiler=keep)

    model = Block()
    x = torch.randn(3, 5, 24)
    torch._dynamo.mark_dynamic(x, 0)
    torch._dynamo.mark_dynamic(x, 1)
    y = torch.compile(model, backend=backend, fullgraph=True)(x)
    y.square().sum().backward()
    compiled = _grads(model)
    model.zero_grad()
    expected = model(x)
    expected.square().sum().backward()
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
    for name, g in _grads(model).items():
        torch.testing.assert_close(compiled[name], g, rtol=1e-5, atol=1e-6, msg=name)
    forward, backward = graphs
    assert symbolic == [True]
    assert forward.count("torch.ops.seednorm.forward.default") == 2
    assert backward.count("torch.ops.seednorm.backward.default") == 2


INDUCTOR_UNDER_CI = """
import torch, seednorm
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(12, 20), seednorm.SeeDNorm(20, num_heads=2))
x = torch.randn(3, 5, 12)
compiled = torch.compile(model, fullgraph=True)(x)
compiled.square().sum().backward()
grads = [p.grad.clone() for p in model.parameters()]
model.zero_grad()
eager = model(x)
eager.square().sum().backward()
torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
for p, g in zip(model.parameters(), grads):
    torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)
print("ok")
"""


def test_inductor_compiles_the_op_where_the_ci_variable_is_set(tmp_path):
    """TorchInductor fails to compile an op with no lowering of its own whose decomposition sits in torch's global
    table when ``CI`` is set (as on GitHub Actions): the package must keep its decomposition out of that table. A
    fresh process, so that no earlier compile has already given the op its fallback lowering."""
    env = {**os.environ, "CI": "true", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", INDUCTOR_UNDER_CI], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
