"""Verdicts: each claim of the paper as a computed statement that can hold, fail, or be untestable at this size.

A :class:`Verdict` has one of three outcomes: ``"holds"``, ``"does not hold"`` or ``"not testable"`` (with
the reason: too few attacked points for a difference to leave its confidence interval, too few layers for a
sign test, a method not measured, an assumption of the theorem false on the data).  Every function here
takes the tables a notebook computes (DataFrames in the notebook's units) and returns verdicts; no claim is
decided in a notebook.

Statistics (stated once, used throughout):

* **Accuracies are binomial proportions.**  A clean accuracy over ``n`` test images or a robust accuracy over
  ``n`` attacked points has the Wilson score interval :func:`wilson_interval` (95 % by default).  Two
  accuracies *differ* only when their intervals are disjoint (:func:`compare_rates`); overlapping intervals
  decide nothing, and a claim resting only on such pairs is *not testable at this size*.  (Disjoint 95 %
  intervals are a conservative test, about p < 0.006 for equal ``n``: a verdict errs towards "not testable".)
* **Layer norms are paired by layer.**  Two networks of one architecture have the same layers; the sign test
  (:func:`sign_test_p`) asks whether more layers are larger (or smaller) than chance allows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Iterable, Optional

import pandas as pd

from nblib.experiments import METHOD_LABELS
from nblib.results import jsonable

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable"
OUTCOMES = (HOLDS, FAILS, UNTESTABLE)
ADV_LABELS = {"plain": "plain", "pgd": "PGD-AT", "alp": "ALP", "trades": "TRADES"}


@dataclass(frozen=True)
class Verdict:
    """One claim, its outcome (:data:`OUTCOMES`), why, and the numbers the decision used."""

    claim: str
    outcome: str
    reason: str
    numbers: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if not self.reason:
            raise ValueError(f"the verdict on {self.claim!r} states no reason")

    def line(self) -> str:
        """``"<claim>: holds"``, ``"<claim>: does not hold"`` or ``"<claim>: not testable (<reason>)"``."""
        return f"{self.claim}: {self.outcome}" + (f" ({self.reason})" if self.outcome == UNTESTABLE else "")

    def record(self) -> dict:
        """JSON-ready ``{claim, outcome, reason, numbers}`` (the ``verdicts`` list of a metrics file)."""
        return {"claim": self.claim, "outcome": self.outcome, "reason": self.reason,
                "numbers": jsonable(self.numbers)}


def records(verdicts: Iterable[Verdict]) -> list[dict]:
    """:meth:`Verdict.record` of each verdict."""
    return [v.record() for v in verdicts]


def combine(claim: str, parts: list[Verdict]) -> Verdict:
    """A claim that holds for every part: fails if any part fails, holds if all hold, else not testable."""
    if not parts:
        return Verdict(claim, UNTESTABLE, "nothing to compare")
    counts = {o: sum(p.outcome == o for p in parts) for o in OUTCOMES}
    numbers = {"n_parts": len(parts), **{o.replace(" ", "_"): c for o, c in counts.items()}}
    if counts[FAILS]:
        return Verdict(claim, FAILS, f"{counts[FAILS]} of {len(parts)} cases do not hold", numbers)
    if counts[HOLDS] == len(parts):
        return Verdict(claim, HOLDS, f"all {len(parts)} cases hold", numbers)
    return Verdict(claim, UNTESTABLE, f"{counts[UNTESTABLE]} of {len(parts)} cases not testable", numbers)


# ------------------------------------------------------------------------------------------- statistics
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
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, k)):
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


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"{what} needs the columns {missing}; it has {list(frame.columns)}")


# ------------------------------------------------------------------------- notebook 01: Theorem 1
def theorem1(rows: pd.DataFrame, tol: float = 1e-9) -> list[Verdict]:
    """Theorem 1 against the dense operator matrix M of random layers (``nblib.verify.check_against_dense``).

    eq. 1 (eq. 2) holds when, on every layer inside Assumption 1, its relative error to the largest absolute
    column (row) sum of M is ``<= tol``; eq. 3 holds when it is ``>= sigma_max(M)`` (up to ``tol``) on
    every layer, and its numbers say how loose it is (bound / sigma_max).  Not testable without layers.
    """
    _require(rows, ["assumption1", "err_eq1", "err_eq2", "eq3_over_sigma"], "theorem1")
    inside = rows[rows.assumption1.astype(bool)]
    out = []
    for eq, col, what in ((1, "err_eq1", "largest absolute column sum (l1 norm)"),
                          (2, "err_eq2", "largest absolute row sum (l_inf norm)")):
        claim = f"Theorem 1: eq. {eq} equals the dense operator's {what} under Assumption 1"
        if inside.empty:
            out.append(Verdict(claim, UNTESTABLE, "no layer satisfies Assumption 1"))
            continue
        bad = ~(inside[col] <= tol)  # NaN counts as wrong
        nums = dict(n_layers=len(inside), max_rel_err=float(inside[col].max()), tol=tol, n_wrong=int(bad.sum()))
        if bad.any():
            out.append(Verdict(claim, FAILS, f"error above {tol:g} on {int(bad.sum())} of {len(inside)} layers", nums))
        else:
            out.append(Verdict(claim, HOLDS, f"largest relative error {nums['max_rel_err']:.1e} on {len(inside)} "
                                             "layers", nums))
    ratio = rows.eq3_over_sigma.dropna()
    claim = "Theorem 1: eq. 3 is an upper bound of the l2 norm"
    if ratio.empty:
        out.append(Verdict(claim, UNTESTABLE, "no layer with a nonzero l2 norm"))
    else:
        nums = dict(n_layers=len(ratio), min_ratio=float(ratio.min()), median_ratio=float(ratio.median()),
                    max_ratio=float(ratio.max()))
        below = int((ratio < 1 - tol).sum())
        if below:
            out.append(Verdict(claim, FAILS, f"below the l2 norm on {below} of {len(ratio)} layers", nums))
        else:
            out.append(Verdict(claim, HOLDS, f"bound / l2 norm: median {nums['median_ratio']:.2f}, "
                                             f"largest {nums['max_ratio']:.2f}", nums))
    return out


def exact_model_norms(model_rows: pd.DataFrame, tol: float = 1e-9) -> Verdict:
    """The l1 / l_inf norms ``nblib.norms`` returns for real model convs equal the exact general method
    (``nblib.verify.check_model_layer``: columns ``err_l1``, ``err_linf``) within ``tol``."""
    _require(model_rows, ["err_l1", "err_linf"], "exact_model_norms")
    claim = "nblib's l1 and l_inf norms of every model conv equal the exact general method"
    if model_rows.empty:
        return Verdict(claim, UNTESTABLE, "no model conv")
    err = model_rows[["err_l1", "err_linf"]].max(axis=1, skipna=False)
    bad = int((~(err <= tol)).sum())
    nums = dict(n_convs=len(model_rows), max_rel_err=float(err.max()), tol=tol)
    if bad:
        return Verdict(claim, FAILS, f"error above {tol:g} on {bad} of {len(model_rows)} convs", nums)
    return Verdict(claim, HOLDS, f"largest relative error {nums['max_rel_err']:.1e}", nums)


# --------------------------------------------------------------------------- notebook 02: Table 1
def paper_speedup(paper_table1: dict, slow: str) -> pd.Series:
    """Per kernel of the paper's Table 1: seconds of ``slow`` / seconds of the slower of eq. 1 and eq. 2."""
    return pd.Series({str(k): v[slow] / max(v["l1"], v["linf"]) for k, v in paper_table1.items()})


def table1_speed(wide: pd.DataFrame, slow: str, threshold: float, label: str) -> Verdict:
    """eq. 1-2 are at least ``threshold`` times faster than ``slow`` on every measured kernel.

    ``wide``: seconds per 100 runs, one row per kernel, columns ``l1``, ``linf`` and ``slow``
    (``nblib.benchmark.speedups``); the ratio is taken against the slower of l1 and l_inf.  ``threshold`` is
    stated from the paper (the notebook passes the smallest ratio of its Table 1, ``paper_speedup``).
    Kernels on which ``slow`` was not measured (its time budget ran out) are left out and counted.
    """
    _require(wide, ["l1", "linf", slow], "table1_speed")
    claim = f"eq. 1-2 at least {threshold:,.0f}x faster than {label} on every kernel"
    ratio = (wide[slow] / wide[["l1", "linf"]].max(axis=1, skipna=False)).dropna()
    if ratio.empty:
        return Verdict(claim, UNTESTABLE, f"{label} not measured on any kernel within the time budget")
    nums = dict(min_ratio=float(ratio.min()), max_ratio=float(ratio.max()), threshold=threshold,
                n_kernels=len(ratio), n_not_measured=int(len(wide) - len(ratio)))
    where = f"{len(ratio)} of {len(wide)} kernels measured"
    if ratio.min() >= threshold:
        return Verdict(claim, HOLDS, f"smallest ratio {ratio.min():,.0f}x ({where})", nums)
    return Verdict(claim, FAILS, f"smallest ratio {ratio.min():,.0f}x < {threshold:,.0f}x ({where})", nums)


def table1_floor(wide: pd.DataFrame, k: float = 3.0) -> Verdict:
    """eq. 1-2 cost at most ``k`` times the memory floor (one ``|K|.sum()`` pass) on every kernel."""
    _require(wide, ["l1", "linf", "floor"], "table1_floor")
    claim = f"eq. 1-2 cost at most {k:g}x one pass over the kernel (memory floor)"
    ratio = (wide[["l1", "linf"]].max(axis=1, skipna=False) / wide["floor"]).dropna()
    if ratio.empty:
        return Verdict(claim, UNTESTABLE, "no kernel measured")
    nums = dict(max_ratio=float(ratio.max()), k=k, n_kernels=len(ratio))
    if ratio.max() <= k:
        return Verdict(claim, HOLDS, f"largest ratio {ratio.max():.2f}x", nums)
    return Verdict(claim, FAILS, f"largest ratio {ratio.max():.2f}x > {k:g}x", nums)


# --------------------------------------------------------------------------- notebook 03: Table 2
TABLE2_COLUMNS = ["model", "regularizer", "strength", "clean", "robust", "n_clean", "n_robust"]


def strongest_strength(kind: str, strengths) -> float:
    """The strongest setting of a regulariser: the smallest clip value c for SVC, else the largest
    coefficient (weight decay, beta)."""
    strengths = list(strengths)
    return min(strengths) if kind == "svc" else max(strengths)


def _table2_pairs(frame: pd.DataFrame, acc: str, n_col: str, confidence: float, only_strongest: bool):
    """One row per regularised run: its comparison with the plain run of its model (``compare_rates``)."""
    _require(frame, TABLE2_COLUMNS, "the Table 2 verdicts")
    plain = frame[frame.regularizer == "none"].set_index("model")
    missing = sorted(set(frame.model) - set(plain.index))
    if missing:
        raise ValueError(f"no plain (regularizer 'none') run for models {missing}: Table 2 compares with it")
    rows = []
    for (model, kind), g in frame[frame.regularizer != "none"].groupby(["model", "regularizer"], sort=False):
        if only_strongest:
            g = g[g.strength == strongest_strength(kind, g.strength)]
        base = plain.loc[model]
        for r in g.itertuples(index=False):
            a, b = getattr(r, acc), base[acc]
            if _missing(a) or _missing(b):
                rel = "missing"
            else:
                rel = compare_rates(a / 100, int(getattr(r, n_col)), b / 100, int(base[n_col]), confidence)
            rows.append(dict(model=model, regularizer=kind, strength=r.strength, value=a, plain=b, relation=rel,
                             n=int(getattr(r, n_col)), n_plain=int(base[n_col])))
    return pd.DataFrame(rows, columns=["model", "regularizer", "strength", "value", "plain", "relation", "n",
                                       "n_plain"])


def _counts(pairs: pd.DataFrame) -> dict:
    return {rel: int((pairs.relation == rel).sum()) for rel in ("higher", "lower", "overlap", "missing")}


def _clean_verdict(claim: str, pairs: pd.DataFrame, confidence: float) -> Verdict:
    c = _counts(pairs)
    nums = dict(**c, confidence=confidence, cases=pairs.to_dict("records"))
    compared = c["higher"] + c["lower"] + c["overlap"]
    if compared == 0:
        return Verdict(claim, UNTESTABLE, "no regularised run with a plain run to compare", nums)
    if c["higher"]:
        return Verdict(claim, HOLDS, f"{c['higher']} of {compared} runs above plain beyond the intervals", nums)
    if c["lower"] == compared:
        return Verdict(claim, FAILS, f"all {compared} runs below plain beyond the intervals", nums)
    return Verdict(claim, UNTESTABLE, f"no run above plain beyond the {100 * confidence:g}% intervals", nums)


def _robust_verdict(claim: str, pairs: pd.DataFrame, confidence: float) -> Verdict:
    c = _counts(pairs)
    nums = dict(**c, confidence=confidence, cases=pairs.to_dict("records"))
    if c["higher"]:
        return Verdict(claim, FAILS, f"{c['higher']} of {len(pairs)} runs more robust than plain beyond the "
                                     "intervals", nums)
    if c["lower"]:
        return Verdict(claim, HOLDS, f"{c['lower']} of {len(pairs)} runs less robust than plain beyond the "
                                     "intervals, none more", nums)
    if c["overlap"] == 0:
        return Verdict(claim, UNTESTABLE, "no robust accuracy to compare", nums)
    return Verdict(claim, UNTESTABLE, f"differences within the {100 * confidence:g}% intervals of "
                                      f"{int(pairs.n.min())} attacked points", nums)


def table2_clean(frame: pd.DataFrame, confidence: float = 0.95) -> list[Verdict]:
    """First half of the Table 2 claim: norm regularisation *may improve* clean accuracy.

    ``frame``: :data:`TABLE2_COLUMNS` (accuracies in %, ``n_clean`` test images) with a plain run per model.
    The claim is existential, per regulariser (any model, any strength) and overall: it holds when some
    run's clean accuracy lies above the plain run's beyond both Wilson intervals, does not hold when every
    run lies below beyond them, and is not testable otherwise (all differences inside the intervals).
    """
    pairs = _table2_pairs(frame, "clean", "n_clean", confidence, only_strongest=False)
    out = [_clean_verdict(f"{METHOD_LABELS.get(k, k)} improves clean accuracy at some strength",
                          pairs[pairs.regularizer == k], confidence) for k in pairs.regularizer.unique()]
    out.append(_clean_verdict("norm regularization can improve clean accuracy", pairs, confidence))
    return out


def table2_robust(frame: pd.DataFrame, confidence: float = 0.95) -> list[Verdict]:
    """Second half of the Table 2 claim: norm regularisation does *not improve* robust accuracy (and lowers
    it most at the strongest setting, the first column of each method in Table 2).

    Decided at each regulariser's strongest setting (:func:`strongest_strength`), per regulariser over the
    models and overall.  A run more robust than plain beyond both Wilson intervals (``n_robust`` attacked
    points) contradicts the claim: **does not hold**.  Otherwise a run less robust beyond the intervals
    supports it ("often lowers"): **holds**.  When every difference lies inside the intervals the data
    cannot tell "no improvement" from a small one: **not testable** at this many attacked points.
    """
    pairs = _table2_pairs(frame, "robust", "n_robust", confidence, only_strongest=True)
    pairs = pairs[pairs.relation != "missing"]
    out = [_robust_verdict(f"the strongest {METHOD_LABELS.get(k, k)} does not improve robust accuracy",
                           pairs[pairs.regularizer == k], confidence) for k in pairs.regularizer.unique()]
    out.append(_robust_verdict("norm regularization at its strongest does not improve robust accuracy", pairs,
                               confidence))
    return out


def table2_norms_lowered(summary: pd.DataFrame, targets: Optional[dict] = None) -> list[Verdict]:
    """The premise of Table 2: the strongest setting of each regulariser lowers the layer norm it targets.

    ``summary``: one row per (model, regularizer, reg_strength) with the mean log10 layer norms ``log_linf``
    and ``log_l1`` (exact norms: no sampling error).  Holds when, for every model, the strongest run's mean
    is below the plain run's.  ``targets``: regulariser -> column (default: l1 for l1 norm decay, l_inf
    otherwise).
    """
    _require(summary, ["model", "regularizer", "reg_strength", "log_linf", "log_l1"], "table2_norms_lowered")
    targets = targets or {"wd": "log_linf", "svc": "log_linf", "nd_l1": "log_l1", "nd_linf": "log_linf"}
    plain = summary[summary.regularizer == "none"].set_index("model")
    out = []
    for kind in [k for k in targets if k in set(summary.regularizer)]:
        col = targets[kind]
        norm = col[4:].replace("inf", "_inf")
        claim = f"the strongest {METHOD_LABELS.get(kind, kind)} lowers the mean {norm} layer norm"
        diffs = {}
        for model, g in summary[summary.regularizer == kind].groupby("model"):
            g = g[g.reg_strength == strongest_strength(kind, g.reg_strength)]
            if model in plain.index:
                diffs[model] = float(g[col].iloc[0] - plain.loc[model, col])
        if not diffs:
            out.append(Verdict(claim, UNTESTABLE, "no plain run to compare"))
        elif all(d < 0 for d in diffs.values()):
            out.append(Verdict(claim, HOLDS, "lower on every model", dict(log10_change=diffs)))
        else:
            out.append(Verdict(claim, FAILS, f"not lower on {sum(d >= 0 for d in diffs.values())} of {len(diffs)} "
                                             "models", dict(log10_change=diffs)))
    return out


def near_zero_robust(frame: pd.DataFrame, eps_label: str, ceiling: float = 5.0,
                     confidence: float = 0.95) -> Verdict:
    """The paper's remark that every regularised model has "basically zero" robust accuracy at a large radius.

    ``frame``: one row per regularised run with ``robust`` (%) and ``n_robust``.  Holds when every run's
    Wilson interval lies below ``ceiling`` %; does not hold when some run's interval lies above it;
    not testable otherwise (too few attacked points to place it).  The default ceiling of 5 % reads
    "basically zero" generously: 0 of 100 attacked points already has an upper bound of 3.7 %, 0 of 1024
    one of 0.4 %, so a true rate near 0 passes at both sizes while the paper's 1/255 rates (20-60 %) fail.
    """
    _require(frame, ["robust", "n_robust"], "near_zero_robust")
    claim = f"regularized models have about 0% robust accuracy at {eps_label} (below {ceiling:g}%)"
    frame = frame.dropna(subset=["robust"])
    if frame.empty:
        return Verdict(claim, UNTESTABLE, f"no robust accuracy at {eps_label} measured")
    ci = [rate_interval(r / 100, int(n), confidence) for r, n in zip(frame.robust, frame.n_robust)]
    above = sum(lo * 100 > ceiling for lo, _ in ci)
    below = sum(hi * 100 < ceiling for _, hi in ci)
    nums = dict(max_robust=float(frame.robust.max()), n_runs=len(frame), ceiling=ceiling, n_above=above,
                n_below=below)
    if above:
        return Verdict(claim, FAILS, f"{above} of {len(frame)} runs above {ceiling:g}% beyond the interval", nums)
    if below == len(frame):
        return Verdict(claim, HOLDS, f"all {len(frame)} runs below {ceiling:g}% beyond the interval", nums)
    return Verdict(claim, UNTESTABLE, f"intervals of {int(frame.n_robust.min())} attacked points reach "
                                      f"{ceiling:g}%", nums)


# ----------------------------------------------------------------- notebook 04: Figure 2
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
    _require(norms, ["model", "adv_mode", "layer", column], "figure2_norms")
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
    _require(summary, ["model", "adv_mode", "robust_acc", "n_eval"], "figure2_more_robust")
    out = []
    for model, g in summary.groupby("model", sort=False):
        g = g.set_index("adv_mode")
        for mode in [m for m in g.index if m != "plain"]:
            claim = f"{model} {ADV_LABELS.get(mode, mode)} more robust than plain"
            a, b = g.loc[mode], g.loc["plain"]
            if any(_missing(v) for v in (a.robust_acc, b.robust_acc, a.n_eval, b.n_eval)):
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
    (``lip_mean``, a mean of per-point lower bounds, ``nblib.attacks.local_lipschitz``).  No interval: the
    per-point values are not stored, so a ratio within ``1 +- margin`` of 1 is not testable; below
    ``1 - margin`` holds, above ``1 + margin`` does not."""
    _require(summary, ["model", "adv_mode", "lip_mean"], "figure2_local_lipschitz")
    out = []
    for model, g in summary.groupby("model", sort=False):
        g = g.set_index("adv_mode")
        for mode in [m for m in g.index if m != "plain"]:
            claim = f"{model} {ADV_LABELS.get(mode, mode)} smaller local Lipschitz estimate than plain"
            plain_lip, lip = g.loc["plain", "lip_mean"], g.loc[mode, "lip_mean"]
            if _missing(lip) or _missing(plain_lip) or not plain_lip > 0:
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


# ------------------------------------------------------------------ notebook 05: Propositions
def proposition1(prop1: pd.DataFrame) -> Verdict:
    """Proposition 1: layer norms arbitrarily large, Lipschitz constant 0.

    ``prop1``: rows ``scale, p, layer, norm`` (layer >= 0: a layer norm; ``p == "output spread"`` and
    ``"empirical Lipschitz"``: the network's).  Holds when the output spread and the empirical Lipschitz
    estimate are exactly 0 at every scale and the smallest layer norm grows in proportion to the scale (at
    least 0.99 x the scale ratio); not testable with fewer than two scales.
    """
    _require(prop1, ["scale", "p", "layer", "norm"], "proposition1")
    claim = "Proposition 1: all layer norms grow without bound while the Lipschitz constant is 0"
    scales = sorted(prop1.scale.unique())
    if len(scales) < 2:
        return Verdict(claim, UNTESTABLE, "fewer than two scales")
    smallest = prop1[prop1.layer >= 0].groupby("scale").norm.min()
    growth = float(smallest[scales[-1]] / smallest[scales[0]])
    flat = prop1[prop1.p.isin(["output spread", "empirical Lipschitz"])].norm
    nums = dict(norm_growth=growth, scale_ratio=scales[-1] / scales[0], max_output_change=float(flat.max()))
    if (flat != 0).any():
        return Verdict(claim, FAILS, f"the network is not constant (largest change {flat.max():.3g})", nums)
    if growth < 0.99 * scales[-1] / scales[0]:
        return Verdict(claim, FAILS, f"the smallest layer norm grows only {growth:.3g}x", nums)
    return Verdict(claim, HOLDS, f"norms grow {growth:.0e}x, network constant", nums)


def proposition2(prop2: pd.DataFrame, d_min: float, eps: float) -> list[Verdict]:
    """Theorem 2 (a network with robust accuracy 1 exists on 2-eps-separable data) and Proposition 2 (one
    whose Lipschitz constant is at least xi, for every xi).

    ``prop2``: one row per xi with ``grid_robust_acc``, ``pgd_robust_acc`` and ``lipschitz_lower``.  Not
    testable when the data violate Assumption 2 (``d_min <= 2 eps``).
    """
    _require(prop2, ["xi", "grid_robust_acc", "pgd_robust_acc", "lipschitz_lower"], "proposition2")
    claims = ("Theorem 2: a network reaches robust accuracy 1 on 2eps-separable data",
              "Proposition 2: robust networks with Lipschitz constant >= xi exist for every xi")
    if not d_min > 2 * eps:
        return [Verdict(c, UNTESTABLE, "the data are not 2eps-separable (Assumption 2 fails)",
                        dict(d_min=d_min, eps=eps)) for c in claims]
    robust = (prop2.grid_robust_acc == 1) & (prop2.pgd_robust_acc == 1)
    lip = prop2.lipschitz_lower >= prop2.xi
    nums = dict(d_min=d_min, eps=eps, grid=prop2.grid_robust_acc.tolist(), pgd=prop2.pgd_robust_acc.tolist(),
                lipschitz_lower=prop2.lipschitz_lower.tolist(), xi=prop2.xi.tolist())
    out = [Verdict(claims[0], HOLDS, "robust accuracy 1 on the grid and under PGD", nums) if robust.all() else
           Verdict(claims[0], FAILS, f"robust accuracy below 1 for {int((~robust).sum())} networks", nums)]
    ok = robust & lip
    out.append(Verdict(claims[1], HOLDS, "every xi reached by a robust network", nums) if ok.all() else
               Verdict(claims[1], FAILS, f"{int((~ok).sum())} of {len(ok)} xi not reached by a robust network", nums))
    return out
