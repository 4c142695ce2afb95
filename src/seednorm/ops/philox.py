"""Dynamic dropout's randomness: a counter-based Philox 4x32-10 keep decision per element, no mask tensor.

The kernels (``cpu_kernels.cpp``, ``triton.py``) decide per element whether σ(s)·α is kept, from

    e = offset + i                                                        (the element's place in the stream)
    r = word (e mod 4) of Philox4x32-10(key = seed, counter = (⌊e/4⌋, 0, 0))  (``tl.randint4x(seed, e >> 2)``)
    keep  ⇔  (r >> 1) ≥ ⌊p · 2³¹⌋                                           (probability 1 − ⌊p·2³¹⌋/2³¹)
    k     =  keep ? 1/(1 − p) : 0                                          (float32; 0 for p = 1)

where i = row·D + column is the element's index in the (rows, D) view of the layer's input, row counting the
rows of the whole (global) tensor: a DTensor shard passes the global index of each of its rows (``rows``), so
every shard draws its own part of the one mask the unsharded tensor would get, and no two shards share a counter.
Each Philox call gives four consecutive elements their words (the C++ kernels make one call per four elements;
a GPU thread computes its own element's call, which costs it nothing it would notice). The 64-bit counter is split
into its low and high 32-bit words and the 64-bit seed into the key's two words, as Triton's ``tl.randint4x``
does, so the C++ kernels, the Triton kernels and ``keep_mask`` (plain PyTorch, for the reference path and the
tests) agree bit for bit. The forward and the backward recompute the same decisions: the
forward saves only the two seed words (16 bytes), never an (M, D) mask.

``draw(x)`` takes (seed, offset) from torch's default generator of x's device, one ``torch.randint`` of two int64
values in [0, 2⁶²) per layer call: ``torch.manual_seed`` reproduces a run, each call advances the generator and
gets another mask, and the draw is an ordinary random op, so ``torch.compile`` traces it (Inductor then draws from
its own Philox stream, itself seeded from the default generator). The values stay a tensor on x's device and the
kernels read them through a pointer: no host synchronization on CUDA, no graph break under ``torch.compile``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SEED_HIGH = 1 << 62  # seed and offset are drawn in [0, 2⁶²): the counter offset + i never wraps at 2⁶⁴
ROUNDS = 10
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57  # Philox 4x32 multipliers (Triton's PHILOX_ROUND_A/B)
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85  # Weyl increments of the key (PHILOX_KEY_A/B)
_MASK32 = 0xFFFFFFFF


def draw(device: torch.device | str) -> Tensor:
    """(seed, offset): int64 (2,) on ``device``, one draw from its default generator (advancing it)."""
    return torch.randint(0, SEED_HIGH, (2,), dtype=torch.int64, device=device)


def threshold(p: float) -> int:
    """⌊p·2³¹⌋: an element is kept when the top 31 bits of its random word are at least this (2³¹ for p = 1)."""
    return min(int(p * (1 << 31)), 1 << 31)


def scale(p: float) -> float:
    """The value of a kept element, 1/(1 − p) (0 for p = 1, where nothing is kept)."""
    return 0.0 if p >= 1 else 1.0 / (1.0 - p)


def _mulhilo(a: int, b: Tensor) -> tuple[Tensor, Tensor]:
    """(high, low) 32-bit words of the 64-bit product a·b, for a constant a and int64 b in [0, 2³²): computed on
    16-bit limbs, so no intermediate leaves int64's range (signed overflow is undefined in generated C++)."""
    t0 = b * (a & 0xFFFF)  # < 2⁴⁸
    t1 = b * (a >> 16)  # < 2⁴⁸
    mid = t0 + ((t1 & 0xFFFF) << 16)  # a·b = mid + (t1 >> 16)·2³²
    return (t1 >> 16) + (mid >> 32), mid & _MASK32


def philox4x32(seed: Tensor | int, counter: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four words of Philox4x32-10 with key ``seed`` (int64: low, high words) and counter (``counter`` low,
    high, 0, 0), element-wise: int64 values in [0, 2³²), Triton's ``tl.randint4x(seed, counter)`` bit for bit."""
    c0, c1 = counter & _MASK32, (counter >> 32) & _MASK32
    c2 = c3 = torch.zeros_like(c0)
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    for _ in range(ROUNDS):
        hi_a, lo_a = _mulhilo(_ROUND_A, c0)
        hi_b, lo_b = _mulhilo(_ROUND_B, c2)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def random_words(seed: Tensor | int, position: Tensor) -> Tensor:
    """The random word of each stream ``position`` e (int64 ≥ 0): word e mod 4 of ``philox4x32(seed, e >> 2)``."""
    words = philox4x32(seed, position >> 2)
    lane = position & 3
    return torch.where(lane == 0, words[0], torch.where(lane == 1, words[1], torch.where(lane == 2, words[2],
                                                                                          words[3])))


def keep_mask(rng: Tensor, shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype = torch.float32,
              rows: Tensor | None = None) -> Tensor:
    """The kernels' dropout mask for ``rng`` = (seed, offset) and an input of ``shape`` (..., D): of that shape, on
    rng's device, in ``dtype``, 0 or 1/(1 − p) per element.

    ``rows`` (shape[:-1], int64) are the global indices of the rows, as a DTensor shard passes them; by default the
    row index in ``shape`` (row-major). Pure tensor ops: ``torch.compile`` fuses it into the code that uses it.
    """
    d = shape[-1]
    if rows is None:
        rows = torch.arange(math.prod(shape[:-1]), dtype=torch.int64, device=rng.device).view(shape[:-1])
    cols = torch.arange(d, dtype=torch.int64, device=rng.device)
    position = rng[1] + rows.unsqueeze(-1) * d + cols
    kept = (random_words(rng[0], position) >> 1) >= threshold(p)
    return kept.to(dtype) * scale(p)
