"""The names every layer of nblib shares: the values of the run config's ``regularizer`` and ``adv_mode`` keys and
how tables and figures display them.

Held here, below every subpackage, so that the claims (:mod:`nblib.claims`) can label a table without importing
the training code that acts on these names (:mod:`nblib.training.regularizers`,
:mod:`nblib.training.adversarial`).
"""

#: Display name of each ``regularizer`` value.
METHOD_LABELS = {"none": "plain", "wd": "weight decay", "svc": "singular value clipping",
                 "nd_l1": "l1 norm decay", "nd_linf": "l_inf norm decay"}
#: Display name of each ``adv_mode`` value.
ADV_LABELS = {"plain": "plain", "pgd": "PGD-AT", "alp": "ALP", "trades": "TRADES"}
