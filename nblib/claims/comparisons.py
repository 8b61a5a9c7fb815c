"""A run against its baseline (a regularised or adversarially trained run against the plain run of its model):
paired when both runs kept their per-point outcomes, on intervals when only published numbers exist, and the
decision over a family of such comparisons with its level and sidedness spelled out.

A table of comparisons (:func:`compare`) has one row per run with ``method``:

* ``"paired"`` -- both runs have per-point outcomes (a column ``<acc>_points`` of boolean arrays): the exact
  McNemar test (:func:`nblib.claims.stats.mcnemar`), one-sided p-values ``p_higher`` / ``p_lower``;
* ``"unpaired"`` -- the table has no ``<acc>_points`` column (the paper's published Table 2): disjoint two-sided
  95 % Wilson intervals (:func:`nblib.claims.stats.compare_rates`) in ``interval``;
* ``"missing"`` -- the table has the column but a run lacks the outcomes (a stale run of older code kept with
  ``reuse_stale``): never compared unpaired, the comparison is not testable.

:func:`decide` turns a family of comparisons into ``relation`` ("higher", "lower", "neither", "missing") at level
``alpha``, Holm-corrected over the family when the claim is existential, and :func:`rule` says how in words.

**Seeds.**  With runs of several training seeds, each run is compared with the plain run *of its seed* (same
test points, same attacked subset) and :func:`across_seeds` makes one row per configuration: a direction is
concluded only when the one-sided test rejects at ``alpha`` in *every* seed, an intersection-union test whose
p-value is the largest of the seeds' p-values (level ``alpha`` without any correction for the conjunction, and
an effect one seed's luck cannot make).  Those p-values enter :func:`decide` and Holm's correction as one
comparison per configuration.  With one seed nothing changes: one row per run, as before.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from nblib.claims.stats import compare_rates, holm, mcnemar

COMPARISON_COLUMNS = ["method", "p_higher", "p_lower", "n_run_only", "n_base_only", "interval"]


def has_points(v) -> bool:
    """``v`` is a per-point outcome array (not None / NaN)."""
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def compare(run: dict, base: dict, acc: str, n_col: str, percent: bool, paired: bool) -> dict:
    """The comparison of ``run`` with ``base`` (rows as dicts) on accuracy ``acc`` over ``n_col`` points
    (``percent``: accuracies in %); ``paired``: the table has the ``<acc>_points`` column."""
    out = dict(method="missing", p_higher=math.nan, p_lower=math.nan, n_run_only=math.nan, n_base_only=math.nan,
               interval=None)
    if paired:
        a, b = run.get(f"{acc}_points"), base.get(f"{acc}_points")
        if has_points(a) and has_points(b):
            m = mcnemar(a, b)
            out.update(method="paired", p_higher=m["p_higher"], p_lower=m["p_lower"], n_run_only=m["n_a_only"],
                       n_base_only=m["n_b_only"])
        return out
    scale = 100.0 if percent else 1.0
    out.update(method="unpaired", interval=compare_rates(run[acc] / scale, int(run[n_col]), base[acc] / scale,
                                                         int(base[n_col])))
    return out


def n_seeds(frame: pd.DataFrame) -> int:
    """How many training seeds the runs of ``frame`` have: its ``seed`` column's distinct values, 1 without one
    (the paper's published table)."""
    return int(frame["seed"].nunique()) if "seed" in frame and len(frame) else 1


def across_seeds(pairs: pd.DataFrame, keys) -> pd.DataFrame:
    """Per-seed comparisons (one row per configuration ``keys`` and ``seed``, each against the plain run of its
    seed) as one row per configuration: the intersection-union test over the seeds.

    ``p_higher`` / ``p_lower`` are the largest of the seeds' one-sided p-values (below ``alpha`` exactly when
    every seed rejects at ``alpha``); ``method`` is "paired" when every seed is, "missing" when a seed lacks
    its outcomes; ``value`` and ``plain`` are means over the seeds, ``n_run_only`` / ``n_base_only`` sums, and
    ``n_seeds``, ``seeds``, ``p_higher_seeds``, ``p_lower_seeds`` keep what each seed gave.  With one seed (or no
    ``seed`` column) ``pairs`` is returned without its ``seed`` column, unchanged otherwise."""
    if n_seeds(pairs) <= 1:
        return pairs.drop(columns=["seed"], errors="ignore")
    rows = []
    for key, g in pairs.groupby(list(keys), sort=False):
        paired = (g.method == "paired").all()
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        for col in [c for c in pairs.columns if c not in row and c != "seed"]:
            row[col] = g[col].iloc[0]
        for col in ("value", "plain"):
            if col in g:
                row[col] = float(g[col].mean())
        row.update(method="paired" if paired else "missing" if (g.method == "missing").any() else g.method.iloc[0],
                   p_higher=float(g.p_higher.max()) if paired else math.nan,
                   p_lower=float(g.p_lower.max()) if paired else math.nan,
                   n_run_only=float(g.n_run_only.sum()) if paired else math.nan,
                   n_base_only=float(g.n_base_only.sum()) if paired else math.nan,
                   n_seeds=len(g), seeds=list(g.seed), p_higher_seeds=list(g.p_higher), p_lower_seeds=list(g.p_lower))
        rows.append(row)
    return pd.DataFrame(rows)


def decide(pairs: pd.DataFrame, alpha: float, correct: bool) -> pd.DataFrame:
    """``pairs`` with ``relation``: "higher" / "lower" when the one-sided McNemar p-value of that direction
    (Holm-adjusted over the family's paired rows, per direction, when ``correct``) is below ``alpha``, or the
    unpaired intervals are disjoint; "neither" otherwise; "missing" without outcomes."""
    paired = pairs.method == "paired"
    adj = {}
    for side in ("p_higher", "p_lower"):
        p = pairs[side].to_numpy(dtype=float)
        adj[side] = np.where(paired, holm(np.where(paired, p, np.nan)) if correct else p, np.nan)
    relation = []
    for i, (method, interval) in enumerate(zip(pairs.method, pairs.interval)):
        if method == "paired":
            relation.append("higher" if adj["p_higher"][i] < alpha else
                            "lower" if adj["p_lower"][i] < alpha else "neither")
        elif method == "unpaired":
            relation.append("neither" if interval == "overlap" else interval)
        else:
            relation.append("missing")
    return pairs.assign(relation=relation, p_higher_adj=adj["p_higher"], p_lower_adj=adj["p_lower"])


def rule(pairs: pd.DataFrame, alpha: float, correct: bool, sided: str = "one-sided") -> str:
    """The test behind a decision, in words: "one-sided exact McNemar per run against plain, Holm-corrected over
    16 comparisons, alpha 0.05" or the unpaired rule of published numbers; with several seeds
    (:func:`across_seeds`) "... against plain of the same seed, at alpha 0.05 in each of 2 seeds
    (intersection-union ...)"."""
    n = int((pairs.method == "paired").sum())
    if (pairs.method == "unpaired").any():
        return ("unpaired (published accuracies, no per-point outcomes): disjoint two-sided 95% Wilson intervals, "
                f"not corrected over {len(pairs)} comparisons")
    seeds = int(pairs.n_seeds.max()) if "n_seeds" in pairs and len(pairs) else 1
    if seeds > 1:
        corr = (f"Holm-corrected over {n} configurations" if correct
                else "uncorrected, each configuration at its own level")
        return (f"{sided} exact McNemar test on the discordant points against plain of the same seed, at alpha "
                f"{alpha:g} in each of {seeds} seeds (intersection-union: a configuration's p-value is the largest "
                f"of its seeds'), {corr}")
    corr = f"Holm-corrected over {n} comparisons" if correct else "uncorrected, each run at its own level"
    return f"{sided} exact McNemar test on the discordant points against plain, {corr}, alpha {alpha:g}"


def units(pairs: pd.DataFrame) -> str:
    """What a row of ``pairs`` is, for a reason's counts: "runs", or "configurations" with several seeds."""
    return "configurations" if "n_seeds" in pairs and len(pairs) and pairs.n_seeds.max() > 1 else "runs"


def counts(pairs: pd.DataFrame) -> dict:
    """How many comparisons went each way."""
    return {rel: int((pairs.relation == rel).sum()) for rel in ("higher", "lower", "neither", "missing")}


def missing_text(c: dict) -> str:
    """"; 2 runs without per-point outcomes (stale: rerun them)" when some are missing, else ""."""
    return (f"; {c['missing']} run(s) without per-point outcomes (stale results of older code: rerun them)"
            if c["missing"] else "")

