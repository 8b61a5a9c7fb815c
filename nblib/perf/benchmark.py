"""Table 1 of the paper re-measured: seconds per 100 norm computations for six kernels.

Methods: our exact l1 (eq. 1) and l_inf (eq. 2); the exact l2 norm by power iteration on the true operator
(Virmaux & Scaman's approach, to a relative tolerance); all singular values by the Sedghi-Gupta-Long FFT;
the Gram-iteration upper bound; and the memory floor, one ``K.abs().sum()`` pass over the kernel, which no
method that reads every weight can beat.  Every kernel is stride 1, padding 0, on a 32x32 input.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import pandas as pd
import torch
import torch.nn as nn

from nblib.models import PAPER_MODELS
from nblib.norms import conv2d_norm
from nblib.training.run_config import DEFAULT_CFG
from nblib.perf.timing import time_calls

# (kernel height, kernel width, input channels, output channels), as printed in Table 1.
TABLE1_KERNELS = [(3, 3, 32, 32), (3, 3, 32, 128), (3, 3, 128, 256), (3, 3, 256, 512),
                  (5, 5, 256, 128), (5, 5, 512, 256)]
# Seconds per 100 runs published in Table 1 (GTX 1080 Ti GPU): VS = power iteration, SGL = Sedghi FFT.
PAPER_TABLE1 = {
    (3, 3, 32, 32): {"power": 26.5, "fft": 5.75, "l1": 0.00605, "linf": 0.00576},
    (3, 3, 32, 128): {"power": 27.4, "fft": 6.92, "l1": 0.00682, "linf": 0.00575},
    (3, 3, 128, 256): {"power": 29.0, "fft": 98.0, "l1": 0.00576, "linf": 0.00560},
    (3, 3, 256, 512): {"power": 59.4, "fft": 490.0, "l1": 0.0117, "linf": 0.00898},
    (5, 5, 256, 128): {"power": 59.7, "fft": 91.5, "l1": 0.0103, "linf": 0.00729},
    (5, 5, 512, 256): {"power": 255.0, "fft": 523.0, "l1": 0.0239, "linf": 0.0180},
}
METHODS = ("floor", "l1", "linf", "power", "fft", "gram")
INPUT_SIZE = (32, 32)


def make_conv(spec, device="cpu", seed: int = 0) -> nn.Conv2d:
    """A Conv2d with Table 1's kernel ``(k1, k2, d_in, d_out)``, stride 1, padding 0, seeded weights."""
    k1, k2, d_in, d_out = spec
    torch.manual_seed(seed)
    return nn.Conv2d(d_in, d_out, (k1, k2), bias=False).to(device)


def method_fn(conv: nn.Conv2d, method: str, tol: float = 1e-6, max_iter: int = 1000) -> Callable[[], torch.Tensor]:
    """A zero-argument callable that computes one norm of ``conv`` by ``method``."""
    if method == "floor":
        return lambda: conv.weight.abs().sum()
    if method == "l1":
        return lambda: conv2d_norm(conv, INPUT_SIZE, 1)
    if method == "linf":
        return lambda: conv2d_norm(conv, INPUT_SIZE, math.inf)
    if method == "power":
        return lambda: conv2d_norm(conv, INPUT_SIZE, 2, method="power", tol=tol, max_iter=max_iter)
    if method in ("fft", "gram"):
        return lambda: conv2d_norm(conv, INPUT_SIZE, 2, method=method)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def run_table1(device="cpu", runs: int = 100, budget_s: float = 10.0, method_budget_s: float = math.inf,
               methods=METHODS, kernels=TABLE1_KERNELS, tol: float = 1e-6, progress: bool = True) -> pd.DataFrame:
    """Measure every (kernel, method) pair; one row each.

    ``budget_s`` bounds the timed calls of one entry (a slow method is timed on fewer than ``runs``
    calls; ``n_runs`` says how many).  ``method_budget_s`` bounds all entries of one method: once spent,
    later kernels of that method are recorded as not measured (NaN, ``measured=False``), never
    extrapolated.  An entry a method refuses at that size (Gram iteration over its memory cap raises
    ValueError) is not measured either, with the method's message in ``note``.  Columns: kernel, method,
    sec_per_100 (median seconds per call x 100), n_runs, measured, value (the norm), paper_sec_per_100, note.
    """
    from tqdm.auto import tqdm

    spent = {m: 0.0 for m in methods}
    rows = []
    # method-major: the cheap methods (floor, l1, linf) are timed on every kernel before the expensive l2
    # methods run, whose large FFT / conv workloads otherwise leave the CPU's thread pools and caches in a
    # state that slows the next microsecond-scale calls (measured here: l1 up to 6x slower right after them)
    pairs = [(k, m) for m in methods for k in kernels]
    for spec, method in tqdm(pairs, desc="Table 1", disable=not progress):
        conv = make_conv(spec, device)
        paper = PAPER_TABLE1.get(tuple(spec), {}).get(method, math.nan)
        row = dict(kernel=str(tuple(spec)), method=method, sec_per_100=math.nan, n_runs=0, measured=False,
                   value=math.nan, paper_sec_per_100=paper, note="")
        if spent[method] < method_budget_s:
            t0 = time.perf_counter()
            fn = method_fn(conv, method, tol=tol)
            try:
                with torch.no_grad():
                    value = float(fn())
                    sec, n = time_calls(fn, runs, budget_s, device)
                row.update(sec_per_100=100 * sec, n_runs=n, measured=True, value=value)
            except ValueError as err:  # the method cannot run at this size
                row.update(note=str(err))
            spent[method] += time.perf_counter() - t0
        else:
            row.update(note="method time budget spent")
        rows.append(row)
    return pd.DataFrame(rows)


def speedups(table: pd.DataFrame) -> pd.DataFrame:
    """Wide table (kernel x method, seconds per 100 runs) with the ratios the targets are stated in:
    ours / floor (goal <= 3) and power / ours (goal >= 1000)."""
    wide = table.pivot(index="kernel", columns="method", values="sec_per_100")
    wide = wide.reindex([str(k) for k in TABLE1_KERNELS if str(k) in wide.index])
    out = wide.copy()
    for ours in ("l1", "linf"):
        if ours in wide and "floor" in wide:
            out[f"{ours}/floor"] = wide[ours] / wide["floor"]
        for slow in ("power", "fft", "gram"):
            if ours in wide and slow in wide:
                out[f"{slow}/{ours}"] = wide[slow] / wide[ours]
    return out


# --------------------------------------------------------------------------- norm decay cost
def norm_decay_cost(model_names=PAPER_MODELS, device="cpu", batch_size: int = DEFAULT_CFG["batch_size"],
                    p=math.inf, sgd_runs: int = 3, nd_runs: int = 20, n_train: int = 50_000,
                    seed: int = 0) -> pd.DataFrame:
    """Cost of one norm-decay step (Algorithm 1, lines 3-5: the exact l_p subgradient of every Conv2d /
    Linear layer at its input size, the momentum average and the gradient update) next to one plain SGD
    step (forward, cross-entropy, backward, ``optimizer.step``) on a random CIFAR-shaped batch.

    Per model: ``sgd_s`` and ``nd_s`` (median of ``sgd_runs`` / ``nd_runs`` timed calls after a warm-up,
    :func:`nblib.perf.timing.time_calls`),
    ``overhead = nd_s / sgd_s`` (what norm decay adds to a training step; the goal is <= 5%), the layer
    count ``n_layers``, and ``epoch_s = sgd_s * ceil(n_train / batch_size)``: seconds per epoch of plain
    training (CIFAR-10: 50,000 images) on this device, data loading excluded."""
    from nblib.models import build
    from nblib.training.regularizers import NormDecay, make_optimizer

    dev = torch.device(device)
    rows = []
    for name in model_names:
        torch.manual_seed(seed)
        model = build(name).to(dev).train()
        opt = make_optimizer(model, lr=1e-3)
        x = torch.rand(batch_size, 3, 32, 32, device=dev)
        y = torch.randint(0, 10, (batch_size,), device=dev)
        nd = NormDecay(model, (3, 32, 32), p=p, beta=1e-3)

        def sgd_step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        sgd_s, _ = time_calls(sgd_step, sgd_runs, device=dev)
        nd_s, _ = time_calls(nd.step, nd_runs, device=dev)
        rows.append(dict(model=name, device=str(dev), batch_size=batch_size, n_layers=nd.n_layers, sgd_s=sgd_s,
                         nd_s=nd_s, overhead=nd_s / sgd_s, epoch_s=sgd_s * math.ceil(n_train / batch_size)))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- torchvision models
TORCHVISION_MODELS = ("resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny")


def model_norm_cost(model_names=TORCHVISION_MODELS, device="cpu", image_size: int = 224, batch_size: int = 2,
                    runs: int = 20, sgd_runs: int = 2, seed: int = 0) -> pd.DataFrame:
    """Cost of exact norm tables and of norm decay on torchvision models (random weights, nothing downloaded).

    Per model (median seconds of ``runs`` calls after a warm-up, SGD: of ``sgd_runs``;
    :func:`nblib.perf.timing.time_calls`,
    norms without autograd): ``shapes_s`` the
    uncached shape pass of ``layer_input_shapes``; ``linf_s`` / ``l1_s`` a full ``layer_norms`` table (exact
    l_inf / l1 of every conv and Linear; shapes cached, as on every call after the first); ``floor_s`` one
    ``|K|.sum()`` pass over the same weights, the least any exact method that reads every weight costs;
    ``nd_s`` one ``NormDecay.step`` (l_inf); ``sgd_s`` one SGD step (forward, cross-entropy, backward,
    ``optimizer.step``) on a random batch of ``batch_size`` images; ratios ``linf/floor`` and ``nd/sgd``.
    """
    import torchvision

    from nblib.norms.layer_shapes import clear_shape_cache
    from nblib.norms import CONV_TYPES, layer_input_shapes, layer_norms
    from nblib.training.regularizers import NormDecay, make_optimizer

    dev = torch.device(device)
    shape = (3, image_size, image_size)
    rows = []
    for name in model_names:
        torch.manual_seed(seed)
        model = getattr(torchvision.models, name)(weights=None).to(dev).train()
        weights = [m.weight for m in model.modules() if isinstance(m, (*CONV_TYPES, nn.Linear))]

        def shapes():
            clear_shape_cache()
            layer_input_shapes(model, shape)

        with torch.no_grad():
            shapes_s, _ = time_calls(shapes, max(3, runs // 4), 30.0, dev)
            linf_s, _ = time_calls(lambda: layer_norms(model, shape, math.inf), runs, 30.0, dev)
            l1_s, _ = time_calls(lambda: layer_norms(model, shape, 1), runs, 30.0, dev)
            floor_s, _ = time_calls(lambda: sum(w.abs().sum() for w in weights), runs, 30.0, dev)
        nd = NormDecay(model, shape, math.inf, beta=1e-3)
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            nd_s, _ = time_calls(nd.step, runs, 30.0, dev)
        opt = make_optimizer(model, lr=1e-3)
        x = torch.rand(batch_size, *shape, device=dev)
        y = torch.randint(0, 1000, (batch_size,), device=dev)

        def sgd_step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        with torch.enable_grad():
            sgd_s, _ = time_calls(sgd_step, sgd_runs, device=dev)
        rows.append(dict(model=name, device=str(dev), n_layers=nd.n_layers, shapes_ms=1e3 * shapes_s,
                         linf_ms=1e3 * linf_s, l1_ms=1e3 * l1_s, floor_ms=1e3 * floor_s, nd_ms=1e3 * nd_s,
                         sgd_ms=1e3 * sgd_s, batch_size=batch_size, linf_over_floor=linf_s / floor_s,
                         nd_over_sgd=nd_s / sgd_s))
    return pd.DataFrame(rows)
