"""One training run of the paper's experiments as a pure function of its config: ``run_one(cfg, run_dir)``.

The config (every number of a run, its defaults and checks) is ``nblib.training.run_config``: :func:`run_one` fills it
with ``fill_cfg`` and checks it with ``check_runnable`` before the first epoch.  ``run_one`` is four steps:
build the run (seeds, data, model, regulariser, optimiser, lr schedule) and resume it from its checkpoint,
train the remaining epochs (one checkpoint each, ``nblib.training.checkpoint``), evaluate the final model (clean
accuracy, norms, AutoAttack, local Lipschitz), write the metrics.

Data path (``nblib.data.loader``, the same code on every device): the training and test splits are held as one
tensor each on the training device (uint8 for CIFAR-10); epoch ``e`` (0-based) draws its order, crop offsets
and flips from a ``torch.Generator`` seeded with ``nblib.data.loader.epoch_seed(seed, e) = seed * 2**16 + e``, and
crops, flips and converts each batch on the device.  The test set is evaluated in batches of
``nblib.data.loader.EVAL_BATCH``.

The training forward passes (the loss and the PGD attack of adversarial training) may run compiled
(``cfg["compile"]``: ``nblib.training.compiled``); the optimiser, regulariser, checkpoints, norms, evaluation and
AutoAttack use the eager module, so a compiled run's checkpoint holds the eager module's ``state_dict`` keys.

A run is deterministic given its config on the CPU: python, numpy and torch are seeded with ``seed``; the data
order and augmentation depend only on ``(seed, epoch)``; the attacks' random starts draw from the global torch
RNG, whose state (with numpy's, python's and CUDA's) is saved in the checkpoint after every epoch.  A run
killed at any point and started again with the same config and folder resumes from the last finished epoch
and ends with the same weights and metrics as an uninterrupted run (bitwise on the CPU; on a GPU only with
``cudnn_deterministic=True`` and ``precision="fp32"``, and even then some CUDA kernels are not deterministic).

Files written to ``run_dir``, each atomically (``nblib.results.write_atomic``): ``checkpoint.pt`` (after
every epoch), ``history.json`` (one record per epoch: loss, accuracies, learning rate, times and the exact
l_inf and l1 norms of every Conv2d / Linear layer -- the curves of the paper's appendix), ``metrics.json``
(final results; NaN / inf stored as the strings "NaN" / "Infinity", None meaning "not measured") and, while
AutoAttack runs, ``autoattack_state.json`` (lets an interrupted attack resume).  Off a terminal (a log
file, a batch job) one line per epoch goes to stderr instead of a progress bar.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nblib.attacks.autoattack import autoattack_accuracy
from nblib.attacks.inference import eval_mode
from nblib.attacks.lipschitz import local_lipschitz
from nblib.training.checkpoint import CHECKPOINT, load_checkpoint, restore_checkpoint, rng_state, seed_everything
from nblib.data import eval_subset, get_dataset
from nblib.data.loader import TrainBatches, device_tensors, eval_batches, flips, subset_indices
from nblib.models import build
from nblib.norms import layer_norms
from nblib.training.compiled import compile_model
from nblib.training.regularizers import build_regularizer, make_optimizer, optimizer_weight_decay
from nblib.results import is_terminal, jsonable, pack_outcomes, write_atomic, write_json_atomic
from nblib.training.run_config import (autocast_factory, backend_flags, check_runnable, fill_cfg, float32_flags,
                                       run_settings, scaled_milestones, torch_device)
from nblib.training.step import train_step

__all__ = ["run_one"]

#: The file of an interrupted AutoAttack evaluation in the run folder (resumed by the next attempt).
AA_STATE = "autoattack_state.json"


@dataclass
class _Run:
    """What a run holds while it trains: device, data, model, optimiser, lr schedule and progress."""
    device: torch.device
    autocast: Callable
    test_set: object
    batches: TrainBatches
    test_tensors: tuple
    input_shape: tuple
    model: torch.nn.Module
    forward: torch.nn.Module  # the training forward passes: ``model`` or its compiled module (cfg["compile"])
    reg: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    milestones: list
    start_epoch: int = 0  # the epochs the checkpoint held when this session started
    global_step: int = 0
    history: list = field(default_factory=list)


# --------------------------------------------------------------------------- data, evaluation, norms
def _datasets(cfg: dict, device: torch.device):
    """The test data set (for ``eval_subset``), the training batches and the test tensors on ``device``
    (``train_subset`` 0: every training image)."""
    train_set = get_dataset(cfg["dataset"], "train", cfg["data_root"])
    test_set = get_dataset(cfg["dataset"], "test", cfg["data_root"])
    subset = subset_indices(len(train_set), cfg["train_subset"] or None, cfg["seed"])
    batches = TrainBatches(*device_tensors(train_set, device, subset), cfg["batch_size"], seed=cfg["seed"],
                           augment=cfg["augment"], flip=flips(cfg["dataset"]), channels_last=cfg["channels_last"])
    return test_set, batches, device_tensors(test_set, device)


@torch.no_grad()
def _evaluate_points(model, test_tensors, channels_last: bool) -> tuple[float, torch.Tensor]:
    """(mean cross-entropy, per-image correctness in test-set order, on the CPU) over the test tensors in eval
    mode, float32; the previous mode is restored."""
    loss = torch.zeros((), dtype=torch.float64, device=test_tensors[0].device)
    correct = []
    with eval_mode(model):
        for x, y in eval_batches(*test_tensors, channels_last=channels_last):
            out = model(x)
            loss += F.cross_entropy(out, y, reduction="sum").double()
            correct.append(out.argmax(1) == y)
    return loss.item() / test_tensors[1].numel(), torch.cat(correct).cpu()


def _evaluate(model, test_tensors, channels_last: bool) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over the test tensors (:func:`_evaluate_points`)."""
    loss, correct = _evaluate_points(model, test_tensors, channels_last)
    return loss, int(correct.sum()) / correct.numel()


def _norm_tables(model, input_shape) -> tuple[list[str], list[float], list[float]]:
    """Layer names and the exact l_inf and l1 operator norms (``nblib.norms.layer_norms``)."""
    linf = layer_norms(model, input_shape, math.inf)
    l1 = layer_norms(model, input_shape, 1)
    assert list(linf["name"]) == list(l1["name"])
    return list(linf["name"]), [float(v) for v in linf["norm"]], [float(v) for v in l1["norm"]]


# --------------------------------------------------------------------------- build and resume
def _build(cfg: dict, device: torch.device) -> _Run:
    """A fresh run: global RNGs seeded, then (in this order, the model's initial weights draw from the
    seeded torch RNG) data, model, regulariser, SGD optimiser and the lr schedule of ``cfg``; the module of the
    training forward passes is ``nblib.training.compiled.compile_model(model, cfg["compile"])`` (lazy: compiled at
    its first call, sharing the model's parameters)."""
    autocast = autocast_factory(cfg["precision"], device)
    seed_everything(cfg["seed"])
    test_set, batches, test_tensors = _datasets(cfg, device)
    input_shape = tuple(test_tensors[0].shape[1:])
    model = build(cfg["model"], num_classes=10).to(device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    reg = build_regularizer(cfg["regularizer"], model, input_shape, cfg["reg_strength"],
                            gamma=cfg["reg_gamma"], clip_every=cfg["reg_clip_every"],
                            beta_scaling=cfg["reg_beta_scaling"], svc_linear=cfg["reg_svc_linear"],
                            nd_update=cfg["reg_nd_update"], nd_layers=cfg["reg_nd_layers"])
    wd = cfg["weight_decay"] + optimizer_weight_decay(cfg["regularizer"], cfg["reg_strength"])
    optimizer = make_optimizer(model, cfg["lr"], momentum=cfg["momentum"], weight_decay=wd)
    milestones = scaled_milestones(cfg["milestones"], cfg["epochs"])
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg["lr_decay"])
    return _Run(device=device, autocast=autocast, test_set=test_set, batches=batches, test_tensors=test_tensors,
                input_shape=input_shape, model=model, forward=compile_model(model, cfg["compile"]), reg=reg,
                optimizer=optimizer, scheduler=scheduler, milestones=milestones)


def _resume(run: _Run, cfg: dict, run_dir: Path) -> None:
    """``run`` restored from ``run_dir/checkpoint.pt`` when there is one (weights, optimiser, lr schedule,
    regulariser, every global RNG state, history); an AutoAttack state is deleted when epochs remain (it
    attacked weights that are about to change)."""
    state = load_checkpoint(run_dir / CHECKPOINT, cfg, run.device)
    if state is not None:  # any failure to restore it is a CheckpointError
        run.start_epoch, run.global_step, run.history = restore_checkpoint(
            state, run_dir / CHECKPOINT, run.model, run.optimizer, run.scheduler, run.reg)
    aa_state = run_dir / AA_STATE
    if run.start_epoch < cfg["epochs"] and aa_state.exists():
        aa_state.unlink()


def _save_checkpoint(run: _Run, cfg: dict, run_dir: Path, epoch: int) -> None:
    """``checkpoint.pt`` (everything :func:`_resume` restores) and ``history.json`` after ``epoch``."""
    checkpoint = {
        "format": 1, "cfg": cfg, "epoch": epoch + 1, "global_step": run.global_step,
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "regularizer": run.reg.state_dict() if hasattr(run.reg, "state_dict") else None,
        "rng": rng_state(), "history": run.history,
    }
    write_atomic(run_dir / CHECKPOINT, lambda f: torch.save(checkpoint, f))
    write_json_atomic(run_dir / "history.json", run.history)


# --------------------------------------------------------------------------- training
def _check_finite(what: str, loss: float, epoch: int) -> None:
    """FloatingPointError (the run diverged) when ``loss`` is NaN or infinite."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"the {what} loss became {loss} in epoch {epoch + 1}; lower cfg['lr'] or the "
                                 "regulariser strength")


def _train_epoch(run: _Run, cfg: dict, epoch: int, step_callback) -> tuple[float, float]:
    """The SGD steps of ``epoch`` on the loss of ``nblib.training.adversarial`` for ``adv_mode`` (the regulariser's
    ``step`` before or after ``optimizer.step`` as its ``hook`` says), the forward passes through ``run.forward``
    (compiled or not), everything else on ``run.model``; (mean training loss, accuracy)."""
    model, optimizer, reg = run.model, run.optimizer, run.reg
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    correct = torch.zeros((), dtype=torch.int64, device=run.device)
    n, n_ce = 0, 0
    bar = tqdm(run.batches.epoch(epoch), total=len(run.batches), desc=f"epoch {epoch + 1}", leave=False,
               disable=None)
    for i, (x, y) in enumerate(bar):
        if step_callback is not None:
            step_callback(epoch, i)
        run.global_step += 1
        out = train_step(run.forward, optimizer, reg, cfg, x, y, run.global_step, run.autocast)
        # summed on the device, read once per epoch; read before the next step (CUDA graphs reuse the logits' memory)
        loss_sum += out.loss.detach().double() * y.numel()
        correct += (out.logits.detach().argmax(1) == out.targets).sum()
        n += y.numel()
        n_ce += out.targets.numel()
    train_loss = loss_sum.item() / n
    _check_finite("training", train_loss, epoch)
    return train_loss, correct.item() / n_ce


def _run_epoch(run: _Run, cfg: dict, epoch: int, step_callback) -> dict:
    """One epoch: training, clean test loss / accuracy, the exact l_inf and l1 norms of every layer, the lr
    step; its record is appended to ``run.history`` and returned."""
    t0 = time.perf_counter()
    lr = run.optimizer.param_groups[0]["lr"]
    train_loss, train_acc = _train_epoch(run, cfg, epoch, step_callback)
    train_seconds = time.perf_counter() - t0
    test_loss, test_acc = _evaluate(run.model, run.test_tensors, cfg["channels_last"])
    _check_finite("test", test_loss, epoch)
    names, linf, l1 = _norm_tables(run.model, run.input_shape)
    run.scheduler.step()
    run.history.append({
        "epoch": epoch + 1, "lr": lr, "global_step": run.global_step,
        "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
        "norms_linf": dict(zip(names, linf)), "norms_l1": dict(zip(names, l1)),
        "train_seconds": train_seconds, "epoch_seconds": time.perf_counter() - t0,
    })
    return run.history[-1]


def _train_epochs(run: _Run, cfg: dict, run_dir: Path, stop_after_epochs, step_callback) -> bool:
    """The epochs from ``run.start_epoch`` to ``cfg["epochs"]``, each followed by its checkpoint; False when
    ``stop_after_epochs`` stopped the run before its last epoch."""
    desc = f"{cfg['model']} {cfg['adv_mode']} {cfg['regularizer']}"
    log_epochs = not is_terminal()
    bar = tqdm(range(run.start_epoch, cfg["epochs"]), initial=run.start_epoch, total=cfg["epochs"], desc=desc,
               disable=None)
    for epoch in bar:
        rec = _run_epoch(run, cfg, epoch, step_callback)
        _save_checkpoint(run, cfg, run_dir, epoch)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", train=f"{rec['train_acc']:.3f}",
                        test=f"{rec['test_acc']:.3f}")
        if log_epochs:  # a log file gets one line per epoch instead of a redrawn bar
            print(f"{desc}: epoch {epoch + 1}/{cfg['epochs']} loss {rec['train_loss']:.4f} train "
                  f"{rec['train_acc']:.4f} test {rec['test_acc']:.4f} ({rec['epoch_seconds']:.1f} s)",
                  file=sys.stderr, flush=True)
        if stop_after_epochs is not None and epoch + 1 >= stop_after_epochs and epoch + 1 < cfg["epochs"]:
            return False
    bar.close()
    return True


# --------------------------------------------------------------------------- final evaluation
def _final_metrics(run: _Run, cfg: dict) -> dict:
    """The metrics of the trained model before any attack: clean test loss / accuracy on the whole test
    set, the final per-layer norms and their product, sizes, seeds and provenance (the precision: the setting,
    the training autocast and, on CUDA, what float32 convolutions / matmuls ran as; the ``compile`` setting of
    the training forward passes); the attack entries None (not measured yet)."""
    history = run.history
    test_loss, clean_correct = _evaluate_points(run.model, run.test_tensors, cfg["channels_last"])
    clean_acc = int(clean_correct.sum()) / clean_correct.numel()
    _check_finite("test", test_loss, len(history) - 1)
    names, linf, l1 = _norm_tables(run.model, run.input_shape)
    return {
        "status": "done", "settings": run_settings(cfg),
        "clean_acc": clean_acc, "test_loss": test_loss, "clean_correct": pack_outcomes(clean_correct.numpy()),
        "train_loss": history[-1]["train_loss"], "train_acc": history[-1]["train_acc"],
        "final_lr": run.optimizer.param_groups[0]["lr"], "milestone_epochs": run.milestones,
        "epochs_trained": len(history), "global_steps": run.global_step,
        "n_train": run.batches.n, "n_test": len(run.test_set),
        "n_params": sum(p.numel() for p in run.model.parameters()),
        "layer_names": names, "norms_linf": linf, "norms_l1": l1,
        "linf_norm_product": float(np.prod(linf)),
        "log10_linf_norm_product": float(np.sum(np.log10(linf))),
        "robust_acc": None, "aa_clean_acc": None, "aa_seconds": None, "aa_warnings": [], "aa_resumed": None,
        "robust_correct": None,
        "lip_mean": None, "lip_max": None, "grad_margin_mean": None, "grad_margin_max": None,
        "eval_eps": cfg["eval_eps"], "attack": cfg["attack"], "n_eval": None,
        "seeds": {"python": cfg["seed"], "numpy": cfg["seed"], "torch": cfg["seed"],
                  "data_order": f"{cfg['seed']} * 2**16 + epoch", "eval_subset": cfg["seed"]},
        "device": str(run.device), "resumed_from_epoch": run.start_epoch,
        "compile": cfg["compile"],
        "precision": {"setting": cfg["precision"], "training_autocast": "bfloat16" if cfg["precision"] == "bf16"
                      else None, "cuda_float32": float32_flags() if run.device.type == "cuda" else None},
        "data_fixture": bool(getattr(run.test_set, "is_fixture", False)),
        "regularizer_notes": dict(getattr(run.reg, "notes", {})),
    }


def _attack_metrics(run: _Run, cfg: dict, run_dir: Path, metrics: dict) -> None:
    """Into ``metrics``: on the points ``eval_subset(test_set, n_eval, seed)``, AutoAttack's robust accuracy
    at ``eval_eps`` (resumable through ``autoattack_state.json``) and at each ``extra_eval_eps``, and the
    local Lipschitz estimates (l_inf -> l1, ``nblib.attacks.lipschitz.local_lipschitz``)."""
    model, device, seed = run.model, run.device, cfg["seed"]
    if cfg["attack"] != "none" or cfg["local_lipschitz"]:
        n_eval = len(run.test_set) if cfg["n_eval"] is None else cfg["n_eval"]
        x_eval, y_eval = eval_subset(run.test_set, n_eval, seed)
        metrics["n_eval"] = n_eval
    if cfg["attack"] != "none":
        aa = autoattack_accuracy(model, x_eval, y_eval, eps=cfg["eval_eps"], version=cfg["attack"], seed=seed,
                                 device=device, state_path=run_dir / AA_STATE, budget=cfg["attack_budget"])
        metrics.update(robust_acc=aa["robust_acc"], robust_correct=pack_outcomes(aa["robust_mask"]),
                       aa_clean_acc=aa["clean_acc"], aa_seconds=aa["seconds"],
                       aa_warnings=aa["warnings"], aa_resumed=aa["resumed"])
    metrics["robust_acc_extra"] = {}  # {"eps": robust accuracy} at cfg["extra_eval_eps"], same points
    for eps in cfg["extra_eval_eps"]:
        extra = autoattack_accuracy(model, x_eval, y_eval, eps=eps, version=cfg["attack"], seed=seed,
                                    device=device, budget=cfg["attack_budget"])
        metrics["robust_acc_extra"][f"{eps:.8g}"] = extra["robust_acc"]
    if cfg["local_lipschitz"]:
        lip = local_lipschitz(model, x_eval, eps=cfg["eval_eps"], y=y_eval,
                              generator=torch.Generator().manual_seed(seed))
        metrics.update({k: lip[k] for k in ("lip_mean", "lip_max", "grad_margin_mean", "grad_margin_max")})


def _timings(history: list, t_eval: float, t_start: float) -> dict:
    """Seconds per epoch (whole epoch, training alone), of the final evaluation, of the run's epochs plus
    that evaluation, and of this session (since :func:`run_one` was called)."""
    epoch_seconds = [h["epoch_seconds"] for h in history]
    return dict(
        seconds_per_epoch=float(np.mean(epoch_seconds)),
        train_seconds_per_epoch=float(np.mean([h["train_seconds"] for h in history])),
        eval_seconds=time.perf_counter() - t_eval,
        total_seconds=float(np.sum(epoch_seconds)) + time.perf_counter() - t_eval,
        session_seconds=time.perf_counter() - t_start,
    )


# --------------------------------------------------------------------------- one run
def run_one(cfg: dict, run_dir, *, stop_after_epochs: Optional[int] = None,
            step_callback: Optional[Callable[[int, int], None]] = None) -> Optional[dict]:
    """Train and evaluate one model as described by ``cfg`` (see ``nblib.training.run_config.DEFAULT_CFG``) in
    ``run_dir``.

    Resumes from ``run_dir/checkpoint.pt`` when present (it must have been written for the same filled
    config, else ``nblib.training.checkpoint.CheckpointError``).  Per epoch (0-based ``e``): SGD steps on the loss
    of ``nblib.training.adversarial`` for ``adv_mode`` (the regulariser's ``step`` before or after ``optimizer.step``
    as its ``hook`` says), then clean test loss/accuracy, the exact l_inf and l1 norms of every Conv2d /
    Linear layer at its input size (Theorem 1, ``nblib.norms``), the lr step and the checkpoint.  At the
    end: clean accuracy on the whole test set, AutoAttack robust accuracy at ``eval_eps`` on
    ``eval_subset(test_set, n_eval, seed)`` (unless ``attack == "none"``), optional local Lipschitz
    estimates (l_inf -> l1, ``nblib.attacks.lipschitz.local_lipschitz``) on the same points, the final per-layer norms
    and their product.

    ``linf_norm_product`` is ``prod_i ||W_i||_inf`` over the Conv2d / Linear layers: the global l_inf
    Lipschitz bound of the composed linear maps (ReLU and max pooling are 1-Lipschitz); it leaves out
    BatchNorm and residual branches, so for the CIFAR models it is not a certified bound of the network.

    Test hooks (not part of the config): ``stop_after_epochs=k`` returns None after the checkpoint of
    epoch ``k`` (as if the run were killed there); ``step_callback(epoch, batch_index)`` is called before
    every SGD step (raise from it to simulate a kill mid-epoch).

    Everything :func:`check_runnable` checks is checked before the first epoch.  A NaN or infinite
    training or test loss raises FloatingPointError (``nblib.runs.cache`` records the run as diverged).

    Returns the metrics dict (also written to ``run_dir/metrics.json``, with ``status`` "done" and the
    resolved ``settings`` of :func:`run_settings`; the per-epoch records go to ``history.json``).
    """
    cfg = fill_cfg(cfg)
    check_runnable(cfg)  # data present, n_eval / train_subset in range: fail before any epoch
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = torch_device(cfg["device"])
    t_start = time.perf_counter()
    with backend_flags(device, cfg["precision"], cfg["cudnn_deterministic"]):
        run = _build(cfg, device)
        _resume(run, cfg, run_dir)
        if not _train_epochs(run, cfg, run_dir, stop_after_epochs, step_callback):
            return None
        t_eval = time.perf_counter()
        metrics = _final_metrics(run, cfg)
        _attack_metrics(run, cfg, run_dir, metrics)
        metrics.update(_timings(run.history, t_eval, t_start))
    write_json_atomic(run_dir / "history.json", run.history)
    write_json_atomic(run_dir / "metrics.json", metrics)
    return jsonable(metrics, nonfinite="keep")
