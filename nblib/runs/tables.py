"""Tables read from the folders of finished runs (:func:`nblib.runs.sweep.run_sweep`'s ``run_dir`` column).

Every function takes a sweep result table and returns a long DataFrame: the exact layer norms of each run's
final weights (Theorem 1, ``nblib.norms``, stored in ``metrics.json``), their per-epoch history
(``history.json``, the curves of the paper's appendix), robust accuracies at extra radii, and the authors'
l1-with-BatchNorm view of Figure 2 from the checkpoints.  A missing file names its run.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch

from nblib.models import build
from nblib.norms import layer_norms
from nblib.results import read_json, unpack_outcomes
from nblib.training.checkpoint import CHECKPOINT

#: The columns of the sweep table that name a run of notebooks 03 and 04 (a configuration and its seed).
RUN_KEYS = ("model", "regularizer", "reg_strength", "adv_mode", "seed")


def point_outcomes(results: pd.DataFrame, key: str) -> list:
    """Per run of a :func:`nblib.runs.sweep.run_sweep` table: the boolean array of its per-point outcomes
    ``key`` (``"clean_correct"`` over the test set, ``"robust_correct"`` over the attacked subset, packed by
    ``nblib.results.pack_outcomes``), or None where the run has none (no attack, or a stale run of older code
    kept with ``reuse_stale``: the claims then call its comparisons not testable instead of comparing
    accuracies unpaired)."""
    if key not in results:
        return [None] * len(results)
    return [unpack_outcomes(v) if isinstance(v, str) else None for v in results[key]]


def run_file(row, name: str) -> Path:
    """The file ``name`` of the run of one row of a :func:`nblib.runs.sweep.run_sweep` table; an error naming the run
    when it is missing (the run has not finished)."""
    path = Path(row.run_dir) / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the run {row.hash} has not finished; rerun the sweep")
    return path


def _run_files(results: pd.DataFrame, name: str):
    """Yield ``(row, parsed JSON of run_dir/name)`` for every row of a :func:`nblib.runs.sweep.run_sweep` table."""
    for row in results.itertuples(index=False):
        yield row, read_json(run_file(row, name))


def layer_norm_frame(results: pd.DataFrame, keys=RUN_KEYS) -> pd.DataFrame:
    """Long table of the final exact layer norms of every run: the ``keys`` columns of ``results``, then
    ``layer`` (module name), ``depth`` (0-based position among the Conv2d / Linear layers), ``linf`` and
    ``l1`` (operator norms at the layer's input size, Theorem 1 / ``nblib.norms``), read from each run's
    ``metrics.json``."""
    rows = []
    for row, m in _run_files(results, "metrics.json"):
        base = {k: getattr(row, k) for k in keys}
        for depth, (name, linf, l1) in enumerate(zip(m["layer_names"], m["norms_linf"], m["norms_l1"])):
            rows.append({**base, "layer": name, "depth": depth, "linf": linf, "l1": l1})
    return pd.DataFrame(rows)


def extra_robust_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Long table of the robust accuracies at the extra radii of each run (``cfg["extra_eval_eps"]``, read
    from ``metrics.json``): model, regularizer, strength, seed, ``eps`` (l_inf radius), ``robust`` (%) and
    ``n_robust`` (attacked points).  Empty (with these columns) when no run has extra radii."""
    rows = []
    for row, m in _run_files(results, "metrics.json"):
        for eps, acc in (m.get("robust_acc_extra") or {}).items():
            rows.append(dict(model=row.model, regularizer=row.regularizer, strength=float(row.reg_strength),
                             seed=row.seed, eps=float(eps), robust=math.nan if acc is None else 100 * acc,
                             n_robust=m["n_eval"]))
    return pd.DataFrame(rows, columns=["model", "regularizer", "strength", "seed", "eps", "robust", "n_robust"])


def l1_with_batchnorm_frame(results: pd.DataFrame, input_shape=(3, 32, 32),
                            keys=("model", "adv_mode", "seed")) -> pd.DataFrame:
    """The authors' Figure 2 view: the l1 norms of every Conv2d, Linear *and BatchNorm* layer of each run's
    final checkpoint (``nblib.norms.layer_norms(..., include_batchnorm=True)``; a BatchNorm layer in eval
    mode is diagonal, its norm ``max |gamma| / sqrt(var + eps)``).  The paper's text plots l_inf norms of the
    Conv2d / Linear layers (:func:`layer_norm_frame`).  Columns: the ``keys``, ``layer``, ``kind``, ``depth``
    (position in module order) and ``norm``."""
    rows = []
    for row in results.itertuples(index=False):
        path = run_file(row, CHECKPOINT)
        net = build(row.model, num_classes=10)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        net.eval()
        table = layer_norms(net, input_shape, 1, include_batchnorm=True)
        base = {k: getattr(row, k) for k in keys}
        rows += [{**base, "layer": r.name, "kind": r.kind, "depth": d, "norm": r.norm}
                 for d, r in enumerate(table.itertuples(index=False))]
    return pd.DataFrame(rows, columns=[*keys, "layer", "kind", "depth", "norm"])


def layer_history_frame(results: pd.DataFrame, keys=RUN_KEYS) -> pd.DataFrame:
    """Per-epoch exact norms of every layer of every run (``history.json``; the appendix's curves): the
    ``keys`` columns, ``epoch``, ``layer``, ``depth`` (0-based position among the Conv2d / Linear layers),
    ``linf`` and ``l1``."""
    rows = []
    for row, hist in _run_files(results, "history.json"):
        base = {k: getattr(row, k) for k in keys}
        for h in hist:
            for depth, (name, linf) in enumerate(h["norms_linf"].items()):
                rows.append({**base, "epoch": h["epoch"], "layer": name, "depth": depth, "linf": linf,
                             "l1": h["norms_l1"][name]})
    return pd.DataFrame(rows)
