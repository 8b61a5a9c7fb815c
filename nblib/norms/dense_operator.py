"""The dense matrix ``M`` of a conv layer without bias (``n_out x n_in``, flattened output by flattened input),
built from torch's own forward of the layer, independent of ``nblib.norms.conv_geometry``'s ``C`` / ``C^T``: the
oracle of the norm tests (dense row / column sums, SVD) and of notebook 01's figure.  ``nblib.norms``
re-exports it.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from nblib.norms.conv_geometry import check_conv, check_input_size, ntuple, output_size

__all__ = ["OPERATOR_MATRIX_MAX_ENTRIES", "operator_matrix"]

OPERATOR_MATRIX_MAX_ENTRIES = 2**26  # dense oracle cap: 64M entries (256 MB in float32), workspace included


def _layer_forward(layer, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The layer's own forward without bias (torch's code path, independent of ``nblib.norms.conv_geometry``)."""
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        fn = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
              3: torch.nn.functional.conv_transpose3d}[len(layer.kernel_size)]
        return fn(x, kernel, None, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation)
    return layer._conv_forward(x, kernel, None)


def operator_matrix(layer, input_size, max_entries: int = OPERATOR_MATRIX_MAX_ENTRIES) -> torch.Tensor:
    """Dense matrix ``M`` (``n_out x n_in``, flattened output by flattened input) of a conv layer without bias.

    Column n is the layer's own forward (any padding mode, ``'same'``, output padding) applied to the n-th
    basis input.  For tests and figures.  ``max_entries`` caps the memory: the result and, per chunk of basis
    inputs, the inputs, outputs and the convolution's unfolded-patch workspace are sized *before* anything is
    allocated; chunks are as large as the cap allows, and a result over the cap raises at once.
    """
    n_dims = check_conv(layer)
    size = check_input_size(input_size, n_dims)
    out_size = output_size(layer, size)
    in_ch, out_ch = layer.in_channels, layer.out_channels
    n_in, n_out = in_ch * math.prod(size), out_ch * math.prod(out_size)
    if n_in * n_out > max_entries:
        raise ValueError(f"operator matrix would have {n_out}x{n_in} entries, over the cap of {max_entries}; "
                         "use a smaller input size or raise max_entries")
    taps = math.prod(layer.kernel_size)
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):  # col2im workspace: out/g * taps per input position
        workspace = out_ch // layer.groups * taps * math.prod(size) * layer.groups
    else:  # im2col workspace: in/g * taps per output position (and the padded input)
        dil = ntuple(layer.dilation, n_dims)
        padded = [m + 2 * d * (k - 1) for m, d, k in zip(size, dil, layer.kernel_size)]
        workspace = in_ch * taps * math.prod(out_size) + in_ch * math.prod(padded)
    per_input = n_in + n_out + workspace
    chunk = (max_entries - n_in * n_out) // per_input
    if chunk < 1:
        raise ValueError(f"one basis input needs {per_input} entries of workspace next to the {n_out}x{n_in} "
                         f"result: over the cap of {max_entries}")
    k = layer.weight.detach()
    cols = []
    with torch.no_grad():
        for start in range(0, n_in, chunk):
            b = min(chunk, n_in - start)
            x = k.new_zeros(b, n_in)
            x[torch.arange(b), torch.arange(start, start + b)] = 1
            cols.append(_layer_forward(layer, x.reshape(b, in_ch, *size), k).reshape(b, n_out).T)
    return torch.cat(cols, 1) if len(cols) > 1 else cols[0].contiguous()
