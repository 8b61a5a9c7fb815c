"""Operator norms of CNN layers (Liang & Huang, AAAI 2021, Theorem 1).

A Conv2d without bias is the linear map ``x -> M x`` from the flattened input
``(d_in, h_in, w_in)`` (padding excluded) to the flattened output.  This module
computes norms of ``M`` without forming it:

* ``p = inf``: ``||M||_inf`` = largest absolute row sum.  Under Assumption 1 this
  is eq. (2), ``max_i sum_{j,k,t} |K[i,j,k,t]|``; in general it is the largest
  entry of ``conv(1, |K|)`` (each output's row sum over the inputs it sees).
* ``p = 1``: ``||M||_1`` = largest absolute column sum.  Under Assumption 1 this
  is eq. (1), the largest sum of ``|K|`` over a class of Lemma 1; in general it
  is the largest entry of ``conv^T(1, |K|)`` (the adjoint applied to ones).
* ``p = 2``: power iteration on ``M^T M`` through conv and its adjoint (exact at
  convergence), Sedghi-Gupta-Long FFT (circular stride-1 operator), Gram
  iteration (Delattre et al. 2023, certified upper bound) or eq. (3).

Both l1/l_inf routes are exact for every stride, padding, dilation, group count
and input size with zero padding: for a fixed output position each kernel tap
reads a distinct input pixel, so every entry of ``M`` is a single kernel entry.
All functions are differentiable in the kernel (subgradient of the max).
"""
from __future__ import annotations

import functools
import math
import warnings

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

P_VALUES = (1, 2, math.inf)
L2_METHODS = ("power", "fft", "gram", "bound")
OPERATOR_MATRIX_MAX_ENTRIES = 2**26  # dense oracle cap: 64M entries (256 MB in float32)


# --------------------------------------------------------------------------- checks
def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _check_p(p) -> float:
    if p not in P_VALUES:
        raise ValueError(f"p must be one of 1, 2, math.inf; got {p!r}")
    return math.inf if p == math.inf else int(p)


def _check_conv(conv) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(
            f"expected an nn.Conv2d, got {type(conv).__name__}; use linear_norm for nn.Linear "
            "and batchnorm_norm for nn.BatchNorm2d"
        )
    if conv.weight.dim() != 4:
        raise ValueError(f"Conv2d kernel must be 4-D (d_out, d_in/groups, k1, k2), got {conv.weight.dim()}-D")
    if isinstance(conv.padding, str):
        raise ValueError("padding='same'/'valid' strings are not supported; give integer padding")


def _check_input_size(conv: nn.Conv2d, input_size) -> tuple[int, int]:
    if isinstance(input_size, int) or len(input_size) != 2:
        raise ValueError(f"input_size must be the input's spatial size (H, W), got {input_size!r}")
    h, w = (int(v) for v in input_size)
    (k1, k2), (d1, d2), (p1, p2) = (conv.kernel_size, _pair(conv.dilation), _pair(conv.padding))
    reach1, reach2 = d1 * (k1 - 1) + 1, d2 * (k2 - 1) + 1
    if h < 1 or w < 1 or h + 2 * p1 < reach1 or w + 2 * p2 < reach2:
        raise ValueError(
            f"input_size {(h, w)} is smaller than the kernel's reach {(reach1, reach2)} "
            f"with padding {(p1, p2)}: the layer has no output"
        )
    return h, w


def _check_zero_padding(conv: nn.Conv2d) -> None:
    if conv.padding_mode != "zeros" and any(_pair(conv.padding)):
        raise ValueError(
            f"padding_mode={conv.padding_mode!r}: exact l1/l_inf norms are implemented for zero padding "
            "only (with reflect/replicate/circular padding one input pixel feeds several taps and the "
            "entries of M are sums of kernel entries); use operator_matrix for a dense answer"
        )


def output_size(conv: nn.Conv2d, input_size) -> tuple[int, int]:
    """Spatial output size ``floor((h + 2p - d(k-1) - 1) / s) + 1`` per dimension."""
    h, w = _check_input_size(conv, input_size)
    out = []
    for n, k, s, p, d in zip((h, w), conv.kernel_size, _pair(conv.stride), _pair(conv.padding), _pair(conv.dilation)):
        out.append((n + 2 * p - d * (k - 1) - 1) // s + 1)
    return out[0], out[1]


def _geometry(conv: nn.Conv2d) -> tuple:
    return (conv.kernel_size, _pair(conv.stride), _pair(conv.padding), _pair(conv.dilation), conv.padding_mode)


@functools.lru_cache(maxsize=4096)
def _assumption1(geometry: tuple, hw: tuple[int, int]) -> bool:
    kernel_size, stride, padding, dilation, padding_mode = geometry
    if dilation != (1, 1) or (padding_mode != "zeros" and any(padding)):
        return False
    for n, k, s, p in zip(hw, kernel_size, stride, padding):
        c = max(1, -(-p // s))
        if k + c * s - p > n:
            return False
    return True


@functools.lru_cache(maxsize=4096)
def _fast_theorem1(kernel_size, stride, padding, dilation, padding_mode, kernel_dim, hw) -> bool:
    """Cached: is this (valid) geometry and input size inside Assumption 1?  False on any doubt."""
    if kernel_dim != 4 or isinstance(padding, str) or len(hw) != 2 or not all(type(v) is int for v in hw):
        return False
    reach_ok = all(n + 2 * p >= k and n >= 1 for n, k, p in zip(hw, kernel_size, padding))
    return reach_ok and _assumption1((kernel_size, stride, padding, dilation, padding_mode), hw)


def assumption1_holds(conv: nn.Conv2d, input_size) -> bool:
    """Assumption 1 of the paper, plus what Theorem 1 takes for granted.

    With ``c_i`` the smallest positive integer such that ``c_i s_i >= p_i``:
    ``k_1 + c_1 s_1 - p_1 <= h_in`` and ``k_2 + c_2 s_2 - p_2 <= w_in``, zero padding,
    and (implicit in the paper) dilation 1.
    """
    _check_conv(conv)
    return _assumption1(_geometry(conv), _check_input_size(conv, input_size))


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


def _require_assumption1(conv: nn.Conv2d, input_size) -> tuple[int, int]:
    _check_conv(conv)
    hw = _check_input_size(conv, input_size)
    if not _assumption1(_geometry(conv), hw):
        raise ValueError("Theorem 1 needs Assumption 1; call conv2d_norm, which falls back to the exact general method")
    return hw


def theorem1_l1(conv: nn.Conv2d, input_size) -> torch.Tensor:
    """Eq. (1): ``max_j max_{A in S} sum_{(k,t) in A} sum_i |K[i,j,k,t]|`` (Assumption 1 required).

    One pass over ``|K|`` gives the per-tap column sums ``sum_i |K[i,j,k,t]|`` (over the outputs of
    j's group); the class sums are then a product with the small Lemma 1 indicator matrix.
    """
    h, w = _require_assumption1(conv, input_size)
    return _theorem1_l1(conv.weight, conv.groups, conv.kernel_size, _pair(conv.stride), _pair(conv.padding), (h, w))


def _theorem1_l1(k, groups, kernel_size, stride, padding, hw) -> torch.Tensor:
    d_out, d_in_g, k1, k2 = k.shape
    q = _lemma1_classes(kernel_size, stride, (hw[0] + 2 * padding[0] - k1, hw[1] + 2 * padding[1] - k2),
                        k.device, k.dtype)
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
    return _max(conv.weight.abs().reshape(conv.out_channels, -1).sum(1))


def _conv_args(conv: nn.Conv2d) -> dict:
    return dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)


def general_linf(conv: nn.Conv2d, input_size) -> torch.Tensor:
    """Exact ``||M||_inf`` for any geometry: ``max conv(1, |K|)`` (every row's absolute sum)."""
    _check_zero_padding(conv)
    h, w = _check_input_size(conv, input_size)
    k = conv.weight
    ones = torch.ones(1, conv.in_channels, h, w, dtype=k.dtype, device=k.device)
    return _max(F.conv2d(ones, k.abs(), **_conv_args(conv)))


def general_l1(conv: nn.Conv2d, input_size) -> torch.Tensor:
    """Exact ``||M||_1`` for any geometry: ``max conv^T(1, |K|)`` (every column's absolute sum)."""
    _check_zero_padding(conv)
    h, w = _check_input_size(conv, input_size)
    k = conv.weight
    ho, wo = output_size(conv, (h, w))
    ones = torch.ones(1, conv.out_channels, ho, wo, dtype=k.dtype, device=k.device)
    return _max(_adjoint(conv, k.abs(), ones, (h, w)))


def _adjoint(conv: nn.Conv2d, kernel: torch.Tensor, y: torch.Tensor, input_size) -> torch.Tensor:
    """``M^T y`` for the zero-padded conv with ``kernel`` (transposed conv with the right output size)."""
    return torch.nn.grad.conv2d_input(
        (y.shape[0], conv.in_channels, *input_size), kernel, y, **_conv_args(conv)
    )


# --------------------------------------------------------------------------- l2
def power_iteration(conv: nn.Conv2d, input_size, tol: float = 1e-6, max_iter: int = 1000,
                    x0: torch.Tensor | None = None, generator: torch.Generator | None = None,
                    return_vector: bool = False):
    """Largest singular value of the true (zero-padded, strided) operator ``M``.

    Power iteration on ``M^T M`` with conv and its adjoint (Virmaux & Scaman 2018),
    stopped when the relative change of the estimate is below ``tol`` or after
    ``max_iter`` steps (then with a RuntimeWarning: the estimate ``||M v|| <= ||M||_2`` is a lower bound
    that has not converged, which happens when the top singular values are close).  The returned value ``<u, M v>`` with the final (detached)
    singular vectors is differentiable: its gradient is ``u v^T`` in kernel space.
    ``x0`` (shape ``(1, d_in, H, W)``) restarts from a previous vector.
    """
    _check_zero_padding(conv)
    h, w = _check_input_size(conv, input_size)
    k = conv.weight
    with torch.no_grad():
        kd = k.detach()
        if x0 is None:
            v = torch.randn(1, conv.in_channels, h, w, dtype=k.dtype, device=k.device, generator=generator)
        else:
            if x0.shape != (1, conv.in_channels, h, w):
                raise ValueError(f"x0 must have shape {(1, conv.in_channels, h, w)}, got {tuple(x0.shape)}")
            v = x0.to(dtype=k.dtype, device=k.device).clone()
        v = v / v.norm()
        sigma_old = 0.0
        for _ in range(max_iter):
            u = F.conv2d(v, kd, **_conv_args(conv))
            sigma = u.norm()
            if sigma == 0:
                break
            v = _adjoint(conv, kd, u / sigma, (h, w))
            v = v / v.norm()
            s = float(sigma)
            if abs(s - sigma_old) <= tol * s:
                break
            sigma_old = s
        else:
            warnings.warn(f"power iteration reached max_iter={max_iter} before its relative change fell below "
                          f"tol={tol:g} (the top singular values are close); the value is a lower bound of "
                          "||M||_2: raise max_iter, or use method='gram' for an upper bound", RuntimeWarning,
                          stacklevel=2)
        u = F.conv2d(v, kd, **_conv_args(conv))
        u = u / u.norm().clamp_min(torch.finfo(k.dtype).tiny)
    value = (u * F.conv2d(v, k, **_conv_args(conv))).sum()
    return (value, v) if return_vector else value


def _dilated_kernel(conv: nn.Conv2d) -> torch.Tensor:
    """The kernel with dilation holes filled by zeros (same map, dilation 1)."""
    k = conv.weight
    d1, d2 = _pair(conv.dilation)
    if (d1, d2) == (1, 1):
        return k
    k1, k2 = conv.kernel_size
    out = k.new_zeros(*k.shape[:2], d1 * (k1 - 1) + 1, d2 * (k2 - 1) + 1)
    out[:, :, ::d1, ::d2] = k
    return out


def _frequency_matrices(conv: nn.Conv2d, n: tuple[int, int]) -> torch.Tensor:
    """``P[g, u, v] = sum_{k,t} K_g[:, :, k, t] w^{uk + vt}``: (groups, n1, n2, d_out/g, d_in/g), complex."""
    k = _dilated_kernel(conv)
    if k.shape[-2] > n[0] or k.shape[-1] > n[1]:
        raise ValueError(f"kernel reach {tuple(k.shape[-2:])} exceeds the circular input size {n}")
    g = conv.groups
    kf = torch.fft.fft2(k, s=n)  # (d_out, d_in/g, n1, n2)
    kf = kf.reshape(g, k.shape[0] // g, k.shape[1], *n)
    return kf.permute(0, 3, 4, 1, 2)


def singular_values_fft(conv: nn.Conv2d, input_size) -> torch.Tensor:
    """All singular values of the circular, stride-1 conv on an ``H x W`` input (Sedghi, Gupta & Long 2019).

    The operator is block-circulant with circulant blocks; the 2-D DFT block-diagonalises it into the
    ``H W`` matrices ``P[u, v]`` (one per frequency, ``d_out/g x d_in/g`` per group), whose singular values
    together are those of the operator.  Returns a 1-D tensor (unsorted).  Padding is irrelevant to the
    circular operator; stride must be 1.
    """
    _check_conv(conv)
    if _pair(conv.stride) != (1, 1):
        raise ValueError(
            f"the Sedghi-Gupta-Long FFT method covers stride-1 convolutions only, got stride {conv.stride}; "
            "use method='power' (exact) or 'gram' (upper bound)"
        )
    h, w = _check_input_size(conv, input_size)
    return torch.linalg.svdvals(_frequency_matrices(conv, (h, w))).flatten()


def gram_iteration(conv: nn.Conv2d, input_size, n_iter: int = 6) -> torch.Tensor:
    """Certified upper bound of ``||M||_2`` by Gram iteration (Delattre, Barthelemy, Araujo & Allauzen 2023).

    The zero-padded conv on ``H x W`` is a sub-matrix of the circular conv on ``(H+2p1) x (W+2p2)``
    (a strided conv is a row subset of the stride-1 one), so ``||M||_2 <= max_f ||P_f||_2``.  For each
    frequency matrix ``G_0 = P_f``, ``G_{t+1} = G_t^H G_t`` gives ``||P_f||_2 <= ||G_T||_F^(1/2^T)``;
    rescaling by ``||G_t||_F`` at every step keeps the numbers finite.
    """
    _check_conv(conv)
    _check_zero_padding(conv)
    h, w = _check_input_size(conv, input_size)
    p1, p2 = _pair(conv.padding)
    g = _frequency_matrices(conv, (h + 2 * p1, w + 2 * p2))
    g = g.reshape(-1, *g.shape[-2:])
    if g.shape[-2] < g.shape[-1]:
        g = g.mH  # iterate on the smaller Gram matrix
    log_scale = torch.zeros(g.shape[0], dtype=g.real.dtype, device=g.device)
    for _ in range(n_iter):
        fro = torch.linalg.matrix_norm(g, "fro").clamp_min(torch.finfo(log_scale.dtype).tiny)
        log_scale = 2 * (log_scale + fro.log())
        g = g / fro[:, None, None]
        g = g.mH @ g
    fro = torch.linalg.matrix_norm(g, "fro").clamp_min(torch.finfo(log_scale.dtype).tiny)
    log_bound = (fro.log() + log_scale) / 2**n_iter
    return log_bound.exp().max()


def eq3_bound(conv: nn.Conv2d, input_size) -> torch.Tensor:
    """Eq. (3): ``||M||_2 <= (h_out w_out sum K^2)^(1/2)`` (a Frobenius bound; valid for every geometry)."""
    ho, wo = output_size(conv, input_size)
    return (ho * wo * conv.weight.pow(2).sum()).sqrt()


# ----------------------------------------------------------------------- public API
def conv2d_norm(conv: nn.Conv2d, input_size, p, method: str | None = None, **options) -> torch.Tensor:
    """Operator norm ``||M||_p`` of a Conv2d (bias excluded) on an input of spatial size ``input_size``.

    p = 1, inf: exact.  Where Assumption 1 holds the closed forms of Theorem 1 (eq. 1, eq. 2) are used
    (one pass over ``|K|``, independent of H, W); elsewhere the exact general method (conv / adjoint of
    ``|K|`` with a ones image).  ``method`` may force ``"theorem1"`` or ``"general"``.
    p = 2: ``method`` in ``"power"`` (default, exact at convergence; options ``tol``, ``max_iter``, ``x0``),
    ``"fft"`` (circular stride-1 operator), ``"gram"`` (certified upper bound; option ``n_iter``),
    ``"bound"`` (eq. 3).  Returns a 0-dim tensor on the kernel's device and dtype.
    """
    if (p in (1, math.inf) and method is None and not options and type(conv) is nn.Conv2d
            and isinstance(input_size, (tuple, list))):
        # hot path of norm decay: a cached geometry check, then one pass over |K|
        hw = tuple(input_size)
        if _fast_theorem1(conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.padding_mode,
                          conv.weight.dim(), hw):
            k = conv.weight
            if p == 1:
                return _theorem1_l1(k, conv.groups, conv.kernel_size, conv.stride, conv.padding, hw)
            return k.abs().reshape(k.shape[0], -1).sum(1).max(0).values
    _check_conv(conv)
    p = _check_p(p)
    input_size = _check_input_size(conv, input_size)
    if p == 2:
        method = method or "power"
        if method == "power":
            return power_iteration(conv, input_size, **options)
        if method == "fft":
            return singular_values_fft(conv, input_size).max()
        if method == "gram":
            return gram_iteration(conv, input_size, **options)
        if method == "bound":
            return eq3_bound(conv, input_size)
        raise ValueError(f"unknown l2 method {method!r}; choose one of {L2_METHODS}")
    if options:
        raise ValueError(f"options {sorted(options)} apply to p=2 only")
    geometry = _geometry(conv)
    if method is None:
        method = "theorem1" if _assumption1(geometry, input_size) else "general"
    elif method == "theorem1" and not _assumption1(geometry, input_size):
        _require_assumption1(conv, input_size)
    if method == "theorem1":  # the hot path of norm decay: no work beyond one pass over |K|
        if p == 1:
            return _theorem1_l1(conv.weight, conv.groups, conv.kernel_size, geometry[1], geometry[2], input_size)
        return _max(conv.weight.abs().reshape(conv.out_channels, -1).sum(1))
    if method == "general":
        return general_l1(conv, input_size) if p == 1 else general_linf(conv, input_size)
    raise ValueError(f"unknown l1/l_inf method {method!r}; choose 'theorem1' or 'general'")


def l1_linf_method(conv: nn.Conv2d, input_size) -> str:
    """``"theorem1"`` where Assumption 1 holds, else ``"general"`` (raises for non-zero padding)."""
    if assumption1_holds(conv, input_size):
        return "theorem1"
    _check_zero_padding(conv)
    return "general"


def linear_norm(linear: nn.Linear, p) -> torch.Tensor:
    """``||W||_p`` of ``x -> W x`` (bias excluded): max column abs sum (1), largest singular value (2),
    max row abs sum (inf)."""
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"expected an nn.Linear, got {type(linear).__name__}")
    p = _check_p(p)
    w = linear.weight
    if p == 1:
        return _max(w.abs().sum(0))
    if p == math.inf:
        return _max(w.abs().sum(1))
    return torch.linalg.matrix_norm(w, 2)


def batchnorm_norm(bn: nn.modules.batchnorm._BatchNorm, p=None) -> torch.Tensor:
    """Norm of BatchNorm in eval mode, ``x -> gamma (x - mu) / sqrt(var + eps) + beta``.

    Its linear part is diagonal, so every operator l_p norm equals ``max |gamma| / sqrt(var + eps)``.
    """
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"expected a BatchNorm layer, got {type(bn).__name__}")
    if p is not None:
        _check_p(p)
    if bn.running_var is None:
        raise ValueError("BatchNorm without running statistics has no fixed eval-mode map")
    scale = (bn.running_var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = bn.weight * scale
    return scale.abs().max()


def operator_matrix(conv: nn.Conv2d, input_size, max_entries: int = OPERATOR_MATRIX_MAX_ENTRIES) -> torch.Tensor:
    """Dense matrix ``M`` (``d_out h_out w_out x d_in h_in w_in``) of the layer without bias.

    Column n is the layer applied to the n-th basis image (any padding mode).  For tests and figures.
    """
    _check_conv(conv)
    h, w = _check_input_size(conv, input_size)
    ho, wo = output_size(conv, (h, w))
    n_in, n_out = conv.in_channels * h * w, conv.out_channels * ho * wo
    if n_in * n_out > max_entries:
        raise ValueError(f"operator matrix would have {n_in}x{n_out} entries, over the cap of {max_entries}")
    k = conv.weight
    x = torch.eye(n_in, dtype=k.dtype, device=k.device).reshape(n_in, conv.in_channels, h, w)
    padding = conv.padding
    if conv.padding_mode != "zeros":
        x, padding = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode), 0
    with torch.no_grad():
        out = F.conv2d(x, k, stride=conv.stride, padding=padding, dilation=conv.dilation, groups=conv.groups)
    return out.reshape(n_in, n_out).T.contiguous()


# ---------------------------------------------------------------------- model tables
SUPPORTED = (nn.Conv2d, nn.Linear)
_LINEAR_LIKE = (nn.modules.conv._ConvNd, nn.Bilinear)


def layer_input_shapes(model: nn.Module, input_shape, include_batchnorm: bool = False) -> dict:
    """``{name: (module, input shape without batch)}`` for every Conv2d / Linear (and BatchNorm if asked).

    One forward pass in eval mode on a zero batch of one input of shape ``input_shape`` (without the batch
    dimension: ``(C, H, W)`` for images, ``(n,)`` for vectors) with hooks.  No layer is skipped: a Conv2d the forward pass never reaches, a layer called on two input
    shapes, or a conv/bilinear layer of a kind this module cannot evaluate raises ValueError.
    """
    if isinstance(input_shape, int) or not all(isinstance(v, int) and v > 0 for v in input_shape):
        raise ValueError(f"input_shape must be one input's shape without the batch dimension, got {input_shape!r}")
    shape = (1, *input_shape)
    layers = []
    for name, m in model.named_modules():
        if isinstance(m, SUPPORTED) or (include_batchnorm and isinstance(m, nn.modules.batchnorm._BatchNorm)):
            layers.append((name, m))
        elif isinstance(m, _LINEAR_LIKE):
            raise ValueError(f"layer {name!r} is a {type(m).__name__}; only Conv2d, Linear and BatchNorm are supported")
    if not layers:
        raise ValueError("model has no Conv2d or Linear layer")
    seen: dict[str, set] = {name: set() for name, _ in layers}

    def hook(name):
        def record(_module, inputs):
            seen[name].add(tuple(inputs[0].shape[1:]))
        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in layers]
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape, dtype=param.dtype, device=param.device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = {}
    for name, m in layers:
        if isinstance(m, nn.Conv2d) and not seen[name]:
            raise ValueError(f"conv layer {name!r} was not reached by the forward pass; its input size is unknown")
        if len(seen[name]) > 1:
            raise ValueError(f"layer {name!r} is called on several input shapes {sorted(seen[name])}")
        out[name] = (m, next(iter(seen[name])) if seen[name] else None)
    return out


def layer_norm(module: nn.Module, in_shape, p, method: str | None = None, **options) -> tuple[torch.Tensor, str]:
    """``(||layer||_p, method used)`` for a Conv2d (at input shape ``in_shape``), Linear or BatchNorm."""
    if isinstance(module, nn.Conv2d):
        hw = tuple(in_shape[-2:])
        used = (method or "power") if p == 2 else (method or l1_linf_method(module, hw))
        return conv2d_norm(module, hw, p, method=method, **options), used
    if isinstance(module, nn.Linear):
        return linear_norm(module, p), ("svd" if p == 2 else "exact")
    return batchnorm_norm(module, p), "diagonal"


def layer_norms(model: nn.Module, input_shape, p, include_batchnorm: bool = False,
                method: str | None = None, **options) -> pd.DataFrame:
    """Norm table of ``model``: one row per Conv2d / Linear (and BatchNorm if asked), in module order.

    Each conv is evaluated at its true input size (see ``layer_input_shapes``).  Columns: name, kind,
    input_shape, kernel, stride, padding, dilation, groups, norm, method.  Never skips a layer.
    """
    p = _check_p(p)
    rows = []
    for name, (m, in_shape) in layer_input_shapes(model, input_shape, include_batchnorm).items():
        row = dict(name=name, kind=type(m).__name__, input_shape=in_shape, kernel=None, stride=None,
                   padding=None, dilation=None, groups=None)
        if isinstance(m, nn.Conv2d):
            row.update(kernel=tuple(m.kernel_size), stride=_pair(m.stride), padding=_pair(m.padding),
                       dilation=_pair(m.dilation), groups=m.groups)
        with torch.no_grad():
            value, used = layer_norm(m, in_shape, p, method=method, **options)
        row.update(norm=float(value), method=used)
        rows.append(row)
    return pd.DataFrame(rows)
