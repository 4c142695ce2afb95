"""A small ConvNeXt (Liu et al. 2022) whose every norm comes from ``seednorm.build_norm``.

    images (B, C, H, W) → stem: Conv(k=s=stem) → norm_cf
                        → stage 0 → [norm_cf → Conv(k=s=2)] → stage 1 → …  → mean over H, W → norm → Linear
    Block:  x = x + DropPath(γ · Linear(GELU(Linear(norm(DWConv7×7(x) as (B, H, W, C))))) as (B, C, H, W))

As in ConvNeXt, the stem and downsampling norms normalize the C channels of (B, C, H, W) tensors
(``build_norm(name, C, channels_first=True)``) and the block norms the last dimension of (B, H, W, C) tensors (the
1-D norm). Swapping LayerNorm, RMSNorm, DyT and SeeDNorm is the ``norm`` argument, as in the study's ViT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from seednorm import build_norm

from .model import Standardize

__all__ = ["ConvNeXtConfig", "ConvNeXt", "channels_first_norm"]


@dataclass(frozen=True)
class ConvNeXtConfig:
    """Shape of the ConvNeXt and its norm: stage widths ``dims`` and block counts ``depths``, a ``stem``×``stem``
    patchifying stem, ``layer_scale`` γ's initial value. ``norm_kwargs`` go to every ``build_norm`` call."""

    image_size: int = 28
    in_chans: int = 1
    num_classes: int = 10
    stem: int = 2
    dims: tuple[int, ...] = (32, 64)
    depths: tuple[int, ...] = (2, 2)
    kernel_size: int = 7
    mlp_ratio: float = 4.0
    layer_scale: float = 1e-6
    drop_path: float = 0.0
    pixel_mean: float = 0.0
    pixel_std: float = 1.0
    norm: str = "layernorm"
    norm_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.dims) != len(self.depths) or not self.dims:
            raise ValueError(f"dims {self.dims} and depths {self.depths} must name the same stages (≥ 1)")
        if self.image_size // self.stem // 2 ** (len(self.dims) - 1) < 1:
            raise ValueError(f"{len(self.dims)} stages after a stride-{self.stem} stem leave no pixels of a "
                             f"{self.image_size}-pixel image")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")
        if not self.pixel_std > 0:
            raise ValueError(f"pixel_std must be > 0, got {self.pixel_std}")

    @property
    def dim(self) -> int:
        """Width of the last stage (the features the head sees)."""
        return self.dims[-1]

    @property
    def norm_widths(self) -> tuple[int, ...]:
        """Every width a norm of this model normalizes (a SeeDNorm head count must divide each)."""
        return self.dims

    def describe(self) -> str:
        """One phrase for reports: ``ConvNeXt dims (32, 64), depths (2, 2)``."""
        return f"ConvNeXt dims {self.dims}, depths {self.depths}"


def channels_first_norm(name: str, dim: int, **kwargs: Any) -> nn.Module:
    """A norm over the ``dim`` channels of (B, C, …) inputs: ``build_norm(name, dim, channels_first=True)``."""
    return build_norm(name, dim, channels_first=True, **kwargs)


class Block(nn.Module):
    """ConvNeXt block: depthwise k×k conv, channels-last norm, MLP ×``mlp_ratio``, layer scale γ, drop path."""

    def __init__(self, config: ConvNeXtConfig, dim: int, drop_path: float) -> None:
        super().__init__()
        hidden = int(dim * config.mlp_ratio)
        self.dwconv = nn.Conv2d(dim, dim, config.kernel_size, padding=config.kernel_size // 2, groups=dim)
        self.norm = build_norm(config.norm, dim, **config.norm_kwargs)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.gamma = nn.Parameter(torch.full((dim,), config.layer_scale))
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: Tensor) -> Tensor:
        y = self.mlp(self.norm(self.dwconv(x).permute(0, 2, 3, 1))) * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXt(nn.Module):
    """Images (B, C, H, W) → logits (B, num_classes). Stochastic depth rises linearly to ``drop_path`` over all
    blocks."""

    def __init__(self, config: ConvNeXtConfig) -> None:
        super().__init__()
        self.config = config
        norm, kwargs = config.norm, dict(config.norm_kwargs)
        self.standardize = Standardize(config.pixel_mean, config.pixel_std)
        self.stem = nn.Sequential(nn.Conv2d(config.in_chans, config.dims[0], config.stem, stride=config.stem),
                                  channels_first_norm(norm, config.dims[0], **kwargs))
        self.downsample = nn.ModuleList(
            nn.Sequential(channels_first_norm(norm, d_in, **kwargs), nn.Conv2d(d_in, d_out, 2, stride=2))
            for d_in, d_out in zip(config.dims[:-1], config.dims[1:], strict=True))
        rates = iter(torch.linspace(0, config.drop_path, sum(config.depths)).tolist())
        self.stages = nn.ModuleList(nn.Sequential(*(Block(config, dim, next(rates)) for _ in range(depth)))
                                    for dim, depth in zip(config.dims, config.depths, strict=True))
        self.norm = build_norm(norm, config.dim, **kwargs)
        self.head = nn.Linear(config.dim, config.num_classes)
        for m in self.modules():  # ConvNeXt's init: trunc-normal(0.02) weights, zero biases
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, images: Tensor) -> Tensor:
        x = self.stem(self.standardize(images))
        for i, stage in enumerate(self.stages):
            if i:
                x = self.downsample[i - 1](x)
            x = stage(x)
        return self.head(self.norm(x.mean(dim=(-2, -1))))
