"""Operator norms of CNN layers (Liang & Huang, AAAI 2021, Theorem 1), for every convolution of ``torch.nn``.

A conv layer without bias is the linear map ``x -> M x`` from its flattened input (padding excluded) to its
flattened output; ``M`` is a convolution ``C`` (Conv1d/2d/3d) or its adjoint ``C^T`` (ConvTranspose1d/2d/3d),
see ``nblib.norms.conv_geometry``.  This module computes norms of ``M`` without forming it:

* ``p = inf``: ``||M||_inf`` = largest absolute row sum.  For a Conv2d under Assumption 1 this is eq. (2),
  ``max_i sum_{j,k,t} |K[i,j,k,t]|``; for every other geometry the same one pass over ``|K|`` restricted to
  the inclusion-maximal tap sets a row holds (``nblib.norms.tap_sets``, ``method="taps"``), or, as a second route,
  the largest entry of ``C(1)`` computed with ``|K|`` (``method="general"``).
* ``p = 1``: ``||M||_1`` = largest absolute column sum.  For a Conv2d under Assumption 1 this is eq. (1), the
  largest sum of ``|K|`` over a class of Lemma 1; elsewhere the tap sets of a column (Lemma 1 per dimension),
  or the largest entry of ``C^T(1)`` with ``|K|``.  For a transposed layer ``||C^T||_1 = ||C||_inf`` and
  ``||C^T||_inf = ||C||_1``.
* ``p = 2``: see ``nblib.norms.spectral`` (power iteration exact to a stated tolerance, a certified interval,
  Gram iteration, FFT, eq. 3).
* :func:`sparse_subgradient`: the norm and a subgradient (one row / column of ``sign(K)``) without autograd,
  for norm decay.
* :func:`operator_matrix` (``nblib.norms.dense_operator``): the dense ``M`` through torch's own forward, the
  independent oracle of the tests and figures.

The l1/l_inf routes are exact for every stride, zero padding (integers, ``'same'``, ``'valid'``), dilation,
group count, output padding and input size: for a fixed output position each kernel tap reads a distinct
input pixel, so every entry of ``M`` is a single kernel entry.  All functions are differentiable in the kernel
(subgradient of the max).  fp16/bf16 kernels are summed in fp32 and the result is returned in their dtype.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn

from nblib.norms.conv_geometry import (ConvGeometry, apply, apply_adjoint, check_zero_padding, compute_dtype,
                                       compute_kernel, conv_geometry)
from nblib.norms.layer_shapes import BATCHNORM
from nblib.norms.tap_sets import tap_set_norm, tap_set_subgradient
from nblib.norms.spectral import eq3_bound, gram_iteration, power_iteration, singular_values_fft

P_VALUES = (1, 2, math.inf)
L2_METHODS = ("power", "fft", "gram", "bound")


def check_p(p) -> float:
    """``p`` as ``1``, ``2`` or ``math.inf``; ValueError otherwise."""
    if p not in P_VALUES:
        raise ValueError(f"p must be one of 1, 2, math.inf; got {p!r}")
    return math.inf if p == math.inf else int(p)


def _check_conv2d(conv) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"expected an nn.Conv2d, got {type(conv).__name__}; use conv_norm for the other "
                         "convolutions, linear_norm for nn.Linear and batchnorm_norm for BatchNorm")


# --------------------------------------------------------------------------- Assumption 1 (Conv2d)
def _theorem1_geometry(g: ConvGeometry) -> bool:
    """Theorem 1's setting: a 2-D convolution (not transposed), symmetric zero padding, dilation 1."""
    return (not g.transposed and g.ndim == 2 and all(lo == hi for lo, hi in g.pads) and g.dilation == (1, 1)
            and (g.padding_mode == "zeros" or not any(lo for lo, _ in g.pads)))


def _assumption1_size(kernel_size, stride, padding, hw) -> bool:
    for n, k, s, p in zip(hw, kernel_size, stride, padding):
        c = max(1, -(-p // s))
        if k + c * s - p > n:
            return False
    return True


def _assumption1(g: ConvGeometry) -> bool:
    return _theorem1_geometry(g) and _assumption1_size(g.kernel_size, g.stride, tuple(lo for lo, _ in g.pads),
                                                       g.in_size)


@functools.lru_cache(maxsize=4096)
def _fast_theorem1(kernel_size, stride, padding, dilation, padding_mode, kernel_dim, hw) -> bool:
    """Cached: is this (valid) Conv2d geometry and input size inside Assumption 1?  False on any doubt."""
    if (kernel_dim != 4 or isinstance(padding, str) or len(hw) != 2 or not all(type(v) is int for v in hw)
            or dilation != (1, 1) or (padding_mode != "zeros" and any(padding))):
        return False
    reach_ok = all(n + 2 * p >= k and n >= 1 for n, k, p in zip(hw, kernel_size, padding))
    return reach_ok and _assumption1_size(kernel_size, stride, padding, hw)


def assumption1_holds(conv: nn.Conv2d, input_size) -> bool:
    """Assumption 1 of the paper, plus what Theorem 1 takes for granted.

    With ``c_i`` the smallest positive integer such that ``c_i s_i >= p_i``:
    ``k_1 + c_1 s_1 - p_1 <= h_in`` and ``k_2 + c_2 s_2 - p_2 <= w_in``, zero (symmetric) padding,
    and (implicit in the paper) dilation 1.
    """
    _check_conv2d(conv)
    return _assumption1(conv_geometry(conv, input_size))


# ------------------------------------------------------------------ l1 and l_inf
def _max(t: torch.Tensor) -> torch.Tensor:
    """Largest entry, with the whole gradient on one maximiser (a sparse +-1 subgradient, not an average)."""
    return (t if t.dim() == 1 else t.reshape(-1)).max(0).values


@functools.lru_cache(maxsize=1024)
def _lemma1_classes(kernel_size, stride, span, device=None, dtype=None) -> torch.Tensor | None:
    """Indicator matrix Q[(a,b), (c,d)] = 1 iff (c,d) is in the class A_(a,b) of Lemma 1, or None when
    a single class holds every tap (then eq. 1 is a plain sum).

    ``A_(a,b) = {(c,d): c = a mod s1, d = b mod s2, 0 <= c-a <= span1, 0 <= d-b <= span2}``
    with ``span_i = h_in + 2 p_i - k_i`` (the largest such set).
    """
    (k1, k2), (s1, s2), (m1, m2) = kernel_size, stride, span
    if s1 == s2 == 1 and k1 - 1 <= m1 and k2 - 1 <= m2:
        return None
    r1, r2 = torch.arange(k1), torch.arange(k2)
    ok1 = ((r1[None] - r1[:, None]) % s1 == 0) & (r1[None] >= r1[:, None]) & (r1[None] - r1[:, None] <= m1)
    ok2 = ((r2[None] - r2[:, None]) % s2 == 0) & (r2[None] >= r2[:, None]) & (r2[None] - r2[:, None] <= m2)
    q = (ok1[:, None, :, None] & ok2[None, :, None, :]).reshape(k1 * k2, k1 * k2)
    return q.T.to(device=device, dtype=dtype).contiguous()


def _require_assumption1(conv: nn.Conv2d, input_size) -> ConvGeometry:
    _check_conv2d(conv)
    g = conv_geometry(conv, input_size)
    if not _assumption1(g):
        raise ValueError("Theorem 1 needs Assumption 1; call conv2d_norm, which falls back to the exact general method")
    return g


def theorem1_l1(conv: nn.Conv2d, input_size) -> torch.Tensor:
    """Eq. (1): ``max_j max_{A in S} sum_{(k,t) in A} sum_i |K[i,j,k,t]|`` (Assumption 1 required).

    One pass over ``|K|`` gives the per-tap column sums ``sum_i |K[i,j,k,t]|`` (over the outputs of
    j's group); the class sums are then a product with the small Lemma 1 indicator matrix.
    """
    g = _require_assumption1(conv, input_size)
    return theorem1_l1_kernel(compute_kernel(conv), conv.groups, g.kernel_size, g.stride, tuple(lo for lo, _ in g.pads),
                              g.in_size).to(conv.weight.dtype)


def theorem1_l1_kernel(k: torch.Tensor, groups: int, kernel_size, stride, padding, hw) -> torch.Tensor:
    """Eq. (1) on a bare kernel ``k`` (no Assumption 1 check: outside it the value is not ``||M||_1``)."""
    d_out, d_in_g, k1, k2 = k.shape
    q = _lemma1_classes(tuple(kernel_size), tuple(stride),
                        (hw[0] + 2 * padding[0] - k1, hw[1] + 2 * padding[1] - k2), k.device, k.dtype)
    # per-tap column sums sum_i |K[i,j,k,t]| over the outputs of j's group, one pass over |K|
    if groups == 1:
        colsum = k.abs().sum(0)  # (d_in, k1, k2)
    else:
        colsum = k.abs().reshape(groups, d_out // groups, d_in_g * k1 * k2).sum(1).reshape(groups * d_in_g, k1, k2)
    if q is None:  # one class holds every tap: eq. 1 is the largest total over an input channel
        return colsum.sum((1, 2)).max(0).values  # one maximiser gets the whole (sparse) subgradient
    return _max(colsum.reshape(-1, k1 * k2) @ q)


def theorem1_linf(conv: nn.Conv2d, input_size) -> torch.Tensor:
    """Eq. (2): ``max_i sum_{j,k,t} |K[i,j,k,t]|`` (Assumption 1 required)."""
    _require_assumption1(conv, input_size)
    return _max(compute_kernel(conv).abs().reshape(conv.out_channels, -1).sum(1)).to(conv.weight.dtype)


def _c_linf(g: ConvGeometry, kabs: torch.Tensor) -> torch.Tensor:
    """``||C||_inf = max C(1)`` with ``|K|``: every row's absolute sum."""
    return _max(apply(g, kabs.new_ones((1, g.in_channels, *g.in_size)), kabs))


def _c_l1(g: ConvGeometry, kabs: torch.Tensor) -> torch.Tensor:
    """``||C||_1 = max C^T(1)`` with ``|K|``: every column's absolute sum."""
    return _max(apply_adjoint(g, kabs.new_ones((1, g.out_channels, *g.out_size)), kabs))


def general_linf(layer, input_size) -> torch.Tensor:
    """Exact ``||M||_inf`` of any conv layer and geometry: ``max C(1)`` with ``|K|`` (``max C^T(1)`` for a
    transposed layer)."""
    g = conv_geometry(layer, input_size)
    check_zero_padding(g, math.inf)
    kabs = compute_kernel(layer).abs()
    return (_c_l1(g, kabs) if g.transposed else _c_linf(g, kabs)).to(layer.weight.dtype)


def general_l1(layer, input_size) -> torch.Tensor:
    """Exact ``||M||_1`` of any conv layer and geometry: ``max C^T(1)`` with ``|K|`` (``max C(1)`` for a
    transposed layer)."""
    g = conv_geometry(layer, input_size)
    check_zero_padding(g, 1)
    kabs = compute_kernel(layer).abs()
    return (_c_linf(g, kabs) if g.transposed else _c_l1(g, kabs)).to(layer.weight.dtype)


def taps_l1(layer, input_size) -> torch.Tensor:
    """Exact ``||M||_1`` of any conv layer and geometry in one pass over ``|K|`` (``nblib.norms.tap_sets``:
    ``||C||_1``, or ``||C||_inf`` for a transposed layer)."""
    g = conv_geometry(layer, input_size)
    check_zero_padding(g, 1)
    return tap_set_norm(g, compute_kernel(layer).abs(), "row" if g.transposed else "col").to(layer.weight.dtype)


def taps_linf(layer, input_size) -> torch.Tensor:
    """Exact ``||M||_inf`` of any conv layer and geometry in one pass over ``|K|`` (``nblib.norms.tap_sets``:
    ``||C||_inf``, or ``||C||_1`` for a transposed layer)."""
    g = conv_geometry(layer, input_size)
    check_zero_padding(g, math.inf)
    return tap_set_norm(g, compute_kernel(layer).abs(), "col" if g.transposed else "row").to(layer.weight.dtype)


L1_LINF_METHODS = {"theorem1": (theorem1_l1, theorem1_linf), "taps": (taps_l1, taps_linf),
                   "general": (general_l1, general_linf)}


def l1_linf_method(layer, input_size) -> str:
    """``"theorem1"`` for a Conv2d where Assumption 1 holds, else ``"taps"`` (raises for non-zero padding)."""
    g = conv_geometry(layer, input_size)
    if isinstance(layer, nn.Conv2d) and _assumption1(g):
        return "theorem1"
    check_zero_padding(g, 1)
    return "taps"


# ----------------------------------------------------------------------- public API
def conv_norm(layer, input_size, p, method: str | None = None, **options) -> torch.Tensor:
    """Operator norm ``||M||_p`` of a conv layer (Conv1d/2d/3d, ConvTranspose1d/2d/3d; bias excluded) on an
    input of spatial size ``input_size`` (a tuple of ints, one per spatial dimension).

    p = 1, inf: exact.  For a Conv2d where Assumption 1 holds the closed forms of Theorem 1 (eq. 1, eq. 2) are
    used; elsewhere their generalisation to every geometry, ``"taps"`` (``nblib.norms.tap_sets``); both one pass
    over ``|K|``, at a cost independent of the input size.  ``method`` may force ``"theorem1"``, ``"taps"`` or
    ``"general"`` (``C`` or ``C^T`` of ``|K|`` applied to a ones image: exact, but a convolution).
    p = 2: ``method`` in ``"power"`` (default; exact to relative tolerance ``tol``, options ``tol``,
    ``max_iter``, ``x0``, ``generator``), ``"fft"`` (circular stride-1 operator), ``"gram"`` (certified upper
    bound; option ``n_iter``), ``"bound"`` (eq. 3); :func:`l2_interval` gives a certified interval.
    Returns a 0-dim tensor on the kernel's device and dtype.
    """
    if (p in (1, math.inf) and method is None and not options and type(layer) is nn.Conv2d
            and type(input_size) in (tuple, list) and layer.weight.dtype in (torch.float32, torch.float64)):
        # hot path of norm decay: a cached geometry check, then one pass over |K|
        hw = tuple(input_size)
        if _fast_theorem1(layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.padding_mode,
                          layer.weight.dim(), hw):
            k = layer.weight
            if p == 1:
                return theorem1_l1_kernel(k, layer.groups, layer.kernel_size, layer.stride, layer.padding, hw)
            return k.abs().reshape(k.shape[0], -1).sum(1).max(0).values
    p = check_p(p)
    g = conv_geometry(layer, input_size)
    size = g.out_size if g.transposed else g.in_size
    if p == 2:
        method = method or "power"
        if method == "power":
            return power_iteration(layer, size, **options)
        if method == "fft":
            return singular_values_fft(layer, size).max()
        if method == "gram":
            return gram_iteration(layer, size, **options)
        if method == "bound":
            return eq3_bound(layer, size)
        raise ValueError(f"unknown l2 method {method!r}; choose one of {L2_METHODS}")
    if options:
        raise ValueError(f"options {sorted(options)} apply to p=2 only")
    if method is None:
        method = "theorem1" if isinstance(layer, nn.Conv2d) and _assumption1(g) else "taps"
    if method not in L1_LINF_METHODS:
        raise ValueError(f"unknown l1/l_inf method {method!r}; choose one of {sorted(L1_LINF_METHODS)}")
    return L1_LINF_METHODS[method][0 if p == 1 else 1](layer, size)


def conv2d_norm(conv: nn.Conv2d, input_size, p, method: str | None = None, **options) -> torch.Tensor:
    """:func:`conv_norm` of an ``nn.Conv2d`` on an ``(H, W)`` input (the paper's setting)."""
    if type(conv) is not nn.Conv2d:
        _check_conv2d(conv)
    return conv_norm(conv, input_size, p, method=method, **options)


def linear_norm(linear: nn.Linear, p) -> torch.Tensor:
    """``||W||_p`` of ``x -> W x`` (bias excluded): max column abs sum (1), largest singular value (2),
    max row abs sum (inf).  fp16/bf16 weights are computed in fp32 and returned in their dtype."""
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"expected an nn.Linear, got {type(linear).__name__}")
    p = check_p(p)
    w = compute_kernel(linear)
    if p == 1:
        out = _max(w.abs().sum(0))
    elif p == math.inf:
        out = _max(w.abs().sum(1))
    else:
        out = torch.linalg.matrix_norm(w, 2)
    return out.to(linear.weight.dtype)


def batchnorm_norm(bn: nn.modules.batchnorm._BatchNorm, p=None) -> torch.Tensor:
    """Norm of BatchNorm in eval mode, ``x -> gamma (x - mu) / sqrt(var + eps) + beta``.

    Its linear part is diagonal, so every operator l_p norm equals ``max |gamma| / sqrt(var + eps)``.
    """
    if not isinstance(bn, BATCHNORM):
        raise ValueError(f"expected a BatchNorm layer, got {type(bn).__name__}")
    if p is not None:
        check_p(p)
    if bn.running_var is None:
        raise ValueError("BatchNorm without running statistics has no fixed eval-mode map")
    var = bn.running_var.to(compute_dtype(bn.running_var.dtype))
    scale = (var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = bn.weight * scale
    return scale.abs().max().to(bn.running_var.dtype if bn.weight is None else bn.weight.dtype)


def sparse_subgradient(layer, input_size, p) -> tuple[torch.Tensor, tuple, torch.Tensor]:
    """``(||M||_p, (dim, index), block)`` for ``p`` in ``{1, inf}`` of a conv layer (at spatial size
    ``input_size``) or a Linear (``input_size=None``), without autograd (Algorithm 1, line 3): a subgradient
    w.r.t. the weight is 0 except ``subgradient.index_select(dim, index) = block`` (``dim`` 0 for a row of
    ``M``, 1 for a column; ``index`` a 1-element int64 tensor on the weight's device), which is ``sign(K)`` on
    the entries of one maximising row (``p = inf``) or column (``p = 1``) of ``M`` mapped back to the kernel.
    Its entries are in ``{-1, 0, 1}`` and ``<subgradient, K> = ||M||_p``.  Values in the weight's dtype
    (computed in fp32 for fp16/bf16).  Nothing is read back to the host (no ``.item()``), so a training step
    on a GPU does not wait here; apply it with ``index_add_`` / ``index_copy_``.
    """
    p = check_p(p)
    if p == 2:
        raise ValueError("subgradients here cover p = 1 and p = inf (for p = 2 differentiate power_iteration)")
    w = layer.weight.detach()
    wc = w.to(compute_dtype(w.dtype))
    if isinstance(layer, nn.Linear):
        dim = 0 if p == math.inf else 1
        sums = wc.abs().sum(1 - dim)
        i = sums.argmax().reshape(1)
        return sums.gather(0, i).reshape(()).to(w.dtype), (dim, i), wc.index_select(dim, i).sign().to(w.dtype)
    g = conv_geometry(layer, input_size)
    check_zero_padding(g, p)
    value, index, block = tap_set_subgradient(g, wc, "row" if (p == math.inf) != g.transposed else "col")
    return value.to(w.dtype), index, block.to(w.dtype)


def norm_subgradient(layer, input_size, p) -> tuple[torch.Tensor, torch.Tensor]:
    """``(||M||_p, subgradient)``: :func:`sparse_subgradient` with the subgradient as a dense tensor."""
    value, (dim, index), block = sparse_subgradient(layer, input_size, p)
    sub = torch.zeros_like(layer.weight, memory_format=torch.contiguous_format).detach()
    return value, sub.index_copy_(dim, index, block)
