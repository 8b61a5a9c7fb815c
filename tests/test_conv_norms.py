"""Every convolution of torch.nn (Conv1d/2d/3d, ConvTranspose1d/2d/3d) against its dense operator.

The oracle is ``operator_matrix``: torch's own forward of the layer (no bias) applied to every basis input,
independent of ``nblib.norms.conv_geometry``; its column / row sums and SVD give the exact l1 / l_inf / l2 norms.
"""
import copy
import math
import resource
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nblib import norms
from nblib.norms.layer_shapes import clear_shape_cache
from nblib.experiments.theorem1 import random_weights
from nblib.norms import conv2d_norm, conv_norm, l2_interval, layer_input_shapes, layer_norms, linear_norm, \
    operator_matrix

pytestmark = pytest.mark.usefixtures("one_thread")

LAYER_TYPES = [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d]
MAX_SIZE = {1: 12, 2: 7, 3: 4}  # largest spatial size per dimension count (dense oracle stays small)
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


def fill(layer, draw_seed: int, kind: str):
    return random_weights(layer, torch.Generator().manual_seed(draw_seed), kind)


@st.composite
def any_conv(draw, types=tuple(LAYER_TYPES)):
    """A random float64 conv layer of any type and an input size it accepts."""
    cls = draw(st.sampled_from(types))
    n = int(cls.__name__[-2])
    transposed = "Transpose" in cls.__name__
    groups = draw(st.sampled_from([1, 1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3 if n < 3 else 2)) for _ in range(n))
    s = tuple(draw(st.integers(1, 3)) for _ in range(n))
    d = tuple(draw(st.integers(1, 2)) for _ in range(n))
    reach = [dd * (kk - 1) + 1 for dd, kk in zip(d, k)]
    if transposed:
        p = tuple(draw(st.integers(0, r - 1)) for r in reach)
        op = tuple(draw(st.integers(0, max(ss, dd) - 1)) for ss, dd in zip(s, d))
        size = tuple(draw(st.integers(1, MAX_SIZE[n] - 2)) for _ in range(n))
        assume(all((m - 1) * ss - 2 * pp + r + o >= 1 for m, ss, pp, r, o in zip(size, s, p, reach, op)))
        layer = cls(c_in, c_out, k, stride=s, padding=p, output_padding=op, dilation=d, groups=groups,
                    bias=draw(st.booleans()))
    else:
        pad = draw(st.sampled_from(["ints", "ints", "valid", "same"]))
        if pad == "same":
            s = (1,) * n  # torch allows 'same' for stride 1 only
            lo_hi = [(r - 1, r - 1) for r in reach]
        elif pad == "valid":
            lo_hi = [(0, 0)] * n
        else:
            pad = tuple(draw(st.integers(0, r - 1)) for r in reach)
            lo_hi = [(pp, pp) for pp in pad]
        size = tuple(draw(st.integers(max(1, r - lo - hi), MAX_SIZE[n])) for r, (lo, hi) in zip(reach, lo_hi))
        layer = cls(c_in, c_out, k, stride=s, padding=pad, dilation=d, groups=groups, bias=draw(st.booleans()))
    kind = draw(st.sampled_from(["gauss", "sparse", "ties"]))
    return fill(layer.double(), draw(st.integers(0, 2**31 - 1)), kind), size


def dense_norms(layer, size):
    m = operator_matrix(layer, size).numpy()
    return np.abs(m).sum(0).max(), np.abs(m).sum(1).max(), np.linalg.norm(m, 2)


@SETTINGS
@given(any_conv())
def test_l1_linf_exact_for_every_layer_type(layer):
    layer, size = layer
    l1, linf, _ = dense_norms(layer, size)
    assert conv_norm(layer, size, 1).item() == pytest.approx(l1, rel=1e-12, abs=1e-12)
    assert conv_norm(layer, size, math.inf).item() == pytest.approx(linf, rel=1e-12, abs=1e-12)
    for method in ("taps", "general"):  # the one-pass tap sets and the ones-image convolution
        assert conv_norm(layer, size, 1, method=method).item() == pytest.approx(l1, rel=1e-12, abs=1e-12)
        assert conv_norm(layer, size, math.inf, method=method).item() == pytest.approx(linf, rel=1e-12, abs=1e-12)
    for p in (1, math.inf):  # a subgradient g of a 1-homogeneous convex function has <g, K> = f(K)
        value = conv_norm(layer, size, p)
        (grad,) = torch.autograd.grad(value, layer.weight)
        assert (grad * layer.weight).sum().item() == pytest.approx(value.item(), rel=1e-10, abs=1e-12)
        check_subgradient(layer, size, p)


def check_subgradient(layer, size, p, n_probe: int = 5):
    """norm_subgradient is a subgradient of f = ||M(K)||_p: <g, K> = f(K), entries in {-1, 0, 1}, and
    <g, X> <= f(X) for every kernel X (the dual-norm condition), probed with random X on the dense operator."""
    value, sub = norms.norm_subgradient(layer, size, p)
    dense = dense_norms(layer, size)[0 if p == 1 else 1]
    assert value.item() == pytest.approx(dense, rel=1e-12, abs=1e-12)
    assert (sub * layer.weight).sum().item() == pytest.approx(dense, rel=1e-10, abs=1e-12)
    assert set(np.unique(sub.abs().numpy())) <= {0.0, 1.0}
    probe = copy.deepcopy(layer)
    gen = torch.Generator().manual_seed(0)
    for _ in range(n_probe):
        x = torch.randn(layer.weight.shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            probe.weight.copy_(x)
        f_x = dense_norms(probe, size)[0 if p == 1 else 1]
        assert (sub * x).sum().item() <= f_x * (1 + 1e-10) + 1e-12


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(any_conv())
def test_l2_power_interval_and_bounds_for_every_layer_type(layer):
    layer, size = layer
    sigma = dense_norms(layer, size)[2]
    tol = 1e-9
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning (not converged) fails the test: the block converges here
        power = conv_norm(layer, size, 2, tol=tol, max_iter=5000, generator=torch.Generator().manual_seed(0)).item()
        lower, upper = l2_interval(layer, size, rtol=1e-8, generator=torch.Generator().manual_seed(0))
    assert power <= sigma * (1 + 1e-12) + 1e-12
    assert power == pytest.approx(sigma, rel=tol, abs=1e-12)
    assert lower <= sigma * (1 + 1e-12) + 1e-12 and upper >= sigma * (1 - 1e-12)
    assert upper - lower <= 1e-8 * upper + 1e-12
    assert conv_norm(layer, size, 2, method="gram").item() >= sigma * (1 - 1e-9)
    assert conv_norm(layer, size, 2, method="bound").item() >= sigma * (1 - 1e-9)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(any_conv(types=(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)))
def test_transposed_layer_is_the_adjoint_of_a_convolution(layer):
    """With output_padding < stride the transposed layer's matrix is the transpose of the conv's with the
    same kernel on the transposed layer's output size."""
    layer, size = layer
    assume(all(o < s for o, s in zip(layer.output_padding, layer.stride)))
    n = len(size)
    conv = getattr(nn, f"Conv{n}d")(layer.out_channels, layer.in_channels, layer.kernel_size, stride=layer.stride,
                                    padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                                    bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
    out = norms.output_size(layer, size)
    torch.testing.assert_close(operator_matrix(layer, size), operator_matrix(conv, out).T)


def test_linear_subgradient():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4).double()
    for p in (1, math.inf):
        value, sub = norms.norm_subgradient(lin, None, p)
        assert value.item() == pytest.approx(torch.linalg.matrix_norm(lin.weight, p).item())
        (grad,) = torch.autograd.grad(linear_norm(lin, p), lin.weight)
        torch.testing.assert_close(sub, grad)


@pytest.mark.parametrize("eps", [1e-2, 1e-4, 1e-6])
def test_l2_tolerance_holds_with_close_top_singular_values(eps):
    """Block-diagonal operator built on purpose: group 2 is group 1 scaled by (1 - eps), so the top two
    singular values are sigma and (1 - eps) sigma; the issue's geometry (stride, padding, dilation)."""
    conv = nn.Conv2d(4, 4, (3, 4), stride=(1, 2), padding=(2, 3), dilation=2, groups=2, bias=False).double()
    fill(conv, 7, "gauss")
    with torch.no_grad():
        conv.weight[2:] = conv.weight[:2] * (1 - eps)
    hw = (11, 9)
    s = torch.linalg.svdvals(operator_matrix(conv, hw)).numpy()
    assert (s[0] - s[1]) / s[0] <= eps * (1 + 1e-9)  # a pair at least as close as built
    assert np.abs(s - (1 - eps) * s[0]).min() <= 1e-12 * s[0]
    for tol in (1e-6, 1e-10):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            value = conv2d_norm(conv, hw, 2, tol=tol, generator=torch.Generator().manual_seed(1)).item()
        assert s[0] * (1 - tol) <= value <= s[0] * (1 + 1e-12)
    for rtol in (1e-3, 1e-9):
        lower, upper = l2_interval(conv, hw, rtol=rtol)
        assert lower <= s[0] * (1 + 1e-12) and upper >= s[0] * (1 - 1e-12) and upper - lower <= rtol * upper
    with pytest.warns(RuntimeWarning, match="not certified"):  # stopped early: said so, still a lower bound
        value = conv2d_norm(conv, hw, 2, tol=1e-12, max_iter=2, block=1).item()
    assert value <= s[0] * (1 + 1e-12)


def test_l2_interval_without_dense_fallback_and_its_warning():
    """A 1x1 conv: the circulant embedding is the operator, so Gram iteration certifies it; a 3x3 conv on a
    small input keeps a gap, and the interval says so with a warning (still a valid interval)."""
    conv = fill(nn.Conv2d(4, 4, 1, groups=2, bias=False).double(), 3, "gauss")
    with torch.no_grad():
        conv.weight[2:] = conv.weight[:2] * (1 - 1e-5)
    sigma = torch.linalg.matrix_norm(operator_matrix(conv, (5, 5)), 2).item()
    lower, upper = l2_interval(conv, (5, 5), rtol=1e-4, dense_max=0)
    assert lower <= sigma <= upper and upper - lower <= 1e-4 * upper
    conv = fill(nn.Conv2d(3, 3, 3, padding=1, bias=False).double(), 4, "gauss")
    sigma = torch.linalg.matrix_norm(operator_matrix(conv, (4, 4)), 2).item()
    with pytest.warns(RuntimeWarning, match="could not certify"):
        lower, upper = l2_interval(conv, (4, 4), rtol=1e-6, dense_max=0)
    assert lower <= sigma * (1 + 1e-12) and upper >= sigma


def test_issue_example_layer_against_dense_svd():
    """nn.Conv2d(2, 2, (3, 4), stride=(1, 2), padding=(2, 3), dilation=2) on 11x9: the default power
    iteration (tol 1e-6) within its tolerance of the dense SVD on 15 random kernels, in float32 and float64."""
    worst = 0.0
    for seed in range(15):
        torch.manual_seed(seed)
        conv = nn.Conv2d(2, 2, (3, 4), stride=(1, 2), padding=(2, 3), dilation=2)
        sigma = torch.linalg.matrix_norm(operator_matrix(conv.double(), (11, 9)), 2).item()
        for dtype in (torch.float32, torch.float64):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                value = conv2d_norm(conv.to(dtype), (11, 9), 2, generator=torch.Generator().manual_seed(seed)).item()
            worst = max(worst, (sigma - value) / sigma)
            assert value <= sigma * (1 + 1e-6)
    assert worst <= 1e-6


# ------------------------------------------------------------------------------ rough edges
def test_same_and_valid_padding_in_layer_norms():
    model = nn.Sequential(nn.Conv2d(3, 4, 4, padding="same"), nn.ReLU(), nn.Conv2d(4, 4, 3, padding="same", dilation=2),
                          nn.Conv2d(4, 2, 3, padding="valid"), nn.Flatten(), nn.Linear(2 * 5 * 4, 3)).double()
    for p in (1, 2, math.inf):
        table = layer_norms(model, (3, 7, 6), p, tol=1e-9) if p == 2 else layer_norms(model, (3, 7, 6), p)
        assert list(table.name) == ["0", "2", "3", "5"]
        assert table.padding[0] == "same" and table.padding[2] == "valid"
        for i, name in enumerate(["0", "2", "3"]):
            dense = dense_norms(model[int(name)], table.input_shape[i][1:])
            assert table.norm[i] == pytest.approx(dense[{1: 0, math.inf: 1, 2: 2}[p]], rel=1e-8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_weights_at_every_p(dtype):
    """fp16/bf16: every p and l2 method works, computed in fp32 and returned in the weight's dtype, and agrees
    with the fp32 computation on the same (rounded) weights."""
    torch.manual_seed(0)
    layers = [(nn.Conv2d(3, 4, 3, padding=1), (8, 8)), (nn.Conv2d(3, 4, 3, stride=2), (3, 9)),
              (nn.Conv1d(2, 3, 3, dilation=2), (9,)), (nn.ConvTranspose2d(2, 3, 3, stride=2), (4, 4))]
    for layer, size in layers:
        low = layer.to(dtype)
        ref = type(layer)(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                          padding=layer.padding, dilation=layer.dilation, bias=False)
        with torch.no_grad():
            ref.weight.copy_(low.weight.float())
        for p, method in [(1, None), (math.inf, None), (2, "power"), (2, "gram"), (2, "bound")]:
            v = conv_norm(low, size, p, method=method)
            want = conv_norm(ref, size, p, method=method)
            assert v.dtype == dtype and v.dim() == 0
            assert v.float().item() == pytest.approx(want.item(), rel=1e-2)
        (grad,) = torch.autograd.grad(conv_norm(low, size, 1), low.weight)
        assert grad.dtype == dtype
        value, sub = norms.norm_subgradient(low, size, math.inf)
        assert value.dtype == sub.dtype == dtype
    conv = nn.Conv2d(3, 4, 3, padding=1).to(dtype)
    assert conv2d_norm(conv, (8, 8), 2, method="fft").dtype == dtype
    lin = nn.Linear(5, 4).to(dtype)
    for p in (1, 2, math.inf):
        v = linear_norm(lin, p)
        assert v.dtype == dtype
        assert v.float().item() == pytest.approx(torch.linalg.matrix_norm(lin.weight.float(), p).item(), rel=1e-2)


def test_operator_matrix_respects_its_cap_before_allocating():
    # a result over the cap raises at once (it would need 2.7e13 entries: allocating would crash)
    with pytest.raises(ValueError, match="over the cap"):
        operator_matrix(nn.Conv2d(64, 64, 3, padding=1), (224, 224))
    # the workspace is chunked to the cap: the same matrix with a small cap, and memory stays bounded
    conv = nn.Conv2d(2, 2, 15, padding=7, bias=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    small = operator_matrix(conv, (16, 16), max_entries=2**20)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 40  # unchunked, the 512 basis images' im2col buffer alone is 236 MB
    torch.testing.assert_close(small, operator_matrix(conv, (16, 16)))
    with pytest.raises(ValueError, match="workspace"):
        operator_matrix(conv, (16, 16), max_entries=2**18 + 10)


@pytest.mark.slow
def test_operator_matrix_issue_layer_within_cap():
    """The issue's example: nn.Conv2d(2, 2, 31, padding=15) on 32x32 once tried to allocate 32 GB."""
    conv = nn.Conv2d(2, 2, 31, padding=15, bias=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    m = operator_matrix(conv, (32, 32))
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 2 * 256 + 64
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close((m @ x.flatten()).reshape(1, 2, 32, 32), conv(x), atol=1e-4, rtol=1e-4)


def test_non_integer_input_sizes_are_rejected():
    conv = nn.Conv2d(3, 4, 3)
    for call in (lambda: conv2d_norm(conv, (3.99, 3.99), 1), lambda: conv2d_norm(conv, (3.99, 3.99), 2),
                 lambda: conv_norm(conv, (4.0, 4), math.inf), lambda: norms.output_size(conv, (3.5, 4)),
                 lambda: operator_matrix(conv, (4, 4.2)), lambda: l2_interval(conv, (3.99, 3.99))):
        with pytest.raises(ValueError, match="integers"):
            call()
    with pytest.raises(ValueError, match="input_shape"):
        layer_norms(nn.Sequential(conv), (3, 8.0, 8), 1)
    assert conv2d_norm(conv, (np.int64(4), 4), 1).item() == pytest.approx(conv2d_norm(conv, (4, 4), 1).item())


def test_padding_mode_errors_name_the_right_norm():
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    for method in ("power", "gram"):
        with pytest.raises(ValueError, match="l2 norm") as err:
            conv2d_norm(conv, (8, 8), 2, method=method)
        assert "l1/l_inf" not in str(err.value)
    with pytest.raises(ValueError, match="l2 norm"):
        l2_interval(conv, (8, 8))
    with pytest.raises(ValueError, match="exact l1/l_inf"):
        conv2d_norm(conv, (8, 8), 1)
    assert operator_matrix(conv, (4, 4)).shape == (64, 48)


def test_errors_name_the_layer_type():
    with pytest.raises(ValueError, match="nn.Conv2d"):
        conv2d_norm(nn.Conv1d(2, 2, 3), (8,), 1)
    with pytest.raises(ValueError, match="ConvTranspose1d/2d/3d"):
        conv_norm(nn.Linear(2, 2), (8,), 1)
    with pytest.raises(ValueError, match="3 integers"):
        conv_norm(nn.Conv3d(2, 2, 3), (8, 8), 1)
    with pytest.raises(ValueError, match="not positive"):
        conv_norm(nn.ConvTranspose1d(2, 2, 3, padding=2), (1,), 1)


# -------------------------------------------------------------------- shapes inside models
class Branchy(nn.Module):
    """Data-dependent control flow: cannot run on meta tensors, so the shape pass falls back to a real one."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.up = nn.ConvTranspose2d(4, 2, 3, stride=2, output_padding=1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if bool(y.sum() >= -1e30):
            y = self.up(y)
        return y


class OutputSize(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 2, 3, stride=2)

    def forward(self, x):
        return self.up(x, output_size=(2 * x.shape[-2] + 2, 2 * x.shape[-1] + 2))


def test_layer_input_shapes_restores_every_modules_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5),
                          nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU()), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 2))
    model.train()
    model[1].eval()
    model[3][1].eval()
    model[2].eval()
    modes = [m.training for m in model.modules()]
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    for fn in (lambda: layer_input_shapes(model, (3, 8, 8), include_batchnorm=True),
               lambda: layer_norms(model, (3, 8, 8), 1), lambda: norms_decay(model)):
        clear_shape_cache()
        fn()
        assert [m.training for m in model.modules()] == modes
    model.eval()
    model[3].train()
    modes = [m.training for m in model.modules()]
    layer_input_shapes(Branchy(), (3, 9, 9))  # the real-pass fallback restores modes too
    clear_shape_cache()
    layer_norms(model, (3, 8, 8), math.inf)
    assert [m.training for m in model.modules()] == modes
    for k, v in model.state_dict().items():  # no BatchNorm statistics updated by the shape pass
        torch.testing.assert_close(v, stats[k])


def norms_decay(model):
    from nblib.training.regularizers import NormDecay
    return NormDecay(model, (3, 8, 8), 1, 0.1)


def test_shape_pass_fallback_cache_and_output_size_error():
    model = Branchy()
    model.train()
    shapes = layer_input_shapes(model, (3, 9, 9), include_batchnorm=True)
    assert {k: v[1] for k, v in shapes.items()} == {"conv": (3, 9, 9), "bn": (4, 4, 4), "up": (4, 4, 4)}
    assert model.training and model.bn.training
    # the cache follows the structure: a replaced submodule / edited stride gives new shapes
    model.conv.stride = (1, 1)
    assert layer_input_shapes(model, (3, 9, 9))["up"][1] == (4, 7, 7)
    model.conv = nn.Conv2d(3, 4, 5)
    assert layer_input_shapes(model, (3, 9, 9))["up"][1] == (4, 5, 5)
    assert layer_input_shapes(model, (3, 11, 11))["up"][1] == (4, 7, 7)
    with pytest.raises(ValueError, match="output_size"):
        layer_input_shapes(OutputSize(), (2, 4, 4))


def test_layer_norms_and_norm_decay_on_every_layer_type():
    from nblib.training.regularizers import NormDecay
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3, stride=2, padding="valid"), nn.ReLU(), nn.Unflatten(2, (3, 3)),
                          nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
                          nn.Unflatten(1, (1, 4)), nn.Conv3d(1, 2, (2, 3, 3), padding=(0, 1, 1), dilation=(1, 2, 1)),
                          nn.Flatten(), nn.LazyLinear(3)).double()
    model(torch.zeros(1, 2, 19, dtype=torch.float64))
    for p in (1, math.inf):
        table = layer_norms(model, (2, 19), p)
        assert list(table.kind) == ["Conv1d", "ConvTranspose2d", "Conv3d", "Linear"]
        for i, idx in enumerate([0, 3, 5]):
            dense = dense_norms(model[idx], table.input_shape[i][1:])
            assert table.norm[i] == pytest.approx(dense[0 if p == 1 else 1], rel=1e-12)
        nd = NormDecay(model, (2, 19), p, beta=0.3, gamma=0.0)
        assert nd.n_layers == 4
        nd.step()
        for i, idx in enumerate([0, 3, 5, 7]):
            g = model[idx].weight.grad
            # <subgradient, K> = ||K||_p for the 1-homogeneous norm; beta/N scales it
            assert (g * model[idx].weight).sum().item() == pytest.approx(0.3 / 4 * table.norm[i], rel=1e-10)
            model[idx].weight.grad = None
    with pytest.raises(ValueError, match="Bilinear"):
        NormDecay(nn.ModuleDict({"b": nn.Bilinear(2, 2, 2), "l": nn.Linear(2, 2)}), (2,), 1, 0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_layer_type_on_cuda():
    """Same values on CUDA as on the CPU, results on the kernel's device; norm decay on a CUDA model."""
    from nblib.training.regularizers import NormDecay
    torch.manual_seed(0)
    layers = [(nn.Conv1d(2, 3, 3, stride=2), (9,)), (nn.Conv2d(3, 4, 3, padding="same"), (8, 7)),
              (nn.Conv3d(2, 2, 2, dilation=2), (4, 5, 5)), (nn.ConvTranspose2d(2, 3, 3, stride=2), (4, 4))]
    for layer, size in layers:
        cuda = copy.deepcopy(layer).cuda()
        for p, method in [(1, None), (math.inf, None), (2, "power"), (2, "gram")]:
            v = conv_norm(cuda, size, p, method=method)
            assert v.device.type == "cuda"
            assert v.item() == pytest.approx(conv_norm(layer, size, p, method=method).item(), rel=1e-4)
        lower, upper = l2_interval(cuda, size, rtol=1e-4)
        assert lower <= conv_norm(layer, size, 2, tol=1e-7).item() * (1 + 1e-5) <= upper * (1 + 1e-5)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 2)).cuda()
    nd = NormDecay(model, (3, 8, 8), math.inf, 0.1)
    nd.step()
    assert all(m.weight.grad.device.type == "cuda" for m in (model[0], model[3]))
