"""The learning-rate schedule: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["warmup_cosine"]


def warmup_cosine(steps: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    """The multiplier of the base learning rate at each step, for ``torch.optim.lr_scheduler.LambdaLR``:
    ``(s + 1) / warmup`` for s < warmup, then ``min_ratio + (1 − min_ratio) · ½ (1 + cos(π p))`` with
    ``p = (s − warmup) / (steps − warmup)`` (held at 1 past the end).

    A plain function on purpose: ``LambdaLR.state_dict`` stores nothing for functions (it would store the
    ``__dict__`` of a callable object), so checkpoints hold no schedule code."""

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return multiplier
