"""The schema of a run's ``metrics.json`` (:func:`check_metrics`): what a finished or diverged run must hold,
the per-point outcomes (:data:`OUTCOME_KEYS`) included, before :mod:`nblib.runs.folders` lets it be read."""
from __future__ import annotations

import math

from nblib.results import unpack_outcomes

__all__ = ["OUTCOME_KEYS", "check_metrics", "only_outcomes_missing"]


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _prob(v) -> bool:
    return _is_num(v) and 0.0 <= v <= 1.0


def _finite_nonneg(v) -> bool:
    return _is_num(v) and math.isfinite(v) and v >= 0


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _none(v) -> bool:
    return v is None


#: The per-point outcomes of a finished run (``nblib.results.pack_outcomes``): ``clean_correct`` over the whole
#: test set, ``robust_correct`` over the attacked subset (None without an attack).  Every run-vs-run comparison
#: is a paired test on them; a finished run without them (older code) is ``stale``.
OUTCOME_KEYS = ("clean_correct", "robust_correct")


def _outcomes_rule(size_key: str, acc_key: str):
    """A rule: packed outcomes of ``metrics[size_key]`` points whose mean is ``metrics[acc_key]``."""
    def ok(v, metrics) -> bool:
        try:
            bits = unpack_outcomes(v)
        except ValueError:
            return False
        n, acc = metrics.get(size_key), metrics.get(acc_key)
        return (bits.size > 0 and (not isinstance(n, int) or bits.size == n)
                and _is_num(acc) and abs(int(bits.sum()) - acc * bits.size) < 1)
    return ok


def _outcome_rules(cfg: dict) -> list:
    """``(key, ok(value, metrics), what)`` for :data:`OUTCOME_KEYS` of a finished run of ``cfg``."""
    robust = ((_outcomes_rule("n_eval", "robust_acc"), "packed outcomes of the n_eval attacked points that "
               "average to robust_acc") if cfg["attack"] != "none" else
              (lambda v, _: v is None, "None (no attack in the config)"))
    return [("clean_correct", _outcomes_rule("n_test", "clean_acc"),
             "packed outcomes of the n_test test images that average to clean_acc"), ("robust_correct", *robust)]


def _diverged_rules(cfg: dict) -> list:
    """``(key, ok, what it must be)`` for the metrics of a diverged run of ``cfg``."""
    attacked = cfg["attack"] != "none"
    return [("reason", lambda v: isinstance(v, str) and v, "a non-empty string"),
            ("diverged_epoch", lambda v: isinstance(v, int) and 1 <= v <= cfg["epochs"], "an epoch of the run"),
            *((key, _nan, "NaN (a diverged run has no valid value)")
              for key in ("clean_acc", "test_loss", "train_loss", "train_acc")),
            ("robust_acc", _nan, "NaN (diverged)") if attacked else
            ("robust_acc", _none, "None (no attack in the config)")]


def _done_rules(cfg: dict, n_layers: int) -> list:
    """``(key, ok, what it must be)`` for the metrics of a finished run of ``cfg`` with ``n_layers`` layer
    names (-1: no list of names)."""
    attacked, lip = cfg["attack"] != "none", cfg["local_lipschitz"]
    acc = (_prob, "an accuracy in [0, 1]") if attacked else (_none, "None (no attack in the config)")
    lip_rule = (_finite_nonneg, "a finite constant >= 0") if lip else (_none, "None (local_lipschitz off)")
    norms = (lambda v: isinstance(v, list) and len(v) == n_layers and all(_finite_nonneg(x) for x in v),
             f"a list of {n_layers} finite norms >= 0")
    return [("clean_acc", _prob, "an accuracy in [0, 1]"), ("train_acc", _prob, "an accuracy in [0, 1]"),
            ("test_loss", _finite_nonneg, "a finite loss >= 0"), ("train_loss", _finite_nonneg, "a finite loss >= 0"),
            ("epochs_trained", lambda v: v == cfg["epochs"] and isinstance(v, int), f"the {cfg['epochs']} epochs"),
            *((key, lambda v: _is_int(v, 1), "a positive int") for key in ("n_train", "n_test", "n_params")),
            ("global_steps", lambda v: _is_int(v, 0), "an int >= 0"),
            ("layer_names", lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
             "a list of layer names"),
            ("norms_linf", *norms), ("norms_l1", *norms),
            ("linf_norm_product", lambda v: _is_num(v) and not math.isnan(v) and v >= 0, "a product of norms >= 0"),
            ("robust_acc", *acc), ("aa_clean_acc", *acc), ("lip_mean", *lip_rule), ("lip_max", *lip_rule),
            ("attack", lambda v: v == cfg["attack"], f"the config's attack {cfg['attack']!r}"),
            ("eval_eps", lambda v: _is_num(v) and math.isclose(v, cfg["eval_eps"]), f"the config's {cfg['eval_eps']}")]


def check_metrics(metrics, cfg: dict) -> list[str]:
    """Problems of ``metrics`` (as read back by :func:`nblib.results.read_json`) for the filled ``cfg``;
    empty when it may be returned.  A finished run (``status`` "done") needs: ``clean_acc``, ``train_acc``
    in [0, 1]; finite ``test_loss``, ``train_loss`` >= 0; ``epochs_trained == cfg["epochs"]``; positive
    integer ``n_train``, ``n_test``, ``n_params``, ``global_steps`` >= 0; ``layer_names`` (strings) and
    finite non-negative ``norms_linf`` / ``norms_l1`` of the same length; ``linf_norm_product`` >= 0 (inf
    allowed: an overflowing product); ``robust_acc`` and ``aa_clean_acc`` in [0, 1] when ``cfg`` attacks,
    else None; ``lip_mean`` / ``lip_max`` finite >= 0 with ``local_lipschitz``, else None; ``attack`` and
    ``eval_eps`` equal to the config's; the per-point outcomes :data:`OUTCOME_KEYS` (packed, of ``n_test`` /
    ``n_eval`` points, averaging to ``clean_acc`` / ``robust_acc``; ``robust_correct`` None without an attack:
    missing, :func:`nblib.runs.folders.run_status` calls the folder ``stale``).  A diverged run (``status``
    "diverged") needs a ``reason``, the
    epoch, and NaN (never a number) for the accuracies and losses it has no valid value for."""
    if not isinstance(metrics, dict):
        return [f"metrics is a {type(metrics).__name__}, not a dict"]
    status = metrics.get("status")
    if status == "diverged":
        rules = _diverged_rules(cfg)
    elif status == "done":
        rules = _done_rules(cfg, len(metrics["layer_names"]) if isinstance(metrics.get("layer_names"), list) else -1)
    else:
        return [f"status = {status!r} is not 'done' or 'diverged'"]
    problems = []
    for key, ok, what in rules:
        if key not in metrics:
            problems.append(f"{key} missing")
        elif not ok(metrics[key]):
            problems.append(f"{key} = {metrics[key]!r} is not {what}")
    for key, ok, what in _outcome_rules(cfg) if status == "done" else []:
        if key not in metrics:
            problems.append(f"{key} missing")
        elif not ok(metrics[key], metrics):
            problems.append(f"{key} = {str(metrics[key])[:40]!r}... is not {what}")
    return problems


def only_outcomes_missing(problems: list) -> bool:
    """``problems`` (of :func:`check_metrics`) say only that per-point outcomes are missing: a run of older
    code (stale), not a corrupt one."""
    return bool(problems) and all(p in [f"{k} missing" for k in OUTCOME_KEYS] for p in problems)
