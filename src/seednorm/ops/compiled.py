"""The compiled path: spec §5's explicit forward and backward formulas, compiled by TorchInductor.

Autograd never sees these functions: the custom op (``op.py``) calls ``forward`` and ``backward`` directly, so
the forward saves only 1/RMS (M,), σ(s) (M, H) (and the row mean for the centering form) beside its
inputs, and the backward is one fused graph.
Inductor turns each into a few loops (C++/OpenMP on CPU, Triton on GPU) with the structure of a compiled
RMSNorm: a row pass, then a column pass for the parameter gradients. It is the portable fused path (any device,
float64 too); on CPU the hand-written kernels of ``cpu.py`` read each row once and are faster. Row dims are
marked dynamic, so one compilation serves every number of tokens. Each configuration (activation, heads,
centering, dtypes) compiles its own copy of the formulas, so any number of configurations stays within Dynamo's
recompile limit, which counts per function (a second width makes the width dynamic within a configuration).

All tensors here are 2-D (M, D) with a contiguous last dim; math runs in float32 (float64 for float64 input).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable

import torch
from torch import Tensor

from . import philox
from .dtypes import compute_dtype
from .sigma import dsigma_from_t, sigma


def _forward(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    alpha: Tensor,
    beta: Tensor,
    bias: Tensor | None,
    keep: Tensor | None,
    num_heads: int,
    eps: float,
    activation: str,
    dot_scale: float,
    center: bool,
    rng: Tensor | None = None,
    rows: Tensor | None = None,
    dropout: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """(y, Σx̃² (M,), σ(s) (M, H), mean (M,) or None, x + residual or None); y is computed on x + residual when
    given, x̃ = x − mean(x) when ``center`` (else x), the dynamic term σ(s)·α multiplied by ``keep`` when given, or
    by the mask ``rng`` (seed, offset) generates (``philox.keep_mask``, fused into the loop that uses it).

    The raw Σx̃² rather than 1/RMS is returned so that Inductor computes 1/RMS inline in the loop writing y
    instead of materializing it in a loop of its own (``forward`` derives 1/RMS from it).
    """
    ct = compute_dtype(x.dtype)
    summed = None
    if residual is not None:
        summed = (x.to(ct) + residual.to(ct)).to(x.dtype)
        x = summed
    m, d = x.shape
    hd = d // num_heads  # explicit view sizes: with no rows (m = 0) a -1 is ambiguous
    xf = x.to(ct)
    mean = None
    if center:
        mean = xf.mean(-1)
        xf = xf - mean.unsqueeze(-1)
    sumsq = xf.square().sum(-1)  # (M,)
    rstd = torch.rsqrt(sumsq / d + eps)
    xh = xf.view(m, num_heads, hd)
    s = (xh * beta.to(ct).view(num_heads, hd)).sum(-1) * dot_scale  # (M, H)
    t = sigma(s, activation)
    dynamic = t.unsqueeze(-1) * alpha.to(ct).view(num_heads, hd)
    if rng is not None:
        keep = philox.keep_mask(rng, (m, d), dropout, ct, rows)
    if keep is not None:
        dynamic = dynamic * keep.view(m, num_heads, hd)
    gain = dynamic + (1.0 if weight is None else weight.to(ct).view(num_heads, hd))
    y = (gain * (xh * rstd.view(m, 1, 1))).view(m, d)  # γ ⊙ (x · 1/RMS), the order RMSNorm uses
    if bias is not None:
        y = y + bias.to(ct)
    return y.to(x.dtype), sumsq, t, mean, summed


def _backward(
    dy: Tensor,
    x: Tensor,
    weight: Tensor | None,
    alpha: Tensor,
    beta: Tensor,
    bias: Tensor | None,
    keep: Tensor | None,
    rstd: Tensor,
    t: Tensor,
    mean: Tensor | None,
    dsummed: Tensor | None,
    num_heads: int,
    activation: str,
    dot_scale: float,
    rng: Tensor | None = None,
    rows: Tensor | None = None,
    dropout: float = 0.0,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor | None]:
    """(dx, dγ, dα, dβ, db) by spec §5 with α·keep in place of α (dα = t·keep ⊙ δ ⊙ x̂; keep given, or generated
    from ``rng``) and, when ``mean`` is given (the centering form), x̃ = x − mean in place of x and
    dx = dx̃ − mean(dx̃); ``dsummed`` (the gradient of x + residual) is added to dx.

    Parameter gradients are reduced in the compute dtype and returned in each parameter's dtype.
    """
    ct = rstd.dtype
    m, d = x.shape
    hd = d // num_heads
    xf = x.to(ct) if mean is None else x.to(ct) - mean.view(m, 1)
    xh = xf.view(m, num_heads, hd)
    dyh = dy.to(ct).view(m, num_heads, hd)
    r = rstd.view(m, 1, 1)
    a = alpha.to(ct).view(num_heads, hd)
    if rng is not None:
        keep = philox.keep_mask(rng, (m, d), dropout, ct, rows)
    if keep is not None:
        a = a * keep.view(m, num_heads, hd)  # α ⊙ keep, per element
    xhat = xh * r
    gain = t.unsqueeze(-1) * a + (1.0 if weight is None else weight.to(ct).view(num_heads, hd))
    gdy = gain * dyh
    dy_xhat = dyh * xhat
    c = (dy_xhat * a).sum(-1)  # (M, H): ⟨δ⊙α, x̂⟩ per head
    u = (dsigma_from_t(t, activation) * c * dot_scale).unsqueeze(-1)  # (M, H, 1)
    rms_mean = (gdy * xhat).sum((-2, -1), keepdim=True) / d  # (M, 1, 1): mean(g⊙δ⊙x̂) over all of D
    dx = (r * (gdy - xhat * rms_mean) + u * beta.to(ct).view(num_heads, hd)).view(m, d)
    if mean is not None:
        dx = dx - dx.mean(-1, keepdim=True)  # through x̃ = x − mean(x)
    if dsummed is not None:
        dx = dx + dsummed.to(ct)
    dweight = None if weight is None else dy_xhat.sum(0).view(d).to(weight.dtype)
    kept = t.unsqueeze(-1) * dy_xhat
    if keep is not None:
        kept = kept * keep.view(m, num_heads, hd)
    dalpha = kept.sum(0).view(d).to(alpha.dtype)
    dbeta = (u * xh).sum(0).view(d).to(beta.dtype)
    dbias = None if bias is None else dy.to(ct).sum(0).to(bias.dtype)
    return dx.to(x.dtype), dweight, dalpha, dbeta, dbias


@functools.cache
def _compiled(fn: Callable, config: tuple) -> Callable:
    """``torch.compile`` of a private copy of ``fn`` for one configuration, run without autograd; built on first use
    (importing the compiler costs seconds).

    Dynamo keeps its compiled graphs, and counts recompilations against ``recompile_limit``, per code object: with
    one code object for every configuration, the ninth (activation, heads, dtypes, ...) would silently run eagerly.
    Each ``config`` gets a copy of ``fn``'s code, so it compiles once and only its own widths count against the
    limit. The custom op owns the autograd formula; with grad mode on, AOTAutograd would compile a training graph
    that saves intermediates for a backward that never runs.
    """
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{len(_CONFIGS)}")  # a new code object, a new Dynamo cache
    _CONFIGS.append(config)
    copy = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    return torch.no_grad()(torch.compile(copy))


_CONFIGS: list[tuple] = []  # the configurations compiled so far, in order (names the copies)


def _config(activation: str, num_heads: int, *items: Tensor | bool | None, dropout: float = 0.0) -> tuple:
    """What Dynamo specializes on besides the width: activation, heads, flags, each tensor's dtype and device (or
    None), and the dropout probability. A probability that changed within one compiled copy would be traced again
    as a symbolic float, and the keep threshold ``int(p·2³¹)`` of the first trace was then kept (torch 2.14): each
    probability gets its own copy instead (a model has one or two)."""
    return (activation, num_heads, dropout, *(t if t is None or isinstance(t, bool) else (t.dtype, t.device.type)
                                              for t in items))


def _rows_dynamic(*tensors: Tensor | None) -> None:
    """Compile once for any number of rows M (dim 0 of every per-row tensor)."""
    for t in tensors:
        if t is not None:
            torch._dynamo.maybe_mark_dynamic(t, 0)


def forward(
    x: Tensor, residual: Tensor | None, weight: Tensor | None, alpha: Tensor, beta: Tensor, bias: Tensor | None,
    keep: Tensor | None, num_heads: int, eps: float, activation: str, dot_scale: float, center: bool,
    rng: Tensor | None = None, rows: Tensor | None = None, dropout: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """(y, 1/RMS (M,), σ(s) (M, H), mean or None, x + residual or None) for x, residual, keep (M, D), by the
    compiled ``_forward``; ``rng``, ``rows`` (M,), ``dropout``: in-kernel dropout."""
    _rows_dynamic(x, residual, keep, rows)
    fn = _compiled(_forward, _config(activation, num_heads, center, x, residual, weight, alpha, beta, bias, keep, rng,
                                     rows, dropout=dropout))
    y, sumsq, t, mean, summed = fn(x, residual, weight, alpha, beta, bias, keep, num_heads, eps, activation,
                                   dot_scale, center, rng, rows, dropout)
    return y, torch.rsqrt(sumsq / x.shape[1] + eps), t, mean, summed


def backward(
    dy: Tensor, x: Tensor, weight: Tensor | None, alpha: Tensor, beta: Tensor, bias: Tensor | None,
    keep: Tensor | None, rstd: Tensor, t: Tensor, mean: Tensor | None, dsummed: Tensor | None, num_heads: int,
    activation: str, dot_scale: float, rng: Tensor | None = None, rows: Tensor | None = None, dropout: float = 0.0,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor | None]:
    """Compiled ``_backward``: (dx, dγ, dα, dβ, db) for dy, x, keep (M, D); ``dsummed`` is added to dx; ``rng``,
    ``rows``, ``dropout``: the forward's in-kernel dropout, generated again."""
    _rows_dynamic(dy, x, keep, rstd, t, mean, dsummed, rows)
    config = _config(activation, num_heads, dy, x, weight, alpha, beta, bias, keep, rstd, mean, dsummed, rng, rows,
                     dropout=dropout)
    fn = _compiled(_backward, config)
    return fn(dy, x, weight, alpha, beta, bias, keep, rstd, t, mean, dsummed, num_heads, activation, dot_scale, rng,
              rows, dropout)
