"""SeeDNorm and its baselines as plain functions: the reference math of docs/spec.md.

SeeDNorm (Self-Rescaled Dynamic Normalization, arXiv 2510.22777) replaces RMSNorm's static gain γ with an
input-dependent one. For a token x ∈ R^D split into ``num_heads`` contiguous slices x_h of D/H channels:

    s_h = dot_scale · ⟨x_h, β_h⟩                       one scalar per token and head, from the RAW x
    g   = concat_h( σ(s_h) · α_h ) + γ                 a per-token gain vector
    y   = g ⊙ x / RMS(x),   RMS(x) = sqrt(mean(x²) + ε)    RMS over the full D

With β = 0 and an odd σ (tanh, hardtanh, softsign) this is exactly RMSNorm with gain γ. ``center=True`` applies
the same layer to x − mean(x) and adds ``bias``: the LayerNorm-equivalent form used to convert LayerNorm models
(the paper's SeeDNorm is the RMS form).

Everything is computed in float32 (float64 when the input is float64) and cast back to the input dtype.
NaN/Inf in the input propagate and are never masked: as in RMSNorm, a NaN makes its whole row NaN and other rows are
untouched. An Inf gives RMSNorm a row of zeros with NaN at the Inf (1/RMS is 0). SeeDNorm's s = x·β mixes the Inf's
head: with β = 0 there (0·Inf = NaN) that head of the row is NaN; otherwise s = ±Inf, which tanh, sigmoid and hardtanh
saturate (RMSNorm's pattern) and softsign turns into NaN (Inf/Inf). Non-finite parameters reach every row.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops
from .ops import philox
from .ops.dtypes import compute_dtype
from .ops.sigma import ACTIVATIONS

# ----------------------------------------------------------------------------------------------------------
# Argument checks shared by every norm: clear errors instead of silent wrong answers.


def check_floating(x: Tensor, what: str = "input") -> None:
    """Raise TypeError unless ``x`` is a real floating-point tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{what} must be a real floating-point tensor, got dtype {x.dtype}")


def check_input(x: Tensor, dim: int, name: str) -> None:
    """Raise a clear error unless ``x`` is a floating tensor whose last dimension is ``dim``."""
    check_floating(x)
    if x.dim() == 0 or x.shape[-1] != dim:
        shape = tuple(x.shape)
        raise ValueError(f"{name}: the input's last dimension must be {dim} (normalized_shape), got shape {shape}")


def finite_number(value: object, what: str) -> float:
    """``value`` as a float: a finite real number (Python or NumPy scalar), not a bool and not a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def check_eps(eps: float | None) -> float | None:
    """``eps`` is None (dtype default) or a finite number > 0; returned as a float (or None)."""
    if eps is None:
        return None
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0 (or None for the dtype's default), got {eps!r}")
    return float(eps)


def check_eps_for(eps: float, dtype: torch.dtype) -> None:
    """``eps`` must be a normal number of the compute dtype of a ``dtype`` input: smaller ones may flush to 0
    (then a zero row divides 0 by 0), larger ones overflow to Inf."""
    ct = compute_dtype(dtype)
    info = torch.finfo(ct)
    if not info.tiny <= eps <= info.max:
        raise ValueError(
            f"eps={eps!r} is not a normal {ct} number (range [{info.tiny:.3g}, {info.max:.3g}]), the dtype an input of "
            f"{dtype} is computed in; use a larger eps (or None for the dtype's default)"
        )


def check_heads(dim: int, num_heads: int) -> int:
    """The width ``dim`` is >= 1 and ``num_heads`` a positive integer (Python or NumPy) dividing it; returns it."""
    if dim < 1:
        raise ValueError(f"the width D (normalized_shape) must be >= 1, got {dim}")
    if isinstance(num_heads, bool) or not isinstance(num_heads, numbers.Integral) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")
    if dim % num_heads:
        raise ValueError(f"num_heads={num_heads} does not divide the width {dim} (D, or C of a channels-first "
                         "layer); choose a num_heads that divides it")
    return int(num_heads)


def check_activation(activation: str) -> None:
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")


def check_mode(value: str, modes: tuple[str, ...], what: str) -> str:
    """``value`` is one of ``modes`` (the forms of one term of the layer); returned unchanged."""
    if not isinstance(value, str) or value not in modes:
        raise ValueError(f"{what} must be one of {modes}, got {value!r}")
    return value


def check_dropout(p: float) -> float:
    """``p`` is a probability in [0, 1] (not a bool); returned as a float."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dynamic_dropout must be a probability in [0, 1], got {p!r}")
    return float(p)


def resolve_dot_scale(dot_scale: float | str, dim: int, num_heads: int) -> float:
    """``dot_scale`` as a number: a finite float, or "dim" for 1/(D/num_heads) (spec §4)."""
    if isinstance(dot_scale, str):
        if dot_scale != "dim":
            raise ValueError(f"dot_scale must be a number or 'dim', got {dot_scale!r}")
        check_heads(dim, num_heads)
        return num_heads / dim
    return finite_number(dot_scale, "dot_scale (a number or 'dim')")


def default_eps(dtype: torch.dtype) -> float:
    """The ε that ``torch.nn.RMSNorm(eps=None)`` uses for an input of this dtype."""
    return torch.finfo(dtype).eps


def check_params(x: Tensor, dim: int, params: dict[str, Tensor | None]) -> None:
    """Every parameter given (``None`` is absent) is a floating tensor of shape (dim,) on x's device.

    The fused kernels read parameters through raw pointers: one on another device (or the meta device) must be
    refused here, before any kernel runs.
    """
    for what, p in params.items():
        if p is None:
            continue
        check_floating(p, what)
        if tuple(p.shape) != (dim,):
            raise ValueError(f"{what} must have shape ({dim},), got {tuple(p.shape)}")
        if p.device != x.device:
            raise ValueError(
                f"{what} is on {p.device} but the input is on {x.device}; move the parameters to the input's "
                "device (e.g. module.to(x.device))"
            )


# ----------------------------------------------------------------------------------------------------------
# SeeDNorm

# The forms of SeeDNorm's three terms (spec §6), the paper's first: α per channel, one per layer, or absent (α ≡ 1);
# s from the dot product per head, per channel (σ(x ⊙ β)), or per channel without β (σ(x)); γ per channel or absent
# (γ ≡ 0, the gain is σ(·)·α alone).
ALPHA_MODES = ("vector", "scalar", "none")
BETA_MODES = ("dot", "elementwise", "none")
GAMMA_MODES = ("vector", "none")


def _layer_options(
    dim: int, dtype: torch.dtype, num_heads: int, eps: float | None, activation: str, dynamic_dropout: float,
    dot_scale: float | str, beta_mode: str,
) -> tuple[int, float, float, float]:
    num_heads = check_heads(dim, num_heads)
    if beta_mode != "dot" and num_heads != 1:
        raise ValueError(f"beta_mode={beta_mode!r} has no heads (s is per channel): num_heads must be 1, "
                         f"got {num_heads}")
    eps = check_eps(eps)
    check_activation(activation)
    dynamic_dropout = check_dropout(dynamic_dropout)
    scale = resolve_dot_scale(dot_scale, dim, num_heads)
    eps = default_eps(dtype) if eps is None else eps
    check_eps_for(eps, dtype)
    return num_heads, eps, dynamic_dropout, scale


# typed: True == 1 and hashes alike, but True is refused where 1 is accepted
_cached_layer_options = functools.lru_cache(maxsize=1024, typed=True)(_layer_options)


def layer_options(
    dim: int, dtype: torch.dtype, num_heads: int, eps: float | None, activation: str, dynamic_dropout: float,
    dot_scale: float | str, beta_mode: str = "dot",
) -> tuple[int, float, float, float]:
    """SeeDNorm's options checked and resolved for a width and an input dtype: ``(num_heads, ε, dynamic_dropout,
    dot_scale)`` as Python numbers (ε: the dtype's default for None; dot_scale: a number for "dim"). Raises the
    error that names a bad option. Remembered per distinct set of options, so a layer pays for the checks once
    (an error is never remembered: it is raised again on every call). Under ``torch.compile`` the checks run
    uncached: Dynamo traces them once per compilation (the options are constants of the graph) and would warn
    about a cache it cannot trace."""
    args = (dim, dtype, num_heads, eps, activation, dynamic_dropout, dot_scale, beta_mode)
    if torch.compiler.is_compiling():
        return _layer_options(*args)
    try:
        hash(args)
    except TypeError:  # an unhashable option (a list, ...): the checks name it
        return _layer_options(*args)
    return _cached_layer_options(*args)


def seednorm(
    x: Tensor,
    weight: Tensor | None,
    alpha: Tensor | None,
    beta: Tensor | None,
    bias: Tensor | None = None,
    *,
    num_heads: int = 1,
    eps: float | None = None,
    activation: str = "tanh",
    dot_scale: float | str = 1.0,
    center: bool = False,
    dynamic_dropout: float = 0.0,
    training: bool = False,
    residual: Tensor | None = None,
    impl: str = "auto",
    beta_mode: str = "dot",
) -> Tensor | tuple[Tensor, Tensor]:
    """SeeDNorm over the last dimension.

    Args:
        x: input of shape (..., D), any floating dtype, any leading dims (strided is fine).
        weight: γ of shape (D,), or None for γ = 1 (pass zeros for the layer without γ).
        alpha: α of shape (D,); of shape (1,) for one α shared by every channel (broadcast); None for α ≡ 1.
        beta: β of shape (D,); None exactly when ``beta_mode="none"``.
        bias: optional additive bias (D,) (used with ``center=True`` for LayerNorm-equivalent layers).
        num_heads: H; s is computed per contiguous slice of D/H channels (spec §3). RMS stays over all of D.
        eps: added to mean(x²); None means ``torch.finfo(x.dtype).eps`` like ``torch.nn.RMSNorm``. It must be a
            normal number in the compute dtype (float32, or float64 for float64 input).
        activation: σ, one of "tanh", "sigmoid", "hardtanh", "softsign".
        dot_scale: multiplies s; "dim" means 1/(D/H) (spec §4, vision).
        center: subtract the row mean before everything (LayerNorm form).
        dynamic_dropout: dropout probability on σ(s)·α, applied only when ``training`` is True; the mask is
            ``dynamic_dropout_mask``'s, on every path: keyed by one draw from torch's generator per call and
            generated inside the fused kernels (``seednorm.ops.philox``).
        residual: optional tensor of x's shape and dtype; the layer then normalizes x + residual and returns it.
        impl: "auto" (the default, as the module's), "reference" (this function's math: exact in float64,
            twice differentiable), or one backend of the fused custom op of seednorm.ops: "triton", "cpp",
            "compiled". "auto" is ``$SEEDNORM_IMPL`` when set, else Triton on CUDA, on CPU C++ (else compiled,
            else reference, with one warning, when there is no working C++ toolchain or kernel cache), reference
            for float64. ``beta_mode`` other than "dot" and calls under ``torch.func`` transforms (grad, vmap,
            jacrev, jvp) always run the reference. A (1,) or absent α goes through the fused op as a (D,) vector
            (its gradient is summed back).
        beta_mode: the form of s (spec §6): "dot" (the paper's: s_h = dot_scale·⟨x_h, β_h⟩, one per token and
            head), "elementwise" (one per channel: s = dot_scale·x ⊙ β, the dynamic term σ(s) ⊙ α), "none"
            (element-wise without β: s = dot_scale·x). The element-wise forms have no heads: ``num_heads`` must be 1.

    Returns:
        y of the same shape and dtype as x: y = [σ(s)·α + γ] ⊙ x / RMS(x) (+ bias); with a residual,
        ``(y, x + residual)`` where y is computed on x + residual.
    """
    if beta_mode not in BETA_MODES:
        check_mode(beta_mode, BETA_MODES, "beta_mode")
    if (beta is None) != (beta_mode == "none"):
        raise ValueError(f"beta must be None exactly when beta_mode='none'; got beta_mode={beta_mode!r} and "
                         f"beta {'None' if beta is None else 'given'}")
    shared_alpha = not _valid_call(x, weight, alpha, beta, bias) and _check_call(x, weight, alpha, beta, bias)
    dim = x.shape[-1]
    num_heads, eps, dynamic_dropout, scale = layer_options(
        dim, x.dtype, num_heads, eps, activation, dynamic_dropout, dot_scale, beta_mode
    )
    # The fused kernels are opaque to torch.func's transforms; the reference is plain PyTorch and composes with them.
    fusable = beta_mode == "dot" and not torch._C._are_functorch_transforms_active()
    impl = ops.resolve_impl(impl, x, fusable=fusable)
    # Both paths take α of shape (D,): a shared α is broadcast (autograd sums its gradient back), an absent one is 1.
    if alpha is None:
        alpha = torch.ones(dim, dtype=compute_dtype(x.dtype), device=x.device)
    elif shared_alpha:
        alpha = alpha.expand(dim)
    # Drawn before anything else, on both paths: the same generator state gives the same mask.
    rng = philox.draw(x.device) if training and dynamic_dropout > 0 else None
    if impl != "reference":
        alpha = alpha.contiguous()  # the kernels read α through a pointer
        kw = {"num_heads": num_heads, "eps": eps, "activation": activation, "dot_scale": scale, "impl": impl}
        if rng is not None:
            rng, rows = _dropout_inputs(x, rng)
            kw.update(rng=rng, rows=rows, dropout=dynamic_dropout)
        return ops.seednorm_fused(x, weight, alpha, beta, residual, bias=bias, center=center, **kw)
    keep = None if rng is None else _dropout_keep(x, rng, dynamic_dropout)
    summed = None
    if residual is not None:
        x = summed = ops.residual_sum(x, residual)

    ct = compute_dtype(x.dtype)
    xf = x.to(ct)
    if center:
        xf = xf - xf.mean(-1, keepdim=True)
    if beta_mode == "dot":
        heads = xf.unflatten(-1, (num_heads, dim // num_heads))  # (..., H, D/H)
        s = (heads * beta.to(ct).view(num_heads, -1)).sum(-1) * scale  # (..., H)
        dynamic = ACTIVATIONS[activation](s).unsqueeze(-1) * alpha.to(ct).view(num_heads, -1)  # (..., H, D/H)
        dynamic = dynamic.flatten(-2)  # (..., D)
    else:
        s = xf * (scale if beta is None else beta.to(ct) * scale)  # (..., D): one s per channel
        dynamic = ACTIVATIONS[activation](s) * alpha.to(ct)
    if keep is not None:
        dynamic = dynamic * keep  # (..., D)
    gain = dynamic + (1.0 if weight is None else weight.to(ct))
    y = gain * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps))
    if bias is not None:
        y = y + bias.to(ct)
    return y.to(x.dtype) if summed is None else (y.to(x.dtype), summed)


def _valid_call(x: Tensor, *params: Tensor | None) -> bool:
    """Whether ``seednorm``'s tensors need no further check: x a floating tensor of width D ≥ 1 and every given
    parameter a floating tensor of shape (D,) on x's device. The common case, decided in about a microsecond per
    call; anything else (a shared α of shape (1,) included) goes to ``_check_call``, which names the problem."""
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point or x.dim() == 0:
        return False
    shape, device = x.shape[-1:], x.device
    return all(p is None or (isinstance(p, Tensor) and p.dtype.is_floating_point and p.shape == shape
                             and p.device == device) for p in params)


def _check_call(x: Tensor, weight: Tensor | None, alpha: Tensor | None, beta: Tensor | None,
                bias: Tensor | None) -> bool:
    """``seednorm``'s checks of its tensors (raising the error that names a bad one); returns whether α is one
    value of shape (1,) shared by every channel."""
    check_floating(x)
    for what, p in (("weight", weight), ("alpha", alpha), ("beta", beta), ("bias", bias)):
        if p is not None:
            check_floating(p, what)
    shared_alpha = alpha is not None and tuple(alpha.shape) == (1,)
    width = next((p.shape[0] for p in (None if shared_alpha else alpha, beta, weight, bias)
                  if p is not None and p.dim() == 1), x.shape[-1] if x.dim() else 0)
    check_input(x, width, "seednorm")
    dim = x.shape[-1]
    check_params(x, dim, {"weight": weight, "alpha": None if shared_alpha else alpha, "beta": beta, "bias": bias})
    if shared_alpha:
        check_params(x, 1, {"alpha": alpha})
    return shared_alpha


def dynamic_dropout_mask(x: Tensor, p: float) -> Tensor | None:
    """The dynamic-dropout mask (spec §4) of a SeeDNorm input ``x``: of x's shape, in its compute dtype, element-wise
    0 (dropped, probability ``p``) or 1/(1 − p); None when ``p`` is 0. A tensor subclass (a DTensor) gets a mask of
    its own kind and placement.

    It makes the draw a training call of the layer makes first, (seed, offset) = ``seednorm.ops.philox.draw``, and
    returns the mask the kernels generate from it (``philox.keep_mask``): from the same generator state, the mask
    that call applies on every path (reference, C++, Triton, compiled).
    """
    if p == 0:
        return None
    return _dropout_keep(x, philox.draw(x.device), p)


def _row_placements(x: Tensor) -> list:
    """A DTensor's placements for a tensor of its leading (row) dims: its shards of a leading dim, else Replicate
    (a shard of the last dim is redistributed to whole rows by the op's sharding rules)."""
    from torch.distributed.tensor import Replicate

    return [pl if pl.is_shard() and pl.dim < x.dim() - 1 else Replicate() for pl in x.placements]


def _dropout_inputs(x: Tensor, rng: Tensor) -> tuple[Tensor, Tensor | None]:
    """(rng, rows) for the fused op: as drawn, and None, for a plain tensor. For a DTensor: rng replicated, and
    ``rows`` the global index of every row (x.shape[:-1]) placed like x's rows, so each shard generates its own part
    of the mask of the whole tensor (no two shards share a counter)."""
    if type(x) is Tensor:
        return rng, None
    from torch.distributed.tensor import DTensor, Replicate, distribute_tensor

    mesh = x.device_mesh
    rng = DTensor.from_local(rng, mesh, [Replicate()] * mesh.ndim, run_check=False)
    lead = x.shape[:-1]
    index = torch.arange(lead.numel(), dtype=torch.int64, device=rng.device).view(lead)
    return rng, distribute_tensor(index, mesh, _row_placements(x), src_data_rank=None)


def _dropout_keep(x: Tensor, rng: Tensor, p: float) -> Tensor:
    """The explicit mask of the reference path: ``philox.keep_mask`` for x's shape in its compute dtype; for a
    DTensor, the whole tensor's mask placed like x (each rank takes its part)."""
    keep = philox.keep_mask(rng, x.shape, p, compute_dtype(x.dtype))
    if type(x) is Tensor:
        return keep
    from torch.distributed.tensor import Replicate, distribute_tensor

    placements = [pl if pl.is_shard() else Replicate() for pl in x.placements]
    return distribute_tensor(keep, x.device_mesh, placements, src_data_rank=None)


def ada_seednorm(
    x: Tensor,
    alpha: Tensor,
    beta: Tensor,
    scale: Tensor,
    shift: Tensor,
    *,
    num_heads: int = 1,
    eps: float | None = None,
    activation: str = "tanh",
    dot_scale: float | str = 1.0,
) -> Tensor:
    """AdaSeeDNorm (spec §6): y = [(σ(x·βᵀ)·α + 1) ⊙ x/RMS(x)] · (1 + scale) + shift.

    ``scale`` and ``shift`` are the condition-generated γ(c), η(c), broadcastable to x of shape (..., D).
    """
    check_floating(scale, "scale")
    check_floating(shift, "shift")
    y = seednorm(
        x, None, alpha, beta, num_heads=num_heads, eps=eps, activation=activation, dot_scale=dot_scale
    )
    return (y * (1 + scale) + shift).to(x.dtype)


# ----------------------------------------------------------------------------------------------------------
# Baselines: thin checked wrappers over PyTorch's own kernels, DyT and Derf.


def rms_norm(x: Tensor, weight: Tensor | None, *, eps: float | None = None) -> Tensor:
    """RMSNorm: y = γ ⊙ x / sqrt(mean(x²) + ε); x of shape (..., D), γ of shape (D,)."""
    dim = weight.shape[-1] if weight is not None else x.shape[-1]
    check_input(x, dim, "rms_norm")
    eps = check_eps(eps)
    return F.rms_norm(x, (dim,), weight, eps)


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, *, eps: float = 1e-5) -> Tensor:
    """LayerNorm: y = γ ⊙ (x − mean) / sqrt(var + ε) + b; x of shape (..., D)."""
    dim = weight.shape[-1] if weight is not None else x.shape[-1]
    check_input(x, dim, "layer_norm")
    eps = check_eps(eps)
    return F.layer_norm(x, (dim,), weight, bias, eps)


def dyt(x: Tensor, alpha: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """DyT (Dynamic Tanh): y = γ ⊙ tanh(a·x) + b with a scalar ``alpha``; x of shape (..., D)."""
    check_input(x, weight.shape[-1], "dyt")
    ct = compute_dtype(x.dtype)
    y = weight.to(ct) * torch.tanh(alpha.to(ct) * x.to(ct))
    if bias is not None:
        y = y + bias.to(ct)
    return y.to(x.dtype)


def derf(x: Tensor, alpha: Tensor, shift: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Derf (Dynamic erf, arXiv 2512.10938): y = γ ⊙ erf(a·x + s) + b, point-wise, with scalars a = ``alpha`` and
    s = ``shift`` (one element each), γ = ``weight`` and b = ``bias`` of shape (D,); x of shape (..., D).

    Computed in float32 (float64 for float64 input) and returned in x's dtype, as every norm here.
    """
    check_floating(weight, "weight")
    if weight.dim() != 1:
        raise ValueError(f"weight must be 1-D of shape (D,), got shape {tuple(weight.shape)}")
    dim = weight.shape[0]
    check_input(x, dim, "derf")
    check_params(x, dim, {"weight": weight, "bias": bias})
    check_params(x, 1, {"alpha": alpha.reshape(-1) if isinstance(alpha, Tensor) else alpha,
                        "shift": shift.reshape(-1) if isinstance(shift, Tensor) else shift})
    ct = compute_dtype(x.dtype)
    y = weight.to(ct) * torch.erf(alpha.to(ct) * x.to(ct) + shift.to(ct))
    if bias is not None:
        y = y + bias.to(ct)
    return y.to(x.dtype)
