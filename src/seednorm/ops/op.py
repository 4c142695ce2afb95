"""SeeDNorm as one ``torch.library`` custom op pair, with fake (meta) functions, an autograd formula and the dispatch.

    seednorm::forward(x, weight?, alpha, beta, bias?, residual?, keep?, num_heads, eps, activation, dot_scale,
                      center, impl, rng?, rows?, dropout)
        -> (y, rstd, t, mean, summed)    rstd = 1/RMS (...,), t = σ(s) (..., H), mean = the row mean of x (...,) when
                                         ``center`` (else empty), summed = x + residual (or empty)
    seednorm::backward(dy, x, weight?, alpha, beta, bias?, keep?, rstd, t, mean?, dsummed?, num_heads, activation,
                       dot_scale, impl, rng?, rows?, dropout)
        -> (dx, dweight, dalpha, dbeta, dbias)   dweight (dbias) is empty when weight (bias) is None

Dynamic dropout multiplies the dynamic term σ(s)·α by a mask k (0 or 1/(1 − p) per element), in one of two forms:
``keep``, a given mask of x's shape in the compute dtype, or (what ``seednorm.functional`` passes) ``rng``, the
int64 (seed, offset) pair the kernels generate the mask from (``philox.py``) with probability ``dropout``, and
``rows``, the global index of each row of x (x.shape[:-1], int64; None: x's own row order), which a DTensor shard
passes so that shards draw distinct parts of one mask. Nothing of size (M, D) is saved for the backward, which
generates the same mask again. ``center`` normalizes x − mean(x) (the centering form, spec §6) and ``bias`` is
added to y. Both ops are opaque to autograd and to ``torch.compile``: the forward saves x (or x + residual), the
parameters, the given mask or the (seed, offset) pair, 1/RMS, σ(s) and the mean, and the backward op computes all
gradients in one pass. ``torch.compile(fullgraph=True)`` traces them through their
fake functions without graph breaks. Eager calls run the same kernels and gradient formula through a plain
``autograd.Function`` (``_EagerFused``), which skips the op's Python dispatch.
``impl`` picks the kernels: "triton" (``triton.py``, CUDA, or CPU under ``TRITON_INTERPRET=1``), "cpp"
(``cpu.py``, C++/OpenMP for CPU) or "compiled" (``compiled.py``, TorchInductor, any device).

Choosing the implementation (``resolve_impl``): an explicit ``impl`` runs as asked (and raises if it cannot).
``impl="auto"`` (the ``SeeDNorm`` module's default) first takes ``$SEEDNORM_IMPL`` when set (one of ``IMPLS``;
any other value is an error), then picks: the reference for float64 (exact, twice differentiable); Triton for
CUDA tensors; on CPU, in this order,

1. "cpp" when the C++ kernels build and load: a working C++ compiler and a writable, private kernel cache
   (tried once per process: a compiler that exists but fails to build counts as none);
2. else "compiled" when TorchInductor's C++ compiler builds a small shared library (Inductor needs one too);
3. else "reference",

with one warning per process (``FallbackWarning``) naming the cause; ``impl=`` or ``SEEDNORM_IMPL`` chooses
explicitly and silences it. Any other device runs the reference.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from types import ModuleType

import torch
from torch import Tensor

from . import compiled, cpu
from .dtypes import compute_dtype
from .sigma import ACTIVATIONS

IMPLS = ("auto", "reference", "triton", "cpp", "compiled")
IMPL_ENV = "SEEDNORM_IMPL"
HAS_TRITON = importlib.util.find_spec("triton") is not None
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # read once: triton reads it at import too
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what the Triton and C++ kernels take


def _kernels(impl: str) -> ModuleType:
    if impl == "triton":
        from . import triton as kernels  # imported on first use: triton is optional

        return kernels
    return cpu if impl == "cpp" else compiled


def _rows(t: Tensor) -> Tensor:
    """(..., D) → (M, D) with a contiguous last dim (a view when the layout allows it)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def _forward_impl(
    x: Tensor,
    weight: Tensor | None,
    alpha: Tensor,
    beta: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    keep: Tensor | None,
    num_heads: int,
    eps: float,
    activation: str,
    dot_scale: float,
    center: bool,
    impl: str,
    rng: Tensor | None = None,
    rows: Tensor | None = None,
    dropout: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    res = None if residual is None else _rows(residual)
    mask = None if keep is None else _rows(keep)
    row_ids = None if rows is None else rows.reshape(-1)
    y, rstd, t, mean, summed = _kernels(impl).forward(
        _rows(x), res, weight, alpha, beta, bias, mask, num_heads, eps, activation, dot_scale, center,
        rng, row_ids, dropout,
    )
    return _op_outputs(x, num_heads, y, rstd, t, mean, summed)


def _op_outputs(x: Tensor, num_heads: int, y: Tensor, rstd: Tensor, t: Tensor, mean: Tensor | None,
                summed: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The kernels' row outputs ((M, D), (M,), (M, H), (M,) or None, (M, D) or None) in ``seednorm::forward``'s
    shapes: x's leading dims back, and an absent mean or sum as an empty tensor (an op returns tensors only)."""
    lead = x.shape[:-1]
    summed = x.new_empty(0) if summed is None else summed.view(x.shape)
    mean = rstd.new_empty(0) if mean is None else mean.view(lead)
    return y.view(x.shape), rstd.view(lead), t.view(*lead, num_heads), mean, summed


_forward = torch.library.custom_op("seednorm::forward", _forward_impl, mutates_args=())


@_forward.register_fake
def _forward_fake(x, weight, alpha, beta, bias, residual, keep, num_heads, eps, activation, dot_scale, center, impl,
                  rng=None, rows=None, dropout=0.0):
    lead, ct = x.shape[:-1], compute_dtype(x.dtype)
    summed = x.new_empty(0) if residual is None else x.new_empty(x.shape)
    mean = x.new_empty(lead if center else 0, dtype=ct)
    return (x.new_empty(x.shape), x.new_empty(lead, dtype=ct), x.new_empty((*lead, num_heads), dtype=ct), mean,
            summed)


def _backward_impl(
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
    impl: str,
    rng: Tensor | None = None,
    rows: Tensor | None = None,
    dropout: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    ds = None if dsummed is None else _rows(dsummed)
    mask = None if keep is None else _rows(keep)
    dx, dweight, dalpha, dbeta, dbias = _kernels(impl).backward(
        _rows(dy), _rows(x), weight, alpha, beta, bias, mask, rstd.reshape(-1), t.reshape(-1, num_heads),
        None if mean is None else mean.reshape(-1), ds, num_heads, activation, dot_scale,
        rng, None if rows is None else rows.reshape(-1), dropout,
    )
    empty = alpha.new_empty(0)
    return (dx.view(x.shape), empty if dweight is None else dweight, dalpha, dbeta,
            empty if dbias is None else dbias)


_backward = torch.library.custom_op("seednorm::backward", _backward_impl, mutates_args=())


@_backward.register_fake
def _backward_fake(dy, x, weight, alpha, beta, bias, keep, rstd, t, mean, dsummed, num_heads, activation, dot_scale,
                   impl, rng=None, rows=None, dropout=0.0):
    dweight = alpha.new_empty(0) if weight is None else weight.new_empty(weight.shape)
    dbias = alpha.new_empty(0) if bias is None else bias.new_empty(bias.shape)
    return x.new_empty(x.shape), dweight, alpha.new_empty(alpha.shape), beta.new_empty(beta.shape), dbias


def _setup_context(ctx, inputs, output) -> None:
    """What ``_grad`` needs: the input (or x + residual), the parameters, the mask or the dropout's (seed, offset)
    and row indices, and the forward's statistics."""
    x, weight, alpha, beta, bias, residual, keep, num_heads, _eps, activation, dot_scale, center, impl, *drop = inputs
    rng, rows, dropout = drop + [None, None, 0.0][len(drop):]  # the op's defaults
    _y, rstd, t, mean, summed = output
    ctx.mark_non_differentiable(rstd, t, mean)
    ctx.has_residual = residual is not None
    ctx.center = center
    ctx.config = (num_heads, activation, dot_scale, impl)
    ctx.dropout = dropout
    ctx.num_inputs = len(inputs)
    ctx.save_for_backward(summed if ctx.has_residual else x, weight, alpha, beta, bias, keep, rstd, t, mean, rng,
                          rows)


def _unused(grad: Tensor | None, like: Tensor) -> bool:
    """Whether ``grad`` is autograd's stand-in for the gradient of an output the loss does not use: None, or the
    plain zeros it materializes for a tensor-subclass (DTensor) output, which would mix tensor kinds in the op."""
    return grad is None or (type(grad) is Tensor and type(like) is not Tensor)


def _grad(ctx, dy, _drstd, _dt, _dmean, dsummed):
    x, weight, alpha, beta, bias, keep, rstd, t, mean, rng, rows = ctx.saved_tensors
    # An unused output (x + residual after a final norm, or y when only the sum is used) is a zero gradient: the
    # sum's is skipped, y's is zeros of x's kind and placement.
    dsummed = None if not ctx.has_residual or _unused(dsummed, x) else dsummed
    dy = torch.zeros_like(x) if _unused(dy, x) else dy
    mean = mean if ctx.center else None
    dx, dweight, dalpha, dbeta, dbias = _backward(dy, x, weight, alpha, beta, bias, keep, rstd, t, mean, dsummed,
                                                  *ctx.config, rng, rows, ctx.dropout)
    dresidual = dx if ctx.has_residual else None
    grads = (dx, None if weight is None else dweight, dalpha, dbeta, None if bias is None else dbias, dresidual)
    return grads + (None,) * (ctx.num_inputs - len(grads))


_forward.register_autograd(_grad, setup_context=_setup_context)


class _EagerFused(torch.autograd.Function):
    """The same kernels and gradient formula as the custom op, called directly in eager mode.

    The custom op's Python dispatch costs ~0.1 ms per forward + backward, as much as the kernels themselves at
    the widths of the CPU studies; ``torch.compile`` and other tracers still see the custom op. Its outputs are y
    (and x + residual when there is a residual) only: 1/RMS, σ(s) and the mean stay (M,)-rows saved for the
    backward, and absent gradients are None, so a call allocates and wraps no tensor it does not need.
    """

    @staticmethod
    def forward(ctx, x, weight, alpha, beta, bias, residual, keep, num_heads, eps, activation, dot_scale, center,
                impl, rng=None, rows=None, dropout=0.0):
        mask = None if keep is None else _rows(keep)
        row_ids = None if rows is None else rows.reshape(-1)
        y, rstd, t, mean, summed = _kernels(impl).forward(
            _rows(x), None if residual is None else _rows(residual), weight, alpha, beta, bias, mask, num_heads,
            eps, activation, dot_scale, center, rng, row_ids, dropout,
        )
        ctx.config = (num_heads, activation, dot_scale, impl)
        ctx.dropout = dropout
        ctx.num_inputs = 13 if rng is None else 16  # apply's arguments: the op's, with or without the dropout's
        ctx.has_residual = residual is not None
        ctx.save_for_backward(x if summed is None else summed, weight, alpha, beta, bias, mask, rstd, t, mean, rng,
                              row_ids)
        y = y.view(x.shape)
        return y if summed is None else (y, summed.view(x.shape))

    @staticmethod
    @torch.autograd.function.once_differentiable  # no double backward: an error, never a silent zero
    def backward(ctx, dy, dsummed=None):
        x, weight, alpha, beta, bias, keep, rstd, t, mean, rng, rows = ctx.saved_tensors
        num_heads, activation, dot_scale, impl = ctx.config
        dx, dweight, dalpha, dbeta, dbias = _kernels(impl).backward(
            _rows(dy), _rows(x), weight, alpha, beta, bias, keep, rstd, t, mean,
            None if dsummed is None else _rows(dsummed), num_heads, activation, dot_scale, rng, rows, ctx.dropout,
        )
        dx = dx.view(dy.shape)
        grads = (dx, dweight, dalpha, dbeta, dbias, dx if ctx.has_residual else None)
        return grads + (None,) * (ctx.num_inputs - len(grads))


# ------------------------------------------------------------------------------------------------------------
# Dispatch


class FallbackWarning(UserWarning):
    """impl="auto" runs a slower implementation than it would on a machine with a working C++ toolchain."""


def check_impl(impl: str, what: str = "impl") -> None:
    """``impl`` must be one of ``IMPLS``."""
    if impl not in IMPLS:
        raise ValueError(f"{what} must be one of {IMPLS}, got {impl!r}")


def env_impl() -> str:
    """``$SEEDNORM_IMPL``, what ``impl="auto"`` stands for ("auto" when unset or empty)."""
    impl = os.environ.get(IMPL_ENV) or "auto"
    check_impl(impl, f"${IMPL_ENV}")
    return impl


_cpu_choice: str | None = None


def _assume_constant_result(fn):
    """``torch.compiler.assume_constant_result(fn)`` without importing ``torch._dynamo`` (a second of
    ``import seednorm``): that decorator only sets this attribute, which Dynamo reads when it traces a call of
    ``fn`` (``tests/ops/test_compile.py`` checks that the two agree)."""
    fn._dynamo_marked_constant = True
    return fn


@_assume_constant_result  # decided once per process, also when first reached in a compiled trace
def _auto_cpu() -> str:
    """What "auto" runs on CPU: "cpp", else "compiled", else "reference" (the order of the module docstring)."""
    global _cpu_choice
    if _cpu_choice is None:
        why_not_cpp = cpu.unavailable()
        if why_not_cpp is None:
            _cpu_choice = "cpp"
        else:
            why_not_compiled = cpu.inductor_unavailable()
            choice = "compiled" if why_not_compiled is None else "reference"
            cause = f"the C++ kernels are unavailable: {why_not_cpp}"
            if why_not_compiled is not None:
                cause += f"\nThe compiled path is unavailable too: {why_not_compiled}"
            warnings.warn(
                f"seednorm: impl='auto' runs impl={choice!r} on CPU, because {cause}\nPass impl= to the layer or "
                f"set {IMPL_ENV}=cpp|compiled|reference to choose the implementation and silence this warning.",
                FallbackWarning,
                stacklevel=2,
            )
            _cpu_choice = choice
    return _cpu_choice


@_assume_constant_result  # a compiled graph is never an ONNX export; an export's trace reads the flag once
def onnx_exporting() -> bool:
    """Whether ``torch.onnx.export`` (either exporter) is tracing the model now. ``torch.onnx`` is a lazy module:
    when nothing has imported it, no export is running and it is not imported here."""
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def _traced() -> bool:
    """Whether a tracer is running: ``torch.compile`` or ``torch.export`` (the dynamo ONNX exporter) or
    ``torch.jit.trace`` (the TorchScript one). Cheap enough for every eager call (~0.1 µs), where
    ``onnx_exporting`` costs ~1 µs: an ONNX export is asked about only under a tracer."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def resolve_impl(impl: str, x: Tensor, *, fusable: bool = True) -> str:
    """The implementation that runs: "reference", "triton", "cpp" or "compiled".

    An explicit ``impl`` is returned as is; "auto" takes ``$SEEDNORM_IMPL`` when set, else picks Triton for CUDA
    tensors, on CPU the C++ kernels (the fastest path measured there by ``python -m seednorm.bench``) or the
    next that works (see the module docstring), the reference for float64 (exact, and twice differentiable) and
    any other device. Calls the fused op does not cover (``fusable=False``: the element-wise forms of s, and
    ``torch.func`` transforms) always take the reference path, whatever ``impl`` asks; so do calls traced by
    ``torch.onnx.export``, which then records the reference's plain operators instead of the custom op.
    """
    check_impl(impl)
    if not fusable or (_traced() and onnx_exporting()):
        return "reference"
    if impl == "auto":
        impl = env_impl()
    if impl != "auto":
        return impl
    if x.dtype == torch.float64:
        return "reference"
    if x.device.type == "cuda" and HAS_TRITON:
        return "triton"
    if x.device.type == "cpu":
        return _auto_cpu()
    return "reference"


def check_residual(x: Tensor, residual: Tensor) -> None:
    """The residual must be a tensor of x's shape and dtype (it is added to x and returned in that dtype)."""
    if not isinstance(residual, Tensor):
        raise TypeError(f"residual must be a torch.Tensor, got {type(residual).__name__}")
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError(
            f"residual must match the input's shape and dtype, got {tuple(residual.shape)} {residual.dtype} "
            f"for an input of {tuple(x.shape)} {x.dtype}"
        )


def residual_sum(x: Tensor, residual: Tensor) -> Tensor:
    """x + residual, added in float32 (float64 for float64) and rounded to x's dtype, as the fused kernels do."""
    check_residual(x, residual)
    ct = compute_dtype(x.dtype)
    return (x.to(ct) + residual.to(ct)).to(x.dtype)


def seednorm_fused(
    x: Tensor,
    weight: Tensor | None,
    alpha: Tensor,
    beta: Tensor,
    residual: Tensor | None = None,
    *,
    num_heads: int,
    eps: float,
    activation: str,
    dot_scale: float,
    impl: str,
    bias: Tensor | None = None,
    keep: Tensor | None = None,
    center: bool = False,
    rng: Tensor | None = None,
    rows: Tensor | None = None,
    dropout: float = 0.0,
) -> Tensor | tuple[Tensor, Tensor]:
    """SeeDNorm through the custom op: y = [σ(s)·α ⊙ keep + γ] ⊙ x̃ / RMS(x̃) + bias, x of shape (..., D), with
    x̃ = x − mean(x) when ``center`` (else x̃ = x) and s computed from x̃.

    Arguments are already checked and resolved (``eps`` and ``dot_scale`` are numbers) as in
    ``seednorm.functional.seednorm``; ``impl`` is "triton", "cpp" or "compiled". ``keep`` (x's shape, the compute
    dtype: 0 or 1/(1 − p)) is a given dynamic-dropout mask, None for none; ``rng`` (int64 (2,) on x's device: seed,
    offset, from ``philox.draw``) instead generates the mask of probability ``dropout`` in the kernels, ``rows``
    (x.shape[:-1] int64, or None) the global row indices it is keyed by (``philox.py``). With a ``residual`` of
    x's shape and dtype, returns ``(y, x + residual)`` with y computed on x + residual (one read of each).
    """
    if impl not in ("triton", "cpp", "compiled"):
        raise ValueError(f"the fused op runs impl 'triton', 'cpp' or 'compiled', got {impl!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"the fused op supports activations {ACTIVATIONS}, got {activation!r}")
    if residual is not None:
        check_residual(x, residual)
    if keep is not None and (keep.shape != x.shape or keep.dtype != compute_dtype(x.dtype)
                             or keep.device != x.device):
        raise ValueError(f"keep must have the input's shape {tuple(x.shape)}, dtype {compute_dtype(x.dtype)} and "
                         f"device, got {tuple(keep.shape)} {keep.dtype} on {keep.device}")
    if rng is not None and (rng.shape != (2,) or rng.dtype != torch.int64 or rng.device != x.device):
        raise ValueError(f"rng must be the int64 (seed, offset) pair on the input's device {x.device}, got shape "
                         f"{tuple(rng.shape)} {rng.dtype} on {rng.device}")
    if rng is not None and (keep is not None or not 0.0 < dropout <= 1.0):
        raise ValueError(f"rng draws a dropout mask of probability 0 < dropout <= 1 instead of keep, got dropout="
                         f"{dropout!r}{' and keep' if keep is not None else ''}")
    if torch._C._are_functorch_transforms_active():
        raise RuntimeError(
            "the fused op does not support torch.func transforms (grad, vmap, jacrev, jvp); call "
            "seednorm.seednorm, which runs the reference math under them"
        )
    if impl == "triton":
        if not HAS_TRITON:
            raise ValueError("impl='triton' needs the triton package")
        if x.device.type != "cuda" and not TRITON_INTERPRET:
            raise ValueError(f"impl='triton' needs a CUDA tensor (or TRITON_INTERPRET=1 on CPU), got {x.device}")
    if impl == "cpp" and x.device.type != "cpu":
        raise ValueError(f"impl='cpp' runs on CPU tensors, got {x.device}")
    if impl in ("triton", "cpp") and x.dtype not in KERNEL_DTYPES:
        raise TypeError(f"impl={impl!r} supports inputs of dtype {KERNEL_DTYPES}, got {x.dtype}")
    # Not traced (torch.compile, torch.jit.trace), not a tensor subclass, not on the meta device: those go through
    # the op (its fake function, or its schema for TorchScript).
    eager = type(x) is Tensor and x.device.type != "meta" and not _traced()
    args = (x, weight, alpha, beta, bias, residual, keep, num_heads, float(eps), activation, float(dot_scale),
            bool(center), impl, *(() if rng is None else (rng, rows, float(dropout))))
    if eager:
        return _EagerFused.apply(*args)  # y, or (y, x + residual)
    y, _rstd, _t, _mean, summed = _forward(*args)
    return y if residual is None else (y, summed)
