"""nblib.norms against independent oracles: a dense operator built by explicit index loops (numpy),
its column/row sums and SVD, and finite differences."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nblib import norms
from nblib.norms import (NOT_REACHED, assumption1_holds, conv2d_norm, layer_input_shapes, layer_norms, linear_norm,
                         operator_matrix)


def loop_operator(conv: nn.Conv2d, hw) -> np.ndarray:
    """Dense matrix of a zero-padded Conv2d from the definition of cross-correlation, by loops."""
    k = conv.weight.detach().double().numpy()
    d_out, d_in_g, k1, k2 = k.shape
    (s1, s2), (p1, p2), (e1, e2) = conv.stride, conv.padding, conv.dilation
    h, w = hw
    ho = (h + 2 * p1 - e1 * (k1 - 1) - 1) // s1 + 1
    wo = (w + 2 * p2 - e2 * (k2 - 1) - 1) // s2 + 1
    g_out = d_out // conv.groups
    m = np.zeros((d_out, ho, wo, conv.in_channels, h, w))
    for o in range(d_out):
        grp = o // g_out
        for jl in range(d_in_g):
            j = grp * d_in_g + jl
            for i in range(ho):
                for jj in range(wo):
                    for a in range(k1):
                        for b in range(k2):
                            r, c = i * s1 - p1 + a * e1, jj * s2 - p2 + b * e2
                            if 0 <= r < h and 0 <= c < w:
                                m[o, i, jj, j, r, c] += k[o, jl, a, b]
    return m.reshape(d_out * ho * wo, conv.in_channels * h * w)


@st.composite
def conv_layers(draw, assumption1=None):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    d_in = groups * draw(st.integers(1, 3))
    d_out = groups * draw(st.integers(1, 3))
    k1, k2 = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    s1, s2 = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    p1, p2 = draw(st.integers(0, k1 - 1)), draw(st.integers(0, k2 - 1))
    dil = draw(st.sampled_from([(1, 1), (1, 1), (1, 1), (2, 1), (2, 2)]))
    reach1, reach2 = dil[0] * (k1 - 1) + 1, dil[1] * (k2 - 1) + 1
    h = draw(st.integers(max(1, reach1 - 2 * p1), 9))
    w = draw(st.integers(max(1, reach2 - 2 * p2), 9))
    conv = nn.Conv2d(d_in, d_out, (k1, k2), stride=(s1, s2), padding=(p1, p2), dilation=dil, groups=groups,
                     bias=draw(st.booleans())).double()
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    kind = draw(st.sampled_from(["gauss", "sparse", "ties"]))
    with torch.no_grad():
        kern = torch.randn(conv.weight.shape, generator=gen, dtype=torch.float64)
        if kind == "sparse":
            kern *= torch.rand(kern.shape, generator=gen, dtype=torch.float64) < 0.3
        elif kind == "ties":
            kern = torch.randint(-2, 3, kern.shape, generator=gen).double()
        conv.weight.copy_(kern)
    if assumption1 is not None and assumption1_holds(conv, (h, w)) != assumption1:
        from hypothesis import reject
        reject()
    return conv, (h, w)


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


@SETTINGS
@given(conv_layers())
def test_operator_matrix_matches_loops(layer):
    conv, hw = layer
    np.testing.assert_allclose(operator_matrix(conv, hw).numpy(), loop_operator(conv, hw), atol=1e-12)


@SETTINGS
@given(conv_layers())
def test_l1_linf_exact_everywhere(layer):
    conv, hw = layer
    m = np.abs(loop_operator(conv, hw))
    assert conv2d_norm(conv, hw, 1).item() == pytest.approx(m.sum(0).max(), rel=1e-12, abs=1e-12)
    assert conv2d_norm(conv, hw, math.inf).item() == pytest.approx(m.sum(1).max(), rel=1e-12, abs=1e-12)


@SETTINGS
@given(conv_layers(assumption1=True))
def test_theorem1_closed_forms_under_assumption1(layer):
    """Eq. (1) and eq. (2) equal the dense column/row sums whenever Assumption 1 holds."""
    conv, hw = layer
    m = np.abs(loop_operator(conv, hw))
    assert norms.theorem1_l1(conv, hw).item() == pytest.approx(m.sum(0).max(), rel=1e-12, abs=1e-12)
    assert norms.theorem1_linf(conv, hw).item() == pytest.approx(m.sum(1).max(), rel=1e-12, abs=1e-12)
    assert norms.l1_linf_method(conv, hw) == "theorem1"


def test_closed_form_is_wrong_outside_assumption1():
    """Why the general method exists: VGG-11's last convs (3x3, pad 1, 2x2 input) break eq. (2)."""
    conv = nn.Conv2d(2, 2, 3, padding=1, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.arange(1.0, 37.0).reshape(2, 2, 3, 3))
    assert not assumption1_holds(conv, (2, 2))
    m = np.abs(loop_operator(conv, (2, 2)))
    full_row = conv.weight.abs().flatten(1).sum(1).max().item()
    assert m.sum(1).max() < full_row
    assert conv2d_norm(conv, (2, 2), math.inf).item() == pytest.approx(m.sum(1).max())
    with pytest.raises(ValueError, match="Assumption 1"):
        norms.theorem1_linf(conv, (2, 2))


@settings(max_examples=40, deadline=None)
@given(conv_layers())
def test_l2_methods_against_svd(layer):
    conv, hw = layer
    sigma = np.linalg.norm(loop_operator(conv, hw), 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        power = conv2d_norm(conv, hw, 2, method="power", tol=1e-12, max_iter=3000,
                            generator=torch.Generator().manual_seed(0)).item()
    assert power <= sigma * (1 + 1e-9) + 1e-12  # ||M v|| with ||v|| = 1: never above the norm
    if not any("max_iter" in str(w.message) for w in caught):  # converged: exact
        assert power == pytest.approx(sigma, rel=1e-4, abs=1e-9)
    else:  # not converged (close top singular values), and said so: still close
        assert power == pytest.approx(sigma, rel=1e-2)
    assert conv2d_norm(conv, hw, 2, method="gram").item() >= sigma * (1 - 1e-9)
    assert conv2d_norm(conv, hw, 2, method="bound").item() >= sigma * (1 - 1e-9)


def circular_operator(conv: nn.Conv2d, hw) -> np.ndarray:
    """Dense stride-1 circular conv (indices wrap modulo H, W), by loops."""
    k = conv.weight.detach().double().numpy()
    d_out, d_in_g, k1, k2 = k.shape
    e1, e2 = conv.dilation
    h, w = hw
    g_out = d_out // conv.groups
    m = np.zeros((d_out, h, w, conv.in_channels, h, w))
    for o in range(d_out):
        for jl in range(d_in_g):
            j = (o // g_out) * d_in_g + jl
            for i in range(h):
                for jj in range(w):
                    for a in range(k1):
                        for b in range(k2):
                            m[o, i, jj, j, (i + a * e1) % h, (jj + b * e2) % w] += k[o, jl, a, b]
    return m.reshape(d_out * h * w, -1)


@settings(max_examples=40, deadline=None)
@given(conv_layers())
def test_fft_singular_values_of_circular_conv(layer):
    conv, hw = layer
    reach = [d * (k - 1) + 1 for d, k in zip(conv.dilation, conv.kernel_size)]
    if conv.stride != (1, 1):
        with pytest.raises(ValueError, match="stride"):
            conv2d_norm(conv, hw, 2, method="fft")
        return
    if reach[0] > hw[0] or reach[1] > hw[1]:
        with pytest.raises(ValueError):
            conv2d_norm(conv, hw, 2, method="fft")
        return
    got = np.sort(norms.singular_values_fft(conv, hw).detach().numpy())
    want = np.sort(np.linalg.svd(circular_operator(conv, hw), compute_uv=False))
    np.testing.assert_allclose(got, want, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(conv_layers(), st.sampled_from([1, math.inf]))
def test_gradient_against_finite_differences(layer, p):
    """Autograd subgradient of the exact norm: +-1 on maximizing entries (checked where the max is unique)."""
    conv, hw = layer
    value = conv2d_norm(conv, hw, p)
    (grad,) = torch.autograd.grad(value, conv.weight)
    m_abs = np.abs(loop_operator(conv, hw))
    sums = m_abs.sum(0) if p == 1 else m_abs.sum(1)
    # any subgradient g of a 1-homogeneous convex function satisfies <g, K> = f(K); entries are 0 or +-1
    assert (grad * conv.weight).sum().item() == pytest.approx(value.item(), rel=1e-10)
    assert set(np.unique(np.abs(grad.numpy()).round(9))) <= {0.0, 1.0}
    top = np.sort(sums)[::-1]
    if len(top) > 1 and top[0] - top[1] < 1e-6:
        return  # ties: the finite-difference derivative does not exist
    h = 1e-7
    flat = conv.weight.detach().clone().flatten()
    fd = np.zeros(flat.numel())
    for n in range(flat.numel()):
        for sign in (1, -1):
            w = flat.clone()
            w[n] += sign * h
            c = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=False).double()
            with torch.no_grad():
                c.weight.copy_(w.reshape(conv.weight.shape))
            m = np.abs(loop_operator(c, hw))
            fd[n] += sign * (m.sum(0) if p == 1 else m.sum(1)).max() / (2 * h)
    np.testing.assert_allclose(grad.flatten().numpy(), fd, atol=1e-5)
    assert set(np.unique(np.abs(grad.numpy()).round(9))) <= {0.0, 1.0}


def test_power_gradient_is_singular_vector_outer_product():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False).double()
    hw = (6, 5)
    value = conv2d_norm(conv, hw, 2, tol=1e-14, max_iter=10000)
    (grad,) = torch.autograd.grad(value, conv.weight)
    m = torch.as_tensor(loop_operator(conv, hw))
    u, s, vh = torch.linalg.svd(m)
    # d sigma / dK = sum over entries of M that equal K[...] of u_r v_c
    eps = 1e-6
    fd = torch.zeros_like(grad).flatten()
    base = conv.weight.detach().clone()
    for n in range(base.numel()):
        w = base.clone().flatten()
        w[n] += eps
        c = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False).double()
        with torch.no_grad():
            c.weight.copy_(w.reshape(base.shape))
        fd[n] = (np.linalg.norm(loop_operator(c, hw), 2) - s[0].item()) / eps
    torch.testing.assert_close(grad.flatten(), fd, atol=1e-4, rtol=1e-4)


def test_linear_and_batchnorm_norms():
    torch.manual_seed(0)
    lin = nn.Linear(7, 5).double()
    w = lin.weight.detach().numpy()
    assert linear_norm(lin, 1).item() == pytest.approx(np.abs(w).sum(0).max())
    assert linear_norm(lin, math.inf).item() == pytest.approx(np.abs(w).sum(1).max())
    assert linear_norm(lin, 2).item() == pytest.approx(np.linalg.norm(w, 2))
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -3.0, 0.5, 2.0]))
        bn.running_var.copy_(torch.tensor([1.0, 4.0, 0.25, 16.0]))
    dense = torch.diag(bn.weight / (bn.running_var + bn.eps).sqrt())
    for p in (1, 2, math.inf):
        expected = torch.linalg.matrix_norm(dense, ord=p).item()
        assert norms.batchnorm_norm(bn, p).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_kernel(dtype):
    conv = nn.Conv2d(3, 4, 3, padding=1).to(dtype)
    for p, method in [(1, None), (math.inf, None), (2, "power"), (2, "fft"), (2, "gram"), (2, "bound")]:
        v = conv2d_norm(conv, (8, 8), p, method=method)
        assert v.dim() == 0 and v.dtype == dtype and v.device == conv.weight.device


def test_bad_input_raises_clear_errors():
    conv = nn.Conv2d(3, 4, 5, padding=0)
    with pytest.raises(ValueError, match="reach"):
        conv2d_norm(conv, (3, 3), 1)
    with pytest.raises(ValueError, match="p must be"):
        conv2d_norm(conv, (8, 8), 3)
    with pytest.raises(ValueError, match="input_size"):
        conv2d_norm(conv, 8, 1)
    with pytest.raises(ValueError, match="nn.Conv2d"):
        conv2d_norm(nn.Linear(3, 3), (8, 8), 1)
    with pytest.raises(ValueError, match="unknown l2 method"):
        conv2d_norm(conv, (8, 8), 2, method="magic")
    with pytest.raises(ValueError, match="padding_mode"):
        conv2d_norm(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (8, 8), 1)
    with pytest.raises(ValueError, match="over the cap"):
        operator_matrix(nn.Conv2d(64, 64, 3, padding=1), (32, 32))
    with pytest.raises(ValueError, match="nn.Linear"):
        linear_norm(nn.ReLU(), 1)


def test_operator_matrix_non_zero_padding():
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular").double()
    m = operator_matrix(conv, (4, 4))
    assert m.shape == (48, 32)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close((m @ x.flatten()).reshape(1, 3, 4, 4), conv(x) - conv.bias.view(1, -1, 1, 1))


class Unreached(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Conv2d(3, 4, 3)
        self.unused = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.used(x)


class UnreachedAndGroupNorm(nn.Module):
    """A used conv, a block ``forward`` never calls (conv, BatchNorm, Linear), and a GroupNorm."""

    def __init__(self):
        super().__init__()
        self.used = nn.Conv2d(3, 4, 3)
        self.gn = nn.GroupNorm(2, 4)
        self.spare = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x):
        return self.gn(self.used(x))


def test_layer_norms_lists_unreached_and_unnormed_layers_with_a_reason():
    model = UnreachedAndGroupNorm()
    for p in (1, math.inf):
        table = layer_norms(model, (3, 8, 8), p, include_batchnorm=True)
        assert list(table.name) == ["used", "spare.0", "spare.1", "spare.3", "gn"]
        assert table.note[0] == "" and table.norm[0] == pytest.approx(conv2d_norm(model.used, (8, 8), p).item())
        for i in (1, 2, 3):
            assert math.isnan(table.norm[i]) and table.note[i] == NOT_REACHED and table.input_shape[i] is None
        assert math.isnan(table.norm[4]) and "GroupNorm" in table.note[4] and "not normed" in table.note[4]
    assert list(layer_norms(model, (3, 8, 8), 1).name) == ["used", "spare.0", "spare.3", "gn"]  # BatchNorm a view
    assert list(layer_norms(Unreached(), (3, 8, 8), 1).note) == ["", NOT_REACHED]


class StandardizedConv(nn.Conv2d):
    """A conv that standardises its weight in ``forward`` (as timm's StdConv2d): not the conv by its weight."""

    def forward(self, x):
        w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / self.weight.std((1, 2, 3), keepdim=True)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)


def test_a_conv_that_replaces_forward_is_listed_not_normed():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), StandardizedConv(4, 4, 3))
    table = layer_norms(model, (3, 8, 8), math.inf)
    assert list(table.name) == ["0", "1"] and table.note[0] == ""
    assert math.isnan(table.norm[1]) and "StandardizedConv replaces Conv2d.forward" in table.note[1]
    with pytest.raises(ValueError, match="replaces Conv2d.forward"):
        layer_input_shapes(model, (3, 8, 8))


class BilinearNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.bil = nn.Bilinear(3, 3, 2)

    def forward(self, x):
        return self.bil(x, x)


def test_layer_norms_table_and_errors():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    table = layer_norms(model, (3, 32, 32), math.inf, include_batchnorm=True)
    assert list(table.name) == ["0", "1", "3", "5"]
    assert list(table.kind) == ["Conv2d", "BatchNorm2d", "Conv2d", "Linear"]
    assert table.input_shape[2] == (8, 16, 16)
    assert table.norm[2] == pytest.approx(conv2d_norm(model[3], (16, 16), math.inf).item())
    assert table.norm[3] == pytest.approx(linear_norm(model[5], math.inf).item())
    with pytest.raises(ValueError, match="not reached"):  # the shapes alone still refuse an unreached conv
        layer_input_shapes(Unreached(), (3, 8, 8))
    with pytest.raises(ValueError, match="Bilinear"):
        layer_norms(BilinearNet(), (3,), 1)
    with pytest.raises(ValueError, match="input_shape"):
        layer_norms(model, 32, 1)
    mlp = layer_norms(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)), (2,), 1)
    assert list(mlp.input_shape) == [(2,), (4,)]
    assert model.training  # mode restored
