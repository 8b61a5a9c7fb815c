"""The claims of Table 1 (notebook 02): eq. 1-2 against power iteration, the Sedghi FFT and the memory floor
(one pass over the kernel)."""
from __future__ import annotations

import pandas as pd

from nblib.claims.verdict import FAILS, HOLDS, UNTESTABLE, Verdict, require_columns


def paper_speedup(paper_table1: dict, slow: str) -> pd.Series:
    """Per kernel of the paper's Table 1: seconds of ``slow`` / seconds of the slower of eq. 1 and eq. 2."""
    return pd.Series({str(k): v[slow] / max(v["l1"], v["linf"]) for k, v in paper_table1.items()})


def table1_speed(wide: pd.DataFrame, slow: str, threshold: float, label: str) -> Verdict:
    """eq. 1-2 are at least ``threshold`` times faster than ``slow`` on every measured kernel.

    ``wide``: seconds per 100 runs, one row per kernel, columns ``l1``, ``linf`` and ``slow``
    (``nblib.perf.benchmark.speedups``); the ratio is taken against the slower of l1 and l_inf.  ``threshold`` is
    stated from the paper (the notebook passes the smallest ratio of its Table 1, ``paper_speedup``).
    Kernels on which ``slow`` was not measured (its time budget ran out) are counted and named: a measured
    kernel below the threshold makes the claim fail, but it holds only when every kernel was measured (not
    testable otherwise).  Exact timings of this machine, no statistical test.
    """
    require_columns(wide, ["l1", "linf", slow], "table1_speed")
    claim = f"eq. 1-2 at least {threshold:,.0f}x faster than {label} on every kernel"
    ratio = (wide[slow] / wide[["l1", "linf"]].max(axis=1, skipna=False)).dropna()
    if ratio.empty:
        return Verdict(claim, UNTESTABLE, f"{label} not measured on any kernel within the time budget")
    nums = dict(min_ratio=float(ratio.min()), max_ratio=float(ratio.max()), threshold=threshold,
                n_kernels=len(ratio), n_not_measured=int(len(wide) - len(ratio)),
                measured=[str(k) for k in ratio.index])
    return _every_kernel(claim, ratio.min() >= threshold, len(ratio), wide,
                         f"smallest ratio {ratio.min():,.0f}x " + ("<" if ratio.min() < threshold else ">=")
                         + f" {threshold:,.0f}x", nums)


def _every_kernel(claim: str, ok: bool, n_measured: int, wide: pd.DataFrame, what: str, nums: dict) -> Verdict:
    """A claim about every kernel of ``wide`` from the ``n_measured`` measured ones (exact timings, no test): a
    measured kernel that fails is a counterexample (does not hold); all measured passing holds only when every
    kernel was measured, else not testable with the measured kernels named."""
    where = f"{n_measured} of {len(wide)} kernels measured"
    if not ok:
        return Verdict(claim, FAILS, f"{what} ({where})", nums)
    if n_measured == len(wide):
        return Verdict(claim, HOLDS, f"{what} ({where})", nums)
    return Verdict(claim, UNTESTABLE, f"{what} on the measured kernels {nums.get('measured')}, but only {where}: "
                                      "the claim is about every kernel", nums)


def table1_floor(wide: pd.DataFrame, k: float = 3.0) -> Verdict:
    """eq. 1-2 cost at most ``k`` times the memory floor (one ``|K|.sum()`` pass) on every kernel."""
    require_columns(wide, ["l1", "linf", "floor"], "table1_floor")
    claim = f"eq. 1-2 cost at most {k:g}x one pass over the kernel (memory floor)"
    ratio = (wide[["l1", "linf"]].max(axis=1, skipna=False) / wide["floor"]).dropna()
    if ratio.empty:
        return Verdict(claim, UNTESTABLE, "no kernel measured")
    nums = dict(max_ratio=float(ratio.max()), k=k, n_kernels=len(ratio), measured=[str(i) for i in ratio.index])
    return _every_kernel(claim, ratio.max() <= k, len(ratio), wide,
                         f"largest ratio {ratio.max():.2f}x " + (">" if ratio.max() > k else "<=") + f" {k:g}x", nums)
