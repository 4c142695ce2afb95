"""OLMo-core's OLMo2 decoder at the study's shape (``seednorm lm --arch olmo2``): the paper's architecture.

OLMo2's block is the reordered-norm one, ``h = x + norm(attn(x))``, ``out = h + norm(mlp(h))`` (the norms on the
sub-layer outputs), with a QK-norm over the full width and a final norm; ε = 1e-6. The model is OLMo-core's own
(``TransformerConfig.llama_like`` with OLMo2's block, as ``olmo2_14M`` is made), at ``LMConfig``'s width, depth,
heads, vocabulary, MLP width (the Llama rule, 8/3·dim rounded up to a multiple of 32), RoPE base and embedding tying.
Input (B, T) token ids → logits (B, T, vocab).

With experts (``LMConfig.moe_experts`` > 0) it is OLMoE's layout at this shape, as ``TransformerConfig.olmoe_1B_7B``
is made: every block a reordered-norm MoE block (``moe_reordered_norm``) whose MLP is OLMo-core's dropless MoE,
``moe_experts`` SwiGLU experts of width ``LMConfig.expert_hidden``, a softmax router sending each token to its
``moe_top_k`` best, the load-balancing loss weighted ``moe_aux_coef`` and the router z-loss :data:`MOE_Z_LOSS` (both
OLMoE's, divided over the blocks by OLMo-core and added to the gradient by it, not to the logged loss). On CPU its
token gather and scatter are :mod:`.olmo_moe_cpu`'s (OLMo-core's are Triton kernels that need a GPU). The router's
weight is held as the (experts, width) matrix it is (OLMo-core stores it flat, for FSDP; its forward views it so), so
that the study's weight decay takes it as a matrix, as ``seednorm.integrations.olmo_core.SeeDNormAdamWConfig`` does.

Norms: "rmsnorm" is OLMo2 as OLMo-core builds it; "seednorm" converts it with
``seednorm.integrations.olmo_core.convert_config`` at the sites of ``LMConfig.placement``: ``attn`` and ``mlp``
together (one config builds both of a block's norms) → the block norms, ``final`` → the final norm, ``qk`` → the
QK-norm; ``norm_kwargs`` are the converter's SeeDNorm options (``num_heads``, ``dot_scale``, ``alpha_init``,
``activation``). OLMo-core is imported here only (:func:`import_olmo_core`): when a study checks
``--arch olmo2`` and when such a model is built.
"""

from __future__ import annotations

from torch import nn

from .model import LMConfig

__all__ = ["MOE_Z_LOSS", "NORMS", "build_olmo2", "check_olmo2", "import_olmo_core", "olmo2_config", "routing"]

NORMS = ("rmsnorm", "seednorm")
MOE_Z_LOSS = 0.001
"""The router z-loss weight of the MoE model (OLMoE-1B-7B's)."""
_OPTIONS = ("num_heads", "dot_scale", "alpha_init", "activation")


def check_olmo2(cfg: LMConfig) -> None:
    """A ValueError naming what an OLMo2 model of ``cfg`` cannot have (before anything is built or trained)."""
    if cfg.norm not in NORMS:
        raise ValueError(f"--arch olmo2 trains {' and '.join(NORMS)} (OLMo2's RMSNorm and its SeeDNorm conversion), "
                         f"not {cfg.norm!r}")
    if cfg.site_norm_kwargs or cfg.embed_scale is not None or cfg.mlp_hidden is not None:
        raise ValueError("--arch olmo2 is OLMo2 (or OLMoE with experts) as OLMo-core builds it: no per-site norm "
                         "options, embedding scale or MLP width of its own")
    if bool({"attn", "mlp"} & set(cfg.placement)) != ({"attn", "mlp"} <= set(cfg.placement)):
        raise ValueError("--arch olmo2: one config builds both norms of a block, so the placement names attn and "
                         "mlp together or neither")
    unknown = set(cfg.norm_kwargs) - set(_OPTIONS)
    if unknown:
        raise ValueError(f"--arch olmo2: norm options {sorted(unknown)} are not options of the converter "
                         f"({', '.join(_OPTIONS)})")


def import_olmo_core() -> None:
    """Import OLMo-core's transformer, or an ImportError that says how to install it.

    Quietly: the two warnings its import prints on a CPU machine say nothing about a run here (torch's "No CUDA
    runtime is found, using CUDA_HOME=...", as OLMo-core imports ``torch.utils.cpp_extension``, and
    "transformer_engine unavailable, disabling TE attention", its optional GPU attention)."""
    import logging

    loggers = [logging.getLogger(name) for name in ("torch.utils.cpp_extension", "olmo_core.nn.attention")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        import olmo_core.nn.transformer  # noqa: F401
    except ImportError as err:
        raise ImportError(f"--arch olmo2 needs OLMo-core ({err}); install it with pip install --no-deps -r "
                          "requirements-torchtitan.txt") from None
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def olmo2_config(cfg: LMConfig, init_seed: int = 0):
    """OLMo-core's ``TransformerConfig`` of ``cfg`` (converted to SeeDNorm when ``cfg.norm`` is "seednorm")."""
    check_olmo2(cfg)
    import_olmo_core()
    from olmo_core.nn.transformer import TransformerBlockType, TransformerConfig

    block = {"block_name": TransformerBlockType.reordered_norm}
    if cfg.moe:
        from olmo_core.nn.moe import MoEConfig, MoERouterConfig, MoEType
        from olmo_core.nn.transformer import TransformerType

        block = {"name": TransformerType.moe, "block_name": TransformerBlockType.moe_reordered_norm,
                 "feed_forward_moe": MoEConfig(name=MoEType.dropless, num_experts=cfg.moe_experts,
                                               hidden_size=cfg.expert_hidden,
                                               router=MoERouterConfig(top_k=cfg.moe_top_k),
                                               lb_loss_weight=cfg.moe_aux_coef, z_loss_weight=MOE_Z_LOSS)}
    config = TransformerConfig.llama_like(
        d_model=cfg.dim, vocab_size=cfg.vocab_size, n_layers=cfg.n_layers, n_heads=cfg.n_heads, qk_norm=True,
        layer_norm_eps=1e-6, rope_theta=int(cfg.rope_base), hidden_size_multiple_of=32,
        tie_word_embeddings=cfg.tie_embeddings, init_seed=init_seed, **block)
    if cfg.norm == "seednorm":
        from seednorm.integrations.olmo_core import convert_config

        config = convert_config(config, block_norms="attn" in cfg.placement, final_norm="final" in cfg.placement,
                                qk_norm="qk" in cfg.placement, **cfg.norm_kwargs)
    return config


def build_olmo2(cfg: LMConfig) -> nn.Module:
    """The initialized model; its init is drawn from torch's generator (so it follows the run's seed). With
    experts, OLMo-core's MoE ops take :mod:`.olmo_moe_cpu`'s forms for CPU tensors from here on."""
    import torch

    if cfg.moe:
        from .olmo_moe_cpu import install

        install()
    init_seed = int(torch.randint(0, 2**31 - 1, ()).item())
    model = olmo2_config(cfg, init_seed).build(init_device="cpu")
    if cfg.moe:
        from olmo_core.nn.moe.router import MoELinearRouter

        for router in (m for m in model.modules() if isinstance(m, MoELinearRouter)):
            router.weight = nn.Parameter(router.weight.detach().view(router.num_experts, router.d_model))
    model.init_weights(device=torch.device("cpu"))
    return model


def routing(model: nn.Module, tokens) -> dict[str, float]:
    """The MoE model's routing on ``tokens`` (B, T), as :meth:`.study.Evaluator.routing` gives the Llama MoE's:
    ``moe/balance``, the load-balancing loss E·Σ_e f_e·P_e per block (f_e the share of the token assignments expert
    e takes, P_e its mean router probability; 1: balanced), and ``moe/max_load``, E·max_e f_e (OLMo-core's "load
    imbalance"; 1: balanced, E/K: it takes every token), both averaged over the MoE blocks. The routers' own
    statistics are left as they were."""
    import torch
    from olmo_core.nn.moe.router import MoERouter

    seen: list[tuple[MoERouter, torch.Tensor, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append((m, args[0], out[2])))
             for m in model.modules() if isinstance(m, MoERouter)]
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ValueError("routing: the model has no MoE router")
    balance, max_load = [], []
    with torch.no_grad():
        for router, x, per_expert in seen:
            share = per_expert.float() / per_expert.sum()
            prob = router.get_expert_logits(x).float().softmax(dim=-1).reshape(-1, router.num_experts).mean(0)
            balance.append(router.num_experts * float((share * prob).sum()))
            max_load.append(router.num_experts * float(share.max()))
    return {"moe/balance": sum(balance) / len(balance), "moe/max_load": sum(max_load) / len(max_load)}
