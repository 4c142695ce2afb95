"""A compact pre-norm Vision Transformer whose every norm comes from ``seednorm.build_norm``.

    patches (B, N, P²·C) → Linear → (+ class token) + position → depth × Block → norm → pool → Linear → logits
    Block:  x = x + DropPath(Attention(norm1(x)));  x = x + DropPath(MLP(norm2(x)))

Swapping LayerNorm, RMSNorm, DyT and SeeDNorm (with ``num_heads``, ``dynamic_dropout``, ``dot_scale``) is one
argument: ``ViT(norm="seednorm", norm_kwargs={"num_heads": 4})``. ``build_vit(backend="timm")`` builds the same
architecture from ``timm``'s VisionTransformer with the same norm factory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from seednorm import build_norm

__all__ = ["ViTConfig", "ViT", "build_vit", "norm_factory"]


@dataclass(frozen=True)
class ViTConfig:
    """Shape of the ViT and its norm. ``norm_kwargs`` go to ``build_norm(norm, dim, **norm_kwargs)``."""

    image_size: int = 28
    patch_size: int = 7
    in_chans: int = 1
    num_classes: int = 10
    dim: int = 64
    depth: int = 4
    attn_heads: int = 4
    mlp_ratio: float = 2.0
    pool: Literal["cls", "mean"] = "cls"
    drop_path: float = 0.0
    pixel_mean: float = 0.0
    pixel_std: float = 1.0
    norm: str = "layernorm"
    norm_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.dim % self.attn_heads:
            raise ValueError(f"dim {self.dim} is not divisible by attn_heads {self.attn_heads}")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {self.pool!r}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")
        if not self.pixel_std > 0:
            raise ValueError(f"pixel_std must be > 0, got {self.pixel_std}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def norm_widths(self) -> tuple[int, ...]:
        """Every width a norm of this model normalizes (a SeeDNorm head count must divide each)."""
        return (self.dim,)

    def describe(self) -> str:
        """One phrase for reports: ``ViT d=64, depth 4``."""
        return f"ViT d={self.dim}, depth {self.depth}"


def norm_factory(config: ViTConfig) -> Callable[[int], nn.Module]:
    """``dim -> norm module`` for the configured norm (timm's ``norm_layer``; a plain function, because timm
    unbinds a ``partial``'s positional arguments)."""
    kwargs = dict(config.norm_kwargs)

    def make_norm(dim: int, **extra: Any) -> nn.Module:
        return build_norm(config.norm, dim, **kwargs, **extra)

    return make_norm


class Standardize(nn.Module):
    """(x − mean) / std with fixed scalars: images in [0, 1] → roughly zero mean, unit variance."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Attention(nn.Module):
    """Multi-head self-attention: (B, T, D) → (B, T, D), via ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(norm1(x))), then x + DropPath(MLP(norm2(x)))."""

    def __init__(self, config: ViTConfig, drop_path: float) -> None:
        super().__init__()
        make_norm = norm_factory(config)
        hidden = int(config.dim * config.mlp_ratio)
        self.norm1 = make_norm(config.dim)
        self.attn = Attention(config.dim, config.attn_heads)
        self.norm2 = make_norm(config.dim)
        self.mlp = nn.Sequential(nn.Linear(config.dim, hidden), nn.GELU(), nn.Linear(hidden, config.dim))
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """Images (B, C, H, W) → logits (B, num_classes). Stochastic depth rises linearly to ``drop_path``."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        patch_dim = config.in_chans * config.patch_size**2
        tokens = config.num_patches + (config.pool == "cls")
        self.standardize = Standardize(config.pixel_mean, config.pixel_std)
        self.patch_embed = nn.Linear(patch_dim, config.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim)) if config.pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, config.dim))
        rates = torch.linspace(0, config.drop_path, config.depth).tolist()
        self.blocks = nn.ModuleList(Block(config, rate) for rate in rates)
        self.norm = norm_factory(config)(config.dim)
        self.head = nn.Linear(config.dim, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ViT init: trunc-normal(0.02) for position, class token and every Linear but the patch
        embedding, which keeps PyTorch's default (timm's is a Conv2d that its init leaves alone)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m is not self.patch_embed:
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def patchify(self, images: Tensor) -> Tensor:
        """(B, C, H, W) → (B, N, P²·C), patches in row-major order."""
        if images.dim() != 4 or images.shape[1:] != (self.config.in_chans, *(2 * (self.config.image_size,))):
            c, s = self.config.in_chans, self.config.image_size
            raise ValueError(f"expected images of shape (B, {c}, {s}, {s}), got {tuple(images.shape)}")
        p = self.config.patch_size
        b, c, h, w = images.shape
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def features(self, images: Tensor) -> Tensor:
        """(B, C, H, W) → (B, D): the pooled, normalized tokens the head sees."""
        x = self.patch_embed(self.patchify(self.standardize(images)))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0] if self.cls_token is not None else x.mean(dim=1)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def build_vit(config: ViTConfig, backend: Literal["seednorm", "timm"] = "seednorm") -> nn.Module:
    """The ViT of ``config``: this module's ``ViT``, or ``timm``'s VisionTransformer with the same norms."""
    if backend == "seednorm":
        return ViT(config)
    if backend == "timm":
        from timm.models.vision_transformer import VisionTransformer

        vit = VisionTransformer(
            img_size=config.image_size,
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            num_classes=config.num_classes,
            global_pool="token" if config.pool == "cls" else "avg",
            class_token=config.pool == "cls",
            embed_dim=config.dim,
            depth=config.depth,
            num_heads=config.attn_heads,
            mlp_ratio=config.mlp_ratio,
            drop_path_rate=config.drop_path,
            norm_layer=norm_factory(config),
        )
        return nn.Sequential(Standardize(config.pixel_mean, config.pixel_std), vit)
    raise ValueError(f"backend must be 'seednorm' or 'timm', got {backend!r}")

