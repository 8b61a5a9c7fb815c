"""The l2 (spectral) norm of conv layers, each result with a stated accuracy.

For a layer with operator ``M`` (``C`` or ``C^T`` of ``nblib.norms.conv_geometry``; both have the singular values of
``C``):

* :func:`power_iteration` -- block power iteration on ``A = C^T C`` through the convolution and its adjoint
  (Virmaux & Scaman 2018, with Rayleigh-Ritz on a few vectors), stopped by a *residual bound*: with Ritz
  values ``theta_1 >= theta_2`` and residuals ``rho_i = ||A q_i - theta_i q_i||``, ``lambda_1 - theta_1`` is at
  most ``rho_1`` (Weyl), ``rho_1^2 / (theta_1 - theta_2 - rho_2)`` (Kato-Temple) or ``u^2 - theta_1`` for a
  certified upper bound ``u``.  It stops once the bound puts ``||C v|| = sqrt(theta_1) <= ||M||_2`` within
  relative ``tol``; the first two bounds take the Ritz values for the top of the spectrum (true for every
  start but a measure-zero set).  A RuntimeWarning says when ``max_iter`` ends the run first.
* :func:`l2_interval` -- a certified interval ``[lower, upper]`` of ``||M||_2`` with a requested relative
  width: the converged lower bound above and the smallest of several certified upper bounds (Gram iteration
  on a circulant embedding, ``sqrt(||M||_1 ||M||_inf)``, ``||M||_F``, and for small operators a dense
  eigensolve with its rounding margin).  Exact to the stated tolerance, with a warning when not reached.
* :func:`gram_iteration` (certified upper bound, Delattre et al. 2023), :func:`singular_values_fft` (the
  circular stride-1 operator, Sedghi, Gupta & Long 2019) and :func:`eq3_bound` (the paper's eq. 3).
"""
from __future__ import annotations

import math
import warnings

import torch

from nblib.norms.conv_geometry import (ConvGeometry, apply, apply_adjoint, check_zero_padding, compute_kernel,
                                       conv_geometry, dilated_kernel)

DENSE_MAX_INPUTS = 4096  # l2_interval: a dense eigensolve when C has at most this many input entries
GRAM_MAX_ENTRIES = 2**25  # frequency-matrix entries (complex) Gram iteration may hold


def _power(g: ConvGeometry, kd: torch.Tensor, v: torch.Tensor, tol: float, max_iter: int, block: int,
           generator: torch.Generator | None = None) -> tuple:
    """Block power (subspace) iteration on ``A = C^T C`` with Rayleigh-Ritz (no grad): ``v`` starts the block,
    random vectors fill it.  Returns ``(top Ritz vector of unit norm, converged)``.

    With Ritz values ``theta_1 >= theta_2`` and residuals ``rho_i = ||A q_i - theta_i q_i||``, the error
    ``lambda_1 - theta_1 >= 0`` is bounded by ``rho_1`` (Weyl), by ``rho_1^2 / (theta_1 - theta_2 - rho_2)``
    when that gap is positive (Kato-Temple, taking ``theta_2 + rho_2`` as the bound of the rest of the
    spectrum) and, rigorously, by ``u^2 - theta_1`` with ``u`` the strided-circulant Gram bound of ``||C||_2``
    (computed after 30 steps when it fits in memory).  It stops once the bound makes ``sqrt(theta_1)`` exact to
    relative ``tol``.  The block converges at rate ``(sigma_{block+1} / sigma_1)^2``, resolving close pairs."""
    n = g.n_in
    b = max(1, min(block, n))
    first = v.reshape(1, n)
    rest = torch.randn(b - 1, n, dtype=kd.dtype, device=kd.device, generator=generator)
    q = torch.linalg.qr(torch.cat([first, rest]).T).Q.T  # (b, n), orthonormal rows
    shape_in = (b, g.in_channels, *g.in_size)
    top, upper_sq = q[0], math.inf
    allowed = (1 + tol) ** 2 - 1  # relative error of theta that keeps sqrt(theta) within tol
    for it in range(max_iter):
        u = apply(g, q.reshape(shape_in), kd)
        w = apply_adjoint(g, u, kd).reshape(b, n)  # A q
        h = q @ w.T
        evals, evecs = torch.linalg.eigh((h + h.T) / 2)
        y = evecs.flip(1).T  # Ritz vectors, largest first
        thetas = evals.flip(0).tolist()
        q, w = y @ q, y @ w
        top = q[0]
        if thetas[0] <= 0.0:  # C q = 0: exact when C = 0, i.e. when C(1) with |K| vanishes (taps read padding)
            kabs = kd.abs()
            return top, bool(float(apply(g, kabs.new_ones((1, g.in_channels, *g.in_size)), kabs).max()) == 0.0)
        rho = (w[:2] - torch.tensor(thetas[:2], dtype=w.dtype, device=w.device)[:, None] * q[:2]).norm(dim=1).tolist()
        bound = rho[0]
        if b >= 2 and thetas[0] - thetas[1] - rho[1] > 0:
            bound = min(bound, rho[0] ** 2 / (thetas[0] - thetas[1] - rho[1]))
        if it == 30 and _gram_fits(g):
            upper_sq = float(_gram_bound(frequency_matrices(g, kd), 8)) ** 2
        bound = min(bound, upper_sq - thetas[0])
        if bound <= allowed * thetas[0]:
            return top, True
        q = torch.linalg.qr(w.T).Q.T
    return top, False


def power_iteration(layer, input_size, tol: float = 1e-6, max_iter: int = 1000, x0: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, return_vector: bool = False, block: int = 4):
    """Largest singular value of the true (zero-padded, strided, dilated, grouped) operator of a conv layer.

    Exact to relative tolerance ``tol``: block power iteration (``block`` vectors, Rayleigh-Ritz) on
    ``C^T C`` stops when a residual bound of the top Ritz value ``theta = ||C v||^2`` (Weyl, Kato-Temple, or the
    certified Gram upper bound; see ``_power``) puts ``||C v|| <= ||M||_2`` within relative ``tol`` of it.
    When ``max_iter`` steps end first a RuntimeWarning says the value is an
    uncertified lower bound (use :func:`l2_interval` for a certificate).  The returned ``<u, C v>`` with the
    final (detached) singular vectors is differentiable: its gradient is ``u v^T`` in kernel space.  ``x0``
    restarts from a previous vector of ``C``'s input shape ``(1, in_channels, *in_size)`` (for a transposed
    layer: the layer's output shape).  fp16/bf16 kernels are iterated in fp32; the result has the kernel's
    dtype and device.
    """
    g = conv_geometry(layer, input_size)
    check_zero_padding(g, 2)
    k = compute_kernel(layer)
    shape = (1, g.in_channels, *g.in_size)
    with torch.no_grad():
        kd = k.detach()
        if x0 is None:
            v = torch.randn(shape, dtype=kd.dtype, device=kd.device, generator=generator)
        else:
            if tuple(x0.shape) != shape:
                raise ValueError(f"x0 must have shape {shape}, got {tuple(x0.shape)}")
            v = x0.to(dtype=kd.dtype, device=kd.device).clone()
        v, converged = _power(g, kd, v, tol, max_iter, block, generator)
        v = v.reshape(shape)
        if not converged:
            warnings.warn(f"power iteration reached max_iter={max_iter} before its residual fell below tol={tol:g} "
                          "(the top singular values are close); the value is a lower bound of ||M||_2 that is not "
                          "certified: raise max_iter, or use l2_interval for a certified interval",
                          RuntimeWarning, stacklevel=2)
        u = apply(g, v, kd)
        u = u / u.norm().clamp_min(torch.finfo(kd.dtype).tiny)
    value = (u * apply(g, v, k)).sum().to(layer.weight.dtype)
    return (value, v) if return_vector else value


def singular_values_fft(layer, input_size) -> torch.Tensor:
    """All singular values of the circular, stride-1 convolution on ``C``'s input size (Sedghi, Gupta & Long
    2019): the DFT block-diagonalises it into one ``out/g x in/g`` matrix per frequency and group.  Returns
    a 1-D tensor (unsorted).  Padding is irrelevant to the circular operator; stride must be 1."""
    g = conv_geometry(layer, input_size)
    if any(s != 1 for s in g.stride):
        raise ValueError(f"the Sedghi-Gupta-Long FFT method covers stride-1 convolutions only, got stride {g.stride}; "
                         "use method='power' (exact to a tolerance) or 'gram' (upper bound)")
    if any(r > n for r, n in zip(g.reach, g.in_size)):
        raise ValueError(f"kernel reach {g.reach} exceeds the circular input size {g.in_size}")
    k = compute_kernel(layer)
    full = torch.fft.fftn(dilated_kernel(k, g.dilation).to(torch.promote_types(k.dtype, torch.complex64)),
                          s=g.in_size, dim=tuple(range(2, k.dim())))
    m = full.reshape(g.groups, g.out_channels // g.groups, g.in_channels // g.groups, -1).permute(0, 3, 1, 2)
    return torch.linalg.svdvals(m).flatten().to(layer.weight.dtype)


def circulant_size(g: ConvGeometry) -> tuple:
    """Smallest circular size ``L`` (a multiple of the stride) whose strided circular convolution
    ``y[i] = sum_t K[t] x[(i s + t d) mod L]`` holds ``C`` as a submatrix, ``C``'s input ``x`` sitting at
    ``[lo, lo + n)``.  Out-of-range reads must not alias into the input (``L >= n + lo``, ``L >= n + hi``), a
    window must not wrap onto itself (``L >= reach``) and distinct outputs must be distinct rows
    (``L >= o s``)."""
    return tuple(-(-max(n + lo, n + hi, r, o * s) // s) * s
                 for n, (lo, hi), r, o, s in zip(g.in_size, g.pads, g.reach, g.out_size, g.stride))


def frequency_matrices(g: ConvGeometry, kernel: torch.Tensor) -> torch.Tensor:
    """Frequency matrices of the strided circular convolution on :func:`circulant_size`, whose largest
    spectral norm is that convolution's l2 norm, an upper bound of ``||C||_2``.

    Polyphase form: with ``t d = a s + phi`` the strided convolution is a stride-1 circular convolution on
    ``L / s`` positions from ``in/g * prod(s)`` input channels (input channel and phase ``phi``) with kernel
    ``K'[o, (j, phi), a]``; the DFT block-diagonalises it into ``P_f = sum_a K'[:, :, a] w^{f a}``, of shape
    ``(groups * n_freq, out/g, in/g * prod(s))`` (half of the spectrum: for a real kernel ``P_{-f}`` is the
    conjugate of ``P_f``).  Stride 1 gives the Sedghi-Gupta-Long matrices.
    """
    size = circulant_size(g)
    kd = dilated_kernel(kernel, g.dilation)
    n = g.ndim
    # pad each reach up to a multiple of its stride, split it into (a, phi) and move the phases to channels
    pad = [v for r, st in zip(reversed(g.reach), reversed(g.stride)) for v in (0, -(-r // st) * st - r)]
    kd = torch.nn.functional.pad(kd, pad)
    split = [v for r, st in zip(kd.shape[2:], g.stride) for v in (r // st, st)]
    kd = kd.reshape(*kd.shape[:2], *split)
    a_dims, phi_dims = [2 + 2 * i for i in range(n)], [3 + 2 * i for i in range(n)]
    kd = kd.permute(0, 1, *phi_dims, *a_dims)
    c_in_g = g.in_channels // g.groups * math.prod(g.stride)
    kd = kd.reshape(g.out_channels, c_in_g, *kd.shape[2 + n:])
    dims = tuple(range(2, 2 + n))
    period = tuple(L // st for L, st in zip(size, g.stride))
    kf = torch.fft.rfftn(kd, s=period, dim=dims)
    kf = kf.reshape(g.groups, g.out_channels // g.groups, c_in_g, -1)
    return kf.permute(0, 3, 1, 2).reshape(-1, g.out_channels // g.groups, c_in_g)


def _gram_fits(g: ConvGeometry) -> bool:
    return math.prod(circulant_size(g)) * g.out_channels * g.in_channels // g.groups <= GRAM_MAX_ENTRIES


def _gram_bound(p: torch.Tensor, n_iter: int) -> torch.Tensor:
    """``max_f ||P_f||_2 <= max_f ||G_T||_F^(1/2^T)`` with ``G_{t+1} = G_t^H G_t`` rescaled at every step."""
    if p.shape[-2] < p.shape[-1]:
        p = p.mH  # iterate on the smaller Gram matrix
    log_scale = torch.zeros(p.shape[0], dtype=p.real.dtype, device=p.device)
    tiny = torch.finfo(log_scale.dtype).tiny
    for _ in range(n_iter):
        fro = torch.linalg.matrix_norm(p, "fro").clamp_min(tiny)
        log_scale = 2 * (log_scale + fro.log())
        p = p / fro[:, None, None]
        p = p.mH @ p
    fro = torch.linalg.matrix_norm(p, "fro").clamp_min(tiny)
    return ((fro.log() + log_scale) / 2**n_iter).exp().max()


def gram_iteration(layer, input_size, n_iter: int = 6) -> torch.Tensor:
    """Certified upper bound of ``||M||_2`` by Gram iteration (Delattre, Barthelemy, Araujo & Allauzen 2023).

    ``C`` (zero padding, any stride) is a submatrix of the strided circular convolution on
    :func:`circulant_size`, so ``||M||_2 <= max_f ||P_f||_2`` (:func:`frequency_matrices`); for each ``G_0 = P_f``,
    ``G_{t+1} = G_t^H G_t`` gives ``||P_f||_2 <= ||G_T||_F^(1/2^T)`` (rescaled by ``||G_t||_F`` at each step).
    """
    g = conv_geometry(layer, input_size)
    check_zero_padding(g, 2)
    size = circulant_size(g)
    if not _gram_fits(g):
        raise ValueError(f"Gram iteration would hold over {GRAM_MAX_ENTRIES} complex entries for circular size "
                         f"{size}; use method='power' for a layer this large")
    return _gram_bound(frequency_matrices(g, compute_kernel(layer)), n_iter).to(layer.weight.dtype)


def eq3_bound(layer, input_size) -> torch.Tensor:
    """Eq. (3): ``||M||_2 <= (o sum K^2)^(1/2)`` with ``o`` the number of ``C``'s output positions
    (``h_out w_out`` for a Conv2d); a Frobenius bound valid for every geometry."""
    g = conv_geometry(layer, input_size)
    return (math.prod(g.out_size) * compute_kernel(layer).pow(2).sum()).sqrt().to(layer.weight.dtype)


def _dense_gram(g: ConvGeometry, kd: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(g.n_in, dtype=kd.dtype, device=kd.device).reshape(g.n_in, g.in_channels, *g.in_size)
    return apply_adjoint(g, apply(g, eye, kd), kd).reshape(g.n_in, g.n_in)


def l2_interval(layer, input_size, rtol: float = 1e-3, max_iter: int = 2000, dense_max: int = DENSE_MAX_INPUTS,
                generator: torch.Generator | None = None) -> tuple[float, float]:
    """Certified interval ``(lower, upper)`` holding ``||M||_2``, refined until ``upper - lower <= rtol * upper``.

    ``lower``: power iteration (:func:`power_iteration` with tolerance ``rtol / 4``), ``||C v||`` for a unit
    ``v``, a lower bound whether or not it converged.  ``upper``: the smallest certified bound among
    ``||M||_F`` and ``sqrt(||M||_1 ||M||_inf)`` (exact, one convolution each), Gram iteration on the circulant
    embedding (6, then 12 steps), and, when ``C`` has at most ``dense_max`` input entries, the top eigenvalue of
    the dense ``C^T C`` in float64 plus a rounding margin ``n eps ||C^T C||_F`` (which also tightens
    ``lower``).  Computed in float64 (at least).  A RuntimeWarning says when the width is not reached.
    """
    g = conv_geometry(layer, input_size)
    check_zero_padding(g, 2)
    with torch.no_grad():
        kd = layer.weight.detach().to(torch.promote_types(layer.weight.dtype, torch.float64))
        v = torch.randn((1, g.in_channels, *g.in_size), dtype=kd.dtype, device=kd.device, generator=generator)
        v, _ = _power(g, kd, v, rtol / 4, max_iter, 4, generator)
        lower = float(apply(g, v.reshape(1, g.in_channels, *g.in_size), kd).norm())
        ones = torch.ones((1, g.in_channels, *g.in_size), dtype=kd.dtype, device=kd.device)
        linf = float(apply(g, ones, kd.abs()).max())
        l1 = float(apply_adjoint(g, torch.ones((1, g.out_channels, *g.out_size), dtype=kd.dtype,
                                                device=kd.device), kd.abs()).max())
        upper = min(math.sqrt(l1 * linf), math.sqrt(float(apply(g, ones, kd * kd).sum())))

        def done() -> bool:
            return upper - lower <= rtol * upper

        if not done() and _gram_fits(g):
            p = frequency_matrices(g, kd)
            for n_iter in (6, 12):
                upper = min(upper, float(_gram_bound(p, n_iter)))
                if done():
                    break
        if not done() and g.n_in <= dense_max:
            a = _dense_gram(g, kd)
            lam = float(torch.linalg.eigvalsh(a).max())
            margin = 4 * g.n_in * torch.finfo(kd.dtype).eps * float(torch.linalg.matrix_norm(a, "fro"))
            upper = min(upper, math.sqrt(lam + margin))
            lower = max(lower, math.sqrt(max(lam - margin, 0.0)))
    if not done():
        warnings.warn(f"l2_interval: could not certify ||M||_2 to relative width {rtol:g}: [{lower:.6g}, {upper:.6g}] "
                      f"(width {(upper - lower) / upper:.3g}); the circulant bound is loose for this layer and C has "
                      f"{g.n_in} > dense_max={dense_max} inputs", RuntimeWarning, stacklevel=2)
    return lower, upper
