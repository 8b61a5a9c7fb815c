"""Norm tables and norm decay on torchvision models at 224x224 (random weights, nothing downloaded).

Every conv / Linear module of the model must have its row; each conv's value is checked against the exact
general method (the convolution of a ones image with |K|, or its adjoint), a route independent of Theorem 1's
closed forms that the table uses where Assumption 1 holds.
"""
import math

import pytest
import torch
import torch.nn as nn

from nblib import norms
from nblib.norms import CONV_TYPES, layer_norms
from nblib.training.regularizers import NormDecay

torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = ["resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"]
SHAPE = (3, 224, 224)


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None)


def own_parameters_elsewhere(model: nn.Module) -> list[str]:
    """Modules holding parameters of their own that are neither conv / Linear nor BatchNorm (ConvNeXt's
    LayerNorms and the blocks that hold its layer scale): counted here without the engine's helpers."""
    return [n for n, m in model.named_modules()
            if any(True for _ in m.parameters(recurse=False))
            and not isinstance(m, (*CONV_TYPES, nn.Linear, nn.modules.batchnorm._BatchNorm))]


def check_model(model: nn.Module, cross_check: bool) -> None:
    expected = [n for n, m in model.named_modules() if isinstance(m, (*CONV_TYPES, nn.Linear))]
    unnormed = own_parameters_elsewhere(model)
    for p in (1, math.inf):
        table = layer_norms(model, SHAPE, p)
        normed = table[table.note == ""]
        assert list(normed.name) == expected  # every layer, in module order
        assert normed.norm.notna().all() and (normed.norm > 0).all()
        rest = table[table.note != ""]  # listed after the layers with the reason, never dropped in silence
        assert list(rest.name) == unnormed
        assert rest.norm.isna().all() and rest.note.str.startswith("not normed").all()
        if cross_check:
            modules = dict(model.named_modules())
            for row in normed.itertuples():
                m = modules[row.name]
                if isinstance(m, CONV_TYPES):
                    size = row.input_shape[1:]
                    exact = norms.general_l1(m, size) if p == 1 else norms.general_linf(m, size)
                    assert row.norm == pytest.approx(exact.item(), rel=1e-5), row.name
    model.train()
    nd = NormDecay(model, SHAPE, math.inf, beta=1e-3)
    assert nd.n_layers == len(expected)
    model.zero_grad(set_to_none=True)
    nd.step()
    for name in expected:
        w = dict(model.named_modules())[name].weight
        assert w.grad is not None and w.grad.abs().sum() > 0, name
    assert model.training


def test_mobilenet_v3_small_every_layer():
    """Depthwise convs, squeeze-excitation 1x1 convs on 1x1 inputs, hardswish; fast enough for every run."""
    check_model(build("mobilenet_v3_small"), cross_check=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_torchvision_models_every_layer_exact(name):
    check_model(build(name), cross_check=True)
