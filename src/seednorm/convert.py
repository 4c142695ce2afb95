"""convert_to_seednorm(): swap the norm layers of an existing model for function-preserving SeeDNorms.

With the paper's init (β = 0) SeeDNorm *is* RMSNorm with gain γ (spec §2), so a trained RMSNorm model converts
exactly: copy γ, keep ε, set β = 0 and α = ``alpha_init``. A LayerNorm converts exactly to the centering form
(``SeeDNorm(center=True, bias=True)``: y = SeeDNorm(x − mean(x)) + b). The paper's SeeDNorm is the RMS form
(``center=False``); the centering form exists so that LayerNorm models (GPT-2, BERT, ViT) convert without changing
their outputs.

How a layer is recognised. Candidates are leaf modules that are ``nn.LayerNorm``/``nn.RMSNorm`` (or subclasses) or
whose class name contains "norm" (Hugging Face ``LlamaRMSNorm``, ``Gemma2RMSNorm``, timm's ``LayerNorm2d``,
``RmsNorm2d``, ...). Each candidate's layout is found by behaviour, not by name: a float64 copy of it with random
parameters runs on a (2, 3, D) probe input (rows from ~sqrt(ε) to large scale, with non-zero means), and must match
one of the four exact SeeDNorm forms {RMS, centered} × {γ = weight, γ = 1 + weight (Gemma)} built from its
``weight``, ``bias`` and ε (``eps``/``variance_epsilon``/``epsilon``). A candidate that matches none there is tried
as a channels-first norm (spec §6b): the same rows as the positions of a (1, D, 2, 3) input, against the same forms
of ``SeeDNorm2d``. A candidate that matches none (BatchNorm, GroupNorm, a norm that needs extra inputs) is an error
naming its path and class, not a silent change.

Upcycling. The paper's init (α = 1, dot scale 1) suits a model trained from scratch, whose residual stream is small.
A trained model's is not (SmolLM2-135M: 10²–10⁴ × the L1 of its init, a channel near 24,000), and Adam's first step
moves every β element by about the learning rate whatever its gradient, so s = dot_scale·⟨x, β⟩ jumps and σ(s)·α
(α = 1, several times the trained γ) rewrites the gain at once. :class:`UpcycleRecipe` names the conversion that
bounds those first steps: α small (a constant, or a fraction of each channel's γ), dot scale 1/D, and a smaller
learning rate for α, β. α·σ(0) = 0 whatever α is, so the converted model still equals the source at init.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from . import functional as SF
from .modules import AdaSeeDNorm, SeeDNorm, channels_first_class
from .ops.sigma import ACTIVATIONS
from .optim import param_groups

__all__ = ["UpcycleRecipe", "convert_to_seednorm", "layer_options", "rebuild_seednorms", "check_equal_at_init"]

_EPS_ATTRS = ("eps", "variance_epsilon", "epsilon")
_LAYOUTS = ((False, 0.0), (False, 1.0), (True, 0.0), (True, 1.0))  # (center, offset added to weight)


@dataclass(frozen=True)
class _Layout:
    """What a source norm computes: y = (offset + weight) ⊙ x' / sqrt(mean(x'²) + eps) + bias, x' = x (− mean), over
    the last dimension or, ``channels_first``, over dim 1 of (N, C, *spatial)."""

    dim: int
    eps: float | None
    center: bool
    offset: float
    channels_first: bool = False


def check_equal_at_init(activation: str, allow_unequal_init: bool = False) -> None:
    """The rule of every conversion: a converted layer (β = 0) equals its source only with σ(0) = 0, so an
    ``activation`` with σ(0) ≠ 0 (sigmoid: the gain becomes γ + α/2) is refused unless ``allow_unequal_init`` says
    that a different function at init is intended. Unknown activations are left to the layer's own check."""
    if not isinstance(allow_unequal_init, bool):
        raise TypeError(f"allow_unequal_init must be True or False, got {allow_unequal_init!r}")
    if not allow_unequal_init and activation in ACTIVATIONS and ACTIVATIONS[activation](torch.zeros(())).item() != 0:
        raise ValueError(
            f"activation={activation!r} has σ(0) ≠ 0, so the converted layer would not equal the source at β = 0; "
            "convert with an odd σ (tanh, hardtanh, softsign), or pass allow_unequal_init=True if a different "
            "function at init is intended"
        )


@dataclass(frozen=True)
class UpcycleRecipe:
    """How to convert a *trained* model for further training so that its first optimizer steps stay bounded.

    Pass it to the conversion (``convert_to_seednorm(model, recipe=UpcycleRecipe())``, or ``recipe="upcycle"`` for
    these defaults; ``seednorm.integrations.transformers.convert`` takes it too), then build the optimizer with
    :meth:`param_groups`. Each field is one of the recipe's parts; the paper's values (α = 1, ``alpha_relative``
    False, dot scale 1, rate scale 1) switch that part off.

    - ``alpha_init``: α at conversion, a constant (default 0.01; the paper's 1 is several times a trained model's
      gains γ, so σ(s)·α would dominate the gain as soon as β moves). Never 0: with β = 0 no gradient would reach
      α or β.
    - ``alpha_relative``: α = ``alpha_init`` · γ per channel instead, so the gain (σ(s)·α + γ) = γ·(1 + alpha_init·σ(s))
      moves each channel by at most ± ``alpha_init`` of its own trained gain. Each converted layer records
      ``alpha_init`` (what ``reset_parameters`` sets α to beside γ = 1: the same rule); its α values are in its
      state dict.
    - ``dot_scale``: the factor on s = ⟨x, β⟩ (default ``"dim"``: 1/(D/num_heads)); a positive number or ``"dim"``.
    - ``dynamic_lr_scale``: learning-rate multiplier of α and β in :meth:`param_groups` (default 0.01), > 0.

    The converted model equals its source at init whatever the recipe (β = 0 and σ(0) = 0 make α·σ(s) = 0).
    Invalid values raise one ``ValueError`` (``TypeError`` for a non-bool ``alpha_relative``) naming the field.
    """

    alpha_init: float = 0.01
    alpha_relative: bool = False
    dot_scale: float | str = "dim"
    dynamic_lr_scale: float = 0.01

    def __post_init__(self) -> None:
        try:
            alpha = SF.finite_number(self.alpha_init, "alpha_init")
        except ValueError:
            alpha = None
        if alpha is None or alpha == 0:
            raise ValueError(f"UpcycleRecipe: alpha_init must be a finite non-zero number (e.g. 0.01), got "
                             f"{self.alpha_init!r}; with α = 0 and β = 0 no gradient reaches α or β")
        if not isinstance(self.alpha_relative, bool):
            raise TypeError(f"UpcycleRecipe: alpha_relative must be True or False, got {self.alpha_relative!r}")
        dot = self.dot_scale
        if not (dot == "dim" if isinstance(dot, str) else _positive(dot)):
            raise ValueError(f"UpcycleRecipe: dot_scale must be 'dim' (1/(D/num_heads)) or a finite number > 0, "
                             f"got {dot!r}")
        if not _positive(self.dynamic_lr_scale):
            raise ValueError(f"UpcycleRecipe: dynamic_lr_scale must be a finite number > 0 (e.g. 0.01), got "
                             f"{self.dynamic_lr_scale!r}")
        object.__setattr__(self, "alpha_init", alpha)
        object.__setattr__(self, "dot_scale", dot if isinstance(dot, str) else float(dot))
        object.__setattr__(self, "dynamic_lr_scale", float(self.dynamic_lr_scale))

    def param_groups(self, model: nn.Module, weight_decay: float, *, lr: float, decay_gain: bool = False,
                     decay_dynamic: bool = True) -> list[dict[str, Any]]:
        """``seednorm.param_groups(model, weight_decay, lr=lr, dynamic_lr_scale=self.dynamic_lr_scale, ...)``:
        every group carries its ``lr``, the ``"seednorm"`` group (α, β) ``lr · dynamic_lr_scale``."""
        return param_groups(model, weight_decay, decay_gain=decay_gain, decay_dynamic=decay_dynamic, lr=lr,
                            dynamic_lr_scale=self.dynamic_lr_scale)


def _positive(value: object) -> bool:
    try:
        return SF.finite_number(value, "value") > 0
    except ValueError:
        return False


RECIPES = {"upcycle": UpcycleRecipe()}
"""The recipes ``convert_to_seednorm(recipe=...)`` knows by name."""


def _recipe(recipe: UpcycleRecipe | str | None, alpha_init: float, dot_scale: float | str) -> UpcycleRecipe | None:
    """``recipe`` as an UpcycleRecipe (None: none); errors for an unknown name, or for ``alpha_init``/``dot_scale``
    given beside it (the recipe sets both)."""
    if recipe is None:
        return None
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; give one of {sorted(RECIPES)} or an UpcycleRecipe(...)")
        recipe = RECIPES[recipe]
    if not isinstance(recipe, UpcycleRecipe):
        raise TypeError(f"recipe must be None, a name of {sorted(RECIPES)} or an UpcycleRecipe, got {recipe!r}")
    if alpha_init != 1.0 or dot_scale != 1.0:
        raise ValueError(f"recipe={recipe!r} sets alpha_init and dot_scale; give them to UpcycleRecipe(...), not "
                         f"beside it (got alpha_init={alpha_init!r}, dot_scale={dot_scale!r})")
    return recipe


class _Unconvertible(Exception):
    """A candidate norm that no SeeDNorm reproduces; the message says why."""


def convert_to_seednorm(
    model: nn.Module,
    *,
    num_heads: int = 1,
    alpha_init: float = 1.0,
    activation: str = "tanh",
    dot_scale: float | str = 1.0,
    dynamic_dropout: float = 0.0,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    center: bool | None = None,
    layer_class: type[SeeDNorm] = SeeDNorm,
    allow_unequal_init: bool = False,
    recipe: UpcycleRecipe | str | None = None,
) -> nn.Module:
    """Replace the norm layers of ``model`` in place by equivalent SeeDNorms and return ``model``.

    Each new SeeDNorm (``SeeDNorm2d`` for a channels-first source, e.g. timm's ``LayerNorm2d``, ``RmsNorm2d``) sits
    under the old attribute name, with γ as ``weight`` (Gemma's ``1 + weight`` folded in),
    the LayerNorm bias as ``bias``, the same ε, dtype, device and train/eval mode, β = 0 and α = ``alpha_init``:
    outputs are unchanged up to float rounding, and state-dict keys and name-based weight-decay filters keep
    working (the new keys are ``<name>.alpha`` and ``<name>.beta``). α and β are trainable exactly when the
    source's γ is (its bias when it has no γ; for a norm without parameters, when any parameter of ``model`` is):
    a frozen model stays frozen.

    Args:
        model: any eager ``nn.Module`` (not a TorchScript one); if it is itself a norm layer, the new SeeDNorm is
            returned instead.
        num_heads: heads of the dynamic term (spec §3); must divide every converted layer's width.
        alpha_init: α at conversion (spec §2: 1.0; never 0).
        activation: σ; one with σ(0) = 0 (tanh, hardtanh, softsign), or β = 0 would not reproduce the source
            (refused unless ``allow_unequal_init``).
        dot_scale: the factor on s = ⟨x, β⟩ (a number, or ``"dim"`` for 1/(D/num_heads)); no effect at β = 0.
        dynamic_dropout: dropout on σ(s)·α in training mode (spec §4); no effect in eval mode.
        include: shell-style patterns (``fnmatch``, case-sensitive, ``*`` also matches dots) on the dotted module
            names from ``named_modules()``; only matching modules are converted. None converts every norm. A
            module reachable under several names (a shared norm) is selected when any of its names matches.
        exclude: patterns of modules to leave alone (applied after ``include``), e.g. ``"*q_norm"``; a shared
            module is left alone when any of its names matches.
        center: None keeps each source's form (centering SeeDNorm for LayerNorm sources, RMS form for RMSNorm
            sources: exact). True/False forces one form for all; then a layer of the other kind is no longer
            function-preserving (e.g. ``center=False`` turns a ViT's LayerNorms into the paper's RMS SeeDNorm,
            LayerNorm bias kept).
        layer_class: ``SeeDNorm`` or a subclass with its constructor (integrations use one that names its
            parameters for their checkpoint format); channels-first sources get ``channels_first_class(layer_class)``.
        allow_unequal_init: accept an ``activation`` with σ(0) ≠ 0 (sigmoid), whose converted layers differ from
            their sources at init (gain γ + α/2); ``check_equal_at_init`` is the rule.
        recipe: None, or a recipe for converting a trained model for further training (:class:`UpcycleRecipe`,
            or ``"upcycle"`` for its defaults): it sets ``alpha_init`` (α = alpha_init · γ per channel with
            ``alpha_relative``) and ``dot_scale``, which must then be left at their defaults; build the optimizer
            with ``recipe.param_groups``. Outputs are unchanged at conversion all the same.

    Raises:
        ValueError: no norm layer selected, or an option is invalid for a layer (e.g. ``num_heads`` does not divide
            its width).
        TypeError: ``model`` is a TorchScript module, a selected norm layer cannot be reproduced exactly (the
            message names each module and class), or ``layer_class`` builds layers without γ.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert_to_seednorm expects an nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            f"{_qualname(model)} is a TorchScript module (torch.jit.script/trace), whose layers cannot be swapped: "
            "convert the eager model, then script it"
        )
    if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")
    check_equal_at_init(activation, allow_unequal_init)
    includes, excludes = _patterns(include, "include"), _patterns(exclude, "exclude")
    if center is not None and not isinstance(center, bool):
        raise TypeError(f"center must be None, True or False, got {center!r}")
    if not (isinstance(layer_class, type) and issubclass(layer_class, SeeDNorm)):
        raise TypeError(f"layer_class must be SeeDNorm or a subclass of it, got {layer_class!r}")
    chosen = _recipe(recipe, alpha_init, dot_scale)
    if chosen is not None:
        alpha_init, dot_scale = chosen.alpha_init, chosen.dot_scale
    options = {
        "num_heads": num_heads,
        "alpha_init": alpha_init,
        "activation": activation,
        "dot_scale": dot_scale,
        "dynamic_dropout": dynamic_dropout,
    }
    plan: dict[int, tuple[str, nn.Module, _Layout]] = {}
    failures: list[str] = []
    already = 0
    for names, module in _named_once(model):
        name = names[0]
        if isinstance(module, (SeeDNorm, AdaSeeDNorm)):
            already += 1
            continue
        if not _selected(names, includes, excludes):
            continue
        if isinstance(module, torch.jit.ScriptModule):
            if "norm" in getattr(module, "original_name", "").lower():
                failures.append(
                    f"{name!r} ({module.original_name}): it is a TorchScript module (torch.jit.script/trace); "
                    "convert the eager module before scripting it"
                )
            continue
        if not _is_norm_candidate(module):
            continue
        try:
            layout = _identify(module)
        except _Unconvertible as why:
            failures.append(f"{name or '<root>'!r} ({_qualname(module)}): {why}")
            continue
        if layout.dim % num_heads:
            raise ValueError(
                f"num_heads={num_heads} does not divide the width {layout.dim} of {name or '<root>'!r}; "
                "choose another num_heads or exclude that module"
            )
        plan[id(module)] = (name or "<root>", module, layout)
    if failures:
        raise TypeError(
            f"cannot convert {len(failures)} norm layer(s) to SeeDNorm exactly:\n  "
            + "\n  ".join(failures)
            + "\nleave them out with exclude=[...] (fnmatch patterns on the module names)"
        )
    if not plan:
        selection = f" matching include={include!r}, exclude={exclude!r}" if includes or excludes else ""
        note = f" ({already} module(s) are SeeDNorm already)" if already else ""
        raise ValueError(f"no normalization layers{selection} found in {type(model).__name__}{note}")

    fallback = _factory(model)
    trainable = _any_trainable(model)
    new = {
        key: _build(module, layout, center=center, fallback=fallback, trainable=trainable, cls=layer_class, name=name,
                    **options)
        for key, (name, module, layout) in plan.items()
    }
    if chosen is not None and chosen.alpha_relative:
        for key, layer in new.items():
            _alpha_from_gain(layer, chosen.alpha_init, plan[key][0])
    return _swap(model, new)


def _alpha_from_gain(layer: SeeDNorm, scale: float, name: str) -> None:
    """α = ``scale`` · γ, channel by channel (``UpcycleRecipe(alpha_relative=True)``); an error naming the layer
    when it has no per-channel α or when γ is 0 everywhere (α would be 0: no gradient would reach α or β)."""
    if layer.alpha is None or layer.alpha.shape != layer.weight.shape:
        raise ValueError(f"{name!r}: alpha_relative needs a per-channel α (alpha_mode='vector'), this layer has "
                         f"alpha_mode={layer.alpha_mode!r}")
    if not layer.weight.detach().any():
        raise ValueError(f"{name!r}: its γ is 0 everywhere, so α = alpha_init · γ would be 0 and no gradient would "
                         "reach α or β; convert it with a constant α (alpha_relative=False) or exclude it")
    with torch.no_grad():
        layer.alpha.copy_(layer.weight * scale)


def layer_options(layer: SeeDNorm) -> dict[str, Any]:
    """The constructor options of ``layer`` that shape its function (all but device, dtype and ``impl``, which
    picks kernels that agree to rounding), JSON-friendly: ``SeeDNorm(**options)`` rebuilds it up to its parameter
    values."""
    if not isinstance(layer, SeeDNorm):
        raise TypeError(f"layer_options expects a SeeDNorm, got {type(layer).__name__}")
    return {
        "normalized_shape": layer.normalized_shape[0],
        "num_heads": layer.num_heads,
        "eps": layer.eps,
        "alpha_init": layer.alpha_init,
        "activation": layer.activation,
        "dynamic_dropout": layer.dynamic_dropout,
        "dot_scale": layer.dot_scale,
        "center": layer.center,
        "bias": layer.bias is not None,
        "alpha_mode": layer.alpha_mode,
        "beta_mode": layer.beta_mode,
        "gamma_mode": layer.gamma_mode,
    }


def rebuild_seednorms(
    model: nn.Module, layers: Mapping[str, Mapping[str, Any]], *, layer_class: type[SeeDNorm] = SeeDNorm
) -> nn.Module:
    """Put ``layer_class(**options)`` in place of the norm at each module path of ``layers`` (as ``layer_options``
    gives them) and return ``model``: rebuilds a converted model's SeeDNorms before its saved parameters load.

    Each new layer gets the dtype, device and mode of the norm it replaces and its initial parameters (the saved
    ones are expected to be loaded next). Nothing is replaced unless every path can be.

    Raises:
        ValueError: a path names no module, a module that is not a norm layer of the recorded width, or options
            that ``layer_class`` refuses; the message names the path.
    """
    modules = dict(model.named_modules(remove_duplicate=False))
    fallback, trainable = _factory(model), _any_trainable(model)
    new: dict[int, SeeDNorm] = {}
    for path, options in layers.items():
        module = modules.get(path)
        if module is None:
            raise ValueError(f"{path!r}: {type(model).__name__} has no module of that name")
        what = f"{path!r} ({_qualname(module)})"
        if not _is_norm_candidate(module) or isinstance(module, (SeeDNorm, AdaSeeDNorm)):
            raise ValueError(f"{what} is not a norm layer that converts to SeeDNorm")
        try:
            layout = _identify(module)
        except _Unconvertible as why:
            raise ValueError(f"{what} does not convert to SeeDNorm: {why}") from None
        options = dict(options)
        width = options.pop("normalized_shape", None)
        if width != layout.dim:
            raise ValueError(f"{what} has width {layout.dim}, the record says {width!r}")
        ref = _reference(module)
        factory = fallback if ref is None else {"device": ref.device, "dtype": ref.dtype}
        cls = channels_first_class(layer_class) if layout.channels_first else layer_class
        try:
            layer = cls(layout.dim, **options, **factory)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path!r}: the recorded options {options} are invalid: {err}") from None
        layer.requires_grad_(trainable if ref is None else ref.requires_grad)
        new[id(module)] = layer.train(module.training)
    return _swap(model, new)


def _swap(model: nn.Module, new: dict[int, nn.Module]) -> nn.Module:
    """Replace every edge to a module in ``new`` (by id), shared ones included; the root's replacement is returned."""
    if id(model) in new:
        return new[id(model)]
    for parent, attr, child in _edges(model):
        if id(child) in new:
            setattr(parent, attr, new[id(child)])
    return model


def _named_once(model: nn.Module) -> Iterator[tuple[list[str], nn.Module]]:
    """Each module once, with every name it has (a shared module has several), in ``named_modules`` order."""
    names: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
        modules.setdefault(id(module), module)
    for key, module in modules.items():
        yield names[key], module


def _any_trainable(model: nn.Module) -> bool:
    """Whether new parameters that copy none should train: the model has a trainable parameter, or none at all."""
    params = list(model.parameters())
    return not params or any(p.requires_grad for p in params)



def _patterns(value: str | Iterable[str] | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    patterns = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"{what} must be a pattern string or an iterable of them, got {value!r}")
    return patterns


def _selected(names: list[str], includes: tuple[str, ...], excludes: tuple[str, ...]) -> bool:
    """Some name matches an include pattern (or there are none) and no name matches an exclude pattern."""
    included = not includes or any(fnmatch.fnmatchcase(n, p) for n in names for p in includes)
    return included and not any(fnmatch.fnmatchcase(n, p) for n in names for p in excludes)


def _is_norm_candidate(module: nn.Module) -> bool:
    """A leaf module that is a torch LayerNorm/RMSNorm or whose class name says it is a norm."""
    if next(module.children(), None) is not None:
        return False
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or "norm" in type(module).__name__.lower()


def _qualname(module: nn.Module) -> str:
    return _classname(type(module))


def _classname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _identify(module: nn.Module) -> _Layout:
    """The exact SeeDNorm layout of ``module``, verified on a probe input; raises _Unconvertible otherwise."""
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    for what, p in (("weight", weight), ("bias", bias)):
        if p is not None and (not isinstance(p, Tensor) or p.dim() != 1):
            shape = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
            raise _Unconvertible(f"its {what} is not a 1-D tensor (got {shape})")
    dim = _width(module, weight, bias)
    eps_attr = next((a for a in _EPS_ATTRS if hasattr(module, a)), None)
    if eps_attr is None:
        raise _Unconvertible(f"it has no epsilon attribute (looked for {', '.join(_EPS_ATTRS)})")
    eps = getattr(module, eps_attr)
    if eps is not None and not isinstance(eps, (int, float)):
        raise _Unconvertible(f"its {eps_attr} is not a number (got {eps!r})")
    eps = None if eps is None else float(eps)

    probe_module = _probe_copy(module)
    last = _match(probe_module, _Layout(dim, eps, False, 0.0))
    if isinstance(last, _Layout):
        return last
    first = _match(probe_module, _Layout(dim, eps, False, 0.0, channels_first=True))
    if isinstance(first, _Layout):
        return first
    raise _Unconvertible(f"{last}; as a channels-first norm (N, C, *spatial): {first}")


def _match(probe_module: nn.Module, base: _Layout) -> _Layout | str:
    """The layout among the four forms of ``base`` (its dim, eps and channels_first) that ``probe_module``
    reproduces on the probe input, or why none does."""
    x = _probe_input(base.dim, base.eps)
    if base.channels_first:
        x = x.reshape(1, 2, 3, base.dim).permute(0, 3, 1, 2)  # the same rows as the positions of a (1, D, 2, 3) input
    try:
        with torch.no_grad():
            expected = probe_module(x)
    except Exception as err:  # any failure means "not a plain norm of this layout"
        return f"calling it on a {tuple(x.shape)} input failed ({type(err).__name__}: {err})"
    if not isinstance(expected, Tensor) or expected.shape != x.shape:
        shape = "(N, D, H, W)" if base.channels_first else "(B, T, D)"
        return f"it does not map a {shape} tensor to a tensor of the same shape"
    for center, offset in _LAYOUTS:
        layout = _Layout(base.dim, base.eps, center, offset, base.channels_first)
        candidate = _build(probe_module, layout, center=None, fallback={})
        with torch.no_grad():
            if torch.allclose(candidate(x), expected, rtol=1e-4, atol=1e-5):
                return layout
    eps_attr = next(a for a in _EPS_ATTRS if hasattr(probe_module, a))
    return ("its output matches no SeeDNorm form (RMS or mean-centered, gain = weight or 1 + weight, "
            f"ε = .{eps_attr} = {base.eps}) on a probe input")


def _width(module: nn.Module, weight: Tensor | None, bias: Tensor | None) -> int:
    if weight is not None:
        return weight.numel()
    if bias is not None:
        return bias.numel()
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, int):
        return shape
    if isinstance(shape, (tuple, list, torch.Size)) and len(shape) == 1:
        return int(shape[0])
    raise _Unconvertible("its width is unknown: no 1-D weight or bias and no one-dimensional normalized_shape")


def _probe_copy(module: nn.Module) -> nn.Module:
    """A float64 CPU copy of ``module`` in eval mode with random parameters.

    float64 makes the SeeDNorm side run its reference math (norms that compute internally in float32 still
    match within the probe's tolerance).

    Works for meta-device modules, and inside a ``torch.device("meta")`` context (transformers' from_pretrained):
    every tensor made here names its device.
    """
    clone = copy.deepcopy(module)
    if any(t.is_meta for t in (*clone.parameters(), *clone.buffers())):
        clone = clone.to_empty(device="cpu")
    clone = clone.to(device="cpu", dtype=torch.float64).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in clone.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, device="cpu", dtype=torch.float64) * 0.5 + 0.5)
    return clone


def _probe_input(dim: int, eps: float | None) -> Tensor:
    """(2, 3, D) rows at scales from ~sqrt(ε) (where ε matters) up to 30, half with a non-zero mean.

    Three dimensions, so that norms over channels (BatchNorm, GroupNorm) or over more than the last dimension fail.
    """
    tiny = (torch.finfo(torch.float32).eps if eps is None else eps) ** 0.5
    generator = torch.Generator().manual_seed(1)
    f64 = {"device": "cpu", "dtype": torch.float64}
    scales = torch.tensor([0.5 * tiny, 2 * tiny, 1.0, 1.0, 30.0, 30.0], **f64)
    means = torch.tensor([0.0, 1.0, 0.0, 2.0, 0.0, -1.0], **f64)
    rows = (torch.randn(len(scales), dim, generator=generator, **f64) + means[:, None]) * scales[:, None]
    return rows.view(2, 3, dim)


def _factory(model: nn.Module) -> dict:
    """dtype and device of the model's first floating tensor: for norm layers without parameters."""
    tensors = (*model.parameters(), *model.buffers())
    first = next((t for t in tensors if t.is_floating_point()), None)
    return {} if first is None else {"device": first.device, "dtype": first.dtype}


def _build(
    module: nn.Module,
    layout: _Layout,
    *,
    center: bool | None,
    fallback: dict,
    trainable: bool = True,
    cls: type[SeeDNorm] = SeeDNorm,
    name: str = "<root>",
    **options: Any,
) -> SeeDNorm:
    """The SeeDNorm for ``module`` (at module path ``name``): γ = offset + weight, its bias, ε, dtype, device and
    mode; β = 0. Raises TypeError when ``cls`` builds a layer without γ.

    Every parameter's ``requires_grad`` follows the source's γ (its bias without γ, ``trainable`` without either).
    """
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    ref = _reference(module)
    factory = fallback if ref is None else {"device": ref.device, "dtype": ref.dtype}
    cls = channels_first_class(cls) if layout.channels_first else cls
    new = cls(
        layout.dim,
        eps=layout.eps,
        center=layout.center if center is None else center,
        bias=bias is not None,
        **options,
        **factory,
    )
    if new.weight is None:  # γ ≡ 0 (gamma_mode="none") holds no gain, not even the γ = 1 of a norm without one
        raise TypeError(
            f"layer_class={_classname(cls)} builds layers without γ (gamma_mode={new.gamma_mode!r}), which cannot "
            f"hold the gain of {name!r} ({_qualname(module)}); convert with a layer_class that has γ "
            "(gamma_mode='vector')"
        )
    with torch.no_grad():
        if weight is not None:
            new.weight.copy_(weight.to(torch.promote_types(weight.dtype, torch.float32)) + layout.offset)
        if bias is not None:
            new.bias.copy_(bias)
    new.requires_grad_(trainable if ref is None else ref.requires_grad)
    if bias is not None:
        new.bias.requires_grad_(bias.requires_grad)
    return new.train(module.training)


def _reference(module: nn.Module) -> Tensor | None:
    """The parameter whose dtype, device and ``requires_grad`` a replacement follows: γ, else the bias."""
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    return weight if weight is not None else bias


def _edges(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """Every (parent, attribute, child) edge, shared children included under each of their names."""
    for _, parent in model.named_modules(remove_duplicate=False):
        yield from ((parent, attr, child) for attr, child in list(parent._modules.items()) if child is not None)
