"""Sweeps of :func:`nblib.train.run_one` with one cached folder per config, safe for many workers.

Each config (filled with :func:`nblib.train.fill_cfg`, which resets settings the run does not use) lives in
``<root>/<config_hash(cfg)>/``:

* ``cfg.json``        -- the full config (written before training);
* ``provenance.json`` -- what produces the result besides the config: :func:`code_fingerprint` (SHA-256 of
  the nblib sources that may determine results and the pyautoattack version) and the resolved adversarial
  preset / attack settings (:func:`nblib.train.run_settings`);
* ``checkpoint.pt``, ``history.json``, ``metrics.json`` -- written by ``run_one``;
* ``versions.json``   -- torch / CUDA / cuDNN / python versions, git SHA of this repository, device name;
* ``DONE``            -- written last (JSON: status, time, size and SHA-256 of the checkpoint).

Every file is written through :func:`nblib.results.write_atomic` (unique temporary name, fsync, rename).

**Workers.**  Any number of processes (local GPU workers, Slurm jobs, a notebook) may run sweeps on the
same root: a run is trained only while its lock ``<root>/_locks/<hash>.lock`` is held (``fcntl.flock``,
released by the kernel when the holder dies, so a killed worker's run is taken over by the next one, which
resumes from its checkpoint).  Another worker waits for it (printing which host / pid holds it since when)
or, in a sequential sweep, first runs the other configs.  Folders are only inspected for repair, moved or
written while their lock is held.

**What is returned.**  :func:`run_status` says what a folder holds: ``done`` or ``diverged`` (a result),
``partial`` (resume), ``stale`` (a result or partial run of other code or other settings: rerun by default,
kept and marked with ``reuse_stale=True``), ``corrupt`` (must not be read: unreadable JSON, ``metrics.json``
failing :func:`check_metrics`, a checkpoint that does not match ``DONE``, ``cfg.json`` of another config) or
``new``.  Corrupt folders and unreadable AutoAttack state files are moved to ``<root>/_corrupt/`` with a
``REASON`` file; stale ones that are rerun go to ``<root>/_stale/``.  A run whose loss becomes NaN or
infinite is stored as ``diverged`` (metrics NaN, the reason recorded) and is not retried.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd
from tqdm.auto import tqdm

from nblib import train
from nblib.attacks import AttackStateError
from nblib.results import read_json, write_atomic, write_json_atomic
from nblib.checkpoint import CheckpointError
from nblib.run_config import fill_cfg

__all__ = ["EXECUTORS", "NOT_FINGERPRINTED", "fingerprinted_sources", "RunLocked", "config_hash", "run_dir_for",
           "code_fingerprint", "provenance", "check_metrics", "run_status", "run_cached", "old_hash_folders",
           "run_sweep", "expand_grid", "slurm_kwargs", "versions"]

#: Values of ``run_sweep(executor=...)``.
EXECUTORS = ("local", "slurm")
_REPO = Path(__file__).resolve().parents[1]


def _canonical(cfg: dict) -> str:
    return json.dumps(fill_cfg(cfg), sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(cfg: dict) -> str:
    """First 12 hex digits of the SHA-256 of the canonical JSON (sorted keys, no spaces) of the full config
    (``fill_cfg(cfg)``: defaults filled, numbers normalised, settings the run does not use reset), so ``{}``
    and ``DEFAULT_CFG`` hash alike, ``lr=1`` and ``lr=1.0`` too, and so do two configs that differ only in
    ``reg_gamma`` without norm decay (see :data:`nblib.train.IGNORED_UNLESS`).  What else decides the
    result (code, resolved presets) is checked separately (:func:`provenance`)."""
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


# --------------------------------------------------------------------------- provenance
#: nblib sources that cannot change a run's result (the cache, tables, notebooks' helpers, benchmarks);
#: every other ``nblib/**/*.py`` -- training, data, models, norms, regularisers, attacks, and any module
#: added later -- is part of :func:`code_fingerprint`.
NOT_FINGERPRINTED = ("__init__.py", "sweep.py", "results.py", "experiments.py", "reproduce.py", "benchmark.py",
                     "verify.py", "toys.py", "timing.py", "plan.py", "throughput.py", "readme.py", "nbclean.py",
                     "verdicts.py")


@lru_cache(maxsize=None)
def _fingerprint_of(files: tuple) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(str(Path(path).relative_to(_REPO)).encode() + b"\0" + Path(path).read_bytes() + b"\0")
    try:
        from importlib.metadata import version
        h.update(b"pyautoattack " + version("pyautoattack").encode())
    except Exception:  # noqa: BLE001 -- not installed: no attack code to fingerprint
        h.update(b"pyautoattack missing")
    return h.hexdigest()[:16]


def fingerprinted_sources() -> list[Path]:
    """The files of :func:`code_fingerprint`: ``nblib/**/*.py`` except the top-level modules named in
    :data:`NOT_FINGERPRINTED`."""
    base = _REPO / "nblib"
    return sorted(f for f in base.rglob("*.py")
                  if not (f.parent == base and f.name in NOT_FINGERPRINTED) and "__pycache__" not in f.parts)


def code_fingerprint() -> str:
    """First 16 hex digits of the SHA-256 of :func:`fingerprinted_sources` (path and bytes, sorted by path)
    and the installed pyautoattack version: changes whenever code that may determine a result changes (a
    comment too: the cache prefers a needless rerun to a wrong result)."""
    return _fingerprint_of(tuple(str(f) for f in fingerprinted_sources()))


def provenance(cfg: dict) -> dict:
    """What produces the result of ``cfg`` besides the config itself (stored as ``provenance.json``):
    ``code`` (:func:`code_fingerprint`) and ``settings`` (:func:`nblib.train.run_settings`: the resolved
    adversarial preset and attack set)."""
    return json.loads(json.dumps({"code": code_fingerprint(), "settings": train.run_settings(cfg)}))


def _provenance_diff(stored, current: dict) -> Optional[str]:
    if not isinstance(stored, dict):
        return "no provenance.json (made by older code)"
    diffs = []
    if stored.get("code") != current["code"]:
        diffs.append(f"code fingerprint {stored.get('code')} != current {current['code']}")
    old, new = stored.get("settings") or {}, current["settings"]
    for key in new:
        if old.get(key) != new[key]:
            diffs.append(f"{key} settings {old.get(key)} != current {new[key]}")
    return "; ".join(diffs) or None


# --------------------------------------------------------------------------- metrics schema
def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_metrics(metrics, cfg: dict) -> list[str]:
    """Problems of ``metrics`` (as read back by :func:`nblib.results.read_json`) for the filled ``cfg``;
    empty when it may be returned.  A finished run (``status`` "done") needs: ``clean_acc``, ``train_acc``
    in [0, 1]; finite ``test_loss``, ``train_loss`` >= 0; ``epochs_trained == cfg["epochs"]``; positive
    integer ``n_train``, ``n_test``, ``n_params``, ``global_steps`` >= 0; ``layer_names`` (strings) and
    finite non-negative ``norms_linf`` / ``norms_l1`` of the same length; ``linf_norm_product`` >= 0 (inf
    allowed: an overflowing product); ``robust_acc`` and ``aa_clean_acc`` in [0, 1] when ``cfg`` attacks,
    else None; ``lip_mean`` / ``lip_max`` finite >= 0 with ``local_lipschitz``, else None; ``attack`` and
    ``eval_eps`` equal to the config's.  A diverged run (``status`` "diverged") needs a ``reason``, the
    epoch, and NaN (never a number) for the accuracies and losses it has no valid value for."""
    if not isinstance(metrics, dict):
        return [f"metrics is a {type(metrics).__name__}, not a dict"]
    problems = []

    def need(key, ok, what):
        if key not in metrics:
            problems.append(f"{key} missing")
        elif not ok(metrics[key]):
            problems.append(f"{key} = {metrics[key]!r} is not {what}")

    def prob(v):
        return _is_num(v) and 0.0 <= v <= 1.0

    def finite_nonneg(v):
        return _is_num(v) and math.isfinite(v) and v >= 0

    def nan(v):
        return isinstance(v, float) and math.isnan(v)

    status = metrics.get("status")
    if status == "diverged":
        need("reason", lambda v: isinstance(v, str) and v, "a non-empty string")
        need("diverged_epoch", lambda v: isinstance(v, int) and 1 <= v <= cfg["epochs"], "an epoch of the run")
        for key in ("clean_acc", "test_loss", "train_loss", "train_acc"):
            need(key, nan, "NaN (a diverged run has no valid value)")
        need("robust_acc", nan if cfg["attack"] != "none" else (lambda v: v is None),
             "NaN (diverged)" if cfg["attack"] != "none" else "None (no attack in the config)")
        return problems
    if status != "done":
        return [f"status = {status!r} is not 'done' or 'diverged'"]
    for key in ("clean_acc", "train_acc"):
        need(key, prob, "an accuracy in [0, 1]")
    for key in ("test_loss", "train_loss"):
        need(key, finite_nonneg, "a finite loss >= 0")
    need("epochs_trained", lambda v: v == cfg["epochs"] and isinstance(v, int), f"the {cfg['epochs']} epochs")
    for key in ("n_train", "n_test", "n_params"):
        need(key, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive int")
    need("global_steps", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0")
    need("layer_names", lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
         "a list of layer names")
    n_layers = len(metrics["layer_names"]) if isinstance(metrics.get("layer_names"), list) else -1
    for key in ("norms_linf", "norms_l1"):
        need(key, lambda v: isinstance(v, list) and len(v) == n_layers and all(finite_nonneg(x) for x in v),
             f"a list of {n_layers} finite norms >= 0")
    need("linf_norm_product", lambda v: _is_num(v) and not math.isnan(v) and v >= 0, "a product of norms >= 0")
    attacked = cfg["attack"] != "none"
    for key in ("robust_acc", "aa_clean_acc"):
        need(key, prob if attacked else (lambda v: v is None),
             "an accuracy in [0, 1]" if attacked else "None (no attack in the config)")
    lip = cfg["local_lipschitz"]
    for key in ("lip_mean", "lip_max"):
        need(key, finite_nonneg if lip else (lambda v: v is None),
             "a finite constant >= 0" if lip else "None (local_lipschitz off)")
    need("attack", lambda v: v == cfg["attack"], f"the config's attack {cfg['attack']!r}")
    need("eval_eps", lambda v: _is_num(v) and math.isclose(v, cfg["eval_eps"]), f"the config's {cfg['eval_eps']}")
    return problems


# --------------------------------------------------------------------------- folder status
def _file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return path.stat().st_size, h.hexdigest()


def _checkpoint_problem(run_dir: Path, done: dict) -> Optional[str]:
    ckpt = run_dir / train.CHECKPOINT
    if not ckpt.exists():
        return f"DONE but {train.CHECKPOINT} missing"
    size, digest = _file_digest(ckpt)
    if size != done.get("checkpoint_bytes") or digest != done.get("checkpoint_sha256"):
        return (f"{train.CHECKPOINT} ({size} bytes, sha256 {digest[:12]}) is not the checkpoint DONE recorded "
                f"({done.get('checkpoint_bytes')} bytes, sha256 {str(done.get('checkpoint_sha256'))[:12]}): "
                "truncated or replaced")
    return None


def _inspect(run_dir: Path, cfg: dict) -> tuple[str, str, Optional[dict]]:
    """``(status, reason, metrics)``; metrics (validated) for done / diverged / stale-but-finished."""
    if not run_dir.exists():
        return "new", "no folder", None
    try:
        h = config_hash(cfg)
        cfg_path = run_dir / "cfg.json"
        if cfg_path.exists():
            try:
                stored = read_json(cfg_path)
                stored_hash = config_hash(stored) if isinstance(stored, dict) else None
            except ValueError:
                stored_hash = None
            if stored_hash != h:
                return "corrupt", f"cfg.json unreadable or does not hash to {h}", None
        prov_path = run_dir / "provenance.json"
        try:
            stored_prov = read_json(prov_path) if prov_path.exists() else None
        except ValueError as err:
            return "corrupt", f"provenance.json unreadable: {err}", None
        stale = _provenance_diff(stored_prov, provenance(cfg))
        if not (run_dir / "DONE").exists():
            return ("stale", f"unfinished run of other code or settings: {stale}", None) if stale and \
                (run_dir / train.CHECKPOINT).exists() else ("partial", "no DONE marker", None)
        if not cfg_path.exists():
            return "corrupt", "DONE without cfg.json", None
        try:
            done = read_json(run_dir / "DONE")
        except ValueError:
            done = None  # a DONE of older code (a time stamp): checked by loading the checkpoint below
        try:
            metrics = read_json(run_dir / "metrics.json")
        except (OSError, ValueError) as err:
            return "corrupt", f"DONE but metrics.json missing or unreadable ({err})", None
        if not isinstance(done, dict) and isinstance(metrics, dict) and "status" not in metrics:
            metrics = {**metrics, "status": "done"}  # written before runs recorded a status
        problems = check_metrics(metrics, cfg)
        if problems:
            return "corrupt", "metrics.json fails the schema: " + "; ".join(problems), None
        try:
            if not isinstance(read_json(run_dir / "history.json"), list):
                return "corrupt", "history.json is not a list of epochs", None
        except (OSError, ValueError) as err:
            return "corrupt", f"DONE but history.json missing or unreadable ({err})", None
        if metrics["status"] == "done":
            if isinstance(done, dict):
                problem = _checkpoint_problem(run_dir, done)
            else:
                problem = _load_problem(run_dir / train.CHECKPOINT)
            if problem:
                return "corrupt", problem, None
        if stale:
            return "stale", f"result of other code or settings: {stale}", metrics
        return metrics["status"], "finished" if metrics["status"] == "done" else metrics["reason"], metrics
    except FileNotFoundError as err:  # moved away by a worker holding the lock: look again under the lock
        return "partial", f"folder changed while reading ({err})", None


def _load_problem(path: Path) -> Optional[str]:
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any unreadable file is the same problem
        return f"{path.name} cannot be loaded ({type(err).__name__}: {err})"
    return None


def run_status(run_dir, cfg: dict) -> tuple[str, str]:
    """``(status, reason)`` of a run folder for ``cfg``: ``"new"`` (no folder), ``"done"`` / ``"diverged"``
    (a result that passes :func:`check_metrics`, with ``DONE`` and, when done, the checkpoint ``DONE``
    recorded), ``"partial"`` (no ``DONE``: resume), ``"stale"`` (made by other code or other preset /
    attack settings, see :func:`provenance`) or ``"corrupt"`` (must not be read; ``reason`` says why)."""
    status, reason, _ = _inspect(Path(run_dir), fill_cfg(cfg))
    return status, reason


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
    state = run_dir / "autoattack_state.json"
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
            "attack": cfg["attack"], "eval_eps": cfg["eval_eps"], "settings": train.run_settings(cfg)}


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
        _move_aside(root, run_dir / "autoattack_state.json", "_corrupt", str(err))
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
    done = {"status": metrics["status"], "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if metrics["status"] == "done":
        problem = _load_problem(run_dir / train.CHECKPOINT)
        if problem:
            raise RuntimeError(f"run {run_dir} finished but {problem}; no DONE written")
        done["checkpoint_bytes"], done["checkpoint_sha256"] = _file_digest(run_dir / train.CHECKPOINT)
    write_json_atomic(run_dir / "versions.json", versions(cfg["device"]))
    write_json_atomic(run_dir / "DONE", done)
    return metrics


def run_cached(cfg: dict, root, *, wait: bool = True, reuse_stale: bool = False,
               step_callback=None) -> dict:
    """The metrics of ``cfg`` from ``<root>/<hash>/``: read back when finished (``done`` or ``diverged``),
    else trained under the run's lock (resuming a killed run) and stored there.

    Another process holding the lock: wait for it (``wait=True``; then its result is read, or, if it died,
    the run resumed here) or raise :class:`RunLocked`.  A ``stale`` folder (other code or settings, see
    :func:`run_status`) is moved to ``<root>/_stale/`` and the run trained again, unless ``reuse_stale``:
    then its metrics are returned with ``stale_reason`` added.  A ``corrupt`` folder is moved to
    ``<root>/_corrupt/`` (with its reason) and trained again.  A run whose loss becomes non-finite is stored
    and returned with ``status`` "diverged", NaN metrics and the ``reason``.  ``step_callback`` is passed to
    :func:`nblib.train.run_one` (a test hook)."""
    cfg = fill_cfg(cfg)
    root = Path(root)
    h = config_hash(cfg)
    run_dir = root / h
    status, reason, metrics = _inspect(run_dir, cfg)
    if status in ("done", "diverged"):
        return metrics
    if status == "stale" and reuse_stale and metrics is not None:
        return {**metrics, "stale_reason": reason}
    train.check_runnable(cfg)
    with _run_lock(root, h, wait):
        status, reason, metrics = _inspect(run_dir, cfg)  # again: another worker may have finished it
        if status in ("done", "diverged"):
            return metrics
        if status == "stale":
            if reuse_stale and metrics is not None:
                return {**metrics, "stale_reason": reason}
            _move_aside(root, run_dir, "_stale", reason)
        elif status == "corrupt":
            _move_aside(root, run_dir, "_corrupt", reason)
        return _train_in(cfg, root, run_dir, step_callback)


def old_hash_folders(root) -> dict:
    """``{current hash: [folder, ...]}`` for the run folders under ``root`` whose ``cfg.json``, filled by
    today's :func:`nblib.train.fill_cfg`, hashes to another name than the folder's (folders of an older
    hashing rule or of older default keys).  Folders whose config today's rules reject are left out."""
    out: dict = {}
    root = Path(root)
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if d.name.startswith(("_", ".")) or not (d / "cfg.json").is_file():
            continue
        try:
            h = config_hash(read_json(d / "cfg.json"))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        if h != d.name:
            out.setdefault(h, []).append(d)
    return out


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
        tty = sys.stderr.isatty() if hasattr(sys.stderr, "isatty") else False
        self.bar = tqdm(total=total, desc="runs") if tty else None

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


def _worker_init(gpu) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def _run_on_gpus(pending: list[dict], root: Path, gpus: Sequence, progress: _Progress, reuse_stale: bool) -> dict:
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

    threads = [threading.Thread(target=drive, args=(g,), daemon=True) for g in gpus]
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
            status, reason, metrics = _inspect(folder, cfg)
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
              submitit_folder=None, reuse_stale: bool = False) -> pd.DataFrame:
    """Run (or read from the cache) every config and return one row per config, in the given order: the
    config's keys (lists as tuples), the scalar metrics (a metric named like a config key gets the prefix
    ``metric_``), ``status`` ("done" or "diverged": a diverged run has NaN metrics and a ``reason``),
    ``stale`` / ``stale_reason`` (a result of other code or settings kept with ``reuse_stale=True``; by
    default such runs are trained again), ``hash`` and ``run_dir``.  Duplicate configs are run once.
    Every config is checked (:func:`nblib.train.check_runnable`) before any training starts.

    * ``executor="local"``, ``gpus=None``: one run after the other in this process (runs that another
      worker is training are waited for at the end).
    * ``executor="local"``, ``gpus=[0, 1, ...]``: one spawned worker process per listed GPU with
      ``CUDA_VISIBLE_DEVICES`` set to it (give the configs ``device="cuda"``); list a GPU twice
      (``gpus=[0, 0, 1, 1]``) to run two runs at a time on it when one run cannot fill it.
    * ``executor="slurm"``: one Slurm job (array task) per unfinished config through ``submitit``
      (``AutoExecutor(folder=submitit_folder or <root>/_submitit, cluster=submitit_cluster)``, then
      ``update_parameters(**slurm_kwargs)``, e.g. ``dict(timeout_min=600, slurm_partition="gpu",
      gpus_per_node=1)``); blocks until they finish.  Rerun after a job was killed: finished configs are
      read from the cache and killed ones resume.

    Any number of these sweeps may share ``root`` at once (see the module docstring: per-run locks).
    Failed runs do not stop the others (except in the sequential mode, which stops at the first); a
    RuntimeError naming every failed config is raised at the end.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if executor == "slurm" and gpus is not None:
        raise ValueError("gpus is for executor='local'; request GPUs for Slurm jobs through slurm_kwargs")
    filled = [fill_cfg(c) for c in cfgs]
    hashes = [config_hash(c) for c in filled]
    unique = dict(zip(hashes, filled))
    root = Path(root).resolve()  # workers and Slurm jobs may start in another directory
    root.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    pending = []
    for h, cfg in unique.items():
        status, reason, metrics = _inspect(root / h, cfg)
        if status in ("done", "diverged"):
            results[h] = metrics
        elif status == "stale" and reuse_stale and metrics is not None:
            results[h] = {**metrics, "stale_reason": reason}
        else:
            pending.append(cfg)
    for cfg in pending:  # fail now, not after hours of other runs
        train.check_runnable(cfg)
    results.update(_report_old_folders(root, pending, reuse_stale))
    pending = [c for c in pending if config_hash(c) not in results]
    progress = _Progress(len(pending), len(gpus) if gpus else 1)
    try:
        if executor == "slurm":
            results.update(_run_on_slurm(pending, root, slurm_kwargs, submitit_cluster, submitit_folder, progress,
                                         reuse_stale))
        elif gpus:
            results.update(_run_on_gpus(pending, root, list(gpus), progress, reuse_stale))
        else:
            results.update(_run_here(pending, root, progress, reuse_stale))
    finally:
        progress.close()
    failed = {h: r for h, r in results.items() if isinstance(r, BaseException)}
    if failed:
        lines = [f"  {h}: {type(e).__name__}: {e}" for h, e in failed.items()]
        raise RuntimeError(f"{len(failed)} of {len(unique)} runs failed (folders under {root}):\n"
                           + "\n".join(lines))
    return pd.DataFrame([_row(c, results[h], h, root) for h, c in zip(hashes, filled)])
