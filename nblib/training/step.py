"""One SGD step of a training run (``nblib.training.train``): the loss of ``nblib.training.adversarial``, its
backward pass, the regulariser's step and the optimiser's, queued on the device without reading anything back
to the host, so that on a GPU the host never waits for the device inside a step (loss and accuracy are summed
on the device by the caller and read once per epoch)."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from nblib.training.adversarial import AdvLoss, adversarial_loss
from nblib.training.compiled import begin_step
from nblib.training.regularizers import AFTER_OPTIMIZER_STEP, BEFORE_OPTIMIZER_STEP

__all__ = ["train_step"]


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, reg, cfg: dict, x: torch.Tensor,
               y: torch.Tensor, global_step: int, autocast: Callable = contextlib.nullcontext) -> AdvLoss:
    """One SGD step on the loss of ``cfg["adv_mode"]`` (``cfg["adv_preset"]``) for the batch ``(x, y)``, with
    the regulariser ``reg`` (None, or an object of ``nblib.training.regularizers``) stepped before or after
    ``optimizer.step`` as its ``hook`` says; returns the :class:`~nblib.training.adversarial.AdvLoss`.

    ``global_step`` counts the optimiser steps once this one is done (1 after the first): singular value
    clipping clips when it is a multiple of ``clip_every`` (a host-side integer, no device read).  Nothing
    here calls ``.item()``, ``int()`` or ``bool()`` on a device tensor (a test runs every regulariser and
    adversarial mode on the ``meta`` device, where any such read raises).

    ``model`` runs the forward passes (the loss and the PGD attack inside it); it may be the compiled module of
    ``nblib.training.compiled.compile_model(m, cfg["compile"])``, whose parameters are ``m``'s (the optimiser's and
    the regulariser's).  With ``compile="cudagraphs"`` the step begins with
    :func:`~nblib.training.compiled.begin_step`; the returned logits are valid until the next step begins."""
    begin_step(cfg["compile"])
    with autocast():
        out = adversarial_loss(cfg["adv_mode"], model, x, y, preset=cfg["adv_preset"], return_details=True)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if reg is not None and reg.hook == BEFORE_OPTIMIZER_STEP:
        reg.step()
    optimizer.step()
    if reg is not None and reg.hook == AFTER_OPTIMIZER_STEP:
        reg.step(global_step)
    return out
