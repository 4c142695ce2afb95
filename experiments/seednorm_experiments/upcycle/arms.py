"""The arms of the upcycling study: how the pretrained model is changed, which of its parameters train, and the
base learning rate of each arm's sweep.

=========================  ==================================================  ==============================
arm                        model                                               trained
=========================  ==================================================  ==============================
``rmsnorm``                as shipped (RMSNorm)                                every parameter
``seednorm``               converted to SeeDNorm, the paper's defaults (α0 =   every parameter
                           1, dot scale 1)
``seednorm-rsqrt``         converted, the small-model recipe: dot scale 1/√D   every parameter
``rmsnorm-norms``          as shipped                                          γ of every norm
``seednorm-norms``         converted, the paper's defaults                     γ, α, β of every norm
``seednorm-upcycle``       converted with ``seednorm.UpcycleRecipe()``: α0 =    every parameter
                           0.01, dot scale 1/D, α, β at 0.01 × the rate
``seednorm-upcycle-gain``  the recipe with α = 0.1 · γ per channel             every parameter
``seednorm-alpha``         the recipe's α0 = 0.01 alone                        every parameter
``seednorm-alpha-gain``    α = 0.1 · γ per channel alone                       every parameter
``seednorm-dim``           dot scale 1/D alone                                 every parameter
``seednorm-lrscale``       α, β at 0.01 × the rate alone                       every parameter
=========================  ==================================================  ==============================

The first five are the study's default arms (:data:`DEFAULT_ARMS`); the upcycle recipe and its parts are chosen
with ``--arms`` (they exist to compare, against ``rmsnorm`` and ``seednorm``, what bounds the first steps of a
converted model: :mod:`.probe` measures those steps).

The conversion (``seednorm.integrations.transformers.convert``) sets β = 0, so a converted model computes what the
original does; :func:`convert_checked` checks it on a probe batch (max |Δ logits| ≤
:data:`CONVERSION_TOLERANCE` × max |logits|) before anything trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from seednorm import SeeDNorm, UpcycleRecipe, param_groups

from .pretrained import CausalLM

__all__ = ["ARMS", "CONVERSION_TOLERANCE", "DEFAULT_ARMS", "Arm", "build_arm", "convert_checked", "get_arm",
           "is_norm_layer", "trainable_params"]

CONVERSION_TOLERANCE = 2e-5
"""Largest |logit difference| allowed between a model and its conversion on the probe batch, relative to the largest
|logit|: float32 rounding of the same RMS normalisation computed by another kernel, through every layer (SmolLM2's
30 layers: 8e-5 on logits up to ~40, 2e-6 relative)."""


@dataclass(frozen=True)
class Arm:
    """One way to continue training: ``norm`` ("rmsnorm": as shipped, "seednorm": converted with ``dot_scale``,
    a number, "rsqrt" for 1/√width or "dim" for 1/width), ``trainable`` ("all" or "norms": only the norm layers'
    parameters), and ``lr``, the base of its learning-rate sweep. ``alpha_init``, ``alpha_relative`` and
    ``lr_scale`` are the parts of :class:`seednorm.UpcycleRecipe` (α at conversion, α = alpha_init · γ per
    channel, the rate multiplier of α and β); their defaults are the paper's. ``reference``: the arm it is
    compared with, seed by seed (None: it is a reference)."""

    name: str
    norm: str
    trainable: str
    lr: float
    dot_scale: float | str = 1.0
    label: str = ""
    reference: str | None = None
    alpha_init: float = 1.0
    alpha_relative: bool = False
    lr_scale: float = 1.0

    def signature(self) -> dict[str, Any]:
        """What the arm does, for a run's fingerprint; the recipe's parts only where they are not the paper's, so an
        arm without them has the fingerprint it always had."""
        out: dict[str, Any] = {"arm": self.name, "norm": self.norm, "trainable": self.trainable,
                               "dot_scale": self.dot_scale}
        for key, paper in (("alpha_init", 1.0), ("alpha_relative", False), ("lr_scale", 1.0)):
            if getattr(self, key) != paper:
                out[key] = getattr(self, key)
        return out

    def recipe(self, width: int) -> UpcycleRecipe | None:
        """The :class:`seednorm.UpcycleRecipe` the arm converts with (its dot scale resolved for ``width``), or None
        for an arm with the paper's α (converted with its dot scale alone)."""
        if self.alpha_init == 1.0 and not self.alpha_relative:
            return None
        dot = 1 / math.sqrt(width) if self.dot_scale == "rsqrt" else self.dot_scale
        return UpcycleRecipe(alpha_init=self.alpha_init, alpha_relative=self.alpha_relative, dot_scale=dot,
                             dynamic_lr_scale=self.lr_scale)

    def param_groups(self, weight_decay: float, lr: float) -> Callable[[nn.Module], list[dict[str, Any]]] | None:
        """The optimizer groups of an arm whose α, β train at ``lr_scale`` × the rate (``seednorm.param_groups``
        with ``dynamic_lr_scale``); None (the harness's default groups) otherwise."""
        if self.lr_scale == 1.0:
            return None
        return lambda model: param_groups(model, weight_decay, lr=lr, dynamic_lr_scale=self.lr_scale)


_RECIPE = UpcycleRecipe()
"""The upcycle recipe's defaults: α0, dot scale and rate scale of the ``seednorm-upcycle`` arms."""

ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("rmsnorm", "rmsnorm", "all", 1e-4, label="RMSNorm (as shipped), all parameters"),
        Arm("seednorm", "seednorm", "all", 1e-4, label="SeeDNorm (paper defaults), all parameters",
            reference="rmsnorm"),
        Arm("seednorm-rsqrt", "seednorm", "all", 1e-4, dot_scale="rsqrt",
            label="SeeDNorm (dot scale 1/√D), all parameters", reference="rmsnorm"),
        Arm("rmsnorm-norms", "rmsnorm", "norms", 3e-3, label="RMSNorm, γ only"),
        Arm("seednorm-norms", "seednorm", "norms", 3e-3, label="SeeDNorm (paper defaults), γ, α, β only",
            reference="rmsnorm-norms"),
        Arm("seednorm-upcycle", "seednorm", "all", 1e-4, dot_scale=_RECIPE.dot_scale, alpha_init=_RECIPE.alpha_init,
            lr_scale=_RECIPE.dynamic_lr_scale, reference="rmsnorm",
            label="SeeDNorm (upcycle recipe: α0 0.01, dot scale 1/D, α/β rate × 0.01), all parameters"),
        Arm("seednorm-upcycle-gain", "seednorm", "all", 1e-4, dot_scale=_RECIPE.dot_scale, alpha_init=0.1,
            alpha_relative=True, lr_scale=_RECIPE.dynamic_lr_scale, reference="rmsnorm",
            label="SeeDNorm (upcycle recipe, α = 0.1·γ), all parameters"),
        Arm("seednorm-alpha", "seednorm", "all", 1e-4, alpha_init=_RECIPE.alpha_init, reference="rmsnorm",
            label="SeeDNorm (α0 0.01), all parameters"),
        Arm("seednorm-alpha-gain", "seednorm", "all", 1e-4, alpha_init=0.1, alpha_relative=True,
            reference="rmsnorm", label="SeeDNorm (α = 0.1·γ), all parameters"),
        Arm("seednorm-dim", "seednorm", "all", 1e-4, dot_scale="dim", reference="rmsnorm",
            label="SeeDNorm (dot scale 1/D), all parameters"),
        Arm("seednorm-lrscale", "seednorm", "all", 1e-4, lr_scale=_RECIPE.dynamic_lr_scale, reference="rmsnorm",
            label="SeeDNorm (α/β rate × 0.01), all parameters"),
        Arm("seednorm-upcycle-norms", "seednorm", "norms", 3e-3, dot_scale=_RECIPE.dot_scale,
            alpha_init=_RECIPE.alpha_init, lr_scale=_RECIPE.dynamic_lr_scale, reference="rmsnorm-norms",
            label="SeeDNorm (upcycle recipe), γ, α, β only"),
    )
}

DEFAULT_ARMS: tuple[str, ...] = ("rmsnorm", "seednorm", "seednorm-rsqrt", "rmsnorm-norms", "seednorm-norms")
"""The arms a study trains unless ``--arms`` names others."""


def get_arm(name: str) -> Arm:
    """The arm called ``name``; ValueError naming the choices if there is none."""
    if name not in ARMS:
        raise ValueError(f"unknown arm {name!r}; choose from {', '.join(ARMS)}")
    return ARMS[name]


def is_norm_layer(module: nn.Module) -> bool:
    """A SeeDNorm, or a transformers RMSNorm (``LlamaRMSNorm``, ...)."""
    return isinstance(module, SeeDNorm) or type(module).__name__.endswith("RMSNorm")


def probe_ids(vocab_size: int) -> torch.Tensor:
    """The fixed batch (2, 24) of token ids on which a conversion is checked."""
    return torch.randint(0, vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))


def convert_checked(lm: nn.Module, arm: Arm) -> float:
    """Convert ``lm`` (a transformers causal LM, in place) to SeeDNorm with the arm's dot scale (and α, through
    :meth:`Arm.recipe`) and return
    max |Δ logits| on :func:`probe_ids`; AssertionError when it exceeds :data:`CONVERSION_TOLERANCE` × max |logits|."""
    from seednorm.integrations import transformers as sn_hf

    model = CausalLM(lm)
    ids = probe_ids(lm.config.vocab_size)
    was = lm.training
    lm.eval()
    with torch.no_grad():
        before = model(ids)
        recipe = arm.recipe(lm.config.hidden_size)
        if recipe is not None:
            sn_hf.convert(lm, recipe=recipe)
        else:
            dot = 1 / math.sqrt(lm.config.hidden_size) if arm.dot_scale == "rsqrt" else arm.dot_scale
            sn_hf.convert(lm, dot_scale=dot)
        gap = float((model(ids) - before).abs().max())
    lm.train(was)
    scale = float(before.abs().max())
    assert gap <= CONVERSION_TOLERANCE * scale, f"converting to {arm.name} changed the logits by up to {gap:.3g}"
    return gap


def build_arm(lm: nn.Module, arm: Arm) -> CausalLM:
    """``lm`` (a transformers causal LM, changed in place) as ``arm`` trains it, in training mode: converted when
    the arm's norm is SeeDNorm (:func:`convert_checked`: the same logits) and, for norm-only arms, every
    parameter outside the norm layers frozen."""
    if arm.norm == "seednorm":
        convert_checked(lm, arm)
    elif arm.norm != "rmsnorm":
        raise ValueError(f"arm {arm.name!r}: norm must be 'rmsnorm' or 'seednorm', got {arm.norm!r}")
    model = CausalLM(lm)
    if arm.trainable == "norms":
        norm_params = {id(p) for m in model.modules() if is_norm_layer(m) for p in m.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in norm_params)
    elif arm.trainable != "all":
        raise ValueError(f"arm {arm.name!r}: trainable must be 'all' or 'norms', got {arm.trainable!r}")
    return model.train()


def trainable_params(model: nn.Module) -> int:
    """Parameters that train (``requires_grad``), each shared tensor once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
