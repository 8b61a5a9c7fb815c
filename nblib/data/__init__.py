"""Data: scikit-learn's digits shaped like CIFAR-10 (offline), CIFAR-10 (MD5-checked) and its CIFAR-format
fixture, and the device-resident training batches.

* :mod:`~nblib.data.datasets` -- a data set by name (:func:`get_dataset`) and the fixed evaluation subsets.
* :mod:`~nblib.data.digits`, :mod:`~nblib.data.cifar10` -- the two data sets (``python -m nblib.data.cifar10``
  downloads CIFAR-10 or writes the fixture).
* :mod:`~nblib.data.loader` -- each split as one tensor on the training device, crops and flips drawn per epoch.
"""
from nblib.data.cifar10 import CIFAR10Arrays, load_cifar10
from nblib.data.datasets import DATASETS, eval_subset, get_dataset
from nblib.data.digits import DigitsCIFARLike

__all__ = ["DATASETS", "CIFAR10Arrays", "DigitsCIFARLike", "load_cifar10", "get_dataset", "eval_subset"]
