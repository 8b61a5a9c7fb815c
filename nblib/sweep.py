"""Sweeps of :func:`nblib.train.run_one` with one cached folder per config.

Each config (filled with :data:`nblib.train.DEFAULT_CFG`) lives in ``<root>/<config_hash(cfg)>/``:

* ``cfg.json``      -- the full config (written before training);
* ``checkpoint.pt``, ``history.json``, ``metrics.json`` -- written by ``run_one``;
* ``versions.json`` -- torch / CUDA / cuDNN / python versions, git SHA of this repository, device name;
* ``DONE``          -- written last: the folder holds a finished result.

:func:`run_cached` returns the stored metrics of a finished folder without training, resumes a folder
without ``DONE`` (``run_one`` continues from its checkpoint) and moves a folder that cannot be trusted --
``DONE`` with a missing or unreadable ``metrics.json`` / ``history.json``, a ``cfg.json`` that does not hash
to the folder's name, an unreadable checkpoint -- to ``<root>/_corrupt/`` and trains the config again, so a
broken folder is never read as a result.  :func:`run_sweep` runs many configs sequentially, one process per
GPU, or as Slurm jobs through ``submitit``, and returns one table row per config.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd
from tqdm.auto import tqdm

from nblib import train
from nblib.train import CheckpointError, fill_cfg

__all__ = ["EXECUTORS", "config_hash", "run_dir_for", "run_status", "run_cached", "run_sweep", "expand_grid",
           "slurm_kwargs", "versions"]

#: Values of ``run_sweep(executor=...)``.
EXECUTORS = ("local", "slurm")
_FILES = ("cfg.json", "metrics.json", "history.json", "versions.json", "DONE")
_REPO = Path(__file__).resolve().parents[1]


def _canonical(cfg: dict) -> str:
    return json.dumps(fill_cfg(cfg), sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(cfg: dict) -> str:
    """First 12 hex digits of the SHA-256 of the canonical JSON (sorted keys, no spaces) of the full config
    (``fill_cfg(cfg)``: defaults filled, numbers normalised), so ``{}`` and ``DEFAULT_CFG`` hash alike and
    ``lr=1`` and ``lr=1.0`` too."""
    return hashlib.sha256(_canonical(cfg).encode()).hexdigest()[:12]


def run_dir_for(root, cfg: dict) -> Path:
    """``<root>/<config_hash(cfg)>``."""
    return Path(root) / config_hash(cfg)


def _git_sha() -> Optional[str]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


def versions(device: str = "cpu") -> dict:
    """What produced a result: library versions, git SHA of this repository (``-dirty`` with uncommitted
    changes to tracked files; None outside git), the device name, host and time."""
    import numpy
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(dev)
    else:
        device_name = platform.processor() or platform.machine() or "cpu"
    return {
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "numpy": numpy.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "git_sha": _git_sha(), "device": device, "device_name": device_name,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "torch_threads": torch.get_num_threads(),
        "host": platform.node(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_status(run_dir, cfg: dict) -> tuple[str, str]:
    """``(status, reason)`` of a run folder for ``cfg``: ``"new"`` (no folder), ``"done"`` (a result that can
    be read), ``"partial"`` (no ``DONE``: resume) or ``"corrupt"`` (must not be read; ``reason`` says why)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return "new", "no folder"
    h = config_hash(cfg)
    cfg_path = run_dir / "cfg.json"
    if cfg_path.exists():
        stored = _read_json(cfg_path)
        try:
            stored_hash = config_hash(stored) if isinstance(stored, dict) else None
        except ValueError:
            stored_hash = None
        if stored_hash != h:
            return "corrupt", f"cfg.json does not hash to {h}"
    if not (run_dir / "DONE").exists():
        return "partial", "no DONE marker"
    if not cfg_path.exists():
        return "corrupt", "DONE without cfg.json"
    metrics = _read_json(run_dir / "metrics.json")
    if not isinstance(metrics, dict) or not metrics:
        return "corrupt", "DONE but metrics.json missing or unreadable"
    if not isinstance(_read_json(run_dir / "history.json"), list):
        return "corrupt", "DONE but history.json missing or unreadable"
    return "done", "finished"


def _move_aside(root: Path, run_dir: Path, reason: str) -> Path:
    dest = root / "_corrupt" / f"{run_dir.name}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), str(dest))
    (dest / "REASON").write_text(reason + "\n")
    warnings.warn(f"run folder {run_dir} is not a valid result ({reason}); moved to {dest} and rerunning",
                  stacklevel=3)
    return dest


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_cached(cfg: dict, root) -> dict:
    """The metrics of ``cfg``: read from ``<root>/<hash>/`` when finished, else trained (resuming a killed
    run) and stored there with ``cfg.json``, ``versions.json`` and, last, ``DONE``.  A corrupt folder (see
    :func:`run_status`) is moved to ``<root>/_corrupt/`` with a warning and the config is trained again."""
    cfg = fill_cfg(cfg)
    root = Path(root)
    run_dir = root / config_hash(cfg)
    status, reason = run_status(run_dir, cfg)
    if status == "done":
        return json.loads((run_dir / "metrics.json").read_text())
    if status == "corrupt":
        _move_aside(root, run_dir, reason)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "DONE").unlink(missing_ok=True)
    _write_text_atomic(run_dir / "cfg.json", json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    try:
        metrics = train.run_one(cfg, run_dir)
    except CheckpointError as err:
        _move_aside(root, run_dir, f"checkpoint unusable: {err}")
        run_dir.mkdir(parents=True)
        _write_text_atomic(run_dir / "cfg.json", json.dumps(cfg, indent=1, sort_keys=True) + "\n")
        metrics = train.run_one(cfg, run_dir)
    _write_text_atomic(run_dir / "versions.json", json.dumps(versions(cfg["device"]), indent=1) + "\n")
    _write_text_atomic(run_dir / "DONE", time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
    return metrics


def expand_grid(base: Optional[dict] = None, **lists) -> list[dict]:
    """Configs ``{**base, k1: v1, k2: v2, ...}`` for every combination of the values in ``lists`` (the last
    keyword varies fastest).  Concatenate grids for ragged designs, e.g. Table 2::

        expand_grid(base, regularizer=["wd"], reg_strength=[1e-2, 1e-3, 1e-4, 1e-5])
        + expand_grid(base, regularizer=["svc"], reg_strength=[0.5, 1.0, 1.5, 2.0])
    """
    base = dict(base or {})
    for key, values in lists.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ValueError(f"expand_grid({key}=...) needs a list of values, got {values!r}")
    keys = list(lists)
    return [{**base, **dict(zip(keys, combo))} for combo in itertools.product(*(list(lists[k]) for k in keys))]


def _row(cfg: dict, metrics: dict, h: str, root: Path) -> dict:
    row = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()}
    for k, v in metrics.items():
        if v is None or isinstance(v, (bool, int, float, str)):
            row[f"metric_{k}" if k in cfg else k] = v
    row["hash"] = h
    row["run_dir"] = str(root / h)
    return row


def _worker_init(gpu) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def _run_on_gpus(pending: list[dict], root: Path, gpus: Sequence, bar) -> dict:
    """One worker process per GPU (spawned, ``CUDA_VISIBLE_DEVICES`` set to that GPU), each taking the
    next pending config when it finishes one.  Returns ``{hash: metrics or exception}``."""
    import multiprocessing as mp
    import queue
    import threading
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    todo: queue.Queue = queue.Queue()
    for cfg in pending:
        todo.put(cfg)
    results: dict = {}
    lock = threading.Lock()
    ctx = mp.get_context("spawn")

    def drive(gpu):
        pool = None
        try:
            while True:
                try:
                    cfg = todo.get_nowait()
                except queue.Empty:
                    return
                if pool is None:
                    pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_worker_init,
                                               initargs=(gpu,))
                try:
                    out = pool.submit(run_cached, cfg, root).result()
                except BrokenProcessPool as err:  # the worker died (e.g. killed for memory): new worker
                    out = err
                    pool.shutdown(wait=False)
                    pool = None
                except Exception as err:  # noqa: BLE001 -- reported after all runs
                    out = err
                with lock:
                    results[config_hash(cfg)] = out
                    bar.update(1)
        finally:
            if pool is not None:
                pool.shutdown()

    threads = [threading.Thread(target=drive, args=(g,), daemon=True) for g in gpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _run_on_slurm(pending: list[dict], root: Path, slurm_kwargs: Optional[dict], cluster: Optional[str],
                  folder, bar) -> dict:
    try:
        import submitit
    except ImportError as err:
        raise ImportError("executor='slurm' needs submitit: pip install submitit "
                          "(or pip install -e .[slurm])") from err
    executor = submitit.AutoExecutor(folder=str(folder or root / "_submitit"), cluster=cluster)
    executor.update_parameters(**(slurm_kwargs or {}))
    with executor.batch():
        jobs = [(config_hash(cfg), executor.submit(run_cached, cfg, str(root))) for cfg in pending]
    results = {}
    for h, job in jobs:
        try:
            results[h] = job.result()
        except Exception as err:  # noqa: BLE001 -- reported after all runs
            results[h] = err
        bar.update(1)
    return results


def slurm_kwargs(executor: str, partition: str = "", timeout_min: int = 1440, cpus_per_task: int = 8) -> Optional[dict]:
    """The ``slurm_kwargs`` of :func:`run_sweep` for one GPU per run (None unless ``executor == "slurm"``):
    ``timeout_min``, ``gpus_per_node=1``, ``cpus_per_task`` and ``slurm_partition`` when one is named."""
    if executor != "slurm":
        return None
    out = dict(timeout_min=int(timeout_min), gpus_per_node=1, cpus_per_task=int(cpus_per_task))
    if partition:
        out["slurm_partition"] = partition
    return out


def run_sweep(cfgs: Iterable[dict], root, executor: str = "local", gpus: Optional[Sequence] = None,
              slurm_kwargs: Optional[dict] = None, submitit_cluster: Optional[str] = None,
              submitit_folder=None) -> pd.DataFrame:
    """Run (or read from the cache) every config and return one row per config, in the given order: the
    config's keys (lists as tuples), the scalar metrics (a metric named like a config key gets the prefix
    ``metric_``), ``hash`` and ``run_dir``.  Duplicate configs are run once.

    * ``executor="local"``, ``gpus=None``: one run after the other in this process.
    * ``executor="local"``, ``gpus=[0, 1, ...]``: one spawned worker process per listed GPU with
      ``CUDA_VISIBLE_DEVICES`` set to it (give the configs ``device="cuda"``); list a GPU twice
      (``gpus=[0, 0, 1, 1]``) to run two runs at a time on it when one run cannot fill it.
    * ``executor="slurm"``: one Slurm job (array task) per unfinished config through ``submitit``
      (``AutoExecutor(folder=submitit_folder or <root>/_submitit, cluster=submitit_cluster)``, then
      ``update_parameters(**slurm_kwargs)``, e.g. ``dict(timeout_min=600, slurm_partition="gpu",
      gpus_per_node=1)``); blocks until they finish.  Rerun after a job was killed: finished configs are
      read from the cache and killed ones resume.

    Failed runs do not stop the others (except in the sequential mode, which stops at the first); a
    RuntimeError naming every failed config is raised at the end.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if executor == "slurm" and gpus is not None:
        raise ValueError("gpus is for executor='local'; request GPUs for Slurm jobs through slurm_kwargs")
    root = Path(root).resolve()  # workers and Slurm jobs may start in another directory
    root.mkdir(parents=True, exist_ok=True)
    filled = [fill_cfg(c) for c in cfgs]
    hashes = [config_hash(c) for c in filled]
    unique = dict(zip(hashes, filled))
    results: dict = {}
    pending = []
    for h, cfg in unique.items():
        if run_status(root / h, cfg)[0] == "done":
            results[h] = json.loads((root / h / "metrics.json").read_text())
        else:
            pending.append(cfg)
    with tqdm(total=len(unique), initial=len(results), desc="runs", disable=None) as bar:
        if executor == "slurm":
            results.update(_run_on_slurm(pending, root, slurm_kwargs, submitit_cluster, submitit_folder, bar))
        elif gpus:
            results.update(_run_on_gpus(pending, root, list(gpus), bar))
        else:
            for cfg in pending:
                results[config_hash(cfg)] = run_cached(cfg, root)
                bar.update(1)
    failed = {h: r for h, r in results.items() if isinstance(r, BaseException)}
    if failed:
        lines = [f"  {h}: {type(e).__name__}: {e}" for h, e in failed.items()]
        raise RuntimeError(f"{len(failed)} of {len(unique)} runs failed (folders under {root}):\n"
                           + "\n".join(lines))
    return pd.DataFrame([_row(c, results[h], h, root) for h, c in zip(hashes, filled)])
