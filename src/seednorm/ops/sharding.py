"""DTensor sharding rules for ``seednorm::forward`` and ``seednorm::backward`` (tensor and sequence parallel).

SeeDNorm is row-wise: every statistic (1/RMS, s = x·βᵀ, σ(s)) belongs to one row of the last dimension D. So an
input sharded on any leading dimension d runs the kernels on each rank's rows unchanged:

    forward   x, residual, keep, rows: Shard(d)   γ, α, β, b, rng: Replicate
              →   y, 1/RMS, σ(s), mean, x + residual: Shard(d)
    backward  dy, x, keep, rows, 1/RMS, σ(s), mean, dsummed: Shard(d)   rng: Replicate
              →   dx: Shard(d);  dγ, dα, dβ, db: Partial (sum over ranks)

In-kernel dropout (``philox.py``): the seed pair ``rng`` is replicated and ``rows``, the global index of each row,
is sharded like the rows, so each shard generates its own part of the mask the whole tensor would get.

and everything replicated gives everything replicated. There is no rule for a shard on D (the last dimension): a
row's sums would be split across ranks. DTensor then redistributes x to a layout above before the op runs (the
result is exact; the cost is one collective), so the op never sees a row split across ranks. Importing this module
registers the rules (the ops themselves are defined by ``op.py``, which the package imports first);
``seednorm.ops`` imports it once ``torch.distributed.tensor`` is imported (``after_import.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributed.tensor import Partial, Replicate, Shard
from torch.distributed.tensor.experimental import register_sharding

Placement = Shard | Replicate | Partial | None


def _spec_ndim(spec: object) -> int:
    """The global rank of a DTensorSpec (the tensor-like object DTensor hands to sharding functions)."""
    return len(spec.shape)  # type: ignore[attr-defined]


def _inputs(args: Sequence[object], row_args: set[int], dim: int | None) -> list[Placement]:
    """Per positional arg: Shard(dim) (Replicate when dim is None) for row tensors, Replicate for the parameters,
    None for non-tensors (None optionals, ints, floats, strings)."""
    out: list[Placement] = []
    for i, a in enumerate(args):
        if a is None or isinstance(a, (bool, int, float, str)):
            out.append(None)
        elif i in row_args and dim is not None:
            out.append(Shard(dim))
        else:
            out.append(Replicate())
    return out


def _row_dims(x: object) -> range:
    """The dimensions a row-wise op may be sharded on: every dimension but the last (normalized) one."""
    return range(_spec_ndim(x) - 1)


@register_sharding(torch.ops.seednorm.forward.default)
def _forward_sharding(x, weight, alpha, beta, bias, residual, keep, num_heads, eps, activation, dot_scale, center,
                      impl, *dropout):
    args = (x, weight, alpha, beta, bias, residual, keep, num_heads, eps, activation, dot_scale, center, impl,
            *dropout)  # dropout: rng, rows, p when the call passes them
    rows = {0, 5, 6, 14}  # x, residual, keep, rows
    strategies = [([Replicate()] * 5, _inputs(args, rows, None))]
    for d in _row_dims(x):
        summed = Replicate() if residual is None else Shard(d)  # the empty placeholder when there is no residual
        mean = Shard(d) if center else Replicate()  # the same when the layer does not center
        strategies.append(([Shard(d), Shard(d), Shard(d), mean, summed], _inputs(args, rows, d)))
    return strategies


@register_sharding(torch.ops.seednorm.backward.default)
def _backward_sharding(dy, x, weight, alpha, beta, bias, keep, rstd, t, mean, dsummed, num_heads, activation,
                       dot_scale, impl, *dropout):
    args = (dy, x, weight, alpha, beta, bias, keep, rstd, t, mean, dsummed, num_heads, activation, dot_scale, impl,
            *dropout)
    rows = {0, 1, 6, 7, 8, 9, 10, 16}  # dy, x, keep, 1/RMS, σ(s), mean, dsummed, rows
    strategies = [([Replicate()] * 5, _inputs(args, rows, None))]
    for d in _row_dims(x):
        dweight = Replicate() if weight is None else Partial()  # the empty placeholder when there is no γ
        dbias = Replicate() if bias is None else Partial()
        strategies.append(([Shard(d), dweight, Partial(), Partial(), dbias], _inputs(args, rows, d)))
    return strategies
