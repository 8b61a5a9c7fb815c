"""Verdicts on Figure 2's claim: adversarially trained CNNs are far more robust than plain ones, with layer
norms comparable to or larger than theirs (so large norms do not hurt robustness).

Layer norms are compared layer by layer with the sign test of :mod:`nblib.claims.stats`, accuracies by their Wilson
intervals; every function returns one verdict per adversarially trained network and one over all of them.
"""
from __future__ import annotations

import pandas as pd

from nblib.vocabulary import ADV_LABELS
from nblib.claims.stats import compare_rates, is_missing, sign_test_p
from nblib.claims.verdict import FAILS, HOLDS, UNTESTABLE, Verdict, combine, require_columns


def norms_comparable_or_larger(plain: pd.Series, robust: pd.Series, claim: str, alpha: float = 0.05,
                               band: float = 1.25) -> Verdict:
    """Are a robust network's layer norms *comparable to or larger than* the plain network's? (Figure 2)

    ``plain``, ``robust``: norms indexed by layer name (the same layers).  Per layer, ``r_i = robust_i /
    plain_i``.  Definitions, strict so that the claim can fail:

    * **larger**: significantly more layers grew than shrank: one-sided sign test ``p < alpha``;
    * **comparable**: the median ratio lies in ``[1/band, band]`` (default within 25 %; the paper's plots
      span orders of magnitude, but a factor of 2 would call a halving of every norm "comparable");
    * **smaller**: significantly more layers shrank (sign test ``p < alpha``) *and* the median ratio is
      below ``1/band``.

    Holds when larger or comparable; does not hold when smaller; not testable otherwise (a median ratio
    outside the band that the sign test cannot confirm with this many layers: with ``n`` layers the smallest
    possible p is ``2^-n``, so fewer than 5 layers can never reach 0.05).
    """
    common = plain.index.intersection(robust.index)
    if len(common) != len(plain) or len(common) != len(robust):
        raise ValueError(f"{claim}: the two networks have different layers "
                         f"({sorted(set(plain.index) ^ set(robust.index))})")
    ratio = (robust[common] / plain[common]).astype(float)
    n = len(ratio)
    if n == 0:
        return Verdict(claim, UNTESTABLE, "no layers")
    n_up, n_down = int((ratio > 1).sum()), int((ratio < 1).sum())
    m = n_up + n_down  # ties carry no sign
    p_up = sign_test_p(n_up, m) if m else 1.0
    p_down = sign_test_p(n_down, m) if m else 1.0
    med = float(ratio.median())
    nums = dict(n_layers=n, n_larger=n_up, n_smaller=n_down, p_larger=p_up, p_smaller=p_down,
                median_ratio=med, band=band, alpha=alpha)
    if p_up < alpha:
        return Verdict(claim, HOLDS, f"larger: {n_up} of {n} layers grew (sign test p = {p_up:.3f})", nums)
    if 1 / band <= med <= band:
        return Verdict(claim, HOLDS, f"comparable: median ratio {med:.2f} within [{1 / band:.2f}, {band:g}]", nums)
    if p_down < alpha and med < 1 / band:
        return Verdict(claim, FAILS, f"smaller: {n_down} of {n} layers shrank (p = {p_down:.3f}), median ratio "
                                     f"{med:.2f}", nums)
    return Verdict(claim, UNTESTABLE, f"median ratio outside [{1 / band:.2f}, {band:g}] but a sign test over {n} "
                                      f"layers cannot confirm it at {alpha:g}", nums)


def figure2_norms(norms: pd.DataFrame, column: str = "linf", view: str = "l_inf", alpha: float = 0.05,
                  band: float = 1.25) -> list[Verdict]:
    """:func:`norms_comparable_or_larger` for every adversarially trained run against its model's plain run,
    then the claim over all of them (:func:`combine`).  ``norms``: long table with ``model``, ``adv_mode``,
    ``layer`` and ``column``."""
    require_columns(norms, ["model", "adv_mode", "layer", column], "figure2_norms")
    out = []
    for model, g in norms.groupby("model", sort=False):
        by = {mode: h.set_index("layer")[column] for mode, h in g.groupby("adv_mode", sort=False)}
        if "plain" not in by:
            raise ValueError(f"model {model!r} has no plain run: Figure 2 compares with it")
        for mode in [m for m in by if m != "plain"]:
            out.append(norms_comparable_or_larger(
                by["plain"], by[mode], f"{model} {ADV_LABELS.get(mode, mode)}: {view} layer norms comparable to "
                                       "or larger than plain", alpha, band))
    return out + [combine(f"adversarially trained nets have {view} layer norms comparable to or larger than "
                          "plain ones", out)]


def figure2_more_robust(summary: pd.DataFrame, confidence: float = 0.95) -> list[Verdict]:
    """Every adversarially trained net is more robust than its plain counterpart: robust accuracy (fraction,
    ``robust_acc``, over ``n_eval`` attacked points) above plain's beyond both Wilson intervals."""
    require_columns(summary, ["model", "adv_mode", "robust_acc", "n_eval"], "figure2_more_robust")
    out = []
    for model, g in summary.groupby("model", sort=False):
        g = g.set_index("adv_mode")
        for mode in [m for m in g.index if m != "plain"]:
            claim = f"{model} {ADV_LABELS.get(mode, mode)} more robust than plain"
            a, b = g.loc[mode], g.loc["plain"]
            if any(is_missing(v) for v in (a.robust_acc, b.robust_acc, a.n_eval, b.n_eval)):
                out.append(Verdict(claim, UNTESTABLE, "robust accuracy not measured"))
                continue
            rel = compare_rates(a.robust_acc, int(a.n_eval), b.robust_acc, int(b.n_eval), confidence)
            nums = dict(robust=float(a.robust_acc), plain=float(b.robust_acc), n=int(a.n_eval), relation=rel)
            outcome = {"higher": HOLDS, "lower": FAILS, "overlap": UNTESTABLE}[rel]
            reason = {"higher": "above plain beyond the intervals", "lower": "below plain beyond the intervals",
                      "overlap": f"intervals of {int(a.n_eval)} attacked points overlap"}[rel]
            out.append(Verdict(claim, outcome, reason, nums))
    return out + [combine("adversarially trained nets are more robust than plain ones", out)]


def figure2_local_lipschitz(summary: pd.DataFrame, margin: float = 0.1) -> list[Verdict]:
    """Every adversarially trained net has a smaller empirical local Lipschitz constant than plain
    (``lip_mean``, a mean of per-point lower bounds, ``nblib.attacks.lipschitz.local_lipschitz``).  No interval: the
    per-point values are not stored, so a ratio within ``1 +- margin`` of 1 is not testable; below
    ``1 - margin`` holds, above ``1 + margin`` does not."""
    require_columns(summary, ["model", "adv_mode", "lip_mean"], "figure2_local_lipschitz")
    out = []
    for model, g in summary.groupby("model", sort=False):
        g = g.set_index("adv_mode")
        for mode in [m for m in g.index if m != "plain"]:
            claim = f"{model} {ADV_LABELS.get(mode, mode)} smaller local Lipschitz estimate than plain"
            plain_lip, lip = g.loc["plain", "lip_mean"], g.loc[mode, "lip_mean"]
            if is_missing(lip) or is_missing(plain_lip) or not plain_lip > 0:
                out.append(Verdict(claim, UNTESTABLE, "local Lipschitz estimate not measured"))
                continue
            ratio = float(g.loc[mode, "lip_mean"] / g.loc["plain", "lip_mean"])
            nums = dict(ratio=ratio, margin=margin)
            if ratio < 1 - margin:
                out.append(Verdict(claim, HOLDS, f"ratio {ratio:.2f}", nums))
            elif ratio > 1 + margin:
                out.append(Verdict(claim, FAILS, f"ratio {ratio:.2f}", nums))
            else:
                out.append(Verdict(claim, UNTESTABLE, f"ratio within {margin:g} of 1", nums))
    return out + [combine("adversarially trained nets have smaller local Lipschitz estimates", out)]
