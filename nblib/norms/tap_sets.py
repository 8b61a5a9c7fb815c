"""Exact l1 and l_inf norms of any convolution in one pass over ``|K|``: Lemma 1 of the paper, per dimension.

For the convolution ``C`` of ``nblib.norms.conv_geometry`` the entries of a row (output ``(o, i)``) are the kernel
entries ``K[o, j, t]`` of the taps ``t`` that read inside the input, ``t in R(i) = prod_dim R_dim(i_dim)`` with
``R_dim(i) = {t : 0 <= i s - lo + t d < n}``; the entries of a column (input ``(j, x)``) are ``K[o, j, t]``
for ``o`` in ``j``'s group and ``t in T(x) = prod_dim T_dim(x_dim)``,
``T_dim(x) = {t : x = i s - lo + t d for some output 0 <= i < o}`` (Lemma 1's classes of taps with equal
residue modulo the stride, cut by the borders).  With ``|K| >= 0`` a larger set never gives a smaller sum, so

    ||C||_inf = max_o  max_{maximal R_1 x ... x R_N} sum_{j, t in R} |K[o, j, t]|
    ||C||_1   = max_j  max_{maximal T_1 x ... x T_N} sum_{o in group(j), t in T} |K[o, j, t]|

over the few inclusion-maximal sets of each dimension (cached per geometry).  Exact for every stride, zero
padding, dilation, group count and input size, and independent of the input size's cost: one pass over
``|K|`` and products with small 0/1 matrices.  Theorem 1's eq. (1)-(2) are the Conv2d case under
Assumption 1, where every ``R_dim`` and ``T_dim`` class is complete.
"""
from __future__ import annotations

import functools

import torch

from nblib.norms.conv_geometry import ConvGeometry


@functools.lru_cache(maxsize=8192)
def maximal_tap_sets(kind: str, n: int, lo: int, o: int, s: int, d: int, k: int) -> tuple:
    """Inclusion-maximal sets ``R_dim(i)`` (``kind="row"``, over outputs ``i``) or ``T_dim(x)``
    (``kind="col"``, over inputs ``x``) of one dimension, as sorted tuples of booleans over the ``k`` taps."""
    if kind == "row":
        sets = {tuple(0 <= i * s - lo + t * d < n for t in range(k)) for i in range(o)}
    elif kind == "col":
        sets = {tuple((x + lo - t * d) % s == 0 and 0 <= (x + lo - t * d) // s < o for t in range(k))
                for x in range(n)}
    else:
        raise ValueError(f"kind must be 'row' or 'col', got {kind!r}")

    def inside(a, b):
        return all(bb or not aa for aa, bb in zip(a, b))

    return tuple(sorted(a for a in sets if not any(b != a and inside(a, b) for b in sets)))


@functools.lru_cache(maxsize=8192)
def _indicator(sets: tuple, device, dtype) -> torch.Tensor | None:
    """0/1 matrix (sets x taps), or None when the only maximal set holds every tap (then: a plain sum)."""
    if len(sets) == 1 and all(sets[0]):
        return None
    return torch.tensor(sets, dtype=dtype, device=device)


def _per_tap_sums(g: ConvGeometry, kabs: torch.Tensor, kind: str) -> torch.Tensor:
    """Row sums over the input channels of o's group (``"row"``: ``(c_out, *taps)``) or column sums over the
    outputs of j's group (``"col"``: ``(c_in, *taps)``) of ``|K|``, per tap: the one pass over ``|K|``."""
    c_out, c_in_g = kabs.shape[:2]
    if kind == "row":
        return kabs.sum(1)
    if g.groups == 1:
        return kabs.sum(0)
    return kabs.reshape(g.groups, c_out // g.groups, c_in_g, -1).sum(1).reshape(g.groups * c_in_g, *kabs.shape[2:])


def _indicators(g: ConvGeometry, kind: str, device, dtype) -> list:
    return [_indicator(maximal_tap_sets(kind, n, lo, o, s, d, k), device, dtype)
            for n, (lo, _), o, s, d, k in zip(g.in_size, g.pads, g.out_size, g.stride, g.dilation, g.kernel_size)]


def _set_sums(a: torch.Tensor, indicators: list) -> torch.Tensor:
    """``b[c, m_1, ..., m_N]``: the sum of ``a[c]`` over the product of the ``m``-th maximal sets."""
    for axis, q in enumerate(indicators):
        dim = 1 + axis
        a = a.sum(dim, keepdim=True) if q is None else (a.movedim(dim, -1) @ q.T).movedim(-1, dim)
    return a


def tap_set_norm(g: ConvGeometry, kabs: torch.Tensor, kind: str) -> torch.Tensor:
    """``||C||_inf`` (``kind="row"``) or ``||C||_1`` (``kind="col"``) from ``kabs = |K|`` (see the module
    docstring); differentiable in ``kabs``, with the whole subgradient on one maximiser."""
    b = _set_sums(_per_tap_sums(g, kabs, kind), _indicators(g, kind, kabs.device, kabs.dtype))
    return b.reshape(-1).max(0).values


@torch.no_grad()
def tap_set_subgradient(g: ConvGeometry, kernel: torch.Tensor, kind: str) -> tuple[torch.Tensor, tuple, torch.Tensor]:
    """``(norm, (dim, index), block)``: :func:`tap_set_norm` and its subgradient w.r.t. the kernel, without
    autograd and without reading a value back to the host (no ``.item()`` / ``int()``: the maximiser's position
    stays a device tensor, so a CUDA step never waits for the GPU).

    The subgradient is 0 except ``subgradient.index_select(dim, index) = block``, with ``index`` a 1-element
    int64 tensor on the kernel's device: ``sign(K)`` on the taps of one maximising row (``"row"``, ``dim = 0``:
    output channel ``o*``, every input channel of its group) or column (``"col"``, ``dim = 1``: input channel
    ``j*``, every output of its group; the outputs of the other groups hold 0 in ``block``), restricted to the
    maximal tap sets that attain the norm.  The maximiser is the first one in ``argmax``'s order."""
    indicators = _indicators(g, kind, kernel.device, kernel.dtype)
    b = _set_sums(_per_tap_sums(g, kernel.abs(), kind), indicators)
    flat = b.reshape(-1)
    idx = flat.argmax().reshape(1)
    value = flat.gather(0, idx).reshape(())
    pos = []
    for size in reversed(b.shape):
        pos.append(idx % size)
        idx = idx.div(size, rounding_mode="floor")
    c, *sets = reversed(pos)
    mask = kernel.new_ones(())
    for q, m, k in zip(indicators, sets, g.kernel_size):
        mask = mask.unsqueeze(-1) * (kernel.new_ones(k) if q is None else q.index_select(0, m).reshape(k))
    if kind == "row":
        return value, (0, c), kernel.index_select(0, c).sign() * mask
    c_out_g, c_in_g = kernel.shape[0] // g.groups, kernel.shape[1]
    block = kernel.index_select(1, c % c_in_g).sign() * mask
    if g.groups > 1:  # the outputs of the maximising column's group only
        outputs = torch.arange(kernel.shape[0], device=kernel.device).div(c_out_g, rounding_mode="floor")
        block = block * (outputs == c.div(c_in_g, rounding_mode="floor")).to(block.dtype).reshape(
            -1, *[1] * (block.dim() - 1))
    return value, (1, c % c_in_g), block
