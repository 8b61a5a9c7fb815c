"""Notebook 01 end to end (Theorem 1): closed forms and exact methods against the dense operator.

``run(settings) -> Theorem1Result``: random small layers (:func:`random_conv_layers`) checked against their
dense operator matrix M (:func:`check_against_dense`: eq. 1 = largest absolute column sum, eq. 2 = largest
absolute row sum under Assumption 1, eq. 3 >= sigma_max(M)), and every Conv2d of the CIFAR models at its true
input size against the exact general method (:func:`model_conv_rows`), all in float64; the claims are decided by
:mod:`nblib.claims.theorem1`.  ``settings`` is the notebook's parameters (``globals()``) or the same names in a
dict.
"""
from __future__ import annotations

import contextlib
import math
import random
import warnings
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn as nn

from nblib import norms
from nblib.claims import theorem1 as judge
from nblib.claims.verdict import records
from nblib.models import build
from nblib.norms.layer_shapes import layer_input_shapes
from nblib.results import save_metrics, save_table


def random_weights(layer: nn.Module, generator: torch.Generator, kind: str) -> nn.Module:
    """Overwrite ``layer.weight`` (float64) in place and return ``layer``: ``"gauss"`` N(0, 1) entries,
    ``"sparse"`` the same with about 70% zeros, ``"ties"`` integers in [-2, 2] (many equal row / column sums)."""
    with torch.no_grad():
        w = torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64)
        if kind == "sparse":
            w = w * (torch.rand(w.shape, generator=generator, dtype=torch.float64) < 0.3)
        elif kind == "ties":
            w = torch.randint(-2, 3, w.shape, generator=generator).double()
        layer.weight.copy_(w)
    return layer


def random_conv_layers(n: int, seed: int = 0, max_hw: int = 9, max_channels: int = 4) -> list[tuple[nn.Conv2d, tuple]]:
    """``n`` random float64 Conv2d layers with an input size each: strides 1-3, paddings 0..k-1,
    rectangular kernels up to 5, dilation 1-2, groups 1-2, inputs as small as the layer allows (so many
    violate Assumption 1), Gaussian, sparse and integer (tied) kernels."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    layers = []
    while len(layers) < n:
        groups = rng.choice([1, 1, 2])
        k = (rng.randint(1, 5), rng.randint(1, 5))
        dil = rng.choice([(1, 1), (1, 1), (1, 1), (2, 1), (2, 2)])
        pad = (rng.randint(0, k[0] - 1), rng.randint(0, k[1] - 1))
        reach = [d * (kk - 1) + 1 for d, kk in zip(dil, k)]
        hw = tuple(rng.randint(max(1, r - 2 * p), max(max_hw, r)) for r, p in zip(reach, pad))
        conv = nn.Conv2d(groups * rng.randint(1, max_channels // groups or 1),
                         groups * rng.randint(1, max_channels // groups or 1), k,
                         stride=(rng.randint(1, 3), rng.randint(1, 3)), padding=pad, dilation=dil,
                         groups=groups, bias=False).double()
        kind = rng.choice(["gauss", "sparse", "ties"])
        layers.append((random_weights(conv, gen, kind), hw))
    return layers


def _rel(a: float, b: float) -> float:
    """Error relative to max(|b|, 1): relative for norms above 1, absolute below (some layers have norm 0)."""
    return abs(a - b) / max(abs(b), 1.0) if a != b else 0.0


def check_against_dense(conv: nn.Conv2d, hw) -> dict:
    """Every norm of one small layer next to the dense operator M: column sums (l1), row sums (l_inf),
    largest singular value (l2).  ``eq1``/``eq2`` are Theorem 1's closed forms applied regardless of
    Assumption 1 (to show where they break); ``l1``/``linf`` are what ``conv2d_norm`` returns.
    ``power_converged`` is False where power iteration stopped at ``max_iter`` (its RuntimeWarning is
    recorded here instead of shown: ``err_power`` measures the resulting gap to the SVD)."""
    with torch.no_grad():
        m = norms.operator_matrix(conv, hw)
        dense_l1 = m.abs().sum(0).max().item()
        dense_linf = m.abs().sum(1).max().item()
        sigma = torch.linalg.matrix_norm(m, 2).item()
        a1 = norms.assumption1_holds(conv, hw)
        k = conv.weight
        ho_wo = norms.output_size(conv, hw)
        span = (hw[0] + 2 * conv.padding[0] - conv.kernel_size[0], hw[1] + 2 * conv.padding[1] - conv.kernel_size[1])
        eq1 = norms.theorem1_l1_kernel(k, conv.groups, conv.kernel_size, conv.stride, conv.padding, hw).item() \
            if min(span) >= 0 else math.nan
        eq2 = k.abs().flatten(1).sum(1).max().item()
        with warnings.catch_warnings(record=True) as caught:  # measured below (err_power), not shown
            warnings.simplefilter("always", RuntimeWarning)
            power = norms.conv2d_norm(conv, hw, 2, tol=1e-12, max_iter=5000,
                                      generator=torch.Generator().manual_seed(0)).item()
        power_converged = not any(issubclass(w.category, RuntimeWarning) for w in caught)
        for w in caught:  # anything but the not-converged warning still reaches the reader
            if not issubclass(w.category, RuntimeWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        row = dict(
            d_in=conv.in_channels, d_out=conv.out_channels, kernel=conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups, input=tuple(hw),
            assumption1=a1, dense_l1=dense_l1, dense_linf=dense_linf, sigma=sigma,
            l1=norms.conv2d_norm(conv, hw, 1).item(), linf=norms.conv2d_norm(conv, hw, math.inf).item(),
            eq1=eq1, eq2=eq2, eq3=norms.eq3_bound(conv, hw).item(),
            power=power, power_converged=power_converged,
            gram=norms.conv2d_norm(conv, hw, 2, method="gram").item(), output=ho_wo,
        )
    row.update(err_l1=_rel(row["l1"], dense_l1), err_linf=_rel(row["linf"], dense_linf),
               err_eq1=_rel(eq1, dense_l1), err_eq2=_rel(eq2, dense_linf), err_power=_rel(row["power"], sigma),
               eq3_over_sigma=row["eq3"] / sigma if sigma > 0 else math.nan)
    return row


def check_model_layer(conv: nn.Conv2d, hw) -> dict:
    """One conv of a real model at its true input size: the norm ``conv2d_norm`` returns against the
    exact general method (conv / adjoint of |K| on a ones image), and Theorem 1's closed forms."""
    with torch.no_grad():
        general_l1 = norms.general_l1(conv, hw).item()
        general_linf = norms.general_linf(conv, hw).item()
        a1 = norms.assumption1_holds(conv, hw)
        eq2 = conv.weight.abs().flatten(1).sum(1).max().item()
        return dict(assumption1=a1, method=norms.l1_linf_method(conv, hw),
                    l1=norms.conv2d_norm(conv, hw, 1).item(), linf=norms.conv2d_norm(conv, hw, math.inf).item(),
                    general_l1=general_l1, general_linf=general_linf, eq2=eq2,
                    err_l1=_rel(norms.conv2d_norm(conv, hw, 1).item(), general_l1),
                    err_linf=_rel(norms.conv2d_norm(conv, hw, math.inf).item(), general_linf),
                    err_eq2=_rel(eq2, general_linf))


def model_conv_rows(names, device="cpu", input_shape=(3, 32, 32), seed: int = 0) -> pd.DataFrame:
    """:func:`check_model_layer` on every Conv2d of each model of ``nblib.models`` (float64, at the input size
    each conv sees for a ``input_shape`` image): one row per conv with ``model``, ``layer``, ``input``,
    ``kernel``, ``stride``, ``groups``, and ``convs_in_model``, the number of Conv2d modules of the model
    (a model with fewer rows than that had a conv skipped).  Each model's initial weights are drawn after
    ``torch.manual_seed(seed)``, so the rows are the same on every run."""
    rows = []
    for name in names:
        torch.manual_seed(seed)
        net = build(name).double().to(device)
        n_convs = sum(isinstance(m, nn.Conv2d) for m in net.modules())
        for layer, (module, shape) in layer_input_shapes(net, input_shape).items():
            if isinstance(module, nn.Conv2d):
                rows.append(dict(model=name, layer=layer, input=str(shape), kernel=str(module.kernel_size),
                                 stride=str(module.stride), groups=module.groups, convs_in_model=n_convs,
                                 **check_model_layer(module, shape[-2:])))
    return pd.DataFrame(rows)


def all_convs_checked(model_rows: pd.DataFrame) -> bool:
    """Every model of :func:`model_conv_rows` has one row per Conv2d module (no layer skipped)."""
    per_model = model_rows.groupby("model")
    return bool((per_model.size() == per_model.convs_in_model.first()).all())


def tap_matrix(kernel_size, stride, padding, input_size) -> tuple[torch.Tensor, torch.Tensor]:
    """For a 1-channel conv: ``T[r, c]`` = index (row-major) of the kernel tap that entry (r, c) of M holds,
    or -1; and ``C[r, c]`` = the stride residue class ``(k mod s1, t mod s2)`` of that tap (Lemma 1's
    relation ~), or -1.  Figure 1 of the paper made concrete."""
    k1, k2 = kernel_size
    conv = nn.Conv2d(1, 1, kernel_size, stride=stride, padding=padding, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.arange(1, k1 * k2 + 1, dtype=torch.float64).reshape(1, 1, k1, k2))
    m = norms.operator_matrix(conv, input_size).round().long() - 1
    taps = m.clamp_min(0)
    cls = (taps // k2 % stride[0]) * stride[1] + (taps % k2 % stride[1])
    return m, torch.where(m >= 0, cls, torch.full_like(cls, -1))


# --------------------------------------------------------------------------- notebook 01 end to end
#: The parameters of notebook 01 that :func:`run` reads.
SETTINGS = ("device", "n_random_layers", "max_input_size", "seed", "models", "tolerance")


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """``torch``'s default dtype set to ``dtype`` inside the block and restored after it (also on error)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@dataclass
class Theorem1Result:
    """Notebook 01's tables and verdicts (errors relative to max(|exact|, 1))."""

    random_layers: pd.DataFrame   # one row per random layer (check_against_dense)
    model_layers: pd.DataFrame    # one row per Conv2d of each model (model_conv_rows)
    all_convs_checked: bool       # every Conv2d of every model has a row (all_convs_checked)
    verdicts: list = field(default_factory=list)  # Theorem 1's claims (nblib.claims.theorem1)
    metrics: dict = field(default_factory=dict)   # outputs/<profile>/metrics/01_theorem1.json

    def random_summary(self) -> pd.DataFrame:
        """Largest error of every method, inside and outside Assumption 1."""
        return self.random_layers.groupby("assumption1")[["err_l1", "err_linf", "err_eq1", "err_eq2",
                                                          "err_power"]].max()

    def model_summary(self) -> pd.DataFrame:
        """Per model: convs checked, how many lie outside Assumption 1, largest l1 / l_inf error."""
        return self.model_layers.groupby("model").agg(
            convs=("layer", "size"), outside_assumption1=("assumption1", lambda s: int((~s).sum())),
            max_err_l1=("err_l1", "max"), max_err_linf=("err_linf", "max"))

    def save(self, output_dir) -> None:
        """Write the tables (``tables/01_random_layers``, ``tables/01_model_layers``) and the metrics JSON."""
        rows = self.random_layers
        save_table(rows.drop(columns=["kernel", "stride", "padding", "dilation", "input", "output"]).assign(
            kernel=rows.kernel.astype(str), stride=rows.stride.astype(str), input=rows.input.astype(str)),
            output_dir, "01_random_layers")
        save_table(self.model_layers.drop(columns="convs_in_model"), output_dir, "01_model_layers")
        save_metrics(output_dir, "01_theorem1", self.metrics)


def theorem1_metrics(random_rows: pd.DataFrame, model_rows: pd.DataFrame, tolerance: float) -> dict:
    """The numbers of notebook 01's metrics JSON (without the verdicts): layer counts, the largest errors of
    the exact methods and of the closed forms inside Assumption 1, how often the closed forms are wrong
    outside it, the looseness of eq. 3 (bound / sigma_max) and whether Gram iteration bounds sigma_max from
    above on every random layer."""
    inside, outside = random_rows[random_rows.assumption1], random_rows[~random_rows.assumption1]
    wrong_outside = (outside.err_eq1 > tolerance) | (outside.err_eq2 > tolerance)
    return dict(
        n_random_layers=len(random_rows), n_random_outside_assumption1=len(outside), n_model_convs=len(model_rows),
        n_model_convs_outside_assumption1=int((~model_rows.assumption1).sum()),
        max_err_exact_random=float(random_rows[["err_l1", "err_linf"]].max().max()),
        max_err_closed_form_inside=float(inside[["err_eq1", "err_eq2"]].max().max()),
        frac_closed_form_wrong_outside=float(wrong_outside.mean()),
        max_err_model_convs=float(model_rows[["err_l1", "err_linf"]].max().max()),
        max_err_power=float(random_rows.err_power.max()),
        eq3_over_sigma_median=float(random_rows.eq3_over_sigma.median()),
        eq3_over_sigma_max=float(random_rows.eq3_over_sigma.max()),
        gram_is_upper_bound=bool((random_rows.gram >= random_rows.sigma * (1 - 1e-9)).all()),
    )


def run(settings: dict) -> Theorem1Result:
    """Notebook 01 end to end, in float64 (torch's default dtype is float64 during the call, so the models'
    initial weights are drawn in float64, and restored after it)."""
    missing = [k for k in SETTINGS if k not in settings]
    if missing:
        raise KeyError(f"theorem1.run needs the notebook parameters {missing}")
    with default_dtype(torch.float64):
        layers = random_conv_layers(settings["n_random_layers"], seed=settings["seed"],
                                    max_hw=settings["max_input_size"])
        random_rows = pd.DataFrame([check_against_dense(c, hw) for c, hw in layers])
        model_rows = model_conv_rows(settings["models"], settings["device"], seed=settings["seed"])
    tolerance = settings["tolerance"]
    claims = [*judge.theorem1(random_rows, tolerance), judge.exact_model_norms(model_rows, tolerance)]
    metrics = theorem1_metrics(random_rows, model_rows, tolerance)
    metrics["verdicts"] = records(claims)
    return Theorem1Result(random_layers=random_rows, model_layers=model_rows,
                          all_convs_checked=all_convs_checked(model_rows), verdicts=claims, metrics=metrics)
