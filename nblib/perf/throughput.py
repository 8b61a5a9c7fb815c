"""Training throughput of the old and the new data path, and the GPU-hours of the paper profile projected from it.

* **old path** -- what ``nblib.training.train`` ran before ``nblib.data.loader``: a ``DataLoader`` over a data set
  that turns
  each ``H x W x C`` uint8 image into a PIL image and applies ``RandomCrop(32, padding=4)``,
  ``RandomHorizontalFlip()`` and ``ToTensor()`` (as ``torchvision.datasets.CIFAR10`` with the old
  ``cifar10_transform``), float32 batches copied to the device, NCHW, no autocast.
* **new path** -- :class:`nblib.data.loader.TrainBatches`: the uint8 set on the device, crop + flip + conversion there,
  optionally ``channels_last``, bf16 autocast and a compiled forward (``compile``: a run's ``cfg["compile"]``).

:func:`measure_step` times ``n`` training steps (after warm-up steps, synchronised): a plain SGD step
(cross-entropy, backward, ``optimizer.step``) or one PGD-AT step (PGD-10 at the ``standard`` preset, then the
SGD step), and returns images per second.  :func:`measure_eval` times what one run does besides training: a
forward pass over the test set, the exact l_inf and l1 norms of every layer (both per epoch), and the
per-image cost of a forward and of a forward + backward w.r.t. the input in eval mode, from which
:func:`autoattack_seconds` models standard AutoAttack, and :func:`measure_regularizer` times what a
regulariser adds (norm decay per step, one SVC clip).  :mod:`nblib.perf.cost` turns these rates into the hours of
a profile's runs.
"""
from __future__ import annotations

import io
import math
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from nblib.training.adversarial import adversarial_loss
from nblib.training.compiled import begin_step, check_compile, compile_model
from nblib.attacks.autoattack import AA_BATCH
from nblib.data.loader import EVAL_BATCH, TrainBatches, eval_batches
from nblib.models import build
from nblib.norms import layer_norms
from nblib.training.regularizers import make_optimizer
from nblib.training.run_config import DEFAULT_CFG, autocast_factory, backend_flags
from nblib.perf.timing import time_calls

__all__ = ["CIFAR_TRAIN", "CIFAR_TEST", "COMPILE_WARMUP", "AA_GRADS_ALL", "AA_GRADS_SURVIVORS", "AA_FORWARDS_SURVIVORS",
           "synthetic_cifar", "PILImages", "old_loader", "new_batches", "measure_step", "measure_eval",
           "measure_regularizer", "autoattack_seconds"]

#: CIFAR-10 training and test images.
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
#: Standard AutoAttack (Croce & Hein 2020, ``version="standard"``, l_inf) per attacked point: APGD-CE runs
#: 100 iterations (one gradient each) on every point; on the points it does not break, APGD-T runs 9 target
#: classes x 100 iterations, FAB-T 9 x 100 iterations (one gradient and one forward each) and Square up to
#: 5000 queries (one forward each).  Points broken early stop early, so these counts bound the cost above.
AA_GRADS_ALL = 100
AA_GRADS_SURVIVORS = 9 * 100 + 9 * 100
AA_FORWARDS_SURVIVORS = 9 * 100 + 5000


def synthetic_cifar(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random uint8 CIFAR-shaped images (``n x 3 x 32 x 32``) and int64 labels in ``0..9``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g))


class PILImages(Dataset):
    """The old per-image path: image ``i`` (``images`` is ``N x C x H x W`` uint8) as a PIL image through
    ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``, and its label as an int."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor):
        from torchvision import transforms

        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()  # N x H x W x C, as CIFAR10.data
        self.targets = targets.tolist()
        self.transform = transforms.Compose([transforms.RandomCrop(32, padding=4),
                                             transforms.RandomHorizontalFlip(), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def old_loader(images: torch.Tensor, targets: torch.Tensor, batch_size: int, device, num_workers: int = 0,
               seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of the old path, moved to ``device`` (endless: the loader restarts after each epoch)."""
    dev = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(PILImages(images, targets), batch_size=batch_size, shuffle=True, generator=g,
                        num_workers=num_workers, pin_memory=dev.type == "cuda", drop_last=False,
                        persistent_workers=num_workers > 0)
    while True:
        for x, y in loader:
            yield x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)


def new_batches(images: torch.Tensor, targets: torch.Tensor, batch_size: int, device,
                channels_last: bool = False, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of :class:`nblib.data.loader.TrainBatches` over the set copied to ``device`` (endless)."""
    batches = TrainBatches(images.to(device), targets.to(device), batch_size, seed=seed, augment=True, flip=True,
                           channels_last=channels_last)
    epoch = 0
    while True:
        yield from batches.epoch(epoch)
        epoch += 1


def _model(name: str, device: torch.device, channels_last: bool, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build(name, num_classes=10).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


#: Untimed steps a compiled step needs before its rate is its steady state: ``"default"`` compiles in the first
#: step; CUDA graph trees run the first step eagerly, record the graphs in the second, replay from the third.
COMPILE_WARMUP = {"none": 0, "default": 1, "cudagraphs": 3}


def measure_step(model_name: str, batches: Optional[Iterator], mode: str, n: int, device, warmup: int = 1,
                 precision: str = "fp32", channels_last: bool = False, compile: str = "none") -> float:
    """Images per second of ``n`` training steps of ``mode`` (``"plain"`` or an adversarial mode of
    ``nblib.training.adversarial`` at the ``standard`` preset: PGD-10) on batches from ``batches``, after ``warmup``
    untimed steps; the data path's time is included.  ``precision``: as a run's ``cfg["precision"]`` (the
    training step's autocast and, on CUDA, the float32 convolution / matmul flags of
    :func:`nblib.training.run_config.backend_flags`).  ``compile``: as a run's ``cfg["compile"]``
    (:mod:`nblib.training.compiled`: the forward passes, PGD's included, compiled; ``"cudagraphs"`` on CUDA
    only); at least :data:`COMPILE_WARMUP` untimed steps first, so compilation and CUDA graph recording are not
    timed.  ``model_name=None``: the data path alone (batches drawn, nothing computed)."""
    dev = torch.device(device)
    check_compile(compile, dev.type)
    warmup = max(warmup, COMPILE_WARMUP[compile])
    if model_name is None:
        step = lambda x, y: None  # noqa: E731
    else:
        model = _model(model_name, dev, channels_last).train()
        forward = compile_model(model, compile)
        opt = make_optimizer(model, DEFAULT_CFG["lr"], momentum=DEFAULT_CFG["momentum"])
        autocast = autocast_factory(precision, dev)

        def step(x, y):
            begin_step(compile)
            with autocast():
                loss = adversarial_loss(mode, forward, x, y, preset="standard")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    images = []

    def stream():  # the n steps are timed as one call: a rate over the stream, data-path stalls included
        for _ in range(n):
            x, y = next(batches)
            step(x, y)
            images.append(y.numel())

    with backend_flags(dev, precision, deterministic=False):
        for _ in range(warmup):
            step(*next(batches))
        seconds, _ = time_calls(stream, runs=1, device=dev, warmup=0)
    return sum(images) / seconds


def measure_eval(model_name: str, device, n_images: int = 2 * EVAL_BATCH, aa_batch: int = AA_BATCH,
                 channels_last: bool = False) -> dict:
    """Per-run costs besides the training steps, measured on random data after one untimed call each:
    ``eval_ips`` (images per second of a float32 forward pass over ``n_images`` images in batches of
    :data:`nblib.data.loader.EVAL_BATCH`), ``norms_s`` (seconds for the exact l_inf and l1 norms of every Conv2d /
    Linear layer, as every epoch computes them), ``ckpt_s`` (seconds to serialise the weights three times over:
    model, SGD momentum, norm decay's average, as a checkpoint holds them; into memory, the disk left out) and,
    at AutoAttack's batch ``aa_batch`` (at most
    ``n_images``) in eval mode, ``aa_forward_s`` / ``aa_grad_s``: seconds per image of a forward pass / of a
    forward + backward w.r.t. the input."""
    dev = torch.device(device)
    model = _model(model_name, dev, channels_last).eval()
    aa_batch = min(aa_batch, n_images)
    images, targets = synthetic_cifar(n_images, seed=1)
    images, targets = images.to(dev), targets.to(dev)

    def timed(fn):  # one call after one untimed call
        return time_calls(fn, runs=1, device=dev)[0]

    def forward_all():
        with torch.no_grad():
            for x, _ in eval_batches(images, targets, channels_last=channels_last):
                model(x)

    x_aa = torch.rand(aa_batch, 3, 32, 32, device=dev)
    y_aa = targets[:aa_batch]

    def forward_aa():
        with torch.no_grad():
            model(x_aa)

    def grad_aa():
        x = x_aa.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(x), y_aa), x)

    def norms():
        layer_norms(model, (3, 32, 32), math.inf)
        layer_norms(model, (3, 32, 32), 1)

    def checkpoint():
        state = model.state_dict()
        torch.save({"model": state, "momentum": state, "norm_decay": state}, io.BytesIO())

    return {"eval_ips": images.shape[0] / timed(forward_all), "norms_s": timed(norms), "ckpt_s": timed(checkpoint),
            "aa_forward_s": timed(forward_aa) / aa_batch, "aa_grad_s": timed(grad_aa) / aa_batch}


def measure_regularizer(model_name: str, kind: str, device, batch_size: int = DEFAULT_CFG["batch_size"],
                        runs: int = 3) -> dict:
    """What the regulariser ``kind`` adds to a run of ``model_name`` on ``device``: ``nd_s``, the seconds of one
    norm-decay step (median of ``runs``, :func:`nblib.perf.benchmark.norm_decay_cost`; norm decay only) and
    ``clip_s``, the seconds of one singular value clipping of every layer (one call after none untimed: a clip
    is long; SVC only); 0 for what ``kind`` does not do."""
    from nblib.perf.benchmark import norm_decay_cost
    from nblib.training.regularizers import build_regularizer
    from nblib.vocabulary import NORM_DECAY_P

    dev = torch.device(device)
    out = {"nd_s": 0.0, "clip_s": 0.0}
    if kind in NORM_DECAY_P:
        table = norm_decay_cost([model_name], dev, batch_size=batch_size, p=NORM_DECAY_P[kind], sgd_runs=1,
                                nd_runs=runs)
        out["nd_s"] = float(table["nd_s"].iloc[0])
    elif kind == "svc":
        svc = build_regularizer("svc", _model(model_name, dev, False), (3, 32, 32), 1.0)
        out["clip_s"] = time_calls(svc.clip_now, runs=1, device=dev, warmup=0)[0]
    return out


def autoattack_seconds(n_eval: int, aa_grad_s: float, aa_forward_s: float, survivors: float) -> float:
    """Modelled seconds of standard AutoAttack on ``n_eval`` points: ``n_eval * (AA_GRADS_ALL * g +
    survivors * (AA_GRADS_SURVIVORS * g + AA_FORWARDS_SURVIVORS * f))`` with ``g``, ``f`` the seconds per
    image of a gradient / a forward pass and ``survivors`` the fraction of points APGD-CE does not break
    (about the robust accuracy; 1 gives an upper bound)."""
    if not 0.0 <= survivors <= 1.0:
        raise ValueError(f"survivors must lie in [0, 1], got {survivors}")
    return n_eval * (AA_GRADS_ALL * aa_grad_s + survivors * (AA_GRADS_SURVIVORS * aa_grad_s
                                                             + AA_FORWARDS_SURVIVORS * aa_forward_s))
