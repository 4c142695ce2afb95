"""The arms of the upcycling study: how the pretrained model is changed, which of its parameters train, and the
base learning rate of each arm's sweep.

==================  =======================================================  ===============================
arm                 model                                                    trained
==================  =======================================================  ===============================
``rmsnorm``         as shipped (RMSNorm)                                     every parameter
``seednorm``        converted to SeeDNorm, the paper's defaults (α0 = 1,     every parameter
                    dot scale 1)
``seednorm-rsqrt``  converted, the small-model recipe: dot scale 1/√D        every parameter
``rmsnorm-norms``   as shipped                                               γ of every norm
``seednorm-norms``  converted, the paper's defaults                          γ, α, β of every norm
==================  =======================================================  ===============================

The conversion (``seednorm.integrations.transformers.convert``) sets β = 0, so a converted model computes what the
original does; :func:`convert_checked` checks it on a probe batch (max |Δ logits| ≤
:data:`CONVERSION_TOLERANCE` × max |logits|) before anything trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from seednorm import SeeDNorm

from .pretrained import CausalLM

__all__ = ["ARMS", "CONVERSION_TOLERANCE", "Arm", "build_arm", "convert_checked", "get_arm", "is_norm_layer",
           "trainable_params"]

CONVERSION_TOLERANCE = 2e-5
"""Largest |logit difference| allowed between a model and its conversion on the probe batch, relative to the largest
|logit|: float32 rounding of the same RMS normalisation computed by another kernel, through every layer (SmolLM2's
30 layers: 8e-5 on logits up to ~40, 2e-6 relative)."""


@dataclass(frozen=True)
class Arm:
    """One way to continue training: ``norm`` ("rmsnorm": as shipped, "seednorm": converted with ``dot_scale``,
    a number or "rsqrt" for 1/√width), ``trainable`` ("all" or "norms": only the norm layers' parameters), and
    ``lr``, the base of its learning-rate sweep. ``reference``: the arm it is compared with, seed by seed (None: it
    is a reference)."""

    name: str
    norm: str
    trainable: str
    lr: float
    dot_scale: float | str = 1.0
    label: str = ""
    reference: str | None = None

    def signature(self) -> dict[str, Any]:
        """What the arm does, for a run's fingerprint."""
        return {"arm": self.name, "norm": self.norm, "trainable": self.trainable, "dot_scale": self.dot_scale}


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
    )
}


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
    """Convert ``lm`` (a transformers causal LM, in place) to SeeDNorm with the arm's dot scale and return
    max |Δ logits| on :func:`probe_ids`; AssertionError when it exceeds :data:`CONVERSION_TOLERANCE` × max |logits|."""
    from seednorm.integrations import transformers as sn_hf

    model = CausalLM(lm)
    ids = probe_ids(lm.config.vocab_size)
    was = lm.training
    lm.eval()
    with torch.no_grad():
        before = model(ids)
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
