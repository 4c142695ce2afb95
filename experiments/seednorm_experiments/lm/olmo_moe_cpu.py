"""OLMo-core's dropless MoE on CPU: its token gather and scatter (``olmo_core.kernels.moe``, autotuned Triton kernels
that need a GPU driver, also under ``TRITON_INTERPRET=1``) as torch indexing for CPU tensors.

OLMo-core routes each token's ``top_k`` copies to its experts with three kernels (``olmo_core.ops.moe`` wraps them
in autograd functions). With ``indices`` (T·k,) the copy ids sorted by expert (copy c = token c // k, choice c % k),
``bins`` (E,) the cumulative counts per expert, ``weights`` (T·k,) the router's weights by copy id, and no padding
(``bins`` are their own padded bins, as in the dropless MoE):

- ``gather(x, indices, bin_ids, weights, bins, k)``: row i of the output (T·k, D) is ``x[indices[i] // k]``
  (× ``weights[indices[i]]`` when given);
- ``scatter(x, indices, bin_ids, weights, bins, k)``: copy ``indices[i]`` of the (T, k, D) result is row i of ``x``
  (× its weight), summed over the k choices → (T, D);
- ``scatter_wgrad(x, grad, indices, bin_ids, bins, k)``: the weights' gradient (T·k,), at copy ``indices[i]`` the dot
  product of row i of ``x`` with ``grad[indices[i] // k]``.

The scaling and the dot product are in float32 (float64 for float64 tensors) and stored in ``x``'s dtype, as the
kernels do. :func:`install`
makes ``olmo_core.ops.moe`` take these for CPU tensors and OLMo-core's kernels for every other device; the kernels
module itself stays as it is. ``tests/experiments/test_olmo_moe_cpu.py`` compares each with OLMo-core's own Triton
kernel run by Triton's interpreter.
"""

from __future__ import annotations

import types

import torch

__all__ = ["gather", "install", "installed", "scatter", "scatter_wgrad"]


def gather(x: torch.Tensor, indices: torch.Tensor, bin_ids: torch.Tensor, weights: torch.Tensor | None,
           bins: torch.Tensor, top_k: int) -> torch.Tensor:
    """(T, D) tokens → (T·k, D) copies in expert order, each ``x[indices[i] // top_k]`` (× its weight)."""
    del bin_ids, bins  # without padding, row i of the output is the i-th copy in expert order
    _check(x, indices, top_k, tokens=x.shape[0])
    rows = x.index_select(0, indices.long() // top_k)
    if weights is None:
        return rows
    acc = _acc(x)
    return (rows.to(acc) * weights.index_select(0, indices.long()).to(acc)[:, None]).to(x.dtype)


def scatter(x: torch.Tensor, indices: torch.Tensor, bin_ids: torch.Tensor, weights: torch.Tensor | None,
            bins: torch.Tensor, top_k: int) -> torch.Tensor:
    """(T·k, D) copies in expert order → (T, D) tokens, each the sum of its k copies (× their weights)."""
    del bin_ids, bins
    _check(x, indices, top_k, tokens=indices.shape[0] // top_k)
    idx = indices.long()
    if weights is not None:
        x = (x.to(_acc(x)) * weights.index_select(0, idx).to(_acc(x))[:, None]).to(x.dtype)
    out = torch.empty_like(x).index_copy_(0, idx, x)
    return out.view(-1, top_k, x.shape[1]).sum(dim=1) if top_k > 1 else out


def scatter_wgrad(x: torch.Tensor, grad: torch.Tensor, indices: torch.Tensor, bin_ids: torch.Tensor,
                  bins: torch.Tensor, top_k: int) -> torch.Tensor:
    """The router weights' gradient (T·k,) by copy id: ⟨x[i], grad[indices[i] // top_k]⟩ at ``indices[i]``."""
    del bin_ids, bins
    _check(x, indices, top_k, tokens=grad.shape[0])
    idx = indices.long()
    dots = (x.to(_acc(x)) * grad.index_select(0, idx // top_k).to(_acc(x))).sum(dim=1).to(x.dtype)
    return torch.empty_like(dots).index_copy_(0, idx, dots)


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _check(x: torch.Tensor, indices: torch.Tensor, top_k: int, tokens: int) -> None:
    if x.ndim != 2 or indices.ndim != 1 or indices.shape[0] != tokens * top_k:
        raise ValueError(f"OLMo-core's MoE copy: x {tuple(x.shape)} and indices {tuple(indices.shape)} do not fit "
                         f"{tokens} tokens × top_k {top_k}")


_CPU = {"gather": gather, "scatter": scatter, "scatter_wgrad": scatter_wgrad}


def _dispatching(kernels: types.ModuleType | None) -> types.SimpleNamespace:
    """``kernels`` (OLMo-core's Triton module; None where triton did not import) with :data:`_CPU`'s three taking
    CPU tensors."""

    def on_cpu(name: str):
        def call(x: torch.Tensor, *args, **kwargs):
            if x.device.type == "cpu":
                return _CPU[name](x, *args, **kwargs)
            if kernels is None:
                raise RuntimeError(f"OLMo-core's MoE on {x.device.type} needs its Triton kernels, and triton did not "
                                   "import: install triton")
            return getattr(kernels, name)(x, *args, **kwargs)
        return call

    names = {n: getattr(kernels, n) for n in dir(kernels) if not n.startswith("__")} if kernels is not None else {}
    return types.SimpleNamespace(**{**names, **{n: on_cpu(n) for n in _CPU}}, _seednorm_cpu=True, _triton=kernels)


def installed() -> bool:
    """Whether ``olmo_core.ops.moe`` takes the CPU forms."""
    import olmo_core.ops.moe as ops

    return getattr(ops.kernels, "_seednorm_cpu", False)


def install() -> None:
    """Make OLMo-core's MoE ops take :func:`gather`, :func:`scatter`, :func:`scatter_wgrad` for CPU tensors (once;
    other devices keep OLMo-core's kernels)."""
    import olmo_core.ops.moe as ops

    if not installed():
        ops.kernels = _dispatching(ops.kernels)
