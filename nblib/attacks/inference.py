"""Running a classifier for measurement: its device, eval mode with every flag restored, batched
predictions and clean accuracy.  Shared by :mod:`nblib.attacks.pgd`, :mod:`nblib.attacks.autoattack` and
:mod:`nblib.attacks.lipschitz`."""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

__all__ = ["model_device", "eval_mode", "predict"]


def model_device(model: nn.Module, device=None) -> torch.device:
    """``device`` if given, else the device of the model's first parameter (or buffer), else the CPU."""
    if device is not None:
        return torch.device(device)
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Put ``model`` in eval mode; restore every submodule's own flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, f in flags:
            m.training = f


def predict(model: nn.Module, x: torch.Tensor, batch_size: int,
            device: torch.device) -> tuple[torch.Tensor, int]:
    """Predicted labels (on x's device) and the number of classes."""
    preds, n_cls = [], 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out = model(x[i:i + batch_size].to(device))
            n_cls = out.shape[1]
            preds.append(out.argmax(1).to(x.device))
    return torch.cat(preds), n_cls
