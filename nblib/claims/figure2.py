"""Verdicts on Figure 2's claim: adversarially trained CNNs are far more robust than plain ones, with layer
norms comparable to or larger than theirs (so large norms do not hurt robustness).

The layers of one network are not independent samples (a conv and the BatchNorm after it move together), and
the norms are exact: each network gets **one** summary, the median over layers of ``log(robust / plain)`` layer
norm, and the claim across networks is a sign test over those summaries.  Robust accuracies are compared with
the exact paired McNemar test on the attacked points (:mod:`nblib.claims.comparisons`).

With several training seeds (a ``seed`` column), every trained network (model, mode, seed) is compared with the
plain network of its model and seed: in the sign test each counts as one independent network (each was trained
from its own initialisation and data order); "more robust" and "smaller local Lipschitz estimate" are concluded
for a (model, mode) only when every seed shows it (intersection-union).  One seed: as the paper.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from nblib.vocabulary import ADV_LABELS
from nblib.claims.comparisons import across_seeds, compare, decide, n_seeds, rule
from nblib.claims.stats import is_missing, sign_test_p
from nblib.claims.verdict import FAILS, HOLDS, UNTESTABLE, Verdict, combine, require_columns

#: The default comparability band: a network's layer norms are "comparable to or larger than" plain when their
#: median ratio (robust / plain, over layers) is at least ``1 / BAND``.  1.25 reads "comparable" as "at most 20 %
#: smaller in the median layer"; the paper gives no number (its log-scale plots span orders of magnitude), so the
#: band is a setting a notebook parameter can feed (``band=`` of :func:`figure2_norms`), not a finding.
BAND = 1.25


def median_log_ratio(plain: pd.Series, robust: pd.Series, what: str) -> float:
    """The one summary of a network: median over layers of ``log(robust_i / plain_i)`` (norms indexed by layer
    name; the same layers in both)."""
    common = plain.index.intersection(robust.index)
    if len(common) != len(plain) or len(common) != len(robust):
        raise ValueError(f"{what}: the two networks have different layers "
                         f"({sorted(set(plain.index) ^ set(robust.index))})")
    if len(common) == 0:
        return math.nan
    return float(np.median(np.log(robust[common].astype(float) / plain[common].astype(float))))


def network_verdict(claim: str, log_ratio: float, band: float) -> Verdict:
    """One network: its median layer ratio (exact norms, no sampling error) against the band, no test."""
    nums = dict(median_ratio=math.exp(log_ratio) if log_ratio == log_ratio else math.nan, band=band)
    if log_ratio != log_ratio:
        return Verdict(claim, UNTESTABLE, "no layers", nums)
    how = (f"median ratio {nums['median_ratio']:.2f} of the exact layer norms against 1/band = {1 / band:.2f}; "
           "one network, no test across its layers (they are not independent)")
    return Verdict(claim, HOLDS if log_ratio >= -math.log(band) else FAILS, how, nums)


def across_networks(claim: str, log_ratios: list, band: float, alpha: float, seeds: int = 1) -> Verdict:
    """The claim across networks: one-sided sign test of how many networks' median ratios reach ``1/band``;
    ``seeds``: the number of training seeds (with more than one, each (model, mode, seed) network is one)."""
    n = len(log_ratios)
    up = sum(r >= -math.log(band) for r in log_ratios)
    p_up, p_down = sign_test_p(up, n), sign_test_p(n - up, n)
    each = ("one median layer ratio each" if seeds == 1 else
            f"one median layer ratio each; every model, mode and seed of {seeds} is one independently trained "
            "network, against the plain network of its seed")
    how = f"one-sided sign test over {n} networks ({each}) against 1/band = {1 / band:.2f}, alpha {alpha:g} each way"
    nums = dict(n_networks=n, n_comparable_or_larger=up, p_comparable=p_up, p_smaller=p_down, band=band,
                alpha=alpha, rule=how)
    if p_up < alpha:
        return Verdict(claim, HOLDS, f"{up} of {n} networks comparable or larger, p = {p_up:.3g} ({how})", nums)
    if p_down < alpha:
        return Verdict(claim, FAILS, f"{n - up} of {n} networks smaller, p = {p_down:.3g} ({how})", nums)
    return Verdict(claim, UNTESTABLE, f"{up} of {n} networks comparable or larger: not significant either way "
                                      f"({how}; fewer than 5 networks can never reach 0.05)", nums)


def figure2_norms(norms: pd.DataFrame, column: str = "linf", view: str = "l_inf", alpha: float = 0.05,
                  band: float = BAND) -> list[Verdict]:
    """Are adversarially trained networks' layer norms comparable to or larger than plain ones'? (Figure 2)

    ``norms``: long table with ``model``, ``adv_mode``, ``layer`` and ``column``.  Per adversarially trained
    network, against its model's plain network: the median over layers of the norm ratio; **holds** when it is
    at least ``1 / band`` (comparable or larger), **does not hold** below (exact norms: a fact about this network,
    no test).  Across networks (the general claim): a one-sided sign test at ``alpha`` on how many networks
    reach ``1 / band``; holds / does not hold when significant, not testable otherwise.  ``band`` (default
    :data:`BAND`, 1.25) is the comparability band, a setting with the meaning stated there.  With several seeds
    (a ``seed`` column) each network is compared with the plain network of its seed, its claim names the seed,
    and each (model, mode, seed) is one network of the sign test.
    """
    require_columns(norms, ["model", "adv_mode", "layer", column], "figure2_norms")
    k = n_seeds(norms)
    norms = norms if "seed" in norms else norms.assign(seed=0)
    out, ratios = [], []
    for (model, seed), g in norms.groupby(["model", "seed"], sort=False):
        by = {mode: h.set_index("layer")[column] for mode, h in g.groupby("adv_mode", sort=False)}
        if "plain" not in by:
            raise ValueError(f"model {model!r} has no plain run" + (f" of seed {seed}" if k > 1 else "")
                             + ": Figure 2 compares with it")
        for mode in [m for m in by if m != "plain"]:
            network = f"{model} {ADV_LABELS.get(mode, mode)}" + (f" seed {seed}" if k > 1 else "")
            claim = f"{network}: {view} layer norms comparable to or larger than plain"
            ratios.append(median_log_ratio(by["plain"], by[mode], claim))
            out.append(network_verdict(claim, ratios[-1], band))
    summaries = [r for r in ratios if r == r]
    return out + [across_networks(f"adversarially trained nets have {view} layer norms comparable to or larger "
                                   "than plain ones", summaries, band, alpha, seeds=k)]


def _more_robust(claim: str, runs: list, bases: list, paired: bool, alpha: float) -> Verdict:
    """``runs[i]`` against ``bases[i]`` (the plain run of the same seed), one pair per seed; with several seeds a
    direction only when every seed shows it (:func:`nblib.claims.comparisons.across_seeds`)."""
    if any(is_missing(v) for run, base in zip(runs, bases)
           for v in (run["robust_acc"], base["robust_acc"], run["n_eval"], base["n_eval"])):
        return Verdict(claim, UNTESTABLE, "robust accuracy not measured")
    per_seed = pd.DataFrame([dict(network=0, seed=run.get("seed", 0),
                                  **compare(run, base, "robust_acc", "n_eval", False, paired))
                             for run, base in zip(runs, bases)])
    pairs = decide(across_seeds(per_seed, ["network"]).drop(columns=["network"]), alpha, correct=False)
    how = (rule(pairs, alpha, correct=False)
           .replace("uncorrected, each run at its own level", "each network its own claim")
           .replace("uncorrected, each configuration at its own level", "each (model, mode) its own claim"))
    rel, n = pairs.relation.iloc[0], int(runs[0]["n_eval"])
    nums = dict(robust=float(np.mean([r["robust_acc"] for r in runs])),
                plain=float(np.mean([b["robust_acc"] for b in bases])), n=n,
                relation=rel, rule=how, **pairs.drop(columns=["interval", "relation"]).iloc[0].to_dict())
    outcome = {"higher": HOLDS, "lower": FAILS, "neither": UNTESTABLE, "missing": UNTESTABLE}[rel]
    shown = "" if len(runs) == 1 else f" shown in each of {len(runs)} seeds"
    reason = {"higher": "more robust than plain", "lower": "less robust than plain",
              "neither": f"no difference{shown} at {n} attacked points",
              "missing": "no per-point outcomes (a stale result of older code: rerun it)"}[rel]
    return Verdict(claim, outcome, f"{reason} ({how})", nums)


def figure2_more_robust(summary: pd.DataFrame, alpha: float = 0.05) -> list[Verdict]:
    """Every adversarially trained net is more robust than its plain counterpart: robust accuracy (fraction,
    ``robust_acc``, over ``n_eval`` attacked points).  With per-point outcomes (a ``robust_acc_points``
    column): one-sided exact McNemar at ``alpha`` per network (holds above, does not hold below, each network
    its own claim; the overall claim needs every one, :func:`combine`); without the column: disjoint 95 % Wilson
    intervals; a run without its outcomes is not testable.  With several seeds (a ``seed`` column) each run is
    compared with the plain run of its seed, and a (model, mode) holds (does not hold) only when it is more (less)
    robust in every seed, an intersection-union test at ``alpha``."""
    require_columns(summary, ["model", "adv_mode", "robust_acc", "n_eval"], "figure2_more_robust")
    paired = "robust_acc_points" in summary
    summary = summary if "seed" in summary else summary.assign(seed=0)
    out = []
    for model, g in summary.groupby("model", sort=False):
        rows = {(r["adv_mode"], r["seed"]): r for r in g.to_dict("records")}
        for mode in [m for m in dict.fromkeys(g.adv_mode) if m != "plain"]:
            seeds = [s for m, s in rows if m == mode]
            missing = [s for s in seeds if ("plain", s) not in rows]
            if missing:
                raise ValueError(f"model {model!r} has no plain run of seed {missing}: Figure 2 compares with it")
            out.append(_more_robust(f"{model} {ADV_LABELS.get(mode, mode)} more robust than plain",
                                    [rows[(mode, s)] for s in seeds], [rows[("plain", s)] for s in seeds], paired,
                                    alpha))
    return out + [combine("adversarially trained nets are more robust than plain ones", out)]


def figure2_local_lipschitz(summary: pd.DataFrame, margin: float = 0.1) -> list[Verdict]:
    """Every adversarially trained net has a smaller empirical local Lipschitz constant than plain
    (``lip_mean``, a mean of per-point lower bounds, ``nblib.attacks.lipschitz.local_lipschitz``).  No interval: the
    per-point values are not stored, so a ratio within ``1 +- margin`` of 1 is not testable; below
    ``1 - margin`` holds, above ``1 + margin`` does not.  With several seeds: the ratio of each run to the plain
    run of its seed, and a (model, mode) holds (does not hold) only when every seed's ratio does."""
    require_columns(summary, ["model", "adv_mode", "lip_mean"], "figure2_local_lipschitz")
    summary = summary if "seed" in summary else summary.assign(seed=0)
    out = []
    for model, g in summary.groupby("model", sort=False):
        g = g.set_index(["adv_mode", "seed"])
        for mode in [m for m in dict.fromkeys(g.index.get_level_values(0)) if m != "plain"]:
            claim = f"{model} {ADV_LABELS.get(mode, mode)} smaller local Lipschitz estimate than plain"
            seeds = list(g.loc[mode].index)
            lips = [(g.loc[(mode, s), "lip_mean"], g.loc[("plain", s), "lip_mean"] if ("plain", s) in g.index
                     else math.nan) for s in seeds]
            if any(is_missing(lip) or is_missing(plain_lip) or not plain_lip > 0 for lip, plain_lip in lips):
                out.append(Verdict(claim, UNTESTABLE, "local Lipschitz estimate not measured"))
                continue
            ratios = [float(lip / plain_lip) for lip, plain_lip in lips]
            how = f"ratio of mean estimates against 1 +- {margin:g}, no test: per-point values not stored"
            if len(ratios) == 1:
                nums, said = dict(ratio=ratios[0], margin=margin, rule=how), f"ratio {ratios[0]:.2f}"
            else:
                how += f"; each of {len(ratios)} seeds against the plain run of its seed, every seed must agree"
                nums = dict(ratio=float(np.mean(ratios)), ratios=ratios, seeds=seeds, margin=margin, rule=how)
                said = "ratios " + ", ".join(f"{r:.2f}" for r in ratios)
            if all(r < 1 - margin for r in ratios):
                out.append(Verdict(claim, HOLDS, f"{said} ({how})", nums))
            elif all(r > 1 + margin for r in ratios):
                out.append(Verdict(claim, FAILS, f"{said} ({how})", nums))
            else:
                out.append(Verdict(claim, UNTESTABLE, f"{said} ({how})", nums))
    return out + [combine("adversarially trained nets have smaller local Lipschitz estimates", out)]
