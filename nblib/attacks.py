"""Attacks and robustness measurements in ``[0, 1]`` pixel space.

* :func:`clean_accuracy` -- plain accuracy, batched, in eval mode.
* :func:`pgd_linf` -- Madry et al. PGD in the l_inf ball (sign steps,
  projection onto the ball *and* ``[0, 1]``), with cross-entropy or any
  ``loss(logits, y) -> scalar`` (e.g. the TRADES KL term).  Reused by
  adversarial training.
* :func:`autoattack_accuracy` -- AutoAttack (Croce & Hein, 2020) through
  ``pyautoattack``: ``version="standard"`` (APGD-CE, APGD-T, FAB-T, Square) or
  ``version="authors"`` (APGD-CE + APGD-T with the standard settings, which is
  what Liang & Huang's code actually ran).
* :func:`margin_loss`, :func:`local_lipschitz` -- empirical local Lipschitz
  constants (l_inf input / l_1 output, and the l_1 norm of the input gradient
  of the logit margin).

All functions use the model's device unless told otherwise, run the model in
eval mode and put every module back in the train/eval mode it had before.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from nblib.results import write_atomic

__all__ = [
    "AA_VERSIONS",
    "AttackStateError",
    "clean_accuracy",
    "pgd_linf",
    "autoattack_accuracy",
    "attack_settings",
    "margin_loss",
    "local_lipschitz",
]

logger = logging.getLogger(__name__)

#: AutoAttack variants accepted by :func:`autoattack_accuracy`.
AA_VERSIONS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "authors": ("apgd-ce", "apgd-t"),
}

LossArg = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _model_device(model: nn.Module, device=None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Put ``model`` in eval mode; restore every submodule's own flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, f in flags:
            m.training = f


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int,
             device: torch.device) -> tuple[torch.Tensor, int]:
    """Predicted labels (on x's device) and the number of classes."""
    preds, n_cls = [], 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out = model(x[i:i + batch_size].to(device))
            n_cls = out.shape[1]
            preds.append(out.argmax(1).to(x.device))
    return torch.cat(preds), n_cls


def _uniform_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """U[0, 1) noise shaped like x; drawn on the generator's device."""
    dev = generator.device if generator is not None else x.device
    return torch.rand(x.shape, generator=generator, device=dev,
                      dtype=x.dtype).to(x.device)


def _normal_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev,
                       dtype=x.dtype).to(x.device)


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto the l_inf ball of radius eps around x, then [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------
# clean accuracy
# --------------------------------------------------------------------------
def clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   batch_size: int = 256, device=None) -> float:
    """Fraction of ``x`` classified as ``y`` (model in eval mode, batched on
    ``device`` -- the model's device by default; previous modes restored)."""
    if x.shape[0] == 0:
        raise ValueError("empty input")
    device = _model_device(model, device)
    with _eval_mode(model):
        pred, _ = _predict(model, x, batch_size, device)
    return (pred == y.to(pred.device)).float().mean().item()


# --------------------------------------------------------------------------
# PGD
# --------------------------------------------------------------------------
def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
             step_size: float, steps: int, random_start: Union[bool, str] = True,
             loss: LossArg = "ce", generator: Optional[torch.Generator] = None,
             *, init_std: float = 1e-3) -> torch.Tensor:
    """Projected gradient ascent in the l_inf ball (Madry et al., 2018).

    Each step is ``x' <- Proj(x' + step_size * sign(grad_x' L))`` where
    ``Proj`` projects onto ``{x' : ||x' - x||_inf <= eps}`` and then onto
    ``[0, 1]``.

    Args:
        model: classifier returning logits.  It is set to eval mode during
            the attack and every module's previous train/eval flag is
            restored afterwards; parameter ``.grad`` fields are not touched.
        x, y: clean inputs in ``[0, 1]`` and labels.  Computation happens on
            the model's device; the result is returned on ``x``'s device.
        eps, step_size, steps: radius, step length, number of steps.
        random_start: ``True``/``"uniform"``: start uniformly in the eps-ball
            (Madry); ``False``: start at ``x``; ``"normal"``: start at
            ``x + init_std * N(0, 1)`` (the TRADES initialisation -- the KL
            loss has zero gradient at ``x`` itself).  The start is projected.
        loss: ``"ce"`` (mean cross-entropy) or a callable
            ``loss(logits, y) -> scalar`` to maximise (e.g. a TRADES closure
            ``lambda z, _: F.kl_div(F.log_softmax(z, 1), p_clean,
            reduction="sum")``).  Only the sign of the gradient is used, so
            sum vs. mean reductions give the same steps.
        generator: optional ``torch.Generator`` for the random start (may
            live on the CPU while the model is on CUDA).

    Returns:
        Detached adversarial examples, same shape/dtype/device as ``x``.
    """
    if eps < 0 or step_size < 0 or steps < 0:
        raise ValueError("eps, step_size and steps must be non-negative")
    if isinstance(loss, str):
        if loss != "ce":
            raise ValueError(f"unknown loss {loss!r}; use 'ce' or a callable")
        loss_fn = lambda logits, target: F.cross_entropy(logits, target)  # noqa: E731
    elif callable(loss):
        loss_fn = loss
    else:
        raise TypeError("loss must be 'ce' or a callable(logits, y) -> scalar")
    if random_start is True:
        random_start = "uniform"
    if random_start not in (False, None, "uniform", "normal"):
        raise ValueError(f"random_start must be a bool, 'uniform' or 'normal', "
                         f"got {random_start!r}")

    out_device = x.device
    device = _model_device(model)
    x = x.detach().to(device)
    y = y.detach().to(device)
    with _eval_mode(model):
        if random_start == "uniform":
            x_adv = x + (2.0 * _uniform_like(x, generator) - 1.0) * eps
        elif random_start == "normal":
            x_adv = x + init_std * _normal_like(x, generator)
        else:
            x_adv = x.clone()
        x_adv = _project(x_adv, x, eps)
        for _ in range(int(steps)):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                obj = loss_fn(model(x_adv), y)
                if obj.dim() != 0:
                    raise ValueError("the loss callable must return a scalar")
                grad, = torch.autograd.grad(obj, x_adv)
            x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach().to(out_device)


# --------------------------------------------------------------------------
# AutoAttack
# --------------------------------------------------------------------------
class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):  # pragma: no cover - trivial
        msg = record.getMessage()
        if msg not in self.messages:
            self.messages.append(msg)


@contextlib.contextmanager
def _quiet_autoattack():
    """Route pyautoattack's 'auto-attack' logger into a list (warnings and up
    are kept, debug/info chatter is dropped), swallow its ``print`` output,
    and undo its ``sys.settrace(None)`` (which would switch off coverage or
    a debugger).  Exceptions propagate unchanged."""
    aa_logger = logging.getLogger("auto-attack")
    handler = _ListHandler()
    old = (aa_logger.level, aa_logger.propagate, list(aa_logger.handlers))
    old_trace = sys.gettrace()
    aa_logger.handlers = [handler]
    aa_logger.setLevel(logging.WARNING)
    aa_logger.propagate = False
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            yield handler.messages
    finally:
        aa_logger.setLevel(old[0])
        aa_logger.propagate = old[1]
        aa_logger.handlers = old[2]
        if sys.gettrace() is not old_trace:
            sys.settrace(old_trace)
        printed = [ln for ln in stdout.getvalue().splitlines() if ln.strip()]
        for ln in printed:
            if ln not in handler.messages:
                handler.messages.append(ln)


def _make_adversary(model, eps, norm, version, seed, device, n_cls, budget=1.0):
    from pyautoattack import AutoAttack

    # Both variants start from pyautoattack's 'standard' configuration
    # (APGD 1 restart, APGD-T 9 targets x 1 restart, FAB-T 9 targets,
    # Square 5000 queries).  'authors' then keeps only APGD-CE + APGD-T,
    # exactly as Liang & Huang's scripts did (AutoAttack(version='standard')
    # followed by attacks_to_run = ['apgd-ce', 'apgd-t']).  Note that
    # pyautoattack's version='custom' would instead use 5 APGD-CE restarts.
    adv = AutoAttack(model, norm=norm, eps=float(eps), seed=int(seed),
                     version="standard", device=device)
    if version == "authors":
        adv.attacks_to_run = list(AA_VERSIONS["authors"])
        adv.version = "custom"
    n_targets = min(adv.apgd_targeted.n_target_classes, n_cls - 1)
    adv.apgd_targeted.n_target_classes = n_targets
    adv.fab.n_target_classes = min(adv.fab.n_target_classes, n_cls - 1)
    if budget != 1.0:  # a rehearsal of the same attacks with fewer iterations / queries
        for attack, name in ((adv.apgd, "n_iter"), (adv.apgd_targeted, "n_iter"), (adv.fab, "n_iter"),
                             (adv.square, "n_queries")):
            setattr(attack, name, max(1, math.ceil(budget * getattr(attack, name))))
    return adv, n_targets


def attack_settings(version: str, budget: float = 1.0) -> dict:
    """The resolved settings of an AutoAttack ``version`` at ``budget`` (what a result records): the
    attacks, APGD / APGD-T / FAB-T iterations, targets and Square's queries.  ``budget=1`` is pyautoattack's
    standard configuration; a smaller budget scales every iteration / query count by it (at least 1)."""
    if version not in AA_VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r}; known: {sorted(AA_VERSIONS)}")
    adv, n_targets = _make_adversary(nn.Flatten(), 1.0, "Linf", version, 0, torch.device("cpu"), 10,
                                     _check_budget(budget))
    return {"version": version, "attacks": list(AA_VERSIONS[version]), "budget": float(budget),
            "apgd_n_iter": adv.apgd.n_iter, "apgd_restarts": adv.apgd.n_restarts,
            "apgd_t_n_iter": adv.apgd_targeted.n_iter, "n_target_classes": n_targets,
            "fab_t_n_iter": adv.fab.n_iter, "square_n_queries": adv.square.n_queries}


def _check_budget(budget) -> float:
    budget = float(budget)
    if not (math.isfinite(budget) and 0 < budget <= 1):
        raise ValueError(f"the attack budget must lie in (0, 1] (1 = standard AutoAttack), got {budget}")
    return budget


def _perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    d = delta.flatten(1)
    if norm == "Linf":
        return d.abs().amax(1)
    if norm == "L2":
        return d.norm(p=2, dim=1)
    return d.abs().sum(1)


class AttackStateError(ValueError):
    """An AutoAttack state file cannot be read (torn, not JSON, wrong fields)."""


def _read_state(path: Path, attacks, n: int):
    """Parse a pyautoattack EvaluationState file (its own ``from_disk`` is
    broken in 0.2.0: the attack set is written as ``str(set)``)."""
    try:
        d = json.loads(path.read_text())
        planned = d.get("_attacks_to_run")
        if isinstance(planned, str):
            planned = ast.literal_eval(planned) if planned.strip() not in ("set()", "") else set()
        planned = set(planned)
    except (ValueError, SyntaxError, TypeError, AttributeError) as err:
        raise AttackStateError(f"AutoAttack state file {path} is unreadable ({type(err).__name__}: {err}); "
                               "delete it to run the attack from the start") from err
    if set(planned) != set(attacks):
        raise ValueError(f"state file {path} was written for attacks {sorted(planned)}, "
                         f"not {sorted(attacks)}; use another state_path")
    flags = d.get("_robust_flags")
    if flags is None or len(flags) != n:
        raise ValueError(f"state file {path} does not match these {n} points")
    return set(d.get("_run_attacks", [])), torch.tensor(flags, dtype=torch.bool), \
        float(d.get("_clean_accuracy", float("nan")))


def _write_state(path: Path, attacks, run_attacks, flags, clean_acc) -> None:
    write_atomic(path, json.dumps({
        "_attacks_to_run": sorted(attacks), "path": str(path),
        "_run_attacks": sorted(run_attacks),
        "_robust_flags": flags.cpu().tolist(),
        "_last_saved": time.strftime("%Y-%m-%d %H:%M:%S"),
        "_SAVE_TIMEOUT": 60, "_clean_accuracy": clean_acc}))


@contextlib.contextmanager
def _atomic_autoattack_state():
    """pyautoattack 0.2.0 writes its state file in place (``open(path, "w")``): a process killed during
    the write leaves a torn file.  While this context is open its ``EvaluationState.to_disk`` writes the
    same JSON through :func:`nblib.results.write_atomic` instead."""
    from dataclasses import asdict
    from datetime import datetime

    from pyautoattack.state import EvaluationState

    original = EvaluationState.to_disk

    def to_disk(self, force: bool = False) -> None:
        since = (datetime.now() - self._last_saved).total_seconds()
        if self.path is None or (since < self._SAVE_TIMEOUT and not force):
            return
        self._last_saved = datetime.now()
        d = asdict(self)
        if self.robust_flags is not None:
            d["_robust_flags"] = d["_robust_flags"].cpu().tolist()
        d["_run_attacks"] = list(self._run_attacks)
        write_atomic(Path(self.path), json.dumps(d, default=str))

    EvaluationState.to_disk = to_disk
    try:
        yield
    finally:
        EvaluationState.to_disk = original


def autoattack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        eps: float, norm: str = "Linf", version: str = "standard",
                        seed: int = 0, batch_size: int = 250, device=None,
                        state_path=None, *, budget: float = 1.0, return_adv: bool = False) -> dict:
    """Robust accuracy under AutoAttack (pyautoattack 0.2.0).

    Args:
        model: classifier returning logits for inputs in ``[0, 1]``; run in
            eval mode (previous modes restored afterwards).
        x, y: evaluation points (``x`` in ``[0, 1]``) and labels, e.g. from
            :func:`nblib.data.eval_subset`.
        eps: radius of the ``norm`` ball (``"Linf"``, ``"L2"`` or ``"L1"``).
        version: ``"standard"`` -- APGD-CE, APGD-T (9 targets), FAB-T
            (9 targets), Square (5000 queries); ``"authors"`` -- APGD-CE +
            APGD-T with the same standard settings, the reduced set that
            Liang & Huang's code actually ran.  With fewer than 10 classes the
            number of targets is capped at ``n_classes - 1``.
        seed: AutoAttack's seed.  pyautoattack re-seeds the *global* torch
            RNGs with it; this function restores the caller's RNG state.
        batch_size: AutoAttack batch size.
        device: where the attack runs (default: the model's device); ``x``
            may stay on the CPU.
        state_path: optional JSON file for pyautoattack's progress state
            (written atomically whenever pyautoattack saves progress).  An unreadable file raises
            :class:`AttackStateError` naming it.  If the file already exists the run
            resumes from it: finished attacks are skipped and the points they
            broke count as non-robust (their adversarial examples are not
            available, see ``n_broken_before_resume``).  pyautoattack's own
            resume is broken in 0.2.0, so resuming is done here.
        budget: fraction of the standard iterations and queries of every
            attack (APGD, APGD-T, FAB-T iterations, Square queries; at least
            1 each).  1 is AutoAttack as published; smaller values rehearse
            the same code path cheaply and do NOT measure robustness.
        return_adv: also return the adversarial examples under ``"x_adv"``.

    Returns:
        dict with ``clean_acc``, ``robust_acc`` (model re-evaluated on the
        returned adversarial examples; a point counts as robust iff it is
        classified correctly both clean and adversarially), ``n_eval``,
        ``eps``, ``norm``, ``version``, ``attacks``, ``seconds``, ``seed``,
        ``robust_acc_autoattack`` (pyautoattack's own bookkeeping),
        ``robust_mask`` (list of bools), ``max_perturbation``,
        ``n_target_classes``, ``resumed``, ``n_broken_before_resume`` and
        ``warnings`` (pyautoattack's warnings, e.g. zero gradients or a
        randomized model -- read them).

    Raises:
        RuntimeError: an adversarial example leaves the eps-ball or
            ``[0, 1]`` by more than 1e-6 (1e-5 relative for L1/L2), or is NaN.
    """
    if version not in AA_VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r}; "
                         f"known: {sorted(AA_VERSIONS)}")
    if norm not in ("Linf", "L2", "L1"):
        raise ValueError(f"norm must be 'Linf', 'L2' or 'L1', got {norm!r}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError("x and y must be non-empty with the same length")
    if x.min().item() < 0.0 or x.max().item() > 1.0:
        raise ValueError("x must lie in [0, 1]")
    budget = _check_budget(budget)
    device = _model_device(model, device)
    attacks = list(AA_VERSIONS[version])
    x = x.detach().float()
    y = y.detach().long().to(x.device)
    n = x.shape[0]
    state_path = Path(state_path) if state_path is not None else None
    t0 = time.time()
    fork_devices = [device.index if device.index is not None
                    else torch.cuda.current_device()] if device.type == "cuda" else []

    with _eval_mode(model), torch.random.fork_rng(devices=fork_devices), \
            _quiet_autoattack() as aa_messages, _atomic_autoattack_state():
        pred, n_cls = _predict(model, x, batch_size, device)
        clean_correct = pred == y
        if n_cls < 4:
            raise ValueError("AutoAttack's (targeted) DLR loss needs >= 4 classes")
        import pyautoattack.checks as aa_checks
        for k in aa_checks.funcs:  # module-global counters, never reset upstream
            aa_checks.funcs[k] = 0
        adversary, n_targets = _make_adversary(model, eps, norm, version, seed,
                                               device, n_cls, budget)
        resumed = state_path is not None and state_path.exists()
        n_broken_before = 0
        if resumed:
            run_before, flags, clean_state = _read_state(state_path, attacks, n)
            flags = flags.to(x.device)
            n_broken_before = int((clean_correct & ~flags).sum())
            remaining = [a for a in attacks if a not in run_before]
            x_adv = x.clone()
            y_adv = torch.where(flags, y, pred)
            idx = flags.nonzero().flatten()
            if remaining and idx.numel() > 0:
                adversary.attacks_to_run = remaining
                adversary.version = "custom"
                xa, ya = adversary.run_standard_evaluation(
                    x[idx], y[idx], batch_size=batch_size, state_path=None)
                x_adv[idx] = xa.to(x.device)
                y_adv[idx] = ya.to(x.device)
                flags[idx] = ya.to(x.device) == y[idx]
            _write_state(state_path, attacks, set(attacks), flags, clean_state)
        else:
            x_adv, y_adv = adversary.run_standard_evaluation(
                x, y, batch_size=batch_size, state_path=state_path)
            x_adv = x_adv.to(x.device)
            y_adv = y_adv.to(x.device)

        # the adversarial examples must be valid
        pert = _perturbation_norm(x_adv - x, norm)
        tol = 1e-6 if norm == "Linf" else 1e-6 + 1e-5 * float(eps)
        if torch.isnan(x_adv).any():
            raise RuntimeError("AutoAttack returned NaN adversarial examples")
        if (pert > float(eps) + tol).any():
            raise RuntimeError(
                f"AutoAttack returned points outside the {norm} ball: max "
                f"perturbation {pert.max().item():.8g} > eps={float(eps):.8g}")
        if x_adv.min().item() < -1e-6 or x_adv.max().item() > 1.0 + 1e-6:
            raise RuntimeError(
                f"AutoAttack returned points outside [0, 1]: range "
                f"[{x_adv.min().item():.8g}, {x_adv.max().item():.8g}]")

        adv_pred, _ = _predict(model, x_adv, batch_size, device)
        robust = clean_correct & (adv_pred == y)
        if resumed:
            robust &= flags
        robust_aa = (y_adv == y) & clean_correct
        if resumed:
            robust_aa &= flags
        if not torch.equal(robust, robust_aa):
            aa_messages.append(
                "re-evaluation disagrees with AutoAttack's bookkeeping on "
                f"{int((robust != robust_aa).sum())} points (randomized or "
                "non-deterministic model?)")

    result = {
        "clean_acc": clean_correct.float().mean().item(),
        "robust_acc": robust.float().mean().item(),
        "n_eval": int(n),
        "eps": float(eps),
        "norm": norm,
        "version": version,
        "attacks": attacks,
        "budget": budget,
        "seconds": time.time() - t0,
        "seed": int(seed),
        "robust_acc_autoattack": robust_aa.float().mean().item(),
        "robust_mask": robust.cpu().tolist(),
        "max_perturbation": pert.max().item(),
        "n_target_classes": int(n_targets),
        "resumed": bool(resumed),
        "n_broken_before_resume": int(n_broken_before),
        "warnings": list(aa_messages),
    }
    for msg in aa_messages:
        logger.info("AutoAttack: %s", msg)
    if return_adv:
        result["x_adv"] = x_adv
    return result


# --------------------------------------------------------------------------
# margin and local Lipschitz constants
# --------------------------------------------------------------------------
def margin_loss(logits: torch.Tensor, y: torch.Tensor,
                reduction: str = "mean") -> torch.Tensor:
    """CW-style margin ``max_{j != y} z_j - z_y`` (positive iff misclassified).

    ``reduction``: ``"mean"`` (default; usable directly as the ``loss`` of
    :func:`pgd_linf`), ``"sum"`` or ``"none"`` (per example).
    """
    if logits.shape[1] < 2:
        raise ValueError("the margin needs at least two classes")
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, y.view(-1, 1), float("-inf"))
    m = others.amax(1) - z_y
    if reduction == "none":
        return m
    if reduction == "sum":
        return m.sum()
    if reduction == "mean":
        return m.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


def local_lipschitz(model: nn.Module, x: torch.Tensor, eps: float, steps: int = 10,
                    step_size: Optional[float] = None, y: Optional[torch.Tensor] = None,
                    n_restarts: int = 1, batch_size: int = 256, clip: bool = True,
                    generator: Optional[torch.Generator] = None, device=None,
                    full_ratio_grad: bool = False) -> dict:
    """Empirical local Lipschitz constants around each point of ``x``.

    Norm pairing: perturbations are measured in **l_inf** (input) and
    output differences in **l_1**, i.e. for each point ``x`` the estimate is

        L(x) = max_{x' in B_inf(x, eps)} ||f(x') - f(x)||_1 / ||x' - x||_inf,

    with ``f`` the logits (Yang et al., NeurIPS 2020).  The maximum is
    searched by ``steps`` steps of projected sign-gradient ascent on the
    ratio (steps of ``step_size`` in the l_inf ball, then clipped to
    ``[0, 1]`` if ``clip``), from a uniformly random start in the ball,
    ``n_restarts`` times; the largest ratio seen at any iterate is kept.  By
    default the non-smooth denominator ``||x' - x||_inf`` is held fixed
    inside each step (its subgradient only pulls the single largest
    coordinate inwards, which makes sign steps oscillate and never reach a
    vertex), so the step direction is ``sign(grad ||f(x') - f(x)||_1)``;
    ``full_ratio_grad=True`` differentiates the full ratio instead, as Yang
    et al.'s code does.  Every iterate lies in the ball, so the result is a
    lower bound of the true local constant.  For a linear ``f(x) = Wx`` the
    true value is ``||W||_{inf->1} = max_{s in {-1,1}^n} ||W s||_1``
    (NP-hard in general; found exactly for rank-one ``W`` and, with a few
    restarts, for small ``W``).

    Along the same path (and at ``x`` itself) the l_1 norm -- the dual of
    l_inf -- of the input gradient of the logit margin
    ``z_y(x') - max_{j != y} z_j(x')`` is recorded; its largest value is the
    second estimate (for a linear model it is ``||w_y - w_j||_1`` with ``j``
    the runner-up class).  ``y`` defaults to the prediction at ``x``.

    Args:
        eps: l_inf radius; ``step_size`` defaults to ``eps / 4``.
        clip: also keep ``x'`` inside ``[0, 1]`` (the image domain).
        generator: optional ``torch.Generator`` for the random starts.
        full_ratio_grad: see above.

    Returns:
        dict with per-point CPU tensors ``lip`` and ``grad_margin`` and floats
        ``lip_mean``, ``lip_max``, ``grad_margin_mean``, ``grad_margin_max``,
        plus ``eps``, ``steps``, ``n_restarts``, ``input_norm="inf"``,
        ``output_norm=1``.
    """
    if eps <= 0:
        raise ValueError("eps must be positive")
    if steps < 0 or n_restarts < 1:
        raise ValueError("steps must be >= 0 and n_restarts >= 1")
    step_size = eps / 4.0 if step_size is None else float(step_size)
    device = _model_device(model, device)
    lips, grads = [], []

    def logits_and_margin(xp, labels):
        z = model(xp)
        m = -margin_loss(z, labels, reduction="none")
        return z, m

    with _eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].detach().to(device)
            if not xb.is_floating_point():
                xb = xb.float()
            with torch.no_grad():
                f0 = model(xb)
            labels = (f0.argmax(1) if y is None
                      else y[i:i + batch_size].to(device).long())
            # gradient of the margin at the clean point
            xc = xb.clone().requires_grad_(True)
            with torch.enable_grad():
                _, m = logits_and_margin(xc, labels)
                g, = torch.autograd.grad(m.sum(), xc)
            best_grad = g.flatten(1).abs().sum(1)
            best_lip = torch.zeros(xb.shape[0], device=device, dtype=f0.dtype)
            for _ in range(n_restarts):
                xp = xb + (2.0 * _uniform_like(xb, generator) - 1.0) * eps
                xp = (torch.min(torch.max(xp, xb - eps), xb + eps))
                if clip:
                    xp = xp.clamp(0.0, 1.0)
                for t in range(int(steps) + 1):
                    xp = xp.detach().requires_grad_(True)
                    with torch.enable_grad():
                        z, m = logits_and_margin(xp, labels)
                        num = (z - f0).flatten(1).abs().sum(1)
                        den = (xp - xb).flatten(1).abs().amax(1)
                        valid = den > 0
                        ratio = num / den.clamp_min(1e-12)
                        obj = ratio if full_ratio_grad else (
                            num / den.detach().clamp_min(1e-12))
                        g_ratio, = torch.autograd.grad(obj.sum(), xp,
                                                       retain_graph=True)
                        g_m, = torch.autograd.grad(m.sum(), xp)
                    r = torch.where(valid, ratio.detach(), torch.zeros_like(num))
                    best_lip = torch.max(best_lip, r)
                    best_grad = torch.max(best_grad, g_m.flatten(1).abs().sum(1))
                    if t == steps:
                        break
                    xp = xp.detach() + step_size * g_ratio.sign()
                    xp = torch.min(torch.max(xp, xb - eps), xb + eps)
                    if clip:
                        xp = xp.clamp(0.0, 1.0)
            lips.append(best_lip.detach().cpu())
            grads.append(best_grad.detach().cpu())
    lip = torch.cat(lips)
    grad_margin = torch.cat(grads)
    return {
        "lip": lip, "lip_mean": lip.mean().item(), "lip_max": lip.max().item(),
        "grad_margin": grad_margin, "grad_margin_mean": grad_margin.mean().item(),
        "grad_margin_max": grad_margin.max().item(),
        "eps": float(eps), "steps": int(steps), "n_restarts": int(n_restarts),
        "input_norm": "inf", "output_norm": 1,
    }
