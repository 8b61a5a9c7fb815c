"""Statistics of the verdicts: binomial intervals of accuracies and the sign test of paired layer norms.

* **Accuracies are binomial proportions.**  A clean accuracy over ``n`` test images or a robust accuracy over
  ``n`` attacked points has the Wilson score interval :func:`wilson_interval` (95 % by default).  Two
  accuracies *differ* only when their intervals are disjoint (:func:`compare_rates`); overlapping intervals
  decide nothing.  (Disjoint 95 % intervals are a conservative test, about p < 0.006 for equal ``n``.)
* **Layer norms are paired by layer.**  Two networks of one architecture have the same layers; the sign test
  (:func:`sign_test_p`) asks whether more layers are larger (or smaller) than chance allows.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import pandas as pd


def is_missing(v) -> bool:
    """``None`` or a float NaN: a number that was not measured."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n``:
    ``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``z`` the normal quantile."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


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
    """``"higher"`` / ``"lower"`` when the Wilson intervals of ``a`` (of ``n_a``) and ``b`` are disjoint
    with ``a`` above / below, ``"overlap"`` otherwise."""
    lo_a, hi_a = rate_interval(a, n_a, confidence)
    lo_b, hi_b = rate_interval(b, n_b, confidence)
    if lo_a > hi_b:
        return "higher"
    if hi_a < lo_b:
        return "lower"
    return "overlap"


def sign_test_p(k: int, n: int) -> float:
    """One-sided sign test: ``P(Bin(n, 1/2) >= k)``, the chance that ``k`` or more of ``n`` fair coin flips
    come up heads."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n
