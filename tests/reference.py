"""A float64 reference of SeeDNorm written straight from docs/spec.md: forward (§1, §3) and the exact gradients (§5);
the ablation forms (§6) and the Derf baseline, each with closed-form gradients.

Shared by every test that checks an implementation (the functional form, the kernels, converted models).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SIGMA = {
    "tanh": (torch.tanh, lambda s, t: 1 - t * t),
    "sigmoid": (torch.sigmoid, lambda s, t: t * (1 - t)),
    "hardtanh": (lambda s: s.clamp(-1, 1), lambda s, t: ((s > -1) & (s < 1)).to(s.dtype)),
    "softsign": (lambda s: s / (1 + s.abs()), lambda s, t: 1 / (1 + s.abs()) ** 2),
}


def _parts(x, gamma, alpha, beta, num_heads, eps, activation, dot_scale, keep=None, center=False):
    x, gamma, alpha, beta = (t.detach().double() for t in (x, gamma, alpha, beta))
    if center:  # the centering form (spec §6): everything below runs on x − mean(x)
        x = x - x.mean(-1, keepdim=True)
    D = x.shape[-1]
    H, d = num_heads, D // num_heads
    r = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # RMS over the full D
    xh = x.reshape(*x.shape[:-1], H, d)
    s = dot_scale * (xh * beta.reshape(H, d)).sum(-1)  # one scalar per token and head, from the raw x
    sigma, dsigma = SIGMA[activation]
    t = sigma(s)
    tp = torch.where(t.isnan(), t, dsigma(s, t))  # σ'(s) is NaN wherever σ(s) is: NaN is never masked
    t_full = t.unsqueeze(-1).expand(*t.shape, d).reshape(x.shape)
    k = torch.ones_like(x) if keep is None else keep.detach().double()  # the dynamic-dropout mask (spec §4)
    g = t_full * alpha * k + gamma
    return x, gamma, alpha * k, beta, r, s, t_full, tp, g, H, d, k


def seednorm_ref(x: Tensor, gamma: Tensor, alpha: Tensor, beta: Tensor, *, num_heads: int = 1, eps: float,
                 activation: str = "tanh", dot_scale: float = 1.0, keep: Tensor | None = None, center: bool = False,
                 bias: Tensor | None = None) -> Tensor:
    """y = [σ(s)·α ⊙ keep + γ] ⊙ x̃ / RMS(x̃) (+ bias) in float64, x̃ = x − mean(x) when ``center`` else x, s from x̃;
    ``keep`` is a fixed dropout mask of x's shape (None: no dropout)."""
    x, *_, r, _s, _t, _tp, g, _H, _d, _k = _parts(x, gamma, alpha, beta, num_heads, eps, activation, dot_scale, keep,
                                                  center)
    y = g * x / r
    return y if bias is None else y + bias.detach().double()


def seednorm_ref_grads(x: Tensor, gamma: Tensor, alpha: Tensor, beta: Tensor, dy: Tensor, *, num_heads: int = 1,
                       eps: float, activation: str = "tanh", dot_scale: float = 1.0, keep: Tensor | None = None,
                       center: bool = False, bias: Tensor | None = None) -> dict[str, Tensor]:
    """∂L/∂x, ∂L/∂γ, ∂L/∂α, ∂L/∂β (and ∂L/∂bias) for L = ⟨dy, y⟩, by the closed forms of spec §5 (s scaled by
    dot_scale), with α ⊙ keep in place of α (so ∂L/∂α = Σ t·keep ⊙ dy ⊙ x̂) and, for the centering form, x̃ in place
    of x and ∂L/∂x = ∂L/∂x̃ − mean(∂L/∂x̃) (the projection x ↦ x − mean(x) is symmetric)."""
    x, gamma, ak, beta, r, s, t_full, tp, g, H, d, k = _parts(x, gamma, alpha, beta, num_heads, eps, activation,
                                                              dot_scale, keep, center)
    dy = dy.detach().double()
    xhat = x / r
    D = x.shape[-1]

    def over_tokens(t: Tensor) -> Tensor:
        return t.reshape(-1, D).sum(0)

    c = (dy * ak * xhat).reshape(*x.shape[:-1], H, d).sum(-1)  # per head
    coef = (dot_scale * tp * c).unsqueeze(-1)  # (..., H, 1)
    xh = x.reshape(*x.shape[:-1], H, d)
    dx = (g * dy - xhat * (g * dy * xhat).mean(-1, keepdim=True)) / r
    dx = dx + (coef * beta.reshape(H, d)).reshape(x.shape)
    if center:
        dx = dx - dx.mean(-1, keepdim=True)
    grads = {
        "x": dx,
        "weight": over_tokens(dy * xhat),
        "alpha": over_tokens(t_full * k * dy * xhat),
        "beta": over_tokens((coef * xh).reshape(x.shape)),
    }
    if bias is not None:
        grads["bias"] = over_tokens(dy)
    return grads


# ---------------------------------------------------------------------------------------------------------
# The ablation forms of spec §6 (the layer's alpha_mode, beta_mode, gamma_mode), written out on their own.


def _variant_parts(x, gamma, alpha, beta, beta_mode, num_heads, eps, activation, dot_scale):
    x = x.detach().double()
    D = x.shape[-1]
    gamma = torch.zeros(D, dtype=torch.float64) if gamma is None else gamma.detach().double()  # no γ: γ ≡ 0
    a = torch.ones(D, dtype=torch.float64) if alpha is None else alpha.detach().double().expand(D)  # α ≡ 1, or shared
    b = None if beta is None else beta.detach().double()
    r = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    sigma, dsigma = SIGMA[activation]
    if beta_mode == "dot":
        H, d = num_heads, D // num_heads
        s = dot_scale * (x.reshape(*x.shape[:-1], H, d) * b.reshape(H, d)).sum(-1)  # (..., H)
    else:
        s = dot_scale * x * (1.0 if b is None else b)  # (..., D): one s per channel; no β: s = dot_scale·x
    t = sigma(s)
    tp = torch.where(t.isnan(), t, dsigma(s, t))
    return x, gamma, a, b, r, s, t, tp


def _per_channel(t: Tensor, beta_mode: str, num_heads: int, D: int) -> Tensor:
    """A per-head quantity (..., H) repeated over each head's D/H channels; a per-channel one unchanged."""
    if beta_mode != "dot":
        return t
    return t.unsqueeze(-1).expand(*t.shape, D // num_heads).reshape(*t.shape[:-1], D)


def seednorm_variant_ref(x: Tensor, gamma: Tensor | None, alpha: Tensor | None, beta: Tensor | None, *,
                         beta_mode: str = "dot", num_heads: int = 1, eps: float, activation: str = "tanh",
                         dot_scale: float = 1.0) -> Tensor:
    """y = [σ(s) ⊙ α + γ] ⊙ x / RMS(x) in float64, for every form of spec §6.

    ``gamma`` None: no γ (γ ≡ 0). ``alpha`` (D,), (1,) (one α for every channel) or None (α ≡ 1). ``beta_mode``
    "dot": s_h = dot_scale·⟨x_h, β_h⟩ per head; "elementwise": s = dot_scale·x ⊙ β per channel; "none" (``beta``
    None): s = dot_scale·x per channel.
    """
    x, gamma, a, _b, r, _s, t, _tp = _variant_parts(x, gamma, alpha, beta, beta_mode, num_heads, eps, activation,
                                                    dot_scale)
    g = _per_channel(t, beta_mode, num_heads, x.shape[-1]) * a + gamma
    return g * x / r


def seednorm_variant_ref_grads(x: Tensor, gamma: Tensor | None, alpha: Tensor | None, beta: Tensor | None,
                               dy: Tensor, *, beta_mode: str = "dot", num_heads: int = 1, eps: float,
                               activation: str = "tanh", dot_scale: float = 1.0) -> dict[str, Tensor]:
    """∂L/∂x and the gradient of every parameter the form has, for L = ⟨dy, y⟩, by closed forms:

    with x̂ = x/r, t = σ(s), t' = σ'(s), g = t ⊙ α + γ,
        ∂L/∂γ = Σ_tokens dy ⊙ x̂                     ∂L/∂α = Σ_tokens t ⊙ dy ⊙ x̂ (summed over channels for one α)
        dot:          c_h = ⟨dy_h ⊙ α_h, x̂_h⟩,  ∂L/∂β = Σ_tokens dot_scale·t'_h·c_h·x_h,
                      ∂L/∂x = RMS part + dot_scale·t'_h·c_h·β_h
        elementwise:  ∂L/∂β = Σ_tokens dot_scale·t' ⊙ α ⊙ dy ⊙ x̂ ⊙ x,
                      ∂L/∂x = RMS part + dot_scale·t' ⊙ α ⊙ dy ⊙ x̂ ⊙ β   (β ≡ 1 without β)
    where RMS part = (g ⊙ dy − x̂ · mean(g ⊙ dy ⊙ x̂)) / r.
    """
    x, gamma_full, a, b, r, _s, t, tp = _variant_parts(x, gamma, alpha, beta, beta_mode, num_heads, eps,
                                                       activation, dot_scale)
    D = x.shape[-1]
    dy = dy.detach().double()
    xhat = x / r
    t_full = _per_channel(t, beta_mode, num_heads, D)
    g = t_full * a + gamma_full

    def over_tokens(v: Tensor) -> Tensor:
        return v.reshape(-1, D).sum(0)

    dx = (g * dy - xhat * (g * dy * xhat).mean(-1, keepdim=True)) / r
    grads: dict[str, Tensor] = {}
    if beta_mode == "dot":
        H, d = num_heads, D // num_heads
        c = (dy * a * xhat).reshape(*x.shape[:-1], H, d).sum(-1)
        coef = _per_channel(dot_scale * tp * c, beta_mode, H, D)
        dx = dx + coef * b
        grads["beta"] = over_tokens(coef * x)
    else:
        coef = dot_scale * tp * a * dy * xhat
        dx = dx + coef * (1.0 if b is None else b)
        if b is not None:
            grads["beta"] = over_tokens(coef * x)
    grads["x"] = dx
    if gamma is not None:
        grads["weight"] = over_tokens(dy * xhat)
    if alpha is not None:
        dalpha = over_tokens(t_full * dy * xhat)
        grads["alpha"] = dalpha.sum(0, keepdim=True) if alpha.numel() == 1 else dalpha
    return grads


# ---------------------------------------------------------------------------------------------------------
# Derf (Dynamic erf, arXiv 2512.10938): y = γ ⊙ erf(a·x + s) + b.


def derf_ref(x: Tensor, alpha: Tensor, shift: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """y = γ ⊙ erf(a·x + s) + b in float64."""
    x, a, s, w = (t.detach().double() for t in (x, alpha, shift, weight))
    y = w * torch.erf(a * x + s)
    return y if bias is None else y + bias.detach().double()


def derf_ref_grads(x: Tensor, alpha: Tensor, shift: Tensor, weight: Tensor, bias: Tensor | None,
                   dy: Tensor) -> dict[str, Tensor]:
    """With u = a·x + s and erf'(u) = 2/√π·exp(−u²), for L = ⟨dy, y⟩:
    ∂L/∂x = dy ⊙ γ·a·erf'(u); ∂L/∂a = Σ dy ⊙ γ ⊙ x·erf'(u); ∂L/∂s = Σ dy ⊙ γ·erf'(u); ∂L/∂γ = Σ_tokens dy ⊙ erf(u);
    ∂L/∂b = Σ_tokens dy."""
    x, a, s, w, dy = (t.detach().double() for t in (x, alpha, shift, weight, dy))
    u = a * x + s
    k = dy * w * (2 / math.sqrt(math.pi)) * torch.exp(-u * u)
    D = x.shape[-1]
    grads = {
        "x": k * a,
        "alpha": (k * x).sum().reshape(1),
        "shift": k.sum().reshape(1),
        "weight": (dy * torch.erf(u)).reshape(-1, D).sum(0),
    }
    if bias is not None:
        grads["bias"] = dy.reshape(-1, D).sum(0)
    return grads
