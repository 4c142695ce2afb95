"""Accuracy in distribution and under distribution shifts.

A shift maps clean test images (B, C, H, W) in [0, 1] to shifted ones in [0, 1], seeded by a generator so every
norm and seed is scored on the same corrupted images:

- ``noise``: x + σ·N(0, 1), clipped;  ``contrast``: f·x + (1 − f)·mean(x) (torchvision's adjust_contrast);
- ``rotate``: rotation by a fixed angle (bilinear, zero fill; torchvision).

Zero-shot transfer to another data set (MNIST → upscaled scikit-learn digits) is scored by ``accuracy`` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from .data import ImageSet

__all__ = ["Shift", "DEFAULT_SHIFTS", "parse_shift", "accuracy", "shifted_accuracies"]


@dataclass(frozen=True)
class Shift:
    """A named corruption ``kind`` ∈ {noise, contrast, rotate} at ``severity`` (σ, factor f, or degrees)."""

    kind: str
    severity: float

    def __post_init__(self) -> None:
        if self.kind not in _APPLY:
            raise ValueError(f"unknown shift kind {self.kind!r}; choose one of {sorted(_APPLY)}")
        if self.kind == "noise" and self.severity < 0:
            raise ValueError(f"noise sigma must be >= 0, got {self.severity}")
        if self.kind == "contrast" and self.severity < 0:
            raise ValueError(f"contrast factor must be >= 0, got {self.severity}")

    @property
    def name(self) -> str:
        return f"{self.kind}={self.severity:g}"

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return _APPLY[self.kind](images, self.severity, generator)


def _noise(images: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype, device=images.device)
    return (images + sigma * noise).clamp(0.0, 1.0)


def _contrast(images: Tensor, factor: float, generator: torch.Generator) -> Tensor:
    return TF.adjust_contrast(images, factor)


def _rotate(images: Tensor, degrees: float, generator: torch.Generator) -> Tensor:
    return TF.rotate(images, degrees, interpolation=TF.InterpolationMode.BILINEAR)


_APPLY: dict[str, Callable[[Tensor, float, torch.Generator], Tensor]] = {
    "noise": _noise,
    "contrast": _contrast,
    "rotate": _rotate,
}

DEFAULT_SHIFTS = (Shift("noise", 0.4), Shift("contrast", 0.3), Shift("rotate", 30.0))


def parse_shift(text: str) -> Shift:
    """``"noise=0.4"`` → Shift("noise", 0.4)."""
    kind, sep, value = text.partition("=")
    try:
        severity = float(value)
    except ValueError:
        severity = None
    if not sep or severity is None:
        raise ValueError(f"bad shift {text!r}: expected KIND=VALUE, e.g. 'noise=0.4', KIND in {sorted(_APPLY)}")
    return Shift(kind.strip(), severity)


@torch.no_grad()
def accuracy(
    model: nn.Module,
    data: ImageSet,
    *,
    shift: Shift | None = None,
    seed: int = 0,
    batch_size: int = 500,
) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (optionally shifted), in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=data.images.device).manual_seed(seed)
    correct = 0
    try:
        for start in range(0, len(data), batch_size):
            images = data.images[start : start + batch_size]
            if shift is not None:
                images = shift(images, generator)
            logits = model(images.to(device))
            correct += (logits.argmax(dim=-1).cpu() == data.labels[start : start + batch_size]).sum().item()
    finally:
        model.train(was_training)
    return correct / len(data)


def shifted_accuracies(
    model: nn.Module,
    test: ImageSet,
    shifts: tuple[Shift, ...] = DEFAULT_SHIFTS,
    transfer: Mapping[str, ImageSet] | None = None,
    *,
    seed: int = 0,
) -> dict[str, float]:
    """``{"clean": acc, shift.name: acc, ..., transfer name: acc}`` for one trained model."""
    result = {"clean": accuracy(model, test)}
    for shift in shifts:
        result[shift.name] = accuracy(model, test, shift=shift, seed=seed)
    for name, data in (transfer or {}).items():
        result[name] = accuracy(model, data)
    return result
