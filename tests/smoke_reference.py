"""A fresh smoke run of a notebook against the committed ``outputs/smoke`` (the reference), with tolerances
that say what another machine may change and what it may not.

A training run on a CPU does not repeat bit for bit: another CPU capability (``ATEN_CPU_CAPABILITY``), thread
count or torch build sums in another order, and after a few SGD steps the weights are those of another draw
of the same experiment. (Observed for the smoke profile's plain run of notebook 03: 99.2 % clean accuracy in
a fresh run on a 2-core AVX512 machine with 2 threads, 98.6 % there under ``avx2`` with 1 thread, 98.3 %
committed (machine not recorded then); their per-epoch accuracies part after the first epoch.) Hence:

* **Exact**: what does not depend on the weights: the claims judged (names and order), the settings, the layer
  counts, the run count.
* **An accuracy** over ``n`` points may move by ``K = 4`` standard errors of the difference of two independent
  binomial proportions, ``K sqrt(2 p (1 - p) / n)``, with ``p`` the committed value clipped to
  ``[1/n, 1 - 1/n]`` (a 0 % or 100 % still has the spread of one point): a false alarm has odds of about
  6e-5 per number. (This is wide on 20 or 100 attacked points: that is what they can tell.)
* **A run that did not converge** (committed clean accuracy below :data:`CONVERGED`) is not a draw with a
  binomial spread: its accuracies are only checked to be percentages. (Observed: smoke's SVC at c = 0.5
  reached 34.7 % clean accuracy under ``avx2`` against 83.1 % committed; its converged runs moved by less
  than their tolerances.)
* **An outcome** must be the committed one unless the committed numbers lie within the tolerances below of the
  decision's boundary (the verdict is *fragile*); then any of the three outcomes is allowed.

  - two runs compared point by point (McNemar, ``method`` "paired"): fragile unless the committed difference
    of the two accuracies exceeds :data:`PAIRED_MARGIN` times the sum of their tolerances (a retrained pair then
    keeps the sign of its difference with room to spare; closer than that, significance may come or go);
  - accuracies compared by their Wilson intervals (``relation`` higher / lower / overlap, published numbers):
    fragile when the relation changes as each accuracy moves by its tolerance;
  - the median ratio of one network's layer norms to plain's: fragile within a factor :data:`NORM_RATIO_TOL`
    of ``1/band``; the sign test across networks: fragile when one network changing sides moves it across
    ``alpha``;
  - a Spearman rank correlation over the runs (the trade-off): fragile unless its smaller one-sided p-value
    lies a factor :data:`SPEARMAN_P_FACTOR` beyond ``alpha`` (below ``alpha / 10``, or above ``10 alpha``):
    over 9 smoke runs, two runs swapping ranks within their tolerances moves rho by up to 0.5 (observed
    under ``avx2``: 0.77, p = 0.007, became 0.42);
  - a mean local Lipschitz ratio: fragile within a factor :data:`LIPSCHITZ_RATIO_TOL` of ``1 -+ margin``;
  - a change of a mean log10 layer norm: fragile within :data:`LOG10_NORM_TOL` of 0;
  - "about 0 % robust": fragile when the largest robust accuracy is within its tolerance of the ceiling;
  - a claim that combines the parts before it: fragile when one of them is.

Besides, a fresh run's verdicts must agree with its own tables, checked here without ``nblib.claims``:
each compared accuracy is the table's number; a paired comparison's discordant counts are those of the
per-point outcomes stored with the tables, and its one-sided p-values are scipy's exact binomial test of them;
an unpaired one's relation is the one scipy's Wilson intervals give; a combined claim's counts and outcome
follow from its parts.
"""
from __future__ import annotations

import base64
import math

import pandas as pd
from scipy.stats import binomtest

OUTCOMES = ("holds", "does not hold", "not testable")
K = 4  # standard errors of the difference of two accuracies
NORM_RATIO_TOL = 1.15  # factor on a median ratio of layer norms between two trainings of a network pair
LIPSCHITZ_RATIO_TOL = 2.0  # factor on a ratio of mean local Lipschitz estimates (a max over 20 gradient ascents)
LOG10_NORM_TOL = 0.05  # mean log10 layer norm: 12 % either way
PAIRED_MARGIN = 2.0  # a paired comparison is decided when |difference| > 2 x (sum of the two tolerances)
SPEARMAN_P_FACTOR = 10.0  # a rank-correlation verdict is decided only with p beyond 10x either side of alpha
CONVERGED = 0.9  # committed clean accuracy (fraction) above which a run's accuracies are held to K errors


def accuracy_tol(p: float, n: int) -> float:
    """The tolerance of an accuracy ``p`` (a fraction) over ``n`` points, as a fraction."""
    p = min(max(p, 1 / n), 1 - 1 / n)
    return K * math.sqrt(2 * p * (1 - p) / n)


def wilson(p: float, n: int) -> tuple[float, float]:
    """scipy's 95 % Wilson interval of ``round(p n)`` successes out of ``n`` (``p`` a fraction)."""
    k = min(max(int(round(p * n)), 0), n)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def relation(a: float, n_a: int, b: float, n_b: int) -> str:
    """``higher`` / ``lower`` when the Wilson intervals of ``a`` and ``b`` (fractions) are disjoint, else
    ``overlap``."""
    (lo_a, hi_a), (lo_b, hi_b) = wilson(a, n_a), wilson(b, n_b)
    return "higher" if lo_a > hi_b else "lower" if hi_a < lo_b else "overlap"


def relation_fragile(a: float, n_a: int, b: float, n_b: int) -> bool:
    """Whether the relation of ``a`` to ``b`` changes within the accuracies' tolerances."""
    ta, tb = accuracy_tol(a, n_a), accuracy_tol(b, n_b)
    clip = lambda x: min(max(x, 0.0), 1.0)  # noqa: E731
    return relation(clip(a + ta), n_a, clip(b - tb), n_b) != relation(clip(a - ta), n_a, clip(b + tb), n_b)


def case_fragile(a: float, b: float, n: int, method: str) -> bool:
    """Whether the comparison of accuracy ``a`` with ``b`` (fractions over the same ``n`` points) may change
    outcome within the tolerances: by the paired margin (McNemar) or by the Wilson relation (unpaired)."""
    if method == "paired":
        return abs(a - b) <= PAIRED_MARGIN * (accuracy_tol(a, n) + accuracy_tol(b, n))
    return method == "missing" or relation_fragile(a, n, b, n)


def check_paired(case: dict, run_points, plain_points) -> None:
    """A paired comparison's discordant counts are those of the stored per-point outcomes, and its one-sided
    p-values scipy's exact binomial test of them."""
    only_run = int(sum(r and not p for r, p in zip(run_points, plain_points)))
    only_plain = int(sum(p and not r for r, p in zip(run_points, plain_points)))
    assert (case["n_run_only"], case["n_base_only"]) == (only_run, only_plain), case
    n = only_run + only_plain
    want = (1.0, 1.0) if n == 0 else (binomtest(only_run, n, 0.5, alternative="greater").pvalue,
                                      binomtest(only_run, n, 0.5, alternative="less").pvalue)
    assert math.isclose(case["p_higher"], want[0]) and math.isclose(case["p_lower"], want[1]), case


def unpack(text: str) -> list[bool]:
    """Per-point outcomes stored as ``"<n>:<base64 of the bits, little-endian>"`` (decoded here by hand)."""
    n, data = text.split(":", 1)
    raw = base64.b64decode(data)
    return [bool(raw[i // 8] >> (i % 8) & 1) for i in range(int(n))]


def sign_p(k: int, n: int) -> float:
    """``P(Bin(n, 1/2) >= k)``."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n if n else 1.0


def fragile(v: dict, n_attacked: int) -> bool:
    """Whether the committed verdict ``v`` (a record of a metrics file) lies within tolerance of its boundary;
    ``n_attacked``: the attacked points of a robust accuracy that ``v`` does not count itself. (A combined
    claim is judged by :func:`check_against_reference`.)"""
    nums = v.get("numbers") or {}
    if "cases" in nums:  # Table 2: percentages over n points against plain's
        return any(case_fragile(c["value"] / 100, c["plain"] / 100, c["n"], c["method"]) for c in nums["cases"])
    if "relation" in nums:  # Figure 2, more robust: fractions
        return case_fragile(nums["robust"], nums["plain"], nums["n"], nums["method"])
    if "median_ratio" in nums:  # one network: its median layer ratio against 1/band
        edge = 1 / nums["band"]
        return edge / NORM_RATIO_TOL <= nums["median_ratio"] <= edge * NORM_RATIO_TOL
    if "n_networks" in nums:  # the sign test across networks: fragile when one network changing side moves it
        n, k = nums["n_networks"], nums["n_comparable_or_larger"]
        moves = {(sign_p(j, n) < nums["alpha"], sign_p(n - j, n) < nums["alpha"]) for j in (k - 1, k, k + 1)
                 if 0 <= j <= n}
        return len(moves) > 1
    if "p_negative" in nums:  # a rank correlation over a few runs: re-ranking runs within tolerance moves it
        low = min(nums["p_negative"], nums["p_positive"])
        return not (low < nums["alpha"] / SPEARMAN_P_FACTOR or low > min(SPEARMAN_P_FACTOR * nums["alpha"], 0.5))
    if "ratio" in nums:  # local Lipschitz
        edges = (1 - nums["margin"], 1 + nums["margin"])
        return any(e / LIPSCHITZ_RATIO_TOL <= nums["ratio"] <= e * LIPSCHITZ_RATIO_TOL for e in edges)
    if "log10_change" in nums:
        return any(abs(d) <= LOG10_NORM_TOL for d in nums["log10_change"].values())
    if "ceiling" in nums:  # about 0 % robust, percentages over n_eval points
        return nums["max_robust"] - 100 * accuracy_tol(nums["max_robust"] / 100, n_attacked) <= nums["ceiling"]
    return False


def combined_parts(verdicts: list[dict]) -> dict[int, list[int]]:
    """Index of each combined claim (``numbers`` with ``n_parts``) -> the indices of its parts: the
    ``n_parts`` verdicts just before it."""
    return {i: list(range(i - v["numbers"]["n_parts"], i)) for i, v in enumerate(verdicts)
            if "n_parts" in (v.get("numbers") or {})}


def check_well_formed(verdicts: list[dict]) -> None:
    assert isinstance(verdicts, list) and verdicts
    for v in verdicts:
        assert {"claim", "outcome", "reason"} <= set(v), v
        assert v["outcome"] in OUTCOMES and v["claim"] and v["reason"], v
    assert len({v["claim"] for v in verdicts}) == len(verdicts), "a claim is judged twice"


def check_combined(verdicts: list[dict]) -> None:
    """Each combined claim counts its parts' outcomes, fails if one fails, holds if all hold."""
    for i, parts in combined_parts(verdicts).items():
        outcomes = [verdicts[j]["outcome"] for j in parts]
        nums = verdicts[i]["numbers"]
        assert [nums[o.replace(" ", "_")] for o in OUTCOMES] == [outcomes.count(o) for o in OUTCOMES], verdicts[i]
        want = ("does not hold" if "does not hold" in outcomes else
                "holds" if set(outcomes) == {"holds"} else "not testable")
        assert verdicts[i]["outcome"] == want, verdicts[i]


def check_against_reference(verdicts: list[dict], reference: list[dict], n_attacked: int) -> list[str]:
    """The fresh ``verdicts`` judge the committed claims, in order, with the committed outcome wherever the
    committed numbers are not :func:`fragile`; returns the claims whose outcome may differ (fragile)."""
    check_well_formed(verdicts)
    check_combined(verdicts)
    assert [v["claim"] for v in verdicts] == [v["claim"] for v in reference], "another set of claims"
    loose = {i for i, v in enumerate(reference) if fragile(v, n_attacked)}
    for i, parts in combined_parts(reference).items():
        if loose & set(parts):
            loose.add(i)
    for i, (new, old) in enumerate(zip(verdicts, reference)):
        if i not in loose:
            assert new["outcome"] == old["outcome"], \
                f"{new['claim']}: {new['outcome']} ({new['reason']}), committed {old['outcome']} ({old['reason']}) " \
                "with numbers beyond the tolerances of its boundary"
    return [reference[i]["claim"] for i in sorted(loose)]


def check_accuracy(new: float, old: float, n: int, what: str, scale: float = 1.0, converged: bool = True) -> None:
    """``new`` within the tolerance of the committed ``old`` (both in units of ``scale``: 1 or 100); of a run
    that did not converge, only that it is an accuracy."""
    assert 0 <= new <= scale, f"{what}: {new} is not an accuracy"
    if not converged:
        return
    tol = scale * accuracy_tol(old / scale, n)
    assert abs(new - old) <= tol, f"{what}: {new:.4g} against the committed {old:.4g} (tolerance {tol:.3g}, n = {n})"


def check_cases_against_table(verdicts: list[dict], long: pd.DataFrame, outcomes: pd.DataFrame,
                              robust_claim) -> None:
    """Table 2's verdicts compare the numbers of the long table (``clean`` / ``robust`` %, over ``n_clean`` /
    ``n_robust``): a paired comparison by the per-point outcomes of ``outcomes`` (one row per run, packed
    ``clean_correct`` / ``robust_correct``, :func:`check_paired`), an unpaired one with the relation scipy's
    Wilson intervals give; ``robust_claim(claim)``: a robust-half claim (else clean)."""
    rows = long.set_index(["model", "regularizer", "strength"])
    points = outcomes.set_index(["model", "regularizer", "strength"])
    plain = long[long.regularizer == "none"].set_index("model")
    for v in verdicts:
        for c in (v.get("numbers") or {}).get("cases", []):
            acc = "robust" if robust_claim(v["claim"]) else "clean"
            row = rows.loc[(c["model"], c["regularizer"], c["strength"])]
            assert math.isclose(c["value"], row[acc]) and c["n"] == row[f"n_{acc}"], (v["claim"], c)
            assert math.isclose(c["plain"], plain.loc[c["model"], acc]), (v["claim"], c)
            if c["method"] == "paired":
                col = f"{acc}_correct"
                check_paired(c, unpack(points.loc[(c["model"], c["regularizer"], c["strength"]), col]),
                             unpack(points.loc[(c["model"], "none", 0.0), col]))
            else:
                assert c["method"] == "unpaired", (v["claim"], c)
                assert c["relation"] in ("higher", "lower", "neither")
                rel = relation(c["value"] / 100, c["n"], c["plain"] / 100, c["n"])
                assert c["relation"] == ("neither" if rel == "overlap" else rel), (v["claim"], c)
