"""Tests for nblib.perf.throughput: the old path's re-creation, the measurements (tiny, CPU) and the projection."""
import math

import pytest
import torch

from nblib.perf import throughput as tp
from nblib.data.loader import crop_flip, to_float

pytestmark = pytest.mark.usefixtures("one_thread")


def test_autoattack_model():
    assert tp.autoattack_seconds(10, 0.5, 0.1, 0.0) == pytest.approx(10 * 100 * 0.5)
    full = 10 * (100 * 0.5 + 1800 * 0.5 + 5900 * 0.1)
    assert tp.autoattack_seconds(10, 0.5, 0.1, 1.0) == pytest.approx(full)
    with pytest.raises(ValueError, match="survivors"):
        tp.autoattack_seconds(10, 0.5, 0.1, 1.5)


def test_old_path_is_the_cifar_crop_and_flip():
    """Each old-path image is the /255 float of one of the 9 x 9 x 2 crops/flips of its uint8 image."""
    images, targets = tp.synthetic_cifar(4, seed=3)
    data = tp.PILImages(images, targets)
    torch.manual_seed(0)
    for i in range(4):
        x, y = data[i]
        assert y == int(targets[i]) and x.dtype == torch.float32 and x.shape == (3, 32, 32)
        found = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                 if torch.equal(x, to_float(crop_flip(images[i:i + 1], torch.tensor([dy]), torch.tensor([dx]),
                                                      torch.tensor([f])))[0])]
        assert len(found) >= 1


def scripted_clock(monkeypatch, seconds: dict):
    """Replace ``time_calls`` by a fake that runs the timed function once (after its untimed warm-up calls) and
    returns the scripted seconds of its name: the rates are then exact numbers computed here by hand."""
    calls = []

    def fake(fn, runs, budget_s=math.inf, device="cpu", warmup=1):
        for _ in range(warmup + 1):
            fn()
        calls.append(fn.__name__)
        return seconds[fn.__name__], 1

    monkeypatch.setattr(tp, "time_calls", fake)
    return calls


@pytest.mark.parametrize("path", ["old", "new"])
def test_measure_step_tiny(path, monkeypatch):
    """The rate is the images of the ``n`` timed steps over their time, each step one loss of ``mode`` (the
    warm-up steps untimed), and the batches wrap into the next epoch."""
    scripted_clock(monkeypatch, {"stream": 2.0})
    losses = []
    real_loss = tp.adversarial_loss
    monkeypatch.setattr(tp, "adversarial_loss", lambda mode, *a, **k: losses.append(mode) or real_loss(mode, *a, **k))
    images, targets = tp.synthetic_cifar(40)
    make = (lambda: tp.old_loader(images, targets, 8, "cpu")) if path == "old" else \
        (lambda: tp.new_batches(images, targets, 8, "cpu"))
    for model, mode in ((None, "plain"), ("smallcnn", "plain"), ("smallcnn", "pgd")):
        losses.clear()
        ips = tp.measure_step(model, make(), mode, 6, "cpu", warmup=1)  # 7 batches: wraps into epoch 2
        assert ips == pytest.approx(6 * 8 / 2.0)  # 6 timed batches of 8 images in the scripted 2 s
        assert losses == ([] if model is None else [mode] * 7)  # the data path alone computes nothing


def test_measure_eval_tiny(monkeypatch):
    calls = scripted_clock(monkeypatch, {"forward_all": 4.0, "norms": 0.5, "checkpoint": 0.3, "forward_aa": 0.2,
                                         "grad_aa": 0.8})
    out = tp.measure_eval("smallcnn", "cpu", n_images=16, aa_batch=8)
    assert sorted(calls) == ["checkpoint", "forward_aa", "forward_all", "grad_aa", "norms"]
    assert out == pytest.approx({"eval_ips": 16 / 4.0, "norms_s": 0.5, "ckpt_s": 0.3, "aa_forward_s": 0.2 / 8,
                                 "aa_grad_s": 0.8 / 8})


def test_measure_regularizer_tiny():
    """Norm decay: a step's seconds, no clip; SVC: one clip's seconds, no norm-decay step; others: nothing."""
    nd = tp.measure_regularizer("smallcnn", "nd_l1", "cpu", batch_size=8, runs=1)
    svc = tp.measure_regularizer("smallcnn", "svc", "cpu", batch_size=8)
    assert nd["nd_s"] > 0 and nd["clip_s"] == 0 and svc["clip_s"] > 0 and svc["nd_s"] == 0
    assert tp.measure_regularizer("smallcnn", "wd", "cpu") == {"nd_s": 0.0, "clip_s": 0.0}


def test_measure_step_refuses_cudagraphs_off_cuda():
    images, targets = tp.synthetic_cifar(8)
    with pytest.raises(ValueError, match="needs device='cuda'"):
        tp.measure_step("smallcnn", tp.new_batches(images, targets, 8, "cpu"), "plain", 1, "cpu",
                        compile="cudagraphs")


@pytest.mark.slow
def test_measure_step_compiled(monkeypatch):
    """compile="default": the losses see the compiled module (``torch.compile``'s wrapper of the model), the
    first step (compilation) is untimed even with ``warmup=0``, and the rate is the scripted one."""
    scripted_clock(monkeypatch, {"stream": 2.0})
    seen = []
    real_loss = tp.adversarial_loss

    def loss(mode, model, *a, **k):
        seen.append(type(model).__name__)
        return real_loss(mode, model, *a, **k)

    monkeypatch.setattr(tp, "adversarial_loss", loss)
    images, targets = tp.synthetic_cifar(16)
    ips = tp.measure_step("smallcnn", tp.new_batches(images, targets, 8, "cpu"), "plain", 2, "cpu", warmup=0,
                          compile="default")
    assert ips == pytest.approx(2 * 8 / 2.0)
    assert seen == ["OptimizedModule"] * (tp.COMPILE_WARMUP["default"] + 2)  # the warm-up step, the 2 timed ones
