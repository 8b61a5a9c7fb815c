"""Norm tables of whole models: every conv, Linear (and, if asked, BatchNorm) layer at its true input size.

Each row is the operator norm of one layer (:mod:`nblib.norms.operator_norms`), evaluated at the input shape the
layer sees in the model's forward pass (:func:`nblib.norms.layer_shapes.layer_input_shapes`).  No layer is
skipped: a layer the engine cannot norm raises an error that names it.
"""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn as nn

from nblib.norms.conv_geometry import CONV_TYPES
from nblib.norms.layer_shapes import layer_input_shapes
from nblib.norms.operator_norms import batchnorm_norm, check_p, conv_norm, l1_linf_method, linear_norm


def layer_norm(module: nn.Module, in_shape, p, method: str | None = None, **options) -> tuple[torch.Tensor, str]:
    """``(||layer||_p, method used)`` for a conv layer (at input shape ``in_shape``, channels first), a
    Linear or a BatchNorm."""
    if isinstance(module, CONV_TYPES):
        size = tuple(in_shape[-len(module.kernel_size):])
        used = (method or "power") if p == 2 else (method or l1_linf_method(module, size))
        return conv_norm(module, size, p, method=method, **options), used
    if isinstance(module, nn.Linear):
        return linear_norm(module, p), ("svd" if p == 2 else "exact")
    return batchnorm_norm(module, p), "diagonal"


def _padding(m) -> tuple | str:
    return m.padding if isinstance(m.padding, str) else tuple(m.padding)


def layer_norms(model: nn.Module, input_shape, p, include_batchnorm: bool = False,
                method: str | None = None, **options) -> pd.DataFrame:
    """Norm table of ``model``: one row per conv / Linear layer (and BatchNorm if asked), in module order.

    Each conv is evaluated at its true input size (see ``layer_input_shapes``).  Columns: name, kind,
    input_shape, kernel, stride, padding, dilation, groups, norm, method.  Never skips a layer.
    """
    p = check_p(p)
    rows = []
    for name, (m, in_shape) in layer_input_shapes(model, input_shape, include_batchnorm).items():
        row = dict(name=name, kind=type(m).__name__, input_shape=in_shape, kernel=None, stride=None,
                   padding=None, dilation=None, groups=None)
        if isinstance(m, CONV_TYPES):
            row.update(kernel=tuple(m.kernel_size), stride=tuple(m.stride), padding=_padding(m),
                       dilation=tuple(m.dilation), groups=m.groups)
        with torch.no_grad():
            value, used = layer_norm(m, in_shape, p, method=method, **options)
        row.update(norm=float(value), method=used)
        rows.append(row)
    return pd.DataFrame(rows)
