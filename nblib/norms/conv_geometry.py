"""The convolution behind every conv layer: geometry, input checks, the operator ``C`` and its adjoint.

Every layer of ``torch.nn`` that convolves (Conv1d/2d/3d, ConvTranspose1d/2d/3d) is, without bias and with
zero padding, a linear map built from one cross-correlation ``C``: on an input of spatial size ``n`` padded
by ``lo`` zeros before and ``hi`` after each dimension (``hi < 0`` crops the input's end),

    (C x)[o, i] = sum_{j in o's group} sum_t K[o, j, t] x[j, i s - lo + t d]       (per spatial dimension)

over the outputs ``i`` of ``floor((n + lo + hi - d (k - 1) - 1) / s) + 1`` positions.  A Conv layer is ``C``
itself (``lo = hi = padding``; ``'same'`` pads ``d (k - 1)`` in total, the extra zero after).  A
ConvTranspose layer is the adjoint ``C^T`` of the convolution with the same kernel, stride, dilation and
groups on the *transposed layer's output* (``lo = padding``, ``hi = padding - output_padding``): hence
``||ConvT||_1 = ||C||_inf``, ``||ConvT||_inf = ||C||_1`` and ``||ConvT||_2 = ||C||_2``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
LOW_PRECISION = (torch.float16, torch.bfloat16)
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def pair(v) -> tuple[int, int]:
    """``v`` as a 2-tuple of ints (an int is repeated)."""
    return ntuple(v, 2)


def ntuple(v, n: int) -> tuple:
    """``v`` as an ``n``-tuple of ints (an int is repeated)."""
    return (int(v),) * n if isinstance(v, int) else tuple(int(x) for x in v)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16 / bf16 kernels are computed in fp32 (sums of many terms, and ops CPU lacks); others as they are."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def compute_kernel(layer) -> torch.Tensor:
    """The layer's weight in its :func:`compute_dtype` (fp16 / bf16 weights are summed in fp32)."""
    return layer.weight.to(compute_dtype(layer.weight.dtype))


def check_conv(layer) -> int:
    """Number of spatial dimensions of a supported conv layer; ValueError naming the fix otherwise."""
    if not isinstance(layer, CONV_TYPES):
        raise ValueError(
            f"expected a convolution (nn.Conv1d/2d/3d or nn.ConvTranspose1d/2d/3d), got {type(layer).__name__}; "
            "use linear_norm for nn.Linear and batchnorm_norm for BatchNorm")
    if isinstance(layer.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"{type(layer).__name__} is lazy and not initialised yet: run one forward pass first")
    n = len(layer.kernel_size)
    if layer.weight.dim() != n + 2:
        raise ValueError(f"{type(layer).__name__} kernel must be {n + 2}-D, got {layer.weight.dim()}-D")
    return n


def check_input_size(input_size, n: int) -> tuple:
    """``input_size`` as an ``n``-tuple of positive ints; floats such as 3.99 are an error, never truncated."""
    if type(input_size) is tuple and len(input_size) == n and all(type(v) is int and v > 0 for v in input_size):
        return input_size
    if isinstance(input_size, (int, float)) or not hasattr(input_size, "__len__") or len(input_size) != n:
        raise ValueError(f"input_size must be the input's spatial size ({n} integers), got {input_size!r}")
    try:
        size = tuple(operator.index(v) for v in input_size)
    except TypeError:
        raise ValueError(f"input_size must hold integers (a pixel count), got {input_size!r}; "
                         "round it yourself if a float is meant") from None
    if min(size) < 1:
        raise ValueError(f"input_size must be positive, got {size}")
    return size


def resolved_padding(layer) -> tuple:
    """``((lo, hi), ...)`` zero padding of a Conv layer per spatial dimension (``'same'`` / ``'valid'``
    resolved as torch does: ``'same'`` puts ``d (k - 1) // 2`` zeros before, the rest after)."""
    n = len(layer.kernel_size)
    if layer.padding == "valid":
        return ((0, 0),) * n
    if layer.padding == "same":
        total = [d * (k - 1) for d, k in zip(ntuple(layer.dilation, n), layer.kernel_size)]
        return tuple((t // 2, t - t // 2) for t in total)
    return tuple((p, p) for p in ntuple(layer.padding, n))


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """The convolution ``C`` behind a layer (see the module docstring).

    ``in_size`` / ``out_size`` are ``C``'s spatial sizes: for a transposed layer, ``in_size`` is the layer's
    *output* size and ``out_size`` its input size.  ``in_channels`` / ``out_channels`` likewise.
    """
    transposed: bool
    kernel_size: tuple
    stride: tuple
    dilation: tuple
    pads: tuple  # ((lo, hi), ...) per spatial dimension; hi < 0 crops
    groups: int
    in_channels: int
    out_channels: int
    in_size: tuple
    out_size: tuple
    padding_mode: str

    @property
    def ndim(self) -> int:
        return len(self.kernel_size)

    @property
    def reach(self) -> tuple:
        return tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))

    @property
    def n_in(self) -> int:
        """Entries of ``C``'s input (columns of its matrix)."""
        return self.in_channels * math.prod(self.in_size)

    @property
    def n_out(self) -> int:
        """Entries of ``C``'s output (rows of its matrix)."""
        return self.out_channels * math.prod(self.out_size)


@functools.lru_cache(maxsize=8192)
def _geometry(kind, kernel_size, stride, padding, dilation, output_padding, groups, in_ch, out_ch, padding_mode,
              size) -> ConvGeometry:
    n = len(kernel_size)
    stride, dilation = ntuple(stride, n), ntuple(dilation, n)
    reach = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel_size))
    if kind == "transposed":
        pads_sym = ntuple(padding, n)
        out_pad = ntuple(output_padding, n)
        # the layer's output size (torch's formula), which is C's input size
        c_in = tuple((m - 1) * s - 2 * p + r + op for m, s, p, r, op in zip(size, stride, pads_sym, reach, out_pad))
        if min(c_in) < 1:
            raise ValueError(f"input_size {size}: the transposed layer's output size {c_in} is not positive")
        pads = tuple((p, p - op) for p, op in zip(pads_sym, out_pad))
        return ConvGeometry(True, kernel_size, stride, dilation, pads, groups, out_ch, in_ch, c_in, size,
                            padding_mode)
    pads = padding
    padded = tuple(m + lo + hi for m, (lo, hi) in zip(size, pads))
    if any(pm < r for pm, r in zip(padded, reach)):
        raise ValueError(f"input_size {size} is smaller than the kernel's reach {reach} with padding "
                         f"{tuple(lo for lo, _ in pads)}: the layer has no output")
    out = tuple((pm - r) // s + 1 for pm, r, s in zip(padded, reach, stride))
    return ConvGeometry(False, kernel_size, stride, dilation, pads, groups, in_ch, out_ch, size, out, padding_mode)


def conv_geometry(layer, input_size) -> ConvGeometry:
    """The :class:`ConvGeometry` of a conv layer on an input of spatial size ``input_size`` (cached)."""
    n = check_conv(layer)
    size = check_input_size(input_size, n)
    transposed = isinstance(layer, nn.modules.conv._ConvTransposeNd)
    if transposed:
        return _geometry("transposed", tuple(layer.kernel_size), layer.stride, layer.padding, layer.dilation,
                         layer.output_padding, layer.groups, layer.in_channels, layer.out_channels, "zeros", size)
    return _geometry("conv", tuple(layer.kernel_size), layer.stride, resolved_padding(layer), layer.dilation, None,
                     layer.groups, layer.in_channels, layer.out_channels, layer.padding_mode, size)


def output_size(layer, input_size) -> tuple:
    """The layer's spatial output size, ``floor((n + lo + hi - d (k - 1) - 1) / s) + 1`` per dimension for a
    conv and ``(n - 1) s - 2 p + d (k - 1) + output_padding + 1`` for a transposed conv."""
    g = conv_geometry(layer, input_size)
    return g.in_size if g.transposed else g.out_size


def check_zero_padding(g: ConvGeometry, p) -> None:
    """Norms are computed for zero padding; other padding modes make entries of ``M`` sums of taps."""
    if g.padding_mode != "zeros" and any(lo or hi for lo, hi in g.pads):
        what = "the l2 norm (power iteration, FFT, Gram bounds) is" if p == 2 else "exact l1/l_inf norms are"
        raise ValueError(
            f"padding_mode={g.padding_mode!r}: {what} implemented for zero padding only (with "
            "reflect/replicate/circular padding one input pixel feeds several taps, so the layer is not the "
            "zero-padded operator); use operator_matrix and a dense norm for such a layer")


def _flat_pads(pads) -> list:
    """F.pad's argument (last dimension first)."""
    return [v for lo_hi in reversed(pads) for v in lo_hi]


def apply(g: ConvGeometry, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``C x`` (batched: ``x`` of shape ``(B, in_channels, *in_size)``) with zero padding."""
    if any(lo or hi for lo, hi in g.pads):
        x = F.pad(x, _flat_pads(g.pads))
    return _CONV[g.ndim](x, kernel, stride=g.stride, dilation=g.dilation, groups=g.groups)


def apply_adjoint(g: ConvGeometry, y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``C^T y`` (batched: ``y`` of shape ``(B, out_channels, *out_size)``): the transposed convolution on the
    padded input, then the padding removed (or, where ``hi < 0``, the cropped end restored as zeros)."""
    padded = [m + lo + hi for m, (lo, hi) in zip(g.in_size, g.pads)]
    extra = [pm - ((o - 1) * s + r) for pm, o, s, r in zip(padded, g.out_size, g.stride, g.reach)]
    x = _CONV_T[g.ndim](y, kernel, stride=g.stride, output_padding=extra, groups=g.groups, dilation=g.dilation)
    if any(lo or hi for lo, hi in g.pads):
        x = F.pad(x, [-v for v in _flat_pads(g.pads)])
    return x


def dilated_kernel(layer_or_kernel, dilation=None) -> torch.Tensor:
    """The kernel with dilation holes filled by zeros (the same map with dilation 1)."""
    if isinstance(layer_or_kernel, torch.Tensor):
        k = layer_or_kernel
    else:
        k, dilation = layer_or_kernel.weight, layer_or_kernel.dilation
    n = k.dim() - 2
    dil = ntuple(dilation, n)
    if all(d == 1 for d in dil):
        return k
    size = [d * (s - 1) + 1 for d, s in zip(dil, k.shape[2:])]
    out = k.new_zeros(*k.shape[:2], *size)
    out[(slice(None), slice(None), *(slice(None, None, d) for d in dil))] = k
    return out
