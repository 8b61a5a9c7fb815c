"""Datasets, augmentation, loaders and fixed evaluation subsets.

Two datasets are supported, both returning ``(image, label)`` pairs with
``image`` a float32 tensor of shape ``3 x 32 x 32`` in ``[0, 1]`` and ``label``
a python ``int`` in ``0..9``:

* ``"cifar10"`` -- CIFAR-10 through :class:`torchvision.datasets.CIFAR10`.
  The files are expected in ``<data_root>/cifar-10-batches-py``; nothing is
  downloaded unless ``download=True`` is passed explicitly.
* ``"digits"`` -- scikit-learn's real handwritten digits
  (:func:`sklearn.datasets.load_digits`, 1797 grey 8x8 images shipped inside
  scikit-learn, so it works offline) reshaped to look like CIFAR-10
  (see :class:`DigitsCIFARLike`).  It is the offline stand-in used by the
  tests and by smoke runs.

No normalisation happens here: attacks work in ``[0, 1]`` pixel space and the
models see ``[0, 1]`` inputs (any normalisation belongs inside the model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

__all__ = [
    "DATASETS",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_SIZE",
    "DigitsCIFARLike",
    "load_cifar10",
    "cifar10_transform",
    "digits_transform",
    "get_dataset",
    "make_loaders",
    "eval_subset",
]

#: Names accepted by :func:`get_dataset` / :func:`make_loaders`.
DATASETS = ("digits", "cifar10")

#: The digits train/test split is fixed (stratified, this seed, this test
#: fraction) and never depends on a user seed, so every run and every
#: notebook sees the same 1437 training and 360 test images.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 0.2

_SPLITS = ("train", "test")


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


# --------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------
def _digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    idx = np.arange(len(target))
    train_idx, test_idx = train_test_split(
        idx, test_size=DIGITS_TEST_SIZE, random_state=DIGITS_SPLIT_SEED,
        stratify=target, shuffle=True)
    return np.sort(train_idx), np.sort(test_idx)


class DigitsCIFARLike(Dataset):
    """scikit-learn's handwritten digits shaped like CIFAR-10.

    Each 8x8 image (integer values 0..16) is scaled by 1/16, bilinearly
    upsampled to 32x32 (``F.interpolate(..., mode="bilinear",
    align_corners=False)``), clamped to ``[0, 1]`` and replicated to three
    channels, giving float32 tensors of shape ``3 x 32 x 32``.  Labels are
    python ints in ``0..9``.

    The split is fixed: stratified, ``random_state=0``, 20 % test, i.e.
    1437 training and 360 test images, independent of any user seed.  The
    tensors are computed once per instance (``self.images`` and
    ``self.targets``); the class lives at module level so DataLoader workers
    can pickle it.

    Args:
        split: ``"train"`` or ``"test"``.
        transform: optional callable applied to each ``3x32x32`` image tensor
            (e.g. :func:`digits_transform`).
    """

    n_classes = 10
    classes = tuple(str(i) for i in range(10))

    def __init__(self, split: str = "train",
                 transform: Optional[Callable] = None) -> None:
        _check_split(split)
        from sklearn.datasets import load_digits

        digits = load_digits()
        train_idx, test_idx = _digits_split_indices()
        idx = train_idx if split == "train" else test_idx
        imgs = torch.from_numpy(digits.images[idx].astype(np.float32)) / 16.0
        imgs = F.interpolate(imgs.unsqueeze(1), size=(32, 32), mode="bilinear",
                             align_corners=False).clamp_(0.0, 1.0)
        self.split = split
        self.transform = transform
        self.indices = torch.from_numpy(idx)  # rows of load_digits()
        self.images = imgs.expand(-1, 3, -1, -1).contiguous()
        self.targets = torch.from_numpy(digits.target[idx].astype(np.int64))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        img = self.images[i]
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])

    def __repr__(self) -> str:
        return (f"DigitsCIFARLike(split={self.split!r}, n={len(self)}, "
                f"transform={self.transform!r})")


def digits_transform(augment: bool) -> Optional[Callable]:
    """Training augmentation for :class:`DigitsCIFARLike`.

    ``RandomCrop(32, padding=4)`` only (zero padding = background).  Unlike
    CIFAR-10 there is *no* horizontal flip: a mirrored digit is a different
    symbol (or no digit at all), so flipping would corrupt the labels.
    Returns ``None`` (identity) when ``augment`` is False.
    """
    if not augment:
        return None
    return transforms.RandomCrop(32, padding=4)


# --------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------
def cifar10_transform(augment: bool) -> Callable:
    """``ToTensor`` preceded, when ``augment``, by the standard CIFAR-10
    augmentation ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``.
    No normalisation."""
    if augment:
        return transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ])
    return transforms.ToTensor()


def _cifar_missing_message(root: Path, reason: str) -> str:
    return (
        f"CIFAR-10 not found ({reason}). Put the extracted python version of "
        f"CIFAR-10 (data_batch_1..5, test_batch, batches.meta) in "
        f"'{root / 'cifar-10-batches-py'}' (e.g. extract cifar-10-python.tar.gz "
        f"from https://www.cs.toronto.edu/~kriz/cifar.html into '{root}'), "
        f"or pass download=True on a machine with internet access to fetch "
        f"them there.")


def load_cifar10(root, train: bool, transform: Optional[Callable] = None,
                 download: bool = False):
    """Return :class:`torchvision.datasets.CIFAR10` rooted at ``root``.

    Raises:
        FileNotFoundError: the files are missing (or corrupted) and
            ``download`` is False, or the download failed (e.g. offline).  The
            message names ``<root>/cifar-10-batches-py`` and says that
            ``download=True`` fetches the files when online.
    """
    from torchvision.datasets import CIFAR10

    root = Path(root).expanduser()
    try:
        return CIFAR10(root=str(root), train=train, transform=transform,
                       download=download)
    except (RuntimeError, OSError) as e:
        # torchvision raises RuntimeError("Dataset not found or corrupted")
        # when files are missing; an offline download raises URLError/OSError.
        reason = ("download failed" if download
                  else "files missing or corrupted and download=False")
        raise FileNotFoundError(
            _cifar_missing_message(root, f"{reason}: {e!r}")) from e


# --------------------------------------------------------------------------
# generic entry points
# --------------------------------------------------------------------------
def get_dataset(name: str, split: str, data_root=None, augment: bool = False,
                download: bool = False) -> Dataset:
    """Dataset ``name`` (``"digits"`` or ``"cifar10"``), split ``"train"`` or
    ``"test"``.

    ``augment=True`` adds the training augmentation (see
    :func:`cifar10_transform`, :func:`digits_transform`) whatever the split;
    :func:`make_loaders` only asks for it on the training split.  ``digits``
    ignores ``data_root`` and ``download``; ``cifar10`` requires
    ``data_root``.
    """
    _check_split(split)
    if name == "digits":
        return DigitsCIFARLike(split, transform=digits_transform(augment))
    if name == "cifar10":
        if data_root is None:
            raise ValueError(
                "cifar10 needs data_root (the folder that holds or will hold "
                "'cifar-10-batches-py')")
        return load_cifar10(data_root, train=(split == "train"),
                            transform=cifar10_transform(augment),
                            download=download)
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


def make_loaders(name: str, data_root, batch_size: int, augment: bool = True,
                 num_workers: int = 0, seed: int = 0, download: bool = False
                 ) -> tuple[DataLoader, DataLoader]:
    """``(train_loader, test_loader)`` for dataset ``name``.

    The training loader shuffles with a ``torch.Generator`` seeded by
    ``seed`` (same order for the same seed) and applies the training
    augmentation when ``augment``; the test loader neither shuffles nor
    augments.  Neither drops the last incomplete batch.

    Reproducibility of the augmentation itself: with ``num_workers > 0`` the
    worker RNGs are derived from the seeded generator, so crops/flips are
    seeded too; with ``num_workers == 0`` they are drawn from the global
    torch RNG in the main process (seed it with ``torch.manual_seed``).
    """
    train_set = get_dataset(name, "train", data_root, augment=augment,
                            download=download)
    test_set = get_dataset(name, "test", data_root, augment=False,
                           download=download)
    g = torch.Generator()
    g.manual_seed(int(seed))
    pin = torch.cuda.is_available()
    common = dict(batch_size=batch_size, num_workers=num_workers,
                  pin_memory=pin, persistent_workers=num_workers > 0)
    train_loader = DataLoader(train_set, shuffle=True, generator=g, **common)
    test_loader = DataLoader(test_set, shuffle=False, **common)
    return train_loader, test_loader


def eval_subset(dataset: Dataset, n_eval: int, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of ``dataset`` as tensors ``(x, y)``.

    The indices are the first ``n_eval`` entries of
    ``torch.randperm(len(dataset))`` under a generator seeded with ``seed``,
    sorted increasingly; the same ``(n_eval, seed)`` always gives the same
    points, and for one seed a larger ``n_eval`` gives a superset.  Pass the
    *test* dataset without augmentation.  ``x`` is float32
    ``n_eval x C x H x W``, ``y`` is int64.

    Raises:
        ValueError: ``n_eval < 1`` or ``n_eval > len(dataset)``.
    """
    n = len(dataset)
    n_eval = int(n_eval)
    if n_eval < 1 or n_eval > n:
        raise ValueError(f"n_eval must be in [1, {n}] for this dataset, got {n_eval}")
    g = torch.Generator()
    g.manual_seed(int(seed))
    idx = torch.randperm(n, generator=g)[:n_eval].sort().values
    xs, ys = [], []
    for i in idx.tolist():
        xi, yi = dataset[i]
        xs.append(torch.as_tensor(xi, dtype=torch.float32))
        ys.append(int(yi))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)
