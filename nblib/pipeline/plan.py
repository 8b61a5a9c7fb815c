"""The bill before paying it: the training runs of a profile, how many are cached, and their projected time.

``python -m nblib.pipeline.reproduce --profile paper --plan`` prints, per notebook, the runs its parameters ask for
(built by the same :data:`nblib.runs.grids.RUN_CONFIGS` the notebooks call), how many of them the sweep
cache already holds, and the projected time of the rest, without training anything.  Each run is priced by the
one cost model of :mod:`nblib.perf.cost` (training steps, the regulariser's own cost, the per-epoch test pass,
norms and checkpoint, AutoAttack at every radius), at rates taken, in this order:

* the **cache**: the median per-step time of finished or partial runs of the same model, mode, batch size,
  device, precision and layout in their ``history.json`` (runs of the same regulariser: its cost is inside the
  steps; else plain runs, the regulariser's cost added), and AutoAttack's seconds per point of finished runs;
* a **probe** on the run's device now (:func:`nblib.perf.throughput.measure_step`, ``measure_eval``,
  ``measure_regularizer``: a few steps, one clip);
* when this machine does not have the run's device (the paper profile's ``cuda`` without a GPU), the **estimate**
  of :mod:`nblib.perf.reference` (FLOP counts at an assumed rate, labelled: no GPU rate has been measured).

AutoAttack without a cached time is bounded from above by :func:`nblib.perf.throughput.autoattack_seconds` with
every point surviving every attack, scaled by the attack budget.  The notebook's ``gpus`` (several runs per GPU
allowed) turn the sum into GPU-hours and wall hours (:func:`nblib.perf.cost.project`).
"""
from __future__ import annotations

import ast
import json
import statistics
from pathlib import Path

import pandas as pd

from nblib.runs import grids, folders
from nblib.perf import cost, reference, throughput
from nblib.data import get_dataset
from nblib.training.run_config import fill_cfg

__all__ = ["FINISHED", "notebook_parameters", "profile_configs", "run_counts", "device_here", "run_rates",
           "project_run", "plan_notebook"]

#: Cache statuses of runs that will not train again (a diverged run is stored, not retried).
FINISHED = ("done", "diverged")

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


def profile_configs(params_by_notebook: dict) -> dict:
    """``{notebook: [filled run config, ...]}``: the runs of each training notebook from its parameters
    (``{notebook: params}`` as :func:`notebook_parameters` gives them), built by
    :data:`nblib.runs.grids.RUN_CONFIGS` as the notebooks build them; the input of :func:`nblib.perf.cost.project`."""
    return {nb: [fill_cfg(c) for c in grids.RUN_CONFIGS[nb](params)] for nb, params in params_by_notebook.items()}


def run_counts(params_by_notebook: dict) -> dict:
    """How many runs each training notebook asks for, from its parameters (``{notebook: params}``, as
    :func:`notebook_parameters` gives them): ``{notebook: {"models", "epochs", "n_eval", "adv_modes": {training
    mode: runs per model}}}``, a summary of :func:`profile_configs`.  The runs are built by
    :data:`nblib.runs.grids.RUN_CONFIGS`, as the notebooks build them."""
    out = {}
    for nb, cfgs in profile_configs(params_by_notebook).items():
        models = list(dict.fromkeys(c["model"] for c in cfgs))
        modes = {}
        for c in cfgs:
            if c["model"] == models[0]:
                modes[c["adv_mode"]] = modes.get(c["adv_mode"], 0) + 1
        if any(sum(c["model"] == m for c in cfgs) != sum(modes.values()) for m in models):
            raise ValueError(f"{nb}: the models have different numbers of runs")
        out[nb] = dict(models=models, epochs=cfgs[0]["epochs"], n_eval=cfgs[0]["n_eval"], adv_modes=modes)
    return out


def _cached_step_seconds(runs_dir: Path, cfg: dict, regularizer: str) -> list[float]:
    """Seconds per SGD step of runs in ``runs_dir`` with the model, mode, batch size, device, precision and
    layout of ``cfg`` and the regulariser ``regularizer``."""
    found = []
    keys = ("model", "adv_mode", "batch_size", "device", "precision", "channels_last")
    for cfg_path in runs_dir.glob("*/cfg.json"):
        try:
            other = json.loads(cfg_path.read_text())
            history = json.loads((cfg_path.parent / "history.json").read_text())
        except (OSError, ValueError):
            continue
        same = all(other.get(k) == cfg[k] for k in keys) and other.get("regularizer") == regularizer
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


def device_here(device: str) -> bool:
    """Whether this machine has ``device`` (a CUDA device needs ``torch.cuda.is_available()``)."""
    import torch
    return torch.device(device).type != "cuda" or torch.cuda.is_available()


def _measured(cfg: dict, part: str, probes: dict, probe_steps: int) -> dict:
    """One ``part`` of the rates of ``cfg`` with its ``basis``: ``"step"`` (``step_s``), ``"eval"``
    (``eval_ips``, ``norms_s``, ``ckpt_s``, ``aa_forward_s``, ``aa_grad_s``) or ``"regularizer"`` (``nd_s``,
    ``clip_s``), probed on the run's device, or estimated (:func:`nblib.perf.reference.estimate`) when this
    machine does not have it; cached in ``probes``."""
    dev, model = cfg["device"], cfg["model"]
    if not device_here(dev):
        key = ("estimate", model, cfg["adv_mode"], cfg["batch_size"], dev, cfg["precision"], cfg["adv_preset"])
        if key not in probes:
            probes[key] = reference.estimate(cfg)
        return probes[key]
    basis = f"probe ({probe_steps} steps)"
    if part == "step":
        key = (part, model, cfg["adv_mode"], cfg["batch_size"], dev, cfg["precision"], cfg["channels_last"])
        if key not in probes:
            images, targets = throughput.synthetic_cifar(cfg["batch_size"] * (probe_steps + 1))
            batches = throughput.new_batches(images, targets, cfg["batch_size"], dev,
                                             channels_last=cfg["channels_last"])
            ips = throughput.measure_step(model, batches, cfg["adv_mode"], probe_steps, dev,
                                          precision=cfg["precision"], channels_last=cfg["channels_last"])
            probes[key] = {"step_s": cfg["batch_size"] / ips, "basis": basis}
    elif part == "eval":
        key = (part, model, dev, cfg["channels_last"])
        if key not in probes:
            probes[key] = {**throughput.measure_eval(model, dev, channels_last=cfg["channels_last"]), "basis": basis}
    else:
        key = (part, model, cfg["regularizer"], cfg["batch_size"], dev)
        if key not in probes:
            probes[key] = {**throughput.measure_regularizer(model, cfg["regularizer"], dev, cfg["batch_size"],
                                                            runs=probe_steps), "basis": basis}
    return probes[key]


def run_rates(cfg: dict, runs_dir: Path, probes: dict, probe_steps: int = 2) -> dict:
    """The rates of :data:`nblib.perf.cost.RATE_KEYS` for the run ``cfg`` and their ``basis``: the step time
    from the cache when it holds comparable runs (of the same regulariser: its cost is inside the steps; else
    plain runs plus the regulariser's probed or estimated cost), else probed or estimated like every other rate
    (:func:`_measured`); AutoAttack from cached runs, else its upper bound.  ``probes`` caches measurements."""
    rates = {"nd_s": 0.0, "clip_s": 0.0, "aa_s": 0.0}
    e = _measured(cfg, "eval", probes, probe_steps)
    rates.update(eval_ips=e["eval_ips"], norms_s=e["norms_s"], ckpt_s=e["ckpt_s"])
    same = _cached_step_seconds(runs_dir, cfg, cfg["regularizer"])
    plain = [] if same or cfg["regularizer"] == "none" else _cached_step_seconds(runs_dir, cfg, "none")
    if same:
        rates["step_s"], basis = statistics.median(same), f"cache ({len(same)} epochs)"
    else:
        if plain:
            rates["step_s"], basis = statistics.median(plain), f"cache ({len(plain)} epochs of plain runs)"
        else:
            m = _measured(cfg, "step", probes, probe_steps)
            rates["step_s"], basis = m["step_s"], m["basis"]
        if cfg["regularizer"] != "none":
            r = _measured(cfg, "regularizer", probes, probe_steps)
            rates.update(nd_s=r["nd_s"], clip_s=r["clip_s"])
            basis += "" if r["basis"] in basis else f", regularizer from {r['basis']}"
    if e["basis"] not in basis:
        basis += f", per-epoch costs from {e['basis']}"
    if cfg["attack"] != "none":
        per_point = _cached_attack_seconds(runs_dir, cfg)
        if per_point:
            rates["aa_s"], basis = statistics.median(per_point) * cfg["n_eval"], basis + ", attack from cache"
        else:
            rates["aa_s"] = cfg["attack_budget"] * throughput.autoattack_seconds(
                cfg["n_eval"], e["aa_grad_s"], e["aa_forward_s"], survivors=1.0)
            basis += ", attack upper bound" + ("" if e["basis"] in basis else f" from {e['basis'].split(' (')[0]}")
    rates["basis"] = basis
    return rates


def project_run(cfg: dict, n_train: int, n_test: int, runs_dir: Path, probes: dict, probe_steps: int = 2) -> dict:
    """Projected seconds of one run, per term of :data:`nblib.perf.cost.TERMS` and ``total``, and ``basis``."""
    rates = run_rates(cfg, runs_dir, probes, probe_steps)
    return {**cost.run_seconds(cfg, rates, n_train, n_test), "basis": rates["basis"]}


def plan_notebook(nb_name: str, params: dict, runs_dir, folder, probe_steps: int = 2) -> pd.DataFrame:
    """One row per run of notebook ``nb_name`` (empty for notebooks that train nothing): model, regularizer,
    strength, mode, seed, hash, cache status, the projected seconds of each cost term (``<term>_s``,
    ``total_s``; 0 for a finished run) and their basis.  Relative ``data_root`` paths are read from ``folder`` (the
    notebooks' working folder)."""
    make = grids.RUN_CONFIGS.get(nb_name)
    if make is None:
        return pd.DataFrame()
    runs_dir = Path(runs_dir)
    cfgs = {folders.config_hash(c): fill_cfg(c) for c in make(params)}
    sizes, probes, rows = {}, {}, []
    for h, cfg in cfgs.items():
        status, _ = folders.run_status(runs_dir / h, cfg)
        row = dict(model=cfg["model"], regularizer=cfg["regularizer"], strength=cfg["reg_strength"],
                   mode=cfg["adv_mode"], seed=cfg["seed"], hash=h, status=status,
                   **{f"{t}_s": 0.0 for t in (*cost.TERMS, "total")},
                   basis="cached")
        if status not in FINISHED:
            key = (cfg["dataset"], cfg["data_root"])
            if key not in sizes:
                root = Path(folder) / (cfg["data_root"] or "")
                try:
                    sizes[key] = tuple(len(get_dataset(cfg["dataset"], split, root)) for split in ("train", "test"))
                except FileNotFoundError:
                    sizes[key] = None  # the data step has not run yet
            n_train, n_test = sizes[key] or cost.NOMINAL_SIZES[cfg["dataset"]]
            seconds = project_run(cfg, min(n_train, cfg["train_subset"] or n_train), n_test, runs_dir, probes,
                                  probe_steps)
            row.update({f"{t}_s": seconds[t] for t in (*cost.TERMS, "total")}, basis=seconds["basis"])
            if sizes[key] is None:
                row["basis"] += f", {cfg['dataset']} missing: nominal size"
        rows.append(row)
    return pd.DataFrame(rows)
