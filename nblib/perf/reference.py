"""Rates of a device that is not on this machine: an estimate from a FLOP count, never a measurement.

``reproduce --plan`` projects a profile's runs from cached epoch times, else from probes on the device, and
when the profile's device is not here (the paper profile's ``cuda`` on a machine without a GPU) from this
model.  **No GPU rate of this code has been measured yet**; every number here is an assumption, labelled as
such wherever it is printed.

The model: ``F``, the forward FLOPs per image of the Conv / Linear layers of a model (``2 x`` multiply-adds,
counted by a shape-only pass on the ``meta`` device; BatchNorm, activations, pooling and the data path are left
out), and the usual rule that a backward pass costs twice a forward one (weights and input) or once (input
only).  So per training image: a plain SGD step ``3F``; one PGD iteration ``2F`` (forward + gradient w.r.t. the
input); PGD-AT ``S 2F + 3F`` with ``S`` PGD steps of the adversarial preset; ALP ``S 2F + 6F`` (clean and
adversarial batch); TRADES ``F + S 2F + 6F`` (one more clean forward for ``p(x)``).  AutoAttack: a forward ``F``
and a gradient ``2F`` per point, in float32 (the test pass and AutoAttack run without autocast: a ``bf16`` run
evaluates at the ``fp32`` rate).  Seconds = FLOPs / the assumed sustained rate of :data:`ASSUMED_TFLOPS`.

The per-run terms of :mod:`nblib.perf.cost` besides the steps: an SVC clip (batched Newton-Schulz, strict fp32
matmuls) costs ``8 B (4 N n^2 + 202 n^3)`` FLOPs per conv (``B`` frequency matrices of ``N x n`` complex entries:
``h (w // 2 + 1)`` per group of a real kernel on an ``h x w`` input, one for a 1x1 kernel;
``n <= N``: two Gram products and two output products of ``N n^2`` complex multiply-adds, 40 sign iterations of
two and 40 inverse-square-root iterations of three ``n^3`` products, two more for ``H``; a complex multiply-add is
8 real FLOPs); norm decay's step and the per-epoch norms are launch-bound on a GPU (:data:`ASSUMED_LAUNCHES`
kernels per layer at :data:`ASSUMED_LAUNCH_S` each); a checkpoint writes the weights three times over (weights,
SGD momentum, norm decay's average) at :data:`ASSUMED_WRITE_BPS`.
"""
from __future__ import annotations

import functools
import math

import torch

from nblib.models import build
from nblib.training.adversarial import ADV_PRESETS

__all__ = ["ASSUMED_TFLOPS", "ASSUMED_LAUNCH_S", "ASSUMED_LAUNCHES", "ASSUMED_WRITE_BPS", "ASSUMPTION",
           "conv_shapes", "forward_flops", "image_flops", "clip_flops", "estimate"]

#: Assumed sustained training throughput (TFLOP/s) per device type and run ``precision`` (``cfg["precision"]``)
#: for device types that have no measurement here.
ASSUMED_TFLOPS = {"cuda": {"fp32": 15.0, "tf32": 30.0, "bf16": 45.0}}
#: What :data:`ASSUMED_TFLOPS` stands for and where its numbers come from.
ASSUMPTION = {
    "cuda": ("assumed sustained rates on one NVIDIA H200 for small CIFAR models at batch 128, NCHW, one run at a "
             "time: 15 TFLOP/s in strict fp32 (about 22% of its 67 TFLOP/s fp32 peak), 30 in tf32 (about 6% of "
             "494 dense TF32 tensor-core TFLOP/s), 45 in bf16 (about 5% of 989 dense bf16), peaks from NVIDIA's "
             "datasheet; guesses: no GPU rate of this code has been measured"),
}
#: Assumed seconds of one CUDA kernel launch and kernels per layer of a norm-decay step (subgradient, momentum,
#: update) and of one exact norm (per-row / per-column sums and their maximum); assumed bytes per second of a
#: checkpoint write.  Guesses, like :data:`ASSUMED_TFLOPS`.
ASSUMED_LAUNCH_S = 5e-6
ASSUMED_LAUNCHES = {"norm_decay": 10, "norm": 6}
ASSUMED_WRITE_BPS = 1e9


@functools.lru_cache(maxsize=None)
def conv_shapes(model_name: str, input_shape: tuple = (3, 32, 32)) -> tuple:
    """One ``(kind, in_channels, out_channels, groups, taps, input_hw, output_numel)`` per Conv / Linear layer call
    of one forward pass of one image (``kind`` "conv" or "linear"; ``input_hw`` the input's spatial size),
    recorded with hooks on a shape-only pass of the model on the ``meta`` device (no arithmetic runs)."""
    model = build(model_name, num_classes=10).to("meta").eval()
    found = []

    def hook(m, inputs, out):
        if isinstance(m, torch.nn.Linear):
            found.append(("linear", m.in_features, m.out_features, 1, 1, (), out.numel()))
        else:
            taps = 1
            for k in m.kernel_size:
                taps *= k
            found.append(("conv", m.in_channels, m.out_channels, m.groups, taps, tuple(inputs[0].shape[2:]),
                          out.numel()))

    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return tuple(found)


def forward_flops(model_name: str, input_shape: tuple = (3, 32, 32)) -> float:
    """FLOPs (``2 x`` multiply-adds) of the Conv / Linear layers of one forward pass of one image
    (:func:`conv_shapes`): a Linear layer ``in x out``, a convolution ``(in / groups) x taps`` per output."""
    return float(sum(2 * numel * (cin if kind == "linear" else (cin // groups) * taps)
                     for kind, cin, _, groups, taps, _, numel in conv_shapes(model_name, input_shape)))


def clip_flops(model_name: str, input_shape: tuple = (3, 32, 32)) -> float:
    """FLOPs of one SVC clip of every conv by batched Newton-Schulz (the module docstring's count; Linear
    layers, clipped only with ``reg_svc_linear``, are left out)."""
    total = 0
    for kind, cin, cout, groups, taps, hw, _ in conv_shapes(model_name, input_shape):
        if kind == "conv":  # rfft: h x (w // 2 + 1) distinct frequency matrices per group; one for a 1x1 kernel
            b = groups if taps == 1 else groups * math.prod(hw[:-1]) * (hw[-1] // 2 + 1)
            n, big = sorted((cin // groups, cout // groups))
            total += 8 * b * (4 * big * n * n + 202 * n ** 3)
    return float(total)


def image_flops(model_name: str, mode: str, preset: str = "standard") -> float:
    """FLOPs per training image of one SGD step of ``mode`` (see the module docstring for the rule)."""
    f, s = forward_flops(model_name), ADV_PRESETS[preset]["steps"]
    per_mode = {"plain": 3 * f, "pgd": s * 2 * f + 3 * f, "alp": s * 2 * f + 6 * f,
                "trades": f + s * 2 * f + 6 * f}
    if mode not in per_mode:
        raise ValueError(f"unknown training mode {mode!r}; known: {', '.join(per_mode)}")
    return per_mode[mode]


def estimate(cfg: dict) -> dict:
    """What ``nblib.pipeline.plan`` would probe on ``cfg["device"]``, estimated instead: ``step_s`` (seconds of
    one SGD step at ``cfg["batch_size"]``), ``aa_forward_s`` / ``aa_grad_s`` (seconds per image of an
    AutoAttack forward / gradient), ``eval_ips``, ``nd_s``, ``clip_s``, ``norms_s``, ``ckpt_s``
    (:data:`nblib.perf.cost.RATE_KEYS`) and ``basis`` (what it rests on).  ValueError for a device type without an
    assumed rate."""
    kind = torch.device(cfg["device"]).type
    if kind not in ASSUMED_TFLOPS:
        raise ValueError(f"no assumed rate for device {cfg['device']!r} (only {', '.join(ASSUMED_TFLOPS)}); "
                         "run --plan on that device to probe it")
    tflops = ASSUMED_TFLOPS[kind][cfg["precision"]]
    rate = tflops * 1e12
    eval_rate = ASSUMED_TFLOPS[kind]["fp32" if cfg["precision"] == "bf16" else cfg["precision"]] * 1e12
    f = forward_flops(cfg["model"])
    shapes = conv_shapes(cfg["model"])
    weights = sum(cin // groups * cout * taps for _, cin, cout, groups, taps, _, _ in shapes)
    return {"step_s": cfg["batch_size"] * image_flops(cfg["model"], cfg["adv_mode"], cfg["adv_preset"]) / rate,
            "aa_forward_s": f / eval_rate, "aa_grad_s": 2 * f / eval_rate, "eval_ips": eval_rate / f,
            "nd_s": len(shapes) * ASSUMED_LAUNCHES["norm_decay"] * ASSUMED_LAUNCH_S,
            "clip_s": clip_flops(cfg["model"]) / (ASSUMED_TFLOPS[kind]["fp32"] * 1e12),
            "norms_s": 2 * len(shapes) * ASSUMED_LAUNCHES["norm"] * ASSUMED_LAUNCH_S,
            "ckpt_s": 3 * 4 * weights / ASSUMED_WRITE_BPS,
            "basis": f"estimate (FLOP count at an assumed {tflops:g} TFLOP/s in {cfg['precision']}, not measured)"}
