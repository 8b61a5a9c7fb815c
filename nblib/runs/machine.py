"""What machine computed a result, beyond the library versions: the CPU kernels torch dispatched to and
how torch was built.

A training run on the CPU does not repeat bit for bit across machines: the vectorised kernels of two
capabilities (``ATEN_CPU_CAPABILITY=avx512 | avx2 | default``, or two CPUs), two thread counts or two torch
builds sum in other orders, and the weights after a few SGD steps differ in their last bits and then more.
The accuracies of a smoke run are the same experiment, not the same numbers. Each run folder's
``versions.json`` and each experiment's metrics JSON record what computed them (``machine``).
"""
from __future__ import annotations

from functools import lru_cache

__all__ = ["machine", "torch_build"]

#: Fields of torch's build summary (``torch.__config__.show()``, line ``Build settings:``) that change numbers.
BUILD_KEYS = ("TORCH_VERSION", "COMMIT_SHA", "BLAS_INFO", "LAPACK_INFO", "USE_MKL", "USE_MKLDNN", "USE_OPENMP",
              "CUDA_VERSION")


@lru_cache(maxsize=1)
def torch_build() -> dict:
    """The :data:`BUILD_KEYS` of torch's build summary (an absent key is left out)."""
    import torch

    line = next((x for x in torch.__config__.show().splitlines() if "Build settings:" in x), "")
    pairs = (item.strip().split("=", 1) for item in line.split("Build settings:", 1)[-1].split(", "))
    found = {p[0]: p[1].strip() for p in pairs if len(p) == 2}
    return {k: found[k] for k in BUILD_KEYS if k in found}


def machine() -> dict:
    """``cpu_capability`` (``torch.backends.cpu.get_cpu_capability()``: the kernels in use, after any
    ``ATEN_CPU_CAPABILITY``), the requested ``ATEN_CPU_CAPABILITY`` (None if unset), torch's thread count and
    :func:`torch_build`."""
    import os

    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "aten_cpu_capability_env": os.environ.get("ATEN_CPU_CAPABILITY"),
            "torch_threads": torch.get_num_threads(), "torch_build": torch_build()}
