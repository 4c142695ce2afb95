"""A small Llama-style decoder whose every norm comes from ``seednorm.build_norm``.

Pre-norm blocks ``x + Attn(norm_attn(x))`` then ``x + SwiGLU(norm_mlp(x))``, rotary position embeddings,
causal ``scaled_dot_product_attention``, optional QK-norm (a norm over each head's query and key), a
final norm, tied or untied embeddings. ``LMConfig.placement`` says which norm sites take the chosen
norm (``attn``, ``mlp``, ``final``, ``qk``); the other sites stay RMSNorm, so one can ask e.g. "does
SeeDNorm help as the final norm only?". ``site_norm_kwargs`` gives one site its own constructor
arguments and ``embed_scale`` multiplies the embeddings by a learnable scalar (both used by DyT's
language-model recipe, :func:`seednorm_experiments.lm.recipes.dyt_lm_recipe`). Input (B, T) token ids →
logits (B, T, vocab).

Mixture of experts (``moe_experts`` > 0, OLMoE-style; dense when 0): the SwiGLU of every block becomes a
router (a bias-free linear layer, softmax over the experts) sending each token to its ``moe_top_k`` most probable
experts, each a SwiGLU of width ``moe_hidden`` (default: the dense MLP's); a token's output is the sum of its
chosen experts' outputs weighted by their router probabilities (not renormalised, as OLMoE). Dropless: every
expert takes every token routed to it (a loop over the experts, no capacity). The norm sites stay the same
(``mlp`` is the pre-norm of the MoE block). After each forward, ``Llama.aux_loss`` holds the Switch load-balancing
loss averaged over the blocks (None when dense), as OLMoE's training code computes it (MegaBlocks'
``batched_load_balancing_loss``: E/(L·N·K) · Σ_blocks Σ_e count_e · P_e); :func:`load_balancing_loss` says what one
block's is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seednorm import build_norm

__all__ = ["ARCHS", "SITES", "LMConfig", "Llama", "MoE", "load_balancing_loss"]

SITES = ("attn", "mlp", "final", "qk")
ARCHS = ("llama", "olmo2")  # this module's decoder; OLMo-core's OLMo2 (lm.olmo)


@dataclass(frozen=True)
class LMConfig:
    """Model shape and norm choice. ``mlp_hidden`` defaults to the Llama rule (8/3·dim rounded up to a
    multiple of 32). ``norm_kwargs`` go to the chosen norm's constructor (e.g. ``{"num_heads": 4}``);
    ``site_norm_kwargs[site]`` update them for one site (e.g. ``{"attn": {"alpha_init": 0.8}}``).
    ``embed_scale``: when set, the embeddings are multiplied by a learnable scalar initialised to it.
    ``moe_experts``/``moe_top_k``/``moe_hidden``: the mixture of experts in place of each MLP (0 experts: dense;
    see the module docstring); ``moe_aux_coef``: the weight of its load-balancing loss in the training loss.
    ``arch``: "llama" (this module's decoder) or "olmo2" (OLMo-core's OLMo2 at this shape, :mod:`.olmo`)."""

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
    moe_experts: int = 0
    moe_top_k: int = 2
    moe_hidden: int | None = None
    moe_aux_coef: float = 0.01
    arch: str = "llama"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose from {ARCHS}")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"dim={self.dim} must split into n_heads={self.n_heads} heads of even width")
        unknown = set(self.placement) - set(SITES)
        if unknown:
            raise ValueError(f"unknown norm placement {sorted(unknown)}; choose from {SITES}")
        unknown = set(self.site_norm_kwargs) - set(SITES)
        if unknown:
            raise ValueError(f"site_norm_kwargs names unknown site(s) {sorted(unknown)}; choose from {SITES}")
        if self.moe_experts < 0 or (self.moe_experts and not 1 <= self.moe_top_k <= self.moe_experts):
            raise ValueError(f"moe_experts={self.moe_experts} must be >= 0 and moe_top_k={self.moe_top_k} "
                             "between 1 and moe_experts")
        if self.moe_aux_coef < 0:
            raise ValueError(f"moe_aux_coef={self.moe_aux_coef} must be >= 0")

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 32 * math.ceil(8 * self.dim / 3 / 32)

    @property
    def moe(self) -> bool:
        """Whether the blocks hold a mixture of experts instead of a dense MLP."""
        return self.moe_experts > 0

    @property
    def expert_hidden(self) -> int:
        return self.moe_hidden or self.hidden

    def inactive_params(self) -> int:
        """Parameters a token does not use: the unchosen experts' weights, (E − K) SwiGLUs of 3·dim·hidden per
        block (0 when dense). Active parameters = all parameters − this."""
        if not self.moe:
            return 0
        return self.n_layers * (self.moe_experts - self.moe_top_k) * 3 * self.dim * self.expert_hidden

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
    def __init__(self, cfg: LMConfig, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or cfg.hidden
        self.gate_up = nn.Linear(cfg.dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def load_balancing_loss(probs: Tensor, chosen: Tensor, num_experts: int) -> Tensor:
    """Switch Transformer's load-balancing loss for top-k routing: E · Σ_e f_e · P_e, where f_e is the fraction of
    the N·K (token, slot) assignments that went to expert e and P_e the mean router probability of e over the N
    tokens. 1 when the load and the probabilities are uniform, E when one expert takes everything; the gradient
    flows through P only. ``probs``: (N, E) softmax router outputs; ``chosen``: (N, K) expert indices."""
    f = torch.bincount(chosen.flatten(), minlength=num_experts).to(probs.dtype) / chosen.numel()
    return num_experts * torch.dot(f, probs.mean(0))


class MoE(nn.Module):
    """Top-k mixture of SwiGLU experts, dropless: (B, T, dim) → (B, T, dim). After a forward, ``aux_loss`` holds
    its :func:`load_balancing_loss` and ``load`` (E,) the fraction of the assignments each expert took."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.top_k = cfg.moe_top_k
        self.router = nn.Linear(cfg.dim, cfg.moe_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg, cfg.expert_hidden) for _ in range(cfg.moe_experts))
        self.aux_loss: Tensor | None = None
        self.load: Tensor | None = None

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Router probabilities (N, E) (softmax in fp32), the top-k weights (N, K) and expert indices (N, K) of
        the tokens x (N, dim)."""
        probs = self.router(x).float().softmax(-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        return probs, weights, chosen

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        probs, weights, chosen = self.route(flat)
        self.aux_loss = load_balancing_loss(probs, chosen, len(self.experts))
        self.load = torch.bincount(chosen.flatten(), minlength=len(self.experts)).float() / chosen.numel()
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):  # every expert runs, on no tokens too (all parameters get grads)
            token, slot = torch.where(chosen == e)
            out.index_add_(0, token, expert(flat[token]) * weights[token, slot, None].to(flat.dtype))
        return out.view_as(x)


class Block(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.attn_norm, self.attn = cfg.make_norm("attn", cfg.dim), Attention(cfg)
        self.mlp_norm, self.mlp = cfg.make_norm("mlp", cfg.dim), (MoE(cfg) if cfg.moe else SwiGLU(cfg))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """Decoder-only LM: (B, T) int64 token ids → (B, T, vocab) logits. Init: N(0, 0.02), residual
    output projections scaled by 1/√(2·n_layers) (GPT-2); norms keep their own init; the optional
    ``embed_scale`` parameter (a scalar) starts at ``cfg.embed_scale``; the MoE router N(0, 0.02).
    ``aux_loss``: after a forward, the load-balancing loss averaged over the blocks (None when dense)."""

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

    @property
    def aux_loss(self) -> Tensor | None:
        """Mean over the blocks of each one's :func:`load_balancing_loss` (1 when every block is balanced)."""
        if not self.cfg.moe:
            return None
        return torch.stack([block.mlp.aux_loss for block in self.blocks]).mean()
