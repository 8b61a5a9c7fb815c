"""One cost model for a profile's training runs: ``reproduce --plan``, ``benchmarks/train_throughput.py`` and
``gpu-check`` all price a run with :func:`run_seconds` and a profile with :func:`project`.

A run of config ``cfg`` (``E = cfg["epochs"]`` epochs of ``S = ceil(n_train / batch_size)`` steps, tested on
``n_test`` images after every epoch) costs, in seconds, the sum of

==============  ==========================================================================================
``train``       ``E S t_step``: the SGD steps of its model, adversarial mode and precision, data path included
``regularizer`` norm decay: ``E S t_nd`` (the subgradient and update added to each step);
                SVC: ``floor(E S / k) t_clip`` (one clip of every layer each ``k = reg_clip_every`` steps)
``test_pass``   ``E n_test / r_eval`` (a float32 forward pass over the test set after each epoch)
``norms``       ``E t_norms`` (the exact l_inf and l1 norm of every layer after each epoch)
``checkpoint``  ``E t_ckpt`` (model, optimiser, regulariser and RNG states written after each epoch)
``attack``      ``R t_AA`` with ``R = 1 + len(extra_eval_eps)`` AutoAttack radii on the same ``n_eval`` points
==============  ==========================================================================================

``rates`` (:data:`RATE_KEYS`) give ``t_step`` .. ``t_AA`` for the run: measured in its cache, probed on its device,
or estimated (:mod:`nblib.perf.reference`); each caller says which.  A profile's bill sums its runs; ``gpus``
(the sweep's workers, ``[0, 0, 1, 1]``: two runs at a time on each of two GPUs) divides it as

    GPU-hours = sum of run seconds / (3600 g),   wall hours = GPU-hours / (distinct GPUs),

with ``g`` the throughput gain of running ``len(gpus) / distinct GPUs`` runs at once on one GPU over running them
one after the other (1 for one run per GPU; measured by ``gpu-check``'s ``shared_gpu`` step, else 1: no gain
assumed, and the projection says so).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

from nblib.vocabulary import NORM_DECAY_P

__all__ = ["TERMS", "RATE_KEYS", "NOMINAL_SIZES", "run_seconds", "project", "project_hours"]

#: The cost terms of one run, in the order they are printed.
TERMS = ("train", "regularizer", "test_pass", "norms", "checkpoint", "attack")
#: What :func:`run_seconds` reads from ``rates``: seconds of one training step, the seconds norm decay adds to a
#: step, of one SVC clip, the test pass's images per second, seconds of the per-epoch norms and checkpoint,
#: seconds of one AutoAttack pass over the run's ``n_eval`` points at its budget.
RATE_KEYS = ("step_s", "nd_s", "clip_s", "eval_ips", "norms_s", "ckpt_s", "aa_s")
#: (training, test) images of each data set, for projections while the data is not there yet.
NOMINAL_SIZES = {"cifar10": (50_000, 10_000), "digits": (1437, 360)}


def run_seconds(cfg: dict, rates: dict, n_train: int, n_test: int) -> dict:
    """Seconds of each of :data:`TERMS` for the run ``cfg`` (filled by ``fill_cfg``) on ``n_train`` training
    images (after ``train_subset``) and ``n_test`` test images at ``rates`` (:data:`RATE_KEYS`; a regulariser's
    or the attack's key is read only when the run has one), plus ``total``."""
    epochs, steps = cfg["epochs"], cfg["epochs"] * math.ceil(n_train / cfg["batch_size"])
    if cfg["regularizer"] in NORM_DECAY_P:
        regularizer = steps * rates["nd_s"]
    elif cfg["regularizer"] == "svc":
        regularizer = steps // cfg["reg_clip_every"] * rates["clip_s"]
    else:
        regularizer = 0.0
    attack = 0.0 if cfg["attack"] == "none" else (1 + len(cfg["extra_eval_eps"])) * rates["aa_s"]
    out = dict(train=steps * rates["step_s"], regularizer=regularizer,
               test_pass=epochs * n_test / rates["eval_ips"], norms=epochs * rates["norms_s"],
               checkpoint=epochs * rates["ckpt_s"], attack=attack)
    out["total"] = sum(out[t] for t in TERMS)
    return out


def project(configs: dict, rates_of: Callable[[dict], dict], sizes: Optional[dict] = None,
            gpus: Sequence = (), shared_gain: Optional[float] = None) -> dict:
    """The bill of ``configs`` (``{notebook: [cfg, ...]}``, :func:`nblib.pipeline.plan.profile_configs`): per
    notebook the hours of each term (``{notebook: {term: hours, ..., "total": hours}}``), their sums under
    ``"all"``, and ``gpu_hours`` / ``wall_hours`` / ``basis`` of :func:`project_hours` for the sweep's workers ``gpus``.
    ``rates_of(cfg)`` gives a run's :data:`RATE_KEYS`; ``sizes`` maps a data set to its ``(n_train, n_test)``
    (default :data:`NOMINAL_SIZES`; ``train_subset`` caps ``n_train``)."""
    sizes = {**NOMINAL_SIZES, **(sizes or {})}
    out = {}
    for nb, cfgs in configs.items():
        hours = dict.fromkeys((*TERMS, "total"), 0.0)
        for cfg in cfgs:
            n_train, n_test = sizes[cfg["dataset"]]
            n_train = min(n_train, cfg["train_subset"] or n_train)
            for term, seconds in run_seconds(cfg, rates_of(cfg), n_train, n_test).items():
                hours[term] += seconds / 3600
        out[nb] = hours
    out["all"] = {t: sum(out[nb][t] for nb in configs) for t in (*TERMS, "total")}
    out.update(project_hours(out["all"]["total"], gpus, shared_gain))
    return out


def project_hours(hours: float, gpus: Sequence = (), shared_gain: Optional[float] = None) -> dict:
    """``hours`` of runs one after the other on one device as ``gpu_hours`` and ``wall_hours`` on the sweep's
    workers ``gpus`` (``[]``: one device, one run at a time; ``[0, 0, 1, 1]``: two runs at a time on each of two
    GPUs) with ``shared_gain`` (the module docstring; None: 1, not measured), and ``basis`` saying which."""
    distinct = len(set(gpus)) or 1
    per_gpu = max(len(gpus), 1) / distinct
    if per_gpu == 1:
        gain, basis = 1.0, f"{distinct} device(s), one run at a time on each"
    elif shared_gain is None:
        gain, basis = 1.0, (f"{distinct} device(s), {per_gpu:g} runs at a time on each at no assumed gain over one "
                            "at a time (not measured: gpu-check's shared_gpu step measures it)")
    else:
        gain, basis = float(shared_gain), (f"{distinct} device(s), {per_gpu:g} runs at a time on each at a "
                                           f"measured gain of {shared_gain:.3g}")
    if not gain > 0:
        raise ValueError(f"shared_gain must be > 0, got {shared_gain}")
    return {"gpu_hours": hours / gain, "wall_hours": hours / gain / distinct, "gpus": list(gpus), "basis": basis}
