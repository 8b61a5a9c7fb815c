"""Toy constructions behind Proposition 1, Theorem 2 and Proposition 2 of Liang & Huang (AAAI 2021).

Every network here is a plain ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` modules, so the
generic norm code of the package can be run on it unchanged.

* Proposition 1 -- ``prop1_network``: every layer has l1/l2/l_inf operator norm proportional to
  ``scale`` (arbitrarily large), yet the network is constant (Lipschitz constant 0).
* Theorem 2 / Proposition 2 -- ``robust_network`` / ``prop2_network``: on a 2-eps-separable data set
  (Assumption 2, l_inf metric) a ReLU network with robust accuracy 1 (Definition 2, vector outputs)
  whose global Lipschitz constant is >= 1/delta, i.e. as large as we like; checked by
  ``robust_accuracy_grid``, ``pgd_robust_accuracy`` and ``lipschitz_lower_bound``.

Norm pairing used for Lipschitz constants of the Proposition 2 tools: l_inf on inputs and outputs.
Nothing is computed at import time.
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from nblib.attacks import pgd
from nblib.attacks.pgd import margin_loss
from nblib.norms import check_p, linear_norm

INF = math.inf


def _dtype(net: nn.Module) -> torch.dtype:
    return next(net.parameters()).dtype


def _linear(W: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> nn.Linear:
    lin = nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(b)
    return lin


# ---- Proposition 1 -------------------------------------------------------------------------------
def prop1_network(scale: float, in_dim: int = 2, width: int = 8, depth: int = 3, out_dim: int = 1,
                  seed: int = 0, dtype: torch.dtype | None = None) -> nn.Sequential:
    """Proposition 1: arbitrarily large layer norms, Lipschitz constant 0.

    ``depth`` Linear layers (>= 3), ReLU between them, all weights ``scale * M_l`` with ``M_l`` fixed by
    ``seed`` (entries of magnitude in [0.5, 1.5]), so ||W_l||_p = scale * ||M_l||_p for p = 1, 2, inf:
      h_1 = ReLU(scale M_1 x) >= 0, hidden layers with positive weights keep h >= 0,
      the second-to-last ("killing") layer has weights -scale |M| <= 0 and bias -scale < 0, so its
      pre-activation is < 0 for every input and the ReLU after it outputs exactly 0,
      hence f(x) = scale M_L 0 + b_L = b_L for all x.
    """
    if depth < 3 or scale <= 0:
        raise ValueError(f"need depth >= 3 (ReLU layer, killing layer, output) and scale > 0, "
                         f"got depth={depth}, scale={scale}")
    gen = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.get_default_dtype()

    def mag(m, n, signed=False):
        M = 0.5 + torch.rand(m, n, generator=gen, dtype=torch.float64)
        return M * torch.where(torch.rand(m, n, generator=gen) < 0.5, -1.0, 1.0) if signed else M

    dims = [in_dim] + [width] * (depth - 1) + [out_dim]
    layers: list[nn.Module] = []
    for k in range(depth):
        m, n = dims[k + 1], dims[k]
        if k < depth - 2:  # signed first layer, positive hidden layers, zero bias: outputs >= 0
            W, b = scale * mag(m, n, signed=(k == 0)), torch.zeros(m)
        elif k == depth - 2:  # killing layer: non-positive weights, negative bias
            W, b = -scale * mag(m, n), -scale * torch.ones(m)
        else:  # output layer: signed weights of size scale, bias b_L = the constant output
            W, b = scale * mag(m, n, signed=True), torch.randn(m, generator=gen)
        layers.append(_linear(W, b, dtype))
        if k < depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def layer_operator_norms(net: nn.Module, p=2) -> list[float]:
    """Operator norms ||W||_p of the nn.Linear layers of ``net`` in module order (:func:`nblib.norms.linear_norm`:
    p = 1 max abs column sum, p = 2 largest singular value, p = inf max abs row sum)."""
    p = check_p(p)
    return [linear_norm(m, p).item() for m in net.modules() if isinstance(m, nn.Linear)]


def lipschitz_upper_bound_product(net: nn.Module, p=INF) -> float:
    """Global Lipschitz bound prod_l ||W_l||_p (ReLU is 1-Lipschitz in every l_p); l_inf by default."""
    return math.prod(layer_operator_norms(net, p))


def empirical_lipschitz(net: nn.Module, x: torch.Tensor, n_pairs: int = 1000, radius: float = 1.0,
                        seed: int = 0, p=2) -> float:
    """Empirical lower bound of the l_p -> l_p Lipschitz constant: the max over random pairs
    (x1 = x + U[-r, r], x2 = x1 + U[-r, r]) of ||f(x1) - f(x2)||_p / ||x1 - x2||_p, and the max over the
    x1 of ||grad f_c(x1)||_q (q dual to p), which is <= ||J||_{p->p}."""
    p = check_p(p)
    q = {1: INF, 2: 2, INF: 1}[p]
    gen = torch.Generator().manual_seed(seed)
    x = x.to(_dtype(net))
    idx = torch.randint(len(x), (n_pairs,), generator=gen)
    x1 = x[idx] + radius * (2 * torch.rand(n_pairs, x.shape[1], generator=gen, dtype=x.dtype) - 1)
    x2 = x1 + radius * (2 * torch.rand(n_pairs, x.shape[1], generator=gen, dtype=x.dtype) - 1)
    x1.requires_grad_(True)
    f1 = net(x1)
    with torch.no_grad():
        ratio = torch.linalg.vector_norm(f1 - net(x2), p, dim=1) / torch.linalg.vector_norm(x1 - x2, p, dim=1)
    best = ratio.max().item()
    for c in range(f1.shape[1]):
        (g,) = torch.autograd.grad(f1[:, c].sum(), x1, retain_graph=True)
        best = max(best, torch.linalg.vector_norm(g, q, dim=1).max().item())
    return best


def output_spread(net: nn.Module, x: torch.Tensor) -> float:
    """max over output coordinates of (max - min) of f over the inputs ``x`` (0 iff f is constant on x)."""
    with torch.no_grad():
        out = net(x.to(_dtype(net)))
    return (out.max(0).values - out.min(0).values).max().item()


# ---- Assumption 2 data ---------------------------------------------------------------------------
def min_interclass_distance(X: torch.Tensor, y: torch.Tensor, p=INF) -> float:
    """inf { ||x_i - x_j||_p : y_i != y_j } (brute force); inf when there is a single class."""
    p, X = check_p(p), X.double()
    best = INF
    for c in torch.unique(y):
        a, b = X[y == c], X[y != c]
        if len(b):
            best = min(best, torch.cdist(a, b, p=p).min().item())
    return best


def separable_blobs(n_per_class: int = 5, n_classes: int = 3, eps: float = 0.1, margin: float = 0.05,
                    seed: int = 0, dim: int = 2, spread: float | None = None):
    """A 2-eps-separable data set (Assumption 2, l_inf): class c is uniform in the l_inf box of half-width
    ``spread`` (default 3 eps) around a centre on a square grid (first two coordinates, others 0) of
    spacing S = 2 spread + 2 eps + margin, so interclass l_inf distances are >= 2 eps + margin > 2 eps.
    Verified by brute force; returns (X float64 (N, dim), y long (N,))."""
    if margin <= 0 or eps < 0:
        raise ValueError(f"need margin > 0 and eps >= 0, got margin={margin}, eps={eps}")
    spread = 3 * eps if spread is None else spread
    gen = torch.Generator().manual_seed(seed)
    S = 2 * spread + 2 * eps + margin
    cols = max(1, math.ceil(math.sqrt(n_classes))) if dim >= 2 else n_classes
    X, y = [], []
    for c in range(n_classes):
        centre = torch.zeros(dim, dtype=torch.float64)
        centre[0] = S * (c % cols)
        if dim >= 2:
            centre[1] = S * (c // cols)
        X.append(centre + spread * (2 * torch.rand(n_per_class, dim, generator=gen, dtype=torch.float64) - 1))
        y.append(torch.full((n_per_class,), c, dtype=torch.long))
    X, y = torch.cat(X), torch.cat(y)
    d = min_interclass_distance(X, y)
    if not d > 2 * eps:
        raise ValueError(f"data set is not 2-eps separable: min interclass distance {d} <= 2*eps = {2 * eps}")
    return X, y


# ---- Theorem 2 / Proposition 2: plateau network --------------------------------------------------
class _Builder:
    """Stacks h <- ReLU(B v + b) stages; the pending affine map v = A h + a is fused into the next Linear."""

    def __init__(self, dim: int):
        self.layers: list[nn.Module] = []
        self.A, self.a = torch.eye(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)

    def relu_stage(self, B, b):  # stored as float64 (W, bias); made into nn.Linear by finish()
        self.layers += [(B @ self.A, B @ self.a + b), nn.ReLU()]
        self.A, self.a = torch.eye(len(B), dtype=torch.float64), torch.zeros(len(B), dtype=torch.float64)

    def linear(self, S):
        self.A, self.a = S @ self.A, S @ self.a

    def max_tree(self, groups: list[list[int]]) -> list[list[int]]:
        """Reduce each group of (non-negative) pending values to its max, pairwise:
        max(a, b) = ReLU(a - b) + ReLU(b) for b >= 0; a lone value passes as ReLU(a) = a."""
        while any(len(g) > 1 for g in groups):
            pairs, new_groups = [], []
            for g in groups:
                new_groups.append(list(range(len(pairs), len(pairs) + (len(g) + 1) // 2)))
                pairs += [g[j:j + 2] for j in range(0, len(g), 2)]
            B = torch.zeros(sum(map(len, pairs)), len(self.a), dtype=torch.float64)
            S = torch.zeros(len(pairs), len(B), dtype=torch.float64)
            r = 0
            for q, pair in enumerate(pairs):  # units ReLU(a - b), ReLU(b)   or   ReLU(a)
                B[r, pair[0]] = 1.0
                if len(pair) == 2:
                    B[r, pair[1]], B[r + 1, pair[1]] = -1.0, 1.0
                S[q, r:r + len(pair)] = 1.0
                r += len(pair)
            self.relu_stage(B, torch.zeros(len(B), dtype=torch.float64))
            self.linear(S)
            groups = new_groups
        return groups

    def finish(self, dtype) -> nn.Sequential:
        mods = [m if isinstance(m, nn.Module) else _linear(*m, dtype) for m in self.layers]
        return nn.Sequential(*mods, _linear(self.A, self.a, dtype))


def robust_network(X: torch.Tensor, y: torch.Tensor, eps: float, delta: float, n_classes: int | None = None,
                   dtype: torch.dtype | None = None) -> nn.Sequential:
    """Theorem 2 (l_inf, vector outputs): logits s_c(x) = max_{i: y_i = c} P_i(x) with the plateau
        P_i(x) = ReLU(1 - max_k ReLU(|x_k - x_ik| - eps) / delta),
    i.e. 1 on B(x_i, eps), linear in the l_inf distance to that ball, 0 beyond distance eps + delta
    (|u| - eps excess = ReLU(u - eps) + ReLU(-u - eps); max via ReLU trees). If 2 (eps + delta) < min
    interclass distance, every x~ in B(x_i, eps) gets s_{y_i} = 1 and s_c = 0 (c != y_i): robust accuracy 1.
    Along an axis leaving the extreme point of a class the score drops 1 -> 0 over length delta, so the
    global l_inf Lipschitz constant is >= 1/delta."""
    X64, y = X.detach().double(), y.long()
    N, n = X64.shape
    C = int(y.max()) + 1 if n_classes is None else n_classes
    if delta <= 0 or eps < 0:
        raise ValueError(f"need delta > 0 and eps >= 0, got delta={delta}, eps={eps}")
    dmin = min_interclass_distance(X64, y)
    if not 2 * (eps + delta) < dmin:
        raise ValueError(f"2*(eps+delta) = {2 * (eps + delta)} must be < min interclass l_inf distance {dmin} "
                         f"(eps={eps}, delta={delta})")
    bld = _Builder(n)
    B = torch.zeros(2 * N * n, n, dtype=torch.float64)
    k = torch.arange(N * n) % n
    B[2 * torch.arange(N * n), k], B[2 * torch.arange(N * n) + 1, k] = 1.0, -1.0
    c = X64.reshape(-1)
    b = torch.stack([-(c + eps), c - eps], 1).reshape(-1)
    bld.relu_stage(B, b)  # ReLU(x_k - c_k - eps), ReLU(c_k - eps - x_k)
    bld.linear(torch.kron(torch.eye(N * n, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)))
    groups = bld.max_tree([list(range(i * n, (i + 1) * n)) for i in range(N)])
    sel = torch.eye(len(bld.a), dtype=torch.float64)[[g[0] for g in groups]]
    bld.relu_stage(-sel / delta, torch.ones(N, dtype=torch.float64))  # P_i
    groups = bld.max_tree([torch.nonzero(y == cl).flatten().tolist() for cl in range(C)])
    S = torch.zeros(C, len(bld.a), dtype=torch.float64)
    for cl, g in enumerate(groups):
        if g:
            S[cl, g[0]] = 1.0
    bld.linear(S)
    return bld.finish(dtype or torch.get_default_dtype())


def prop2_network(X: torch.Tensor, y: torch.Tensor, eps: float, xi: float, n_classes: int | None = None,
                  dtype: torch.dtype | None = None):
    """Proposition 2: robust accuracy 1 and l_inf Lipschitz constant >= 1/delta >= 2 xi, with
    delta = min(1 / (2 xi), (d_min / 2 - eps) / 2). Returns (net, delta); ValueError if Assumption 2 fails."""
    if xi <= 0:
        raise ValueError(f"xi must be > 0, got {xi}")
    dmin = min_interclass_distance(X, y)
    slack = dmin / 2 - eps
    if not slack > 0:
        raise ValueError(f"Assumption 2 violated: min interclass distance {dmin} <= 2*eps = {2 * eps}")
    delta = min(0.5 / xi, 0.5 * slack)
    return robust_network(X, y, eps, delta, n_classes, dtype), delta


# ---- Evaluation: robust accuracy, attacks, Lipschitz bounds, decision regions --------------------
def robust_accuracy_grid(net: nn.Module, X: torch.Tensor, y: torch.Tensor, eps: float,
                         points_per_dim: int = 11, margin: float = 0.0) -> float:
    """Fraction of points x_i whose whole regular grid on B(x_i, eps) (points_per_dim^n points, corners
    and boundary included) has logit margin z_y - max_{j != y} z_j > ``margin`` (Definition 2 on a grid;
    exact for networks that are affine on the box, a certificate-free check otherwise; cost grows as
    points_per_dim^n, so meant for n <= 3)."""
    dt, n = _dtype(net), X.shape[1]
    ticks = torch.linspace(-eps, eps, points_per_dim, dtype=torch.float64)
    offs = torch.cartesian_prod(*[ticks] * n).reshape(-1, n)
    ok = []
    with torch.no_grad():
        for x, c in zip(X.double(), y.long()):
            z = net((x + offs).to(dt))
            ok.append(bool((-margin_loss(z, c.expand(len(z)), reduction="none") > margin).all()))
    return sum(ok) / len(ok)


class RobustAccuracy(NamedTuple):
    """What :func:`pgd_robust_accuracy` returns."""

    accuracy: float       # mean(margin(x_adv) > 0): the fraction of points PGD did not flip
    x_adv: torch.Tensor   # per point, the iterate of lowest margin found (in the eps-ball around x)


def pgd_robust_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 50,
                        step_size: float | None = None, restarts: int = 5, seed: int = 0,
                        loss: str = "margin") -> RobustAccuracy:
    """Robust accuracy under l_inf PGD with restarts (:func:`nblib.attacks.pgd.pgd_linf` without the [0, 1]
    box: toy inputs are not images), ascending the margin loss ``max_{j != y} z_j - z_y``
    (:func:`nblib.attacks.pgd.margin_loss`) or CE.
    Restart 0 starts at x, the others uniformly in the ball. Keeps, per point, the iterate of lowest margin
    z_y - max_{j != y} z_j over all steps and restarts. Returns ``RobustAccuracy(accuracy, x_adv)``."""
    if loss not in ("margin", "ce"):
        raise ValueError(f"loss must be 'margin' or 'ce', got {loss!r}")
    dt = _dtype(net)
    gen = torch.Generator().manual_seed(seed)
    x, y = x.detach().to(dt), y.long()
    step_size = 2.5 * eps / max(steps, 1) if step_size is None else step_size
    objective = ((lambda z, t: margin_loss(z, t, reduction="sum")) if loss == "margin"
                 else (lambda z, t: F.cross_entropy(z, t, reduction="sum")))
    with torch.no_grad():
        best = {"x": x.clone(), "m": -margin_loss(net(x), y, reduction="none")}

    def keep_lowest(xa: torch.Tensor, z: torch.Tensor) -> None:
        m = -margin_loss(z, y, reduction="none")
        better = m < best["m"]
        best["m"] = torch.where(better, m, best["m"])
        best["x"][better] = xa[better]

    for r in range(restarts):
        xa = pgd.pgd_linf(net, x, y, eps, step_size, steps, random_start=r > 0, loss=objective,
                          generator=gen, clip=None, on_iterate=keep_lowest)
        with torch.no_grad():
            keep_lowest(xa, net(xa))
    return RobustAccuracy((best["m"] > 0).double().mean().item(), best["x"])


def lipschitz_lower_bound(net: nn.Module, X: torch.Tensor, radius: float | None = None, n_random: int = 256,
                          bisect_steps: int = 40, seed: int = 0) -> float:
    """Rigorous empirical lower bound of the global l_inf -> l_inf Lipschitz constant: the largest ratio
    ||f(a) - f(b)||_inf / ||a - b||_inf found on segments [x_i, x_i +- radius e_k] (every data point and
    axis) and on ``n_random`` random segments in the data's bounding box (enlarged by radius). Each
    segment is bisected ``bisect_steps`` times, keeping the half with the larger ratio (the triangle
    inequality makes it >= the parent's), so the ratio climbs to the slope of a linear piece, e.g. 1/delta
    across a plateau ramp. The network is evaluated in float64 and halves shorter than 1e-8 (1 + |x|_inf)
    are ignored (rounding guard; slopes steeper than ~1e8 are out of reach); ``radius`` defaults to half
    the data extent."""
    net = copy.deepcopy(net).double()
    X = X.detach().double()
    n = X.shape[1]
    lo, hi = X.min(0).values, X.max(0).values
    if radius is None:
        radius = 0.5 * (hi - lo).max().item() or 1.0
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.cat([torch.eye(n, dtype=torch.float64), -torch.eye(n, dtype=torch.float64)])
    a = X.repeat_interleave(2 * n, 0)
    b = a + radius * dirs.repeat(len(X), 1)

    def box():
        return lo - radius + (hi - lo + 2 * radius) * torch.rand(n_random, n, generator=gen, dtype=torch.float64)

    def ratio(fa, fb, u, v):
        return (fa - fb).abs().max(1).values / (u - v).abs().max(1).values

    a, b = torch.cat([a, box()]), torch.cat([b, box()])
    best = 0.0
    with torch.no_grad():
        fa, fb = net(a), net(b)
        best = max(best, ratio(fa, fb, a, b).max().item())
        for _ in range(bisect_steps):
            mid = (a + b) / 2
            fm = net(mid)
            left, right = ratio(fa, fm, a, mid), ratio(fm, fb, mid, b)
            # rounding guard: ignore halves shorter than 1e-8 (1 + |x|_inf)
            ok = (b - a).abs().max(1).values / 2 > 1e-8 * (1 + a.abs().max(1).values)
            if not ok.any():
                break
            best = max(best, left[ok].max().item(), right[ok].max().item())
            go_left = (left >= right)[:, None]
            b, fb = torch.where(go_left, mid, b), torch.where(go_left, fm, fb)
            a, fa = torch.where(go_left, a, mid), torch.where(go_left, fa, fm)
    return best


def decision_grid(net: nn.Module, xlim, ylim, n: int = 200, tie_tol: float = 0.0):
    """Predictions of a 2-D-input network on an n x n grid: returns numpy (xx, yy, pred), pred = argmax
    of the logits, or -1 where the top two logits are within ``tie_tol`` (e.g. far from all plateaus)."""
    xs = torch.linspace(xlim[0], xlim[1], n, dtype=torch.float64)
    ys = torch.linspace(ylim[0], ylim[1], n, dtype=torch.float64)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    with torch.no_grad():
        z = net(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).to(_dtype(net)))
    pred = z.argmax(1)
    if z.shape[1] > 1:
        top = z.topk(2, dim=1).values
        pred[top[:, 0] - top[:, 1] <= tie_tol] = -1
    return xx.numpy(), yy.numpy(), pred.reshape(n, n).numpy()
