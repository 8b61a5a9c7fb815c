"""Tests for the attacks (nblib.attacks: inference, pgd, autoattack, lipschitz) on tiny models
(CPU, a few seconds each)."""

import itertools
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nblib.attacks import autoattack as attacks  # its private helpers are tested below
from nblib.attacks.autoattack import autoattack_accuracy
from nblib.attacks.inference import eval_mode, model_device, predict
from nblib.attacks.lipschitz import local_lipschitz
from nblib.attacks.pgd import margin_loss, pgd_linf

EPS = 8 / 255


pytestmark = pytest.mark.usefixtures("one_thread")


def _digits8():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None].expand(-1, 3, -1, -1)
    return x.contiguous(), torch.tensor(d.target)


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def trained():
    """A 2-layer MLP on 3x8x8 digits (~90 % test accuracy) + 16 test points."""
    x, y = _digits8()
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x[:1400]), y[:1400]).backward()
        opt.step()
    model.eval()
    return model, x[1400:1416].clone(), y[1400:1416].clone()


# --------------------------------------------------------------------------
# clean accuracy
# --------------------------------------------------------------------------
def clean_accuracy(model, x, y, batch_size=256) -> float:
    """Fraction of ``x`` that ``predict`` labels ``y`` in ``eval_mode`` (what the attacks count)."""
    with eval_mode(model):
        return (predict(model, x, batch_size, model_device(model))[0] == y).float().mean().item()


def test_eval_mode_predicts_and_restores_every_flag(trained):
    model, x, y = trained
    net = nn.Sequential(*model, nn.Dropout(p=0.99))  # train mode would scramble
    net.train()
    expected = (model(x).argmax(1) == y).float().mean().item()
    assert clean_accuracy(net, x, y, batch_size=5) == pytest.approx(expected)
    assert net.training and all(m.training for m in net.modules())
    # a submodule's own flag is restored as it was
    net[0].eval()
    clean_accuracy(net, x, y)
    assert net.training and not net[0].training


# --------------------------------------------------------------------------
# PGD
# --------------------------------------------------------------------------
def _check_valid(x_adv, x, eps):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


def test_pgd_in_ball_and_increases_loss(trained):
    model, x, y = trained
    x_adv = pgd_linf(model, x, y, eps=EPS, step_size=2 / 255, steps=10,
                     generator=torch.Generator().manual_seed(0))
    _check_valid(x_adv, x, EPS)
    assert (x == 0).any() and (x == 1).any()  # the box constraint is active
    with torch.no_grad():
        ce_clean = F.cross_entropy(model(x), y, reduction="none")
        ce_adv = F.cross_entropy(model(x_adv), y, reduction="none")
    assert ce_adv.mean() > ce_clean.mean() + 0.1
    assert (ce_adv >= ce_clean - 1e-6).float().mean() >= 0.9
    assert clean_accuracy(model, x_adv, y) <= clean_accuracy(model, x, y)


def test_pgd_reproducible_and_deterministic_start(trained):
    model, x, y = trained
    kw = dict(eps=EPS, step_size=2 / 255, steps=3)
    a = pgd_linf(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    b = pgd_linf(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b)
    c = pgd_linf(model, x, y, random_start=False, **kw)
    d = pgd_linf(model, x, y, random_start=False, **kw)
    assert torch.equal(c, d)
    # zero steps without random start is the identity; eps=0 too
    assert torch.equal(pgd_linf(model, x, y, EPS, 1.0, 0, random_start=False), x)
    assert torch.equal(pgd_linf(model, x, y, 0.0, 1.0, 5), x)


def test_pgd_restores_mode_and_leaves_bn_stats_and_grads():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    net.train()
    x = torch.rand(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    before = net[1].running_mean.clone()
    x_adv = pgd_linf(net, x, y, eps=EPS, step_size=EPS / 4, steps=3)
    _check_valid(x_adv, x, EPS)
    assert net.training and net[1].training
    assert torch.equal(net[1].running_mean, before)  # attacked in eval mode
    assert all(p.grad is None for p in net.parameters())


def test_pgd_callable_losses(trained):
    model, x, y = trained
    with torch.no_grad():
        p_clean = F.softmax(model(x), 1)

    def trades_kl(logits, _y):
        return F.kl_div(F.log_softmax(logits, 1), p_clean, reduction="sum")

    x_adv = pgd_linf(model, x, y, EPS, EPS / 4, 5, random_start="normal",
                     loss=trades_kl, generator=torch.Generator().manual_seed(0))
    _check_valid(x_adv, x, EPS)
    with torch.no_grad():
        kl = trades_kl(model(x_adv), y).item()
    assert kl > 1e-3
    # margin loss works as a callable too
    x_m = pgd_linf(model, x, y, EPS, EPS / 4, 5, loss=margin_loss)
    with torch.no_grad():
        assert margin_loss(model(x_m), y) > margin_loss(model(x), y)
    with pytest.raises(ValueError):
        pgd_linf(model, x, y, EPS, EPS / 4, 1, loss="dlr")
    with pytest.raises(ValueError):
        pgd_linf(model, x, y, EPS, EPS / 4, 1, random_start="gauss")


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(0.0, 0.5), step=st.floats(0.0, 0.6), steps=st.integers(0, 4),
       seed=st.integers(0, 2**16), rs=st.sampled_from([True, False, "normal"]))
def test_pgd_projection_property(eps, step, steps, seed, rs):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x = torch.rand(6, 3, 2, 2, generator=g)
    x[0] = 0.0
    x[1] = 1.0
    y = torch.randint(0, 5, (6,), generator=g)
    x_adv = pgd_linf(net, x, y, eps, step, steps, random_start=rs, generator=g)
    _check_valid(x_adv, x, eps)


# --------------------------------------------------------------------------
# margin loss
# --------------------------------------------------------------------------
def test_margin_loss_values():
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(margin_loss(z, y, "none"), torch.tensor([-1.0, 5.0]))
    assert margin_loss(z, y).item() == pytest.approx(2.0)
    assert margin_loss(z, y, "sum").item() == pytest.approx(4.0)


# --------------------------------------------------------------------------
# AutoAttack
# --------------------------------------------------------------------------
@pytest.mark.parametrize("version,expected", [
    ("authors", ["apgd-ce", "apgd-t"]),
    ("standard", ["apgd-ce", "apgd-t", "fab-t", "square"]),
])
def test_autoattack_runs(trained, version, expected):
    model, x, y = trained
    model.train()  # must be evaluated in eval mode and restored
    rng = torch.get_rng_state()
    res = autoattack_accuracy(model, x, y, EPS, version=version, seed=0)
    assert model.training
    model.eval()
    assert torch.equal(torch.get_rng_state(), rng)  # caller's RNG untouched
    assert res["attacks"] == expected and res["version"] == version
    assert res["n_eval"] == 16 and res["eps"] == pytest.approx(EPS)
    assert 0.0 <= res["robust_acc"] <= res["clean_acc"] <= 1.0
    assert res["clean_acc"] == pytest.approx(clean_accuracy(model, x, y))
    assert res["robust_acc"] == pytest.approx(res["robust_acc_autoattack"])
    assert res["max_perturbation"] <= EPS + 1e-6
    assert res["n_target_classes"] == 9 and res["seconds"] > 0
    assert len(res["robust_mask"]) == 16
    assert sum(res["robust_mask"]) / 16 == pytest.approx(res["robust_acc"])
    json.dumps(res)  # JSON-serialisable
    # PGD-10 is not stronger than AutoAttack here
    x_pgd = pgd_linf(model, x, y, EPS, EPS / 4, 10,
                     generator=torch.Generator().manual_seed(0))
    assert res["robust_acc"] <= clean_accuracy(model, x_pgd, y) + 1e-9


def test_autoattack_authors_settings(trained):
    model = trained[0]
    adv, n_t = attacks.make_adversary(model, EPS, "Linf", "authors", 0, "cpu", 10)
    assert adv.attacks_to_run == ["apgd-ce", "apgd-t"]
    assert adv.apgd.n_restarts == 1 and adv.apgd.n_iter == 100
    assert adv.apgd_targeted.n_restarts == 1 and n_t == 9
    _, n_t5 = attacks.make_adversary(model, EPS, "Linf", "standard", 0, "cpu", 5)
    assert n_t5 == 4


def test_autoattack_state_resume(trained, tmp_path):
    model, x, y = trained
    path = tmp_path / "aa_state.json"
    first = autoattack_accuracy(model, x, y, EPS, version="authors", state_path=str(path))
    assert path.exists() and not first["resumed"]
    # finished state: nothing is re-run, same answer
    again = autoattack_accuracy(model, x, y, EPS, version="authors", state_path=path)
    assert again["resumed"] and again["robust_acc"] == pytest.approx(first["robust_acc"])
    # half-finished state (only APGD-CE done, nothing broken): APGD-T runs
    state = json.loads(path.read_text())
    clean_ok = (model(x).argmax(1) == y).tolist()
    state["_run_attacks"], state["_robust_flags"] = ["apgd-ce"], clean_ok
    path.write_text(json.dumps(state))
    part = autoattack_accuracy(model, x, y, EPS, version="authors", state_path=path)
    assert part["resumed"] and part["robust_acc"] <= part["clean_acc"]
    assert part["n_broken_before_resume"] == 0
    # a state for other attacks is refused
    with pytest.raises(ValueError, match="attacks"):
        autoattack_accuracy(model, x, y, EPS, version="standard", state_path=path)


def test_autoattack_rejects_invalid_adversarial_examples(trained, monkeypatch):
    from pyautoattack import AutoAttack

    model, x, y = trained

    def bad(self, x_orig, y_orig, **kw):
        return (x_orig + 2 * EPS).clamp(0, 1), y_orig.clone()

    monkeypatch.setattr(AutoAttack, "run_standard_evaluation", bad)
    with pytest.raises(RuntimeError, match="ball"):
        autoattack_accuracy(model, x, y, EPS, version="authors")

    def out_of_box(self, x_orig, y_orig, **kw):
        return x_orig - 1e-3, y_orig.clone()

    monkeypatch.setattr(AutoAttack, "run_standard_evaluation", out_of_box)
    with pytest.raises(RuntimeError, match=r"\[0, 1\]"):
        autoattack_accuracy(model, x, y, EPS, version="authors")


def test_autoattack_bad_arguments(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="version"):
        autoattack_accuracy(model, x, y, EPS, version="plus")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        autoattack_accuracy(model, x * 2 - 0.5, y, EPS)


# --------------------------------------------------------------------------
# local Lipschitz
# --------------------------------------------------------------------------
def _linear(W):
    net = nn.Sequential(nn.Flatten(), nn.Linear(W.shape[1], W.shape[0], bias=False))
    net = net.to(W.dtype)
    with torch.no_grad():
        net[1].weight.copy_(W)
    return net


def _inf_to_one(W):
    """||W||_{inf->1} = max over sign vectors s of ||W s||_1 (brute force)."""
    s = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=W.shape[1])), dtype=W.dtype)
    return (s @ W.T).abs().sum(1).max().item()


def test_local_lipschitz_linear_rank_one_exact():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 1, generator=g, dtype=torch.float64) @ \
        torch.randn(1, 8, generator=g, dtype=torch.float64)
    x = torch.full((5, 1, 2, 4), 0.5, dtype=torch.float64)
    res = local_lipschitz(_linear(W), x, eps=0.1, steps=10,
                          generator=torch.Generator().manual_seed(0))
    true = _inf_to_one(W)
    assert true == pytest.approx(W[:, 0].abs().sum().item() / abs(W[0, 0].item())
                                 * W[0].abs().sum().item())
    assert torch.allclose(res["lip"], torch.full((5,), true, dtype=torch.float64), rtol=1e-9)
    assert res["lip_max"] == pytest.approx(true) and res["lip_mean"] == pytest.approx(true)
    assert res["input_norm"] == "inf" and res["output_norm"] == 1


def test_local_lipschitz_linear_general_exact_with_restarts():
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(3, 6, generator=g, dtype=torch.float64)
        x = torch.full((4, 1, 2, 3), 0.5, dtype=torch.float64)
        true = _inf_to_one(W)
        res = local_lipschitz(_linear(W), x, eps=0.1, steps=10, n_restarts=8,
                              generator=torch.Generator().manual_seed(0))
        assert torch.allclose(res["lip"], torch.full((4,), true, dtype=torch.float64),
                              rtol=1e-9)
        # one restart, and Yang et al.'s full-ratio gradient: lower bounds
        for kw in ({}, {"full_ratio_grad": True}):
            low = local_lipschitz(_linear(W), x, eps=0.1, steps=10,
                                  generator=torch.Generator().manual_seed(1), **kw)
            assert (low["lip"] <= true * (1 + 1e-9)).all()
            assert (low["lip"] > 0.3 * true).all()


def test_local_lipschitz_gradient_of_margin_exact():
    # two classes: the margin gradient is w_y - w_j everywhere
    g = torch.Generator().manual_seed(3)
    W = torch.randn(2, 6, generator=g, dtype=torch.float64)
    x = torch.rand(7, 6, generator=g, dtype=torch.float64)
    res = local_lipschitz(_linear(W), x, eps=0.05, steps=3)
    expected = (W[0] - W[1]).abs().sum().item()
    assert torch.allclose(res["grad_margin"], torch.full((7,), expected, dtype=torch.float64))
    assert res["grad_margin_max"] == pytest.approx(expected)
    # three classes whose order cannot change in the ball: y = 0, runner-up 1
    W3 = torch.stack([torch.full((6,), 2.0), torch.full((6,), 1.0),
                      torch.tensor([-3.0, -1, -2, -1, 0, -1])]).double()
    W3[1, 0] = 0.5
    x3 = torch.full((3, 6), 0.5, dtype=torch.float64)
    y3 = torch.zeros(3, dtype=torch.long)
    res3 = local_lipschitz(_linear(W3), x3, eps=0.01, steps=4, y=y3)
    expected3 = (W3[0] - W3[1]).abs().sum().item()
    assert torch.allclose(res3["grad_margin"], torch.full((3,), expected3, dtype=torch.float64))


def test_local_lipschitz_on_network(trained):
    model, x, y = trained
    model.train()
    res = local_lipschitz(model, x, eps=EPS, steps=5, batch_size=7,
                          generator=torch.Generator().manual_seed(0))
    assert model.training
    model.eval()
    assert res["lip"].shape == (16,) and res["grad_margin"].shape == (16,)
    assert (res["lip"] > 0).all() and (res["grad_margin"] > 0).all()
    assert res["lip_max"] == pytest.approx(res["lip"].max().item())
    assert res["grad_margin_mean"] == pytest.approx(res["grad_margin"].mean().item())
    with pytest.raises(ValueError):
        local_lipschitz(model, x, eps=0.0)


def test_autoattack_warnings_are_captured_not_printed(trained, capsys):
    model, x, y = trained
    probs = nn.Sequential(model, nn.Softmax(dim=1))  # a classic mistake
    res = autoattack_accuracy(probs, x[:4], y[:4], EPS, version="authors")
    assert any("probability" in w for w in res["warnings"])
    out = capsys.readouterr()
    assert "probability" not in out.out and "probability" not in out.err


def test_quiet_context_restores_trace_function():
    import sys

    def tracer(frame, event, arg):
        return None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        with attacks.quiet_autoattack():
            sys.settrace(None)  # what pyautoattack's check_dynamic does
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(old)
