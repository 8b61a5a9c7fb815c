"""scikit-learn's handwritten digits shaped like CIFAR-10: the offline stand-in of the tests and smoke runs.

1797 real grey 8x8 images shipped inside scikit-learn (nothing is downloaded), upsampled to ``3 x 32 x 32``
float32 tensors in ``[0, 1]`` with labels ``0..9``, split once (stratified, fixed seed) into 1437 training and
360 test images.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["DIGITS_SPLIT_SEED", "DIGITS_TEST_SIZE", "SPLITS", "check_split", "DigitsCIFARLike"]

#: The digits train/test split is fixed (stratified, this seed, this test
#: fraction) and never depends on a user seed, so every run and every
#: notebook sees the same 1437 training and 360 test images.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 0.2

#: The two splits of every data set.
SPLITS = ("train", "test")


def check_split(split: str) -> None:
    """Raise ValueError unless ``split`` is ``"train"`` or ``"test"``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


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
    """

    n_classes = 10
    classes = tuple(str(i) for i in range(10))

    def __init__(self, split: str = "train") -> None:
        check_split(split)
        from sklearn.datasets import load_digits

        digits = load_digits()
        train_idx, test_idx = _digits_split_indices()
        idx = train_idx if split == "train" else test_idx
        imgs = torch.from_numpy(digits.images[idx].astype(np.float32)) / 16.0
        imgs = F.interpolate(imgs.unsqueeze(1), size=(32, 32), mode="bilinear",
                             align_corners=False).clamp_(0.0, 1.0)
        self.split = split
        self.indices = torch.from_numpy(idx)  # rows of load_digits()
        self.images = imgs.expand(-1, 3, -1, -1).contiguous()
        self.targets = torch.from_numpy(digits.target[idx].astype(np.int64))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        return self.images[i], int(self.targets[i])

    def __repr__(self) -> str:
        return f"DigitsCIFARLike(split={self.split!r}, n={len(self)})"
