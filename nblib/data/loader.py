"""The training data path: the whole data set as one tensor on the training device, augmented there per batch.

Liang & Huang (AAAI 2021) train every CIFAR-10 model with the standard augmentation, a random 32x32 crop of
the image zero-padded by 4 pixels on each side followed by a horizontal flip with probability 1/2, at batch
128.  A PIL-transform ``DataLoader`` cannot feed a large GPU at that batch size; here instead

* the training and test images live in ONE tensor each on the training device (:func:`device_tensors`;
  ``uint8`` for CIFAR-10, 3 bytes per pixel, ``float32`` in ``[0, 1]`` for the digits stand-in);
* epoch ``e`` of a run with seed ``s`` draws everything random from one ``torch.Generator`` on the CPU
  seeded with :func:`epoch_seed` ``(s, e) = s * 2**16 + e``: first the order ``torch.randperm(N)``, then per
  image (in that order) the crop offsets ``dy, dx`` uniform in ``{0, ..., 2 * pad}`` and the flip bit; these
  ``3 N`` small integers go to the device once per epoch, so the batches are the same on every device and a
  run resumed at an epoch boundary sees exactly the batches of an uninterrupted one, whatever the global RNG;
* each batch is gathered, cropped, flipped (:func:`crop_flip`, one vectorised indexing operation, no loop over
  images), converted to ``float32`` in ``[0, 1]`` (:func:`to_float`: ``uint8 / 255``) and optionally put in
  ``channels_last`` memory format, all on the device.

Output pixel ``(i, c, r, q)`` of :func:`crop_flip` is ``x[i, c, r + dy_i - pad, q' + dx_i - pad]`` with
``q' = W - 1 - q`` when image ``i`` is flipped (else ``q' = q``), and 0 where that index falls outside the
image: exactly ``hflip(crop(pad(x_i, pad), dy_i, dx_i, H, W))`` as torchvision computes it image by image.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch

__all__ = ["EVAL_BATCH", "PAD", "HFLIP", "flips", "epoch_seed", "device_tensors", "to_float", "crop_flip",
           "subset_indices", "epoch_draws", "TrainBatches", "eval_batches"]

#: Images per forward pass when evaluating on a device tensor (no gradients, eval-mode BatchNorm: the
#: batch size does not change the result beyond floating-point summation order).
EVAL_BATCH = 1000
#: Zero padding of the random crop on each side (pixels), as in the paper's CIFAR-10 augmentation.
PAD = 4

#: Whether the training augmentation of a data set flips left-right: CIFAR-10 yes (the paper's augmentation);
#: digits no (a mirrored digit is another symbol, or none).
HFLIP = {"cifar10": True, "digits": False}

_SEED_BITS = 16


def flips(dataset: str) -> bool:
    """:data:`HFLIP` of ``dataset``; an unknown name raises ValueError."""
    if dataset not in HFLIP:
        raise ValueError(f"no augmentation rule for data set {dataset!r}; add it to nblib.data.loader.HFLIP "
                         f"(known: {', '.join(HFLIP)})")
    return HFLIP[dataset]


def epoch_seed(seed: int, epoch: int) -> int:
    """``seed * 2**16 + epoch``: the seed of epoch ``epoch``'s generator, for ``0 <= seed, epoch < 2**16``.
    Distinct pairs give distinct seeds below ``2**32`` (torch's CPU generator keeps only the low 32 bits of
    a seed, so a wider encoding would repeat data orders)."""
    seed, epoch = int(seed), int(epoch)
    limit = 2 ** _SEED_BITS
    if not 0 <= seed < limit:
        raise ValueError(f"seed must lie in [0, {limit}) for the data order, got {seed}; use a smaller seed")
    if not 0 <= epoch < limit:
        raise ValueError(f"epoch must lie in [0, {limit}), got {epoch}")
    return seed * limit + epoch


def device_tensors(dataset, device, indices: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, targets)`` of ``dataset`` (rows ``indices`` only, when given) as tensors on ``device``.

    ``dataset`` must expose ``.images`` (``N x C x H x W``, ``uint8`` or ``float32`` in ``[0, 1]``) and
    ``.targets`` (``N`` int labels), as every data set of ``nblib.data.get_dataset`` does.
    """
    missing = [a for a in ("images", "targets") if not hasattr(dataset, a)]
    if missing:
        raise TypeError(f"{type(dataset).__name__} has no {' / '.join('.' + a for a in missing)}; the device data "
                        "path needs the whole split as tensors: pass a data set of "
                        "nblib.data.get_dataset(name, split, root)")
    images = torch.as_tensor(dataset.images)
    targets = torch.as_tensor(dataset.targets)
    if images.dim() != 4 or images.dtype not in (torch.uint8, torch.float32):
        raise ValueError(f"dataset.images must be an N x C x H x W uint8 or float32 tensor, got "
                         f"{images.dtype} of shape {tuple(images.shape)}")
    if targets.shape != images.shape[:1]:
        raise ValueError(f"dataset.targets has shape {tuple(targets.shape)}; expected ({images.shape[0]},)")
    if indices is not None:
        images, targets = images[indices], targets[indices]
    return images.to(device).contiguous(), targets.to(device=device, dtype=torch.int64)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """``float32`` pixels in ``[0, 1]``: ``x / 255`` for ``uint8`` (as ``ToTensor`` does), ``x`` itself for
    ``float32``."""
    if x.dtype == torch.uint8:
        return x.float().div_(255)
    if x.dtype == torch.float32:
        return x
    raise ValueError(f"images must be uint8 or float32, got {x.dtype}")


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: Optional[torch.Tensor] = None,
              pad: int = PAD) -> torch.Tensor:
    """Crop image ``i`` of ``x`` (``B x C x H x W``, any dtype) at offset ``(dy_i, dx_i)`` of its zero-padded
    ``(H + 2 pad) x (W + 2 pad)`` version and mirror it left-right where ``flip_i`` is true (``flip=None``: no
    flip).  Offsets are integers in ``[0, 2 pad]``; ``(pad, pad)`` without flip is the identity.  One gather
    on ``x``'s device; the result has ``x``'s shape and dtype."""
    b, c, h, w = x.shape
    dev = x.device
    dy, dx = dy.to(dev, torch.int64), dx.to(dev, torch.int64)
    if dy.shape != (b,) or dx.shape != (b,):
        raise ValueError(f"dy and dx must have shape ({b},), got {tuple(dy.shape)} and {tuple(dx.shape)}")
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = dy[:, None] + torch.arange(h, device=dev)                  # B x H rows of the padded image
    cols = torch.arange(w, device=dev).expand(b, w)
    if flip is not None:
        cols = torch.where(flip.to(dev, torch.bool)[:, None], cols.flip(1), cols)
    cols = dx[:, None] + cols                                          # B x W columns of the padded image
    batch = torch.arange(b, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def subset_indices(n: int, size: Optional[int], seed: int) -> Optional[torch.Tensor]:
    """The ``size`` training images of a ``train_subset`` run: the first ``size`` entries of
    ``torch.randperm(n)`` under a generator seeded with ``seed``, sorted (None when ``size`` is None)."""
    if size is None:
        return None
    if not 1 <= size <= n:
        raise ValueError(f"train_subset={size} must lie in [1, {n}] (the training images of this data set)")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:size].sort().values


def epoch_draws(n: int, seed: int, epoch: int, augment: bool, flip: bool, pad: int = PAD) -> dict:
    """Everything random of one epoch, drawn on the CPU from a generator seeded with
    :func:`epoch_seed` ``(seed, epoch)`` in this order: ``order = randperm(n)``, then (when ``augment``)
    ``dy``, ``dx`` (``randint(0, 2 pad + 1, (n,))`` each) and (when also ``flip``) ``flip``
    (``randint(0, 2, (n,))``, as bool).  Entry ``k`` of ``dy, dx, flip`` belongs to the ``k``-th image of
    ``order``.  Absent draws are None."""
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    out = {"order": torch.randperm(n, generator=g), "dy": None, "dx": None, "flip": None}
    if augment:
        out["dy"] = torch.randint(0, 2 * pad + 1, (n,), generator=g)
        out["dx"] = torch.randint(0, 2 * pad + 1, (n,), generator=g)
        if flip:
            out["flip"] = torch.randint(0, 2, (n,), generator=g).bool()
    return out


class TrainBatches:
    """Shuffled, augmented training batches from device tensors (see the module docstring).

    ``TrainBatches(images, targets, batch_size, seed=s, augment=True, flip=True)``; ``batches.epoch(e)``
    yields ``(x, y)`` with ``x`` float32 ``B x C x H x W`` in ``[0, 1]`` (``channels_last`` when asked) and
    ``y`` int64, on the device of ``images``: ``ceil(N / batch_size)`` batches, the last one smaller when
    ``batch_size`` does not divide ``N`` (nothing is dropped); every image appears exactly once per epoch.
    ``flip=False`` keeps the random crop only (digits: a mirrored digit is another symbol).
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int, *, seed: int,
                 augment: bool, flip: bool, channels_last: bool = False, pad: int = PAD):
        if images.shape[0] != targets.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {targets.shape[0]} targets")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.targets = images, targets
        self.batch_size, self.seed, self.pad = int(batch_size), int(seed), int(pad)
        self.augment, self.flip, self.channels_last = bool(augment), bool(flip), bool(channels_last)

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-self.images.shape[0] // self.batch_size)

    @property
    def n(self) -> int:
        """Training images."""
        return self.images.shape[0]

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch ``epoch`` (0-based)."""
        dev = self.images.device
        draws = {k: (v.to(dev, non_blocking=True) if v is not None else None)
                 for k, v in epoch_draws(self.n, self.seed, epoch, self.augment, self.flip, self.pad).items()}
        for start in range(0, self.n, self.batch_size):
            sl = slice(start, start + self.batch_size)
            idx = draws["order"][sl]
            x = self.images[idx]
            if self.augment:
                flip = draws["flip"][sl] if draws["flip"] is not None else None
                x = crop_flip(x, draws["dy"][sl], draws["dx"][sl], flip, self.pad)
            x = to_float(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.targets[idx]


def eval_batches(images: torch.Tensor, targets: torch.Tensor, batch_size: int = EVAL_BATCH,
                 channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of ``batch_size`` images in their stored order, ``x`` float32 in ``[0, 1]``
    (``channels_last`` when asked), no augmentation."""
    for start in range(0, images.shape[0], batch_size):
        x = to_float(images[start:start + batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, targets[start:start + batch_size]
