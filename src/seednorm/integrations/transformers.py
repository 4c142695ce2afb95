"""Hugging Face transformers: convert, save, reload and train SeeDNorm models.

    from seednorm.integrations import transformers as sn_hf

    model = AutoModelForCausalLM.from_pretrained(...)
    sn_hf.convert(model)                           # convert_to_seednorm + a "seednorm" marker in model.config
    model.save_pretrained(path)                    # writes γ (as .weight), .alpha, .beta (and .bias)
    model = sn_hf.from_pretrained(AutoModelForCausalLM, path)   # converts before loading: identical logits
    trainer = Trainer(model, args, ..., optimizers=(sn_hf.create_optimizer(model, args), None))

A plain ``from_pretrained`` of such a checkpoint would rebuild the original norms and drop α and β (and, for
Gemma, read γ as the offset weight): use this module's ``from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, Trainer, TrainingArguments
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from transformers.models.auto.auto_factory import (
    _BaseAutoModelClass,
    _get_model_class,
    add_generation_mixin_to_remote_model,
)
from transformers.trainer_optimizer import is_optimizer_factory

from ..convert import convert_to_seednorm
from ..modules import SeeDNorm
from ..optim import param_groups

__all__ = ["CONFIG_KEY", "convert", "from_pretrained", "create_optimizer"]

CONFIG_KEY = "seednorm"  # model.config.seednorm = the convert_to_seednorm options of a converted model


def convert(
    model: PreTrainedModel,
    *,
    num_heads: int = 1,
    alpha_init: float = 1.0,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    center: bool | None = None,
) -> PreTrainedModel:
    """``convert_to_seednorm`` for a transformers model, recording its options in ``model.config.seednorm``.

    The record is what lets :func:`from_pretrained` rebuild the same SeeDNorm layers before loading a checkpoint
    written by ``model.save_pretrained``. Arguments as in :func:`seednorm.convert_to_seednorm`.
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"convert expects a transformers PreTrainedModel, got {type(model).__name__}")
    if getattr(model.config, CONFIG_KEY, None) is not None:
        raise ValueError(f"this model is converted already (config.{CONFIG_KEY} = {model.config.seednorm})")
    options = {
        "num_heads": num_heads,
        "alpha_init": alpha_init,
        "include": _as_list(include),
        "exclude": _as_list(exclude),
        "center": center,
    }
    convert_to_seednorm(model, **options)
    setattr(model.config, CONFIG_KEY, options)
    return model


def _as_list(patterns: str | Iterable[str] | None) -> list[str] | None:
    """Patterns in a JSON-friendly form for the config."""
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


def from_pretrained(
    model_class: type[PreTrainedModel] | type[_BaseAutoModelClass], path: str, **kwargs: Any
) -> PreTrainedModel:
    """Load a checkpoint saved from a :func:`convert`-ed model, with its SeeDNorm layers in place.

    ``model_class`` is a model class (``LlamaForCausalLM``) or an auto class (``AutoModelForCausalLM``); ``kwargs``
    go to its ``from_pretrained`` (``dtype``, ``device_map``, ``output_loading_info``, ...). The model is built,
    converted with the options in ``config.seednorm``, then the state dict (γ, α, β, bias) is loaded into it.

    Raises:
        ValueError: the config has no ``seednorm`` entry, or the checkpoint lacks some SeeDNorm parameter.
    """
    config = kwargs.pop("config", None)
    if config is None:
        config = AutoConfig.from_pretrained(path, trust_remote_code=kwargs.get("trust_remote_code", False))
    options = getattr(config, CONFIG_KEY, None)
    if options is None:
        raise ValueError(
            f"{path} has no '{CONFIG_KEY}' entry in its config: it was not saved from a model converted with "
            "seednorm.integrations.transformers.convert; load it with the usual from_pretrained"
        )
    if issubclass(model_class, _BaseAutoModelClass):
        model_class = _auto_model_class(model_class, config, path, kwargs)
    want_info = kwargs.pop("output_loading_info", False)
    model, info = _converting(model_class, options).from_pretrained(
        path, config=config, output_loading_info=True, **kwargs
    )
    model.__class__ = model_class  # the subclass only had to build it
    seednorm_params = {
        f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, SeeDNorm) for p, _ in m.named_parameters()
    }
    missing = sorted(seednorm_params.intersection(info["missing_keys"]))
    if missing:
        raise ValueError(f"{path} lacks SeeDNorm parameters {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    return (model, info) if want_info else model


_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "revision", "token", "local_files_only", "code_revision")


def _auto_model_class(
    auto_class: type[_BaseAutoModelClass], config: PretrainedConfig, path: str, kwargs: dict[str, Any]
) -> type[PreTrainedModel]:
    """The model class ``auto_class`` would build for ``config``: a transformers class, or the checkpoint's own
    code (``config.auto_map``) when ``trust_remote_code=True``, as ``auto_class.from_pretrained`` resolves it."""
    class_ref = (getattr(config, "auto_map", None) or {}).get(auto_class.__name__)
    if class_ref is None or type(config) in auto_class._model_mapping:
        return _get_model_class(config, auto_class._model_mapping)
    if not kwargs.get("trust_remote_code", False):
        raise ValueError(
            f"{path} defines its {auto_class.__name__} model in its own code ({class_ref}); pass "
            "trust_remote_code=True to run it, as with transformers' from_pretrained"
        )
    hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
    return add_generation_mixin_to_remote_model(get_class_from_dynamic_module(class_ref, path, **hub))


def _converting(model_class: type[PreTrainedModel], options: dict[str, Any]) -> type[PreTrainedModel]:
    """A same-named subclass of ``model_class`` whose constructor converts the norms (before weights load)."""

    def __init__(self: PreTrainedModel, config: PretrainedConfig, *args: Any, **kwargs: Any) -> None:
        model_class.__init__(self, config, *args, **kwargs)
        convert_to_seednorm(self, **options)

    attrs = {"__init__": __init__, "__module__": model_class.__module__, "__qualname__": model_class.__qualname__}
    return type(model_class.__name__, (model_class,), attrs)


def create_optimizer(model: nn.Module, args: TrainingArguments) -> torch.optim.Optimizer:
    """The optimizer ``Trainer`` would build from ``args`` (``optim``, lr, betas, ε), over ``seednorm.param_groups``.

    Trainer's default puts every parameter whose name contains "norm" in its no-decay group, α and β included;
    SPEC §4 decays α and β. Pass the result as ``Trainer(..., optimizers=(create_optimizer(model, args), None))``.
    Only optimizers that take plain parameter groups are supported (not GaLore, LOMO or layer-wise ones).
    """
    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    if is_optimizer_factory(optimizer_class) or {"params", "model", "optimizer_dict"}.intersection(kwargs):
        raise ValueError(f"create_optimizer supports plain optimizers only, not optim={args.optim!r}")
    return optimizer_class(param_groups(model, args.weight_decay), **kwargs)
