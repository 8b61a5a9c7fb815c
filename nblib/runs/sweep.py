"""Sweeps of :func:`nblib.training.train.run_one`: :func:`run_sweep` runs (or reads from the cache) a list of configs
(:func:`expand_grid`) in this process, one worker process per GPU, or one Slurm job per run, and returns one
table row per config.

Each run goes through :func:`nblib.runs.cache.run_cached`: one folder per config hash (what it holds and when
it may be read: :mod:`nblib.runs.folders`), trained under a per-run lock, so any number of sweeps (local GPU
workers, Slurm jobs, a notebook) may share a root.  A sequential sweep first runs the configs no other
worker holds, then waits for the others.

**What is returned.**  ``done`` or ``diverged`` results (a diverged run: NaN metrics and a ``reason``);
``stale`` results (of other code or other settings) are trained again by default, or kept and marked with
``reuse_stale=True``; corrupt folders are moved aside and trained again.  Folders that hold a config under
an older hash are reported (:func:`nblib.runs.folders.old_hash_folders`).
"""
from __future__ import annotations

import itertools
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd
from tqdm.auto import tqdm

from nblib.results import is_terminal
from nblib.runs.cache import RunLocked, run_cached
from nblib.training.run_config import check_runnable, fill_cfg
from nblib.runs.folders import config_hash, inspect_run, old_hash_folders

__all__ = ["EXECUTORS", "SLURM_TIMEOUT_MIN", "run_sweep", "expand_grid", "slurm_kwargs", "worker_devices"]

#: Values of ``run_sweep(executor=...)``.
EXECUTORS = ("local", "slurm")
#: Default Slurm time limit of one run (minutes) of :func:`slurm_kwargs`; a killed run resumes on the next sweep.
SLURM_TIMEOUT_MIN = 1440


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
        if k not in ("status", "stale_reason") and (v is None or isinstance(v, (bool, int, float, str))):
            row[f"metric_{k}" if k in cfg else k] = v
    row["status"] = metrics.get("status", "done")
    row["stale"] = metrics.get("stale_reason") is not None
    row["stale_reason"] = metrics.get("stale_reason")
    row["hash"] = h
    row["run_dir"] = str(root / h)
    return row


def _label(cfg: dict) -> str:
    reg = cfg["regularizer"] if cfg["regularizer"] == "none" else f"{cfg['regularizer']}={cfg['reg_strength']:g}"
    return f"{cfg['model']} {reg}/{cfg['adv_mode']} seed {cfg['seed']}"


class _Progress:
    """A tqdm bar on a terminal; elsewhere (a log file, a notebook run by papermill) one flushed line per
    finished run: ``run k/n <hash> <model> <regulariser>/<mode> done in X s, about Y min left``."""

    def __init__(self, total: int, parallel: int):
        self.total, self.parallel, self.k = total, max(1, parallel), 0
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=total, desc="runs") if is_terminal() else None

    def finished(self, cfg: dict, h: str, result, seconds: float) -> None:
        self.k += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        if isinstance(result, BaseException):
            what = f"FAILED ({type(result).__name__}: {result})"
        else:
            what = result.get("status", "done") + (" (stale result kept)" if result.get("stale_reason") else "")
        left = (time.perf_counter() - self.t0) / self.k * (self.total - self.k) / 60
        print(f"run {self.k}/{self.total} {h} {_label(cfg)} {what} in {seconds:.1f} s, about {left:.1f} min left",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _worker_init(device: str) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = device


def worker_devices(gpus: Sequence) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value of the worker of each entry of ``gpus``: ``gpus`` are indices into
    the GPUs this process sees, so inside an allocation with ``CUDA_VISIBLE_DEVICES=4,5`` (ids or UUIDs, as
    Slurm and MIG set them) ``gpus=[0, 1]`` map to ``"4"`` and ``"5"``; without ``CUDA_VISIBLE_DEVICES`` an
    index is the GPU's own.  ValueError for an index this process does not see (checked against
    ``torch.cuda.device_count()`` when CUDA is available)."""
    import torch
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = None if parent is None else [e.strip() for e in parent.split(",") if e.strip()]
    n = len(visible) if visible is not None else (torch.cuda.device_count() if torch.cuda.is_available() else None)
    out = []
    for gpu in gpus:
        if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0 or (n is not None and gpu >= n):
            raise ValueError(f"gpus={list(gpus)} lists {gpu!r}, but this process sees {n} GPU(s) (CUDA_VISIBLE_"
                             f"DEVICES={parent!r}); list indices 0..{(n or 1) - 1} of the visible GPUs")
        out.append(visible[gpu] if visible is not None else str(gpu))
    return out


def _check_worker_device(cfg: dict) -> None:
    """ValueError when ``cfg`` names a CUDA device other than ``cuda`` / ``cuda:0``: a GPU worker sees its
    one GPU as ``cuda:0`` (fails before any run, not in the worker with "invalid device ordinal")."""
    device = str(cfg["device"])
    if device.startswith("cuda:") and device != "cuda:0":
        raise ValueError(f"cfg['device'] = {device!r}, but each worker of run_sweep(gpus=...) sees only its own "
                         "GPU, as cuda:0; set device='cuda' and pick the GPUs with gpus=[...]")


def _run_on_gpus(pending: list[dict], root: Path, gpus: Sequence, progress: _Progress, reuse_stale: bool) -> dict:
    """One worker process per GPU (spawned, ``CUDA_VISIBLE_DEVICES`` set to that GPU as
    :func:`worker_devices` maps it through this process's own), each taking the
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
                t0 = time.perf_counter()
                try:
                    out = pool.submit(run_cached, cfg, root, reuse_stale=reuse_stale).result()
                except BrokenProcessPool as err:  # the worker died (e.g. killed for memory): new worker
                    out = err
                    pool.shutdown(wait=False)
                    pool = None
                except Exception as err:  # noqa: BLE001 -- reported after all runs
                    out = err
                with lock:
                    results[config_hash(cfg)] = out
                    progress.finished(cfg, config_hash(cfg), out, time.perf_counter() - t0)
        finally:
            if pool is not None:
                pool.shutdown()

    threads = [threading.Thread(target=drive, args=(g,), daemon=True) for g in worker_devices(gpus)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _run_on_slurm(pending: list[dict], root: Path, slurm_kwargs: Optional[dict], cluster: Optional[str],
                  folder, progress: _Progress, reuse_stale: bool) -> dict:
    try:
        import submitit
    except ImportError as err:
        raise ImportError("executor='slurm' needs submitit: pip install submitit "
                          "(or pip install -e .[slurm])") from err
    executor = submitit.AutoExecutor(folder=str(folder or root / "_submitit"), cluster=cluster)
    executor.update_parameters(**(slurm_kwargs or {}))
    t0 = time.perf_counter()
    with executor.batch():
        jobs = [(cfg, executor.submit(run_cached, cfg, str(root), reuse_stale=reuse_stale)) for cfg in pending]
    results = {}
    for cfg, job in jobs:
        h = config_hash(cfg)
        try:
            results[h] = job.result()
        except Exception as err:  # noqa: BLE001 -- reported after all runs
            results[h] = err
        progress.finished(cfg, h, results[h], time.perf_counter() - t0)
    return results


def _run_here(pending: list[dict], root: Path, progress: _Progress, reuse_stale: bool) -> dict:
    """Sequentially in this process; configs whose lock another worker holds are put off until the others
    are done, then waited for."""
    results, busy = {}, []
    for wait, todo in ((False, pending), (True, busy)):
        for cfg in todo:
            h = config_hash(cfg)
            t0 = time.perf_counter()
            try:
                results[h] = run_cached(cfg, root, wait=wait, reuse_stale=reuse_stale)
            except RunLocked:
                busy.append(cfg)
                continue
            progress.finished(cfg, h, results[h], time.perf_counter() - t0)
    return results


def _report_old_folders(root: Path, pending: list[dict], reuse_stale: bool) -> dict:
    """Warn about folders that hold a pending config under an older hash; with ``reuse_stale`` return
    ``{hash: metrics}`` of those that hold a finished result (marked stale)."""
    if not pending:
        return {}
    old = old_hash_folders(root)
    reused = {}
    for cfg in pending:
        h = config_hash(cfg)
        for folder in old.get(h, []):
            status, reason, metrics = inspect_run(folder, cfg)
            if reuse_stale and metrics is not None and status in ("done", "diverged", "stale"):
                reused[h] = {**metrics, "stale_reason": f"stored under the older hash {folder.name}"}
                what = "reused (reuse_stale=True), marked stale"
            else:
                what = ("not reused: training it again under the new hash (pass reuse_stale=True to keep a "
                        "finished result, marked stale)")
            warnings.warn(f"config {h} ({_label(cfg)}) has a folder of an older config hash, {folder} "
                          f"({status}: {reason}); {what}", stacklevel=3)
            if h in reused:
                break
    return reused


def slurm_kwargs(executor: str, partition: str = "", timeout_min: int = SLURM_TIMEOUT_MIN,
                 cpus_per_task: int = 8) -> Optional[dict]:
    """The ``slurm_kwargs`` of :func:`run_sweep` for one GPU per run (None unless ``executor == "slurm"``):
    ``timeout_min`` (default :data:`SLURM_TIMEOUT_MIN`), ``gpus_per_node=1``, ``cpus_per_task`` and
    ``slurm_partition`` when one is named."""
    if executor != "slurm":
        return None
    out = dict(timeout_min=int(timeout_min), gpus_per_node=1, cpus_per_task=int(cpus_per_task))
    if partition:
        out["slurm_partition"] = partition
    return out


def _check_executor(executor: str, gpus) -> None:
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if executor == "slurm" and gpus is not None:
        raise ValueError("gpus is for executor='local'; request GPUs for Slurm jobs through slurm_kwargs")


def _cached_results(unique: dict, root: Path, reuse_stale: bool) -> tuple[dict, list[dict]]:
    """``({hash: metrics} of the finished runs (stale ones too with reuse_stale), [configs to run])``."""
    results: dict = {}
    pending = []
    for h, cfg in unique.items():
        status, reason, metrics = inspect_run(root / h, cfg)
        if status in ("done", "diverged"):
            results[h] = metrics
        elif status == "stale" and reuse_stale and metrics is not None:
            results[h] = {**metrics, "stale_reason": reason}
        else:
            pending.append(cfg)
    return results, pending


def _run_pending(pending: list[dict], root: Path, executor: str, gpus: Optional[Sequence],
                 slurm_kwargs: Optional[dict], submitit_cluster: Optional[str], submitit_folder,
                 reuse_stale: bool) -> dict:
    """``{hash: metrics or exception}`` of the ``pending`` configs, run by the chosen executor."""
    progress = _Progress(len(pending), len(gpus) if gpus else 1)
    try:
        if executor == "slurm":
            return _run_on_slurm(pending, root, slurm_kwargs, submitit_cluster, submitit_folder, progress,
                                 reuse_stale)
        if gpus:
            return _run_on_gpus(pending, root, list(gpus), progress, reuse_stale)
        return _run_here(pending, root, progress, reuse_stale)
    finally:
        progress.close()


def _raise_failures(results: dict, n_runs: int, root: Path) -> None:
    failed = {h: r for h, r in results.items() if isinstance(r, BaseException)}
    if failed:
        lines = [f"  {h}: {type(e).__name__}: {e}" for h, e in failed.items()]
        raise RuntimeError(f"{len(failed)} of {n_runs} runs failed (folders under {root}):\n" + "\n".join(lines))


def run_sweep(cfgs: Iterable[dict], root, executor: str = "local", gpus: Optional[Sequence] = None,
              slurm_kwargs: Optional[dict] = None, submitit_cluster: Optional[str] = None,
              submitit_folder=None, reuse_stale: bool = False) -> pd.DataFrame:
    """Run (or read from the cache) every config and return one row per config, in the given order: the
    config's keys (lists as tuples), the scalar metrics (a metric named like a config key gets the prefix
    ``metric_``), ``status`` ("done" or "diverged": a diverged run has NaN metrics and a ``reason``),
    ``stale`` / ``stale_reason`` (a result of other code or settings kept with ``reuse_stale=True``; by
    default such runs are trained again), ``hash`` and ``run_dir``.  Duplicate configs are run once.
    Every config is checked (:func:`nblib.training.run_config.check_runnable`) before any training starts.

    * ``executor="local"``, ``gpus=None``: one run after the other in this process (runs that another
      worker is training are waited for at the end).
    * ``executor="local"``, ``gpus=[0, 1, ...]``: one spawned worker process per listed GPU with
      ``CUDA_VISIBLE_DEVICES`` set to it (indices into this process's visible GPUs, :func:`worker_devices`;
      give the configs ``device="cuda"``); list a GPU twice
      (``gpus=[0, 0, 1, 1]``) to run two runs at a time on it when one run cannot fill it.
    * ``executor="slurm"``: one Slurm job (array task) per unfinished config through ``submitit``
      (``AutoExecutor(folder=submitit_folder or <root>/_submitit, cluster=submitit_cluster)``, then
      ``update_parameters(**slurm_kwargs)``, e.g. ``dict(timeout_min=600, slurm_partition="gpu",
      gpus_per_node=1)``); blocks until they finish.  Rerun after a job was killed: finished configs are
      read from the cache and killed ones resume.

    Any number of these sweeps may share ``root`` at once (see :mod:`nblib.runs.cache`: per-run locks).
    Failed runs do not stop the others (except in the sequential mode, which stops at the first); a
    RuntimeError naming every failed config is raised at the end.
    """
    _check_executor(executor, gpus)
    filled = [fill_cfg(c) for c in cfgs]
    hashes = [config_hash(c) for c in filled]
    unique = dict(zip(hashes, filled))
    root = Path(root).resolve()  # workers and Slurm jobs may start in another directory
    root.mkdir(parents=True, exist_ok=True)
    results, pending = _cached_results(unique, root, reuse_stale)
    if gpus:
        worker_devices(gpus)
    for cfg in pending:  # fail now, not after hours of other runs
        check_runnable(cfg)
        if gpus:
            _check_worker_device(cfg)
    results.update(_report_old_folders(root, pending, reuse_stale))
    pending = [c for c in pending if config_hash(c) not in results]
    results.update(_run_pending(pending, root, executor, gpus, slurm_kwargs, submitit_cluster, submitit_folder,
                                reuse_stale))
    _raise_failures(results, len(unique), root)
    return pd.DataFrame([_row(c, results[h], h, root) for h, c in zip(hashes, filled)])
