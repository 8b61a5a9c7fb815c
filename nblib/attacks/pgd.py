"""Projected gradient descent in the l_inf ball and the logit margin.

* :func:`margin_loss` -- the one logit margin of the package, ``max_{j != y} z_j - z_y``: positive iff
  the point is misclassified (the CW loss an attacker maximises).  Its negation ``z_y - max_{j != y} z_j``
  is the "margin" of Definition 2 (robust iff > 0 on the whole ball).
* :func:`pgd_linf` -- Madry et al. PGD in the l_inf ball (sign steps, projection onto the ball and, by
  default, the ``[0, 1]`` image box), with cross-entropy or any ``loss(logits, y) -> scalar`` (e.g. the
  TRADES KL term).  Used by adversarial training (:mod:`nblib.training.adversarial`) and, without the box and with
  a per-iterate callback, by the toy attacks of :mod:`nblib.experiments.toys`.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from nblib.attacks.inference import eval_mode, model_device

__all__ = ["IMAGE_BOX", "margin_loss", "pgd_linf", "project_linf", "uniform_like", "normal_like"]

#: The pixel box ``[0, 1]`` of images, the default ``clip`` of :func:`pgd_linf`.
IMAGE_BOX = (0.0, 1.0)

LossArg = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def margin_loss(logits: torch.Tensor, y: torch.Tensor,
                reduction: str = "mean") -> torch.Tensor:
    """CW-style margin ``max_{j != y} z_j - z_y`` (positive iff misclassified).

    ``reduction``: ``"mean"`` (default; usable directly as the ``loss`` of
    :func:`pgd_linf`), ``"sum"`` or ``"none"`` (per example).
    """
    if logits.shape[1] < 2:
        raise ValueError("the margin needs at least two classes")
    z_y = logits.gather(1, y.reshape(-1, 1)).squeeze(1)
    others = logits.scatter(1, y.reshape(-1, 1), float("-inf"))
    m = others.amax(1) - z_y
    if reduction == "none":
        return m
    if reduction == "sum":
        return m.sum()
    if reduction == "mean":
        return m.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


def uniform_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """U[0, 1) noise shaped like x; drawn on the generator's device."""
    dev = generator.device if generator is not None else x.device
    return torch.rand(x.shape, generator=generator, device=dev,
                      dtype=x.dtype).to(x.device)


def normal_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """N(0, 1) noise shaped like x; drawn on the generator's device."""
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev,
                       dtype=x.dtype).to(x.device)


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float,
                 clip: Optional[tuple[float, float]] = IMAGE_BOX) -> torch.Tensor:
    """Projection onto the l_inf ball of radius eps around x, then onto the box ``clip = (lo, hi)``
    (none if ``clip`` is None).  The box is applied last, so a point of the ball outside the box is
    moved into the box (the ball's centre ``x`` must lie in it for the result to stay in the ball)."""
    x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
    return x_adv if clip is None else x_adv.clamp_(clip[0], clip[1])


def _loss_fn(loss: LossArg):
    if isinstance(loss, str):
        if loss != "ce":
            raise ValueError(f"unknown loss {loss!r}; use 'ce' or a callable")
        return lambda logits, target: F.cross_entropy(logits, target)
    if callable(loss):
        return loss
    raise TypeError("loss must be 'ce' or a callable(logits, y) -> scalar")


def _start_kind(random_start: Union[bool, str]):
    """:func:`pgd_linf`'s ``random_start``, checked: ``"uniform"``, ``"normal"``, or falsy (start at ``x``)."""
    if random_start is True:
        random_start = "uniform"
    if random_start not in (False, None, "uniform", "normal"):
        raise ValueError(f"random_start must be a bool, 'uniform' or 'normal', "
                         f"got {random_start!r}")
    return random_start


def _start(x: torch.Tensor, eps: float, kind, init_std: float, generator, clip) -> torch.Tensor:
    """The projected starting point of :func:`pgd_linf` (``kind`` from :func:`_start_kind`)."""
    if kind == "uniform":
        x_adv = x + (2.0 * uniform_like(x, generator) - 1.0) * eps
    elif kind == "normal":
        x_adv = x + init_std * normal_like(x, generator)
    else:
        x_adv = x.clone()
    return project_linf(x_adv, x, eps, clip)


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
             step_size: float, steps: int, random_start: Union[bool, str] = True,
             loss: LossArg = "ce", generator: Optional[torch.Generator] = None,
             *, init_std: float = 1e-3, clip: Optional[tuple[float, float]] = IMAGE_BOX,
             on_iterate: Optional[Callable[[torch.Tensor, torch.Tensor], None]] = None) -> torch.Tensor:
    """Projected gradient ascent in the l_inf ball (Madry et al., 2018).

    Each step is ``x' <- Proj(x' + step_size * sign(grad_x' L))`` where ``Proj`` projects onto
    ``{x' : ||x' - x||_inf <= eps}`` and then onto the box ``clip`` (:func:`project_linf`).

    Args:
        model: classifier returning logits.  It is set to eval mode during the attack and every module's
            previous train/eval flag is restored afterwards; parameter ``.grad`` fields are not touched.
        x, y: clean inputs (in ``clip``) and labels.  Computation happens on the model's device; the
            result is returned on ``x``'s device.
        eps, step_size, steps: radius, step length, number of steps.
        random_start: ``True``/``"uniform"``: start uniformly in the eps-ball (Madry); ``False``: start
            at ``x``; ``"normal"``: start at ``x + init_std * N(0, 1)`` (the TRADES initialisation -- the
            KL loss has zero gradient at ``x`` itself).  The start is projected.
        loss: ``"ce"`` (mean cross-entropy) or a callable ``loss(logits, y) -> scalar`` to maximise (e.g.
            a TRADES closure ``lambda z, _: F.kl_div(F.log_softmax(z, 1), p_clean, reduction="sum")``).
            Only the sign of the gradient is used, so sum vs. mean reductions give the same steps.
        generator: optional ``torch.Generator`` for the random start (may live on the CPU while the model
            is on CUDA).
        clip: the input box ``(lo, hi)``, ``[0, 1]`` (images) by default; ``None`` for inputs that are
            not images (no box).
        on_iterate: optional ``on_iterate(x_t, logits_t)`` called (detached) for every iterate
            t = 0 .. steps - 1 whose logits the attack computes; the returned point is the iterate ``steps``.

    Returns:
        Detached adversarial examples, same shape/dtype/device as ``x``.
    """
    if eps < 0 or step_size < 0 or steps < 0:
        raise ValueError("eps, step_size and steps must be non-negative")
    loss_fn = _loss_fn(loss)
    kind = _start_kind(random_start)
    out_device = x.device
    device = model_device(model)
    x = x.detach().to(device)
    y = y.detach().to(device)
    with eval_mode(model):
        x_adv = _start(x, eps, kind, init_std, generator, clip)
        for _ in range(int(steps)):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                logits = model(x_adv)
                obj = loss_fn(logits, y)
                if obj.dim() != 0:
                    raise ValueError("the loss callable must return a scalar")
                grad, = torch.autograd.grad(obj, x_adv)
            if on_iterate is not None:
                on_iterate(x_adv.detach(), logits.detach())
            x_adv = project_linf(x_adv.detach() + step_size * grad.sign(), x, eps, clip)
    return x_adv.detach().to(out_device)
