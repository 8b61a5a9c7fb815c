"""The paper's claims as verdicts that can hold, fail or be untestable; no training code is loaded here.

* :mod:`~nblib.claims.verdict` -- the :class:`Verdict` type and how verdicts combine.
* :mod:`~nblib.claims.stats` -- the statistics the verdicts use.
* :mod:`~nblib.claims.theorem1`, :mod:`~nblib.claims.table1`, :mod:`~nblib.claims.table2`,
  :mod:`~nblib.claims.figure2`, :mod:`~nblib.claims.propositions` -- the claims of each notebook.
* :mod:`~nblib.claims.paper_table2` -- the paper's published Table 2.
* :mod:`~nblib.claims.robustbench` -- notebook 06: robust vs standard zoo models, norms vs AutoAttack accuracy.
"""
from nblib.claims.verdict import FAILS, HOLDS, OUTCOMES, UNTESTABLE, Verdict

__all__ = ["FAILS", "HOLDS", "OUTCOMES", "UNTESTABLE", "Verdict"]
