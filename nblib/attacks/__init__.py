"""What acts on a trained network at test time.

* :mod:`~nblib.attacks.inference` -- eval mode, predictions and the device of a model.
* :mod:`~nblib.attacks.pgd` -- projected gradient descent in the l_inf ball (the adversarial-training attack).
* :mod:`~nblib.attacks.autoattack` -- AutoAttack robust accuracy (Croce & Hein), resumable per batch.
* :mod:`~nblib.attacks.lipschitz` -- local Lipschitz estimates around test points.
"""
