"""One training run, from its config to its metrics.

* :mod:`~nblib.training.run_config` -- the run config (``DEFAULT_CFG``), its checks and the settings it resolves.
* :mod:`~nblib.training.train` -- ``run_one(cfg, folder)``: the loop, evaluation, attacks and timings.
* :mod:`~nblib.training.step` -- ``train_step``: one SGD step (loss, regulariser, optimiser), no host sync.
* :mod:`~nblib.training.compiled` -- ``cfg["compile"]``: the training forward passes through ``torch.compile`` /
  CUDA graphs.
* :mod:`~nblib.training.checkpoint` -- the per-epoch checkpoint and the RNG states a resume restores.
* :mod:`~nblib.training.regularizers` -- norm decay (Algorithm 1), weight decay, singular value clipping.
* :mod:`~nblib.training.adversarial` -- the PGD-AT, ALP and TRADES losses.
"""
