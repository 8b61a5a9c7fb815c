"""nblib.attacks.pgd beyond what tests/test_attacks.py covers: the box option, the per-iterate callback and the one
margin's sign, against hand-computed values on linear models."""
import pytest
import torch
import torch.nn as nn

from nblib.experiments import toys
from nblib.attacks.pgd import margin_loss, pgd_linf, project_linf

pytestmark = pytest.mark.usefixtures("one_thread")


def _linear(W):
    lin = nn.Linear(W.shape[1], W.shape[0], bias=False, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(W)
    return lin


def test_margin_sign():
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    y = torch.tensor([0, 0])
    # max_{j != y} z_j - z_y: negative when correct (2 - 3), positive when wrong (5 - 0)
    assert margin_loss(z, y, reduction="none").tolist() == [-1.0, 5.0]
    assert margin_loss(z, y, reduction="sum").item() == 4.0


def test_projection_with_and_without_box():
    x = torch.tensor([0.95, 0.5, 0.02], dtype=torch.float64)
    far = x + torch.tensor([1.0, -0.05, -1.0], dtype=torch.float64)
    ball = torch.tensor([1.05, 0.45, -0.08], dtype=torch.float64)
    assert torch.allclose(project_linf(far, x, 0.1, None), ball)
    assert torch.allclose(project_linf(far, x, 0.1), ball.clamp(0, 1))
    assert torch.allclose(project_linf(far, x, 0.1, (-0.05, 1.0)), ball.clamp(-0.05, 1.0))


def test_unboxed_pgd_reaches_the_corner_of_the_ball():
    """Two classes, logits (0, w.x): CE of class 0 grows along +w, so PGD goes to the vertex x + eps sign(w);
    without a box it leaves [0, 1], with the image box it stops at 1."""
    w = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]], dtype=torch.float64)
    net = _linear(w)
    x = torch.tensor([[0.95, 0.03, 0.5]], dtype=torch.float64)
    y = torch.tensor([0])
    vertex = x + 0.1 * w[1].sign()
    free = pgd_linf(net, x, y, 0.1, 0.04, 5, random_start=False, clip=None)
    boxed = pgd_linf(net, x, y, 0.1, 0.04, 5, random_start=False)
    assert torch.allclose(free, vertex) and free.max() > 1 and free.min() < 0
    assert torch.allclose(boxed, vertex.clamp(0, 1))


def test_on_iterate_sees_every_iterate_with_its_logits():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = torch.rand(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    seen = []
    out = pgd_linf(net, x, y, 0.2, 0.05, 4, generator=torch.Generator().manual_seed(1), clip=None,
                   on_iterate=lambda xt, z: seen.append((xt, z)))
    assert len(seen) == 4
    for xt, z in seen:
        assert not z.requires_grad and torch.equal(z, net(xt).detach())
        assert (xt - x).abs().max() <= 0.2 + 1e-12
    # the result is one more sign step (CE) from the last iterate seen, projected on the ball
    last = seen[-1][0].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(net(last), y), last)
    assert torch.allclose(out, project_linf(last.detach() + 0.05 * g.sign(), x, 0.2, None))
    assert torch.equal(pgd_linf(net, x, y, 0.2, 0.05, 0, random_start=False, clip=None), x)


def test_toy_pgd_is_the_shared_pgd_with_restarts():
    """toys.pgd_robust_accuracy keeps the lowest-margin iterate: on a linear 2-class model its robust accuracy is the
    exact one, margin minus eps * ||w_1 - w_0||_1 > 0."""
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    net = _linear(W)
    X = torch.tensor([[0.5, 0.1], [0.5, 0.35], [0.2, 0.9], [0.9, 0.95]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    eps = 0.1
    exact = ((-margin_loss(net(X), y, reduction="none") - 2 * eps) > 0).double().mean().item()
    assert exact == 0.5
    acc, x_adv = toys.pgd_robust_accuracy(net, X, y, eps, steps=10, restarts=2)
    assert acc == pytest.approx(exact)
    assert (x_adv - X).abs().max() <= eps + 1e-12
