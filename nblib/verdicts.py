"""Verdicts: each claim of the paper as a computed statement that can hold, fail, or be untestable at this size.

A :class:`Verdict` has one of three outcomes: ``"holds"``, ``"does not hold"`` or ``"not testable"`` (with
the reason: too few attacked points for a difference to leave its confidence interval, too few layers for a
sign test, a method not measured, an assumption of the theorem false on the data).  Every function here
takes the tables a notebook computes (DataFrames in the notebook's units) and returns verdicts; no claim is
decided in a notebook.

The claims of Theorem 1 (notebook 01), Table 1 (notebook 02) and Propositions 1-2 (notebook 05) are judged
here; Table 2's in :mod:`nblib.table2_verdicts`, Figure 2's in :mod:`nblib.figure2_verdicts`, both with the
statistics of :mod:`nblib.stats` (Wilson intervals of accuracies, sign tests of paired layer norms).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import pandas as pd

from nblib.results import jsonable

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable"
OUTCOMES = (HOLDS, FAILS, UNTESTABLE)


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

    def explained(self) -> str:
        """:meth:`line` followed by the reason in every case (what a notebook prints for a reader)."""
        return self.line() + ("" if self.outcome == UNTESTABLE else f" ({self.reason})")

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


def require_columns(frame: pd.DataFrame, columns, what: str) -> None:
    """An error naming the missing columns when ``frame`` lacks any of ``columns`` (needed by ``what``)."""
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
    require_columns(rows, ["assumption1", "err_eq1", "err_eq2", "eq3_over_sigma"], "theorem1")
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
    require_columns(model_rows, ["err_l1", "err_linf"], "exact_model_norms")
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
    require_columns(wide, ["l1", "linf", slow], "table1_speed")
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
    require_columns(wide, ["l1", "linf", "floor"], "table1_floor")
    claim = f"eq. 1-2 cost at most {k:g}x one pass over the kernel (memory floor)"
    ratio = (wide[["l1", "linf"]].max(axis=1, skipna=False) / wide["floor"]).dropna()
    if ratio.empty:
        return Verdict(claim, UNTESTABLE, "no kernel measured")
    nums = dict(max_ratio=float(ratio.max()), k=k, n_kernels=len(ratio))
    if ratio.max() <= k:
        return Verdict(claim, HOLDS, f"largest ratio {ratio.max():.2f}x", nums)
    return Verdict(claim, FAILS, f"largest ratio {ratio.max():.2f}x > {k:g}x", nums)


# ------------------------------------------------------------------ notebook 05: Propositions
def proposition1(prop1: pd.DataFrame) -> Verdict:
    """Proposition 1: layer norms arbitrarily large, Lipschitz constant 0.

    ``prop1``: rows ``scale, p, layer, norm`` (layer >= 0: a layer norm; ``p == "output spread"`` and
    ``"empirical Lipschitz"``: the network's).  Holds when the output spread and the empirical Lipschitz
    estimate are exactly 0 at every scale and the smallest layer norm grows in proportion to the scale (at
    least 0.99 x the scale ratio); not testable with fewer than two scales.
    """
    require_columns(prop1, ["scale", "p", "layer", "norm"], "proposition1")
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
    require_columns(prop2, ["xi", "grid_robust_acc", "pgd_robust_acc", "lipschitz_lower"], "proposition2")
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
