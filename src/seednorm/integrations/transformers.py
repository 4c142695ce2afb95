"""Hugging Face transformers: convert, save, reload and train SeeDNorm models.

    from seednorm.integrations import transformers as sn_hf

    model = AutoModelForCausalLM.from_pretrained(...)
    sn_hf.convert(model, dot_scale=...)            # convert_to_seednorm; config.seednorm lists every layer
    model.save_pretrained(path)                    # γ (.weight), .alpha, .seednorm_beta, .seednorm_options (.bias)
    model = sn_hf.from_pretrained(AutoModelForCausalLM, path)   # same layers rebuilt, verified: identical logits
    trainer = Trainer(model, args, ..., optimizers=(sn_hf.create_optimizer(model, args), None))

What a checkpoint holds. ``config.seednorm`` = ``{"format": 1, "layers": {module path: options}}``, the options of
every SeeDNorm layer (``seednorm.convert.layer_options``: width, heads, ε, α init, σ, dot scale, dropout, center,
bias, the forms of α, β, γ) as they are when the config is written: options changed on a layer after conversion
are saved too. Each layer's state dict holds, beside γ (``weight``), ``alpha`` and ``bias``:

- ``seednorm_beta``: β. The layers are :class:`HFSeeDNorm`, whose β parameter has this name, because transformers
  renames every checkpoint key matching ``LayerNorm.beta`` to ``LayerNorm.bias`` when it loads (and ``.gamma`` to
  ``.weight``): a BERT-family ``LayerNorm.beta`` would be read as the bias.
- ``seednorm_options``: a fingerprint (SHA-256) of the layer's options, written when the state dict is taken.
  :func:`from_pretrained` checks it against ``config.seednorm``, so a config edited or mixed up with other weights
  is an error, not different logits.

The model's code is saved with it. ``save_pretrained`` of a converted model (a transformers model class) also
writes ``modeling_seednorm.py``, and config.json gets ``model_type`` ``seednorm_<type>``, ``architectures``
``SeeDNorm<Class>`` and an ``auto_map`` pointing at that file. So:

- ``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`` (plain transformers, no seednorm import)
  rebuilds the SeeDNorm model, checked as :func:`from_pretrained` checks it; the file imports seednorm, so without
  it installed the load fails with transformers' ImportError "... Run `pip install seednorm`";
- ``AutoConfig``/``AutoModel*.from_pretrained(path)`` without ``trust_remote_code`` raise: transformers knows no
  ``seednorm_<type>`` and will not run the file unasked, so α and β are never dropped silently that way;
- this module's :func:`from_pretrained` reads it with or without ``trust_remote_code``.

The model classes of transformers itself refuse such a checkpoint: ``LlamaForCausalLM.from_pretrained(path)`` would
build the original norms and drop α and β (transformers only warns about another model type and reports unknown
keys as "unexpected"), so config.json's ``dtype`` is ``LOCKED_DTYPE``, a sentence on which their config classes
raise (``AttributeError: module 'torch' has no attribute 'not a dtype: a SeeDNorm checkpoint, ...'``); the real
dtype is saved as ``torch_dtype``, which the saved code's config class (:class:`RemoteCodeConfig`) and
:func:`from_pretrained` read. A model whose class is itself a checkpoint's own code (``register_for_auto_class``) is
saved with that code only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import transformers
from torch import Tensor, nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, Trainer, TrainingArguments
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from transformers.models.auto import modeling_auto
from transformers.models.auto.auto_factory import (
    _BaseAutoModelClass,
    _get_model_class,
    add_generation_mixin_to_remote_model,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.trainer_optimizer import is_optimizer_factory

from ..convert import UpcycleRecipe, convert_to_seednorm, layer_options, rebuild_seednorms
from ..modules import SeeDNorm
from ..optim import param_groups

__all__ = [
    "CONFIG_KEY", "HFSeeDNorm", "RemoteCodeConfig", "RemoteCodeModel", "convert", "from_pretrained",
    "create_optimizer",
]

CONFIG_KEY = "seednorm"  # model.config.seednorm = {"format": 1, "layers": {path: layer_options(layer)}}
RECORD_FORMAT = 1
BETA = "seednorm_beta"  # β's parameter name in HFSeeDNorm (and its state-dict key suffix)
FINGERPRINT = "seednorm_options"  # buffer: SHA-256 of the layer's options, as uint8 (32,)
MODEL_TYPE_PREFIX = "seednorm_"  # a saved config's model_type: seednorm_<the transformers model_type>
CODE_MODULE = "modeling_seednorm"  # the model code saved beside the weights: modeling_seednorm.py
# A saved config.json's "dtype": not a dtype, so that a model class of transformers itself (LlamaForCausalLM...),
# which would build the original norms and drop α and β, fails on it (``getattr(torch, dtype)`` while its config is
# built) with this text. The real dtype is saved as "torch_dtype", which the saved code's config class reads.
LOCKED_DTYPE = (
    "not a dtype: a SeeDNorm checkpoint, which transformers' own model classes would load without its SeeDNorm "
    "layers; load it with AutoModel...from_pretrained(path, trust_remote_code=True) or "
    "seednorm.integrations.transformers.from_pretrained (its dtype is torch_dtype)"
)


def fingerprint(options: Mapping[str, Any]) -> list[int]:
    """SHA-256 of ``options`` in canonical JSON, as 32 byte values."""
    text = json.dumps(dict(options), sort_keys=True, separators=(",", ":"))
    return list(hashlib.sha256(text.encode()).digest())


class HFSeeDNorm(SeeDNorm):
    """SeeDNorm with a transformers-safe state dict: β is the parameter ``seednorm_beta`` (``.beta`` reads and sets
    it), and the buffer ``seednorm_options`` carries a fingerprint of the layer's options.

    Same constructor, forward and parameters as :class:`~seednorm.SeeDNorm`; state-dict keys ``weight``, ``alpha``,
    ``seednorm_beta``, ``seednorm_options`` (and ``bias``). The fingerprint in a state dict is always that of the
    current options; ``load_state_dict`` of a state dict whose fingerprint differs is an error.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        device = next((p.device for p in self.parameters()), None)  # a form may lack γ (gamma_mode="none")
        self.register_buffer(FINGERPRINT, torch.tensor(fingerprint(self.options()), dtype=torch.uint8, device=device))

    def options(self) -> dict[str, Any]:
        """``seednorm.convert.layer_options(self)``."""
        return layer_options(self)

    @property
    def beta(self) -> nn.Parameter | None:
        return self._parameters.get(BETA)  # None for a layer without β (beta_mode="none")

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(BETA if name == "beta" else name, value)

    def _fresh_fingerprint(self, device: torch.device) -> Tensor:
        return torch.tensor(fingerprint(self.options()), dtype=torch.uint8, device=device)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + FINGERPRINT] = self._fresh_fingerprint(getattr(self, FINGERPRINT).device)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        saved = state_dict.get(prefix + FINGERPRINT)
        if saved is not None and not saved.is_meta and saved.tolist() != fingerprint(self.options()):
            error_msgs.append(
                f"{prefix}{FINGERPRINT}: the state dict was saved from a SeeDNorm with other options than this "
                f"layer's {self.options()}"
            )
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class _Record(Mapping):
    """``config.seednorm`` of a model converted or loaded here: reads the model's HFSeeDNorm layers whenever it is
    read, so it always lists what the layers are. Copying it (``config.to_dict()``, ``save_pretrained``, pickle)
    gives a plain dict."""

    def __init__(self, model: nn.Module) -> None:
        self._model = weakref.ref(model)
        self._last = self._read()

    def owner(self) -> nn.Module | None:
        return self._model()

    def _read(self) -> dict[str, Any]:
        model = self._model()
        if model is None:
            return self._last
        layers = {name: layer_options(m) for name, m in model.named_modules() if isinstance(m, HFSeeDNorm)}
        self._last = {"format": RECORD_FORMAT, "layers": layers}
        return self._last

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._read()[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __deepcopy__(self, memo: dict) -> dict[str, Any]:
        return copy.deepcopy(self._read(), memo)

    def __reduce__(self) -> tuple:
        return (dict, (copy.deepcopy(self._read()),))

    def __repr__(self) -> str:
        return repr(self._read())


def convert(
    model: PreTrainedModel,
    *,
    num_heads: int = 1,
    alpha_init: float = 1.0,
    activation: str = "tanh",
    dot_scale: float | str = 1.0,
    dynamic_dropout: float = 0.0,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    center: bool | None = None,
    allow_unequal_init: bool = False,
    recipe: UpcycleRecipe | str | None = None,
) -> PreTrainedModel:
    """``convert_to_seednorm`` for a transformers model, with :class:`HFSeeDNorm` layers and ``config.seednorm``.

    The model gets its own copy of its config (the caller's config object, which other models may share, is left
    as it was); ``model.config.seednorm`` then lists every SeeDNorm layer with its options, as they are whenever it
    is read. Calling ``convert`` again converts more layers (e.g. other ``include`` patterns, other options).
    Arguments as in :func:`seednorm.convert_to_seednorm` (``recipe=`` included: a per-channel α is saved and
    reloaded with the weights).

    Raises:
        ValueError: the config already has a ``seednorm`` entry that this model's layers do not back (a converted
            checkpoint loaded with a plain ``from_pretrained``, which dropped α and β), or as ``convert_to_seednorm``.
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"convert expects a transformers PreTrainedModel, got {type(model).__name__}")
    existing = getattr(model.config, CONFIG_KEY, None)
    if existing is not None and not isinstance(existing, _Record):
        raise ValueError(
            f"this model's config already has a '{CONFIG_KEY}' entry ({_short(existing)}) that its layers do not "
            "back: it was loaded from a SeeDNorm checkpoint with a plain from_pretrained, which drops α and β; "
            "load it with seednorm.integrations.transformers.from_pretrained"
        )
    convert_to_seednorm(
        model,
        num_heads=num_heads,
        alpha_init=alpha_init,
        activation=activation,
        dot_scale=dot_scale,
        dynamic_dropout=dynamic_dropout,
        include=include,
        exclude=exclude,
        center=center,
        layer_class=HFSeeDNorm,
        allow_unequal_init=allow_unequal_init,
        recipe=recipe,
    )
    _own_config(model)
    _attach(model)
    return model


def _attach(model: PreTrainedModel) -> None:
    """Give ``model`` its live ``config.seednorm`` record and, for a transformers model class, a ``save_pretrained``
    that also saves the model's code (:func:`save_code`)."""
    setattr(model.config, CONFIG_KEY, _Record(model))
    if _saves_code(model) and "save_pretrained" not in model.__dict__:
        model.save_pretrained = _SaveWithCode(model)


def _exported(cls: type) -> bool:
    """``cls`` is a class of transformers itself, importable as ``from transformers import <name>``."""
    return cls.__module__.startswith("transformers.") and getattr(transformers, cls.__name__, None) is cls


def _saves_code(model: PreTrainedModel) -> bool:
    return _exported(type(model)) and _exported(type(model.config))


class _SaveWithCode:
    """A converted model's ``save_pretrained``: that of the model's class, then :func:`save_code` (the model's code
    beside its weights). With ``push_to_hub=True`` the code is also written just before transformers uploads the
    folder, so the Hub gets it (and the locked config.json) too. It stays with the model through ``copy.deepcopy``
    and pickling."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model

    def __call__(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        model = self.model
        upload = model._upload_modified_files  # transformers' last step of save_pretrained(push_to_hub=True)

        def save_code_then_upload(folder: str | os.PathLike, *upload_args: Any, **upload_kwargs: Any) -> Any:
            if _saves_code(model):
                save_code(model, folder)
            return upload(folder, *upload_args, **upload_kwargs)

        model._upload_modified_files = save_code_then_upload
        try:
            result = type(model).save_pretrained(model, save_directory, *args, **kwargs)
        finally:
            del model._upload_modified_files
        if kwargs.get("is_main_process", True) and _saves_code(model):
            save_code(model, save_directory)
        return result

    def __reduce__(self) -> tuple:
        return (_SaveWithCode, (self.model,))


CODE = '''"""{model_class} with the SeeDNorm layers that ``config.seednorm`` lists, as seednorm saved it.

Load it with ``AutoModel...from_pretrained(path, trust_remote_code=True)``; it needs seednorm (pip install seednorm).
"""

from seednorm.integrations.transformers import RemoteCodeConfig, RemoteCodeModel
from transformers import {config_class}, {model_class}


class SeeDNorm{config_class}(RemoteCodeConfig, {config_class}):
    model_type = "{model_type}"


class SeeDNorm{model_class}(RemoteCodeModel, {model_class}):
    config_class = SeeDNorm{config_class}
'''


def save_code(model: PreTrainedModel, save_directory: str | os.PathLike) -> None:
    """Write the model's code beside a checkpoint that ``save_pretrained(save_directory)`` of its class wrote.

    ``modeling_seednorm.py`` defines ``SeeDNorm<Config>`` (model type ``seednorm_<type>``) and ``SeeDNorm<Model>``
    (:class:`RemoteCodeModel` on the model's class); config.json gets that model type, those architectures and an
    ``auto_map`` for AutoConfig and for every transformers auto class that builds the model's class from its config.
    A converted model's ``save_pretrained`` calls it.
    """
    if not _saves_code(model):
        raise TypeError(f"{type(model).__name__} is not a transformers model class: its code cannot be saved here")
    model_class, config_class = type(model), type(model.config)
    path = os.path.join(save_directory, "config.json")
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    model_type = MODEL_TYPE_PREFIX + config_class.model_type
    name = f"SeeDNorm{model_class.__name__}"
    saved["model_type"] = model_type
    saved["architectures"] = [name]
    saved["auto_map"] = {
        "AutoConfig": f"{CODE_MODULE}.SeeDNorm{config_class.__name__}",
        **{auto: f"{CODE_MODULE}.{name}" for auto in _auto_classes(model_class, config_class)},
    }
    _write_config(path, _lock(saved))
    code = CODE.format(model_class=model_class.__name__, config_class=config_class.__name__, model_type=model_type)
    with open(os.path.join(save_directory, f"{CODE_MODULE}.py"), "w", encoding="utf-8") as f:
        f.write(code)


def _lock(config_dict: dict[str, Any]) -> dict[str, Any]:
    """``config_dict`` with ``LOCKED_DTYPE`` as its dtype and the real one as ``torch_dtype`` (None for none)."""
    if config_dict.get("dtype") != LOCKED_DTYPE:
        config_dict["torch_dtype"] = config_dict.get("dtype", config_dict.get("torch_dtype"))
        config_dict["dtype"] = LOCKED_DTYPE
    return config_dict


def _unlock(config_dict: dict[str, Any]) -> dict[str, Any]:
    """``config_dict`` with its real dtype back (from ``torch_dtype``) when :func:`_lock` locked it."""
    if config_dict.get("dtype") == LOCKED_DTYPE:
        config_dict = dict(config_dict)
        config_dict["dtype"] = config_dict.pop("torch_dtype", None)
    return config_dict


def _write_config(path: str | os.PathLike, config_dict: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(config_dict, indent=2, sort_keys=True) + "\n")


def _auto_classes(model_class: type, config_class: type) -> list[str]:
    """The transformers auto classes (``AutoModelForCausalLM``, ...) that build ``model_class`` for ``config_class``."""
    found = []
    for name in sorted(dir(modeling_auto)):
        auto = getattr(modeling_auto, name)
        if not (name.startswith("AutoModel") and isinstance(auto, type) and issubclass(auto, _BaseAutoModelClass)):
            continue
        try:
            built = auto._model_mapping[config_class]
        except (KeyError, AttributeError, ImportError, ValueError):
            continue
        if built is model_class and getattr(transformers, name, None) is auto:
            found.append(name)
    return found


def _base_model_type(config_dict: Mapping[str, Any]) -> str | None:
    """The transformers model type of a checkpoint whose code :func:`save_code` wrote, else None."""
    model_type = config_dict.get("model_type")
    code = (config_dict.get("auto_map") or {}).get("AutoConfig")
    if not (isinstance(model_type, str) and model_type.startswith(MODEL_TYPE_PREFIX) and isinstance(code, str)):
        return None
    base = model_type[len(MODEL_TYPE_PREFIX) :]
    return base if code.startswith(f"{CODE_MODULE}.") and base in CONFIG_MAPPING else None


class RemoteCodeConfig:
    """The base of ``SeeDNorm<Config>`` in a checkpoint's ``modeling_seednorm.py`` (before the transformers config
    class): reads the real dtype of a config.json that :func:`save_code` locked, and locks the config.json it writes
    (``to_json_file``, which ``save_pretrained`` of the config and of the model call before any upload), so a re-saved
    model refuses the plain classes too."""

    def __post_init__(self, **kwargs: Any) -> None:
        if getattr(self, "dtype", None) == LOCKED_DTYPE:
            self.dtype = None  # transformers takes the torch_dtype kwarg when dtype is None
        super().__post_init__(**kwargs)  # type: ignore[misc]

    def to_json_file(self, json_file_path: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        super().to_json_file(json_file_path, *args, **kwargs)  # type: ignore[misc]
        with open(json_file_path, encoding="utf-8") as f:
            _write_config(json_file_path, _lock(json.load(f)))


class RemoteCodeModel:
    """The base of ``SeeDNorm<Model>`` in a checkpoint's ``modeling_seednorm.py`` (before the transformers model
    class): its constructor rebuilds the SeeDNorm layers that ``config.seednorm`` lists, and its ``from_pretrained``
    checks the loaded weights against them as :func:`from_pretrained` does."""

    def __init__(self, config: PretrainedConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        layers = _layers(getattr(config, CONFIG_KEY, None), f"the config of {type(self).__name__}")
        rebuild_seednorms(self, layers, layer_class=HFSeeDNorm)
        setattr(self.config, CONFIG_KEY, _Record(self))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(  # type: ignore[misc]
            pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
        )
        _verify(model, dict(model.config.seednorm["layers"]), info, str(pretrained_model_name_or_path))
        return (model, info) if want_info else model


def _own_config(model: PreTrainedModel) -> None:
    """Give ``model`` (and every submodule that shares its config or a part of it) a private deep copy."""
    memo: dict[int, Any] = {}
    copy.deepcopy(model.config, memo)
    for module in model.modules():
        config = module.__dict__.get("config")
        if config is not None and id(config) in memo:
            module.config = memo[id(config)]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def from_pretrained(
    model_class: type[PreTrainedModel] | type[_BaseAutoModelClass], path: str, **kwargs: Any
) -> PreTrainedModel:
    """Load a checkpoint saved from a :func:`convert`-ed model, with its SeeDNorm layers in place.

    ``model_class`` is a model class (``LlamaForCausalLM``) or an auto class (``AutoModelForCausalLM``); ``kwargs``
    go to its ``from_pretrained`` (``dtype``, ``device_map``, ``output_loading_info``, ``config``, ...). The model is
    built, each layer of ``config.seednorm`` is rebuilt as recorded, then the state dict is loaded into it and
    checked against the record.

    Raises:
        ValueError: the config has no valid ``seednorm`` entry; a recorded layer does not fit the model (no such
            module, not a norm, another width, invalid options); or the checkpoint and the record disagree (a
            recorded layer's parameters missing or of another shape, SeeDNorm parameters of layers the record does
            not list, a fingerprint of other options).
    """
    config = kwargs.pop("config", None)
    # the model gets its own config (a _Record becomes a plain dict)
    config = _load_config(path, kwargs) if config is None else copy.deepcopy(config)
    layers = _layers(getattr(config, CONFIG_KEY, None), path)
    if issubclass(model_class, _BaseAutoModelClass):
        model_class = _auto_model_class(model_class, config, path, kwargs)
    want_info = kwargs.pop("output_loading_info", False)
    if issubclass(model_class, RemoteCodeModel):  # a checkpoint's SeeDNorm<Model>: builds and checks itself
        model, info = model_class.from_pretrained(path, config=config, output_loading_info=True, **kwargs)
    else:
        model, info = _converting(model_class, layers).from_pretrained(
            path, config=config, output_loading_info=True, **kwargs
        )
        model.__class__ = model_class  # the subclass only had to build it
        _verify(model, layers, info, path)
    _attach(model)
    return (model, info) if want_info else model


def _load_config(path: str | os.PathLike, kwargs: Mapping[str, Any]) -> PretrainedConfig:
    """The checkpoint's config; for one with the code :func:`save_code` writes, the transformers config it was saved
    from (that code is not needed here, so neither is ``trust_remote_code``)."""
    hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs and k != "code_revision"}
    config_dict, _ = PretrainedConfig.get_config_dict(path, **hub)
    base = _base_model_type(config_dict)
    if base is None:
        return AutoConfig.from_pretrained(path, trust_remote_code=kwargs.get("trust_remote_code", False))
    config_dict = {k: v for k, v in config_dict.items() if k not in ("model_type", "auto_map", "architectures")}
    return CONFIG_MAPPING[base].from_dict(_unlock(config_dict))


_OPTION_KEYS = frozenset(layer_options(SeeDNorm(1)))  # what a record holds per layer: what layer_options records


def _layers(record: Any, path: str) -> dict[str, dict[str, Any]]:
    """The ``layers`` of a ``config.seednorm`` record, checked for form (the values are checked by building)."""
    where = f"config.{CONFIG_KEY} of {path}"
    if record is None:
        raise ValueError(
            f"{path} has no '{CONFIG_KEY}' entry in its config: it was not saved from a model converted with "
            "seednorm.integrations.transformers.convert; load it with the usual from_pretrained"
        )
    redo = "re-save the model from sn_hf.convert / sn_hf.from_pretrained rather than editing it"
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} is {_short(record)}, not the mapping sn_hf.convert records; {redo}")
    if record.get("format") != RECORD_FORMAT or set(record) != {"format", "layers"}:
        raise ValueError(
            f"{where} is not a format-{RECORD_FORMAT} record ({{'format': {RECORD_FORMAT}, 'layers': {{...}}}}): "
            f"got keys {sorted(map(str, record))} and format {record.get('format')!r}; {redo}"
        )
    layers = record["layers"]
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError(f"{where}['layers'] must be a non-empty mapping of module paths to options; {redo}")
    for name, options in layers.items():
        if not isinstance(options, Mapping) or set(options) != _OPTION_KEYS:
            got = sorted(options) if isinstance(options, Mapping) else _short(options)
            raise ValueError(f"{where}: layer {name!r} must have the options {sorted(_OPTION_KEYS)}, got {got}; {redo}")
    return {name: dict(options) for name, options in layers.items()}


def _verify(model: PreTrainedModel, layers: dict[str, dict[str, Any]], info: dict, path: str) -> None:
    """Raise unless the loaded state dict and the record agree: every recorded layer fully loaded with the recorded
    shapes and options' fingerprint, and no SeeDNorm parameters for layers the record does not list."""
    state = set(model.state_dict())
    problems: list[str] = []
    prefixes = tuple(f"{name}." for name in layers)
    missing = sorted(k for k in info["missing_keys"] if k.startswith(prefixes))
    if missing:
        problems.append(f"missing from the checkpoint: {_few(missing)}")
    mismatched = sorted(k for k, *_ in info["mismatched_keys"] if k.startswith(prefixes))
    if mismatched:
        problems.append(f"of another shape in the checkpoint: {_few(mismatched)}")
    dynamic = (".alpha", f".{BETA}", f".{FINGERPRINT}", ".beta")
    unexpected = sorted(
        k for k in info["unexpected_keys"] if k.startswith(prefixes) or (k.endswith(dynamic) and k not in state)
    )
    if unexpected:
        problems.append(f"in the checkpoint for layers or parameters the record does not list: {_few(unexpected)}")
    if not problems:
        for name in layers:
            layer = model.get_submodule(name)
            saved = getattr(layer, FINGERPRINT)
            if not saved.is_meta and saved.tolist() != fingerprint(layer.options()):
                problems.append(f"{name!r} was saved with other options than the record's {layer.options()}")
    if problems:
        raise ValueError(
            f"{path}: the checkpoint does not match config.{CONFIG_KEY}: "
            + "; ".join(problems)
            + ". The config was edited or belongs to other weights; re-save from the converted model"
        )


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


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


def _converting(model_class: type[PreTrainedModel], layers: dict[str, dict[str, Any]]) -> type[PreTrainedModel]:
    """A same-named subclass of ``model_class`` whose constructor rebuilds the recorded SeeDNorms (before weights
    load)."""

    def __init__(self: PreTrainedModel, config: PretrainedConfig, *args: Any, **kwargs: Any) -> None:
        model_class.__init__(self, config, *args, **kwargs)
        rebuild_seednorms(self, layers, layer_class=HFSeeDNorm)

    attrs = {"__init__": __init__, "__module__": model_class.__module__, "__qualname__": model_class.__qualname__}
    return type(model_class.__name__, (model_class,), attrs)


def create_optimizer(model: nn.Module, args: TrainingArguments) -> torch.optim.Optimizer:
    """The optimizer ``Trainer`` would build from ``args`` (``optim``, lr, betas, ε), over ``seednorm.param_groups``.

    Trainer's default puts every parameter whose name contains "norm" in its no-decay group, α and β included;
    spec §4 decays α and β. Pass the result as ``Trainer(..., optimizers=(create_optimizer(model, args), None))``.
    Only optimizers that take plain parameter groups are supported (not GaLore, LOMO or layer-wise ones).
    """
    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    if is_optimizer_factory(optimizer_class) or {"params", "model", "optimizer_dict"}.intersection(kwargs):
        raise ValueError(f"create_optimizer supports plain optimizers only, not optim={args.optim!r}")
    return optimizer_class(param_groups(model, args.weight_decay), **kwargs)
