"""Exact operator norms of CNN layers (Liang & Huang, AAAI 2021, Theorem 1) and of whole models.

* :mod:`~nblib.norms.operator_norms` -- one layer: eq. 1 (l1) and eq. 2 (l_inf) under Assumption 1, the exact
  general and tap-set methods beyond it, Linear and BatchNorm, sparse subgradients (Algorithm 1, line 3).
* :mod:`~nblib.norms.spectral` -- l2: power iteration to a stated tolerance, certified intervals, Gram iteration,
  the Sedghi FFT and the eq. 3 bound.
* :mod:`~nblib.norms.layer_tables` -- one row per layer of a model, each at its true input size.
* :mod:`~nblib.norms.conv_geometry`, :mod:`~nblib.norms.tap_sets`, :mod:`~nblib.norms.layer_shapes` -- the
  operator ``M`` of a conv layer, the taps a row / column of ``M`` holds, the input shape of every layer.
* :mod:`~nblib.norms.dense_operator` -- the dense ``M`` through torch's own forward (the tests' oracle).
"""
from nblib.norms.conv_geometry import CONV_TYPES, output_size
from nblib.norms.dense_operator import OPERATOR_MATRIX_MAX_ENTRIES, operator_matrix
from nblib.norms.layer_shapes import SUPPORTED, layer_input_shapes, unnormed_modules
from nblib.norms.layer_tables import NOT_REACHED, layer_census, layer_norm, layer_norms, unnormed_reason
from nblib.norms.operator_norms import (L1_LINF_METHODS, L2_METHODS, P_VALUES, assumption1_holds, batchnorm_norm,
                                        check_p, conv2d_norm, conv_norm, general_l1, general_linf, l1_linf_method,
                                        linear_norm, norm_subgradient, sparse_subgradient, taps_l1, taps_linf,
                                        theorem1_l1, theorem1_l1_kernel, theorem1_linf)
from nblib.norms.spectral import eq3_bound, gram_iteration, l2_interval, power_iteration, singular_values_fft

__all__ = ["CONV_TYPES", "L1_LINF_METHODS", "L2_METHODS", "NOT_REACHED", "OPERATOR_MATRIX_MAX_ENTRIES", "P_VALUES",
           "SUPPORTED", "assumption1_holds", "batchnorm_norm", "check_p", "conv2d_norm", "conv_norm", "eq3_bound",
           "general_l1", "general_linf", "gram_iteration", "l1_linf_method", "l2_interval", "layer_census",
           "layer_input_shapes", "layer_norm", "layer_norms", "linear_norm", "norm_subgradient", "operator_matrix",
           "output_size", "power_iteration", "singular_values_fft", "sparse_subgradient", "taps_l1", "taps_linf",
           "theorem1_l1", "theorem1_l1_kernel", "theorem1_linf", "unnormed_modules", "unnormed_reason"]
