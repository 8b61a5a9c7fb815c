"""Norm tables of whole models: every conv, Linear (and, if asked, BatchNorm) layer at its true input size.

Each row is the operator norm of one layer (:mod:`nblib.norms.operator_norms`), evaluated at the input shape the
layer sees in the model's forward pass (:func:`nblib.norms.layer_shapes.layer_input_shapes`).  No layer is
skipped and no real model makes the table abort: a layer the forward pass never reaches (a block an
architecture defines but never calls) is a row without a norm whose ``note`` says so, and a module with
parameters of its own that the engine does not norm (GroupNorm, LayerNorm, a custom module) is a row whose
``note`` names its kind and why.  A linear layer of a kind the engine cannot evaluate (nn.Bilinear) still
raises ValueError naming it.
"""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn as nn

from nblib.norms.conv_geometry import CONV_TYPES
from nblib.norms.layer_shapes import layer_input_shapes, overrides_forward, unnormed_modules
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


NOT_REACHED = "not reached by the forward pass: not part of the network's function, no norm"
COLUMNS = ["name", "kind", "input_shape", "kernel", "stride", "padding", "dilation", "groups", "norm", "method",
           "note"]
_NORMALISERS = (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)


def unnormed_reason(module: nn.Module) -> str:
    """The ``note`` of a table row for a module with parameters that the engine does not norm."""
    kind = type(module).__name__
    if overrides_forward(module):
        return (f"not normed: {kind} replaces {type(module).__mro__[1].__name__}.forward (e.g. standardises its "
                "weight), so its operator is not the product by its weight")
    if isinstance(module, _NORMALISERS):
        return (f"not normed: {kind} divides by statistics of its own input, so it is not a fixed linear map "
                "and has no operator norm")
    return (f"not normed: {kind} holds parameters but is not a layer this engine norms (Conv1d/2d/3d, "
            "ConvTranspose1d/2d/3d, Linear, BatchNorm)")


def layer_norms(model: nn.Module, input_shape, p, include_batchnorm: bool = False,
                method: str | None = None, **options) -> pd.DataFrame:
    """Norm table of ``model``: one row per conv / Linear layer (and BatchNorm if asked), in module order.

    Each conv is evaluated at its true input size (see ``layer_input_shapes``).  Columns: name, kind,
    input_shape, kernel, stride, padding, dilation, groups, norm, method, note (empty for a normed layer).
    Never skips a layer: a layer the forward never reaches gets ``norm`` NaN and the note
    :data:`NOT_REACHED`; a module with parameters of its own that is not normed (see
    :func:`nblib.norms.layer_shapes.unnormed_modules`) gets NaN and :func:`unnormed_reason`, after the layers.
    """
    p = check_p(p)
    rows = []
    shapes = layer_input_shapes(model, input_shape, include_batchnorm, allow_unreached=True, skip_custom=True)
    for name, (m, in_shape) in shapes.items():
        row = dict(name=name, kind=type(m).__name__, input_shape=in_shape, kernel=None, stride=None,
                   padding=None, dilation=None, groups=None)
        if isinstance(m, CONV_TYPES):
            row.update(kernel=tuple(m.kernel_size), stride=tuple(m.stride), padding=_padding(m),
                       dilation=tuple(m.dilation), groups=m.groups)
        if in_shape is None:
            row.update(norm=float("nan"), method=None, note=NOT_REACHED)
        else:
            with torch.no_grad():
                value, used = layer_norm(m, in_shape, p, method=method, **options)
            row.update(norm=float(value), method=used, note="")
        rows.append(row)
    rows += [dict(name=name, kind=type(m).__name__, norm=float("nan"), note=unnormed_reason(m))
             for name, m in unnormed_modules(model, include_batchnorm).items()]
    return pd.DataFrame(rows, columns=COLUMNS)


def layer_census(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of a :func:`layer_norms` table counted per layer kind: ``normed`` (a finite norm), ``not_reached``
    (:data:`NOT_REACHED`) and ``not_normed`` (any other note), indexed by kind."""
    status = pd.Series("normed", index=table.index).where(table.note.fillna("") == "", "not_normed")
    status = status.mask(table.note == NOT_REACHED, "not_reached")
    out = pd.crosstab(table.kind, status)
    return out.reindex(columns=["normed", "not_reached", "not_normed"], fill_value=0)
