"""The fused op in a training step, on the GPU when there is one (``benchmarks/gpu.sh`` runs this file there):
``torch.compile`` of a SeeDNorm network against eager, and a bf16 autocast training step against a float64
reference.

Without CUDA the bf16 step runs on CPU with the implementation ``impl="auto"`` picks there (C++), and
``SEEDNORM_IMPL=triton TRITON_INTERPRET=1`` runs it through the Triton interpreter (the GPU script's dry run); the
compile check is left to the GPU (``test_compile.py`` covers torch.compile on CPU, and a CPU compile takes ~20 s).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import seednorm

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
D, HEADS = 64, 4


def _net(dtype: torch.dtype = torch.float32, impl: str = "auto") -> nn.Sequential:
    """Linear → SeeDNorm (4 heads, β away from 0 so α and β matter) → Linear, seeded."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(D, D), seednorm.SeeDNorm(D, num_heads=HEADS, impl=impl), nn.Linear(D, 8))
    with torch.no_grad():
        net[1].beta.copy_(torch.linspace(-0.2, 0.2, D))
        net[1].alpha.copy_(torch.linspace(0.5, 1.5, D))
    return net.to(DEVICE, dtype)


def _grads(net: nn.Module, x: torch.Tensor, target: torch.Tensor, autocast: bool = False) -> list[torch.Tensor]:
    net.zero_grad(set_to_none=True)
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast):
        out = net(x)
    loss = torch.nn.functional.mse_loss(out.to(target.dtype), target)
    loss.backward()
    return [loss.detach(), *(p.grad for p in net.parameters())]


def _batch(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(32, D, generator=g).to(DEVICE, dtype), torch.randn(32, 8, generator=g).to(DEVICE, dtype))


@pytest.mark.skipif(DEVICE == "cpu", reason="GPU only: tests/ops/test_compile.py covers torch.compile on CPU")
def test_compiled_network_matches_eager():
    """torch.compile over the custom op: the same loss and gradients as eager (float32, to rounding)."""
    x, target = _batch(torch.float32)
    eager = _grads(_net(), x, target)
    compiled_net = _net()
    compiled_net.compile()
    compiled = _grads(compiled_net, x, target)
    for e, c in zip(eager, compiled, strict=True):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-5)


def test_bf16_training_step_tracks_float64():
    """Loss and every gradient of a bf16-autocast step stay within bf16 rounding of the float64 reference, and three
    AdamW steps lower the loss on the batch."""
    x, target = _batch(torch.float32)
    ref = _grads(_net(torch.float64, impl="reference"), x.double(), target.double())
    net = _net()
    low = _grads(net, x, target, autocast=True)
    for r, lo in zip(ref, low, strict=True):
        err = (lo.double() - r).abs().max().item() / (r.abs().max().item() + 1e-12)
        assert err < 3e-2, f"relative error {err:.2e} of a bf16 step against float64"
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        losses.append(_grads(net, x, target, autocast=True)[0].item())
        opt.step()
    assert losses[-1] < losses[0]
