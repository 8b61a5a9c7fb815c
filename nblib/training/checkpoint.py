"""The per-epoch checkpoint of a training run (``nblib.training.train``): its file name, the global RNG states it
carries (python, numpy, torch, CUDA; as tensors and python scalars, loadable with ``weights_only=True``) and
reading it back with its config checked."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nblib.training.run_config import without_omitted_defaults

__all__ = ["CHECKPOINT", "CheckpointError", "seed_everything", "rng_state", "set_rng_state", "load_checkpoint",
           "restore_checkpoint"]

#: File name of the per-epoch checkpoint inside a run folder.
CHECKPOINT = "checkpoint.pt"
#: The checkpoint entries whose tensors :func:`load_checkpoint` moves to the training device (the optimiser's
#: state is moved by ``Optimizer.load_state_dict``, which keeps e.g. Adam's ``step`` where it belongs; the RNG
#: states stay on the CPU).
_ON_DEVICE = ("model", "regularizer")


class CheckpointError(RuntimeError):
    """``checkpoint.pt`` of a run folder cannot be read or belongs to another config."""


def seed_everything(seed: int) -> None:
    """python's, numpy's and torch's global RNGs (every CUDA device's too) seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict:
    """All global RNG states, as tensors / python scalars (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """The global RNG states of :func:`rng_state` restored (CUDA's on the devices present)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        n = min(len(state["cuda"]), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(state["cuda"][i], i)
    nps = state["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def _to_device(tree, device: torch.device):
    """``tree`` (dicts, lists, tuples of tensors and python values) with every tensor moved to ``device``."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: _to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_device(v, device) for v in tree)
    return tree


def _same_config(stored, cfg: dict) -> bool:
    """``stored`` (a checkpoint's config) is the filled ``cfg``, the keys of
    :data:`nblib.training.run_config.OMITTED_AT_DEFAULT` at their default counting as absent (a checkpoint written
    before ``compile`` existed resumes with ``compile="none"``)."""
    return isinstance(stored, dict) and without_omitted_defaults(stored) == without_omitted_defaults(cfg)


def load_checkpoint(path: Path, cfg: dict, device: torch.device) -> Optional[dict]:
    """The checkpoint at ``path``, None when there is none; :class:`CheckpointError` when it cannot be read or
    was written for another config than ``cfg``.

    The file is read onto the CPU; the model and regulariser states are then moved to ``device`` (the
    optimiser's are moved by its ``load_state_dict``), and the RNG states (``"rng"``) stay CPU ByteTensors,
    the only kind ``torch.set_rng_state`` and ``torch.cuda.set_rng_state`` accept (a77f116 loaded everything
    with ``map_location=device``, so a resume on CUDA raised ``TypeError: RNG state must be a torch.ByteTensor``)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any unreadable file is the same problem
        raise CheckpointError(f"cannot read {path} ({type(err).__name__}: {err}); delete it to restart the "
                              "run from scratch") from err
    if not isinstance(state, dict) or not _same_config(state.get("cfg"), cfg):
        raise CheckpointError(f"{path} was written for another config; use another run folder or delete it "
                              f"(checkpoint cfg: {state.get('cfg') if isinstance(state, dict) else None})")
    return {k: _to_device(v, device) if k in _ON_DEVICE else v for k, v in state.items()}



def restore_checkpoint(state: dict, path: Path, model: torch.nn.Module, optimizer, scheduler, regularizer) -> tuple:
    """``state`` (from :func:`load_checkpoint`) restored into the model, optimiser, lr schedule, regulariser and
    every global RNG; returns ``(epochs done, global step, history)``.  Any failure (a missing entry, a state of
    another shape or device, an RNG state torch refuses) is a :class:`CheckpointError`, so that the run cache
    (``nblib.runs.cache``) sets the folder aside and starts the run again instead of failing on every rerun."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["regularizer"] is not None:
            regularizer.load_state_dict(state["regularizer"])
        set_rng_state(state["rng"])
        return state["epoch"], state["global_step"], state["history"]
    except Exception as err:  # noqa: BLE001 -- any state that cannot be restored is the same problem
        raise CheckpointError(f"cannot restore {path} ({type(err).__name__}: {err}); delete it to restart the "
                              "run from scratch") from err
