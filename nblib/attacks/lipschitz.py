"""Empirical local Lipschitz constants of a classifier (l_inf input, l_1 output) and the l_1 norm of the
input gradient of its logit margin, searched by projected sign-gradient ascent (:func:`local_lipschitz`)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from nblib.attacks.inference import eval_mode, model_device
from nblib.attacks.pgd import IMAGE_BOX, margin_loss, project_linf, uniform_like

__all__ = ["local_lipschitz"]


def _step_gradients(model: nn.Module, xp: torch.Tensor, xb: torch.Tensor, f0: torch.Tensor,
                    labels: torch.Tensor, full_ratio_grad: bool):
    """At ``xp``: the ratio ``||f(xp) - f(xb)||_1 / ||xp - xb||_inf`` (0 where ``xp = xb``), the gradient
    of the ratio (denominator held fixed unless ``full_ratio_grad``) and the gradient of the logit margin
    ``z_y - max_{j != y} z_j``."""
    xp = xp.detach().requires_grad_(True)
    with torch.enable_grad():
        z = model(xp)
        m = -margin_loss(z, labels, reduction="none")
        num = (z - f0).flatten(1).abs().sum(1)
        den = (xp - xb).flatten(1).abs().amax(1)
        ratio = num / den.clamp_min(1e-12)
        obj = ratio if full_ratio_grad else num / den.detach().clamp_min(1e-12)
        g_ratio, = torch.autograd.grad(obj.sum(), xp, retain_graph=True)
        g_m, = torch.autograd.grad(m.sum(), xp)
    r = torch.where(den > 0, ratio.detach(), torch.zeros_like(num))
    return r, g_ratio, g_m


def _search_batch(model: nn.Module, xb: torch.Tensor, yb: Optional[torch.Tensor], eps: float, steps: int,
                  step_size: float, n_restarts: int, box, generator, full_ratio_grad: bool):
    """:func:`local_lipschitz` on one batch ``xb`` (labels ``yb``, default: the prediction): the largest
    ratio and margin-gradient l_1 norm seen at ``xb`` itself and at every iterate of ``n_restarts``
    sign-ascents of ``steps`` steps, as CPU tensors."""
    if not xb.is_floating_point():
        xb = xb.float()
    with torch.no_grad():
        f0 = model(xb)
    labels = f0.argmax(1) if yb is None else yb.long()
    _, _, g_m = _step_gradients(model, xb.clone(), xb, f0, labels, full_ratio_grad)  # margin gradient at xb
    best_grad = g_m.flatten(1).abs().sum(1)
    best_lip = torch.zeros(xb.shape[0], device=xb.device, dtype=f0.dtype)
    for _ in range(n_restarts):
        xp = xb + (2.0 * uniform_like(xb, generator) - 1.0) * eps
        xp = project_linf(xp, xb, eps, box)
        for t in range(int(steps) + 1):
            r, g_ratio, g_m = _step_gradients(model, xp, xb, f0, labels, full_ratio_grad)
            best_lip = torch.max(best_lip, r)
            best_grad = torch.max(best_grad, g_m.flatten(1).abs().sum(1))
            if t == steps:
                break
            xp = project_linf(xp.detach() + step_size * g_ratio.sign(), xb, eps, box)
    return best_lip.detach().cpu(), best_grad.detach().cpu()


def local_lipschitz(model: nn.Module, x: torch.Tensor, eps: float, steps: int = 10,
                    step_size: Optional[float] = None, y: Optional[torch.Tensor] = None,
                    n_restarts: int = 1, batch_size: int = 256, clip: bool = True,
                    generator: Optional[torch.Generator] = None, device=None,
                    full_ratio_grad: bool = False) -> dict:
    """Empirical local Lipschitz constants around each point of ``x``.

    Norm pairing: perturbations are measured in **l_inf** (input) and output differences in **l_1**,
    i.e. for each point ``x`` the estimate is

        L(x) = max_{x' in B_inf(x, eps)} ||f(x') - f(x)||_1 / ||x' - x||_inf,

    with ``f`` the logits (Yang et al., NeurIPS 2020).  The maximum is searched by ``steps`` steps of
    projected sign-gradient ascent on the ratio (steps of ``step_size`` in the l_inf ball, then clipped to
    ``[0, 1]`` if ``clip``), from a uniformly random start in the ball, ``n_restarts`` times; the largest
    ratio seen at any iterate is kept.  By default the non-smooth denominator ``||x' - x||_inf`` is held
    fixed inside each step (its subgradient only pulls the single largest coordinate inwards, which makes
    sign steps oscillate and never reach a vertex), so the step direction is
    ``sign(grad ||f(x') - f(x)||_1)``; ``full_ratio_grad=True`` differentiates the full ratio instead, as
    Yang et al.'s code does.  Every iterate lies in the ball, so the result is a lower bound of the true
    local constant.  For a linear ``f(x) = Wx`` the true value is
    ``||W||_{inf->1} = max_{s in {-1,1}^n} ||W s||_1`` (NP-hard in general; found exactly for rank-one
    ``W`` and, with a few restarts, for small ``W``).

    Along the same path (and at ``x`` itself) the l_1 norm -- the dual of l_inf -- of the input gradient
    of the logit margin ``z_y(x') - max_{j != y} z_j(x')`` is recorded; its largest value is the second
    estimate (for a linear model it is ``||w_y - w_j||_1`` with ``j`` the runner-up class).  ``y``
    defaults to the prediction at ``x``.

    Args:
        eps: l_inf radius; ``step_size`` defaults to ``eps / 4``.
        clip: also keep ``x'`` inside ``[0, 1]`` (the image domain).
        generator: optional ``torch.Generator`` for the random starts.
        full_ratio_grad: see above.

    Returns:
        dict with per-point CPU tensors ``lip`` and ``grad_margin`` and floats ``lip_mean``, ``lip_max``,
        ``grad_margin_mean``, ``grad_margin_max``, plus ``eps``, ``steps``, ``n_restarts``,
        ``input_norm="inf"``, ``output_norm=1``.
    """
    if eps <= 0:
        raise ValueError("eps must be positive")
    if steps < 0 or n_restarts < 1:
        raise ValueError("steps must be >= 0 and n_restarts >= 1")
    step_size = eps / 4.0 if step_size is None else float(step_size)
    box = IMAGE_BOX if clip else None
    device = model_device(model, device)
    lips, grads = [], []
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            yb = None if y is None else y[i:i + batch_size].to(device)
            lip_b, grad_b = _search_batch(model, x[i:i + batch_size].detach().to(device), yb, eps, steps,
                                          step_size, n_restarts, box, generator, full_ratio_grad)
            lips.append(lip_b)
            grads.append(grad_b)
    lip, grad_margin = torch.cat(lips), torch.cat(grads)
    return {"lip": lip, "lip_mean": lip.mean().item(), "lip_max": lip.max().item(),
            "grad_margin": grad_margin, "grad_margin_mean": grad_margin.mean().item(),
            "grad_margin_max": grad_margin.max().item(), "eps": float(eps), "steps": int(steps),
            "n_restarts": int(n_restarts), "input_norm": "inf", "output_norm": 1}
