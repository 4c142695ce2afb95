"""A small Llama-style decoder whose every norm comes from ``seednorm.build_norm``.

Pre-norm blocks ``x + Attn(norm_attn(x))`` then ``x + SwiGLU(norm_mlp(x))``, rotary position embeddings,
causal ``scaled_dot_product_attention``, optional QK-norm (a norm over each head's query and key), a
final norm, tied or untied embeddings. ``LMConfig.placement`` says which norm sites take the chosen
norm (``attn``, ``mlp``, ``final``, ``qk``); the other sites stay RMSNorm, so one can ask e.g. "does
SeeDNorm help as the final norm only?". ``site_norm_kwargs`` gives one site its own constructor
arguments and ``embed_scale`` multiplies the embeddings by a learnable scalar (both used by DyT's
language-model recipe, :func:`seednorm_experiments.lm.recipes.dyt_lm_recipe`). Input (B, T) token ids →
logits (B, T, vocab).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seednorm import build_norm

__all__ = ["SITES", "LMConfig", "Llama"]

SITES = ("attn", "mlp", "final", "qk")


@dataclass(frozen=True)
class LMConfig:
    """Model shape and norm choice. ``mlp_hidden`` defaults to the Llama rule (8/3·dim rounded up to a
    multiple of 32). ``norm_kwargs`` go to the chosen norm's constructor (e.g. ``{"num_heads": 4}``);
    ``site_norm_kwargs[site]`` update them for one site (e.g. ``{"attn": {"alpha_init": 0.8}}``).
    ``embed_scale``: when set, the embeddings are multiplied by a learnable scalar initialised to it."""

    vocab_size: int
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    seq_len: int = 128
    mlp_hidden: int | None = None
    tie_embeddings: bool = True
    qk_norm: bool = False
    norm: str = "rmsnorm"
    placement: tuple[str, ...] = ("attn", "mlp", "final", "qk")
    norm_kwargs: dict[str, Any] = field(default_factory=dict)
    site_norm_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    embed_scale: float | None = None
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"dim={self.dim} must split into n_heads={self.n_heads} heads of even width")
        unknown = set(self.placement) - set(SITES)
        if unknown:
            raise ValueError(f"unknown norm placement {sorted(unknown)}; choose from {SITES}")
        unknown = set(self.site_norm_kwargs) - set(SITES)
        if unknown:
            raise ValueError(f"site_norm_kwargs names unknown site(s) {sorted(unknown)}; choose from {SITES}")

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 32 * math.ceil(8 * self.dim / 3 / 32)

    def make_norm(self, site: str, width: int) -> nn.Module:
        """The norm for ``site``: the chosen type where ``placement`` lists the site, else RMSNorm."""
        if site in self.placement:
            return build_norm(self.norm, width, **{**self.norm_kwargs, **self.site_norm_kwargs.get(site, {})})
        return build_norm("rmsnorm", width)


def _rope(seq_len: int, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv)
    return angles.cos().float(), angles.sin().float()


def _apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (first half, second half) of x (B, H, T, hd) by position-dependent angles."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos[: x.shape[-2]].to(x.dtype), sin[: x.shape[-2]].to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.dim // cfg.n_heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.q_norm = cfg.make_norm("qk", self.head_dim) if cfg.qk_norm else nn.Identity()
        self.k_norm = cfg.make_norm("qk", self.head_dim) if cfg.qk_norm else nn.Identity()

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = _apply_rope(self.q_norm(q), cos, sin), _apply_rope(self.k_norm(k), cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(cfg.dim, 2 * cfg.hidden, bias=False)
        self.down = nn.Linear(cfg.hidden, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.attn_norm, self.attn = cfg.make_norm("attn", cfg.dim), Attention(cfg)
        self.mlp_norm, self.mlp = cfg.make_norm("mlp", cfg.dim), SwiGLU(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """Decoder-only LM: (B, T) int64 token ids → (B, T, vocab) logits. Init: N(0, 0.02), residual
    output projections scaled by 1/√(2·n_layers) (GPT-2); norms keep their own init; the optional
    ``embed_scale`` parameter (a scalar) starts at ``cfg.embed_scale``."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.embed_scale = (nn.Parameter(torch.tensor(float(cfg.embed_scale))) if cfg.embed_scale is not None
                            else None)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = cfg.make_norm("final", cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        cos, sin = _rope(cfg.seq_len, cfg.dim // cfg.n_heads, cfg.rope_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(("proj.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def forward(self, idx: Tensor) -> Tensor:
        if idx.shape[-1] > self.cfg.seq_len:
            raise ValueError(f"sequence of {idx.shape[-1]} tokens exceeds seq_len={self.cfg.seq_len}")
        x = self.embed(idx)
        if self.embed_scale is not None:
            x = x * self.embed_scale
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        return self.head(self.norm(x))
