"""OLMo-core's OLMo2 decoder at the study's shape (``seednorm lm --arch olmo2``): the paper's architecture.

OLMo2's block is the reordered-norm one, ``h = x + norm(attn(x))``, ``out = h + norm(mlp(h))`` (the norms on the
sub-layer outputs), with a QK-norm over the full width and a final norm; ε = 1e-6. The model is OLMo-core's own
(``TransformerConfig.llama_like`` with OLMo2's block, as ``olmo2_14M`` is made), at ``LMConfig``'s width, depth,
heads, vocabulary, MLP width (the Llama rule, 8/3·dim rounded up to a multiple of 32), RoPE base and embedding tying.
Input (B, T) token ids → logits (B, T, vocab).

Norms: "rmsnorm" is OLMo2 as OLMo-core builds it; "seednorm" converts it with
``seednorm.integrations.olmo_core.convert_config`` at the sites of ``LMConfig.placement``: ``attn`` and ``mlp``
together (one config builds both of a block's norms) → the block norms, ``final`` → the final norm, ``qk`` → the
QK-norm; ``norm_kwargs`` are the converter's SeeDNorm options (``num_heads``, ``dot_scale``, ``alpha_init``,
``activation``). OLMo-core is imported here only, when such a model is built.
"""

from __future__ import annotations

from torch import nn

from .model import LMConfig

__all__ = ["NORMS", "build_olmo2", "check_olmo2", "olmo2_config"]

NORMS = ("rmsnorm", "seednorm")
_OPTIONS = ("num_heads", "dot_scale", "alpha_init", "activation")


def check_olmo2(cfg: LMConfig) -> None:
    """A ValueError naming what an OLMo2 model of ``cfg`` cannot have (before anything is built or trained)."""
    if cfg.norm not in NORMS:
        raise ValueError(f"--arch olmo2 trains {' and '.join(NORMS)} (OLMo2's RMSNorm and its SeeDNorm conversion), "
                         f"not {cfg.norm!r}")
    if cfg.moe or cfg.site_norm_kwargs or cfg.embed_scale is not None or cfg.mlp_hidden is not None:
        raise ValueError("--arch olmo2 is the dense OLMo2 model: no experts, per-site norm options, embedding "
                         "scale or MLP width of its own")
    if bool({"attn", "mlp"} & set(cfg.placement)) != ({"attn", "mlp"} <= set(cfg.placement)):
        raise ValueError("--arch olmo2: one config builds both norms of a block, so the placement names attn and "
                         "mlp together or neither")
    unknown = set(cfg.norm_kwargs) - set(_OPTIONS)
    if unknown:
        raise ValueError(f"--arch olmo2: norm options {sorted(unknown)} are not options of the converter "
                         f"({', '.join(_OPTIONS)})")


def olmo2_config(cfg: LMConfig, init_seed: int = 0):
    """OLMo-core's ``TransformerConfig`` of ``cfg`` (converted to SeeDNorm when ``cfg.norm`` is "seednorm")."""
    check_olmo2(cfg)
    try:
        from olmo_core.nn.transformer import TransformerBlockType, TransformerConfig
    except ImportError as err:
        raise ImportError(f"--arch olmo2 needs OLMo-core ({err}); install it with pip install --no-deps -r "
                          "requirements-torchtitan.txt") from None
    config = TransformerConfig.llama_like(
        d_model=cfg.dim, vocab_size=cfg.vocab_size, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
        block_name=TransformerBlockType.reordered_norm, qk_norm=True, layer_norm_eps=1e-6,
        rope_theta=int(cfg.rope_base), hidden_size_multiple_of=32, tie_word_embeddings=cfg.tie_embeddings,
        init_seed=init_seed)
    if cfg.norm == "seednorm":
        from seednorm.integrations.olmo_core import convert_config

        config = convert_config(config, block_norms="attn" in cfg.placement, final_norm="final" in cfg.placement,
                                qk_norm="qk" in cfg.placement, **cfg.norm_kwargs)
    return config


def build_olmo2(cfg: LMConfig) -> nn.Module:
    """The initialized model; its init is drawn from torch's generator (so it follows the run's seed)."""
    import torch

    init_seed = int(torch.randint(0, 2**31 - 1, ()).item())
    model = olmo2_config(cfg, init_seed).build(init_device="cpu")
    model.init_weights(device=torch.device("cpu"))
    return model
