"""Attacks and robustness measurements in ``[0, 1]`` pixel space: one import for the public names of

* :mod:`nblib.inference` -- :func:`clean_accuracy` (batched, eval mode, modes restored);
* :mod:`nblib.pgd` -- :func:`pgd_linf` (Madry et al. PGD in the l_inf ball, reused by adversarial training)
  and :func:`margin_loss` (``max_{j != y} z_j - z_y``, positive iff misclassified);
* :mod:`nblib.autoattack` -- :func:`autoattack_accuracy`, :func:`attack_settings`, :data:`AA_VERSIONS`,
  :class:`AttackStateError` (AutoAttack through ``pyautoattack``);
* :mod:`nblib.lipschitz` -- :func:`local_lipschitz` (empirical local Lipschitz constants).

All functions use the model's device unless told otherwise, run the model in
eval mode and put every module back in the train/eval mode it had before.
"""

from __future__ import annotations

from nblib.autoattack import AA_VERSIONS, AttackStateError, attack_settings, autoattack_accuracy
from nblib.inference import clean_accuracy
from nblib.lipschitz import local_lipschitz
from nblib.pgd import margin_loss, pgd_linf

__all__ = [
    "AA_VERSIONS",
    "AttackStateError",
    "clean_accuracy",
    "pgd_linf",
    "autoattack_accuracy",
    "attack_settings",
    "margin_loss",
    "local_lipschitz",
]
