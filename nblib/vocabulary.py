"""The names every layer of nblib shares: the values of the run config's ``regularizer`` and ``adv_mode`` keys,
what ``reg_strength`` means for each regularizer and which way is stronger, and how tables display them.

Held here, below every subpackage, so that the claims (:mod:`nblib.claims`) can label and order a table without
importing the training code that acts on these names (:mod:`nblib.training.regularizers`,
:mod:`nblib.training.adversarial`).
"""
from __future__ import annotations

import math

#: Values of the run config's ``regularizer`` (Table 2's column groups; "none" is plain training).
REGULARIZERS = ("none", "wd", "svc", "nd_l1", "nd_linf")
#: Norm decay (Algorithm 1) kinds and the operator norm each decays: l1 (eq. 1) or l_inf (eq. 2).
NORM_DECAY_P = {"nd_l1": 1.0, "nd_linf": math.inf}
#: What ``reg_strength`` is for each regularizer.
STRENGTH_MEANING = {"none": "unused (0)", "wd": "weight decay coefficient", "svc": "clip value c of the l2 norm",
                    "nd_l1": "norm decay beta", "nd_linf": "norm decay beta"}
#: Regularizers that constrain more as ``reg_strength`` shrinks: SVC clips singular values at c.
SMALLER_IS_STRONGER = frozenset({"svc"})
#: Display name of each ``regularizer`` value.
REGULARIZER_LABELS = {"none": "plain", "wd": "weight decay", "svc": "singular value clipping",
                      "nd_l1": "l1 norm decay", "nd_linf": "l_inf norm decay"}

#: Values of the run config's ``adv_mode`` (Figure 2's training modes).
ADV_MODES = ("plain", "pgd", "alp", "trades")
#: Display name of each ``adv_mode`` value.
ADV_LABELS = {"plain": "plain", "pgd": "PGD-AT", "alp": "ALP", "trades": "TRADES"}


def strongest_strength(kind: str, strengths) -> float:
    """The strongest setting of a regularizer among ``strengths``: the smallest clip value c for SVC, else the
    largest coefficient."""
    return min(strengths) if kind in SMALLER_IS_STRONGER else max(strengths)


def strongest_first(kind: str, strength: float) -> float:
    """Sort key that orders the strengths of ``kind`` from the strongest to the weakest (Table 2's columns)."""
    return strength if kind in SMALLER_IS_STRONGER else -strength
