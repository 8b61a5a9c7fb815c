"""Tests for nblib.models: the kuangliu/pytorch-cifar architectures and SmallCNN."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nblib.models import (
                          MODEL_NAMES,
                          VGG,
                          RegNet,
                          ResNet,
                          SENet,
                          SmallCNN,
                          build,
                          )

CIFAR_MODELS = ("vgg11", "resnet18", "senet18", "regnetx_200mf")

# Exact parameter counts for num_classes=10.  VGG-11 (9,231,114), ResNet-18
# (11,173,962) and SENet-18 (11,260,354) match the counts published for the
# kuangliu/pytorch-cifar models; all four were also checked against a direct
# transcription of that repository's code (identical keys, shapes and outputs).
PARAM_COUNTS = {
    "vgg11": 9_231_114,
    "resnet18": 11_173_962,
    "senet18": 11_260_354,
    "regnetx_200mf": 2_321_946,
    "smallcnn": 98_266,
}

# Number of state-dict entries (parameters and BatchNorm buffers) and the SHA-256
# of the ordered "key:shape" listing, taken from that same transcription.
STATE_DICT_FINGERPRINTS = {
    "vgg11": (58, "1e0aabce4138f5f4c3499dc6edd48feb14f1af561eb2610abf427b31e222c7d9"),
    "resnet18": (122, "fc31507f4ec3c799984f646fe06daca997dbbc09e5ab8d99363547635c852b1f"),
    "senet18": (139, "11c60b0ba25b7d10defc8824fbcb81838944e94ebde5bda88c8f04aa447720d2"),
    "regnetx_200mf": (266, "ce9d700050c2f347ed6e799e0fd17d4030bcc24cd753f927278af01626b1df3a"),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: build(name) for name in MODEL_NAMES}


def test_model_names() -> None:
    assert MODEL_NAMES == ("vgg11", "resnet18", "senet18", "regnetx_200mf", "smallcnn")
    assert isinstance(MODEL_NAMES, tuple)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("vgg11", VGG), ("resnet18", ResNet), ("senet18", SENet), ("regnetx_200mf", RegNet), ("smallcnn", SmallCNN)],
)
def test_build_returns_class(name: str, cls: type) -> None:
    model = build(name)
    assert isinstance(model, cls)
    assert build(name) is not model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward(models: dict[str, nn.Module], name: str) -> None:
    model = models[name]
    x = torch.randn(2, 3, 32, 32)
    model.train()
    model.zero_grad()
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_num_classes(name: str) -> None:
    model = build(name, num_classes=7).eval()
    last_linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert last_linear.out_features == 7
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_param_counts(models: dict[str, nn.Module], name: str) -> None:
    assert n_params(models[name]) == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_state_dict_fingerprint(models: dict[str, nn.Module], name: str) -> None:
    sd = models[name].state_dict()
    listing = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items())
    count, digest = STATE_DICT_FINGERPRINTS[name]
    assert len(sd) == count
    assert hashlib.sha256(listing.encode()).hexdigest() == digest


def test_vgg11_keys(models: dict[str, nn.Module]) -> None:
    s = shapes(models["vgg11"])
    assert s["features.0.weight"] == (64, 3, 3, 3)
    assert s["features.0.bias"] == (64,)  # kuangliu's VGG convs keep their bias
    assert s["features.1.running_var"] == (64,)
    assert s["features.4.weight"] == (128, 64, 3, 3)
    assert s["features.25.weight"] == (512, 512, 3, 3)
    assert s["classifier.weight"] == (10, 512)
    convs = [m for m in models["vgg11"].modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert isinstance(models["vgg11"].features[-1], nn.AvgPool2d)
    assert sum(isinstance(m, nn.MaxPool2d) for m in models["vgg11"].features) == 5


def test_vgg11_last_two_convs_see_2x2_inputs(models: dict[str, nn.Module]) -> None:
    model = models["vgg11"]
    seen: list[tuple[str, tuple[int, int]]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: seen.append((name, tuple(inp[0].shape[-2:]))))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.randn(2, 3, 32, 32))
    finally:
        for h in hooks:
            h.remove()
    assert seen == [
        ("features.0", (32, 32)),
        ("features.4", (16, 16)),
        ("features.8", (8, 8)),
        ("features.11", (8, 8)),
        ("features.15", (4, 4)),
        ("features.18", (4, 4)),
        ("features.22", (2, 2)),
        ("features.25", (2, 2)),
    ]


def test_resnet18_keys(models: dict[str, nn.Module]) -> None:
    s = shapes(models["resnet18"])
    assert s["conv1.weight"] == (64, 3, 3, 3)
    assert s["layer1.0.conv1.weight"] == (64, 64, 3, 3)
    assert s["layer2.0.conv1.weight"] == (128, 64, 3, 3)
    assert s["layer2.0.shortcut.0.weight"] == (128, 64, 1, 1)
    assert s["layer2.0.shortcut.1.running_mean"] == (128,)
    assert s["layer4.1.bn2.weight"] == (512,)
    assert s["linear.weight"] == (10, 512)
    assert not any(k.startswith("layer1.0.shortcut") for k in s)  # identity shortcut
    assert not any(k.endswith("conv1.bias") or k.endswith("conv2.bias") for k in s)
    assert models["resnet18"].layer2[0].conv1.stride == (2, 2)


def test_senet18_keys(models: dict[str, nn.Module]) -> None:
    s = shapes(models["senet18"])
    assert s["conv1.weight"] == (64, 3, 3, 3)
    assert s["bn1.weight"] == (64,)
    assert s["layer1.0.bn1.weight"] == (64,)  # pre-activation: BN on the block input
    assert s["layer1.0.fc1.weight"] == (4, 64, 1, 1)
    assert s["layer1.0.fc1.bias"] == (4,)
    assert s["layer1.0.fc2.weight"] == (64, 4, 1, 1)
    assert s["layer4.1.fc1.weight"] == (32, 512, 1, 1)
    assert s["layer2.0.shortcut.0.weight"] == (128, 64, 1, 1)
    assert "layer2.0.shortcut.1.weight" not in s  # SENet shortcut has no BatchNorm
    assert not hasattr(models["senet18"].layer1[0], "shortcut")
    assert not hasattr(models["senet18"].layer2[1], "shortcut")
    assert s["linear.weight"] == (10, 512)


def test_regnetx_200mf_keys_and_groups(models: dict[str, nn.Module]) -> None:
    model = models["regnetx_200mf"]
    s = shapes(model)
    assert s["conv1.weight"] == (64, 3, 3, 3)
    assert s["layer1.0.conv1.weight"] == (24, 64, 1, 1)
    assert s["layer3.0.conv2.weight"] == (152, 8, 3, 3)  # 19 groups of width 8
    assert s["layer4.6.conv3.weight"] == (368, 368, 1, 1)
    assert s["layer3.0.shortcut.0.weight"] == (152, 56, 1, 1)
    assert s["linear.weight"] == (10, 368)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [1, 1, 4, 7]
    assert not any(".se." in k for k in s)  # RegNetX: no squeeze-and-excitation
    grouped = {n: m.groups for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    expected = {"layer1.0.conv2": 3, "layer2.0.conv2": 7}
    expected.update({f"layer3.{i}.conv2": 19 for i in range(4)})
    expected.update({f"layer4.{i}.conv2": 46 for i in range(7)})
    assert grouped == expected
    assert model.layer3[0].conv2.stride == (2, 2)
    assert model.layer3[1].conv2.stride == (1, 1)


def test_conv_biases_match_reference(models: dict[str, nn.Module]) -> None:
    # Only VGG convs and the SE 1x1 convs carry biases; all other convs are bias-free.
    for name in ("resnet18", "regnetx_200mf"):
        assert all(m.bias is None for m in models[name].modules() if isinstance(m, nn.Conv2d))
    for n, m in models["senet18"].named_modules():
        if isinstance(m, nn.Conv2d):
            assert (m.bias is not None) == (n.endswith("fc1") or n.endswith("fc2")), n
    assert all(m.bias is not None for m in models["vgg11"].modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_strict_state_dict_round_trip(name: str) -> None:
    torch.manual_seed(1)
    src = build(name)
    for m in src.modules():  # non-trivial BN buffers so the round trip covers them
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    torch.manual_seed(2)
    dst = build(name)
    result = dst.load_state_dict(src.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    src.eval()
    dst.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_strict_load_rejects_other_architecture() -> None:
    with pytest.raises(RuntimeError):
        build("resnet18").load_state_dict(build("senet18").state_dict(), strict=True)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError) as info:
        build("resnet50")
    message = str(info.value)
    assert "resnet50" in message
    for name in MODEL_NAMES:
        assert name in message


@pytest.mark.parametrize("bad", [0, -3, 2.5, 10.0, "10", None, True])
def test_bad_num_classes(bad: object) -> None:
    with pytest.raises(ValueError):
        build("smallcnn", num_classes=bad)  # type: ignore[arg-type]


@settings(max_examples=15, deadline=None)
@given(num_classes=st.integers(min_value=1, max_value=200))
def test_smallcnn_any_num_classes(num_classes: int) -> None:
    model = build("smallcnn", num_classes=num_classes).eval()
    with torch.no_grad():
        assert model(torch.zeros(3, 3, 32, 32)).shape == (3, num_classes)


def test_smallcnn_layer_variety(models: dict[str, nn.Module]) -> None:
    model = models["smallcnn"]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert 3 <= len(convs) <= 4
    assert any(c.stride == (2, 2) for c in convs)
    assert any(c.padding == (1, 1) for c in convs)
    assert any(c.padding == (0, 0) for c in convs)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert 1 <= sum(isinstance(m, nn.Linear) for m in model.modules()) <= 2
    assert 50_000 <= n_params(model) <= 300_000


@pytest.mark.slow
def test_smallcnn_learns_digits() -> None:
    """SmallCNN reaches >= 90% held-out accuracy on sklearn digits (upsampled to 3x32x32) in 10 epochs."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    test_idx, train_idx = perm[:360], perm[360:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread is as fast, and far faster on a busy CPU
    try:
        acc = _train_digits(x, y, train_idx, test_idx, g)
    finally:
        torch.set_num_threads(threads)
    assert acc >= 0.9


def _train_digits(
    x: torch.Tensor, y: torch.Tensor, train_idx: torch.Tensor, test_idx: torch.Tensor, g: torch.Generator
) -> float:
    """Ten epochs of SGD on ``train_idx``; returns eval-mode accuracy on ``test_idx``."""
    torch.manual_seed(0)
    model = build("smallcnn")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(10):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=g)]
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x[test_idx]).argmax(1) == y[test_idx]).float().mean().item()
