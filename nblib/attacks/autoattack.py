"""AutoAttack (Croce & Hein, 2020) through ``pyautoattack`` 0.2.0, made safe for long sweeps.

* :func:`autoattack_accuracy` -- robust accuracy under ``version="standard"`` (APGD-CE, APGD-T, FAB-T,
  Square) or ``version="authors"`` (APGD-CE + APGD-T with the standard settings, which is what Liang &
  Huang's code actually ran), with every adversarial example checked to lie in the ball and ``[0, 1]``.
* :func:`attack_settings` -- the resolved settings (attacks, iterations, targets, queries) a result records.
* A resume-state file written atomically (pyautoattack writes it in place and cannot read it back), an
  unreadable one raising :class:`AttackStateError`; pyautoattack's logging and prints captured into the
  result's ``warnings``; its ``sys.settrace(None)`` undone (it would switch off coverage or a debugger).
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

import torch
import torch.nn as nn

from nblib.attacks.inference import eval_mode, model_device, predict
from nblib.results import write_atomic

__all__ = ["AA_VERSIONS", "AttackStateError", "attack_settings", "autoattack_accuracy", "make_adversary",
           "quiet_autoattack"]

logger = logging.getLogger(__name__)

#: Images per AutoAttack batch (what the sweep's runs use; a memory setting, results do not depend on it).
AA_BATCH = 250
#: AutoAttack variants accepted by :func:`autoattack_accuracy`.
AA_VERSIONS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "authors": ("apgd-ce", "apgd-t"),
}


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):  # pragma: no cover - trivial
        msg = record.getMessage()
        if msg not in self.messages:
            self.messages.append(msg)


@contextlib.contextmanager
def quiet_autoattack():
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


def make_adversary(model, eps, norm, version, seed, device, n_cls, budget=1.0):
    """pyautoattack's ``AutoAttack`` for ``version`` ("standard", or "authors": APGD-CE + APGD-T) at ``budget``
    of its iterations, and the number of target classes of its targeted attacks."""
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
    adv, n_targets = make_adversary(nn.Flatten(), 1.0, "Linf", version, 0, torch.device("cpu"), 10,
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


def _check_inputs(x, y, norm: str, version: str) -> None:
    if version not in AA_VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r}; "
                         f"known: {sorted(AA_VERSIONS)}")
    if norm not in ("Linf", "L2", "L1"):
        raise ValueError(f"norm must be 'Linf', 'L2' or 'L1', got {norm!r}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError("x and y must be non-empty with the same length")
    if x.min().item() < 0.0 or x.max().item() > 1.0:
        raise ValueError("x must lie in [0, 1]")


def _reset_check_counters() -> None:
    """pyautoattack's sanity checks count into module-global counters that are never reset upstream."""
    import pyautoattack.checks as aa_checks
    for k in aa_checks.funcs:
        aa_checks.funcs[k] = 0


def _resume(adversary, state_path: Path, attacks, x, y, pred, batch_size: int):
    """Finish the attacks a state file has not recorded as run, on the points it still counts as robust.

    Returns ``(x_adv, y_adv, flags, n_broken_before)``: points broken before the resume keep ``x`` as
    their (unavailable) adversarial example and count through ``flags`` (False) as non-robust."""
    run_before, flags, clean_state = _read_state(state_path, attacks, x.shape[0])
    flags = flags.to(x.device)
    n_broken_before = int(((pred == y) & ~flags).sum())
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
    return x_adv, y_adv, flags, n_broken_before


def _check_adversarial(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Raise unless every adversarial example is a number inside the ``norm`` ball and ``[0, 1]``;
    returns the per-point perturbation norms."""
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
    return pert


def _robust_masks(clean_correct, adv_pred, y_adv, y, flags, messages: list):
    """Robust iff correct clean and on the re-evaluated adversarial example (and, after a resume, not
    broken before it); also pyautoattack's own bookkeeping, a disagreement noted in ``messages``."""
    robust = clean_correct & (adv_pred == y)
    robust_aa = (y_adv == y) & clean_correct
    if flags is not None:
        robust &= flags
        robust_aa &= flags
    if not torch.equal(robust, robust_aa):
        messages.append(
            "re-evaluation disagrees with AutoAttack's bookkeeping on "
            f"{int((robust != robust_aa).sum())} points (randomized or "
            "non-deterministic model?)")
    return robust, robust_aa


def _fork_devices(device: torch.device) -> list:
    """The CUDA devices whose RNG state ``torch.random.fork_rng`` must save (pyautoattack re-seeds)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _run_or_resume(adversary, state_path, resumed: bool, attacks, x, y, pred, batch_size: int):
    """A fresh run of every attack (pyautoattack saving its progress to ``state_path``) or, if ``resumed``,
    :func:`_resume`.  Returns ``(x_adv, y_adv, flags, n_broken_before)`` on ``x``'s device; ``flags`` is
    None and ``n_broken_before`` 0 for a fresh run."""
    if resumed:
        return _resume(adversary, state_path, attacks, x, y, pred, batch_size)
    x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size, state_path=state_path)
    return x_adv.to(x.device), y_adv.to(x.device), None, 0


def _attack(model, x, y, eps, norm, version, seed, batch_size, device, state_path, budget) -> dict:
    """The attack itself, in eval mode, on a fork of the caller's RNG state, with pyautoattack's output
    captured and its state file written atomically: the clean predictions, the adversarial examples
    (checked by :func:`_check_adversarial`), their re-evaluation and the robust masks.  Returns the pieces
    of the result; ``messages`` is complete only here, after the capture has closed."""
    attacks = list(AA_VERSIONS[version])
    with eval_mode(model), torch.random.fork_rng(devices=_fork_devices(device)), \
            quiet_autoattack() as aa_messages, _atomic_autoattack_state():
        pred, n_cls = predict(model, x, batch_size, device)
        clean_correct = pred == y
        if n_cls < 4:
            raise ValueError("AutoAttack's (targeted) DLR loss needs >= 4 classes")
        _reset_check_counters()
        adversary, n_targets = make_adversary(model, eps, norm, version, seed,
                                               device, n_cls, budget)
        resumed = state_path is not None and state_path.exists()
        x_adv, y_adv, flags, n_broken_before = _run_or_resume(adversary, state_path, resumed, attacks,
                                                              x, y, pred, batch_size)
        pert = _check_adversarial(x_adv, x, eps, norm)
        adv_pred, _ = predict(model, x_adv, batch_size, device)
        robust, robust_aa = _robust_masks(clean_correct, adv_pred, y_adv, y, flags, aa_messages)
    return {"clean_correct": clean_correct, "robust": robust, "robust_aa": robust_aa, "pert": pert,
            "n_targets": n_targets, "resumed": resumed, "n_broken_before": n_broken_before,
            "x_adv": x_adv, "messages": aa_messages}


def _result(found: dict, n_eval: int, eps, norm: str, version: str, budget: float, seed, t0: float) -> dict:
    """The result dict of :func:`autoattack_accuracy` (keys in the order it documents) from the pieces
    :func:`_attack` found; ``seconds`` counts from ``t0``."""
    robust = found["robust"]
    return {"clean_acc": found["clean_correct"].float().mean().item(), "robust_acc": robust.float().mean().item(),
            "n_eval": int(n_eval), "eps": float(eps), "norm": norm, "version": version,
            "attacks": list(AA_VERSIONS[version]), "budget": budget, "seconds": time.time() - t0,
            "seed": int(seed), "robust_acc_autoattack": found["robust_aa"].float().mean().item(),
            "robust_mask": robust.cpu().tolist(), "max_perturbation": found["pert"].max().item(),
            "n_target_classes": int(found["n_targets"]), "resumed": bool(found["resumed"]),
            "n_broken_before_resume": int(found["n_broken_before"]), "warnings": list(found["messages"])}


def autoattack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        eps: float, norm: str = "Linf", version: str = "standard",
                        seed: int = 0, batch_size: int = AA_BATCH, device=None,
                        state_path=None, *, budget: float = 1.0, return_adv: bool = False) -> dict:
    """Robust accuracy under AutoAttack (pyautoattack 0.2.0).

    Args:
        model: classifier returning logits for inputs in ``[0, 1]``; run in eval mode (previous modes
            restored afterwards).
        x, y: evaluation points (``x`` in ``[0, 1]``; may stay on the CPU) and labels, e.g. from
            :func:`nblib.data.eval_subset`.
        eps: radius of the ``norm`` ball (``"Linf"``, ``"L2"`` or ``"L1"``).
        version: ``"standard"`` -- APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000
            queries); ``"authors"`` -- APGD-CE + APGD-T with the same standard settings, the reduced set
            Liang & Huang's code actually ran.  With fewer than 10 classes the number of targets is
            capped at ``n_classes - 1``.
        seed: AutoAttack's seed.  pyautoattack re-seeds the *global* torch RNGs with it; this function
            restores the caller's RNG state.
        batch_size, device: AutoAttack's batch size; where it runs (default: the model's device).
        state_path: optional JSON progress file (written atomically).  An unreadable one raises
            :class:`AttackStateError`.  If it exists the run resumes from it: finished attacks are
            skipped and the points they broke count as non-robust (their adversarial examples are not
            available, see ``n_broken_before_resume``); pyautoattack's own resume is broken in 0.2.0.
        budget: fraction of the standard iterations and queries of every attack (APGD, APGD-T, FAB-T
            iterations, Square queries; at least 1 each).  1 is AutoAttack as published; smaller values
            rehearse the same code path cheaply and do NOT measure robustness.
        return_adv: also return the adversarial examples under ``"x_adv"``.

    Returns:
        dict with ``clean_acc``, ``robust_acc`` (robust iff classified correctly both clean and on the
        returned adversarial example, re-evaluated), ``n_eval``, ``eps``, ``norm``, ``version``,
        ``attacks``, ``budget``, ``seconds``, ``seed``, ``robust_acc_autoattack`` (pyautoattack's own
        bookkeeping), ``robust_mask`` (list of bools), ``max_perturbation``, ``n_target_classes``,
        ``resumed``, ``n_broken_before_resume`` and ``warnings`` (pyautoattack's warnings, e.g. zero
        gradients or a randomized model -- read them).

    Raises:
        RuntimeError: an adversarial example leaves the eps-ball or ``[0, 1]`` by more than 1e-6
            (1e-5 relative for L1/L2), or is NaN.
    """
    _check_inputs(x, y, norm, version)
    budget = _check_budget(budget)
    device = model_device(model, device)
    x = x.detach().float()
    y = y.detach().long().to(x.device)
    state_path = Path(state_path) if state_path is not None else None
    t0 = time.time()
    found = _attack(model, x, y, eps, norm, version, seed, batch_size, device, state_path, budget)
    result = _result(found, x.shape[0], eps, norm, version, budget, seed, t0)
    for msg in found["messages"]:
        logger.info("AutoAttack: %s", msg)
    if return_adv:
        result["x_adv"] = found["x_adv"]
    return result
