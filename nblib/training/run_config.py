"""The config of one training run: :data:`DEFAULT_CFG` (every number of a run), :func:`fill_cfg` (defaults,
types, ranges, settings without effect reset), :func:`check_runnable` (device and data checked before any
epoch), :func:`run_settings` (the presets behind the names) and :func:`scaled_milestones`.

Liang & Huang (AAAI 2021), section "Experiments": SGD with momentum 0.9, batch 128, 120 epochs, the learning
rate divided by 10 at epochs 75, 90 and 100; initial learning rate 0.01 for the norm-regularisation runs of
Table 2 (weight decay, singular value clipping, l1 / l_inf norm decay, evaluated with AutoAttack at
eps = 1/255) and 0.1 for the adversarial-training runs of Figure 2 (PGD-AT, ALP, TRADES, evaluated at
eps = 8/255).  :data:`DEFAULT_CFG` holds every number of a run; anything not given is filled from it.
``nblib.training.train.run_one`` trains one filled config.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Callable, Optional

import torch

from nblib.training.adversarial import ADV_PRESETS
from nblib.training.compiled import COMPILE_MODES, check_compile
from nblib.attacks.autoattack import AA_VERSIONS, attack_settings
from nblib.data import DATASETS, get_dataset
from nblib.data.loader import epoch_seed
from nblib.models import MODEL_NAMES
from nblib.training.regularizers import (BETA_SCALING, BETA_SCALINGS, CLIP_EVERY, GAMMA, LAYER_SET, LAYER_SETS,
                                        MOMENTUM, ND_UPDATE, ND_UPDATES, SVC_LINEAR)
from nblib.vocabulary import ADV_MODES, NORM_DECAY_P, REGULARIZERS

__all__ = ["DEFAULT_CFG", "ATTACKS", "PRECISIONS", "COMPILE_MODES", "IGNORED_UNLESS", "OMITTED_AT_DEFAULT", "fill_cfg",
           "canonical_cfg", "without_omitted_defaults", "check_runnable", "run_settings", "scaled_milestones",
           "torch_device", "autocast_factory", "backend_flags", "float32_flags"]

#: The hyper-parameters of one run; every key must be present after :func:`fill_cfg`.
DEFAULT_CFG = {
    # ---- model and data
    "model": "resnet18",          # nblib.models name: vgg11 | resnet18 | senet18 | regnetx_200mf | smallcnn
    "dataset": "cifar10",         # "cifar10" | "digits" (embedded offline stand-in, 3x32x32)
    "data_root": "data",          # folder holding cifar-10-batches-py (ignored by digits)
    "augment": True,              # random crop 32 pad 4 (+ horizontal flip on cifar10) on training images,
                                  # on the device per batch, drawn from (seed, epoch) (nblib.data.loader)
    "train_subset": 0,            # int: train on this many training images (a seeded subset); 0: all
    # ---- optimisation (the paper: SGD, momentum 0.9, batch 128, 120 epochs, lr /10 at 75, 90, 100)
    "epochs": 120,                # passes over the training set
    "batch_size": 128,            # images per SGD step
    "lr": 0.01,                   # initial learning rate (paper: 0.01 Table 2, 0.1 adversarial training)
    "momentum": MOMENTUM,         # SGD momentum
    "milestones": [75 / 120, 90 / 120, 100 / 120],  # lr decay points as fractions of `epochs` (scaled
                                  # when a profile trains fewer epochs: round(fraction * epochs))
    "lr_decay": 0.1,              # lr multiplier at each milestone
    "weight_decay": 0.0,          # SGD weight decay outside the "wd" regulariser (must be 0 with "wd")
    # ---- norm regulariser (Table 2)
    "regularizer": "none",        # none | wd | svc | nd_l1 | nd_linf
    "reg_strength": 0.0,          # wd: weight decay; svc: clip value c (l2 norm); nd_*: beta. 0 for none
    "reg_gamma": GAMMA,           # norm decay momentum gamma (Algorithm 1)
    "reg_clip_every": CLIP_EVERY,  # svc: optimizer steps between two clippings
    "reg_beta_scaling": BETA_SCALING,  # nd_*: "per_layer" beta/N (paper eq. 5) | "total" beta (authors' code)
    "reg_nd_update": ND_UPDATE,   # nd_*: "algorithm1" h <- gamma h + (1 - gamma) p | "authors" (their code:
                                  # h <- gamma h, then sign(w) assigned on the maximising row / column)
    "reg_nd_layers": LAYER_SET,   # nd_*: "every" conv / Linear layer | "authors" (their code skipped grouped
                                  # convs and convs on inputs smaller than the kernel)
    "reg_svc_linear": SVC_LINEAR,  # svc: also clip Linear layers (ours); False: convs only (Sedghi, authors)
    # ---- adversarial training (Figure 2)
    "adv_mode": "plain",          # plain | pgd | alp | trades (nblib.training.adversarial)
    "adv_preset": "standard",     # a name of nblib.training.adversarial.ADV_PRESETS: "standard" | "authors"
    # ---- run
    "seed": 0,                    # 0 <= seed < 2**16: seeds python, numpy, torch, data order, subsets, attacks
    "device": "cpu",              # "cpu" | "cuda" | "cuda:N"
    "cudnn_deterministic": False,  # cuda only: deterministic cuDNN kernels (reproducible, slower); when False
                                  # cudnn.benchmark picks the fastest kernels
    "precision": "fp32",          # "fp32": strict float32, TF32 off for cuDNN convolutions and cuBLAS matmuls
                                  # (the paper's setting: its GTX 1080 Ti has no TF32; torch's default runs
                                  # cuDNN fp32 convolutions as TF32) | "tf32" (cuda only): float32 storage,
                                  # TF32 convolutions and matmuls everywhere | "bf16" (cuda only): the training
                                  # steps (PGD included) under bfloat16 autocast, everything else strict
                                  # float32 (weights, optimizer, norms, evaluation, AutoAttack); the effect of
                                  # tf32 / bf16 on accuracy is not measured in this package
    "channels_last": False,       # model and batches in channels_last memory format (faster convs on GPUs)
    "compile": "none",            # the training forward passes (PGD's included): "none" eager | "default"
                                  # torch.compile (inductor) | "cudagraphs" (cuda only) torch.compile with
                                  # mode="reduce-overhead" (CUDA graphs); same math, float32 rounding differs
                                  # (nblib.training.compiled); evaluation and AutoAttack run eager
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
#: Values of ``cfg["precision"]`` (see :data:`DEFAULT_CFG`); the CPU runs strict float32 only.
PRECISIONS = ("fp32", "tf32", "bf16")

#: Keys that cannot change a run unless the predicate on the filled config holds; :func:`fill_cfg` resets
#: them to their defaults otherwise, so that a setting without effect never changes the config hash (a
#: profile may set ``reg_clip_every`` for every run, only the SVC runs use it).
IGNORED_UNLESS = {
    "data_root": lambda c: c["dataset"] == "cifar10",
    "reg_gamma": lambda c: c["regularizer"] in NORM_DECAY_P,
    "reg_clip_every": lambda c: c["regularizer"] == "svc",
    "reg_beta_scaling": lambda c: c["regularizer"] in NORM_DECAY_P,
    "reg_nd_update": lambda c: c["regularizer"] in NORM_DECAY_P,
    "reg_nd_layers": lambda c: c["regularizer"] in NORM_DECAY_P,
    "reg_svc_linear": lambda c: c["regularizer"] == "svc",
    "adv_preset": lambda c: c["adv_mode"] != "plain",
    "cudnn_deterministic": lambda c: c["device"] != "cpu",
    "lr_decay": lambda c: len(c["milestones"]) > 0,
    "eval_eps": lambda c: c["attack"] != "none" or c["local_lipschitz"],
    "attack_budget": lambda c: c["attack"] != "none",
    "n_eval": lambda c: c["attack"] != "none" or c["local_lipschitz"],
}
_NULLABLE = {"n_eval": int, "data_root": str}
#: Keys that once accepted None and no longer do, with the value to use instead.
_NONE_REPLACED = {"train_subset": "use 0 for all training images"}
_CHOICES = {"model": MODEL_NAMES, "dataset": DATASETS, "regularizer": REGULARIZERS, "adv_mode": ADV_MODES,
            "adv_preset": tuple(ADV_PRESETS), "attack": ATTACKS, "precision": PRECISIONS,
            "reg_beta_scaling": BETA_SCALINGS, "reg_nd_update": ND_UPDATES,
            "reg_nd_layers": LAYER_SETS, "compile": COMPILE_MODES}
#: Keys added after run folders were cached, left out of a config's canonical form (:func:`canonical_cfg`: the
#: run folder's hash, the checkpoint's config check) while they hold their default, so that the configs that do
#: not set them keep their folders and checkpoints.
OMITTED_AT_DEFAULT = ("compile",)


# --------------------------------------------------------------------------- types
def _check_nullable(key, value):
    if value is None:
        return None
    want = _NULLABLE[key]
    if want is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"cfg[{key!r}] must be an int or None, got {value!r}")
    if want is str and not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"cfg[{key!r}] must be a path or None, got {value!r}")
    return str(value) if want is str else value


def _check_type(key, value):
    """``value`` of ``cfg[key]`` checked against the type of its default and normalised (ints to floats
    where the default is a float, tuples to lists of floats); ValueError naming the key otherwise."""
    default = DEFAULT_CFG[key]
    if key in _NULLABLE:
        return _check_nullable(key, value)
    if value is None and key in _NONE_REPLACED:
        raise ValueError(f"cfg[{key!r}] = None is not accepted; {_NONE_REPLACED[key]}")
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


# --------------------------------------------------------------------------- values
def _check_ranges(out: dict) -> None:
    """Names among their choices and numbers within their ranges (ValueError naming the key)."""
    for key, choices in _CHOICES.items():
        if out[key] not in choices:
            raise ValueError(f"cfg[{key!r}] = {out[key]!r}; choose one of {', '.join(choices)}")
    for key in ("epochs", "batch_size", "reg_clip_every"):
        if out[key] < 1:
            raise ValueError(f"cfg[{key!r}] must be >= 1, got {out[key]}")
    if out["train_subset"] < 0:
        raise ValueError(f"cfg['train_subset'] must be >= 0 (0: all training images), got {out['train_subset']}")
    if out["n_eval"] is not None and out["n_eval"] < 1:
        raise ValueError(f"cfg['n_eval'] must be >= 1 or None, got {out['n_eval']}")
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


def _check_combinations(out: dict) -> None:
    """Settings that would make a run a copy of another one, the regulariser's gamma, the device name and
    the data-order seeds (ValueError naming the fix)."""
    kind = out["regularizer"]
    if kind == "none" and out["reg_strength"] != 0.0:
        raise ValueError("cfg['reg_strength'] has no effect with regularizer 'none'; leave it 0")
    if kind == "wd" and out["weight_decay"] != 0.0:
        raise ValueError("regularizer 'wd' sets the weight decay to reg_strength; leave cfg['weight_decay'] 0")
    if kind == "svc" and out["reg_strength"] <= 0:
        raise ValueError("regularizer 'svc' needs the clip value reg_strength > 0")
    if (kind == "wd" or kind in NORM_DECAY_P) and out["reg_strength"] == 0.0:
        raise ValueError(f"regularizer {kind!r} with reg_strength 0 has no effect (a copy of regularizer "
                         "'none'); give a strength > 0 or use regularizer 'none'")
    if not 0.0 <= out["reg_gamma"] < 1.0:
        raise ValueError(f"cfg['reg_gamma'] must lie in [0, 1), got {out['reg_gamma']}")
    dev = out["device"]
    if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ValueError(f"cfg['device'] must be 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
    check_compile(out["compile"], torch.device(dev).type)  # cudagraphs on the CPU: ValueError naming the fix
    epoch_seed(out["seed"], out["epochs"] - 1)  # seed and epochs fit the data-order seeds (ValueError)


def fill_cfg(cfg: Optional[dict] = None) -> dict:
    """``cfg`` with the missing keys taken from :data:`DEFAULT_CFG`, validated and normalised.

    Unknown keys raise ValueError naming them (a typo would otherwise be silently ignored); so do wrong
    types, unknown names (model, dataset, regulariser, mode, preset, attack), out-of-range numbers (seed and
    epochs within the data-order seeds of ``nblib.data.loader.epoch_seed``) and settings that would make a run a
    copy of another one (a ``reg_strength`` with regulariser "none"; "wd", "nd_l1", "nd_linf" with strength
    0; ``weight_decay`` next to "wd") and ``compile="cudagraphs"`` off CUDA.  Numbers are normalised (``lr=1``
    becomes ``1.0``, tuples become lists) and the keys of :data:`IGNORED_UNLESS` that the run does not use are
    reset to their defaults (``reg_gamma`` without norm decay, ``reg_clip_every`` without SVC, ``data_root`` with
    digits, ``adv_preset`` with plain training, ``eval_eps`` / ``n_eval`` / ``attack_budget`` without an evaluation
    that uses them, ...), so configs that train the same run are equal and hash equally.
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULT_CFG))
    if unknown:
        raise ValueError(f"unknown cfg keys {unknown}; known keys: {', '.join(DEFAULT_CFG)}")
    out = {}
    for key, default in DEFAULT_CFG.items():
        out[key] = _check_type(key, cfg.get(key, default))
    _check_ranges(out)
    _check_combinations(out)
    for key, used in IGNORED_UNLESS.items():
        if not used(out):
            out[key] = _check_type(key, DEFAULT_CFG[key])
    return out


def canonical_cfg(cfg: dict) -> dict:
    """``fill_cfg(cfg)`` without the keys of :data:`OMITTED_AT_DEFAULT` that hold their default: what a run's
    hash and its checkpoint's config check compare (``compile="none"`` is left out, so a config that does not
    set ``compile`` hashes as it did before the key existed; ``"default"`` and ``"cudagraphs"`` are kept)."""
    return without_omitted_defaults(fill_cfg(cfg))


def without_omitted_defaults(filled: dict) -> dict:
    """A copy of the filled config ``filled`` without the keys of :data:`OMITTED_AT_DEFAULT` that are absent or hold
    their default (the comparison :func:`canonical_cfg` and a checkpoint's config check make)."""
    return {k: v for k, v in filled.items() if not (k in OMITTED_AT_DEFAULT and v == DEFAULT_CFG[k])}


# --------------------------------------------------------------------------- device and data
def torch_device(name: str) -> torch.device:
    """``cfg["device"]`` as a ``torch.device``; ValueError when it names CUDA and none is available, or a CUDA
    ordinal this process does not see (``cuda:1`` with one visible GPU: "invalid device ordinal" later)."""
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"cfg['device'] = {name!r} but torch.cuda.is_available() is False; "
                         "set device='cpu' or run on a machine with a GPU")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"cfg['device'] = {name!r} but this process sees {torch.cuda.device_count()} GPU(s) "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); set device='cuda' "
                         "and choose the GPU with CUDA_VISIBLE_DEVICES or run_sweep(gpus=[...])")
    return dev


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the training steps' autocast context: bfloat16 autocast for ``precision="bf16"``, a no-op
    for ``"fp32"`` and ``"tf32"``.  ``"tf32"`` and ``"bf16"`` are for CUDA devices: on the CPU, ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"cfg['precision'] = {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and device.type != "cuda":
        raise ValueError(f"cfg['precision'] = {precision!r} is for CUDA devices; the CPU path is strict float32: "
                         "set precision='fp32'")
    if precision == "bf16":
        return lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def float32_flags() -> dict:
    """What float32 convolutions and matmuls currently run as on CUDA: ``{"cudnn_conv": ..., "cuda_matmul":
    ...}``, each ``"ieee"`` (strict float32), ``"tf32"`` or ``"none"`` (torch's default: TF32 for cuDNN
    convolutions, strict for matmuls)."""
    return {"cudnn_conv": torch.backends.cudnn.conv.fp32_precision,
            "cuda_matmul": torch.backends.cuda.matmul.fp32_precision}


@contextlib.contextmanager
def backend_flags(device: torch.device, precision: str, deterministic: bool):
    """Context for a run on ``device``: on CUDA, cuDNN convolutions and cuBLAS matmuls in float32 as
    ``precision`` says (``"tf32"``: TF32; ``"fp32"`` and ``"bf16"``: strict IEEE float32 outside autocast) and
    cuDNN deterministic (``deterministic``) or benchmarking for the fastest kernels; every flag restored on exit.
    A no-op on the CPU (always strict float32)."""
    if device.type != "cuda":
        yield
        return
    cudnn, conv, matmul = torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends.cuda.matmul
    old = (cudnn.deterministic, cudnn.benchmark, conv.fp32_precision, matmul.fp32_precision)
    mode = "tf32" if precision == "tf32" else "ieee"
    try:
        cudnn.deterministic, cudnn.benchmark = deterministic, not deterministic
        conv.fp32_precision = matmul.fp32_precision = mode
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark, conv.fp32_precision, matmul.fp32_precision = old


_SIZES: dict = {}


def check_runnable(cfg: dict) -> dict:
    """Everything about ``cfg`` that can be checked before training, checked: :func:`fill_cfg`, the
    device and ``precision`` on it, the data present (``get_dataset`` opens both splits), ``train_subset`` and
    ``n_eval`` within the training / test set sizes.  Returns ``{"n_train": ..., "n_test": ...}``; raises
    ValueError (or FileNotFoundError for missing data) naming the key and the fix."""
    cfg = fill_cfg(cfg)
    autocast_factory(cfg["precision"], torch_device(cfg["device"]))
    key = (cfg["dataset"], cfg["data_root"])
    if key not in _SIZES:
        _SIZES[key] = {split: len(get_dataset(cfg["dataset"], split, cfg["data_root"]))
                       for split in ("train", "test")}
    n_train, n_test = _SIZES[key]["train"], _SIZES[key]["test"]
    if cfg["train_subset"] > n_train:
        raise ValueError(f"cfg['train_subset'] = {cfg['train_subset']} exceeds the {n_train} training images of "
                         f"{cfg['dataset']}; lower it or set 0 (all training images)")
    if (cfg["attack"] != "none" or cfg["local_lipschitz"]) and cfg["n_eval"] is not None \
            and cfg["n_eval"] > n_test:
        raise ValueError(f"cfg['n_eval'] = {cfg['n_eval']} exceeds the {n_test} test images of {cfg['dataset']}; "
                         "lower it or set None (the whole test set)")
    return {"n_train": n_train, "n_test": n_test}


def run_settings(cfg: dict) -> dict:
    """The resolved settings behind the names in ``cfg`` (what a result must record besides its config):
    the adversarial-training preset's values (``nblib.training.adversarial.ADV_PRESETS``; None for plain training)
    and the AutoAttack settings (``nblib.attacks.autoattack.attack_settings``: attacks, iterations, targets, queries,
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
