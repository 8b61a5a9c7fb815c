"""Tests for nblib.training.adversarial: the PGD-AT, ALP and TRADES training losses on tiny models (CPU, seconds)."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nblib.vocabulary import ADV_MODES
from nblib.training.adversarial import (ADV_PRESETS, adv_settings, adversarial_examples,
                                        adversarial_loss)


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def _batch(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g)
    x[:, :, :8] = 0.0  # pixels on the box boundary: the projection onto [0, 1] matters
    x[:, :, -8:] = 1.0
    return x, torch.randint(0, 10, (n,), generator=g)


def test_presets():
    assert ADV_PRESETS["standard"]["eps"] == 8 / 255 and ADV_PRESETS["standard"]["step"] == 2 / 255
    assert ADV_PRESETS["standard"]["steps"] == 10 and ADV_PRESETS["standard"]["trades_beta"] == 6.0
    assert ADV_PRESETS["authors"]["eps"] == 0.031 and ADV_PRESETS["authors"]["step"] == 0.007
    assert ADV_PRESETS["authors"]["steps"] == 10 and ADV_PRESETS["authors"]["trades_beta"] == 1.0
    for p in ADV_PRESETS.values():
        assert p["alp_weight"] == 1.0
    cfg = adv_settings("authors", steps=3)
    assert cfg["steps"] == 3 and cfg["eps"] == 0.031
    assert ADV_PRESETS["authors"]["steps"] == 10  # the preset itself is not modified
    with pytest.raises(ValueError, match="standard"):
        adv_settings("madry")
    with pytest.raises(ValueError, match="epsilon"):
        adv_settings("standard", epsilon=0.1)


def test_unknown_mode_lists_modes():
    x, y = _batch(4)
    with pytest.raises(ValueError) as err:
        adversarial_loss("fgsm", _model(), x, y)
    for mode in ADV_MODES:
        assert mode in str(err.value)


@pytest.mark.parametrize("preset", list(ADV_PRESETS))
@pytest.mark.parametrize("mode", ["pgd", "alp", "trades"])
def test_attack_stays_in_ball_and_box(mode, preset):
    model = _model().train()
    x, y = _batch()
    cfg = adv_settings(preset)
    x_adv = adversarial_examples(mode, model, x, y, cfg, generator=torch.Generator().manual_seed(0))
    eps = cfg["eps"]
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert (x_adv - x).abs().max().item() > 0.5 * eps  # it moved
    assert model.training and all(m.training for m in model.modules())


@pytest.mark.parametrize("mode", ["pgd", "alp", "trades"])
def test_attack_in_eval_mode_loss_in_train_mode(mode):
    model = _model().train()
    x, y = _batch(8)
    modes = []
    model[0].register_forward_pre_hook(lambda m, inp: modes.append(model[1].training))
    adversarial_loss(mode, model, x, y, steps=3)
    n_train_forwards = {"pgd": 1, "alp": 2, "trades": 2}[mode]
    assert modes[-n_train_forwards:] == [True] * n_train_forwards
    assert not any(modes[:-n_train_forwards])  # every attack forward ran in eval mode


def test_attack_raises_the_loss():
    model = _model().eval()
    x, y = _batch()
    cfg = adv_settings("standard")
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y).item()
        adv = F.cross_entropy(model(adversarial_examples("pgd", model, x, y, cfg)), y).item()
    assert adv > clean


def test_start_distributions():
    model = _model().eval()
    x = torch.full((64, 3, 32, 32), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    # TRADES: x + 0.001 N(0, 1), whatever the preset
    d = adversarial_examples("trades", model, x, y, adv_settings("standard", steps=0), g) - x
    assert d.std().item() == pytest.approx(1e-3, rel=0.02) and d.mean().abs().item() < 1e-5
    # PGD-AT standard: Madry's uniform start in the eps-ball
    eps = 8 / 255
    d = adversarial_examples("pgd", model, x, y, adv_settings("standard", steps=0), g) - x
    assert d.abs().max().item() <= eps + 1e-7
    assert d.std().item() == pytest.approx(eps / math.sqrt(3), rel=0.02)
    # the authors' code starts every attack at x + 0.001 N(0, 1)
    d = adversarial_examples("alp", model, x, y, adv_settings("authors", steps=0), g) - x
    assert d.std().item() == pytest.approx(1e-3, rel=0.02)


def test_loss_values_against_hand_formulas():
    model = _model().train()
    x, y = _batch()
    g = torch.Generator().manual_seed(3)
    x_adv = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    with torch.no_grad():
        z, za = model(x), model(x_adv)
        logp = torch.log_softmax(z, 1)
        logq = torch.log_softmax(za, 1)
        ce = -logp[torch.arange(len(y)), y].mean()
        ce_adv = -logq[torch.arange(len(y)), y].mean()
        sq = ((z - za) ** 2).sum(1).mean()
        kl = (logp.exp() * (logp - logq)).sum(1).mean()
        got = {m: adversarial_loss(m, model, x, y, x_adv=None if m == "plain" else x_adv).item()
               for m in ADV_MODES}
        alp_auth = adversarial_loss("alp", model, x, y, preset="authors", x_adv=x_adv).item()
        alp_pure = adversarial_loss("alp", model, x, y, x_adv=x_adv, alp_mixed=False, alp_weight=2.0).item()
        trades_auth = adversarial_loss("trades", model, x, y, preset="authors", x_adv=x_adv).item()
    assert got["plain"] == pytest.approx(ce.item(), rel=1e-5)
    assert got["pgd"] == pytest.approx(ce_adv.item(), rel=1e-5)
    assert got["alp"] == pytest.approx((0.5 * ce + 0.5 * ce_adv + sq).item(), rel=1e-5)
    assert alp_auth == pytest.approx((0.5 * ce + 0.5 * ce_adv + sq / 10).item(), rel=1e-5)
    assert alp_pure == pytest.approx((ce_adv + 2.0 * sq).item(), rel=1e-5)
    assert got["trades"] == pytest.approx((ce + 6.0 * kl).item(), rel=1e-5)
    assert trades_auth == pytest.approx((ce + 1.0 * kl).item(), rel=1e-5)


@pytest.mark.parametrize("mode", ADV_MODES)
def test_one_sgd_step_lowers_the_loss(mode):
    model = _model().train()
    x, y = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    cfg = adv_settings("standard", steps=5)
    # at fixed adversarial examples
    x_adv = adversarial_examples(mode, model, x, y, cfg, torch.Generator().manual_seed(0))
    before = adversarial_loss(mode, model, x, y, x_adv=x_adv, steps=5)
    opt.zero_grad()
    before.backward()
    opt.step()
    after = adversarial_loss(mode, model, x, y, x_adv=x_adv, steps=5)
    assert after.item() < before.item()
    # with the attack re-run from the same random start (the loss the next step would see)
    before = adversarial_loss(mode, model, x, y, steps=5, generator=torch.Generator().manual_seed(1))
    opt.zero_grad()
    before.backward()
    opt.step()
    after = adversarial_loss(mode, model, x, y, steps=5, generator=torch.Generator().manual_seed(1))
    assert after.item() < before.item()


def test_incomplete_settings_name_adv_settings():
    model = _model().train()
    x, y = _batch(8)
    with pytest.raises(ValueError, match="adv_settings"):
        adversarial_examples("pgd", model, x, y, {"eps": 0.1})


def test_details_report_the_cross_entropy_points():
    model = _model().train()
    x, y = _batch(8)
    out = adversarial_loss("alp", model, x, y, steps=1, return_details=True)
    assert out.logits.shape == (16, 10) and torch.equal(out.targets, torch.cat([y, y]))
    out = adversarial_loss("pgd", model, x, y, steps=1, return_details=True)
    assert out.logits.shape == (8, 10) and out.x_adv.shape == x.shape
    assert adversarial_loss("plain", model, x, y, return_details=True).x_adv is None
