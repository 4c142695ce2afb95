"""Named configurations of the language-model ablation: a norm plus the knobs that test why
SeeDNorm loses at small scale, and DyT's published language-model recipe.

DyT recipe (Zhu, Chen, He, LeCun, Liu, "Transformers without Normalization", arXiv 2503.10622, §7 and
the LLaMA α0 table in its appendix): a learnable scalar after the embedding layer initialised to √d,
and a different α0 for the attention-input DyT than for the others (FFN input and final norm). The
smallest model in that table (LLaMA 7B) uses α0_attn = 0.8, α0_other = 0.2, and the paper notes that
narrower models take larger α0, so these are the defaults here; both are arguments of
:func:`dyt_lm_recipe`. Derf (γ·erf(a·x + s) + b) has no published language-model recipe; its variant takes
DyT's (a0 in place of α0, s0 = 0): the same treatment as DyT, a playing α's role.

SeeDNorm knobs (each maps to a documented option of the library or the harness):

- ``clip``: ``"global"`` (α, β in the global gradient clip, the paper's setting), ``"exclude"``
  (``TrainConfig.clip_groups=("gamma", "matrix")``: α, β are never clipped) or a float (``TrainConfig.group_clip``:
  α and β each clipped on its own gradient norm with that max-norm, and left out of the global clip);
- ``dynamic_lr_scale``: learning-rate multiplier for α, β (``seednorm.param_groups(dynamic_lr_scale=)``);
- ``decay_dynamic``: weight decay on α, β or not (``seednorm.param_groups(decay_dynamic=)``);
- ``dot_scale``: ``SeeDNorm(dot_scale=)``, 1, ``"rsqrt"`` (1/√(D/h), resolved per width here) or
  ``"dim"`` (1/(D/h), the library's own option);
- ``num_heads``: ``SeeDNorm(num_heads=)``, an int or ``"model"`` (the model's attention head count);
- ``alpha_mode``, ``beta_mode``, ``gamma_mode``: the layer's ablation forms (spec §6a): α one scalar or none, β
  element-wise or none, no γ (``SeeDNorm(alpha_mode=, beta_mode=, gamma_mode=)``);
- ``sites``: the norm sites that take SeeDNorm (``LMConfig.placement``; the others stay RMSNorm), None: the run's
  own placement (every site in the ablation and the size curve).

:data:`KNOBS` are the knobs the ablation runs by default (its committed results); :data:`FORM_KNOBS`, the layer's
ablation forms, are selectable with ``--knobs``. :data:`SITE_KNOBS` ask which norms of a model to convert (the OLMo2
question: the block norms alone, as the Megatron and torchtitan anchors do, or also the QK-norm or the final norm);
they are variants of the size curve (``--norms``), not knobs of the ablation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from seednorm import param_groups
from seednorm.modules import DYNAMIC_PARAMETERS

__all__ = ["DYT_ALPHA_ATTN", "DYT_ALPHA_OTHER", "FORM_KNOBS", "KNOBS", "SITE_KNOBS", "VARIANTS", "Variant",
           "dyt_lm_recipe", "get_variant", "seednorm_lm_recipe"]

DYT_ALPHA_ATTN = 0.8
DYT_ALPHA_OTHER = 0.2
_OTHER_GROUPS = ("gamma", "matrix")  # a SeeDNorm Llama has no "other" parameters (no biases)
_BLOCKS = ("attn", "mlp")  # a block's two norms (one OLMo-core config builds both)
_FORM_DEFAULTS = {"alpha_mode": "vector", "beta_mode": "dot", "gamma_mode": "vector"}  # the paper's layer


def dyt_lm_recipe(dim: int, alpha_attn: float = DYT_ALPHA_ATTN, alpha_other: float = DYT_ALPHA_OTHER
                  ) -> dict[str, Any]:
    """:class:`~seednorm_experiments.lm.model.LMConfig` fields of DyT's language-model recipe for width
    ``dim``: ``embed_scale`` = √dim (learnable) and α0 per site (attention input ``alpha_attn``; FFN
    input, final and QK norms ``alpha_other``)."""
    if not (alpha_attn > 0 and alpha_other > 0):
        raise ValueError(f"DyT α0 must be > 0, got alpha_attn={alpha_attn}, alpha_other={alpha_other}")
    other = {"alpha_init": alpha_other}
    return {"embed_scale": math.sqrt(dim),
            "site_norm_kwargs": {"attn": {"alpha_init": alpha_attn}, "mlp": other, "final": other, "qk": other}}


def seednorm_lm_recipe(dim: int, num_heads: int = 1) -> dict[str, Any]:
    """SeeDNorm keyword arguments recommended for small language models by the ablation (opt-in;
    the library's defaults stay the paper's): ``dot_scale = 1/√(dim/num_heads)``, so the pre-activation
    s = dot_scale·⟨x, β⟩ does not grow with the width. Measured: parity with RMSNorm or better at widths
    48-192 (ahead, CI excluding 0, at 192) where the default loses at 48 and 96 (and leads at 192). Use as
    ``build_norm("seednorm", dim, **seednorm_lm_recipe(dim))``; see README, "Fair comparison and ablation"."""
    if dim < 1 or num_heads < 1 or dim % num_heads:
        raise ValueError(f"dim={dim} must be a positive multiple of num_heads={num_heads}")
    return {"dot_scale": 1 / math.sqrt(dim / num_heads), "num_heads": num_heads}


@dataclass(frozen=True)
class Variant:
    """One configuration of the ablation or the size curve: ``norm`` with model knobs (``dot_scale``, ``num_heads``,
    ``dyt_recipe``, ``alpha_mode``, ``beta_mode``, ``gamma_mode``, the converted ``sites``) and optimizer knobs
    (``clip``, ``dynamic_lr_scale``, ``decay_dynamic``); see the module docstring. ``note`` is the one-line
    description the report prints."""

    name: str
    norm: str
    note: str
    dyt_recipe: bool = False
    dot_scale: float | str = 1.0
    num_heads: int | str = 1
    clip: str | float = "global"
    dynamic_lr_scale: float = 1.0
    decay_dynamic: bool = True
    alpha_mode: str = "vector"
    beta_mode: str = "dot"
    gamma_mode: str = "vector"
    sites: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.clip not in ("global", "exclude") and not (isinstance(self.clip, float) and self.clip > 0):
            raise ValueError(f"clip must be 'global', 'exclude' or a max-norm > 0, got {self.clip!r}")
        if self.dyt_recipe and self.norm not in ("dyt", "derf"):
            raise ValueError(f"dyt_recipe applies to norm='dyt' or 'derf', not {self.norm!r}")
        if self.forms() and self.norm != "seednorm":
            raise ValueError(f"alpha_mode, beta_mode and gamma_mode apply to norm='seednorm', not {self.norm!r}")
        if self.sites is not None and (self.norm != "seednorm" or not self.sites):
            raise ValueError(f"sites apply to norm='seednorm' and name at least one site, got {self.sites!r}")

    def forms(self) -> dict[str, str]:
        """The SeeDNorm ablation forms that differ from the paper's layer (spec §6a), as constructor arguments."""
        return {k: v for k, v in (("alpha_mode", self.alpha_mode), ("beta_mode", self.beta_mode),
                                  ("gamma_mode", self.gamma_mode)) if v != _FORM_DEFAULTS[k]}

    def signature(self) -> dict[str, Any]:
        """What the variant sets, for a run's fingerprint: its fields, the ablation forms only when not the
        paper's and the sites only when set (so runs of the other variants keep their fingerprints)."""
        forms = self.forms()
        return {k: v for k, v in dataclasses.asdict(self).items()
                if (k not in _FORM_DEFAULTS or k in forms) and (k != "sites" or v is not None)}

    def model_overrides(self, dim: int, n_heads: int) -> dict[str, Any]:
        """``LMConfig`` fields for a model of width ``dim`` with ``n_heads`` attention heads."""
        if self.dyt_recipe:
            return dyt_lm_recipe(dim)
        if self.norm != "seednorm":
            return {}
        heads = n_heads if self.num_heads == "model" else int(self.num_heads)
        dot = 1 / math.sqrt(dim / heads) if self.dot_scale == "rsqrt" else self.dot_scale
        kwargs = {k: v for k, v in (("num_heads", heads), ("dot_scale", dot)) if v != 1} | self.forms()
        return ({"norm_kwargs": kwargs} if kwargs else {}) | ({"placement": self.sites} if self.sites else {})

    def train_overrides(self, lr: float, weight_decay: float) -> dict[str, Any]:
        """``TrainConfig`` fields: ``clip_groups``/``group_clip`` and ``param_groups`` (for SeeDNorm only)."""
        if self.norm != "seednorm":
            return {}
        out: dict[str, Any] = {}
        if self.clip == "exclude":
            out["clip_groups"] = _OTHER_GROUPS
        elif self.clip != "global":
            out["group_clip"] = dict.fromkeys(DYNAMIC_PARAMETERS, float(self.clip))
        if self.dynamic_lr_scale != 1.0 or not self.decay_dynamic:
            out["param_groups"] = _groups(weight_decay, self.decay_dynamic, lr, self.dynamic_lr_scale)
        return out


def _groups(wd: float, decay_dynamic: bool, lr: float, scale: float) -> Callable[[nn.Module], list[dict]]:
    return lambda model: param_groups(model, wd, decay_dynamic=decay_dynamic, lr=lr, dynamic_lr_scale=scale)


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("rmsnorm", "rmsnorm", "RMSNorm (baseline)"),
    Variant("layernorm", "layernorm", "LayerNorm"),
    Variant("dyt", "dyt", "DyT with its LM recipe: learnable embedding scale init √d, α0 attn 0.8 / other 0.2",
            dyt_recipe=True),
    Variant("derf", "derf", "Derf with DyT's LM recipe (none published for Derf): embedding scale init √d, a0 attn "
            "0.8 / other 0.2, s0 0", dyt_recipe=True),
    Variant("seednorm", "seednorm", "SeeDNorm, paper defaults (α, β in global clip, decayed, lr ×1, dot 1, 1 head)"),
    Variant("seednorm-noclip", "seednorm", "α, β excluded from gradient clipping", clip="exclude"),
    Variant("seednorm-clip0.1", "seednorm", "α, β clipped separately, max-norm 0.1 each", clip=0.1),
    Variant("seednorm-lr0.1", "seednorm", "learning rate of α, β × 0.1", dynamic_lr_scale=0.1),
    Variant("seednorm-nowd", "seednorm", "no weight decay on α, β", decay_dynamic=False),
    Variant("seednorm-dot-rsqrt", "seednorm", "dot_scale = 1/√D", dot_scale="rsqrt"),
    Variant("seednorm-dot-inv", "seednorm", "dot_scale = 1/D", dot_scale="dim"),
    Variant("seednorm-heads", "seednorm", "num_heads = the model's attention heads", num_heads="model"),
    Variant("seednorm-alpha-scalar", "seednorm", "α one scalar per layer (alpha_mode='scalar')",
            alpha_mode="scalar"),
    Variant("seednorm-beta-elementwise", "seednorm", "β element-wise, s = x ⊙ β per channel (beta_mode='elementwise')",
            beta_mode="elementwise"),
    Variant("seednorm-no-alpha", "seednorm", "no α, α ≡ 1 (alpha_mode='none')", alpha_mode="none"),
    Variant("seednorm-no-beta", "seednorm", "no β, s = x per channel (beta_mode='none')", beta_mode="none"),
    Variant("seednorm-no-gamma", "seednorm", "no γ, the gain is the dynamic term alone (gamma_mode='none')",
            gamma_mode="none"),
    Variant("seednorm-blocks", "seednorm", "SeeDNorm at the block norms only (QK-norm and final norm stay RMSNorm), "
            "as the Megatron and torchtitan anchors convert", sites=_BLOCKS),
    Variant("seednorm-blocks-qk", "seednorm", "SeeDNorm at the block norms and the QK-norm (final norm RMSNorm)",
            sites=(*_BLOCKS, "qk")),
    Variant("seednorm-blocks-final", "seednorm", "SeeDNorm at the block norms and the final norm (QK-norm RMSNorm)",
            sites=(*_BLOCKS, "final")),
    Variant("seednorm-blocks-dot-rsqrt", "seednorm", "SeeDNorm at the block norms only, dot_scale = 1/√D (our "
            "recipe)", dot_scale="rsqrt", sites=_BLOCKS),
)}
FORM_KNOBS = tuple(n for n, v in VARIANTS.items() if v.forms())
SITE_KNOBS = tuple(n for n, v in VARIANTS.items() if v.sites is not None)
KNOBS = tuple(n for n in VARIANTS if n.startswith("seednorm-") and n not in FORM_KNOBS + SITE_KNOBS)


def get_variant(name: str) -> Variant:
    """The named variant (ValueError naming the choices if unknown)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
    return VARIANTS[name]
