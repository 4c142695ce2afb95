"""timm: build models with SeeDNorm (or a baseline of ours) as their ``norm_layer``.

    import timm
    from seednorm.integrations.timm import norm_layer

    vit = timm.create_model("vit_base_patch16_224", norm_layer=norm_layer(num_heads=16))
    cnn = timm.create_model("convnext_atto", norm_layer=norm_layer(num_heads=8, channels_first=True))
    cnn = timm.create_model("convnext_atto", norm_layer="seednorm2d")   # the names registered below

timm calls ``norm_layer(dim, device=..., dtype=...)`` for every norm it builds (blocks, final norm, and QK-norms
when ``qk_norm=True``), so ``num_heads`` must divide each of those widths.

ConvNeXt. timm's ``ConvNeXt`` gives a ``norm_layer`` it does not know by name to every norm of the model (stem,
downsampling, blocks, head), all on channels-first (N, C, H, W) input, and accepts one only when ``conv_mlp=True``
(``convnext_atto``/``femto``/``pico``/``nano`` are built so; pass ``conv_mlp=True`` for the larger ones). Hence
``channels_first=True`` (``SeeDNorm2d``) or the ``...2d`` names there. Its own LayerNorms are timm's ``LayerNorm2d``
(NCHW; stem, downsampling, head; the blocks too when ``conv_mlp=True``) and ``LayerNorm`` (the blocks' channels-last
norm when ``conv_mlp=False``): ``seednorm.convert_to_seednorm`` converts both, and ``RmsNorm2d``, exactly
(``SeeDNorm2d(center=True, bias=True)``, ``SeeDNorm``, ``SeeDNorm2d``).

Names. Importing this module adds ours to the names timm's ``get_norm_layer`` knows, for every norm of
``seednorm.NORMS`` that timm has no name for: "seednorm", "dyt", "derf" (over the last dimension) and "seednorm2d",
"dyt2d", "derf2d" (channels-first). timm's own "layernorm", "rmsnorm", ... keep their meaning.

FX. SeeDNorm, AdaSeeDNorm and every channels-first norm of ours are leaves of timm's FX tracing
(``timm.models.create_feature_extractor``, FX feature models): registered when this module is imported. Plain
``torch.fx`` tracing needs no registration: the layers call the functional form through ``torch.fx.wrap``-ed
functions.
"""

from __future__ import annotations

import functools
from typing import Any

from timm.layers import create_norm, register_notrace_module

from ..modules import NORMS, AdaSeeDNorm, AdaSeeDNorm2d, SeeDNorm, SeeDNorm2d, channels_first_class, norm_class

__all__ = ["named_norm_layer", "norm_layer", "register_fx_leaves", "register_norm_names"]


def register_fx_leaves() -> None:
    """Register SeeDNorm, AdaSeeDNorm and the channels-first norms as modules timm's FX tracer keeps whole
    (subclasses too: the tracer tests ``isinstance``). FX cannot trace inside them (their checks need real tensors);
    as leaves each is one node."""
    for cls in (SeeDNorm, AdaSeeDNorm, AdaSeeDNorm2d, *(channels_first_class(c) for c in NORMS.values())):
        register_notrace_module(cls)


def register_norm_names() -> dict[str, type]:
    """Add "<name>" and "<name>2d" for each norm of ``seednorm.NORMS`` to timm's norm names, where timm has no norm
    of that name; returns what was added."""
    known = create_norm._NORM_MAP
    added = {}
    for name, cls in NORMS.items():
        for key, layer in ((name, cls), (f"{name}2d", channels_first_class(cls))):
            if key not in known:
                known[key] = added[key] = layer
    return added


def norm_layer(num_heads: int = 1, *, channels_first: bool = False, **kwargs: Any) -> functools.partial[SeeDNorm]:
    """``functools.partial(SeeDNorm, num_heads=num_heads, **kwargs)`` (``SeeDNorm2d`` with ``channels_first=True``,
    for (N, C, H, W) norms such as ConvNeXt's), the form timm's ``get_norm_layer`` accepts.

    ``kwargs`` are SeeDNorm options (``eps``, ``alpha_init``, ``dynamic_dropout``, ``dot_scale``, ...); the paper's
    vision recipe uses ``num_heads=16``, ``dynamic_dropout`` = the drop-path rate and ``dot_scale="dim"`` (spec §3–4).
    """
    return functools.partial(SeeDNorm2d if channels_first else SeeDNorm, num_heads=num_heads, **kwargs)


def named_norm_layer(name: str, *, channels_first: bool = False, **kwargs: Any) -> functools.partial:
    """``functools.partial`` of the class of norm ``name`` of ``seednorm.NORMS`` ("layernorm", "rmsnorm", "dyt",
    "derf", "seednorm"; channels-first with ``channels_first=True``) with ``kwargs``, for timm's ``norm_layer``:
    the norms of one comparison built the same way (timm drops a partial's positional arguments, so the class is
    bound here)."""
    cls = norm_class(name)
    return functools.partial(channels_first_class(cls) if channels_first else cls, **kwargs)


register_fx_leaves()
register_norm_names()
