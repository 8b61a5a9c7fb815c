"""The paper's claims as verdicts that can hold, fail or be untestable; no training code is loaded here.

* :mod:`~nblib.claims.verdict` -- the :class:`Verdict` type and how verdicts combine.
* :mod:`~nblib.claims.stats` -- the statistics the verdicts use (scipy: Wilson, exact McNemar, sign test,
  Spearman; Holm's correction).
* :mod:`~nblib.claims.comparisons` -- a run against its plain baseline: paired (McNemar) on per-point outcomes,
  unpaired intervals for published numbers, decided over a family with its level and sidedness stated.
* :mod:`~nblib.claims.theorem1`, :mod:`~nblib.claims.table1`, :mod:`~nblib.claims.table2`,
  :mod:`~nblib.claims.figure2`, :mod:`~nblib.claims.propositions` -- the claims of each notebook.
* :mod:`~nblib.claims.paper_table2` -- the paper's published Table 2.
* :mod:`~nblib.claims.robustbench` -- notebook 06: robust vs standard zoo models, norms vs AutoAttack accuracy.
"""
from nblib.claims.verdict import FAILS, HOLDS, OUTCOMES, UNTESTABLE, Verdict

__all__ = ["FAILS", "HOLDS", "OUTCOMES", "UNTESTABLE", "Verdict"]
