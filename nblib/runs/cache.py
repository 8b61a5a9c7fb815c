"""One cached run of :func:`nblib.training.train.run_one`: :func:`run_cached` reads a finished run folder back (see
:mod:`nblib.runs.folders` for what it holds) or trains into it, safe for many workers.

Every file is written through :func:`nblib.results.write_atomic` (unique temporary name, fsync, rename).

**Workers.**  Any number of processes (local GPU workers, Slurm jobs, a notebook) may run on the same root:
a run is trained only while its lock ``<root>/_locks/<hash>.lock`` is held (``fcntl.flock``, released by
the kernel when the holder dies, so a killed worker's run is taken over by the next one, which resumes from
its checkpoint).  Another worker waits for it (printing which host / pid holds it since when) or raises
:class:`RunLocked`.  Folders are only inspected for repair, moved or written while their lock is held.

**Bad folders.**  Corrupt folders and unreadable AutoAttack state files are moved to ``<root>/_corrupt/``
with a ``REASON`` file; stale ones that are rerun go to ``<root>/_stale/`` (kept and marked with
``reuse_stale=True``).  A run whose loss becomes NaN or infinite is stored as ``diverged`` (metrics NaN,
the reason recorded) and is not retried.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import platform
import shutil
import sys
import time
import uuid
import warnings
from pathlib import Path

from nblib.training import train
from nblib.attacks.autoattack import AttackStateError
from nblib.results import read_json, write_atomic, write_json_atomic
from nblib.runs.folders import done_record, run_dir_for, inspect_run, provenance, versions
from nblib.runs.schema import check_metrics
from nblib.training.checkpoint import CheckpointError
from nblib.training.run_config import check_runnable, fill_cfg, run_settings

__all__ = ["RunLocked", "run_cached"]


# --------------------------------------------------------------------------- locks
class RunLocked(RuntimeError):
    """The run's lock is held by another live process (``run_cached(..., wait=False)``)."""


def _holder_text(path: Path) -> str:
    try:
        h = read_json(path)
        return f"host {h['host']} pid {h['pid']} since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


@contextlib.contextmanager
def _run_lock(root: Path, h: str, wait: bool):
    """Hold ``<root>/_locks/<h>.lock`` (``fcntl.flock``, exclusive) and record the holder in
    ``<h>.holder.json``.  Busy: wait (after one message naming the holder) or raise :class:`RunLocked`."""
    folder = root / "_locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{h}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    holder = folder / f"{h}.holder.json"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            who = _holder_text(holder)
            if not wait:
                raise RunLocked(f"run {h} is being trained by {who}") from None
            print(f"run {h} is being trained by {who}; waiting for it (a dead holder releases the lock and "
                  "this process resumes the run)", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        write_json_atomic(holder, {"host": platform.node(), "pid": os.getpid(),
                                   "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        yield
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- moving folders aside
def _move_aside(root: Path, path: Path, kind: str, reason: str) -> Path:
    """Move ``path`` (a run folder or one file of it) to ``<root>/<kind>/<name>.<time>.<pid>.<random>/``
    with a ``REASON`` file; call only while holding the run's lock."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    if path.is_dir():
        dest = root / kind / f"{path.name}.{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(dest))
    else:
        dest = root / kind / f"{path.parent.name}.{path.name}.{stamp}"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(dest / path.name))
    write_atomic(dest / "REASON", f"{path}: {reason}\n")
    verb = "not a valid result" if kind == "_corrupt" else "not from the current code and settings"
    warnings.warn(f"{path} is {verb} ({reason}); moved to {dest}", stacklevel=4)
    return dest


def _check_attack_state(root: Path, run_dir: Path) -> None:
    state = run_dir / train.AA_STATE
    if state.exists():
        try:
            json.loads(state.read_text())
        except ValueError as err:
            _move_aside(root, state, "_corrupt", f"unreadable AutoAttack state ({err}); the attack restarts")


# --------------------------------------------------------------------------- one cached run
def _diverged_metrics(cfg: dict, run_dir: Path, err: BaseException) -> dict:
    try:
        history = read_json(run_dir / "history.json")
    except (OSError, ValueError):
        history = []
    history = history if isinstance(history, list) else []
    nan = math.nan
    attacked = nan if cfg["attack"] != "none" else None  # NaN: no valid value; None: never measured
    return {"status": "diverged", "reason": f"{type(err).__name__}: {err}", "diverged_epoch": len(history) + 1,
            "epochs_trained": len(history), "clean_acc": nan, "robust_acc": attacked, "aa_clean_acc": attacked,
            "test_loss": nan, "train_loss": nan, "train_acc": nan, "layer_names": [], "norms_linf": [],
            "norms_l1": [], "linf_norm_product": nan, "log10_linf_norm_product": nan,
            "attack": cfg["attack"], "eval_eps": cfg["eval_eps"], "settings": run_settings(cfg)}


def _train_in(cfg: dict, root: Path, run_dir: Path, step_callback) -> dict:
    """Train (or resume) ``cfg`` in ``run_dir`` and mark it finished; the caller holds the lock."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "DONE").unlink(missing_ok=True)
    write_json_atomic(run_dir / "cfg.json", cfg)
    write_json_atomic(run_dir / "provenance.json", provenance(cfg))
    _check_attack_state(root, run_dir)
    try:
        metrics = train.run_one(cfg, run_dir, step_callback=step_callback)
    except CheckpointError as err:
        _move_aside(root, run_dir, "_corrupt", f"checkpoint unusable: {err}")
        return _train_in(cfg, root, run_dir, step_callback)
    except AttackStateError as err:
        _move_aside(root, run_dir / train.AA_STATE, "_corrupt", str(err))
        return _train_in(cfg, root, run_dir, step_callback)
    except FloatingPointError as err:
        metrics = _diverged_metrics(cfg, run_dir, err)
        if not (run_dir / "history.json").exists():  # diverged in the first epoch
            write_json_atomic(run_dir / "history.json", [])
        write_json_atomic(run_dir / "metrics.json", metrics)
    if metrics is None:
        raise RuntimeError(f"run_one stopped before the end of the run in {run_dir}")
    metrics = read_json(run_dir / "metrics.json")
    problems = check_metrics(metrics, cfg)
    if problems:
        raise RuntimeError(f"run {run_dir} produced metrics that fail the schema (a bug; no DONE written): "
                           + "; ".join(problems))
    done = done_record(run_dir, metrics["status"])
    write_json_atomic(run_dir / "versions.json", versions(cfg["device"]))
    write_json_atomic(run_dir / "DONE", done)
    return metrics


def run_cached(cfg: dict, root, *, wait: bool = True, reuse_stale: bool = False,
               step_callback=None) -> dict:
    """The metrics of ``cfg`` from ``<root>/<hash>/``: read back when finished (``done`` or ``diverged``),
    else trained under the run's lock (resuming a killed run) and stored there.

    Another process holding the lock: wait for it (``wait=True``; then its result is read, or, if it died,
    the run resumed here) or raise :class:`RunLocked`.  A ``stale`` folder (other code or settings, see
    :func:`nblib.runs.folders.run_status`) is moved to ``<root>/_stale/`` and the run trained again, unless
    ``reuse_stale``: then its metrics are returned with ``stale_reason`` added.  A ``corrupt`` folder is
    moved to ``<root>/_corrupt/`` (with its reason) and trained again.  A run whose loss becomes non-finite
    is stored and returned with ``status`` "diverged", NaN metrics and the ``reason``.  ``step_callback`` is
    passed to :func:`nblib.training.train.run_one` (a test hook)."""
    cfg = fill_cfg(cfg)
    root = Path(root)
    run_dir = run_dir_for(root, cfg)
    h = run_dir.name
    status, reason, metrics = inspect_run(run_dir, cfg)
    if status in ("done", "diverged"):
        return metrics
    if status == "stale" and reuse_stale and metrics is not None:
        return {**metrics, "stale_reason": reason}
    check_runnable(cfg)
    with _run_lock(root, h, wait):
        status, reason, metrics = inspect_run(run_dir, cfg)  # again: another worker may have finished it
        if status in ("done", "diverged"):
            return metrics
        if status == "stale":
            if reuse_stale and metrics is not None:
                return {**metrics, "stale_reason": reason}
            _move_aside(root, run_dir, "_stale", reason)
        elif status == "corrupt":
            _move_aside(root, run_dir, "_corrupt", reason)
        return _train_in(cfg, root, run_dir, step_callback)
