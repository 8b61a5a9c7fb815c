"""Verdicts on Figure 2's claim beyond the paper, on RobustBench's published CIFAR-10 models (notebook 06):
robust models have layer norms comparable to or larger than standard models of the same architecture, and
whether a norm statistic tracks robust (AutoAttack) accuracy.

A network with random weights says nothing about either claim: every verdict on such a table is "not testable
(random weights)", never a verdict on untrained networks.
"""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from nblib.claims.figure2 import BAND, across_networks, median_log_ratio, network_verdict
from nblib.claims.verdict import FAILS, HOLDS, UNTESTABLE, Verdict, require_columns

RANDOM = "random weights: the architectures were built offline without their published weights"
MIN_MODELS = 8  # fewest robust models for a rank correlation to be judged
PAIRS_CLAIM = "robust models have layer norms comparable to or larger than standard ones of the same architecture"


def robust_vs_standard(norms: pd.DataFrame, pairs: pd.DataFrame, random_weights: bool, column: str = "linf",
                       view: str = "l_inf", alpha: float = 0.05, band: float = BAND) -> list[Verdict]:
    """Per pair (``pairs``: ``threat_model``, ``entry``, ``standard`` entry of the same architecture), the
    robust model's ``column`` norms against the standard model's as Figure 2 judges one network
    (:func:`nblib.claims.figure2.network_verdict`: the median layer ratio against ``1/band``, exact norms, no
    test inside a network), then the claim over every pair as Figure 2 judges it across networks
    (:func:`nblib.claims.figure2.across_networks`: a one-sided sign test over the pairs).  ``norms``: long table
    with ``key`` (``<threat model>/<entry>``), ``layer``, ``column`` (rows without a norm, e.g. layers never
    reached, are left out of both sides)."""
    require_columns(norms, ["key", "layer", column], "robust_vs_standard")
    out, log_ratios = [], []
    by = {k: g.dropna(subset=[column]).set_index("layer")[column] for k, g in norms.groupby("key")}
    for pair in pairs.itertuples(index=False):
        claim = f"{pair.threat_model}/{pair.entry}: {view} layer norms comparable to or larger than {pair.standard}"
        if random_weights:
            out.append(Verdict(claim, UNTESTABLE, RANDOM))
            continue
        log_ratio = median_log_ratio(by[f"{pair.threat_model}/{pair.standard}"],
                                     by[f"{pair.threat_model}/{pair.entry}"], claim)
        log_ratios.append(log_ratio)
        out.append(network_verdict(claim, log_ratio, band))
    claim = f"{PAIRS_CLAIM} ({view})"
    overall = (Verdict(claim, UNTESTABLE, RANDOM) if random_weights or not log_ratios else
               across_networks(claim, log_ratios, band, alpha))
    return out + [overall]


def norms_vs_robust_accuracy(summary: pd.DataFrame, statistic: str, random_weights: bool,
                             alpha: float = 0.05) -> list[Verdict]:
    """Do larger layer norms go with lower robust accuracy?  Per threat model, over the robust models
    (``summary``: ``threat_model``, ``role``, ``autoattack_acc``, ``statistic``), Spearman's rank correlation of
    ``statistic`` with the leaderboard's AutoAttack accuracy.  The paper's claim ("large norms do not hurt
    robustness") **does not hold** when the correlation is negative with ``p < alpha``; it **holds** when it
    is not (no significant negative association) over at least :data:`MIN_MODELS` models; with fewer models,
    missing accuracies or random weights it is not testable."""
    require_columns(summary, ["threat_model", "role", "autoattack_acc", statistic], "norms_vs_robust_accuracy")
    out = []
    for threat, g in summary[summary.role == "robust"].groupby("threat_model", sort=False):
        claim = f"{threat}: larger {statistic} does not go with lower AutoAttack accuracy"
        g = g.dropna(subset=["autoattack_acc", statistic])
        if random_weights:
            out.append(Verdict(claim, UNTESTABLE, RANDOM))
            continue
        if len(g) < MIN_MODELS:
            out.append(Verdict(claim, UNTESTABLE, f"{len(g)} robust models with an accuracy, fewer than "
                                                  f"{MIN_MODELS}", dict(n_models=len(g))))
            continue
        rho, p = stats.spearmanr(g[statistic], g.autoattack_acc)
        nums = dict(n_models=len(g), spearman_rho=float(rho), p=float(p), alpha=alpha)
        if math.isnan(rho):
            out.append(Verdict(claim, UNTESTABLE, "a constant column: no rank correlation", nums))
        elif rho < 0 and p < alpha:
            out.append(Verdict(claim, FAILS, f"Spearman rho {rho:.2f} (p = {p:.3f}) over {len(g)} models", nums))
        else:
            out.append(Verdict(claim, HOLDS, f"no significant negative association: Spearman rho {rho:.2f} "
                                             f"(p = {p:.3f}) over {len(g)} models", nums))
    return out
