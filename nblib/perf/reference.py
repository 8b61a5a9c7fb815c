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
and a gradient ``2F`` per point.  Seconds = FLOPs / the assumed sustained rate of :data:`ASSUMED_TFLOPS` at the
run's ``precision``.
"""
from __future__ import annotations

import functools

import torch

from nblib.models import build
from nblib.training.adversarial import ADV_PRESETS

__all__ = ["ASSUMED_TFLOPS", "ASSUMPTION", "forward_flops", "image_flops", "estimate"]

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


@functools.lru_cache(maxsize=None)
def forward_flops(model_name: str, input_shape: tuple = (3, 32, 32)) -> float:
    """FLOPs (``2 x`` multiply-adds) of the Conv / Linear layers of one forward pass of one image, counted
    with hooks on a shape-only pass of the model on the ``meta`` device (no arithmetic runs)."""
    model = build(model_name, num_classes=10).to("meta").eval()
    total = [0]

    def hook(m, inputs, out):
        if isinstance(m, torch.nn.Linear):
            total[0] += 2 * out.numel() * m.in_features
        else:  # a convolution: every output reads (in_channels / groups) x kernel taps
            taps = 1
            for k in m.kernel_size:
                taps *= k
            total[0] += 2 * out.numel() * (m.in_channels // m.groups) * taps

    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return float(total[0])


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
    AutoAttack forward / gradient) and ``basis`` (what it rests on).  ValueError for a device type without an
    assumed rate."""
    kind = torch.device(cfg["device"]).type
    if kind not in ASSUMED_TFLOPS:
        raise ValueError(f"no assumed rate for device {cfg['device']!r} (only {', '.join(ASSUMED_TFLOPS)}); "
                         "run --plan on that device to probe it")
    tflops = ASSUMED_TFLOPS[kind][cfg["precision"]]
    rate = tflops * 1e12
    f = forward_flops(cfg["model"])
    return {"step_s": cfg["batch_size"] * image_flops(cfg["model"], cfg["adv_mode"], cfg["adv_preset"]) / rate,
            "aa_forward_s": f / rate, "aa_grad_s": 2 * f / rate,
            "basis": f"estimate (FLOP count at an assumed {tflops:g} TFLOP/s in {cfg['precision']}, not measured)"}
