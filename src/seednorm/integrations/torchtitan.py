"""torchtitan: SeeDNorm in torchtitan's models through a model converter, and the optimizer groups for α, β.

    from seednorm.integrations.torchtitan import SeeDNormConverter, seednorm_adamw
    from torchtitan.models.llama3 import model_registry

    model_spec = model_registry("debugmodel", converters=[SeeDNormConverter.Config()])
    optimizer = seednorm_adamw(lr=8e-4, weight_decay=0.1)     # α, β decayed, norm gains γ not (spec §4)

``SeeDNormConverter`` walks the model config tree and replaces the ``RMSNorm.Config`` of the chosen norm sites with
``SeeDNorm.Config``: the attention and MLP pre-norms (``attention_norm``, ``ffn_norm``) by default, the final norm
(``norm``) and the attention QK-norm (``qk_norm``) when asked. The converted layer keeps the RMSNorm's width, ε,
parameter init and sharding; at init (β = 0) it computes exactly what the RMSNorm did (spec §2), which needs
σ(0) = 0: a σ without it (sigmoid) is refused unless ``allow_unequal_init=True``, as by ``convert_to_seednorm``.

Parallelism: torchtitan declares a placement for the norm's ``weight`` (γ); SeeDNorm gives α and β the same one
(replicated over tensor parallel, sharded by FSDP). Under tensor + sequence parallel the input arrives sharded on
the sequence dim and the fused op runs on each rank's rows (``seednorm.ops.sharding``); dγ, dα, dβ are partial sums
that DTensor (or FSDP) reduces. Only torchtitan's DTensor backends ("partial_dtensor", "full_dtensor") hand the op
DTensors; under "spmd_types" it runs on local tensors and torchtitan reduces the gradients of α, β as it does γ's.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torchtitan.components.optimizer import OptimizersContainer, ParamGroupConfig
from torchtitan.models.common import RMSNorm
from torchtitan.protocols.model import ModelConfigConverter
from torchtitan.protocols.module import Module

from .. import functional as SF
from .. import modules
from ..convert import check_equal_at_init

__all__ = ["SeeDNorm", "SeeDNormConverter", "seednorm_adamw", "PRE_NORMS", "FINAL_NORM", "QK_NORM"]

PRE_NORMS = ("attention_norm", "ffn_norm")  # the last FQN segment of each block's pre-norms
FINAL_NORM = "norm"  # the decoder's final norm, at the root of the model config
QK_NORM = "qk_norm"  # the attention's QK-norm config (built twice: q_norm and k_norm)


class SeeDNorm(modules.SeeDNorm, Module):
    """``seednorm.SeeDNorm`` in torchtitan's module protocol: built from ``SeeDNorm.Config``, initialized by
    ``init_states`` (γ = 1 or the config's ``param_init["weight"]``, α = ``alpha_init``, β = 0), α and β placed
    like γ when torchtitan parallelizes it. Input (..., D) → output (..., D)."""

    @dataclass(kw_only=True, slots=True)
    class Config(Module.Config):
        normalized_shape: int
        eps: float | None = 1e-5
        """Added to mean(x²), as ``RMSNorm.Config.eps`` (None: the input dtype's machine epsilon)."""
        num_heads: int = 1
        """s = x·βᵀ per contiguous slice of D/num_heads channels (spec §3); language models use 1."""
        alpha_init: float = 1.0
        """Initial α (the paper's language-model value is 1; never 0 with β = 0)."""
        activation: str = "tanh"
        """σ: "tanh", "sigmoid", "hardtanh" or "softsign"."""
        dot_scale: float | str = 1.0
        """Multiplies s; "dim" means 1/(D/num_heads) (spec §4)."""

    def __init__(self, config: Config) -> None:
        modules.SeeDNorm.__init__(
            self,
            config.normalized_shape,
            num_heads=config.num_heads,
            eps=config.eps,
            alpha_init=config.alpha_init,
            activation=config.activation,
            dot_scale=config.dot_scale,
        )

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002  (torchtitan's norm placements name the arg "input")
        return modules.SeeDNorm.forward(self, input)

    def _init_self_parameters(self) -> None:
        init = self._param_init or {}
        with torch.no_grad():
            init.get("weight", nn.init.ones_)(self.weight)
            init.get("alpha", functools.partial(nn.init.constant_, val=self.alpha_init))(self.alpha)
            init.get("beta", nn.init.zeros_)(self.beta)

    def parallelize(self, parallel_dims: Any) -> None:
        """torchtitan's parallelization, with α and β given γ's placement where the plan names only ``weight``."""
        config = self._sharding_config
        if config is not None and "weight" in config.state_shardings:
            weight = config.state_shardings["weight"]
            states = {**{name: weight for name in modules.DYNAMIC_PARAMETERS}, **config.state_shardings}
            self._sharding_config = replace(config, state_shardings=states)
        Module.parallelize(self, parallel_dims)


class SeeDNormConverter(ModelConfigConverter):
    """Replace torchtitan's ``RMSNorm.Config`` at the chosen norm sites with ``SeeDNorm.Config``.

    Sites: ``pre_norms`` (every block's ``attention_norm`` and ``ffn_norm``, default on), ``final_norm`` (the root
    ``norm``), ``qk_norm`` (the attention's QK-norm, width = head dim, so ``num_heads`` must divide it). A site that is
    asked for but absent from the model is an error, and so is a converted norm without a gain (``elementwise_affine
    =False``).
    """

    @dataclass(kw_only=True, slots=True)
    class Config(ModelConfigConverter.Config):
        num_heads: int = 1
        """SeeDNorm heads (spec §3): must divide the width of every converted norm."""
        dot_scale: float | str = 1.0
        """Multiplies s = x·βᵀ; "dim" means 1/(D/num_heads)."""
        alpha_init: float = 1.0
        """Initial α (β starts at 0, so the converted model equals the original at init)."""
        activation: str = "tanh"
        """σ: "tanh", "hardtanh" or "softsign" (σ(0) = 0); "sigmoid" only with ``allow_unequal_init``."""
        allow_unequal_init: bool = False
        """Accept a σ with σ(0) ≠ 0 (sigmoid): the converted model then differs from the RMSNorm one at init."""
        pre_norms: bool = True
        """Convert the attention and MLP pre-norms of every block."""
        final_norm: bool = False
        """Convert the final norm before the output head."""
        qk_norm: bool = False
        """Convert the attention QK-norm (models that have one, e.g. qwen3)."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        SF.check_activation(config.activation)
        check_equal_at_init(config.activation, config.allow_unequal_init)
        if config.alpha_init == 0:
            raise ValueError("alpha_init=0 with beta=0 makes the gradients of both vanish (spec §2); use e.g. 1.0")
        if not (config.pre_norms or config.final_norm or config.qk_norm):
            raise ValueError("SeeDNormConverter: no norm site selected; set pre_norms, final_norm or qk_norm")
        self.config = config

    def _site(self, fqn: str) -> str | None:
        last = fqn.rsplit(".", 1)[-1]
        if last in PRE_NORMS:
            return "pre_norms"
        if fqn == FINAL_NORM:
            return "final_norm"
        if last == QK_NORM:
            return "qk_norm"
        return None

    def _seednorm_config(self, fqn: str, cfg: RMSNorm.Config) -> SeeDNorm.Config:
        if not cfg.elementwise_affine:
            raise ValueError(f"SeeDNormConverter: the RMSNorm at {fqn!r} has no gain (elementwise_affine=False); "
                             "leave this site unconverted")
        c = self.config
        width = int(cfg.normalized_shape)
        try:
            SF.check_heads(width, c.num_heads)
            SF.resolve_dot_scale(c.dot_scale, width, c.num_heads)
        except ValueError as err:
            raise ValueError(f"SeeDNormConverter: the norm at {fqn!r} (width {width}): {err}") from None
        return SeeDNorm.Config(
            normalized_shape=width,
            eps=cfg.eps,
            num_heads=c.num_heads,
            alpha_init=c.alpha_init,
            activation=c.activation,
            dot_scale=c.dot_scale,
            param_init=cfg.param_init,
            sharding_config=cfg.sharding_config,
        )

    def convert(self, model_config: Module.Config) -> Module.Config:
        """Return the config tree with the selected ``RMSNorm.Config`` sites replaced (modified in place)."""
        wanted = {name for name in ("pre_norms", "final_norm", "qk_norm") if getattr(self.config, name)}
        found: set[str] = set()
        for fqn, cfg, parent, attr in list(model_config.traverse(RMSNorm.Config)):
            site = self._site(fqn)
            if site not in wanted or parent is None:
                continue
            new = self._seednorm_config(fqn, cfg)
            if isinstance(parent, list):
                parent[attr] = new
            else:
                setattr(parent, attr, new)
            found.add(site)
        missing = wanted - found
        if missing:
            raise ValueError(f"SeeDNormConverter: the model has no RMSNorm at the requested site(s) {sorted(missing)}; "
                             f"sites are {list(PRE_NORMS)} (pre_norms), {FINAL_NORM!r} (final_norm), "
                             f"{QK_NORM!r} (qk_norm)")
        return model_config


def seednorm_adamw(
    lr: float = 8e-4,
    weight_decay: float = 0.1,
    *,
    betas: Sequence[float] = (0.9, 0.95),
    eps: float = 1e-8,
    seednorm: bool = True,
    **kwargs: Any,
) -> OptimizersContainer.Config:
    """torchtitan's AdamW config with the weight-decay policy of ``seednorm.param_groups`` (spec §4).

    Groups, matched in order on parameter FQNs (torchtitan's optimizer builder sees α and β as ordinary parameters):
    α and β of every SeeDNorm (``….alpha``, ``….beta``) with ``weight_decay``; norm gains γ (``…norm.weight``) and
    biases with 0; everything else with ``weight_decay``. ``seednorm=False`` drops the α, β group, for the RMSNorm
    baseline trained with the same γ policy. ``kwargs`` go to every group (e.g. ``fused=False``).
    """
    common = {"lr": lr, "betas": tuple(betas), "eps": eps, **kwargs}
    groups = []
    if seednorm:
        pattern = r"\.(" + "|".join(modules.DYNAMIC_PARAMETERS) + r")$"
        groups.append(ParamGroupConfig(pattern=pattern, optimizer_name="AdamW",
                                       optimizer_kwargs={**common, "weight_decay": weight_decay}))
    groups.append(ParamGroupConfig(pattern=r"(norm\.weight|\.bias)$", optimizer_name="AdamW",
                                   optimizer_kwargs={**common, "weight_decay": 0.0}))
    groups.append(ParamGroupConfig(pattern=r".*", optimizer_name="AdamW",
                                   optimizer_kwargs={**common, "weight_decay": weight_decay}))
    return OptimizersContainer.Config(param_groups=groups)
