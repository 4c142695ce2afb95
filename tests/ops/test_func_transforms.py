"""torch.func transforms (grad, vmap, jacrev, jvp) on a SeeDNorm module whose eager calls take the fused path.

The fused kernels are opaque to functorch; under a transform ``seednorm.seednorm`` runs the reference math, which
composes with all of them. Every result is compared with the same transform of the float64 module.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, jacrev, jvp, vmap

import seednorm
from seednorm import ops


def _pair() -> tuple[seednorm.SeeDNorm, seednorm.SeeDNorm]:
    """A float32 module (fused path) and its float64 copy (reference), with non-trivial parameters."""
    norm = seednorm.SeeDNorm(12, num_heads=2)
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(1 + 0.5 * torch.randn_like(p))
    ref = seednorm.SeeDNorm(12, num_heads=2, dtype=torch.float64)
    ref.load_state_dict(norm.state_dict())
    return norm, ref


TRANSFORMS = {
    "grad": lambda m, x: grad(lambda p: functional_call(m, p, (x,)).square().sum())(dict(m.named_parameters())),
    "vmap": lambda m, x: vmap(m)(x),
    "jacrev": lambda m, x: jacrev(m)(x[0]),
    "jvp": lambda m, x: jvp(m, (x,), (torch.ones_like(x),)),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_func_transforms_match_the_float64_reference(transform):
    norm, ref = _pair()
    assert ops.resolve_impl("auto", torch.zeros(1, 12)) != "reference"  # the module's eager calls are fused
    x = 2 * torch.randn(5, 12)
    got, want = TRANSFORMS[transform](norm, x), TRANSFORMS[transform](ref, x.double())
    for g, w in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want), strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-5)


def test_the_fused_op_itself_refuses_func_transforms_clearly():
    x, p = torch.randn(3, 12), torch.ones(12)

    def fused(x: torch.Tensor) -> torch.Tensor:
        return ops.seednorm_fused(x, p, p, p, num_heads=1, eps=1e-5, activation="tanh", dot_scale=1.0, impl="cpp")

    with pytest.raises(RuntimeError, match="does not support torch.func transforms"):
        vmap(fused)(x)
