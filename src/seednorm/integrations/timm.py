"""timm: build models with SeeDNorm as their ``norm_layer``.

    import timm
    from seednorm.integrations.timm import norm_layer

    model = timm.create_model("vit_base_patch16_224", norm_layer=norm_layer(num_heads=16))

timm calls ``norm_layer(dim, device=..., dtype=...)`` for every norm it builds (blocks, final norm, and QK-norms
when ``qk_norm=True``), so ``num_heads`` must divide each of those widths. An existing timm model converts with
``seednorm.convert_to_seednorm`` instead (its LayerNorms become centering SeeDNorms, outputs unchanged).

SeeDNorm and AdaSeeDNorm are leaves of timm's FX tracing (``timm.models.create_feature_extractor``, FX feature
models): registered when this module is imported. Plain ``torch.fx`` tracing needs no registration: the layers
call the functional form through ``torch.fx.wrap``-ed functions.
"""

from __future__ import annotations

import functools
from typing import Any

from timm.layers import register_notrace_module

from ..modules import AdaSeeDNorm, SeeDNorm

__all__ = ["norm_layer", "register_fx_leaves"]


def register_fx_leaves() -> None:
    """Register SeeDNorm and AdaSeeDNorm as modules timm's FX tracer keeps whole (subclasses too: the tracer
    tests ``isinstance``). FX cannot trace inside them (their checks need real tensors); as leaves each is one node.
    """
    for cls in (SeeDNorm, AdaSeeDNorm):
        register_notrace_module(cls)


def norm_layer(num_heads: int = 1, **kwargs: Any) -> functools.partial[SeeDNorm]:
    """``functools.partial(SeeDNorm, num_heads=num_heads, **kwargs)``, the form timm's ``get_norm_layer`` accepts.

    ``kwargs`` are SeeDNorm options (``eps``, ``alpha_init``, ``dynamic_dropout``, ``dot_scale``, ...); the paper's
    vision recipe uses ``num_heads=16``, ``dynamic_dropout`` = the drop-path rate and ``dot_scale="dim"`` (spec §3–4).
    """
    return functools.partial(SeeDNorm, num_heads=num_heads, **kwargs)


register_fx_leaves()
