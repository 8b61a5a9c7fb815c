"""The per-epoch checkpoint of a training run (``nblib.training.train``): its file name, the global RNG states it
carries (python, numpy, torch, CUDA; as tensors and python scalars, loadable with ``weights_only=True``) and
reading it back with its config checked."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

__all__ = ["CHECKPOINT", "CheckpointError", "seed_everything", "rng_state", "set_rng_state", "load_checkpoint"]

#: File name of the per-epoch checkpoint inside a run folder.
CHECKPOINT = "checkpoint.pt"


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


def load_checkpoint(path: Path, cfg: dict, device: torch.device) -> Optional[dict]:
    """The checkpoint at ``path`` (tensors on ``device``), None when there is none; :class:`CheckpointError`
    when it cannot be read or was written for another config than ``cfg``."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any unreadable file is the same problem
        raise CheckpointError(f"cannot read {path} ({type(err).__name__}: {err}); delete it to restart the "
                              "run from scratch") from err
    if state.get("cfg") != cfg:
        raise CheckpointError(f"{path} was written for another config; use another run folder or delete it "
                              f"(checkpoint cfg: {state.get('cfg')})")
    return state
