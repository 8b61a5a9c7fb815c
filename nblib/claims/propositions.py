"""The claims of Proposition 1 and Theorem 2 / Proposition 2 (notebook 05): layer norms can be arbitrarily
large at Lipschitz constant 0, and a robust network can be arbitrarily steep."""
from __future__ import annotations

import pandas as pd

from nblib.claims.verdict import FAILS, HOLDS, UNTESTABLE, Verdict, require_columns


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
