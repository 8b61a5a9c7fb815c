"""The compiled forward pass of a training run (``cfg["compile"]``): the same network, run by ``torch.compile``.

* ``"none"``       -- eager PyTorch (the default; what every cached run trained with).
* ``"default"``    -- ``torch.compile(model)``: TorchDynamo captures the forward (and AOTAutograd its backward)
  and inductor generates fused kernels (Triton on CUDA, C++ on the CPU).
* ``"cudagraphs"`` -- ``torch.compile(model, mode="reduce-overhead")``: inductor's kernels replayed from CUDA
  graphs (CUDA graph trees), which removes the per-kernel launch cost that dominates small CIFAR batches.
  CUDA only (:func:`check_compile`).

Only the forward passes of the training step go through the compiled module: the training loss and every
iteration of the PGD attack inside it (``nblib.training.adversarial``, which switches the module to eval mode and
back).  Everything that reads or writes parameters (optimiser, regularisers, checkpoints, norm tables,
evaluation, AutoAttack) uses the original module, whose ``state_dict`` keys carry no ``_orig_mod.`` prefix; the
compiled module holds the same ``Parameter`` objects, so in-place updates (``optimizer.step``, singular value
clipping's ``weight.copy_``, ``load_state_dict``) are seen by the next compiled call, CUDA graphs included
(parameters and buffers are static inputs of the graphs, read by address; no regulariser replaces a
``Parameter`` object).

What compiled graphs change and what they do not:

* **Train / eval mode.**  Dynamo guards on every module's ``training`` flag, so the BatchNorm batch-statistics
  graph (train) and the running-statistics graph (eval, the PGD attack) are compiled separately; running
  statistics are buffers updated in place by the train graph, as in eager mode.  A run compiles a few graphs
  (train / eval, with / without grad, the last smaller batch of an epoch: ``dynamic=False`` specialises on the
  batch size), each once.
* **Numbers.**  The same float32 operations in another order (fused kernels, reordered reductions): losses and
  weights agree with the eager step to float32 rounding, not bitwise (the CPU test states the tolerance).
* **CUDA graphs.**  A graph's outputs live in memory that its next replay overwrites: :func:`begin_step` marks
  each training step's start, and the training loop reads a step's logits (summed accuracy) before the next
  step's first forward.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["COMPILE_MODES", "check_compile", "compile_model", "begin_step"]

#: Values of ``cfg["compile"]``: eager, inductor, inductor + CUDA graphs.
COMPILE_MODES = ("none", "default", "cudagraphs")


def _check_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise ValueError(f"cfg['compile'] = {mode!r}; choose one of {', '.join(COMPILE_MODES)}")


def check_compile(mode: str, device_type: str) -> None:
    """ValueError naming the fix when ``mode`` is not one of :data:`COMPILE_MODES` or is ``"cudagraphs"`` on a
    device that is not CUDA (``device_type``: ``"cpu"``, ``"cuda"``, ...)."""
    _check_mode(mode)
    if mode == "cudagraphs" and device_type != "cuda":
        raise ValueError(f"cfg['compile'] = 'cudagraphs' captures CUDA graphs and needs device='cuda', not "
                         f"{device_type!r}; set compile='default' (inductor, runs on the CPU) or compile='none'")


def compile_model(model: nn.Module, mode: str) -> nn.Module:
    """The module that runs ``model``'s training forward passes: ``model`` itself for ``"none"``, else
    ``torch.compile(model, dynamic=False)`` (``mode="reduce-overhead"`` for ``"cudagraphs"``).  Compilation is
    lazy (at the first call); the result shares ``model``'s parameters and buffers."""
    _check_mode(mode)
    if mode == "none":
        return model
    return torch.compile(model, mode="reduce-overhead" if mode == "cudagraphs" else None, dynamic=False)


def begin_step(mode: str) -> None:
    """Marks the start of a training step for CUDA graph trees (``"cudagraphs"``): the outputs of the previous
    step's graphs may be overwritten from here on.  A no-op for the other modes."""
    if mode == "cudagraphs":
        torch.compiler.cudagraph_mark_step_begin()
