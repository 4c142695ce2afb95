"""OLMo-core: SeeDNorm in AllenAI's OLMo2 / OLMoE models by converting the ``TransformerConfig`` before it is built.

    from olmo_core.nn.transformer import TransformerConfig
    from seednorm.integrations.olmo_core import SeeDNormAdamWConfig, convert_config

    config = convert_config(TransformerConfig.olmo2_14M(vocab_size=50304))   # block norms → SeeDNorm
    model = config.build(init_device="cpu")
    optim = SeeDNormAdamWConfig(lr=4e-4, weight_decay=0.1).build(model)      # α, β decayed, γ not (spec §4)

OLMo-core builds every norm from a ``LayerNormConfig`` (``name``, ``eps``, ``bias``, ``dtype``, ...): a block's
``layer_norm`` builds all of that block's norms (the pre-norms of a pre-norm block; the norms on the attention and
MLP *outputs* of OLMo2's reordered-norm block, ``h = x + norm(attn(x))``; the MoE norm of a hybrid block), the
attention's ``qk_norm`` builds ``q_norm`` and ``k_norm`` (over the full width ``n_heads·head_dim``, or over one
head's ``head_dim`` with ``use_head_qk_norm``), ``lm_head.layer_norm`` the final norm. ``convert_config`` replaces
those configs at the chosen sites with ``SeeDNormConfig``, a ``LayerNormConfig`` whose ``build`` returns
``seednorm.SeeDNorm`` with the same width, ε, bias, parameter dtype and device. At init (β = 0, σ(0) = 0) it computes
what the RMSNorm (or, for ``name="default"``, the LayerNorm, via SeeDNorm's ``center=True``) did.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from olmo_core.nn.layer_norm import LayerNormConfig, LayerNormType
from olmo_core.nn.moe.router import MoERouter
from olmo_core.nn.transformer import TransformerBlockConfig, TransformerConfig
from olmo_core.optim import AdamWConfig, OptimConfig
from torch import Tensor, nn

from .. import functional as SF
from .. import modules
from ..convert import check_equal_at_init

__all__ = ["SeeDNormConfig", "convert_config", "SeeDNormAdamWConfig", "SITES"]

SITES = ("block_norms", "qk_norm", "final_norm")
# The RMSNorm implementations of OLMo-core (they differ in rounding order only) and its LayerNorm ("default").
_CONVERTIBLE = {LayerNormType.rms, LayerNormType.fused_rms, LayerNormType.cute_rms, LayerNormType.qwen_rms,
                LayerNormType.nemotron_rms, LayerNormType.default}


@dataclass
class SeeDNormConfig(LayerNormConfig):
    """A ``LayerNormConfig`` that builds ``seednorm.SeeDNorm``: input (..., size) → output (..., size),
    y = [σ(s)·α + γ] ⊙ x / RMS(x), s = dot_scale·⟨x_h, β_h⟩ per head h (x centered first when ``name`` is
    ``"default"``, OLMo-core's LayerNorm). ``name``, ``eps``, ``bias``, ``dtype`` keep the meaning (and the defaults)
    of the ``LayerNormConfig`` it replaces; SeeDNorm always computes in float32, as ``full_precision=True`` does.
    Serializes like any OLMo-core config (``as_config_dict`` / ``from_dict`` resolve the class by its path)."""

    name: LayerNormType = LayerNormType.rms
    num_heads: int = 1
    """SeeDNorm heads (spec §3): s per contiguous slice of size/num_heads channels."""
    alpha_init: float = 1.0
    """Initial α (β starts at 0; never 0, as both gradients would vanish)."""
    activation: str = "tanh"
    """σ: "tanh", "hardtanh", "softsign" (σ(0) = 0) or "sigmoid"."""
    dot_scale: float | str = 1.0
    """Multiplies s; "dim" means 1/(size/num_heads) (spec §4)."""

    def num_params(self, size: int) -> int:
        return super().num_params(size) + (2 * size if self.elementwise_affine is not False else 0)

    def build(self, size: int, init_device: str = "cpu", weight_shape: tuple[int, ...] | None = None
              ) -> modules.SeeDNorm:
        """The layer for inputs (..., size), parameters γ = 1, α = ``alpha_init``, β = 0 (and bias 0) of shape
        (size,) in ``dtype`` (float32 by default) on ``init_device``."""
        if weight_shape is not None and tuple(weight_shape) != (size,):
            raise ValueError(f"SeeDNormConfig: per-head gains (weight_shape={tuple(weight_shape)}, e.g. "
                             "qk_norm_per_head_gains=True) are not supported; leave the QK-norm unconverted or "
                             "share its gains across heads")
        if self.elementwise_affine is False:
            raise ValueError("SeeDNormConfig: elementwise_affine=False (a norm without a gain) cannot be converted; "
                             "leave this site unconverted")
        if self.name not in _CONVERTIBLE:
            raise ValueError(f"SeeDNormConfig: name={str(self.name)!r} has no SeeDNorm form; convertible norms are "
                             f"{sorted(str(n) for n in _CONVERTIBLE)}")
        return modules.SeeDNorm(
            size,
            num_heads=self.num_heads,
            eps=1e-5 if self.eps is None else self.eps,  # OLMo-core's LayerNorm default
            alpha_init=self.alpha_init,
            activation=self.activation,
            dot_scale=self.dot_scale,
            center=self.name == LayerNormType.default,
            bias=True if self.bias is None else self.bias,  # OLMo-core's LayerNorm default: a bias
            device=init_device,
            dtype=torch.float32 if self.dtype is None else self.dtype.as_pt(),
        )


def _seednorm_config(norm: LayerNormConfig, where: str, width: int, options: dict[str, Any]) -> SeeDNormConfig:
    """The SeeDNorm form of the norm config at ``where`` (an error naming it where there is none)."""
    if isinstance(norm, SeeDNormConfig):
        raise ValueError(f"convert_config: the norm at {where} is already a SeeDNormConfig; convert the "
                         "original TransformerConfig once")
    if norm.name not in _CONVERTIBLE or norm.elementwise_affine is False:
        raise ValueError(f"convert_config: the norm at {where} (name={str(norm.name)!r}, elementwise_affine="
                         f"{norm.elementwise_affine}) has no SeeDNorm form; leave this site unconverted")
    try:
        SF.check_heads(width, options["num_heads"])
        SF.resolve_dot_scale(options["dot_scale"], width, options["num_heads"])
    except ValueError as err:
        raise ValueError(f"convert_config: the norm at {where} (width {width}): {err}") from None
    return SeeDNormConfig(**norm.as_dict(recurse=False), **options)


def _blocks(config: TransformerConfig) -> list[tuple[str, TransformerBlockConfig]]:
    """Every block config with its place in ``config``: ``block`` (or each of a dict of named blocks), then
    ``block_overrides``."""
    if isinstance(config.block, dict):
        blocks = [(f"block[{k!r}]", b) for k, b in config.block.items()]
    else:
        blocks = [("block", config.block)]
    blocks += [(f"block_overrides[{i}]", b) for i, b in sorted((config.block_overrides or {}).items())]
    return blocks


def _qk_widths(attention: Any, d_model: int) -> list[int]:
    """The widths OLMo-core builds ``qk_norm`` at: q_norm's and k_norm's, or one head's with ``use_head_qk_norm``."""
    head_dim = attention.head_dim or d_model // attention.n_heads
    if attention.use_head_qk_norm:
        return [head_dim]
    return [attention.n_heads * head_dim, (attention.n_kv_heads or attention.n_heads) * head_dim]


def convert_config(
    config: TransformerConfig,
    *,
    num_heads: int = 1,
    dot_scale: float | str = 1.0,
    alpha_init: float = 1.0,
    activation: str = "tanh",
    allow_unequal_init: bool = False,
    block_norms: bool = True,
    qk_norm: bool = False,
    final_norm: bool = False,
) -> TransformerConfig:
    """A copy of ``config`` with SeeDNorm at the chosen norm sites (``config`` itself is left unchanged).

    Sites: ``block_norms`` (every block's ``layer_norm``: all norms of every block, in ``block``, a dict of named
    blocks, and ``block_overrides``; default on), ``qk_norm`` (the attention's ``qk_norm``, width n_heads·head_dim
    or head_dim with ``use_head_qk_norm``), ``final_norm`` (``lm_head.layer_norm``). The embedding norm, where a
    model has one, stays. A site asked for but absent, a width that ``num_heads`` does not divide, a norm without a
    gain or with per-head gains is an error naming the site. ``activation`` with σ(0) ≠ 0 (sigmoid) is refused unless
    ``allow_unequal_init=True`` (the converted model then differs at init), as by ``convert_to_seednorm``.
    """
    SF.check_activation(activation)
    check_equal_at_init(activation, allow_unequal_init)
    if alpha_init == 0:
        raise ValueError("alpha_init=0 with beta=0 makes the gradients of both vanish (spec §2); use e.g. 1.0")
    if not (block_norms or qk_norm or final_norm):
        raise ValueError("convert_config: no norm site selected; set block_norms, qk_norm or final_norm")
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"convert_config: expected an olmo_core TransformerConfig, got {type(config).__name__}")
    options = {"num_heads": num_heads, "alpha_init": float(alpha_init), "activation": activation,
               "dot_scale": dot_scale}
    config = copy.deepcopy(config)
    found = set()
    done: set[int] = set()  # blocks and attention configs shared by several entries (a shallow block.copy()) once
    for where, block in _blocks(config):
        if id(block) in done:
            continue
        done.add(id(block))
        if block_norms and block.layer_norm is not None:
            block.layer_norm = _seednorm_config(block.layer_norm, f"{where}.layer_norm", config.d_model, options)
            found.add("block_norms")
        attention = block.sequence_mixer
        if qk_norm and getattr(attention, "qk_norm", None) is not None and id(attention) not in done:
            done.add(id(attention))
            if attention.qk_norm_per_head_gains:
                raise ValueError(f"convert_config: {where}.sequence_mixer has qk_norm_per_head_gains=True (a gain per "
                                 "head); SeeDNorm shares its parameters over heads: leave qk_norm unconverted")
            for width in _qk_widths(attention, config.d_model):  # q_norm's, then k_norm's (the same config)
                new = _seednorm_config(attention.qk_norm, f"{where}.sequence_mixer.qk_norm", width, options)
            attention.qk_norm = new
            found.add("qk_norm")
    if final_norm and config.lm_head.layer_norm is not None:
        config.lm_head.layer_norm = _seednorm_config(config.lm_head.layer_norm, "lm_head.layer_norm",
                                                     config.d_model, options)
        found.add("final_norm")
    wanted = {site for site, on in zip(SITES, (block_norms, qk_norm, final_norm), strict=True) if on}
    if wanted - found:
        raise ValueError(f"convert_config: the model has no norm at the requested site(s) {sorted(wanted - found)}; "
                         "sites are block_norms (each block's layer_norm), qk_norm (the attention's qk_norm), "
                         "final_norm (lm_head.layer_norm)")
    return config


@OptimConfig.register("seednorm_adamw")
@dataclass
class SeeDNormAdamWConfig(AdamWConfig):
    """OLMo-core's ``AdamWConfig`` with the weight-decay policy of ``seednorm.param_groups`` (spec §4).

    The parameters that no ``group_overrides`` pattern takes are split into: matrices (≥ 2 dims, and the MoE router's
    weight, a (num_experts·d_model,) matrix that OLMo-core stores flat) and SeeDNorm's α, β, decayed with
    ``weight_decay``; every other parameter (norm gains γ, biases) with weight decay 0. Each group
    carries a ``name`` ("decay", "seednorm", "no_decay"); ``group_overrides`` keep OLMo-core's meaning and come first.
    A model without SeeDNorm gets OLMo-core's usual groups plus γ undecayed: the RMSNorm baseline's policy.
    """

    def build_groups(self, model: nn.Module, strict: bool = True) -> list[dict[str, Any]]:
        groups = list(super().build_groups(model, strict=strict))
        default = [g for g in groups if set(g) == {"params"}]
        groups = [g for g in groups if set(g) != {"params"}]
        if not default:
            return groups
        dynamic = {id(model.get_parameter(name)) for name in modules.dynamic_parameters(model)}
        flat = {id(m.weight) for m in model.modules() if isinstance(m, MoERouter) and isinstance(m.weight, Tensor)}
        split: dict[str, list[nn.Parameter]] = {"decay": [], "seednorm": [], "no_decay": []}
        for p in default[0]["params"]:
            kind = "seednorm" if id(p) in dynamic else "decay" if p.dim() >= 2 or id(p) in flat else "no_decay"
            split[kind].append(p)
        decay = {"decay": self.weight_decay, "seednorm": self.weight_decay, "no_decay": 0.0}
        return groups + [{"params": ps, "name": name, "weight_decay": decay[name]}
                         for name, ps in split.items() if ps]
