"""Singular value clipping's math (Sedghi, Gupta & Long, ICLR 2019): the projection of a convolution, or of a
matrix, onto the maps whose singular values are ``<= c``.

A stride-1 circular convolution is block-diagonalised by the 2-D DFT into frequency matrices; clipping each
one's singular values at ``c`` (:func:`clip_matrices`: an SVD, or batched Newton-Schulz iterations that use
matmuls only) and transforming back is the exact Frobenius projection of the circular operator
(:func:`clip_singular_values`, then truncated to the kernel's support).  :class:`nblib.training.regularizers.\
SingularValueClipping` applies it to every layer of a model during training.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from nblib.norms.conv_geometry import dilated_kernel, pair

__all__ = ["SVC_METHODS", "NS_ITERATIONS", "newton_schulz_clip", "clip_matrices", "clip_singular_values",
           "clip_linear_singular_values"]

#: How a batch of matrices gets its singular values clipped: ``"svd"`` (``torch.linalg.svd``: LAPACK on the
#: CPU, but on CUDA torch loops over cuSOLVER one matrix at a time for matrices with a side over 32: 817 calls
#: per VGG-11 clip), ``"newton_schulz"`` (:func:`newton_schulz_clip`: batched matmuls only), ``"auto"``: svd on
#: the CPU (faster there), newton_schulz on CUDA.
SVC_METHODS = ("auto", "svd", "newton_schulz")
#: Iterations of each Newton-Schulz loop of :func:`newton_schulz_clip` (sign, then inverse square root).
NS_ITERATIONS = 40


def _strict_matmul(device: torch.device):
    """Context: cuBLAS matmuls in strict float32 on CUDA (the Newton-Schulz loops need it under ``tf32``)."""
    import contextlib

    if device.type != "cuda":
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def strict():
        old = torch.backends.cuda.matmul.fp32_precision
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            torch.backends.cuda.matmul.fp32_precision = old
    return strict()


def newton_schulz_clip(m: torch.Tensor, c: float, iterations: int = NS_ITERATIONS) -> torch.Tensor:
    r"""``U min(S, c) V^H`` for every matrix ``m = U S V^H`` of a batch ``(..., p, q)``, by batched matmuls only.

    With ``A`` the taller of ``m`` and ``m^H`` (``n`` columns) and ``G = A^H A`` (eigenvalues ``s^2``):

    1. ``P = (I + sign(G - c^2 I)) / 2``, the projector onto the singular directions above ``c``; the sign by
       Newton-Schulz, ``X <- 3/2 X - 1/2 X^3`` from ``X_0 = (G - c^2 I) / ||G - c^2 I||_F``;
    2. ``H = P G P + c^2 (I - P)`` (eigenvalues ``s^2`` above ``c^2``, ``c^2`` elsewhere: condition
       ``s_max^2 / c^2``) and ``H^{-1/2}`` by the coupled Newton-Schulz iteration ``T = (3I - Z Y)/2``,
       ``Y <- Y T``, ``Z <- T Z`` from ``Y_0 = H / ||H||_F``, ``Z_0 = I``;
    3. ``A (I - P) + c A H^{-1/2} P``: directions below ``c`` kept, those above scaled to ``c``.

    ``iterations`` per loop, no host sync.  A singular value within about ``||G||_F 1.5^{-iterations}`` of
    ``c^2`` may be left part-way between ``s`` and ``c``; the error is then at most ``|s - c|``, itself that
    small.  Checked against :func:`torch.linalg.svd` on the four CIFAR models' frequency matrices (tests)."""
    flip = m.shape[-2] < m.shape[-1]
    a = m.mH if flip else m
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    g = a.mH @ a
    c2 = c * c
    x = g - c2 * eye
    x = x / torch.linalg.matrix_norm(x, keepdim=True).clamp_min(torch.finfo(x.real.dtype).tiny)
    for _ in range(iterations):
        x = 1.5 * x - 0.5 * (x @ x @ x)
    p = 0.5 * (eye + x)
    q = eye - p
    h = p @ g @ p + c2 * q
    scale = torch.linalg.matrix_norm(h, keepdim=True)
    y, z = h / scale, eye.expand_as(h)
    for _ in range(iterations):
        t = 0.5 * (3 * eye - z @ y)
        y, z = y @ t, t @ z
    out = a @ q + c * (a @ (z / scale.sqrt()) @ p)
    return out.mH if flip else out


def clip_matrices(m: torch.Tensor, c: float, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``(U min(S, c) V^H, largest singular value)`` of a batch of matrices ``m`` by ``method``
    (:data:`SVC_METHODS`).  With ``newton_schulz`` the largest singular value is the square root of 30 power
    iterations on ``m^H m`` (a lower bound, what the clipping reports, not what it uses)."""
    if method not in SVC_METHODS:
        raise ValueError(f"unknown SVC method {method!r}; choose one of {SVC_METHODS}")
    if method == "auto":
        method = "svd" if m.device.type == "cpu" else "newton_schulz"
    if method == "svd":
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        return (u * s.clamp(max=c).to(u.dtype).unsqueeze(-2)) @ vh, s.max()
    with _strict_matmul(m.device):
        out = newton_schulz_clip(m, c)
        g = m.mH @ m
        v = torch.ones(*g.shape[:-1], 1, dtype=g.dtype, device=g.device)
        for _ in range(30):
            v = g @ v
            v = v / torch.linalg.vector_norm(v, dim=-2, keepdim=True).clamp_min(torch.finfo(v.real.dtype).tiny)
        top = torch.linalg.vector_norm(g @ v, dim=-2).max().sqrt()
    return out, top


def _check_size(input_size) -> tuple[int, int]:
    if isinstance(input_size, int) or len(input_size) != 2:
        raise ValueError(f"input_size must be the spatial size (H, W) of the circular operator, got {input_size!r}")
    return int(input_size[0]), int(input_size[1])


@torch.no_grad()
def clip_singular_values(conv: nn.Conv2d, input_size, c: float, method: str = "auto") -> torch.Tensor:
    """Singular value clipping of a Conv2d (Sedghi, Gupta & Long 2019), in place; returns the largest
    singular value before clipping.

    The stride-1 circular convolution on an ``n1 x n2 = input_size`` input is block-circulant with
    circulant blocks; the 2-D DFT of the kernel (zero-padded to ``n1 x n2``) block-diagonalises it into the
    frequency matrices ``P[u, v] = sum_{k,t} K[:, :, k, t] w1^{uk} w2^{vt}`` (``d_out/g x d_in/g`` per group),
    whose singular values are those of the operator.  Each ``P[u, v] = U S V^H`` becomes ``U min(S, c) V^H``,
    which is the exact Frobenius projection of the circular operator onto ``{||.||_2 <= c}``; the inverse
    DFT gives an ``n1 x n2`` kernel, of which only the original ``k1 x k2`` taps are kept.  All frequency
    matrices are clipped as one batch by ``method`` (:func:`clip_matrices`: an SVD, or batched Newton-Schulz
    iterations on CUDA).

    *This truncation makes the result an approximate projection*: exact (all singular values become
    ``min(s, c)``) when the kernel's reach equals ``input_size``, otherwise the discarded taps carry part of
    the clipped spectrum and the top singular value after one call is above ``c`` in general; repeating the
    call (alternating projections, as in training with clipping every ``clip_every`` steps) brings it to
    ``c`` within a few percent.  A kernel whose norm is already ``<= c`` is returned unchanged.  A 1x1 kernel
    has one frequency matrix (``P[u, v] = K[:, :, 0, 0]`` for every ``u, v``): it is clipped once, exactly.

    * **Stride**: the clipping acts on the stride-1 circular operator.  A strided conv is a row subset of
      it, so its spectral norm is bounded by the stride-1 operator's: clipping to ``c`` still bounds the
      (circular) strided layer's norm by ``c``.
    * **Padding**: irrelevant to the circular operator.  The zero-padded layer on ``H x W`` is a submatrix
      of the circular operator on ``(H + 2 p1) x (W + 2 p2)``, not on ``H x W``; pass that size (or
      ``SingularValueClipping(..., padded=True)``) to bound the true zero-padded layer.  Sedghi et al. and
      the paper clip at the input size.
    * **Groups**: each group's frequency matrices are clipped separately (the operator is block-diagonal).
    * **Dilation**: the dilated kernel (holes filled with zeros) is clipped on its reach
      ``d (k - 1) + 1`` and the dilated taps are kept (the holes are one more truncation).

    The kernel is overwritten in place (under ``no_grad``); the bias is untouched.  Raises ValueError when
    ``input_size`` is smaller than the (dilated) kernel: the circular operator would wrap taps onto each other.
    """
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"expected an nn.Conv2d, got {type(conv).__name__}; use clip_linear_singular_values "
                         "for nn.Linear")
    c = float(c)
    if not (math.isfinite(c) and c >= 0):
        raise ValueError(f"the clipping threshold c must be a finite number >= 0, got {c}")
    n1, n2 = _check_size(input_size)
    k = dilated_kernel(conv)
    r1, r2 = k.shape[-2:]
    if n1 < r1 or n2 < r2:
        raise ValueError(f"input size {(n1, n2)} is smaller than the kernel's reach {(r1, r2)}: the circular "
                         "operator is undefined there; for a zero-padded layer clip at the padded size "
                         "(H + 2 p1, W + 2 p2) instead")
    d1, d2 = pair(conv.dilation)
    clipped, top = _clip_kernel(k, conv.groups, (n1, n2), c, method)
    conv.weight.copy_(clipped[:, :, :r1:d1, :r2:d2])
    return top


def _clip_kernel(k: torch.Tensor, groups: int, size: tuple, c: float, method: str) -> tuple:
    """``(clipped n1 x n2 kernel, largest singular value)`` of the kernel ``k`` (``d_out x d_in/g x r1 x r2``)
    on an ``n1 x n2 = size`` input: its frequency matrices per group clipped as one batch.  A 1x1 kernel has one
    frequency matrix (the kernel matrix), clipped once and returned as 1 x 1."""
    d_out, d_in_g, r1, r2 = k.shape
    if r1 == r2 == 1:
        m, top = clip_matrices(k[:, :, 0, 0].reshape(groups, d_out // groups, d_in_g), c, method)
        return m.reshape(d_out, d_in_g, 1, 1), top
    # real kernel -> Hermitian spectrum: the half-plane v <= n2 // 2 holds every distinct P[u, v]
    kf = torch.fft.rfft2(k, s=size)  # (d_out, d_in/g, n1, n2 // 2 + 1)
    m = kf.reshape(groups, d_out // groups, d_in_g, *kf.shape[-2:]).permute(0, 3, 4, 1, 2)
    m, top = clip_matrices(m, c, method)
    kf = m.permute(0, 3, 4, 1, 2).reshape(d_out, d_in_g, *kf.shape[-2:])
    return torch.fft.irfft2(kf, s=size), top


@torch.no_grad()
def clip_linear_singular_values(linear: nn.Linear, c: float, method: str = "auto") -> torch.Tensor:
    """``W = U S V^T -> U min(S, c) V^T`` in place (the exact l2 projection, :func:`clip_matrices` by
    ``method``); returns the old top singular value."""
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"expected an nn.Linear, got {type(linear).__name__}")
    c = float(c)
    if not (math.isfinite(c) and c >= 0):
        raise ValueError(f"the clipping threshold c must be a finite number >= 0, got {c}")
    w, top = clip_matrices(linear.weight, c, method)
    linear.weight.copy_(w)
    return top
