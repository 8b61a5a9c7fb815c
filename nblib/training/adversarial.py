"""Training losses of the three adversarial-training frameworks of the paper's Figure 2.

Liang & Huang (AAAI 2021, "The Norms of Adversarially Robust Networks") train each CIFAR-10 model with
PGD-AT, ALP and TRADES and compare the l_inf norms of the layers with those of the plainly trained model.
With ``x`` a clean batch, ``y`` its labels, ``f`` the logits and ``B(x) = {x' : ||x' - x||_inf <= eps,
x' in [0, 1]^n}``:

* ``"plain"``  -- ``CE(f(x), y)``.
* ``"pgd"``    -- PGD-AT (Madry et al. 2018): ``CE(f(x_adv), y)`` with ``x_adv`` from ``steps`` steps of PGD
  on ``CE(f(.), y)`` in ``B(x)``.
* ``"alp"``    -- adversarial logit pairing (Kannan, Kurakin & Goodfellow 2018), mixed-minibatch form:
  ``0.5 CE(f(x), y) + 0.5 CE(f(x_adv), y) + alp_weight * D(f(x), f(x_adv))`` (``alp_mixed=False``: the CE
  term is ``CE(f(x_adv), y)`` alone), ``x_adv`` as for PGD-AT.  ``D`` is the squared l2 distance of the
  logit vectors averaged over the batch (``alp_pairing="sum"``, the paper's ``||f(x) - f(x_adv)||_2^2``) or
  additionally averaged over the classes (``"mean"``, i.e. ``F.mse_loss``, what the authors' code ran).
* ``"trades"`` -- TRADES (Zhang et al. 2019): ``CE(f(x), y) + trades_beta * KL(p(x) || p(x_adv))``, with
  ``p = softmax(f)``, the KL averaged over the batch, and ``x_adv`` from PGD on that KL (with ``p(x)``
  fixed) started at ``x + 0.001 N(0, 1)`` (the KL has zero gradient at ``x`` itself).

The attack runs with the model in **eval** mode (``nblib.attacks.pgd.pgd_linf`` switches and restores the
mode, and never touches parameter gradients); the training loss is computed in whatever mode the model is
in -- train mode in a training loop -- with separate forward passes of the clean and the adversarial batch,
as in the reference implementations.  The attack is a lower bound of the inner maximisation: PGD finds a
point of ``B(x)``, not the maximiser.

Settings are named presets (:data:`ADV_PRESETS`) that keyword overrides can change:

* ``"standard"`` -- the frameworks' own papers: eps = 8/255, step 2/255, 10 steps, Madry's uniform random
  start for PGD-AT/ALP, TRADES beta = 6, ALP weight 1 on the squared l2 distance.
* ``"authors"`` -- what Liang & Huang's code (``AT/losses.py``) ran: eps = 0.031, step 0.007, 10 steps,
  every attack started at ``x + 0.001 N(0, 1)``, TRADES beta = 1, ALP weight 1 on ``F.mse_loss``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from nblib.attacks.inference import eval_mode
from nblib.attacks.pgd import pgd_linf
from nblib.vocabulary import ADV_MODES

__all__ = [
    "ADV_PRESETS",
    "AdvLoss",
    "adv_settings",
    "adversarial_examples",
    "adversarial_loss",
]


#: Named settings.  eps / step: l_inf radius and PGD step length in [0, 1] pixel units; steps: PGD
#: iterations; start: PGD-AT/ALP random start ("uniform" in the eps-ball or "normal": x + 0.001 N(0, 1);
#: TRADES always starts "normal"); trades_beta: weight of the KL term; alp_weight: weight of the logit
#: pairing term; alp_mixed: 0.5 clean + 0.5 adversarial CE (else adversarial CE only); alp_pairing: "sum"
#: (squared l2 over classes, mean over batch) or "mean" (mean over batch and classes, F.mse_loss).
ADV_PRESETS = {
    "standard": dict(eps=8 / 255, step=2 / 255, steps=10, trades_beta=6.0, alp_weight=1.0,
                     start="uniform", alp_mixed=True, alp_pairing="sum"),
    "authors": dict(eps=0.031, step=0.007, steps=10, trades_beta=1.0, alp_weight=1.0,
                    start="normal", alp_mixed=True, alp_pairing="mean"),
}

_SETTING_KEYS = tuple(ADV_PRESETS["standard"])


class AdvLoss(NamedTuple):
    """A training loss with what the training loop logs: ``logits`` and ``targets`` of the cross-entropy
    term(s) (train accuracy = ``(logits.argmax(1) == targets).mean()``: clean points for plain and TRADES,
    adversarial points for PGD-AT, both for mixed ALP) and the adversarial batch (None for plain)."""

    loss: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    x_adv: Optional[torch.Tensor]


def adv_settings(preset: str = "standard", **overrides) -> dict:
    """The settings of ``preset`` updated with ``overrides``; unknown names raise ValueError."""
    if preset not in ADV_PRESETS:
        raise ValueError(f"unknown adversarial preset {preset!r}; known presets: {', '.join(ADV_PRESETS)}")
    unknown = sorted(set(overrides) - set(_SETTING_KEYS))
    if unknown:
        raise ValueError(f"unknown adversarial settings {unknown}; known settings: {', '.join(_SETTING_KEYS)}")
    cfg = {**ADV_PRESETS[preset], **overrides}
    if cfg["start"] not in ("uniform", "normal"):
        raise ValueError(f"start must be 'uniform' or 'normal', got {cfg['start']!r}")
    if cfg["alp_pairing"] not in ("sum", "mean"):
        raise ValueError(f"alp_pairing must be 'sum' or 'mean', got {cfg['alp_pairing']!r}")
    if cfg["eps"] < 0 or cfg["step"] < 0 or int(cfg["steps"]) != cfg["steps"] or cfg["steps"] < 0:
        raise ValueError(f"eps and step must be >= 0 and steps a non-negative int; got {cfg}")
    return cfg


def _check_cfg(cfg: dict) -> dict:
    missing = [k for k in _SETTING_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"adversarial settings lack {missing}; build them with adv_settings(preset, ...)")
    return cfg


def _trades_kl_sum(p_clean: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``z -> sum_batch KL(p_clean || softmax(z))``, the TRADES attack objective (only its sign-gradient
    is used, so sum vs. mean is immaterial)."""
    return lambda z, _y: F.kl_div(F.log_softmax(z, dim=1), p_clean, reduction="sum")


def adversarial_examples(mode: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: dict,
                         generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
    """The adversarial batch that ``mode`` trains on (None for ``"plain"``), detached, in ``B(x)``.

    PGD-AT and ALP: ``cfg["steps"]`` PGD steps on the cross-entropy from ``cfg["start"]``.  TRADES: PGD on
    ``KL(p(x) || p(.))`` with ``p(x)`` computed once in eval mode, started at ``x + 0.001 N(0, 1)``.  The
    random start draws from ``generator`` (default: the global torch RNG).
    """
    _check_mode(mode)
    cfg = _check_cfg(cfg)
    if mode == "plain":
        return None
    common = dict(eps=float(cfg["eps"]), step_size=float(cfg["step"]), steps=int(cfg["steps"]),
                  generator=generator)
    if mode in ("pgd", "alp"):
        return pgd_linf(model, x, y, random_start=cfg["start"], loss="ce", **common)
    with eval_mode(model), torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    return pgd_linf(model, x, y, random_start="normal", loss=_trades_kl_sum(p_clean), **common)


def _loss_given_adv(mode: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    x_adv: Optional[torch.Tensor], cfg: dict) -> AdvLoss:
    if mode == "plain":
        logits = model(x)
        return AdvLoss(F.cross_entropy(logits, y), logits, y, None)
    if x_adv is None:
        raise ValueError(f"mode {mode!r} needs adversarial examples")
    if mode == "pgd":
        logits_adv = model(x_adv)
        return AdvLoss(F.cross_entropy(logits_adv, y), logits_adv, y, x_adv)
    logits = model(x)
    logits_adv = model(x_adv)
    if mode == "alp":
        if cfg["alp_mixed"]:
            ce = 0.5 * F.cross_entropy(logits, y) + 0.5 * F.cross_entropy(logits_adv, y)
            shown, targets = torch.cat([logits, logits_adv]), torch.cat([y, y])
        else:
            ce = F.cross_entropy(logits_adv, y)
            shown, targets = logits_adv, y
        sq = (logits - logits_adv).pow(2)
        pairing = sq.sum(1).mean() if cfg["alp_pairing"] == "sum" else sq.mean()
        return AdvLoss(ce + float(cfg["alp_weight"]) * pairing, shown, targets, x_adv)
    # trades: KL(p(x) || p(x_adv)) averaged over the batch; gradients flow through both terms
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
    return AdvLoss(F.cross_entropy(logits, y) + float(cfg["trades_beta"]) * kl, logits, y, x_adv)


def _check_mode(mode: str) -> None:
    if mode not in ADV_MODES:
        raise ValueError(f"unknown adversarial training mode {mode!r}; known modes: {', '.join(ADV_MODES)}")


def adversarial_loss(mode: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     preset: str = "standard", generator: Optional[torch.Generator] = None,
                     x_adv: Optional[torch.Tensor] = None, return_details: bool = False, **settings):
    """The training loss of ``mode`` (one of :data:`ADV_MODES`) on the batch ``(x, y)``.

    Settings are ``adv_settings(preset, **settings)``.  The adversarial batch is generated with the model
    in eval mode (see :func:`adversarial_examples`) unless given as ``x_adv`` (e.g. to evaluate the loss at
    fixed adversarial examples); the loss is computed in the model's current mode.  Returns the scalar loss,
    or an :class:`AdvLoss` when ``return_details``.
    """
    _check_mode(mode)
    cfg = adv_settings(preset, **settings)
    if x_adv is None:
        x_adv = adversarial_examples(mode, model, x, y, cfg, generator)
    out = _loss_given_adv(mode, model, x, y, x_adv, cfg)
    return out if return_details else out.loss
