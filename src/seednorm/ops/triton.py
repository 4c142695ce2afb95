"""Triton kernels for SeeDNorm: forward (optionally fused with a residual add) and backward, multi-head.

Memory traffic equals RMSNorm's (spec §5). The forward reads x (and the residual) once and writes y (and x + r);
it keeps 1/RMS (M,) and t = σ(s) (M, H) (and the row mean for the centering form) for the backward, nothing else;
a given dropout mask is read once more by each direction, a generated one (``DROPOUT``) costs no memory traffic.
The backward reads x and dy once and writes dx; the parameter gradients dγ, dα, dβ are accumulated in float32 by a
persistent grid (about two programs per SM, each owning a contiguous block of rows) and summed over the programs at
the end.

Two layouts, chosen by width:

- Row tile (padded tile ≤ ``MAX_TILE_FWD`` / ``MAX_TILE_BWD`` elements): one program holds a whole row as an
  (H, D/H) tile padded to powers of two, so Σx² (over the row) and Σx·β (per head) come from one read, and the
  backward's two row reductions ⟨g⊙δ, x̂⟩ and c_h = ⟨δ⊙α, x̂⟩ likewise. The backward limit is lower because its
  program keeps four float32 accumulator rows (dγ, dα, dβ, db) live across its loop over rows beside x, dy and
  the temporaries: the backward kernels hold at most 8 columns per thread (``_bwd_num_warps``) and read α, β, γ
  again for every row (L1/L2 hits) instead of keeping them live. At 8192 columns and 16 warps (16 per thread)
  they spilled up to ~1 KB per thread; at 4096 and 16 warps they fit in ptxas's 128 registers for sm_80 and
  sm_90 without spilling (``tests/ops/test_gpu_compile.py`` fails on a spill).
- Chunked (wider rows): a stats kernel loops over each row in chunks to get the per-row scalars (1/RMS and t in
  the forward; the mean term and σ'(s)·c·dot_scale per head in the backward), then an apply kernel over
  (rows, chunks) writes y, or dx and the parameter partials. x (and dy) are read twice: slower, same result.
  The backward apply kernel takes narrower chunks (``CHUNK_BWD``) for the same register budget.

Options, each a constexpr of every kernel (so a layer without them compiles the code it always did): the
dynamic-dropout mask k (``HAS_KEEP``: α⊙k stands for α, and dα = t·k⊙δ⊙x̂; with ``DROPOUT`` k is generated in the
kernel by ``tl.randint4x`` from the (seed, offset) at ``RNG`` and each row's global index, ``ROWS`` or the row itself
(``philox.py``), instead of read from ``K``), the centering form (``CENTER``: the
row mean μ first, then everything on x − μ, and dx = dx̃ − mean(dx̃)) and a bias (``HAS_BIAS``: added to y, and
db = Σ δ as a fourth parameter partial).

All arithmetic is float32; x, dy, residual may be float32, bfloat16 or float16, the parameters float32 or low
precision, the mask float32. Inputs are 2-D (M, D) with a contiguous last dim and any row stride.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import philox
from .sigma import ACTIVATION_CODES

MAX_TILE_FWD = 16384  # widest padded row one forward program holds in registers; wider rows go chunked
MAX_TILE_BWD = 4096  # the same for the backward (accumulators need room too)
CHUNK = 4096  # chunk width of the chunked kernels
CHUNK_BWD = 2048  # chunk width of the backward apply kernel: 8 columns per thread at 8 warps, no spills


@triton.jit
def _sigma(s, ACT: tl.constexpr):
    if ACT == 0:
        t = 1.0 - 2.0 / (tl.exp(2.0 * s) + 1.0)  # tanh, saturating cleanly at ±1
    elif ACT == 1:
        t = tl.sigmoid(s)
    elif ACT == 2:
        t = tl.where(s < -1.0, -1.0, tl.where(s > 1.0, 1.0, s))  # a clamp that keeps NaN (min/max drop it)
    else:
        t = s / (1.0 + tl.abs(s))
    return t


@triton.jit
def _dsigma(t, ACT: tl.constexpr):
    """σ'(s) from t = σ(s) (see sigma.py)."""
    if ACT == 0:
        d = 1.0 - t * t
    elif ACT == 1:
        d = t * (1.0 - t)
    elif ACT == 2:
        d = tl.where(tl.abs(t) < 1.0, 1.0, tl.where(t == t, 0.0, t))  # NaN stays NaN
    else:
        d = (1.0 - tl.abs(t)) * (1.0 - tl.abs(t))
    return d


@triton.jit
def _weight(W, cols, mask, HAS_W: tl.constexpr):
    """γ (float32) at ``cols``, or 1 when the layer has no γ."""
    return tl.load(W + cols, mask=mask, other=0.0).to(tl.float32) if HAS_W else 1.0


@triton.jit
def _keep(K, stride_k, RNG, ROWS, row, cols, mask, D, thr, kscale, DROPOUT: tl.constexpr, HAS_ROWS: tl.constexpr):
    """The dropout mask k at (row, cols): read from K, or with ``DROPOUT`` generated from (seed, offset) = RNG[0:2]:
    the element at stream position e = offset + global_row·D + col takes word e mod 4 of Philox(counter e >> 2), and
    is kept when the top 31 bits of that word are >= ``thr`` (``philox.py``)."""
    if DROPOUT:
        grow = tl.load(ROWS + row) if HAS_ROWS else row
        e = tl.load(RNG + 1) + grow.to(tl.int64) * D + cols
        r0, r1, r2, r3 = tl.randint4x(tl.load(RNG), e >> 2)
        lane = e & 3
        r = tl.where(lane == 0, r0, tl.where(lane == 1, r1, tl.where(lane == 2, r2, r3)))
        k = tl.where((r >> 1).to(tl.int32) >= thr, kscale, 0.0)
    else:
        k = tl.load(K + row * stride_k + cols, mask=mask, other=0.0)
    return k


@triton.jit
def _load_x(X, R, S, row, stride_x, stride_r, stride_s, cols, mask, HAS_RES: tl.constexpr, STORE_SUM: tl.constexpr):
    """x (float32), or x + r rounded to x's dtype (stored to S when STORE_SUM) when there is a residual."""
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RES:
        r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(X.dtype.element_ty)
        if STORE_SUM:
            tl.store(S + row * stride_s + cols, x, mask=mask)
    return x.to(tl.float32)


# ------------------------------------------------------------------------------------------------------------
# Forward


@triton.jit
def _fwd_row_kernel(
    X, R, S, Y, W, A, B, C, K, RSTD, T, MU, RNG, ROWS,
    stride_x, stride_r, stride_s, stride_y, stride_k,
    D, HD, eps, dot_scale, thr, kscale,
    H: tl.constexpr, HB: tl.constexpr, CB: tl.constexpr,
    ACT: tl.constexpr, HAS_W: tl.constexpr, HAS_RES: tl.constexpr,
    HAS_KEEP: tl.constexpr, CENTER: tl.constexpr, HAS_BIAS: tl.constexpr,
    DROPOUT: tl.constexpr = False, HAS_ROWS: tl.constexpr = False,
):
    row = tl.program_id(0).to(tl.int64)
    heads = tl.arange(0, HB)
    hmask = heads < H
    mask = hmask[:, None] & (tl.arange(0, CB)[None, :] < HD)
    cols = heads[:, None] * HD + tl.arange(0, CB)[None, :]
    x = _load_x(X, R, S, row, stride_x, stride_r, stride_s, cols, mask, HAS_RES, True)
    if CENTER:
        mu = tl.sum(tl.sum(x, axis=1), axis=0) / D
        x = tl.where(mask, x - mu, 0.0)
        tl.store(MU + row, mu)
    b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(A + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_KEEP:
        a = a * _keep(K, stride_k, RNG, ROWS, row, cols, mask, D, thr, kscale, DROPOUT, HAS_ROWS)
    rstd = 1.0 / tl.sqrt(tl.sum(tl.sum(x * x, axis=1), axis=0) / D + eps)
    t = _sigma(tl.sum(x * b, axis=1) * dot_scale, ACT)  # (HB,)
    g = t[:, None] * a + _weight(W, cols, mask, HAS_W)
    y = g * x * rstd
    if HAS_BIAS:
        y += tl.load(C + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)
    tl.store(T + row * H + heads, t, mask=hmask)


@triton.jit
def _fwd_stats_kernel(
    X, R, S, B, RSTD, T, MU,
    stride_x, stride_r, stride_s,
    D, HD, eps, dot_scale,
    H: tl.constexpr, BLOCK: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr, CENTER: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mu = 0.0
    if CENTER:  # a first pass for the row mean
        total = tl.zeros((BLOCK,), tl.float32)
        for c0 in range(0, D, BLOCK):
            mask = c0 + offs < D
            total += _load_x(X, R, S, row, stride_x, stride_r, stride_s, c0 + offs, mask, HAS_RES, False)
        mu = tl.sum(total, axis=0) / D
        tl.store(MU + row, mu)
    sumsq = tl.zeros((BLOCK,), tl.float32)
    for h in range(H):
        dot = tl.zeros((BLOCK,), tl.float32)
        for c0 in range(0, HD, BLOCK):
            mask = c0 + offs < HD
            cols = h * HD + c0 + offs
            x = _load_x(X, R, S, row, stride_x, stride_r, stride_s, cols, mask, HAS_RES, True)
            if CENTER:
                x = tl.where(mask, x - mu, 0.0)
            sumsq += x * x
            dot += x * tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(T + row * H + h, _sigma(tl.sum(dot, axis=0) * dot_scale, ACT))
    tl.store(RSTD + row, 1.0 / tl.sqrt(tl.sum(sumsq, axis=0) / D + eps))


@triton.jit
def _fwd_apply_kernel(
    X, Y, W, A, C, K, RSTD, T, MU, RNG, ROWS,
    stride_x, stride_y, stride_k, D, HD, thr, kscale,
    H: tl.constexpr, BLOCK: tl.constexpr, HAS_W: tl.constexpr,
    HAS_KEEP: tl.constexpr, CENTER: tl.constexpr, HAS_BIAS: tl.constexpr,
    DROPOUT: tl.constexpr = False, HAS_ROWS: tl.constexpr = False,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < D
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if CENTER:
        x = x - tl.load(MU + row)
    t = tl.load(T + row * H + cols // HD, mask=mask, other=0.0)
    a = tl.load(A + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_KEEP:
        a = a * _keep(K, stride_k, RNG, ROWS, row, cols, mask, D, thr, kscale, DROPOUT, HAS_ROWS)
    g = t * a + _weight(W, cols, mask, HAS_W)
    y = g * x * tl.load(RSTD + row)
    if HAS_BIAS:
        y += tl.load(C + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------------------
# Backward


@triton.jit
def _bwd_row_kernel(
    DY, X, W, A, B, K, RSTD, T, MU, DS, DX, DW, DA, DB, DC, RNG, ROWS,
    stride_dy, stride_x, stride_k, stride_ds, stride_dx,
    M, D, HD, dot_scale, rows_per_program, thr, kscale,
    H: tl.constexpr, HB: tl.constexpr, CB: tl.constexpr,
    ACT: tl.constexpr, HAS_W: tl.constexpr, HAS_DS: tl.constexpr,
    HAS_KEEP: tl.constexpr, CENTER: tl.constexpr, HAS_BIAS: tl.constexpr,
    DROPOUT: tl.constexpr = False, HAS_ROWS: tl.constexpr = False,
):
    pid = tl.program_id(0)
    heads = tl.arange(0, HB)
    hmask = heads < H
    mask = hmask[:, None] & (tl.arange(0, CB)[None, :] < HD)
    cols = heads[:, None] * HD + tl.arange(0, CB)[None, :]
    dw = tl.zeros((HB, CB), tl.float32)
    da = tl.zeros((HB, CB), tl.float32)
    db = tl.zeros((HB, CB), tl.float32)
    dc = tl.zeros((HB, CB), tl.float32)
    start = pid.to(tl.int64) * rows_per_program
    for row in range(start, tl.minimum(start + rows_per_program, M)):
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        if CENTER:
            x = tl.where(mask, x - tl.load(MU + row), 0.0)
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        t = tl.load(T + row * H + heads, mask=hmask, other=0.0)
        # α, β, γ are read again for every row (from L1/L2): kept live across the loop beside the four
        # accumulators, they made the widest tiles spill
        alpha = tl.load(A + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
        w = _weight(W, cols, mask, HAS_W)
        a = alpha
        if HAS_KEEP:
            k = _keep(K, stride_k, RNG, ROWS, row, cols, mask, D, thr, kscale, DROPOUT, HAS_ROWS)
            a = alpha * k
        xhat = x * rstd
        gdy = (t[:, None] * a + w) * dy
        dy_xhat = dy * xhat
        u = _dsigma(t, ACT) * tl.sum(dy_xhat * a, axis=1) * dot_scale  # σ'(s)·c_h·dot_scale, (HB,)
        mean = tl.sum(tl.sum(gdy * xhat, axis=1), axis=0) / D
        dx = rstd * (gdy - xhat * mean) + u[:, None] * b
        if CENTER:  # through x − mean(x): remove dx̃'s row mean
            dx = dx - tl.sum(tl.sum(tl.where(mask, dx, 0.0), axis=1), axis=0) / D
        if HAS_DS:
            dx += tl.load(DS + row * stride_ds + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy_xhat
        if HAS_KEEP:
            da += t[:, None] * k * dy_xhat
        else:
            da += t[:, None] * dy_xhat
        db += u[:, None] * x
        if HAS_BIAS:
            dc += dy
    part = pid.to(tl.int64) * D + cols
    tl.store(DW + part, dw, mask=mask)
    tl.store(DA + part, da, mask=mask)
    tl.store(DB + part, db, mask=mask)
    if HAS_BIAS:
        tl.store(DC + part, dc, mask=mask)


@triton.jit
def _bwd_stats_kernel(
    DY, X, W, A, B, K, RSTD, T, MU, MEAN, U, DXM, RNG, ROWS,
    stride_dy, stride_x, stride_k, D, HD, dot_scale, thr, kscale,
    H: tl.constexpr, BLOCK: tl.constexpr, ACT: tl.constexpr, HAS_W: tl.constexpr,
    HAS_KEEP: tl.constexpr, CENTER: tl.constexpr,
    DROPOUT: tl.constexpr = False, HAS_ROWS: tl.constexpr = False,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    rstd = tl.load(RSTD + row)
    mu = 0.0
    if CENTER:
        mu = tl.load(MU + row)
    total = tl.zeros((BLOCK,), tl.float32)
    gsum = tl.zeros((BLOCK,), tl.float32)  # Σ g⊙δ, Σ x̂ and Σ_h u_h·Σβ_h: mean(dx̃) for the centering form
    zsum = tl.zeros((BLOCK,), tl.float32)
    bterm = tl.sum(zsum, axis=0)  # 0.0 as a float32 scalar: a loop-carried value keeps its type
    for h in range(H):
        t = tl.load(T + row * H + h)
        c = tl.zeros((BLOCK,), tl.float32)
        bsum = tl.zeros((BLOCK,), tl.float32)
        for c0 in range(0, HD, BLOCK):
            mask = c0 + offs < HD
            cols = h * HD + c0 + offs
            x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
            if CENTER:
                x = tl.where(mask, x - mu, 0.0)
            xhat = x * rstd
            dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
            a = tl.load(A + cols, mask=mask, other=0.0).to(tl.float32)
            if HAS_KEEP:
                a = a * _keep(K, stride_k, RNG, ROWS, row, cols, mask, D, thr, kscale, DROPOUT, HAS_ROWS)
            g = t * a + _weight(W, cols, mask, HAS_W)
            total += g * dy * xhat
            c += dy * a * xhat
            if CENTER:
                gsum += g * dy
                zsum += xhat
                bsum += tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
        u = _dsigma(t, ACT) * tl.sum(c, axis=0) * dot_scale
        tl.store(U + row * H + h, u)
        if CENTER:
            bterm += u * tl.sum(bsum, axis=0)
    mean = tl.sum(total, axis=0) / D
    tl.store(MEAN + row, mean)
    if CENTER:
        tl.store(DXM + row, (rstd * (tl.sum(gsum, axis=0) - mean * tl.sum(zsum, axis=0)) + bterm) / D)


@triton.jit
def _bwd_apply_kernel(
    DY, X, W, A, B, K, RSTD, T, MU, MEAN, U, DXM, DS, DX, DW, DA, DB, DC, RNG, ROWS,
    stride_dy, stride_x, stride_k, stride_ds, stride_dx,
    M, D, HD, rows_per_program, thr, kscale,
    H: tl.constexpr, BLOCK: tl.constexpr, HAS_W: tl.constexpr, HAS_DS: tl.constexpr,
    HAS_KEEP: tl.constexpr, CENTER: tl.constexpr, HAS_BIAS: tl.constexpr,
    DROPOUT: tl.constexpr = False, HAS_ROWS: tl.constexpr = False,
):
    pid = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < D
    head = cols // HD
    dw = tl.zeros((BLOCK,), tl.float32)
    da = tl.zeros((BLOCK,), tl.float32)
    db = tl.zeros((BLOCK,), tl.float32)
    dc = tl.zeros((BLOCK,), tl.float32)
    start = pid.to(tl.int64) * rows_per_program
    for row in range(start, tl.minimum(start + rows_per_program, M)):
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        if CENTER:
            x = tl.where(mask, x - tl.load(MU + row), 0.0)
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        t = tl.load(T + row * H + head, mask=mask, other=0.0)
        u = tl.load(U + row * H + head, mask=mask, other=0.0)
        alpha = tl.load(A + cols, mask=mask, other=0.0).to(tl.float32)  # per row, as in _bwd_row_kernel
        b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
        w = _weight(W, cols, mask, HAS_W)
        a = alpha
        if HAS_KEEP:
            k = _keep(K, stride_k, RNG, ROWS, row, cols, mask, D, thr, kscale, DROPOUT, HAS_ROWS)
            a = alpha * k
        xhat = x * rstd
        gdy = (t * a + w) * dy
        dx = rstd * (gdy - xhat * tl.load(MEAN + row)) + u * b
        if CENTER:
            dx -= tl.load(DXM + row)
        if HAS_DS:
            dx += tl.load(DS + row * stride_ds + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dy_xhat = dy * xhat
        dw += dy_xhat
        if HAS_KEEP:
            da += t * k * dy_xhat
        else:
            da += t * dy_xhat
        db += u * x
        if HAS_BIAS:
            dc += dy
    part = pid.to(tl.int64) * D + cols
    tl.store(DW + part, dw, mask=mask)
    tl.store(DA + part, da, mask=mask)
    tl.store(DB + part, db, mask=mask)
    if HAS_BIAS:
        tl.store(DC + part, dc, mask=mask)


# ------------------------------------------------------------------------------------------------------------
# Launchers


Launch = Callable[..., Any]  # launch(kernel, grid, *args, **kwargs)


def launch_kernel(kernel: triton.runtime.JITFunction, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """Start ``kernel`` on ``grid``: what ``forward`` and ``backward`` do with each launch by default."""
    kernel[grid](*args, **kwargs)


def warmup_kernel(kernel: triton.runtime.JITFunction, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> Any:
    """Compile ``kernel`` for these arguments and the current target without running it (pass it as ``launch``
    to enumerate and compile every kernel a call would start); returns Triton's compiled kernel."""
    return kernel.warmup(*args, grid=grid, **kwargs)


def _num_warps(tile: int) -> int:
    return 32 if tile >= 16384 else 16 if tile >= 8192 else 8 if tile >= 2048 else 4


def _bwd_num_warps(tile: int) -> int:
    """Warps of a backward kernel over ``tile`` columns: at most 8 columns per thread (4 to 16 warps)."""
    return max(4, min(16, tile // 256))


def _row_tile(d: int, num_heads: int) -> tuple[int, int]:
    """(HB, CB): the (heads, channels) tile of a whole row, each a power of two."""
    return triton.next_power_of_2(num_heads), triton.next_power_of_2(d // num_heads)


def _num_programs(x: Tensor) -> int:
    """Persistent grid size: two programs per SM (4 under the CPU interpreter)."""
    if x.device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(x.device).multi_processor_count
    return 4


def _dropout_args(
    rng: Tensor | None, rows: Tensor | None, p: float, dummy: Tensor
) -> tuple[Tensor, Tensor, int, float, dict[str, bool]]:
    """The kernels' in-kernel dropout arguments: RNG, ROWS (``dummy`` when absent), the keep threshold, the value
    of a kept element, and the constexprs (with ``HAS_KEEP``, which a generated mask sets too)."""
    if rng is None:
        return dummy, dummy, 0, 0.0, {"DROPOUT": False, "HAS_ROWS": False}
    if rows is not None:
        rows = rows.reshape(-1).to(torch.int64).contiguous()
    flags = {"DROPOUT": True, "HAS_ROWS": rows is not None}
    seed = rng.to(torch.int64).contiguous()
    return seed, dummy if rows is None else rows, philox.threshold(p), philox.scale(p), flags


def forward(
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
    *,
    launch: Launch = launch_kernel,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """(y, 1/RMS (M,) fp32, σ(s) (M, H) fp32, mean (M,) fp32 or None, x + residual or None) for x, residual,
    keep (M, D); ``center`` normalizes x − mean(x); ``rng`` (seed, offset), ``rows`` (M,) and ``dropout``: the mask
    generated in the kernels instead of ``keep``.

    Every kernel starts through ``launch`` (``warmup_kernel`` compiles them and leaves the outputs unwritten)."""
    m, d = x.shape
    hd = d // num_heads
    y = torch.empty((m, d), dtype=x.dtype, device=x.device)
    rstd = torch.empty(m, dtype=torch.float32, device=x.device)
    t = torch.empty((m, num_heads), dtype=torch.float32, device=x.device)
    mean = torch.empty(m, dtype=torch.float32, device=x.device) if center else None
    summed = None if residual is None else torch.empty((m, d), dtype=x.dtype, device=x.device)
    if m == 0:
        return y, rstd, t, mean, summed
    r = x if residual is None else residual  # dummy pointers for absent inputs
    s = y if summed is None else summed
    k = rstd if keep is None else keep
    c = alpha if bias is None else bias
    mu = rstd if mean is None else mean
    act = ACTIVATION_CODES[activation]
    w = alpha if weight is None else weight
    options = {"HAS_KEEP": keep is not None or rng is not None, "CENTER": center, "HAS_BIAS": bias is not None}
    seed, row_ids, thr, kscale, drop = _dropout_args(rng, rows, dropout, rstd)
    options.update(drop)
    stride_k = 0 if keep is None else keep.stride(0)
    hb, cb = _row_tile(d, num_heads)
    if hb * cb <= MAX_TILE_FWD:
        launch(
            _fwd_row_kernel, (m,),
            x, r, s, y, w, alpha, beta, c, k, rstd, t, mu, seed, row_ids,
            x.stride(0), r.stride(0), s.stride(0), y.stride(0), stride_k,
            d, hd, eps, dot_scale, thr, kscale,
            H=num_heads, HB=hb, CB=cb, ACT=act, HAS_W=weight is not None, HAS_RES=residual is not None,
            **options, num_warps=_num_warps(hb * cb),
        )
    else:
        block = min(CHUNK, triton.next_power_of_2(hd))
        launch(
            _fwd_stats_kernel, (m,),
            x, r, s, beta, rstd, t, mu,
            x.stride(0), r.stride(0), s.stride(0),
            d, hd, eps, dot_scale,
            H=num_heads, BLOCK=block, ACT=act, HAS_RES=residual is not None, CENTER=center,
            num_warps=_num_warps(block),
        )
        src = x if summed is None else summed
        launch(
            _fwd_apply_kernel, (m, triton.cdiv(d, CHUNK)),
            src, y, w, alpha, c, k, rstd, t, mu, seed, row_ids,
            src.stride(0), y.stride(0), stride_k, d, hd, thr, kscale,
            H=num_heads, BLOCK=CHUNK, HAS_W=weight is not None, **options, num_warps=_num_warps(CHUNK),
        )
    return y, rstd, t, mean, summed


def backward(
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
    *,
    launch: Launch = launch_kernel,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor | None]:
    """(dx, dγ, dα, dβ, db) for dy, x, keep (M, D); ``mean`` (the forward's, centering form) or None;
    ``dsummed`` (gradient of x + residual) is added to dx; ``rng``, ``rows``, ``dropout``: the forward's generated
    mask, generated again.

    Parameter gradients are float32 partials per program, summed once and cast to each parameter's dtype. Every
    kernel starts through ``launch`` (``warmup_kernel`` compiles them and leaves the outputs unwritten).
    """
    m, d = x.shape
    hd = d // num_heads
    dx = torch.empty((m, d), dtype=x.dtype, device=x.device)
    grid = max(1, min(_num_programs(x), m))
    rows_per_program = triton.cdiv(m, grid)
    parts = torch.zeros((3 if bias is None else 4, grid, d), dtype=torch.float32, device=x.device)
    ds = dx if dsummed is None else dsummed
    k = rstd if keep is None else keep  # dummy pointers for absent inputs
    mu = rstd if mean is None else mean
    stride_k = 0 if keep is None else keep.stride(0)
    options = {"HAS_KEEP": keep is not None or rng is not None, "CENTER": mean is not None,
               "HAS_BIAS": bias is not None}
    seed, row_ids, thr, kscale, drop = _dropout_args(rng, rows, dropout, rstd)
    options.update(drop)
    act = ACTIVATION_CODES[activation]
    w = alpha if weight is None else weight
    hb, cb = _row_tile(d, num_heads)
    if m > 0 and hb * cb <= MAX_TILE_BWD:
        launch(
            _bwd_row_kernel, (grid,),
            dy, x, w, alpha, beta, k, rstd, t, mu, ds, dx, parts[0], parts[1], parts[2], parts[-1], seed, row_ids,
            dy.stride(0), x.stride(0), stride_k, ds.stride(0), dx.stride(0),
            m, d, hd, dot_scale, rows_per_program, thr, kscale,
            H=num_heads, HB=hb, CB=cb, ACT=act, HAS_W=weight is not None, HAS_DS=dsummed is not None,
            **options, num_warps=_bwd_num_warps(hb * cb),
        )
    elif m > 0:
        rms_mean = torch.empty(m, dtype=torch.float32, device=x.device)
        u = torch.empty((m, num_heads), dtype=torch.float32, device=x.device)
        dxm = torch.empty(m if mean is not None else 1, dtype=torch.float32, device=x.device)
        block = min(CHUNK, triton.next_power_of_2(hd))
        launch(
            _bwd_stats_kernel, (m,),
            dy, x, w, alpha, beta, k, rstd, t, mu, rms_mean, u, dxm, seed, row_ids,
            dy.stride(0), x.stride(0), stride_k, d, hd, dot_scale, thr, kscale,
            H=num_heads, BLOCK=block, ACT=act, HAS_W=weight is not None, HAS_KEEP=options["HAS_KEEP"],
            CENTER=mean is not None, **drop, num_warps=_num_warps(block),
        )
        launch(
            _bwd_apply_kernel, (grid, triton.cdiv(d, CHUNK_BWD)),
            dy, x, w, alpha, beta, k, rstd, t, mu, rms_mean, u, dxm, ds, dx, parts[0], parts[1], parts[2], parts[-1],
            seed, row_ids,
            dy.stride(0), x.stride(0), stride_k, ds.stride(0), dx.stride(0),
            m, d, hd, rows_per_program, thr, kscale,
            H=num_heads, BLOCK=CHUNK_BWD, HAS_W=weight is not None, HAS_DS=dsummed is not None, **options,
            num_warps=_bwd_num_warps(CHUNK_BWD),
        )
    dweight, dalpha, dbeta, *dbias = (p.sum(0) for p in parts)  # the one final reduction over programs
    return (
        dx,
        None if weight is None else dweight.to(weight.dtype),
        dalpha.to(alpha.dtype),
        dbeta.to(beta.dtype),
        None if bias is None else dbias[0].to(bias.dtype),
    )
