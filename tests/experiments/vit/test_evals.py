"""Accuracy and the distribution shifts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seednorm_experiments.vit.data import ImageSet
from seednorm_experiments.vit.evals import DEFAULT_SHIFTS, Shift, accuracy, parse_shift, shifted_accuracies


class Brightest(nn.Module):
    """Predicts the class whose row (of 10) holds the brightest pixel: a known, exact classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, 0, :10, :].amax(dim=-1) + 0 * self.dummy


def row_images(labels: torch.Tensor) -> ImageSet:
    images = torch.zeros(len(labels), 1, 16, 16)
    images[torch.arange(len(labels)), 0, labels, 8] = 1.0
    return ImageSet("rows", images, labels, tuple(map(str, range(10))))


def test_accuracy_counts_correct_predictions_and_restores_mode() -> None:
    labels = torch.arange(50) % 10
    data = row_images(labels)
    model = Brightest().train()
    assert accuracy(model, data, batch_size=7) == 1.0
    assert model.training
    wrong = ImageSet("rows", data.images, (labels + 1) % 10, data.classes)
    wrong.labels[:5] = labels[:5]
    assert accuracy(model.eval(), wrong, batch_size=16) == pytest.approx(5 / 50)
    assert not model.training


def test_identity_severities_leave_images_unchanged() -> None:
    images = torch.rand(4, 1, 12, 12)
    g = torch.Generator().manual_seed(0)
    for shift in (Shift("noise", 0.0), Shift("contrast", 1.0), Shift("rotate", 0.0)):
        torch.testing.assert_close(shift(images, g), images)


def test_shifts_match_their_definitions() -> None:
    images = torch.rand(4, 1, 12, 12, dtype=torch.float64)
    low = Shift("contrast", 0.25)(images, torch.Generator())
    mean = images.mean(dim=(-3, -2, -1), keepdim=True)
    torch.testing.assert_close(low, (0.25 * images + 0.75 * mean).clamp(0, 1))
    turned = Shift("rotate", 90.0)(images, torch.Generator())
    torch.testing.assert_close(turned, torch.rot90(images, 1, dims=(-2, -1)))  # counter-clockwise
    noisy = Shift("noise", 0.5)(images, torch.Generator().manual_seed(1))
    assert noisy.min() >= 0 and noisy.max() <= 1 and not torch.equal(noisy, images)
    assert torch.equal(noisy, Shift("noise", 0.5)(images, torch.Generator().manual_seed(1)))


def test_shifted_accuracies_names_every_condition() -> None:
    data = row_images(torch.arange(30) % 10)
    result = shifted_accuracies(Brightest(), data, DEFAULT_SHIFTS, {"again": data})
    assert list(result) == ["clean", *(s.name for s in DEFAULT_SHIFTS), "again"]
    assert result["clean"] == result["again"] == 1.0


def test_parse_shift() -> None:
    assert parse_shift("noise=0.4") == Shift("noise", 0.4)
    assert parse_shift("rotate=30").name == "rotate=30"
    for bad in ("noise", "noise=x", "blur=1"):
        with pytest.raises(ValueError, match="KIND=VALUE|unknown shift"):
            parse_shift(bad)
    with pytest.raises(ValueError, match="sigma"):
        Shift("noise", -1.0)
