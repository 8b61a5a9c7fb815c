"""The bill before paying it: the training runs of a profile, how many are cached, and their projected time.

``python -m nblib.pipeline.reproduce --profile paper --plan`` prints, per notebook, the runs its parameters ask for
(built by the same :data:`nblib.runs.grids.RUN_CONFIGS` the notebooks call), how many of them the sweep
cache already holds, and the projected time of the rest, without training anything.  A run's projection is

    epochs x (training images / 128) x t_step(model, mode)  +  t_autoattack(model, n_eval)

with ``t_step`` the seconds of one SGD step at the run's batch size (plain, or with the adversarial loss of
its mode) taken, in this order, from the cache (the median per-step time of finished or partial runs of the
same model, mode and device in their ``history.json``) or from a probe that times ``probe_steps`` steps of
that model on the device now (:func:`nblib.perf.throughput.measure_step` on the new data path), or, when this
machine does not have the run's device (the paper profile's ``cuda`` without a GPU), from the FLOP-count
estimate of :mod:`nblib.perf.reference` at an assumed rate (labelled "estimate": no GPU rate has been measured).
AutoAttack is projected from cached runs of the same model and attack when there are any, else bounded from
above by :func:`nblib.perf.throughput.autoattack_seconds` with every point surviving every attack, from
per-image forward and gradient times measured now (:func:`nblib.perf.throughput.measure_eval`) or estimated,
scaled by the attack budget.  Not projected yet: the per-epoch test pass and norms, ``extra_eval_eps`` radii,
the regularisers' own cost (norm decay, SVC) and several runs per GPU.
"""
from __future__ import annotations

import ast
import json
import math
import statistics
from pathlib import Path

import pandas as pd

from nblib.runs import grids, folders
from nblib.perf import reference, throughput
from nblib.data import get_dataset
from nblib.training.run_config import fill_cfg

__all__ = ["FINISHED", "NOMINAL_TRAIN_SIZE", "notebook_parameters", "run_counts", "device_here", "project_run",
           "plan_notebook"]

#: Cache statuses of runs that will not train again (a diverged run is stored, not retried).
FINISHED = ("done", "diverged")
#: Training images of each data set, for projections while the data is not there yet.
NOMINAL_TRAIN_SIZE = {"cifar10": throughput.CIFAR_TRAIN, "digits": 1437}

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


def run_counts(params_by_notebook: dict) -> dict:
    """How many runs each training notebook asks for, from its parameters (``{notebook: params}``, as
    :func:`notebook_parameters` gives them): ``{notebook: {"models", "epochs", "n_eval", "adv_modes": {training
    mode: runs per model}}}``, the input of :func:`nblib.perf.throughput.project_hours`.  The runs are built by
    :data:`nblib.runs.grids.RUN_CONFIGS`, as the notebooks build them."""
    out = {}
    for nb, params in params_by_notebook.items():
        cfgs = [fill_cfg(c) for c in grids.RUN_CONFIGS[nb](params)]
        models = list(dict.fromkeys(c["model"] for c in cfgs))
        modes = {}
        for c in cfgs:
            if c["model"] == models[0]:
                modes[c["adv_mode"]] = modes.get(c["adv_mode"], 0) + 1
        if any(sum(c["model"] == m for c in cfgs) != sum(modes.values()) for m in models):
            raise ValueError(f"{nb}: the models have different numbers of runs")
        out[nb] = dict(models=models, epochs=cfgs[0]["epochs"], n_eval=cfgs[0]["n_eval"], adv_modes=modes)
    return out


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


def _probe(cfg: dict, probe_steps: int) -> dict:
    """Seconds per training step of ``cfg``'s model and mode, and per-image AutoAttack pass times, measured
    now on synthetic CIFAR-shaped data on ``cfg``'s device."""
    images, targets = throughput.synthetic_cifar(cfg["batch_size"] * (probe_steps + 1))
    batches = throughput.new_batches(images, targets, cfg["batch_size"], cfg["device"])
    ips = throughput.measure_step(cfg["model"], batches, cfg["adv_mode"], probe_steps, cfg["device"])
    return {"step_s": cfg["batch_size"] / ips, **throughput.measure_eval(cfg["model"], cfg["device"])}


def device_here(device: str) -> bool:
    """Whether this machine has ``device`` (a CUDA device needs ``torch.cuda.is_available()``)."""
    import torch
    return torch.device(device).type != "cuda" or torch.cuda.is_available()


def _rates(cfg: dict, probes: dict, probe_steps: int) -> dict:
    """Step and AutoAttack pass times of ``cfg``'s model and mode, with their ``basis``: probed on ``cfg``'s
    device when this machine has it, else the FLOP-count estimate of :mod:`nblib.perf.reference` (labelled,
    never a measurement); cached in ``probes`` per (model, mode, batch size, device)."""
    key = (cfg["model"], cfg["adv_mode"], cfg["batch_size"], cfg["device"])
    if key not in probes:
        probes[key] = ({**_probe(cfg, probe_steps), "basis": f"probe ({probe_steps} steps)"}
                       if device_here(cfg["device"]) else reference.estimate(cfg))
    return probes[key]


def project_run(cfg: dict, n_train: int, runs_dir: Path, probes: dict, probe_steps: int = 2) -> dict:
    """Projected seconds of one run (training + AutoAttack) and where each number comes from; ``probes``
    caches measurements per (model, mode, batch size, device) across calls."""
    steps = cfg["epochs"] * math.ceil(n_train / cfg["batch_size"])
    cached = _cached_step_seconds(runs_dir, cfg)
    if cached:
        t_step, basis = statistics.median(cached), f"cache ({len(cached)} epochs)"
    else:
        r = _rates(cfg, probes, probe_steps)
        t_step, basis = r["step_s"], r["basis"]
    aa = 0.0
    if cfg["attack"] != "none":
        per_point = _cached_attack_seconds(runs_dir, cfg)
        if per_point:
            aa, basis = statistics.median(per_point) * cfg["n_eval"], basis + ", attack from cache"
        else:
            e = _rates(cfg, probes, probe_steps)
            aa = cfg["attack_budget"] * throughput.autoattack_seconds(cfg["n_eval"], e["aa_grad_s"],
                                                                      e["aa_forward_s"], survivors=1.0)
            basis += ", attack upper bound" + ("" if e["basis"] in basis else f" from {e['basis'].split(' (')[0]}")
    return {"train_s": steps * t_step, "attack_s": aa, "basis": basis}


def plan_notebook(nb_name: str, params: dict, runs_dir, folder, probe_steps: int = 2) -> pd.DataFrame:
    """One row per run of notebook ``nb_name`` (empty for notebooks that train nothing): model, regularizer,
    strength, mode, seed, hash, cache status, projected training and attack seconds and their basis.  Relative
    ``data_root`` paths are read from ``folder`` (the notebooks' working folder)."""
    make = grids.RUN_CONFIGS.get(nb_name)
    if make is None:
        return pd.DataFrame()
    runs_dir = Path(runs_dir)
    cfgs = {folders.config_hash(c): fill_cfg(c) for c in make(params)}
    sizes, probes, rows = {}, {}, []
    for h, cfg in cfgs.items():
        status, _ = folders.run_status(runs_dir / h, cfg)
        row = dict(model=cfg["model"], regularizer=cfg["regularizer"], strength=cfg["reg_strength"],
                   mode=cfg["adv_mode"], seed=cfg["seed"], hash=h, status=status, train_s=0.0, attack_s=0.0,
                   basis="cached")
        if status not in FINISHED:
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
