"""OLMo-core's dropless MoE on CPU (``seednorm_experiments.lm.olmo_moe_cpu``): the three token copies against
OLMo-core's own Triton kernels (run by Triton's interpreter), and the expert layer they serve against a float64
loop written from its definition, forward and backward."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("olmo_core")
pytest.importorskip("triton")

import seednorm_experiments  # noqa: E402
from seednorm_experiments.lm import olmo_moe_cpu  # noqa: E402

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    experiments = Path(seednorm_experiments.__file__).resolve().parents[1]
    path = os.pathsep.join([str(experiments), str(experiments.parent / "src")])
    proc = subprocess.run([sys.executable, str(HERE / "olmo_moe_interpret_check.py")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cpu_copies_equal_olmo_cores_triton_kernels(interpreted):
    assert len(interpreted) == 40  # 4 shapes × 2 dtypes × (gather, scatter) × (plain, weighted) + 8 wgrad
    assert {k: v for k, v in interpreted.items() if v != "ok"} == {}


def _experts(num_experts: int = 5, d_model: int = 13, hidden: int = 7, top_k: int = 2):
    """OLMo-core's dropless expert layer (``ParallelDroplessMLP`` over ``DroplessMoEMLP``), random weights."""
    from olmo_core.nn.moe import MoEConfig, MoERouterConfig, MoEType

    cfg = MoEConfig(name=MoEType.dropless, num_experts=num_experts, hidden_size=hidden,
                    router=MoERouterConfig(top_k=top_k))
    torch.manual_seed(0)
    moe = cfg.build(d_model=d_model, n_layers=1, init_device="cpu")
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return moe


def _reference(x, weights, choices, w1, w2, w3):
    """y[t] = Σ_j weights[t, j] · (silu(x[t] W1_e) ⊙ x[t] W3_e) W2_e with e = choices[t, j]; w1, w3 (E, H, D) as
    OLMo-core stores them (rows per expert), w2 (E, H, D)."""
    rows = []
    for t in range(x.shape[0]):
        out = torch.zeros_like(x[t])
        for j in range(choices.shape[1]):
            e = int(choices[t, j])
            out = out + weights[t, j] * ((F.silu(w1[e] @ x[t]) * (w3[e] @ x[t])) @ w2[e])
        rows.append(out)
    return torch.stack(rows)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_expert_layer_forward_and_backward_match_a_float64_loop(top_k):
    olmo_moe_cpu.install()
    moe = _experts(top_k=top_k)
    E, H, D = 5, 7, 13
    x = torch.randn(2, 9, D)
    with torch.no_grad():
        weights, choices, per_expert, _ = moe.router(x)
    assert per_expert.min() >= 0 and int(per_expert.sum()) == 2 * 9 * top_k
    x.requires_grad_(True)
    weights = weights.clone().requires_grad_(True)
    y = moe.experts(x, weights, choices, per_expert)
    mlp = moe.experts.mlp
    params = (mlp.w1, mlp.w2, mlp.w3)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, weights, *params), g)

    x64 = x.detach().double().requires_grad_(True)
    w64 = weights.detach().double().requires_grad_(True)
    p64 = [p.detach().double().requires_grad_(True) for p in params]
    ref = _reference(x64.view(-1, D), w64.view(-1, top_k), choices.view(-1, top_k),
                     *(p.view(E, H, D) for p in p64)).view(2, 9, D)
    ref_grads = torch.autograd.grad(ref, (x64, w64, *p64), g.double())
    torch.testing.assert_close(y, ref.float(), rtol=1e-5, atol=1e-5)
    for name, got, want in zip(("x", "weights", "w1", "w2", "w3"), grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-4, msg=name)


def test_whole_moe_layer_trains_a_step_on_cpu():
    """The router's auxiliary losses reach the router's gradient through OLMo-core's attached loss."""
    olmo_moe_cpu.install()
    moe = _experts()
    moe.train()
    y = moe(torch.randn(2, 9, 13))
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in moe.parameters())
    assert moe.router.weight.grad.abs().sum() > 0


def test_install_dispatches_by_device_and_leaves_olmo_cores_module_alone():
    import olmo_core.kernels.moe as triton_kernels
    import olmo_core.ops.moe as ops

    olmo_moe_cpu.install()
    olmo_moe_cpu.install()  # once
    assert olmo_moe_cpu.installed() and ops.kernels._triton is triton_kernels
    assert triton_kernels.gather is not olmo_moe_cpu.gather
    assert ops.kernels.binned_gather is triton_kernels.binned_gather  # what the dropless MoE does not use: as is

    fake = types.SimpleNamespace(gather=lambda *a: "triton", scatter=None, scatter_wgrad=None)
    dispatch = olmo_moe_cpu._dispatching(fake)
    assert dispatch.gather(torch.empty(2, 3, device="meta"), None, None, None, None, 1) == "triton"
    x, idx = torch.randn(2, 3), torch.tensor([1, 0], dtype=torch.int32)
    torch.testing.assert_close(dispatch.gather(x, idx, None, None, None, 1), x[[1, 0]])
    without_triton = olmo_moe_cpu._dispatching(None)  # olmo_core.ops.moe.kernels is None where triton is missing
    torch.testing.assert_close(without_triton.scatter(x, idx, None, None, None, 1), x[[1, 0]])
    with pytest.raises(RuntimeError, match="install triton"):
        without_triton.gather(torch.empty(2, 3, device="meta"), idx, None, None, None, 1)


def test_copies_refuse_shapes_that_do_not_fit():
    with pytest.raises(ValueError, match="do not fit 3 tokens × top_k 2"):
        olmo_moe_cpu.gather(torch.randn(3, 4), torch.arange(5), None, None, None, 2)
