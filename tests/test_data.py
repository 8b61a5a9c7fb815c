"""Tests for nblib.data and nblib.data.digits (offline: digits ship with scikit-learn; the CIFAR-10 reader is
tested on a CIFAR-format fixture in tests/test_cifar10.py)."""

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nblib import data
from nblib.data import DigitsCIFARLike, eval_subset, get_dataset, load_cifar10


@pytest.fixture(scope="module")
def digits_train():
    return DigitsCIFARLike("train")


@pytest.fixture(scope="module")
def digits_test():
    return DigitsCIFARLike("test")


# --------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------
def test_digits_sizes_shapes_ranges(digits_train, digits_test):
    assert len(digits_train) == 1437 and len(digits_test) == 360
    for ds in (digits_train, digits_test):
        assert ds.images.shape == (len(ds), 3, 32, 32)
        assert ds.images.dtype == torch.float32
        assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
        assert ds.images.max() > 0.9  # not accidentally left in 0..1/16
        # grey: three identical channels
        assert torch.equal(ds.images[:, 0], ds.images[:, 1])
        assert torch.equal(ds.images[:, 0], ds.images[:, 2])
        img, label = ds[5]
        assert img.shape == (3, 32, 32) and img.dtype == torch.float32
        assert isinstance(label, int) and 0 <= label <= 9
        assert set(ds.targets.tolist()) == set(range(10))


def test_digits_preprocessing_matches_spec(digits_test):
    from sklearn.datasets import load_digits

    raw = load_digits()
    row = int(digits_test.indices[7])
    img = torch.tensor(raw.images[row], dtype=torch.float32)[None, None] / 16.0
    expected = F.interpolate(img, size=(32, 32), mode="bilinear",
                             align_corners=False).clamp(0, 1)[0, 0]
    x, y = digits_test[7]
    assert torch.allclose(x[0], expected, atol=1e-7)
    assert y == int(raw.target[row])


def test_digits_split_fixed_disjoint_and_seed_independent(digits_train, digits_test):
    tr, te = set(digits_train.indices.tolist()), set(digits_test.indices.tolist())
    assert not tr & te and len(tr | te) == 1797
    # the split ignores global seeds
    torch.manual_seed(123)
    np.random.seed(123)
    again = DigitsCIFARLike("test")
    assert torch.equal(again.indices, digits_test.indices)
    assert torch.equal(again.images, digits_test.images)
    assert torch.equal(again.targets, digits_test.targets)


def test_digits_split_is_stratified(digits_train, digits_test):
    from sklearn.datasets import load_digits

    full = np.bincount(load_digits().target, minlength=10)
    test_counts = np.bincount(digits_test.targets.numpy(), minlength=10)
    train_counts = np.bincount(digits_train.targets.numpy(), minlength=10)
    assert np.array_equal(test_counts + train_counts, full)
    # stratified: every class has ~20 % of its images in the test split
    assert np.all(np.abs(test_counts - 0.2 * full) <= 1)
    assert test_counts.min() >= 35 and test_counts.max() <= 37


def test_dataset_is_picklable(digits_test):
    clone = pickle.loads(pickle.dumps(get_dataset("digits", "train")))
    assert len(clone) == 1437
    again = pickle.loads(pickle.dumps(digits_test))
    assert torch.equal(again.images, digits_test.images)


# --------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------
def test_cifar_missing_files_error_names_path(tmp_path):
    expected = str(tmp_path / "cifar-10-batches-py")
    with pytest.raises(FileNotFoundError) as exc:
        load_cifar10(tmp_path, train=False, download=False)
    msg = str(exc.value)
    assert expected in msg and "download=True" in msg
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        get_dataset("cifar10", "train", data_root=str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded/created


def test_cifar_needs_root():
    with pytest.raises(ValueError, match="data_root"):
        get_dataset("cifar10", "test")


# --------------------------------------------------------------------------
# get_dataset
# --------------------------------------------------------------------------
def test_get_dataset_unknown_name_and_split():
    with pytest.raises(ValueError) as exc:
        get_dataset("mnist", "train")
    assert "digits" in str(exc.value) and "cifar10" in str(exc.value)
    with pytest.raises(ValueError, match="split"):
        get_dataset("digits", "val")
    assert set(data.DATASETS) == {"digits", "cifar10"}


# --------------------------------------------------------------------------
# eval_subset
# --------------------------------------------------------------------------
def test_eval_subset_deterministic(digits_test):
    x1, y1 = eval_subset(digits_test, 50, seed=0)
    x2, y2 = eval_subset(digits_test, 50, seed=0)
    assert x1.shape == (50, 3, 32, 32) and y1.shape == (50,)
    assert x1.dtype == torch.float32 and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # independent of the global RNG
    torch.manual_seed(999)
    x3, _ = eval_subset(digits_test, 50, seed=0)
    assert torch.equal(x1, x3)
    # another seed -> another subset
    x4, _ = eval_subset(digits_test, 50, seed=1)
    assert not torch.equal(x1, x4)
    # the points are genuine test points with their labels
    rows = {tuple(digits_test.images[i].flatten()[::7].tolist()): int(digits_test.targets[i])
            for i in range(len(digits_test))}
    for xi, yi in zip(x1, y1):
        assert rows[tuple(xi.flatten()[::7].tolist())] == int(yi)
    # nested: a larger subset with the same seed contains the smaller one
    xl, _ = eval_subset(digits_test, 100, seed=0)
    big = {tuple(v.flatten()[::7].tolist()) for v in xl}
    assert all(tuple(v.flatten()[::7].tolist()) in big for v in x1)
    # whole set allowed
    xa, ya = eval_subset(digits_test, len(digits_test), seed=5)
    assert torch.equal(ya, digits_test.targets)


@pytest.mark.parametrize("n", [0, -1, 361])
def test_eval_subset_bad_sizes(digits_test, n):
    with pytest.raises(ValueError):
        eval_subset(digits_test, n, seed=0)
