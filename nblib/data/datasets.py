"""Data sets by name and fixed evaluation subsets (the training batches are :mod:`nblib.data.loader`'s).

Both data sets give ``(image, label)`` pairs with ``image`` a float32 ``3 x 32 x 32`` tensor in ``[0, 1]``
and ``label`` an int in ``0..9``, and expose the whole split as ``.images`` / ``.targets`` tensors:

* ``"cifar10"`` -- CIFAR-10 from ``<data_root>/cifar-10-batches-py`` (:mod:`nblib.data.cifar10`: MD5-verified,
  downloaded only when asked; a CIFAR-format fixture reads through the same code).
* ``"digits"`` -- scikit-learn's handwritten digits shaped like CIFAR-10 (:mod:`nblib.data.digits`), the offline
  stand-in used by the tests and by smoke runs.

No normalisation happens here: attacks work in ``[0, 1]`` pixel space and the models see ``[0, 1]`` inputs
(any normalisation belongs inside the model).
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from nblib.data.cifar10 import load_cifar10
from nblib.data.digits import DigitsCIFARLike, check_split

__all__ = ["DATASETS", "get_dataset", "eval_subset"]

#: Names accepted by :func:`get_dataset`.
DATASETS = ("digits", "cifar10")


def get_dataset(name: str, split: str, data_root=None, download: bool = False) -> Dataset:
    """Dataset ``name`` (``"digits"`` or ``"cifar10"``), split ``"train"`` or ``"test"``, with the whole
    split as ``.images`` / ``.targets`` tensors.  Training augmentation (random crop, flip on CIFAR-10) is
    done per batch on the device by :mod:`nblib.data.loader`.  ``digits`` ignores ``data_root`` and
    ``download``; ``cifar10`` requires ``data_root``."""
    check_split(split)
    if name == "digits":
        return DigitsCIFARLike(split)
    if name == "cifar10":
        if data_root is None:
            raise ValueError(
                "cifar10 needs data_root (the folder that holds or will hold "
                "'cifar-10-batches-py')")
        return load_cifar10(data_root, train=(split == "train"), download=download)
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


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
