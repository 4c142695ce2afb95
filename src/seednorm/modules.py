"""nn.Modules over the functional forms, and ``build_norm``, the string-or-type factory."""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import functional as SF
from .ops import check_impl
from .ops.dtypes import compute_dtype

__all__ = ["SeeDNorm", "AdaSeeDNorm", "RMSNorm", "LayerNorm", "DyT", "Derf", "build_norm", "NORMS",
           "DYNAMIC_PARAMETERS", "dynamic_parameters", "ChannelsFirst", "channels_first_class", "SeeDNorm2d",
           "AdaSeeDNorm2d", "RMSNorm2d", "LayerNorm2d", "DyT2d", "Derf2d", "norm_class"]

# SeeDNorm's dynamic parameters, by attribute: the one registry every caller uses (weight decay, gradient-norm
# groups, conversion, integrations). α scales the dynamic term, β gives s = x·βᵀ. A variant without one of them
# (``alpha_mode="none"``, ``beta_mode="none"``) has None under that attribute, and it is not listed.
DYNAMIC_PARAMETERS = ("alpha", "beta")


def _as_dim(normalized_shape: int | Sequence[int]) -> int:
    """The width D from an int or a one-element shape (only the last dimension is normalized)."""
    shape = normalized_shape
    if isinstance(shape, (tuple, list, torch.Size)) and len(shape) == 1:
        shape = shape[0]
    if isinstance(shape, bool) or not isinstance(shape, numbers.Integral):
        raise ValueError(
            f"normalized_shape must be an integer (the last dimension) or a one-element shape of one, got "
            f"{normalized_shape!r}; these norms normalize over the last dimension only"
        )
    dim = int(shape)
    if dim < 1:
        raise ValueError(f"normalized_shape must be >= 1, got {dim}")
    return dim


class _DynamicGain(nn.Module):
    """The α, β of SeeDNorm and AdaSeeDNorm, their options and checks (shared by both).

    ``alpha_mode``: "vector" (α of shape (D,), the paper's), "scalar" (one α of shape (1,) for the whole layer,
    every head and channel), "none" (no α: α ≡ 1). ``beta_mode``: "dot" (s_h = dot_scale·⟨x_h, β_h⟩ per head, the
    paper's), "elementwise" (s = dot_scale·x ⊙ β per channel, β of shape (D,)), "none" (no β: s = dot_scale·x per
    channel). The element-wise forms have no heads (``num_heads`` must be 1). A dropped parameter is None.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        *,
        num_heads: int,
        eps: float | None,
        alpha_init: float,
        activation: str,
        dot_scale: float | str,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        alpha_mode: str = "vector",
        beta_mode: str = "dot",
    ) -> None:
        super().__init__()
        dim = _as_dim(normalized_shape)
        num_heads = SF.check_heads(dim, num_heads)
        eps = SF.check_eps(eps)
        SF.check_activation(activation)
        SF.resolve_dot_scale(dot_scale, dim, num_heads)
        alpha_mode = SF.check_mode(alpha_mode, SF.ALPHA_MODES, "alpha_mode")
        beta_mode = SF.check_mode(beta_mode, SF.BETA_MODES, "beta_mode")
        if beta_mode != "dot" and num_heads != 1:
            raise ValueError(f"beta_mode={beta_mode!r} has no heads (s is per channel): num_heads must be 1, "
                             f"got {num_heads}")
        alpha_init = SF.finite_number(alpha_init, "alpha_init")
        if alpha_init == 0 and alpha_mode != "none" and beta_mode != "none":
            raise ValueError("alpha_init=0 with beta=0 makes the gradients of both vanish (spec §2); use e.g. 1.0")
        self.normalized_shape = (dim,)
        self.num_heads = num_heads
        self.eps = eps
        self.alpha_init = alpha_init
        self.activation = activation
        self.dot_scale = dot_scale if isinstance(dot_scale, str) else float(dot_scale)
        self.alpha_mode = alpha_mode
        self.beta_mode = beta_mode
        factory = {"device": device, "dtype": dtype}
        alpha_shape = {"vector": (dim,), "scalar": (1,)}.get(alpha_mode)
        self.alpha = None if alpha_shape is None else nn.Parameter(torch.empty(alpha_shape, **factory))
        self.beta = None if beta_mode == "none" else nn.Parameter(torch.empty(dim, **factory))

    def reset_parameters(self) -> None:
        if self.alpha is not None:
            nn.init.constant_(self.alpha, self.alpha_init)
        if self.beta is not None:
            nn.init.zeros_(self.beta)

    def extra_repr(self) -> str:
        modes = "".join(f", {name}={value!r}" for name, value, default in
                        (("alpha_mode", self.alpha_mode, "vector"), ("beta_mode", self.beta_mode, "dot"))
                        if value != default)
        return (
            f"{self.normalized_shape[0]}, num_heads={self.num_heads}, eps={self.eps}, "
            f"alpha_init={self.alpha_init}, activation={self.activation!r}, dot_scale={self.dot_scale!r}" + modes
        )


def seednorm_call(x: Tensor, weight: Tensor | None, alpha: Tensor | None, beta: Tensor | None, bias: Tensor | None,
                  options: dict[str, Any]) -> Tensor:
    """``SeeDNorm.forward``'s call of the functional form: one node under ``torch.fx`` tracing (``torch.fx.wrap``), so
    traced models (``torch.fx.symbolic_trace``, timm's FX feature extractors) keep the layer's argument checks out of
    the trace. A layer without γ (``weight`` None here) passes γ = 0 (the functional form reads None as γ = 1)."""
    if weight is None:
        weight = torch.zeros(x.shape[-1], dtype=compute_dtype(x.dtype), device=x.device)
    return SF.seednorm(x, weight, alpha, beta, bias, **options)


def ada_seednorm_call(x: Tensor, alpha: Tensor, beta: Tensor, scale: Tensor, shift: Tensor,
                      options: dict[str, Any]) -> Tensor:
    """``AdaSeeDNorm.forward``'s call of the functional form, one node under ``torch.fx`` tracing."""
    return SF.ada_seednorm(x, alpha, beta, scale, shift, **options)


torch.fx.wrap("seednorm_call")
torch.fx.wrap("ada_seednorm_call")


class SeeDNorm(_DynamicGain):
    """Self-Rescaled Dynamic Normalization over the last dimension (spec §1–§4).

    y = [σ(s)·α + γ] ⊙ x / RMS(x), with s = dot_scale·⟨x_h, β_h⟩ per head h. Input (..., D) → output (..., D) in the
    input dtype, computed in float32 (float64 for float64 input).

    Parameters: ``weight`` (γ, init 1), ``alpha`` (α, init ``alpha_init``), ``beta`` (β, init 0), each (D,);
    ``bias`` (D,) when ``bias=True``. At init (β = 0, odd σ) the layer equals RMSNorm with the same γ.
    ``center=True`` subtracts the row mean first (LayerNorm-equivalent form, for converting LayerNorm models).
    ``dynamic_dropout`` drops elements of σ(s)·α in training mode only.
    ``impl`` chooses the implementation as in ``seednorm.functional.seednorm``; the default "auto" follows
    ``$SEEDNORM_IMPL`` when set, else picks the fastest that works here (``seednorm.ops.op``).

    The paper's ablations (spec §6) are options; the defaults are the paper's layer:

    - ``alpha_mode``: "vector" (α (D,)), "scalar" (one α (1,) for the whole layer, broadcast to every head and
      channel), "none" (no α: the dynamic term is σ(s), α ≡ 1).
    - ``beta_mode``: "dot" (s_h = dot_scale·⟨x_h, β_h⟩, one per token and head), "elementwise" (one s per channel:
      the dynamic term is σ(dot_scale·x ⊙ β) ⊙ α), "none" (no β: σ(dot_scale·x) ⊙ α). The element-wise forms
      need ``num_heads=1``.
    - ``gamma_mode``: "vector" (γ (D,)), "none" (no γ: γ ≡ 0, the gain is the dynamic term alone; at init, β = 0
      and odd σ, the layer outputs zeros and β still gets a gradient).

    A dropped parameter is None (not in ``parameters()``, the state dict or ``dynamic_parameters``). "scalar" and
    "none" α and "none" γ run the fused op (α as a (D,) vector, γ = 0); the element-wise β forms run the reference.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        *,
        num_heads: int = 1,
        eps: float | None = None,
        alpha_init: float = 1.0,
        activation: str = "tanh",
        dynamic_dropout: float = 0.0,
        dot_scale: float | str = 1.0,
        center: bool = False,
        bias: bool = False,
        alpha_mode: str = "vector",
        beta_mode: str = "dot",
        gamma_mode: str = "vector",
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            normalized_shape,
            num_heads=num_heads,
            eps=eps,
            alpha_init=alpha_init,
            activation=activation,
            dot_scale=dot_scale,
            device=device,
            dtype=dtype,
            alpha_mode=alpha_mode,
            beta_mode=beta_mode,
        )
        check_impl(impl)
        self.impl = impl
        self.dynamic_dropout = SF.check_dropout(dynamic_dropout)
        self.center = bool(center)
        self.gamma_mode = SF.check_mode(gamma_mode, SF.GAMMA_MODES, "gamma_mode")
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.normalized_shape, **factory)) if gamma_mode == "vector" else None
        self.bias = nn.Parameter(torch.empty(self.normalized_shape, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        options = {"num_heads": self.num_heads, "eps": self.eps, "activation": self.activation,
                   "dot_scale": self.dot_scale, "center": self.center, "dynamic_dropout": self.dynamic_dropout,
                   "training": self.training, "impl": self.impl, "beta_mode": self.beta_mode}
        return seednorm_call(x, self.weight, self.alpha, self.beta, self.bias, options)

    def extra_repr(self) -> str:
        extra = f", gamma_mode={self.gamma_mode!r}" if self.gamma_mode != "vector" else ""
        extra += f", dynamic_dropout={self.dynamic_dropout}" if self.dynamic_dropout else ""
        extra += ", center=True" if self.center else ""
        extra += ", bias=True" if self.bias is not None else ""
        extra += f", impl={self.impl!r}" if self.impl != "auto" else ""
        return super().extra_repr() + extra


class AdaSeeDNorm(_DynamicGain):
    """SeeDNorm for adaLN/DiT conditioning (spec §6).

    forward(x, scale, shift) = [(σ(x·βᵀ)·α + 1) ⊙ x/RMS(x)] · (1 + scale) + shift, where ``scale`` and ``shift`` are
    the condition-generated γ(c), η(c), broadcastable to x of shape (..., D). Parameters: ``alpha``, ``beta`` (D,).
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        *,
        num_heads: int = 1,
        eps: float | None = None,
        alpha_init: float = 1.0,
        activation: str = "tanh",
        dot_scale: float | str = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            normalized_shape,
            num_heads=num_heads,
            eps=eps,
            alpha_init=alpha_init,
            activation=activation,
            dot_scale=dot_scale,
            device=device,
            dtype=dtype,
        )
        self.reset_parameters()

    def forward(self, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        options = {"num_heads": self.num_heads, "eps": self.eps, "activation": self.activation,
                   "dot_scale": self.dot_scale}
        return ada_seednorm_call(x, self.alpha, self.beta, scale, shift, options)


class RMSNorm(nn.RMSNorm):
    """RMSNorm baseline: ``torch.nn.RMSNorm`` with SeeDNorm's constructor shape and input checks."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        *,
        eps: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        eps = SF.check_eps(eps)
        super().__init__(_as_dim(normalized_shape), eps=eps, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return SF.rms_norm(x, self.weight, eps=self.eps)


class LayerNorm(nn.LayerNorm):
    """LayerNorm baseline: ``torch.nn.LayerNorm`` with SeeDNorm's constructor shape; ``eps=None`` means 1e-5."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        *,
        eps: float | None = None,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        eps = SF.check_eps(eps)
        eps = 1e-5 if eps is None else eps
        super().__init__(_as_dim(normalized_shape), eps=eps, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return SF.layer_norm(x, self.weight, self.bias, eps=self.eps)


class _PointwiseNorm(nn.Module):
    """What DyT and Derf share: learnable scalars (one (1,) parameter each, created in ``SCALARS`` order, each
    initialised to its ``<name>_init``), then γ = ``weight`` (D,), init 1, and b = ``bias`` (D,), init 0."""

    SCALARS: tuple[str, ...] = ()

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        inits: dict[str, float],
        bias: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        dim = _as_dim(normalized_shape)
        self.normalized_shape = (dim,)
        factory = {"device": device, "dtype": dtype}
        for name in self.SCALARS:
            setattr(self, f"{name}_init", SF.finite_number(inits[name], f"{name}_init"))
        for name in self.SCALARS:
            setattr(self, name, nn.Parameter(torch.empty(1, **factory)))
        self.weight = nn.Parameter(torch.empty(dim, **factory))
        self.bias = nn.Parameter(torch.empty(dim, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name in self.SCALARS:
            nn.init.constant_(getattr(self, name), getattr(self, f"{name}_init"))
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        inits = "".join(f", {name}_init={getattr(self, f'{name}_init')}" for name in self.SCALARS)
        return f"{self.normalized_shape[0]}{inits}, bias={self.bias is not None}"


class DyT(_PointwiseNorm):
    """Dynamic Tanh baseline: y = γ ⊙ tanh(a·x) + b, scalar ``alpha`` = a (init ``alpha_init``), γ = ``weight``."""

    SCALARS = ("alpha",)

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        *,
        alpha_init: float = 0.5,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(normalized_shape, {"alpha": alpha_init}, bias, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        return SF.dyt(x, self.alpha, self.weight, self.bias)


class Derf(_PointwiseNorm):
    """Dynamic erf baseline (Chen, Lu, Zhu, Sun, Liu, arXiv 2512.10938): y = γ ⊙ erf(a·x + s) + b, point-wise.

    Parameters: scalars ``alpha`` = a (init ``alpha_init``) and ``shift`` = s (init ``shift_init``), each of shape
    (1,); ``weight`` = γ (D,), init 1; ``bias`` = b (D,), init 0, when ``bias=True``. The defaults a = 0.5, s = 0
    are the initial values of the paper's released code. Input (..., D) → output (..., D) in the input dtype.
    """

    SCALARS = ("alpha", "shift")

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        *,
        alpha_init: float = 0.5,
        shift_init: float = 0.0,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(normalized_shape, {"alpha": alpha_init, "shift": shift_init}, bias, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        return SF.derf(x, self.alpha, self.shift, self.weight, self.bias)


NORMS: dict[str, type[nn.Module]] = {
    "rmsnorm": RMSNorm,
    "layernorm": LayerNorm,
    "dyt": DyT,
    "derf": Derf,
    "seednorm": SeeDNorm,
}


# ----------------------------------------------------------------------------------------------------------
# Channels-first forms (spec §6b): every norm above over dim 1 of (N, C, *spatial), by one mechanism.


def to_channels_last(x: Tensor, channels: int, name: str) -> Tensor:
    """(N, C, *spatial) → the view (N, *spatial, C), after checking that dim 1 holds the ``channels`` channels.

    One node under ``torch.fx`` tracing (``torch.fx.wrap``): its checks need a real tensor. The view is contiguous,
    so the kernels read it in place, exactly when C is the innermost stride of x (``torch.channels_last``,
    ``torch.channels_last_3d``, or any (N, *spatial, C) tensor transposed to channels-first).
    """
    SF.check_floating(x)
    one_d = name.removesuffix("2d")
    if x.dim() < 2:
        raise ValueError(
            f"{name} takes channels-first input (N, C, *spatial) with C = {channels} at dim 1, got shape "
            f"{tuple(x.shape)} of rank {x.dim()}; add the batch dim (x.unsqueeze(0)), or use {one_d} for "
            "input with the channels last (..., C)"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} normalizes over dim 1 (the channels) of (N, C, *spatial) input and was built for C = {channels}, "
            f"got shape {tuple(x.shape)}; build it with num_channels={x.shape[1]}, or use {one_d} for input with "
            "the channels last (..., C)"
        )
    return x.movedim(1, -1)


def condition_to_channels_last(condition: Tensor, x: Tensor) -> Tensor:
    """A tensor broadcastable to channels-first ``x`` (e.g. an adaLN scale of shape (N, C, 1, 1)), broadcast to
    x's shape (a stride-0 view, no copy) and moved like x to (N, *spatial, C). One node under ``torch.fx``."""
    if not isinstance(condition, Tensor):
        raise TypeError(f"a condition must be a torch.Tensor, got {type(condition).__name__}")
    try:
        condition = torch.broadcast_to(condition, x.shape)
    except RuntimeError:
        raise ValueError(
            f"a condition of shape {tuple(condition.shape)} does not broadcast to the channels-first input "
            f"{tuple(x.shape)}; give it the input's rank with the channels at dim 1, e.g. (N, C, 1, 1)"
        ) from None
    return condition.movedim(1, -1)


torch.fx.wrap("to_channels_last")
torch.fx.wrap("condition_to_channels_last")


class ChannelsFirst:
    """Mixin that turns a norm over the last dimension into the same norm over dim 1 of (N, C, *spatial) input.

    ``class SeeDNorm2d(ChannelsFirst, SeeDNorm)``: ``forward(x, *conditions)`` moves the channels of x (and of each
    condition, e.g. AdaSeeDNorm's scale and shift, broadcast to x's shape) last, calls the norm's own ``forward``
    and moves them back; parameters, state-dict keys, options and repr are the norm's. Any number of spatial dims
    (0 included: (N, C) is normalized per row). The output has x's shape and dtype; its memory is channels-last
    whatever the input's (as timm's ``LayerNorm2d``).

    Cost: when x is channels-last in memory (``torch.channels_last``, ``torch.channels_last_3d``, or C innermost
    in general) the moved view is contiguous and SeeDNorm's fused op reads it in place, with no copy. Otherwise the
    fused op runs on one contiguous copy of x; the reference path (float64, ``center``/``bias``, ...) reads the
    strided view directly.
    """

    normalized_shape: tuple[int, ...]

    def forward(self, x: Tensor, *conditions: Tensor) -> Tensor:
        x_last = to_channels_last(x, self.normalized_shape[0], type(self).__name__)
        moved = [condition_to_channels_last(c, x) for c in conditions]
        return super().forward(x_last, *moved).movedim(-1, 1)  # type: ignore[misc]


class SeeDNorm2d(ChannelsFirst, SeeDNorm):
    """SeeDNorm over the channels of channels-first input: (N, C, *spatial) → (N, C, *spatial), any number of
    spatial dims (not only 4-D NCHW; (N, C) too). At every position the C channels are one token of spec §1: s_h
    comes from that position's channels, in ``num_heads`` contiguous channel groups, and RMS is over its C channels.

    ``SeeDNorm2d(num_channels, **options)`` takes every option of ``SeeDNorm`` (``num_heads``, ``alpha_mode``,
    ``beta_mode``, ``gamma_mode``, ``dot_scale``, ``activation``, ``dynamic_dropout``, ``center``, ``bias``, ``eps``,
    ``impl``, ...) and has the same parameters and state-dict keys, so weights move between the two. Fused without a
    copy when x is channels-last in memory, on a contiguous copy otherwise (``ChannelsFirst``).
    """

    def __init__(self, num_channels: int, **options: Any) -> None:
        super().__init__(num_channels, **options)


_CHANNELS_FIRST: dict[type[nn.Module], type[nn.Module]] = {SeeDNorm: SeeDNorm2d}


def channels_first_class(cls: type[nn.Module]) -> type[nn.Module]:
    """The channels-first form of a norm class over the last dimension: ``class <Name>2d(ChannelsFirst, cls)``,
    made once per class (``SeeDNorm`` gives ``SeeDNorm2d``); a class that is channels-first already is returned.

    ``cls`` must keep its width in ``normalized_shape`` (as every norm here and torch's do). A class made here for a
    norm outside this module cannot be pickled whole (its state dict can: the keys are ``cls``'s).
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"channels_first_class expects an nn.Module class, got {cls!r}")
    if issubclass(cls, ChannelsFirst):
        return cls
    if cls not in _CHANNELS_FIRST:
        name = f"{cls.__name__}2d"
        doc = (f"{cls.__name__} over dim 1 of channels-first input (N, C, *spatial): the channels at each position "
               f"are normalized as {cls.__name__} normalizes a last dimension (``ChannelsFirst``).")
        made = type(name, (ChannelsFirst, cls), {"__doc__": doc, "__module__": cls.__module__})
        made.__qualname__ = name
        _CHANNELS_FIRST[cls] = made
    return _CHANNELS_FIRST[cls]


AdaSeeDNorm2d = channels_first_class(AdaSeeDNorm)  # forward(x, scale, shift), scale and shift as (N, C, 1, 1)
RMSNorm2d = channels_first_class(RMSNorm)
LayerNorm2d = channels_first_class(LayerNorm)
DyT2d = channels_first_class(DyT)
Derf2d = channels_first_class(Derf)


def dynamic_parameters(model: nn.Module) -> dict[str, str]:
    """The dynamic parameters α, β of every SeeDNorm and AdaSeeDNorm in ``model`` (subclasses and converted layers
    included, whatever name a subclass stores them under): ``{qualified parameter name: "alpha" | "beta"}``, in
    ``model.named_parameters()`` order; a parameter shared by several layers appears once, and one a variant drops
    (``alpha_mode="none"``, ``beta_mode="none"``) does not appear."""
    kinds: dict[int, str] = {}
    for module in model.modules():
        if isinstance(module, _DynamicGain):
            for kind in DYNAMIC_PARAMETERS:
                param = getattr(module, kind)
                if param is not None:
                    kinds[id(param)] = kind
    return {name: kinds[id(p)] for name, p in model.named_parameters() if id(p) in kinds}


def norm_class(name: str) -> type[nn.Module]:
    """The class of norm ``name`` in ``NORMS`` (case-insensitive, "_" and "-" ignored: "RMS_Norm" is "rmsnorm")."""
    key = name.lower().replace("_", "").replace("-", "")
    if key not in NORMS:
        raise ValueError(f"unknown norm {name!r}; choose one of {sorted(NORMS)} or pass a module class")
    return NORMS[key]


def build_norm(
    name_or_type: str | type[nn.Module] | Callable[..., nn.Module],
    dim: int,
    *,
    channels_first: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a norm layer of width ``dim``: ``build_norm("seednorm", 768, num_heads=16)``.

    ``name_or_type`` is one of the names in ``NORMS`` (case-insensitive), a module class, or any callable returning a
    module (e.g. ``functools.partial(SeeDNorm, num_heads=4)``); ``kwargs`` go to its constructor.
    ``channels_first=True`` gives the norm over dim 1 of (N, C, *spatial) input (``channels_first_class``:
    ``SeeDNorm2d`` for "seednorm"); then a callable must be a class or a ``functools.partial`` of one.
    """
    if not isinstance(channels_first, bool):
        raise TypeError(f"channels_first must be True or False, got {channels_first!r}")
    if isinstance(name_or_type, str):
        name_or_type = norm_class(name_or_type)
    if channels_first:
        if isinstance(name_or_type, functools.partial) and isinstance(name_or_type.func, type):
            name_or_type = functools.partial(channels_first_class(name_or_type.func), *name_or_type.args,
                                             **name_or_type.keywords)
        elif isinstance(name_or_type, type):
            name_or_type = channels_first_class(name_or_type)
        else:
            raise TypeError(
                f"build_norm(channels_first=True) needs a norm name, a module class or a functools.partial of one, "
                f"got {name_or_type!r}"
            )
    if callable(name_or_type):
        return name_or_type(dim, **kwargs)
    raise TypeError(f"build_norm expects a name, a module class or a callable, got {type(name_or_type).__name__}")
