"""Verdicts: each claim of the paper as a computed statement that can hold, fail, or be untestable at this size.

A :class:`Verdict` has one of three outcomes: ``"holds"``, ``"does not hold"`` or ``"not testable"`` (with
the reason: too few attacked points for a difference to leave its confidence interval, too few layers for a
sign test, a method not measured, an assumption of the theorem false on the data).  Every function here
takes the tables a notebook computes (DataFrames in the notebook's units) and returns verdicts; no claim is
decided in a notebook.

This module holds the type and how verdicts combine; the claims of each notebook are judged in their own
module of :mod:`nblib.claims` (``theorem1``, ``table1``, ``table2``, ``figure2``, ``propositions``), with the
statistics of :mod:`nblib.claims.stats`.
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
