"""Tests for nblib.data.loader: device-tensor batches, vectorised crop + flip against torchvision image by image."""
import pytest
import torch
import torchvision.transforms.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from nblib.data import DATASETS, DigitsCIFARLike
from nblib.data.loader import (EVAL_BATCH, HFLIP, PAD, TrainBatches, crop_flip, device_tensors, epoch_draws, epoch_seed,
                               eval_batches, flips, subset_indices, to_float)

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_crop_flip(x, dy, dx, flip, pad):
    """torchvision, one image at a time: zero pad, crop at (dy, dx), mirror when flip."""
    out = []
    for i in range(x.shape[0]):
        img = TF.crop(TF.pad(x[i], [pad], fill=0), int(dy[i]), int(dx[i]), x.shape[2], x.shape[3])
        out.append(TF.hflip(img) if flip is not None and bool(flip[i]) else img)
    return torch.stack(out)


def uint8_images(n, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


class Split:
    """A data set exposing the contract of nblib.data.get_dataset (the split as .images / .targets)."""

    def __init__(self, images, targets):
        self.images, self.targets = images, targets


# --------------------------------------------------------------------------- crop + flip
@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 6), c=st.integers(1, 4), h=st.integers(1, 12), w=st.integers(1, 12),
       pad=st.integers(0, 5), use_flip=st.booleans(), uint8=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_crop_flip_equals_torchvision_per_image(b, c, h, w, pad, use_flip, uint8, seed):
    g = torch.Generator().manual_seed(seed)
    x = uint8_images(b, c, h, w, seed) if uint8 else torch.rand(b, c, h, w, generator=g)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    flip = torch.randint(0, 2, (b,), generator=g).bool() if use_flip else None
    out = crop_flip(x, dy, dx, flip, pad)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert torch.equal(out, reference_crop_flip(x, dy, dx, flip, pad))


def test_crop_flip_identity_extremes_and_bad_shapes():
    x = uint8_images(3, h=5, w=7)
    centre = torch.full((3,), PAD)
    assert torch.equal(crop_flip(x, centre, centre), x)
    assert torch.equal(crop_flip(x, centre, centre, torch.ones(3, dtype=torch.bool)), x.flip(-1))
    # offset 0 shifts the image down/right by pad: the first pad rows/columns are zero padding
    zero = torch.zeros(3, dtype=torch.int64)
    out = crop_flip(x, zero, zero)
    assert (out[:, :, :PAD] == 0).all() and (out[:, :, :, :PAD] == 0).all()
    assert torch.equal(out[:, :, PAD:, PAD:], x[:, :, :5 - PAD, :7 - PAD])
    with pytest.raises(ValueError, match="shape"):
        crop_flip(x, zero[:2], zero)


def test_to_float_equals_to_tensor():
    x = uint8_images(4)
    ref = torch.stack([TF.to_tensor(img.permute(1, 2, 0).numpy()) for img in x])  # HWC uint8 -> CHW / 255
    assert torch.equal(to_float(x), ref)
    f = torch.rand(2, 3, 4, 4)
    assert to_float(f) is f
    with pytest.raises(ValueError, match="uint8 or float32"):
        to_float(f.double())


# --------------------------------------------------------------------------- epochs
def _epoch(batches, e):
    return [(x.clone(), y.clone()) for x, y in batches.epoch(e)]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_every_image_once_per_epoch_last_batch_kept():
    n, bs = 103, 16
    images = uint8_images(n, h=8, w=8)
    batches = TrainBatches(images, torch.arange(n), bs, seed=3, augment=True, flip=True)
    assert len(batches) == 7 and batches.n == n
    for e in range(3):
        got = _epoch(batches, e)
        assert [y.numel() for _, y in got] == [16] * 6 + [7]
        ys = torch.cat([y for _, y in got])
        assert torch.equal(ys.sort().values, torch.arange(n))
        assert not torch.equal(ys, torch.arange(n))  # shuffled


def test_batches_are_the_documented_draws():
    """Batch k of epoch e = crop/flip (torchvision, per image) of the images in the order of a generator
    seeded with seed * 2**16 + e: randperm, then dy, dx, flip."""
    n, bs, seed, e = 50, 16, 7, 2
    images, targets = uint8_images(n, h=10, w=9), torch.randint(0, 10, (n,))
    got = _epoch(TrainBatches(images, targets, bs, seed=seed, augment=True, flip=True), e)
    g = torch.Generator().manual_seed(seed * 2 ** 16 + e)
    order = torch.randperm(n, generator=g)
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=g)
    flip = torch.randint(0, 2, (n,), generator=g).bool()
    ref = reference_crop_flip(images[order], dy, dx, flip, PAD).float() / 255
    assert torch.equal(torch.cat([x for x, _ in got]), ref)
    assert torch.equal(torch.cat([y for _, y in got]), targets[order])
    draws = epoch_draws(n, seed, e, augment=True, flip=True)
    assert all(torch.equal(draws[k], v) for k, v in dict(order=order, dy=dy, dx=dx, flip=flip).items())


def test_same_seed_same_batches_other_epoch_or_seed_differs_global_rng_unused():
    images, targets = uint8_images(40, h=8, w=8), torch.randint(0, 10, (40,))
    make = lambda seed: TrainBatches(images, targets, 8, seed=seed, augment=True, flip=True)  # noqa: E731
    torch.manual_seed(1)
    a = _epoch(make(0), 4)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = _epoch(make(0), 4)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was not touched
    assert _same(a, b)
    assert not _same(a, _epoch(make(0), 5))
    assert not _same(a, _epoch(make(1), 4))


def test_no_augment_and_crop_only():
    n = 30
    images = uint8_images(n, h=8, w=8)
    plain = _epoch(TrainBatches(images, torch.arange(n), 10, seed=0, augment=False, flip=True), 0)
    order = torch.cat([y for _, y in plain])
    assert torch.equal(torch.cat([x for x, _ in plain]), to_float(images[order]))
    crop = _epoch(TrainBatches(images, torch.arange(n), 10, seed=0, augment=True, flip=False), 0)
    d = epoch_draws(n, 0, 0, augment=True, flip=False)
    assert d["flip"] is None
    ref = reference_crop_flip(images[d["order"]], d["dy"], d["dx"], None, PAD).float() / 255
    assert torch.equal(torch.cat([x for x, _ in crop]), ref)


def test_draws_cover_every_offset_and_flip_half():
    d = epoch_draws(4000, 0, 0, augment=True, flip=True)
    for k in ("dy", "dx"):
        counts = torch.bincount(d[k], minlength=2 * PAD + 1)
        assert counts.numel() == 2 * PAD + 1 and counts.min() > 4000 / 9 * 0.8 and counts.max() < 4000 / 9 * 1.2
    assert 0.45 < d["flip"].float().mean() < 0.55


def test_channels_last_same_values():
    images = uint8_images(12, h=8, w=8)
    a = _epoch(TrainBatches(images, torch.arange(12), 5, seed=0, augment=True, flip=True), 0)
    b = _epoch(TrainBatches(images, torch.arange(12), 5, seed=0, augment=True, flip=True, channels_last=True), 0)
    assert _same(a, b)
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in b)


def test_digits_float_images_crop_without_flip():
    digits = DigitsCIFARLike("train")
    images, targets = device_tensors(digits, "cpu")
    assert images.dtype == torch.float32 and targets.dtype == torch.int64 and images.shape == (1437, 3, 32, 32)
    batches = TrainBatches(images, targets, 128, seed=0, augment=True, flip=False)
    got = _epoch(batches, 0)
    d = epoch_draws(1437, 0, 0, augment=True, flip=False)
    x = torch.cat([x for x, _ in got])
    assert torch.equal(x, reference_crop_flip(digits.images[d["order"]], d["dy"], d["dx"], None, PAD))
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_batches_equal_cpu_batches():
    images, targets = uint8_images(300), torch.randint(0, 10, (300,))
    cpu = _epoch(TrainBatches(images, targets, 128, seed=0, augment=True, flip=True), 1)
    gpu = _epoch(TrainBatches(images.cuda(), targets.cuda(), 128, seed=0, augment=True, flip=True), 1)
    assert _same(cpu, [(x.cpu(), y.cpu()) for x, y in gpu])


# --------------------------------------------------------------------------- data sets, subsets, evaluation
def test_device_tensors_contract_and_errors():
    images, targets = uint8_images(10, h=4, w=4), torch.arange(10)
    x, y = device_tensors(Split(images, targets.tolist()), "cpu", indices=torch.tensor([2, 5]))
    assert torch.equal(x, images[[2, 5]]) and torch.equal(y, torch.tensor([2, 5])) and y.dtype == torch.int64
    with pytest.raises(TypeError, match="get_dataset"):
        device_tensors(object(), "cpu")
    with pytest.raises(ValueError, match="uint8 or float32"):
        device_tensors(Split(images.double(), targets), "cpu")
    with pytest.raises(ValueError, match="targets"):
        device_tensors(Split(images, targets[:3]), "cpu")


def test_subset_indices():
    idx = subset_indices(100, 10, seed=4)
    ref = torch.randperm(100, generator=torch.Generator().manual_seed(4))[:10].sort().values
    assert torch.equal(idx, ref) and subset_indices(100, None, 4) is None
    assert not torch.equal(idx, subset_indices(100, 10, seed=5))
    with pytest.raises(ValueError, match="train_subset"):
        subset_indices(100, 101, 0)


def test_eval_batches_cover_the_set_in_order():
    images, targets = uint8_images(25, h=4, w=4), torch.arange(25)
    got = list(eval_batches(images, targets, 10))
    assert [y.numel() for _, y in got] == [10, 10, 5]
    assert torch.equal(torch.cat([x for x, _ in got]), to_float(images))
    assert torch.equal(torch.cat([y for _, y in got]), targets)
    assert EVAL_BATCH >= 512


def test_epoch_seed_gives_distinct_orders():
    pairs = [(s, e) for s in (0, 1, 2, 2 ** 16 - 1) for e in (0, 1, 119, 2 ** 16 - 1)]
    seeds = {epoch_seed(s, e) for s, e in pairs}
    assert len(seeds) == len(pairs) and max(seeds) < 2 ** 32
    # distinct generator streams (torch's CPU generator keeps the low 32 bits of a seed)
    orders = {tuple(torch.randperm(20, generator=torch.Generator().manual_seed(v)).tolist()) for v in seeds}
    assert len(orders) == len(pairs)
    with pytest.raises(ValueError, match="seed"):
        epoch_seed(2 ** 16, 0)
    with pytest.raises(ValueError, match="seed"):
        epoch_seed(-1, 0)
    with pytest.raises(ValueError, match="epoch"):
        epoch_seed(0, -1)


def test_flip_rule_per_data_set():
    assert set(HFLIP) == set(DATASETS)
    assert flips("cifar10") is True and flips("digits") is False
    with pytest.raises(ValueError, match="HFLIP"):
        flips("mnist")
