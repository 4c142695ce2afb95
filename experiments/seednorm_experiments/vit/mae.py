"""Masked autoencoder (He et al. 2022) on the study's ViT, and the two ways its encoder is scored on labels.

Pre-training, per image of N patches (P²·C pixels each) and noise u ∈ R^N:

    keep the K = round(N·(1 − mask_ratio)) patches of smallest u   (``random_masking``; mask m_i = 1: hidden)
    encoder: the ViT's patch embedding + positions, its blocks on the K kept tokens only, its final norm
    decoder: Linear(D → d), a learned mask token at every hidden position, positions, light blocks, norm,
             Linear(d → P²·C)
    target t_i = (x_i − mean(x_i)) / sqrt(var(x_i) + 1e-6)   per patch of the standardized image (unbiased var)
    loss = Σ_i m_i · mean_j (ŷ_ij − t_ij)² / Σ_i m_i         (masked patches only)

Every norm of encoder and decoder comes from ``seednorm.build_norm`` (the decoder's blocks are the ViT's Block).
After pre-training, :class:`LinearProbe` trains one Linear (after a BatchNorm without affine, as MAE does) on the
frozen encoder's pooled features; fine-tuning trains the whole ViT (``encoder_state`` loads the weights).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from .model import Block, ViT, ViTConfig, norm_factory

__all__ = ["MAEConfig", "MAE", "LinearProbe", "encoder_state", "masked_mse", "patch_targets", "random_masking"]


@dataclass(frozen=True)
class MAEConfig:
    """The encoder (a ViT, mean pooling: MAE's fine-tuning and probe pool the patch tokens) and the light decoder
    (``decoder_dim`` wide, ``decoder_depth`` blocks, ``decoder_heads`` attention heads); ``mask_ratio`` of the
    patches is hidden. The decoder's norms are the encoder's (``encoder.norm``, ``encoder.norm_kwargs``)."""

    encoder: ViTConfig
    decoder_dim: int = 32
    decoder_depth: int = 1
    decoder_heads: int = 2
    mask_ratio: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.keep < 1 or self.keep >= self.encoder.num_patches:
            raise ValueError(f"mask_ratio {self.mask_ratio} of {self.encoder.num_patches} patches keeps "
                             f"{self.keep}; it must keep at least one and hide at least one")

    @property
    def keep(self) -> int:
        """Patches the encoder sees: round(N·(1 − mask_ratio))."""
        return round(self.encoder.num_patches * (1.0 - self.mask_ratio))

    @property
    def decoder(self) -> ViTConfig:
        """The decoder's block shape, as a ViT config (no drop path)."""
        return replace(self.encoder, dim=self.decoder_dim, depth=self.decoder_depth, attn_heads=self.decoder_heads,
                       drop_path=0.0)

    def describe(self) -> str:
        """One phrase for reports."""
        return (f"MAE on ViT d={self.encoder.dim}, depth {self.encoder.depth}; decoder d={self.decoder_dim}, "
                f"depth {self.decoder_depth}; mask ratio {self.mask_ratio}")


def random_masking(noise: Tensor, keep: int) -> tuple[Tensor, Tensor, Tensor]:
    """noise (B, N) → (ids_keep (B, keep): the kept patches, smallest noise first; mask (B, N): 1 hidden, 0 kept,
    in patch order; ids_restore (B, N): where each patch sits in the noise-sorted order)."""
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones_like(noise)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], mask.gather(1, ids_restore), ids_restore


def patch_targets(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """(B, N, P²·C) → per-patch normalized pixels (x − mean) / sqrt(var + eps), var unbiased (MAE's target)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps) ** 0.5


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over hidden patches (mask 1) of each patch's mean squared error: (B, N, P) × 2, (B, N) → scalar."""
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


class MAE(nn.Module):
    """``model(images, noise)`` → the masked reconstruction loss; :meth:`reconstruct` also returns the prediction
    (B, N, P²·C) and the mask (B, N). ``encoder`` is a :class:`~.model.ViT` without its head (an Identity)."""

    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        if config.encoder.pool != "mean":
            raise ValueError("the MAE encoder pools its patch tokens: encoder.pool must be 'mean'")
        self.config = config
        dec = config.decoder
        patch_dim = config.encoder.in_chans * config.encoder.patch_size**2
        self.encoder = ViT(config.encoder)
        self.encoder.head = nn.Identity()  # pre-training has no classifier (and DDP wants every parameter used)
        self.decoder_embed = nn.Linear(config.encoder.dim, dec.dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec.dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, config.encoder.num_patches, dec.dim))
        self.decoder_blocks = nn.ModuleList(Block(dec, 0.0) for _ in range(dec.depth))
        self.decoder_norm = norm_factory(dec)(dec.dim)
        self.decoder_pred = nn.Linear(dec.dim, patch_dim)
        for p in (self.mask_token, self.decoder_pos):
            nn.init.trunc_normal_(p, std=0.02)
        for m in (self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def reconstruct(self, images: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, prediction (B, N, P²·C), mask (B, N)) for ``images`` masked by ``noise`` (B, N)."""
        enc = self.encoder
        patches = enc.patchify(enc.standardize(images))
        ids_keep, mask, ids_restore = random_masking(noise, self.config.keep)
        x = enc.patch_embed(patches) + enc.pos_embed
        x = x.gather(1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        for block in enc.blocks:
            x = block(x)
        y = self.decoder_embed(enc.norm(x))
        hidden = self.mask_token.expand(y.shape[0], ids_restore.shape[1] - y.shape[1], -1)
        y = torch.cat([y, hidden], dim=1).gather(1, ids_restore[..., None].expand(-1, -1, y.shape[-1]))
        y = y + self.decoder_pos
        for block in self.decoder_blocks:
            y = block(y)
        pred = self.decoder_pred(self.decoder_norm(y))
        return masked_mse(pred, patch_targets(patches), mask), pred, mask

    def forward(self, images: Tensor, noise: Tensor) -> Tensor:
        return self.reconstruct(images, noise)[0]


def encoder_state(mae_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ``encoder.`` entries of an MAE state dict, as a ViT state dict without the head."""
    return {k.removeprefix("encoder."): v for k, v in mae_state.items() if k.startswith("encoder.")}


class LinearProbe(nn.Module):
    """A frozen encoder (kept in eval mode: no drop path, no dynamic dropout) → BatchNorm1d without affine →
    Linear; only the Linear trains. Images (B, C, H, W) → logits (B, classes)."""

    def __init__(self, encoder: ViT, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder.requires_grad_(False)
        self.bn = nn.BatchNorm1d(encoder.config.dim, affine=False, eps=1e-6)
        self.head = nn.Linear(encoder.config.dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            features = self.encoder.features(images)
        return self.head(self.bn(features))
