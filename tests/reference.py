"""A float64 reference of SeeDNorm written straight from docs/spec.md: forward (§1, §3) and the exact gradients (§5).

Shared by every test that checks an implementation (the functional form, the kernels, converted models).
"""

from __future__ import annotations

import torch
from torch import Tensor

SIGMA = {
    "tanh": (torch.tanh, lambda s, t: 1 - t * t),
    "sigmoid": (torch.sigmoid, lambda s, t: t * (1 - t)),
    "hardtanh": (lambda s: s.clamp(-1, 1), lambda s, t: ((s > -1) & (s < 1)).to(s.dtype)),
    "softsign": (lambda s: s / (1 + s.abs()), lambda s, t: 1 / (1 + s.abs()) ** 2),
}


def _parts(x, gamma, alpha, beta, num_heads, eps, activation, dot_scale):
    x, gamma, alpha, beta = (t.detach().double() for t in (x, gamma, alpha, beta))
    D = x.shape[-1]
    H, d = num_heads, D // num_heads
    r = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # RMS over the full D
    xh = x.reshape(*x.shape[:-1], H, d)
    s = dot_scale * (xh * beta.reshape(H, d)).sum(-1)  # one scalar per token and head, from the raw x
    sigma, dsigma = SIGMA[activation]
    t = sigma(s)
    tp = torch.where(t.isnan(), t, dsigma(s, t))  # σ'(s) is NaN wherever σ(s) is: NaN is never masked
    t_full = t.unsqueeze(-1).expand(*t.shape, d).reshape(x.shape)
    g = t_full * alpha + gamma
    return x, gamma, alpha, beta, r, s, t_full, tp, g, H, d


def seednorm_ref(x: Tensor, gamma: Tensor, alpha: Tensor, beta: Tensor, *, num_heads: int = 1, eps: float,
                 activation: str = "tanh", dot_scale: float = 1.0) -> Tensor:
    """y = [σ(s)·α + γ] ⊙ x / RMS(x) in float64."""
    x, *_, r, _s, _t, _tp, g, _H, _d = _parts(x, gamma, alpha, beta, num_heads, eps, activation, dot_scale)
    return g * x / r


def seednorm_ref_grads(x: Tensor, gamma: Tensor, alpha: Tensor, beta: Tensor, dy: Tensor, *, num_heads: int = 1,
                       eps: float, activation: str = "tanh", dot_scale: float = 1.0) -> dict[str, Tensor]:
    """∂L/∂x, ∂L/∂γ, ∂L/∂α, ∂L/∂β for L = ⟨dy, y⟩, by the closed forms of spec §5 (s scaled by dot_scale)."""
    x, gamma, alpha, beta, r, s, t_full, tp, g, H, d = _parts(x, gamma, alpha, beta, num_heads, eps, activation,
                                                                dot_scale)
    dy = dy.detach().double()
    xhat = x / r
    D = x.shape[-1]

    def over_tokens(t: Tensor) -> Tensor:
        return t.reshape(-1, D).sum(0)

    c = (dy * alpha * xhat).reshape(*x.shape[:-1], H, d).sum(-1)  # per head
    coef = (dot_scale * tp * c).unsqueeze(-1)  # (..., H, 1)
    xh = x.reshape(*x.shape[:-1], H, d)
    dx = (g * dy - xhat * (g * dy * xhat).mean(-1, keepdim=True)) / r
    dx = dx + (coef * beta.reshape(H, d)).reshape(x.shape)
    return {
        "x": dx,
        "weight": over_tokens(dy * xhat),
        "alpha": over_tokens(t_full * dy * xhat),
        "beta": over_tokens((coef * xh).reshape(x.shape)),
    }
