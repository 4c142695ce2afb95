"""Named sizes of the vision study: the ViT, the data, the schedule, the norms and the head-count ablation.

``smoke`` is for tests (seconds), ``quick`` makes the README's results (≤ 15 minutes on 2 shared CPU cores),
``full`` is a GPU-sized setting in the same shape (not run here: hours on CPU).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..common import VISION_BASELINE, check_norms, default_norms
from .model import ViTConfig

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """Everything a study run needs besides the norms, head counts and seeds (which the CLI may override)."""

    dataset: str
    model: ViTConfig
    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float
    grad_clip: float | None
    max_shift: int
    eval_every: int
    ckpt_every: int
    eval_limit: int | None
    seeds: int
    norms: tuple[str, ...]
    seednorm_heads: int
    dot_scale: float | str
    heads: tuple[int, ...]
    ablation_dim: int
    ablation_depth: int
    ablation_steps: int
    ablation_lr: float
    ablation_dot_scale: float | str

_NORMS = default_norms(VISION_BASELINE)

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        dataset="mnist", model=ViTConfig(dim=16, depth=1, attn_heads=2, mlp_ratio=2.0, drop_path=0.1),
        steps=6, batch_size=32, lr=2e-3, warmup=2, weight_decay=0.05, grad_clip=None, max_shift=1,
        eval_every=3, ckpt_every=0, eval_limit=128, seeds=2, norms=_NORMS, seednorm_heads=2, dot_scale="dim",
        heads=(1, 2), ablation_dim=32, ablation_depth=1, ablation_steps=4, ablation_lr=1.6e-2,
        ablation_dot_scale=1.0,
    ),
    # measured on 2 shared CPU cores: see README "Vision study" (≤ 15 minutes)
    "quick": Preset(
        dataset="mnist", model=ViTConfig(dim=64, depth=4, attn_heads=4, mlp_ratio=2.0, drop_path=0.1),
        steps=300, batch_size=128, lr=2e-3, warmup=30, weight_decay=0.05, grad_clip=None, max_shift=0,
        eval_every=100, ckpt_every=100, eval_limit=None, seeds=3, norms=_NORMS, seednorm_heads=4, dot_scale="dim",
        heads=(1, 4, 16), ablation_dim=128, ablation_depth=2, ablation_steps=200, ablation_lr=1.6e-2,
        ablation_dot_scale=1.0,
    ),
    # not run here (hours on CPU); a GPU-sized setting in the same shape
    "full": Preset(
        dataset="mnist", model=ViTConfig(dim=192, depth=6, attn_heads=6, mlp_ratio=4.0, drop_path=0.1),
        steps=3000, batch_size=128, lr=1e-3, warmup=200, weight_decay=0.05, grad_clip=None, max_shift=2,
        eval_every=250, ckpt_every=250, eval_limit=None, seeds=5, norms=_NORMS, seednorm_heads=8, dot_scale="dim",
        heads=(1, 2, 4, 8, 16), ablation_dim=384, ablation_depth=6, ablation_steps=2000, ablation_lr=4e-3,
        ablation_dot_scale=1.0,
    ),
}

def get_preset(name: str, **overrides: Any) -> Preset:
    """The named preset with ``overrides`` applied (a None override keeps the preset's value), checked: ValueError
    naming an unknown preset or norm, or a SeeDNorm head count that does not divide its width."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
    preset = dataclasses.replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    if preset.seeds < 1 or preset.steps < 1:
        raise ValueError("--seeds and --steps must be >= 1")
    preset = dataclasses.replace(preset, norms=tuple(check_norms(preset.norms)))
    for heads, dim, what in [(preset.seednorm_heads, preset.model.dim, "--seednorm-heads")] + [
            (h, preset.ablation_dim, "--heads") for h in preset.heads]:
        if heads < 1 or dim % heads or dim % preset.model.attn_heads:
            raise ValueError(f"{what}: {heads} heads must divide the width {dim} (so must the "
                             f"{preset.model.attn_heads} attention heads)")
    return preset
