"""The claims of Theorem 1 (notebook 01): eq. 1 and eq. 2 equal the dense operator's largest absolute column
/ row sum under Assumption 1, eq. 3 bounds the l2 norm, and the package's norms of every model conv are exact."""
from __future__ import annotations

import pandas as pd

from nblib.claims.verdict import FAILS, HOLDS, UNTESTABLE, Verdict, require_columns


def theorem1(rows: pd.DataFrame, tol: float = 1e-9) -> list[Verdict]:
    """Theorem 1 against the dense operator matrix M of random layers
    (``nblib.experiments.theorem1.check_against_dense``).

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
    (``nblib.experiments.theorem1.check_model_layer``: columns ``err_l1``, ``err_linf``) within ``tol``."""
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
