"""Named sizes of the vision study: the model, the data, the schedule, the norms and the head-count ablation.

Three models, each with ``smoke`` (tests, seconds), ``quick`` (the committed results on 2 shared CPU cores) and
``full`` (a GPU-sized setting in the same shape, not run here): ``PRESETS`` (the supervised ViT, ≤ 15 minutes),
``CONVNEXT_PRESETS`` (the supervised ConvNeXt; no head ablation) and ``MAE_PRESETS`` (MAE pre-training of the ViT,
then a linear probe and fine-tuning). ConvNeXt and MAE ``quick`` together take ≤ 15 minutes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..args import check_fields
from ..common import VISION_BASELINE, check_norms, default_norms
from .convnext import ConvNeXtConfig
from .mae import MAEConfig
from .model import ViTConfig

__all__ = ["CONVNEXT_PRESETS", "MAEPreset", "MAE_PRESETS", "MODELS", "PRESETS", "Preset", "get_mae_preset",
           "get_preset"]

MODELS = ("vit", "convnext", "mae")
"""The vision study's models: ``seednorm vit --model``."""


@dataclass(frozen=True)
class Preset:
    """Everything a study run needs besides the norms, head counts and seeds (which the CLI may override)."""

    dataset: str
    model: ViTConfig | ConvNeXtConfig
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

    def __post_init__(self) -> None:
        """Every field in its range (ValueError naming the first that is not): presets and their overrides."""
        check_fields(self, _RANGES)
        _check_common(self)


_RANGES = {
    "steps": "count", "batch_size": "count", "lr": "rate", "warmup": "count0", "weight_decay": "rate0",
    "grad_clip": "rate?", "max_shift": "count0", "eval_every": "count0", "ckpt_every": "count0",
    "eval_limit": "count?", "seeds": "count", "seednorm_heads": "count", "dot_scale": "dot_scale",
    "heads": "counts0", "ablation_dim": "count", "ablation_depth": "count", "ablation_steps": "count",
    "ablation_lr": "rate", "ablation_dot_scale": "dot_scale",
}
"""The range of each field of :class:`Preset` (see :func:`..args.check_fields`)."""

_MODEL_RANGES = {"dim": "count", "depth": "count", "attn_heads": "count", "mlp_ratio": "rate",
                 "drop_path": "probability", "patch_size": "count", "image_size": "count"}
_CONVNEXT_RANGES = {"stem": "count", "kernel_size": "count", "mlp_ratio": "rate", "drop_path": "probability",
                    "image_size": "count"}


def _check_common(preset: Preset | MAEPreset) -> None:
    """The fields every vision preset has that are not plain ranges: the dataset, the norms, the model's shape."""
    from .data import DATASETS

    if preset.dataset not in DATASETS:
        raise ValueError(f"preset field dataset must be one of {sorted(DATASETS)}, got {preset.dataset!r}")
    if not preset.norms:
        raise ValueError("preset field norms must name at least one norm")
    model = preset.model.encoder if isinstance(preset.model, MAEConfig) else preset.model
    if isinstance(model, ConvNeXtConfig):
        check_fields(model, _CONVNEXT_RANGES, "model field")
        if any(not isinstance(v, int) or v < 1 for v in (*model.dims, *model.depths)):
            raise ValueError(f"model fields dims {model.dims} and depths {model.depths} must be integers >= 1")
    else:
        check_fields(model, _MODEL_RANGES, "model field")

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

# The ConvNeXt's settings (schedule, SeeDNorm recipe, data) are the ViT's; it has no head-count ablation.
CONVNEXT_PRESETS: dict[str, Preset] = {
    "smoke": dataclasses.replace(
        PRESETS["smoke"], model=ConvNeXtConfig(stem=4, dims=(8, 16), depths=(1, 1), drop_path=0.1),
        heads=(), ablation_dim=16, ablation_depth=1),
    # measured on 2 shared CPU cores with MAE_PRESETS["quick"]: see docs/vit.md
    "quick": dataclasses.replace(
        PRESETS["quick"], model=ConvNeXtConfig(stem=4, dims=(32, 64), depths=(2, 2), drop_path=0.1),
        heads=(), ablation_dim=64, ablation_depth=2, ckpt_every=0),
    # not run here; a GPU-sized setting in the same shape
    "full": dataclasses.replace(
        PRESETS["full"], model=ConvNeXtConfig(stem=2, dims=(64, 128, 256), depths=(2, 2, 6), drop_path=0.1),
        heads=(), ablation_dim=256, ablation_depth=6),
}


def get_preset(name: str, model: str = "vit", **overrides: Any) -> Preset:
    """The named preset of ``model`` ("vit" or "convnext") with ``overrides`` applied (a None override keeps the
    preset's value), checked: ValueError naming an unknown preset or norm, a SeeDNorm head count that does not
    divide its widths, or a head ablation asked of the ConvNeXt."""
    table = {"vit": PRESETS, "convnext": CONVNEXT_PRESETS}.get(model)
    if table is None:
        raise ValueError(f"unknown model {model!r}; choose one of {list(MODELS)}")
    if name not in table:
        raise ValueError(f"unknown preset {name!r}; choose one of {list(table)}")
    preset = dataclasses.replace(table[name], **{k: v for k, v in overrides.items() if v is not None})
    if preset.seeds < 1 or preset.steps < 1:
        raise ValueError("--seeds and --steps must be >= 1")
    preset = dataclasses.replace(preset, norms=tuple(check_norms(preset.norms)))
    if isinstance(preset.model, ConvNeXtConfig):
        if preset.heads:
            raise ValueError("--heads: the head-count ablation is the ViT's (--model vit)")
        _check_heads(preset.seednorm_heads, preset.model.norm_widths, "--seednorm-heads")
        return preset
    for heads, dim, what in [(preset.seednorm_heads, preset.model.dim, "--seednorm-heads")] + [
            (h, preset.ablation_dim, "--heads") for h in preset.heads]:
        if heads < 1 or dim % heads or dim % preset.model.attn_heads:
            raise ValueError(f"{what}: {heads} heads must divide the width {dim} (so must the "
                             f"{preset.model.attn_heads} attention heads)")
    return preset


def _check_heads(heads: int, widths: tuple[int, ...], what: str) -> None:
    if heads < 1 or any(w % heads for w in widths):
        raise ValueError(f"{what}: {heads} heads must divide every normalized width {widths}")


@dataclass(frozen=True)
class MAEPreset:
    """MAE pre-training of the ViT (``model.encoder``), then a linear probe (frozen encoder, BatchNorm without
    affine, one Linear) and full fine-tuning on the labels, with the ViT study's data, shifts and SeeDNorm
    recipe. Each stage has its steps and learning rate; warmup is ``warmup`` capped at a stage's steps."""

    dataset: str
    model: MAEConfig
    batch_size: int
    warmup: int
    weight_decay: float
    max_shift: int
    pretrain_steps: int
    pretrain_lr: float
    probe_steps: int
    probe_lr: float
    finetune_steps: int
    finetune_lr: float
    eval_every: int
    ckpt_every: int
    eval_limit: int | None
    seeds: int
    norms: tuple[str, ...]
    seednorm_heads: int
    dot_scale: float | str

    def __post_init__(self) -> None:
        """Every field in its range (ValueError naming the first that is not): presets and their overrides."""
        check_fields(self, _MAE_RANGES)
        check_fields(self.model, {"decoder_dim": "count", "decoder_depth": "count", "decoder_heads": "count",
                                  "mask_ratio": "fraction"}, "model field")
        if self.model.decoder_dim % self.model.decoder_heads:
            raise ValueError(f"model fields decoder_dim={self.model.decoder_dim} must be divisible by "
                             f"decoder_heads={self.model.decoder_heads}")
        _check_common(self)


_MAE_RANGES = {
    "batch_size": "count", "warmup": "count0", "weight_decay": "rate0", "max_shift": "count0",
    "pretrain_steps": "count", "pretrain_lr": "rate", "probe_steps": "count", "probe_lr": "rate",
    "finetune_steps": "count", "finetune_lr": "rate", "eval_every": "count0", "ckpt_every": "count0",
    "eval_limit": "count?", "seeds": "count", "seednorm_heads": "count", "dot_scale": "dot_scale",
}
"""The range of each field of :class:`MAEPreset` (see :func:`..args.check_fields`)."""


_MAE_ENCODER = {"smoke": PRESETS["smoke"].model, "quick": PRESETS["quick"].model, "full": PRESETS["full"].model}

MAE_PRESETS: dict[str, MAEPreset] = {
    "smoke": MAEPreset(
        dataset="mnist", model=MAEConfig(dataclasses.replace(_MAE_ENCODER["smoke"], pool="mean"), decoder_dim=8,
                                         decoder_depth=1, decoder_heads=2, mask_ratio=0.75),
        batch_size=32, warmup=2, weight_decay=0.05, max_shift=1, pretrain_steps=6, pretrain_lr=2e-3,
        probe_steps=4, probe_lr=1e-2, finetune_steps=4, finetune_lr=1e-3, eval_every=3, ckpt_every=0,
        eval_limit=128, seeds=2, norms=_NORMS, seednorm_heads=2, dot_scale="dim",
    ),
    # measured on 2 shared CPU cores with CONVNEXT_PRESETS["quick"]: see docs/vit.md
    "quick": MAEPreset(
        dataset="mnist", model=MAEConfig(dataclasses.replace(_MAE_ENCODER["quick"], pool="mean"), decoder_dim=32,
                                         decoder_depth=1, decoder_heads=2, mask_ratio=0.75),
        batch_size=128, warmup=30, weight_decay=0.05, max_shift=0, pretrain_steps=400, pretrain_lr=2e-3,
        probe_steps=200, probe_lr=1e-2, finetune_steps=200, finetune_lr=1e-3, eval_every=100, ckpt_every=0,
        eval_limit=None, seeds=3, norms=_NORMS, seednorm_heads=4, dot_scale="dim",
    ),
    # not run here; a GPU-sized setting in the same shape
    "full": MAEPreset(
        dataset="mnist", model=MAEConfig(dataclasses.replace(_MAE_ENCODER["full"], pool="mean"), decoder_dim=128,
                                         decoder_depth=2, decoder_heads=4, mask_ratio=0.75),
        batch_size=128, warmup=200, weight_decay=0.05, max_shift=2, pretrain_steps=4000, pretrain_lr=1.5e-3,
        probe_steps=1000, probe_lr=1e-2, finetune_steps=1500, finetune_lr=5e-4, eval_every=250, ckpt_every=250,
        eval_limit=None, seeds=5, norms=_NORMS, seednorm_heads=8, dot_scale="dim",
    ),
}


def get_mae_preset(name: str, **overrides: Any) -> MAEPreset:
    """The named MAE preset with ``overrides`` applied (None keeps the preset's value), checked like
    :func:`get_preset`; ``mask_ratio`` overrides the model's."""
    if name not in MAE_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {list(MAE_PRESETS)}")
    mask_ratio = overrides.pop("mask_ratio", None)
    preset = dataclasses.replace(MAE_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    if mask_ratio is not None:
        preset = dataclasses.replace(preset, model=dataclasses.replace(preset.model, mask_ratio=mask_ratio))
    if preset.seeds < 1 or preset.pretrain_steps < 1:
        raise ValueError("--seeds and --steps must be >= 1")
    preset = dataclasses.replace(preset, norms=tuple(check_norms(preset.norms)))
    _check_heads(preset.seednorm_heads, (preset.model.encoder.dim, preset.model.decoder_dim), "--seednorm-heads")
    return preset
