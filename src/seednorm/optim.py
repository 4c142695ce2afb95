"""Optimizer parameter groups that apply the paper's weight-decay policy (spec §4)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .modules import dynamic_parameters


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    decay_gain: bool = False,
    decay_dynamic: bool = True,
    lr: float | None = None,
    dynamic_lr_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """AdamW parameter groups: matrices and SeeDNorm's α, β decayed; γ, biases and other 1-D parameters not.

    Returns up to three groups, each with a ``name`` key (``torch.optim`` keeps extra keys):

    - ``"decay"``: parameters with ≥ 2 dims (and every 1-D parameter when ``decay_gain=True``), ``weight_decay``.
    - ``"seednorm"``: α and β of every SeeDNorm/AdaSeeDNorm (converted models included), decayed with
      ``weight_decay`` unless ``decay_dynamic=False``.
    - ``"no_decay"``: everything else (γ, biases, scalars), weight decay 0.

    With ``lr`` given, every group carries its own ``lr``: ``lr`` for the first and last, ``lr · dynamic_lr_scale``
    for ``"seednorm"`` (a learning-rate multiplier for α and β; schedulers scale each group's lr alike).
    Only parameters with ``requires_grad`` are included; a parameter shared by several modules appears once.
    Groups with no parameters are omitted.
    """
    dynamic_ids = {id(model.get_parameter(name)) for name in dynamic_parameters(model)}
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "seednorm": [], "no_decay": []}
    for p in model.parameters():  # .parameters() already de-duplicates shared tensors
        if not p.requires_grad:
            continue
        if id(p) in dynamic_ids:
            groups["seednorm"].append(p)
        elif p.dim() >= 2 or decay_gain:
            groups["decay"].append(p)
        else:
            groups["no_decay"].append(p)
    decay = {"decay": weight_decay, "seednorm": weight_decay if decay_dynamic else 0.0, "no_decay": 0.0}
    if dynamic_lr_scale != 1.0 and lr is None:
        raise ValueError("dynamic_lr_scale needs the base lr: pass lr=...")
    result = []
    for name, params in groups.items():
        if not params:
            continue
        group: dict[str, Any] = {"name": name, "params": params, "weight_decay": decay[name]}
        if lr is not None:
            group["lr"] = lr * (dynamic_lr_scale if name == "seednorm" else 1.0)
        result.append(group)
    return result
