"""Tests of nblib.experiments.toys (Proposition 1, Theorem 2, Proposition 2), each against an independent oracle:
numpy norms / forward passes, brute-force pairwise distances, the closed-form plateau score and the
exact robust accuracy of a linear classifier."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from nblib.experiments import toys

SCALES = [1.0, 10.0, 1e3, 1e6]


pytestmark = pytest.mark.usefixtures("one_thread")


def np_weights(net):
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
            for m in net if isinstance(m, nn.Linear)]


def np_forward(net, x):
    h = np.asarray(x, dtype=np.float64)
    layers = np_weights(net)
    for i, (W, b) in enumerate(layers):
        h = h @ W.T + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def plateau_oracle(X, y, eps, delta, C, pts):
    """s_c(x) = max_{y_i = c} clip(1 - dist_inf(x, B(x_i, eps)) / delta, 0, 1), written directly."""
    X, y, pts = (np.asarray(a, dtype=np.float64) for a in (X, y, pts))
    excess = np.maximum(np.abs(pts[:, None, :] - X[None, :, :]) - eps, 0).max(2)  # (P, N)
    P = np.clip(1 - excess / delta, 0, 1)
    return np.stack([P[:, y == c].max(1) if (y == c).any() else np.zeros(len(pts)) for c in range(C)], 1)


def killed_by_a_nonpositive_layer(net: nn.Sequential) -> bool:
    """Proposition 1's certificate of constancy, read off the weights: some Linear layer sits between two ReLUs
    and has all weights and biases <= 0, so its input is >= 0, its pre-activation <= 0 for every x, and the
    ReLU after it outputs 0 (everything after it is constant)."""
    mods = list(net)
    return any(isinstance(m, nn.Linear) and isinstance(a, nn.ReLU) and isinstance(b, nn.ReLU)
               and bool((m.weight <= 0).all()) and (m.bias is None or bool((m.bias <= 0).all()))
               for a, m, b in zip(mods, mods[1:], mods[2:]))


def brute_min_interclass(X, y):
    X, y = np.asarray(X), np.asarray(y)
    best = np.inf
    for i, j in itertools.combinations(range(len(X)), 2):
        if y[i] != y[j]:
            best = min(best, np.max(np.abs(X[i] - X[j])))
    return best


# ---------------------------------------------------------------- Proposition 1
@pytest.mark.parametrize("depth", [3, 5])
def test_prop1_layer_norms_grow_linearly(depth):
    base = None
    for s in SCALES:
        net = toys.prop1_network(s, in_dim=3, width=6, depth=depth, seed=1)
        Ws = [W for W, _ in np_weights(net)]
        assert len(Ws) == depth
        norms = {p: np.array([np.linalg.norm(W, p) for W in Ws]) for p in (1, 2, np.inf)}
        for p, ours in [(1, 1), (2, 2), (np.inf, math.inf)]:
            np.testing.assert_allclose(toys.layer_operator_norms(net, ours), norms[p], rtol=1e-6)
            assert (norms[p] >= 0.5 * s).all()  # every layer is large
        np.testing.assert_allclose(toys.lipschitz_upper_bound_product(net), np.prod(norms[np.inf]), rtol=1e-6)
        if base is None:
            base = norms
        for p in norms:
            np.testing.assert_allclose(norms[p] / s, base[p], rtol=1e-5)


@pytest.mark.parametrize("depth", [3, 4, 6])
@pytest.mark.parametrize("scale", SCALES)
def test_prop1_output_exactly_constant(scale, depth):
    net = toys.prop1_network(scale, in_dim=2, width=8, depth=depth, out_dim=2, seed=3)
    assert killed_by_a_nonpositive_layer(net)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(1000, 2, generator=g) * 10.0 ** k for k in (0, 3, 6, 12)])
    x = torch.cat([x, torch.zeros(1, 2), torch.tensor([[1e15, -1e15], [-1e15, -1e15]])])
    out = net(x).detach()
    expected = net[-1].bias.detach().expand_as(out)
    assert torch.equal(out, expected)  # bit-exact constant = output bias
    np.testing.assert_array_equal(np_forward(net, x[:2000]), np.broadcast_to(np_weights(net)[-1][1], (2000, 2)))
    assert toys.output_spread(net, x) == 0.0
    assert toys.empirical_lipschitz(net, x[:100], n_pairs=500, radius=10.0) == 0.0
    assert toys.lipschitz_lower_bound(net, x[:20], n_random=64, bisect_steps=10) == 0.0
    assert toys.lipschitz_upper_bound_product(net) >= (0.5 * scale) ** depth


def test_prop1_certificate_not_vacuous():
    torch.manual_seed(0)
    generic = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    assert not killed_by_a_nonpositive_layer(generic)
    assert toys.output_spread(generic, torch.randn(500, 2)) > 0
    with pytest.raises(ValueError):
        toys.prop1_network(1.0, depth=2)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), in_dim=st.integers(1, 5), width=st.integers(1, 6),
       depth=st.integers(3, 6), log_scale=st.floats(-2, 6))
def test_prop1_hypothesis(seed, in_dim, width, depth, log_scale):
    net = toys.prop1_network(10.0 ** log_scale, in_dim, width, depth, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(300, in_dim, dtype=torch.float64, generator=g) * 10.0 ** torch.randint(0, 8, (300, 1), generator=g)
    assert killed_by_a_nonpositive_layer(net)
    assert (net(x) == net[-1].bias).all()


def test_empirical_lipschitz_linear_oracle():
    w = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    net = nn.Sequential(nn.Linear(2, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(w)
    x = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert toys.empirical_lipschitz(net, x, p=2) == pytest.approx(5.0)  # ||w||_2
    assert toys.empirical_lipschitz(net, x, p=math.inf) == pytest.approx(7.0)  # ||w||_1 (l_inf -> l_inf)
    # finite differences on random segments approach but cannot exceed ||w||_1 = 7
    assert 6.5 <= toys.lipschitz_lower_bound(net, x) <= 7.0 + 1e-9


@pytest.mark.parametrize("p", ["inf", 3, 0.5])
def test_p_is_parsed_by_the_norms_package(p):
    """toys reads p through nblib.norms.check_p, the package's one parser: 1, 2 or math.inf, nothing else."""
    net = toys.prop1_network(1.0)
    x = torch.zeros(3, 2)
    for call in (lambda: toys.layer_operator_norms(net, p), lambda: toys.empirical_lipschitz(net, x, p=p),
                 lambda: toys.min_interclass_distance(x, torch.tensor([0, 1, 1]), p=p)):
        with pytest.raises(ValueError, match="p must be one of 1, 2, math.inf"):
            call()


# ---------------------------------------------------------------- Assumption 2 data
@pytest.mark.parametrize("dim,n_classes", [(1, 2), (2, 3), (2, 5), (3, 4)])
def test_blobs_are_2eps_separable(dim, n_classes):
    eps, margin = 0.1, 0.02
    X, y = toys.separable_blobs(6, n_classes, eps, margin, seed=2, dim=dim)
    assert X.shape == (6 * n_classes, dim) and y.dtype == torch.long
    d = brute_min_interclass(X.numpy(), y.numpy())
    assert d > 2 * eps
    assert toys.min_interclass_distance(X, y) == pytest.approx(d)
    with pytest.raises(ValueError):
        toys.separable_blobs(6, n_classes, eps, margin=0.0)


# ---------------------------------------------------------------- Theorem 2 / Proposition 2
@pytest.fixture(scope="module")
def blobs():
    return toys.separable_blobs(5, 3, eps=0.1, margin=0.05, seed=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_robust_network_matches_closed_form(blobs, dtype):
    X, y = blobs
    eps, delta = 0.1, 0.01
    net = toys.robust_network(X, y, eps, delta, n_classes=3, dtype=dtype)
    assert all(isinstance(m, (nn.Linear, nn.ReLU)) for m in net)
    g = torch.Generator().manual_seed(1)
    near = X.repeat(40, 1) + (eps + 2 * delta) * (2 * torch.rand(40 * len(X), 2, generator=g, dtype=X.dtype) - 1)
    box = X.min(0).values - 1 + (X.max(0).values - X.min(0).values + 2) * torch.rand(2000, 2, generator=g,
                                                                                       dtype=X.dtype)
    pts = torch.cat([X, near, box])
    atol = 1e-9 if dtype == torch.float64 else 2e-3
    np.testing.assert_allclose(net(pts.to(dtype)).detach().double().numpy(),
                               plateau_oracle(X, y, eps, delta, 3, pts), atol=atol)


@pytest.mark.parametrize("xi", [10.0, 1e3])
def test_prop2_robust_and_large_lipschitz(blobs, xi):
    X, y = blobs
    eps = 0.1
    net, delta = toys.prop2_network(X, y, eps, xi)
    assert delta <= 0.5 / xi and 2 * (eps + delta) < brute_min_interclass(X.numpy(), y.numpy())
    assert toys.robust_accuracy_grid(net, X, y, eps, points_per_dim=21, margin=0.5) == 1.0
    for loss in ("margin", "ce"):
        acc, x_adv = toys.pgd_robust_accuracy(net, X, y, eps, steps=30, restarts=3, loss=loss)
        assert acc == 1.0
        assert (x_adv - X.float()).abs().max() <= eps + 1e-6
    lb = toys.lipschitz_lower_bound(net, X, radius=2 * eps)
    assert lb >= xi
    assert lb == pytest.approx(1 / delta, rel=1e-3)
    assert lb <= toys.lipschitz_upper_bound_product(net) * (1 + 1e-6)
    # independent witness: leave the class-0 point with largest first coordinate along +e_1
    x0 = X[y == 0][X[y == 0][:, 0].argmax()].double()
    a, b = x0 + torch.tensor([eps, 0.0]), x0 + torch.tensor([eps + delta, 0.0])
    fa, fb = plateau_oracle(X, y, eps, delta, 3, torch.stack([a, b]))
    assert np.abs(fa - fb).max() / delta >= xi


def test_grid_accuracy_not_vacuous():
    X = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    eps, delta = 0.2, 0.05
    net = toys.robust_network(X, y, eps, delta)
    assert toys.robust_accuracy_grid(net, X, y, eps) == 1.0
    # beyond eps + delta all logits are 0 -> tie -> not correct (strict margin)
    assert toys.robust_accuracy_grid(net, X, y, eps + 2 * delta) == 0.0
    xx, yy, pred = toys.decision_grid(net, (-0.5, 1.5), (-0.5, 1.5), n=81)
    assert pred.shape == (81, 81)
    for (px, py), c in zip(X.numpy(), y.numpy()):
        i, j = np.argmin(np.abs(yy[:, 0] - py)), np.argmin(np.abs(xx[0] - px))
        assert pred[i, j] == c
    assert pred[np.argmin(np.abs(yy[:, 0] - 1.5)), np.argmin(np.abs(xx[0] - 1.5))] == -1


def test_pgd_and_grid_match_linear_oracle():
    """For f(x) = [w.x + b, -(w.x + b)] the exact l_inf robust accuracy is mean(sign * (w.x + b) > eps ||w||_1)."""
    w, b0 = torch.tensor([2.0, -1.0], dtype=torch.float64), 0.3
    net = nn.Sequential(nn.Linear(2, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.stack([w, -w]))
        net[0].bias.copy_(torch.tensor([b0, -b0]))
    g = torch.Generator().manual_seed(0)
    X = 4 * torch.rand(400, 2, generator=g, dtype=torch.float64) - 2
    s = X @ w + b0
    y = (s < 0).long()
    eps = 0.25
    robust = (torch.where(y == 0, s, -s) - eps * w.abs().sum()).abs()
    keep = robust > 1e-3  # avoid points exactly on the robustness boundary
    X, y, s = X[keep], y[keep], s[keep]
    exact = (torch.where(y == 0, s, -s) > eps * w.abs().sum()).double().mean().item()
    assert 0.2 < exact < 0.9
    assert toys.pgd_robust_accuracy(net, X, y, eps, steps=20, restarts=2).accuracy == pytest.approx(exact)
    assert toys.robust_accuracy_grid(net, X, y, eps, points_per_dim=3) == pytest.approx(exact)


def test_infeasible_inputs_raise(blobs):
    X, y = blobs
    d = toys.min_interclass_distance(X, y)
    with pytest.raises(ValueError, match="2\\*\\(eps\\+delta\\)"):
        toys.robust_network(X, y, eps=0.1, delta=d / 2)
    Xbad = torch.tensor([[0.0, 0.0], [0.15, 0.0]], dtype=torch.float64)
    ybad = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="Assumption 2"):
        toys.prop2_network(Xbad, ybad, eps=0.1, xi=10.0)
    with pytest.raises(ValueError):
        toys.robust_network(Xbad, ybad, eps=0.1, delta=1e-3)
    with pytest.raises(ValueError):
        toys.prop2_network(X, y, eps=0.1, xi=0.0)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.01, 0.3), n_classes=st.integers(2, 4),
       dim=st.integers(1, 3), n_per_class=st.integers(1, 4), xi=st.sampled_from([10.0, 1e3, 1e5]))
def test_prop2_hypothesis(seed, eps, n_classes, dim, n_per_class, xi):
    X, y = toys.separable_blobs(n_per_class, n_classes, eps, margin=0.2 * eps, seed=seed, dim=dim)
    assert brute_min_interclass(X.numpy(), y.numpy()) > 2 * eps
    net, delta = toys.prop2_network(X, y, eps, xi, dtype=torch.float64)
    assert toys.robust_accuracy_grid(net, X, y, eps, points_per_dim=5, margin=0.5) == 1.0
    g = torch.Generator().manual_seed(seed)
    pts = X.repeat(20, 1) + 2 * eps * (2 * torch.rand(20 * len(X), dim, dtype=torch.float64, generator=g) - 1)
    np.testing.assert_allclose(net(pts).detach().numpy(), plateau_oracle(X, y, eps, delta, n_classes, pts),
                               atol=1e-6)
    assert toys.lipschitz_lower_bound(net, X, radius=2 * eps, n_random=16) >= xi
