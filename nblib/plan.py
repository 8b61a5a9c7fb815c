"""The bill before paying it: the training runs of a profile, how many are cached, and their projected time.

``python -m nblib.reproduce --profile paper --plan`` prints, per notebook, the runs its parameters ask for
(built by the same :data:`nblib.experiments.RUN_CONFIGS` the notebooks call), how many of them the sweep
cache already holds, and the projected time of the rest, without training anything.  A run's projection is

    epochs x (training images / 128) x t_step(model, mode)  +  t_autoattack(model, n_eval)

with ``t_step`` the seconds of one SGD step at batch 128 (plain, or with the adversarial loss of the run's
mode) taken, in this order, from the cache (the median per-step time of finished or partial runs of the same
model, mode and device in their ``history.json``) or from a probe that times ``probe_steps`` steps of that
model on the device now.  AutoAttack is projected from cached runs of the same model and attack when there
are any, else bounded from above: every attacked point surviving all attacks costs ``budget x (2,800
forward-backward + 5,000 forward)`` passes (APGD-CE 100, APGD-T 9 x 100, FAB-T 9 x 100 x ~2, Square 5,000
queries), a forward pass taken as a third of a training step per image.
"""
from __future__ import annotations

import ast
import json
import math
import statistics
import time
from pathlib import Path

import pandas as pd

from nblib import experiments, sweep
from nblib.data import get_dataset
from nblib.train import fill_cfg

__all__ = ["NOMINAL_TRAIN_SIZE", "notebook_parameters", "step_seconds", "project_run", "plan_notebook"]

#: Training images of each data set, for projections while the data is not there yet.
NOMINAL_TRAIN_SIZE = {"cifar10": 50_000, "digits": 1437}

#: Forward-backward and forward passes per attacked point of standard AutoAttack when every attack runs to
#: its end (the worst case): APGD-CE 100 + APGD-T 9 x 100 + FAB-T 9 x 100 x 2 gradient passes, Square 5,000.
AA_BACKWARD_PASSES = 100 + 900 + 1800
AA_FORWARD_PASSES = 5000


def notebook_parameters(nb: Path, section: dict, injected: dict) -> dict:
    """The parameters a notebook runs with: its ``parameters`` cell's defaults, overridden by the profile's
    ``section`` and the ``injected`` names (``profile``, ``output_dir``, ``device``)."""
    import papermill

    out = {}
    for name, info in papermill.inspect_notebook(str(nb)).items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{nb.name}: the default of parameter {name!r} is not a literal") from err
    return {**out, **section, **injected}


def _cached_step_seconds(runs_dir: Path, cfg: dict) -> list[float]:
    """Seconds per SGD step of runs in ``runs_dir`` with the model, mode, batch size and device of ``cfg``."""
    found = []
    for cfg_path in runs_dir.glob("*/cfg.json"):
        try:
            other = json.loads(cfg_path.read_text())
            history = json.loads((cfg_path.parent / "history.json").read_text())
        except (OSError, ValueError):
            continue
        same = all(other.get(k) == cfg[k] for k in ("model", "adv_mode", "batch_size", "device"))
        if same and isinstance(history, list):
            before = 0
            for h in history:
                steps, before = h.get("global_step", 0) - before, h.get("global_step", 0)
                if steps > 0 and h.get("train_seconds"):
                    found.append(h["train_seconds"] / steps)
    return found


def _cached_attack_seconds(runs_dir: Path, cfg: dict) -> list[float]:
    """AutoAttack seconds per attacked point of finished runs with the model, attack and device of ``cfg``."""
    found = []
    for metrics_path in runs_dir.glob("*/metrics.json"):
        try:
            other = json.loads((metrics_path.parent / "cfg.json").read_text())
            m = json.loads(metrics_path.read_text())
        except (OSError, ValueError):
            continue
        keys = ("model", "attack", "attack_budget", "device", "eval_eps")
        if all(other.get(k) == cfg[k] for k in keys) and m.get("aa_seconds") and m.get("n_eval"):
            found.append(m["aa_seconds"] / m["n_eval"])
    return found


def step_seconds(cfg: dict, probe_steps: int = 2) -> float:
    """Median seconds of one training step of ``cfg``'s model and mode at its batch size on its device,
    measured now on random CIFAR-shaped data (the first, warm-up step is not counted)."""
    import torch

    from nblib.adversarial import adversarial_loss
    from nblib.models import build
    from nblib.regularizers import make_optimizer

    device = torch.device(cfg["device"])
    model = build(cfg["model"], num_classes=10).to(device).train()
    opt = make_optimizer(model, cfg["lr"], momentum=cfg["momentum"])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(cfg["batch_size"], 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (cfg["batch_size"],), generator=g).to(device)
    times = []
    for _ in range(probe_steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        loss = adversarial_loss(cfg["adv_mode"], model, x, y, preset=cfg["adv_preset"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def project_run(cfg: dict, n_train: int, runs_dir: Path, probes: dict, probe_steps: int = 2) -> dict:
    """Projected seconds of one run (training + AutoAttack) and where each number comes from."""
    steps = cfg["epochs"] * math.ceil(n_train / cfg["batch_size"])
    cached = _cached_step_seconds(runs_dir, cfg)
    if cached:
        t_step, basis = statistics.median(cached), f"cache ({len(cached)} epochs)"
    else:
        key = (cfg["model"], cfg["adv_mode"], cfg["batch_size"], cfg["device"])
        if key not in probes:
            probes[key] = step_seconds(cfg, probe_steps)
        t_step, basis = probes[key], f"probe ({probe_steps} steps)"
    aa = 0.0
    if cfg["attack"] != "none":
        per_point = _cached_attack_seconds(runs_dir, cfg)
        if per_point:
            aa, basis = statistics.median(per_point) * cfg["n_eval"], basis + ", attack from cache"
        else:
            plain = probes.get((cfg["model"], "plain", cfg["batch_size"], cfg["device"]), t_step)
            per_image = plain / cfg["batch_size"]
            aa = cfg["n_eval"] * cfg["attack_budget"] * per_image * (AA_BACKWARD_PASSES + AA_FORWARD_PASSES / 3)
            basis += ", attack upper bound"
    return {"train_s": steps * t_step, "attack_s": aa, "basis": basis}


def plan_notebook(nb_name: str, params: dict, runs_dir, folder, probe_steps: int = 2) -> pd.DataFrame:
    """One row per run of notebook ``nb_name`` (empty for notebooks that train nothing): model, regularizer,
    strength, mode, hash, cache status, projected training and attack seconds and their basis.  Relative
    ``data_root`` paths are read from ``folder`` (the notebooks' working folder)."""
    make = experiments.RUN_CONFIGS.get(nb_name)
    if make is None:
        return pd.DataFrame()
    runs_dir = Path(runs_dir)
    cfgs = {sweep.config_hash(c): fill_cfg(c) for c in make(params)}
    sizes, probes, rows = {}, {}, []
    for h, cfg in cfgs.items():
        status, _ = sweep.run_status(runs_dir / h, cfg)
        row = dict(model=cfg["model"], regularizer=cfg["regularizer"], strength=cfg["reg_strength"],
                   mode=cfg["adv_mode"], hash=h, status=status, train_s=0.0, attack_s=0.0, basis="cached")
        if status != "done":
            key = (cfg["dataset"], cfg["data_root"])
            if key not in sizes:
                try:
                    sizes[key] = len(get_dataset(cfg["dataset"], "train", Path(folder) / (cfg["data_root"] or "")))
                except FileNotFoundError:
                    sizes[key] = None  # the data step has not run yet
            n_data = sizes[key] or NOMINAL_TRAIN_SIZE[cfg["dataset"]]
            row.update(project_run(cfg, min(n_data, cfg["train_subset"] or n_data), runs_dir, probes, probe_steps))
            if sizes[key] is None:
                row["basis"] += f", {cfg['dataset']} missing: nominal size"
        rows.append(row)
    return pd.DataFrame(rows)
