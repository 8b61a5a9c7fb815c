"""Statistics of the verdicts, from scipy: binomial intervals, the exact paired test of two runs (McNemar), the
sign test, Spearman's rank correlation and Holm's correction for claims over many comparisons.

* **Two runs on the same points are paired.**  Each run stores which test images it classifies correctly and
  which attacked points survive (``nblib.results.pack_outcomes``); two runs differ only on the *discordant*
  points (one right, the other wrong).  :func:`mcnemar` is the exact McNemar test: under "no difference" each of
  the ``b + c`` discordant points is a fair coin, ``scipy.stats.binomtest(b, b + c, 0.5)``, one-sided where the
  claim is.  It is far more powerful than comparing two intervals: most points are right (or wrong) in both runs.
* **Published accuracies are not paired.**  The paper's Table 2 has no per-point outcomes; its numbers are
  compared by their Wilson score intervals (:func:`wilson_interval`, ``binomtest(k, n).proportion_ci(method=
  "wilson")``), disjoint two-sided 95 % intervals counting as a difference (:func:`compare_rates`; a
  conservative rule, about p < 0.006 for equal ``n``).
* **Claims over many comparisons.**  "At some strength" is an existential claim: it holds when *one* of ``m``
  comparisons rejects, so the p-values are corrected with Holm's step-down procedure (:func:`holm`), which keeps
  the chance of any false rejection below ``alpha`` (family-wise).
* **Layer norms are exact**; what varies is the network.  :func:`sign_test_p` asks whether more networks (or
  layers) went one way than chance allows.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats


def is_missing(v) -> bool:
    """``None`` or a float NaN: a number that was not measured."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval of a binomial proportion ``k / n`` (scipy's
    ``binomtest(k, n).proportion_ci(confidence, method="wilson")``)."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def rate_interval(rate: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """:func:`wilson_interval` of an accuracy given as a fraction ``rate`` of ``n`` points."""
    if not 0 <= rate <= 1:
        raise ValueError(f"an accuracy is a fraction in [0, 1], got {rate} (percentages: divide by 100)")
    return wilson_interval(int(round(rate * n)), int(n), confidence)


def with_intervals(frame: pd.DataFrame, acc: str, n: str, percent: bool = True,
                   confidence: float = 0.95) -> pd.DataFrame:
    """``frame`` with columns ``<acc>_lo`` and ``<acc>_hi``: the Wilson interval of each accuracy (in % when
    ``percent``) over the ``n`` column's number of points; NaN where the accuracy is missing."""
    scale = 100.0 if percent else 1.0
    lo, hi = [], []
    for a, k in zip(frame[acc], frame[n]):
        if is_missing(a) or is_missing(k):
            lo.append(math.nan), hi.append(math.nan)
            continue
        ci = rate_interval(a / scale, int(k), confidence)
        lo.append(scale * ci[0]), hi.append(scale * ci[1])
    return frame.assign(**{f"{acc}_lo": lo, f"{acc}_hi": hi})


def compare_rates(a: float, n_a: int, b: float, n_b: int, confidence: float = 0.95) -> str:
    """Unpaired: ``"higher"`` / ``"lower"`` when the two-sided Wilson intervals of ``a`` (of ``n_a``) and ``b``
    are disjoint with ``a`` above / below, ``"overlap"`` otherwise."""
    lo_a, hi_a = rate_interval(a, n_a, confidence)
    lo_b, hi_b = rate_interval(b, n_b, confidence)
    if lo_a > hi_b:
        return "higher"
    if hi_a < lo_b:
        return "lower"
    return "overlap"


def mcnemar(a, b) -> dict:
    """Exact McNemar test of two runs' per-point outcomes ``a`` and ``b`` (booleans over the same points).

    ``n_a_only`` points are right in ``a`` only, ``n_b_only`` in ``b`` only; under "the runs are equally
    accurate" each discordant point is a fair coin.  ``p_higher``: one-sided p that ``a`` is more accurate,
    ``binomtest(n_a_only, n_a_only + n_b_only, 0.5, alternative="greater")``; ``p_lower`` the other side
    (both 1 without discordant points)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same points, got {a.size} and {b.size}")
    n_a, n_b = int((a & ~b).sum()), int((~a & b).sum())
    if n_a + n_b == 0:
        return dict(n_a_only=0, n_b_only=0, p_higher=1.0, p_lower=1.0)
    return dict(n_a_only=n_a, n_b_only=n_b,
                p_higher=float(stats.binomtest(n_a, n_a + n_b, 0.5, alternative="greater").pvalue),
                p_lower=float(stats.binomtest(n_a, n_a + n_b, 0.5, alternative="less").pvalue))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values: sort ascending, ``p_(i) * (m - i + 1)``, running maximum, capped at 1.
    Rejecting where the adjusted p < alpha keeps the family-wise error rate at most ``alpha`` (any
    dependence between the tests).  NaN p-values are left out of the family and stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, p[idx] * (m - i)))
        out[idx] = running
    return out


def sign_test_p(k: int, n: int) -> float:
    """One-sided sign test: ``P(Bin(n, 1/2) >= k)`` (``binomtest(k, n, 0.5, alternative="greater")``), the
    chance that ``k`` or more of ``n`` fair coin flips come up heads; 1 when ``n`` is 0."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    return float(stats.binomtest(k, n, 0.5, alternative="greater").pvalue) if n else 1.0


def spearman(x, y) -> dict:
    """Spearman's rank correlation of ``x`` and ``y`` (``scipy.stats.spearmanr``, NaN pairs dropped) with its
    one-sided p-values: ``p_negative`` for rho < 0, ``p_positive`` for rho > 0 (NaN below 3 pairs)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return dict(rho=math.nan, p_negative=math.nan, p_positive=math.nan, n=int(x.size))
    neg, pos = stats.spearmanr(x, y, alternative="less"), stats.spearmanr(x, y, alternative="greater")
    return dict(rho=float(neg.statistic), p_negative=float(neg.pvalue), p_positive=float(pos.pvalue),
                n=int(x.size))
