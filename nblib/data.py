"""Data sets by name, fixed evaluation subsets and loaders.

Both data sets give ``(image, label)`` pairs with ``image`` a float32 ``3 x 32 x 32`` tensor in ``[0, 1]``
and ``label`` an int in ``0..9``, and expose the whole split as ``.images`` / ``.targets`` tensors:

* ``"cifar10"`` -- CIFAR-10 from ``<data_root>/cifar-10-batches-py`` (:mod:`nblib.cifar10`: MD5-verified,
  downloaded only when asked; a CIFAR-format fixture reads through the same code).
* ``"digits"`` -- scikit-learn's handwritten digits shaped like CIFAR-10 (:mod:`nblib.digits`), the offline
  stand-in used by the tests and by smoke runs.

No normalisation happens here: attacks work in ``[0, 1]`` pixel space and the models see ``[0, 1]`` inputs
(any normalisation belongs inside the model).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from nblib.cifar10 import CIFAR10Arrays, cifar10_transform, load_cifar10
from nblib.digits import DigitsCIFARLike, check_split, digits_transform

__all__ = ["DATASETS", "CIFAR10Arrays", "DigitsCIFARLike", "load_cifar10", "cifar10_transform",
           "digits_transform", "get_dataset", "make_loaders", "eval_subset"]

#: Names accepted by :func:`get_dataset` / :func:`make_loaders`.
DATASETS = ("digits", "cifar10")


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
    check_split(split)
    if name == "digits":
        return DigitsCIFARLike(split, transform=digits_transform(augment))
    if name == "cifar10":
        if data_root is None:
            raise ValueError(
                "cifar10 needs data_root (the folder that holds or will hold "
                "'cifar-10-batches-py')")
        return load_cifar10(data_root, train=(split == "train"),
                            transform=cifar10_transform(augment), download=download)
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
