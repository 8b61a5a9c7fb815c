"""One training run of the paper's experiments as a pure function of its config: ``run_one(cfg, run_dir)``.

Liang & Huang (AAAI 2021), section "Experiments": SGD with momentum 0.9, batch 128, 120 epochs, the learning
rate divided by 10 at epochs 75, 90 and 100; initial learning rate 0.01 for the norm-regularisation runs of
Table 2 (weight decay, singular value clipping, l1 / l_inf norm decay, evaluated with AutoAttack at
eps = 1/255) and 0.1 for the adversarial-training runs of Figure 2 (PGD-AT, ALP, TRADES, evaluated at
eps = 8/255).  :data:`DEFAULT_CFG` holds every number of a run; anything not given is filled from it.

Data path (``nblib.loader``, the same code on every device): the training and test splits are held as one
tensor each on the training device (uint8 for CIFAR-10); epoch ``e`` (0-based) draws its order, crop offsets
and flips from a ``torch.Generator`` seeded with ``nblib.loader.epoch_seed(seed, e) = seed * 2**16 + e``, and
crops, flips and converts each batch on the device.  The test set is evaluated in batches of
``nblib.loader.EVAL_BATCH``.

A run is deterministic given its config on the CPU: python, numpy and torch are seeded with ``seed``; the data
order and augmentation depend only on ``(seed, epoch)``; the attacks' random starts draw from the global torch
RNG, whose state (with numpy's, python's and CUDA's) is saved in the checkpoint after every epoch.  A run
killed at any point and started again with the same config and folder resumes from the last finished epoch
and ends with the same weights and metrics as an uninterrupted run (bitwise on the CPU; on a GPU only with
``cudnn_deterministic=True`` and ``amp="none"``, and even then some CUDA kernels are not deterministic).

Files written to ``run_dir``, each atomically (``nblib.results.write_atomic``): ``checkpoint.pt`` (after
every epoch), ``history.json`` (one record per epoch: loss, accuracies, learning rate, times and the exact
l_inf and l1 norms of every Conv2d / Linear layer -- the curves of the paper's appendix), ``metrics.json``
(final results; NaN / inf stored as the strings "NaN" / "Infinity", None meaning "not measured") and, while
AutoAttack runs, ``autoattack_state.json`` (lets an interrupted attack resume).  Off a terminal (a log
file, a batch job) one line per epoch goes to stderr instead of a progress bar.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nblib.adversarial import ADV_MODES, ADV_PRESETS, adversarial_loss
from nblib.attacks import AA_VERSIONS, attack_settings, autoattack_accuracy, local_lipschitz
from nblib.data import DATASETS, eval_subset, get_dataset
from nblib.loader import TrainBatches, device_tensors, epoch_seed, eval_batches, flips, subset_indices
from nblib.models import MODEL_NAMES, build
from nblib.norms import layer_norms
from nblib.regularizers import (AFTER_OPTIMIZER_STEP, BEFORE_OPTIMIZER_STEP, BETA_SCALINGS, KINDS,
                                build_regularizer, make_optimizer, optimizer_weight_decay)
from nblib.results import jsonable, write_atomic, write_json_atomic

__all__ = ["DEFAULT_CFG", "ATTACKS", "AMP_MODES", "CHECKPOINT", "IGNORED_UNLESS", "CheckpointError", "fill_cfg",
           "check_runnable", "run_settings", "scaled_milestones", "run_one"]

#: The hyper-parameters of one run; every key must be present after :func:`fill_cfg`.
DEFAULT_CFG = {
    # ---- model and data
    "model": "resnet18",          # nblib.models name: vgg11 | resnet18 | senet18 | regnetx_200mf | smallcnn
    "dataset": "cifar10",         # "cifar10" | "digits" (embedded offline stand-in, 3x32x32)
    "data_root": "data",          # folder holding cifar-10-batches-py (ignored by digits)
    "augment": True,              # random crop 32 pad 4 (+ horizontal flip on cifar10) on training images,
                                  # on the device per batch, drawn from (seed, epoch) (nblib.loader)
    "train_subset": None,         # int: train on this many training images (a seeded subset); None: all
    # ---- optimisation (the paper: SGD, momentum 0.9, batch 128, 120 epochs, lr /10 at 75, 90, 100)
    "epochs": 120,                # passes over the training set
    "batch_size": 128,            # images per SGD step
    "lr": 0.01,                   # initial learning rate (paper: 0.01 Table 2, 0.1 adversarial training)
    "momentum": 0.9,              # SGD momentum
    "milestones": [75 / 120, 90 / 120, 100 / 120],  # lr decay points as fractions of `epochs` (scaled
                                  # when a profile trains fewer epochs: round(fraction * epochs))
    "lr_decay": 0.1,              # lr multiplier at each milestone
    "weight_decay": 0.0,          # SGD weight decay outside the "wd" regulariser (must be 0 with "wd")
    # ---- norm regulariser (Table 2)
    "regularizer": "none",        # none | wd | svc | nd_l1 | nd_linf
    "reg_strength": 0.0,          # wd: weight decay; svc: clip value c (l2 norm); nd_*: beta. 0 for none
    "reg_gamma": 0.5,             # norm decay momentum gamma (Algorithm 1)
    "reg_clip_every": 100,        # svc: optimizer steps between two clippings
    "reg_beta_scaling": "per_layer",  # nd_*: "per_layer" beta/N (paper eq. 5) | "total" beta (authors' code)
    "reg_svc_linear": True,       # svc: also clip Linear layers (ours); False: convs only (Sedghi, authors)
    # ---- adversarial training (Figure 2)
    "adv_mode": "plain",          # plain | pgd | alp | trades (nblib.adversarial)
    "adv_preset": "standard",     # nblib.adversarial.ADV_PRESETS: "standard" (8/255, 2/255, 10 steps,
                                  # TRADES beta 6) | "authors" (0.031, 0.007, 10 steps, beta 1)
    # ---- run
    "seed": 0,                    # 0 <= seed < 2**16: seeds python, numpy, torch, data order, subsets, attacks
    "device": "cpu",              # "cpu" | "cuda" | "cuda:N"
    "cudnn_deterministic": False,  # cuda only: deterministic cuDNN kernels (reproducible, slower); when False
                                  # cudnn.benchmark picks the fastest kernels
    "amp": "none",                # "none": float32 throughout (the paper's setting) | "bf16" (cuda only):
                                  # training forward/backward, PGD steps included, under bfloat16 autocast;
                                  # weights, optimizer, norms, evaluation and AutoAttack stay float32
                                  # (its effect on accuracy is not measured in this package)
    "channels_last": False,       # model and batches in channels_last memory format (faster convs on GPUs)
    # ---- final evaluation
    "eval_eps": 1 / 255,          # AutoAttack / local Lipschitz l_inf radius (Table 2: 1/255, Fig. 2: 8/255)
    "n_eval": 1024,               # test points attacked (the authors: 1024); None: the whole test set
    "attack": "standard",         # AutoAttack version: standard | authors (APGD-CE + APGD-T) | none
    "attack_budget": 1.0,         # fraction of AutoAttack's iterations / queries: 1 = as published; < 1 only
                                  # rehearses the code path (robust accuracy then measures nothing)
    "local_lipschitz": False,     # also estimate local Lipschitz constants on the same points
    "extra_eval_eps": [],         # more AutoAttack l_inf radii on the same points (Table 2: 4/255, 8/255)
}

#: Values of ``cfg["attack"]``.
ATTACKS = (*AA_VERSIONS, "none")
#: Values of ``cfg["amp"]``.
AMP_MODES = ("none", "bf16")
#: File name of the per-epoch checkpoint inside a run folder.
CHECKPOINT = "checkpoint.pt"

#: Keys that cannot change a run unless the predicate on the filled config holds; :func:`fill_cfg` resets
#: them to their defaults otherwise, so that a setting without effect never changes the config hash (a
#: profile may set ``reg_clip_every`` for every run, only the SVC runs use it).
IGNORED_UNLESS = {
    "data_root": lambda c: c["dataset"] == "cifar10",
    "reg_gamma": lambda c: c["regularizer"] in ("nd_l1", "nd_linf"),
    "reg_clip_every": lambda c: c["regularizer"] == "svc",
    "reg_beta_scaling": lambda c: c["regularizer"] in ("nd_l1", "nd_linf"),
    "reg_svc_linear": lambda c: c["regularizer"] == "svc",
    "adv_preset": lambda c: c["adv_mode"] != "plain",
    "cudnn_deterministic": lambda c: c["device"] != "cpu",
    "lr_decay": lambda c: len(c["milestones"]) > 0,
    "eval_eps": lambda c: c["attack"] != "none" or c["local_lipschitz"],
    "attack_budget": lambda c: c["attack"] != "none",
    "n_eval": lambda c: c["attack"] != "none" or c["local_lipschitz"],
}
_NULLABLE = {"train_subset": int, "n_eval": int, "data_root": str}
_CHOICES = {"model": MODEL_NAMES, "dataset": DATASETS, "regularizer": KINDS, "adv_mode": ADV_MODES,
            "adv_preset": tuple(ADV_PRESETS), "attack": ATTACKS, "amp": AMP_MODES,
            "reg_beta_scaling": BETA_SCALINGS}


class CheckpointError(RuntimeError):
    """``checkpoint.pt`` of a run folder cannot be read or belongs to another config."""


# --------------------------------------------------------------------------- config
def _check_type(key, value):
    default = DEFAULT_CFG[key]
    if key in _NULLABLE:
        if value is None:
            return None
        want = _NULLABLE[key]
        if want is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"cfg[{key!r}] must be an int or None, got {value!r}")
        if want is str and not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"cfg[{key!r}] must be a path or None, got {value!r}")
        return str(value) if want is str else value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"cfg[{key!r}] must be True or False, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"cfg[{key!r}] must be an int, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"cfg[{key!r}] must be a finite number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"cfg[{key!r}] must be a string, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"cfg[{key!r}] must be a list, got {value!r}")
        return [float(v) for v in value]
    raise AssertionError(f"no type rule for {key!r}")  # pragma: no cover


def fill_cfg(cfg: Optional[dict] = None) -> dict:
    """``cfg`` with the missing keys taken from :data:`DEFAULT_CFG`, validated and normalised.

    Unknown keys raise ValueError naming them (a typo would otherwise be silently ignored); so do wrong
    types, unknown names (model, dataset, regulariser, mode, preset, attack), out-of-range numbers (seed and
    epochs within the data-order seeds of ``nblib.loader.epoch_seed``) and settings that would make a run a
    copy of another one (a ``reg_strength`` with regulariser "none"; "wd", "nd_l1", "nd_linf" with strength
    0; ``weight_decay`` next to "wd").  Numbers are normalised (``lr=1`` becomes ``1.0``, tuples become
    lists) and the keys of :data:`IGNORED_UNLESS` that the run does not use are reset to their defaults
    (``reg_gamma`` without norm decay, ``reg_clip_every`` without SVC, ``data_root`` with digits,
    ``adv_preset`` with plain training, ``eval_eps`` / ``n_eval`` / ``attack_budget`` without an evaluation
    that uses them, ...), so configs that train the same run are equal and hash equally.
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULT_CFG))
    if unknown:
        raise ValueError(f"unknown cfg keys {unknown}; known keys: {', '.join(DEFAULT_CFG)}")
    out = {}
    for key, default in DEFAULT_CFG.items():
        out[key] = _check_type(key, cfg.get(key, default))
    for key, choices in _CHOICES.items():
        if out[key] not in choices:
            raise ValueError(f"cfg[{key!r}] = {out[key]!r}; choose one of {', '.join(choices)}")
    for key in ("epochs", "batch_size", "reg_clip_every"):
        if out[key] < 1:
            raise ValueError(f"cfg[{key!r}] must be >= 1, got {out[key]}")
    for key in ("train_subset", "n_eval"):
        if out[key] is not None and out[key] < 1:
            raise ValueError(f"cfg[{key!r}] must be >= 1 or None, got {out[key]}")
    for key in ("lr", "eval_eps"):
        if out[key] <= 0:
            raise ValueError(f"cfg[{key!r}] must be > 0, got {out[key]}")
    if not 0 < out["attack_budget"] <= 1:
        raise ValueError(f"cfg['attack_budget'] must lie in (0, 1] (1 = standard AutoAttack), got "
                         f"{out['attack_budget']}")
    for key in ("momentum", "weight_decay", "reg_strength", "lr_decay"):
        if out[key] < 0:
            raise ValueError(f"cfg[{key!r}] must be >= 0, got {out[key]}")
    if any(e <= 0 for e in out["extra_eval_eps"]):
        raise ValueError(f"cfg['extra_eval_eps'] must hold radii > 0, got {out['extra_eval_eps']}")
    if out["extra_eval_eps"] and out["attack"] == "none":
        raise ValueError("cfg['extra_eval_eps'] needs an AutoAttack version in cfg['attack'], not 'none'")
    ms = out["milestones"]
    if any(not 0.0 < m <= 1.0 for m in ms) or ms != sorted(ms):
        raise ValueError(f"cfg['milestones'] must be increasing fractions of the epochs in (0, 1], got {ms}")
    kind = out["regularizer"]
    if kind == "none" and out["reg_strength"] != 0.0:
        raise ValueError("cfg['reg_strength'] has no effect with regularizer 'none'; leave it 0")
    if kind == "wd" and out["weight_decay"] != 0.0:
        raise ValueError("regularizer 'wd' sets the weight decay to reg_strength; leave cfg['weight_decay'] 0")
    if kind == "svc" and out["reg_strength"] <= 0:
        raise ValueError("regularizer 'svc' needs the clip value reg_strength > 0")
    if kind in ("wd", "nd_l1", "nd_linf") and out["reg_strength"] == 0.0:
        raise ValueError(f"regularizer {kind!r} with reg_strength 0 has no effect (a copy of regularizer "
                         "'none'); give a strength > 0 or use regularizer 'none'")
    if not 0.0 <= out["reg_gamma"] < 1.0:
        raise ValueError(f"cfg['reg_gamma'] must lie in [0, 1), got {out['reg_gamma']}")
    dev = out["device"]
    if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ValueError(f"cfg['device'] must be 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
    epoch_seed(out["seed"], out["epochs"] - 1)  # seed and epochs fit the data-order seeds (ValueError)
    for key, used in IGNORED_UNLESS.items():
        if not used(out):
            out[key] = _check_type(key, DEFAULT_CFG[key])
    return out


_SIZES: dict = {}


def check_runnable(cfg: dict) -> dict:
    """Everything about ``cfg`` that can be checked before training, checked: :func:`fill_cfg`, the
    device and ``amp`` on it, the data present (``get_dataset`` opens both splits), ``train_subset`` and
    ``n_eval`` within the training / test set sizes.  Returns ``{"n_train": ..., "n_test": ...}``; raises
    ValueError (or FileNotFoundError for missing data) naming the key and the fix."""
    cfg = fill_cfg(cfg)
    _autocast(cfg["amp"], _device(cfg["device"]))
    key = (cfg["dataset"], cfg["data_root"])
    if key not in _SIZES:
        _SIZES[key] = {split: len(get_dataset(cfg["dataset"], split, cfg["data_root"]))
                       for split in ("train", "test")}
    n_train, n_test = _SIZES[key]["train"], _SIZES[key]["test"]
    if cfg["train_subset"] is not None and cfg["train_subset"] > n_train:
        raise ValueError(f"cfg['train_subset'] = {cfg['train_subset']} exceeds the {n_train} training images of "
                         f"{cfg['dataset']}; lower it or set None")
    if (cfg["attack"] != "none" or cfg["local_lipschitz"]) and cfg["n_eval"] is not None \
            and cfg["n_eval"] > n_test:
        raise ValueError(f"cfg['n_eval'] = {cfg['n_eval']} exceeds the {n_test} test images of {cfg['dataset']}; "
                         "lower it or set None (the whole test set)")
    return {"n_train": n_train, "n_test": n_test}


def run_settings(cfg: dict) -> dict:
    """The resolved settings behind the names in ``cfg`` (what a result must record besides its config):
    the adversarial-training preset's values (``nblib.adversarial.ADV_PRESETS``; None for plain training)
    and the AutoAttack settings (``nblib.attacks.attack_settings``: attacks, iterations, targets, queries,
    budget; with the radius ``eps`` and the norm; None without an attack)."""
    cfg = fill_cfg(cfg)
    attack = None
    if cfg["attack"] != "none":
        attack = {**attack_settings(cfg["attack"], cfg["attack_budget"]), "eps": cfg["eval_eps"], "norm": "Linf"}
    return {"adv_preset": dict(ADV_PRESETS[cfg["adv_preset"]]) if cfg["adv_mode"] != "plain" else None,
            "attack": attack}


def scaled_milestones(fractions, epochs: int) -> list[int]:
    """The epochs (0-based indices of the first epoch at the decayed rate) of the lr decays:
    ``round(f * epochs)`` (halves up) for each fraction ``f``.  The paper's ``75/120, 90/120, 100/120``
    give ``[75, 90, 100]`` for 120 epochs and ``[6, 8, 8]`` for 10 (a repeated milestone decays twice)."""
    return [int(math.floor(f * epochs + 0.5)) for f in fractions]


# --------------------------------------------------------------------------- helpers
def _device(name: str) -> torch.device:
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"cfg['device'] = {name!r} but torch.cuda.is_available() is False; "
                         "set device='cpu' or run on a machine with a GPU")
    return dev


def _autocast(amp: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the training steps' autocast context: bfloat16 autocast for ``amp="bf16"`` (CUDA only:
    the CPU path stays float32 and exact), a no-op for ``"none"``."""
    if amp == "none":
        return contextlib.nullcontext
    if device.type != "cuda":
        raise ValueError(f"cfg['amp'] = {amp!r} is for CUDA devices; the CPU path stays float32: set amp='none'")
    return lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _rng_state() -> dict:
    """All global RNG states, as tensors / python scalars (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
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


def _datasets(cfg: dict, device: torch.device):
    """The test data set (for ``eval_subset``), the training batches and the test tensors on ``device``."""
    train_set = get_dataset(cfg["dataset"], "train", cfg["data_root"])
    test_set = get_dataset(cfg["dataset"], "test", cfg["data_root"])
    subset = subset_indices(len(train_set), cfg["train_subset"], cfg["seed"])
    batches = TrainBatches(*device_tensors(train_set, device, subset), cfg["batch_size"], seed=cfg["seed"],
                           augment=cfg["augment"], flip=flips(cfg["dataset"]), channels_last=cfg["channels_last"])
    return test_set, batches, device_tensors(test_set, device)


@torch.no_grad()
def _evaluate(model, test_tensors, channels_last: bool) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over the test tensors in eval mode, float32; the previous mode is
    restored."""
    was = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=test_tensors[0].device)
    correct = torch.zeros((), dtype=torch.int64, device=test_tensors[0].device)
    try:
        for x, y in eval_batches(*test_tensors, channels_last=channels_last):
            out = model(x)
            loss += F.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
    finally:
        model.train(was)
    n = test_tensors[1].numel()
    return loss.item() / n, correct.item() / n


def _norm_tables(model, input_shape) -> tuple[list[str], list[float], list[float]]:
    """Layer names and the exact l_inf and l1 operator norms (``nblib.norms.layer_norms``)."""
    linf = layer_norms(model, input_shape, math.inf)
    l1 = layer_norms(model, input_shape, 1)
    assert list(linf["name"]) == list(l1["name"])
    return list(linf["name"]), [float(v) for v in linf["norm"]], [float(v) for v in l1["norm"]]


class _CudnnFlags:
    def __init__(self, device: torch.device, deterministic: bool):
        self.active = device.type == "cuda"
        self.deterministic = deterministic

    def __enter__(self):
        if self.active:
            self.old = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
            torch.backends.cudnn.deterministic = self.deterministic
            torch.backends.cudnn.benchmark = not self.deterministic

    def __exit__(self, *exc):
        if self.active:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = self.old


def _load_checkpoint(path: Path, cfg: dict, device: torch.device) -> Optional[dict]:
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


# --------------------------------------------------------------------------- training
def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _check_finite(what: str, loss: float, epoch: int) -> None:
    """FloatingPointError (the run diverged) when ``loss`` is NaN or infinite."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"the {what} loss became {loss} in epoch {epoch + 1}; lower cfg['lr'] or the "
                                 "regulariser strength")


def _train_epoch(model, batches, optimizer, reg, cfg, device, epoch, global_step, step_callback, autocast):
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n, n_ce = 0, 0
    bar = tqdm(batches.epoch(epoch), total=len(batches), desc=f"epoch {epoch + 1}", leave=False, disable=None)
    for i, (x, y) in enumerate(bar):
        if step_callback is not None:
            step_callback(epoch, i)
        with autocast():
            out = adversarial_loss(cfg["adv_mode"], model, x, y, preset=cfg["adv_preset"], return_details=True)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if reg is not None and reg.hook == BEFORE_OPTIMIZER_STEP:
            reg.step()
        optimizer.step()
        global_step += 1
        if reg is not None and reg.hook == AFTER_OPTIMIZER_STEP:
            reg.step(global_step)
        loss_sum += out.loss.detach().double() * y.numel()
        correct += (out.logits.detach().argmax(1) == out.targets).sum()
        n += y.numel()
        n_ce += out.targets.numel()
    train_loss = loss_sum.item() / n
    if not math.isfinite(train_loss):
        raise FloatingPointError(f"the training loss became {train_loss} in epoch {epoch + 1}; lower cfg['lr'] "
                                 "or the regulariser strength")
    return train_loss, correct.item() / n_ce, global_step


def run_one(cfg: dict, run_dir, *, stop_after_epochs: Optional[int] = None,
            step_callback: Optional[Callable[[int, int], None]] = None) -> Optional[dict]:
    """Train and evaluate one model as described by ``cfg`` (see :data:`DEFAULT_CFG`) in ``run_dir``.

    Resumes from ``run_dir/checkpoint.pt`` when present (it must have been written for the same filled
    config, else :class:`CheckpointError`).  Per epoch (0-based ``e``): SGD steps on the loss of
    ``nblib.adversarial`` for ``adv_mode`` (the regulariser's ``step`` before or after ``optimizer.step``
    as its ``hook`` says), then clean test loss/accuracy, the exact l_inf and l1 norms of every Conv2d /
    Linear layer at its input size (Theorem 1, ``nblib.norms``), the lr step and the checkpoint.  At the
    end: clean accuracy on the whole test set, AutoAttack robust accuracy at ``eval_eps`` on
    ``eval_subset(test_set, n_eval, seed)`` (unless ``attack == "none"``), optional local Lipschitz
    estimates (l_inf -> l1, ``nblib.attacks.local_lipschitz``) on the same points, the final per-layer norms
    and their product.

    ``linf_norm_product`` is ``prod_i ||W_i||_inf`` over the Conv2d / Linear layers: the global l_inf
    Lipschitz bound of the composed linear maps (ReLU and max pooling are 1-Lipschitz); it leaves out
    BatchNorm and residual branches, so for the CIFAR models it is not a certified bound of the network.

    Test hooks (not part of the config): ``stop_after_epochs=k`` returns None after the checkpoint of
    epoch ``k`` (as if the run were killed there); ``step_callback(epoch, batch_index)`` is called before
    every SGD step (raise from it to simulate a kill mid-epoch).

    Everything :func:`check_runnable` checks is checked before the first epoch.  A NaN or infinite
    training or test loss raises FloatingPointError (``nblib.sweep`` records the run as diverged).

    Returns the metrics dict (also written to ``run_dir/metrics.json``, with ``status`` "done" and the
    resolved ``settings`` of :func:`run_settings`; the per-epoch records go to ``history.json``).
    """
    cfg = fill_cfg(cfg)
    check_runnable(cfg)  # data present, n_eval / train_subset in range: fail before any epoch
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = _device(cfg["device"])
    t_start = time.perf_counter()
    log_epochs = not _stderr_is_tty()
    with _CudnnFlags(device, cfg["cudnn_deterministic"]):
        autocast = _autocast(cfg["amp"], device)
        _seed_everything(cfg["seed"])
        test_set, batches, test_tensors = _datasets(cfg, device)
        input_shape = tuple(test_tensors[0].shape[1:])
        model = build(cfg["model"], num_classes=10).to(device)
        if cfg["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        reg = build_regularizer(cfg["regularizer"], model, input_shape, cfg["reg_strength"],
                                gamma=cfg["reg_gamma"], clip_every=cfg["reg_clip_every"],
                                beta_scaling=cfg["reg_beta_scaling"], svc_linear=cfg["reg_svc_linear"])
        wd = cfg["weight_decay"] + optimizer_weight_decay(cfg["regularizer"], cfg["reg_strength"])
        optimizer = make_optimizer(model, cfg["lr"], momentum=cfg["momentum"], weight_decay=wd)
        milestones = scaled_milestones(cfg["milestones"], cfg["epochs"])
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg["lr_decay"])

        start_epoch, global_step, history = 0, 0, []
        state = _load_checkpoint(run_dir / CHECKPOINT, cfg, device)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state["regularizer"] is not None:
                reg.load_state_dict(state["regularizer"])
            _set_rng_state(state["rng"])
            start_epoch, global_step, history = state["epoch"], state["global_step"], state["history"]
        resumed_from = start_epoch
        aa_state = run_dir / "autoattack_state.json"
        if start_epoch < cfg["epochs"] and aa_state.exists():
            aa_state.unlink()  # an attack of weights that are about to change

        desc = f"{cfg['model']} {cfg['adv_mode']} {cfg['regularizer']}"
        bar = tqdm(range(start_epoch, cfg["epochs"]), initial=start_epoch, total=cfg["epochs"], desc=desc,
                   disable=None)
        for epoch in bar:
            t0 = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            train_loss, train_acc, global_step = _train_epoch(
                model, batches, optimizer, reg, cfg, device, epoch, global_step, step_callback,
                autocast)
            train_seconds = time.perf_counter() - t0
            test_loss, test_acc = _evaluate(model, test_tensors, cfg["channels_last"])
            _check_finite("test", test_loss, epoch)
            names, linf, l1 = _norm_tables(model, input_shape)
            scheduler.step()
            history.append({
                "epoch": epoch + 1, "lr": lr, "global_step": global_step,
                "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
                "norms_linf": dict(zip(names, linf)), "norms_l1": dict(zip(names, l1)),
                "train_seconds": train_seconds, "epoch_seconds": time.perf_counter() - t0,
            })
            checkpoint = {
                "format": 1, "cfg": cfg, "epoch": epoch + 1, "global_step": global_step,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "regularizer": reg.state_dict() if hasattr(reg, "state_dict") else None,
                "rng": _rng_state(), "history": history,
            }
            write_atomic(run_dir / CHECKPOINT, lambda f: torch.save(checkpoint, f))
            write_json_atomic(run_dir / "history.json", history)
            bar.set_postfix(loss=f"{train_loss:.3f}", train=f"{train_acc:.3f}", test=f"{test_acc:.3f}")
            if log_epochs:  # a log file gets one line per epoch instead of a redrawn bar
                print(f"{desc}: epoch {epoch + 1}/{cfg['epochs']} loss {train_loss:.4f} train {train_acc:.4f} "
                      f"test {test_acc:.4f} ({history[-1]['epoch_seconds']:.1f} s)", file=sys.stderr, flush=True)
            if stop_after_epochs is not None and epoch + 1 >= stop_after_epochs and epoch + 1 < cfg["epochs"]:
                return None
        bar.close()

        # ---- final evaluation
        t_eval = time.perf_counter()
        test_loss, clean_acc = _evaluate(model, test_tensors, cfg["channels_last"])
        _check_finite("test", test_loss, len(history) - 1)
        names, linf, l1 = _norm_tables(model, input_shape)
        metrics = {
            "status": "done", "settings": run_settings(cfg),
            "clean_acc": clean_acc, "test_loss": test_loss,
            "train_loss": history[-1]["train_loss"], "train_acc": history[-1]["train_acc"],
            "final_lr": optimizer.param_groups[0]["lr"], "milestone_epochs": milestones,
            "epochs_trained": len(history), "global_steps": global_step,
            "n_train": batches.n, "n_test": len(test_set),
            "n_params": sum(p.numel() for p in model.parameters()),
            "layer_names": names, "norms_linf": linf, "norms_l1": l1,
            "linf_norm_product": float(np.prod(linf)),
            "log10_linf_norm_product": float(np.sum(np.log10(linf))),
            "robust_acc": None, "aa_clean_acc": None, "aa_seconds": None, "aa_warnings": [], "aa_resumed": None,
            "lip_mean": None, "lip_max": None, "grad_margin_mean": None, "grad_margin_max": None,
            "eval_eps": cfg["eval_eps"], "attack": cfg["attack"], "n_eval": None,
            "seeds": {"python": cfg["seed"], "numpy": cfg["seed"], "torch": cfg["seed"],
                      "data_order": f"{cfg['seed']} * 2**16 + epoch", "eval_subset": cfg["seed"]},
            "device": str(device), "resumed_from_epoch": resumed_from,
            "data_fixture": bool(getattr(test_set, "is_fixture", False)),
            "regularizer_notes": dict(getattr(reg, "notes", {})),
        }
        if cfg["attack"] != "none" or cfg["local_lipschitz"]:
            n_eval = len(test_set) if cfg["n_eval"] is None else cfg["n_eval"]
            x_eval, y_eval = eval_subset(test_set, n_eval, cfg["seed"])
            metrics["n_eval"] = n_eval
        if cfg["attack"] != "none":
            aa = autoattack_accuracy(model, x_eval, y_eval, eps=cfg["eval_eps"], version=cfg["attack"],
                                     seed=cfg["seed"], device=device, state_path=aa_state,
                                     budget=cfg["attack_budget"])
            metrics.update(robust_acc=aa["robust_acc"], aa_clean_acc=aa["clean_acc"], aa_seconds=aa["seconds"],
                           aa_warnings=aa["warnings"], aa_resumed=aa["resumed"])
        metrics["robust_acc_extra"] = {}  # {"eps": robust accuracy} at cfg["extra_eval_eps"], same points
        for eps in cfg["extra_eval_eps"]:
            extra = autoattack_accuracy(model, x_eval, y_eval, eps=eps, version=cfg["attack"], seed=cfg["seed"],
                                        device=device, budget=cfg["attack_budget"])
            metrics["robust_acc_extra"][f"{eps:.8g}"] = extra["robust_acc"]
        if cfg["local_lipschitz"]:
            lip = local_lipschitz(model, x_eval, eps=cfg["eval_eps"], y=y_eval,
                                  generator=torch.Generator().manual_seed(cfg["seed"]))
            metrics.update({k: lip[k] for k in ("lip_mean", "lip_max", "grad_margin_mean", "grad_margin_max")})
        epoch_seconds = [h["epoch_seconds"] for h in history]
        metrics.update(
            seconds_per_epoch=float(np.mean(epoch_seconds)),
            train_seconds_per_epoch=float(np.mean([h["train_seconds"] for h in history])),
            eval_seconds=time.perf_counter() - t_eval,
            total_seconds=float(np.sum(epoch_seconds)) + time.perf_counter() - t_eval,
            session_seconds=time.perf_counter() - t_start,
        )
    write_json_atomic(run_dir / "history.json", history)
    write_json_atomic(run_dir / "metrics.json", metrics)
    return jsonable(metrics, nonfinite="keep")
