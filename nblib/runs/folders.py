"""One run's folder of the sweep cache: its name, what it must hold, and whether it may be read.

Each config (filled with :func:`nblib.training.run_config.fill_cfg`, which resets settings the run does not use)
lives in
``<root>/<config_hash(cfg)>/``:

* ``cfg.json``        -- the full config (written before training);
* ``provenance.json`` -- what produces the result besides the config: :func:`code_fingerprint` (SHA-256 of
  the nblib sources that may determine results and the pyautoattack version) and the resolved adversarial
  preset / attack settings (:func:`nblib.training.run_config.run_settings`);
* ``checkpoint.pt``, ``history.json``, ``metrics.json`` -- written by ``run_one``;
* ``versions.json``   -- :func:`versions`: torch / CUDA / cuDNN / python versions, git SHA of this repository,
  device name, CPU capability and torch build;
* ``DONE``            -- written last (:func:`done_record`: status, time, size and SHA-256 of the checkpoint).

:func:`run_status` says what a folder holds: ``done`` or ``diverged`` (a result), ``partial`` (resume),
``stale`` (a result or partial run of other code or other settings, or a finished run without the per-point
outcomes, :data:`nblib.runs.schema.OUTCOME_KEYS`, that the paired tests of the claims need), ``corrupt`` (must
not be read: unreadable JSON, ``metrics.json`` failing :func:`nblib.runs.schema.check_metrics`, a checkpoint
that does not match ``DONE``, ``cfg.json`` of another config) or ``new``.  This module only reads folders;
:mod:`nblib.runs.cache` trains into them under a lock and moves bad ones aside.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Optional

from nblib.results import read_json
from nblib.runs.schema import check_metrics, only_outcomes_missing
from nblib.runs.machine import machine
from nblib.training.checkpoint import CHECKPOINT
from nblib.training.run_config import canonical_cfg, fill_cfg, run_settings

__all__ = ["RESULT_PACKAGES", "config_hash", "run_dir_for", "versions", "fingerprinted_sources",
           "code_fingerprint", "provenance", "inspect_run", "run_status", "done_record", "old_hash_folders"]

_REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- names
def _canonical(cfg: dict) -> str:
    return json.dumps(canonical_cfg(cfg), sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(cfg: dict) -> str:
    """First 12 hex digits of the SHA-256 of the canonical JSON (sorted keys, no spaces) of the full config
    (``canonical_cfg(cfg)``: defaults filled, numbers normalised, settings the run does not use reset, keys added
    later left out at their default), so ``{}`` and ``DEFAULT_CFG`` hash alike, ``lr=1`` and ``lr=1.0`` too, and
    so do two configs that differ only in ``reg_gamma`` without norm decay (see
    :data:`nblib.training.run_config.IGNORED_UNLESS`); a config without ``compile`` hashes as before that key
    existed (:data:`nblib.training.run_config.OMITTED_AT_DEFAULT`).  What else decides the
    result (code, resolved presets) is checked separately (:func:`provenance`)."""
    return hashlib.sha256(_canonical(cfg).encode()).hexdigest()[:12]


def run_dir_for(root, cfg: dict) -> Path:
    """``<root>/<config_hash(cfg)>``."""
    return Path(root) / config_hash(cfg)


def old_hash_folders(root) -> dict:
    """``{current hash: [folder, ...]}`` for the run folders under ``root`` whose ``cfg.json``, filled by
    today's :func:`nblib.training.run_config.fill_cfg`, hashes to another name than the folder's (folders of an older
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


# --------------------------------------------------------------------------- versions
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
    changes to tracked files; None outside git), the device name, host and time, and the CPU capability and
    torch build (:func:`nblib.runs.machine.machine`)."""
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
        "host": platform.node(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **machine(),
    }


# --------------------------------------------------------------------------- provenance
#: The subpackages whose code determines a run's result (what it trains, on which data, with which norms and
#: attacks): every ``.py`` under them, a module added later included, is part of :func:`code_fingerprint`.  The
#: layers above them (runs, claims, experiments, pipeline, perf) read or schedule results and cannot change one.
RESULT_PACKAGES = ("norms", "models", "data", "attacks", "training")


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
    """The files of :func:`code_fingerprint`: ``nblib/<package>/**/*.py`` for each of :data:`RESULT_PACKAGES`."""
    return sorted(f for pkg in RESULT_PACKAGES for f in (_REPO / "nblib" / pkg).rglob("*.py")
                  if "__pycache__" not in f.parts)


def code_fingerprint() -> str:
    """First 16 hex digits of the SHA-256 of :func:`fingerprinted_sources` (path and bytes, sorted by path)
    and the installed pyautoattack version: changes whenever code that may determine a result changes (a
    comment too: the cache prefers a needless rerun to a wrong result)."""
    return _fingerprint_of(tuple(str(f) for f in fingerprinted_sources()))


def provenance(cfg: dict) -> dict:
    """What produces the result of ``cfg`` besides the config itself (stored as ``provenance.json``):
    ``code`` (:func:`code_fingerprint`) and ``settings`` (:func:`nblib.training.run_config.run_settings`: the resolved
    adversarial preset and attack set)."""
    return json.loads(json.dumps({"code": code_fingerprint(), "settings": run_settings(cfg)}))


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


# --------------------------------------------------------------------------- the DONE marker
def _file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return path.stat().st_size, h.hexdigest()


def _load_problem(path: Path) -> Optional[str]:
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any unreadable file is the same problem
        return f"{path.name} cannot be loaded ({type(err).__name__}: {err})"
    return None


def done_record(run_dir: Path, status: str) -> dict:
    """The JSON of ``DONE`` for a run of ``status`` that has just finished in ``run_dir``: the status, the
    time and, for a ``done`` run, the size and SHA-256 of its checkpoint, which must load
    (RuntimeError otherwise: no DONE may be written)."""
    done = {"status": status, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if status == "done":
        problem = _load_problem(run_dir / CHECKPOINT)
        if problem:
            raise RuntimeError(f"run {run_dir} finished but {problem}; no DONE written")
        done["checkpoint_bytes"], done["checkpoint_sha256"] = _file_digest(run_dir / CHECKPOINT)
    return done


def _checkpoint_problem(run_dir: Path, done) -> Optional[str]:
    """Why the checkpoint of a finished run may not be read: not the one ``DONE`` recorded, or (a ``DONE``
    of older code, a time stamp) not loadable."""
    if not isinstance(done, dict):
        return _load_problem(run_dir / CHECKPOINT)
    ckpt = run_dir / CHECKPOINT
    if not ckpt.exists():
        return f"DONE but {CHECKPOINT} missing"
    size, digest = _file_digest(ckpt)
    if size != done.get("checkpoint_bytes") or digest != done.get("checkpoint_sha256"):
        return (f"{CHECKPOINT} ({size} bytes, sha256 {digest[:12]}) is not the checkpoint DONE recorded "
                f"({done.get('checkpoint_bytes')} bytes, sha256 {str(done.get('checkpoint_sha256'))[:12]}): "
                "truncated or replaced")
    return None


# --------------------------------------------------------------------------- folder status
def _cfg_problem(run_dir: Path, cfg: dict) -> Optional[str]:
    """Why ``cfg.json`` (when there is one) is not ``cfg``'s."""
    h = config_hash(cfg)
    cfg_path = run_dir / "cfg.json"
    if cfg_path.exists():
        try:
            stored = read_json(cfg_path)
            stored_hash = config_hash(stored) if isinstance(stored, dict) else None
        except ValueError:
            stored_hash = None
        if stored_hash != h:
            return f"cfg.json unreadable or does not hash to {h}"
    return None


def _inspect_finished(run_dir: Path, cfg: dict, stale: Optional[str]) -> tuple[str, str, Optional[dict]]:
    """:func:`inspect_run` of a folder with ``DONE``; ``stale``: how its provenance differs, or None."""
    try:
        done = read_json(run_dir / "DONE")
    except ValueError:
        done = None  # a DONE of older code (a time stamp): checked by loading the checkpoint
    try:
        metrics = read_json(run_dir / "metrics.json")
    except (OSError, ValueError) as err:
        return "corrupt", f"DONE but metrics.json missing or unreadable ({err})", None
    if not isinstance(done, dict) and isinstance(metrics, dict) and "status" not in metrics:
        metrics = {**metrics, "status": "done"}  # written before runs recorded a status
    problems = check_metrics(metrics, cfg)
    if only_outcomes_missing(problems):  # older code: the result cannot take part in a paired test
        stale = "; ".join(filter(None, [stale, "no per-point outcomes (" + ", ".join(problems) + ")"]))
    elif problems:
        return "corrupt", "metrics.json fails the schema: " + "; ".join(problems), None
    try:
        if not isinstance(read_json(run_dir / "history.json"), list):
            return "corrupt", "history.json is not a list of epochs", None
    except (OSError, ValueError) as err:
        return "corrupt", f"DONE but history.json missing or unreadable ({err})", None
    if metrics["status"] == "done":
        problem = _checkpoint_problem(run_dir, done)
        if problem:
            return "corrupt", problem, None
    if stale:
        return "stale", f"result of other code or settings: {stale}", metrics
    return metrics["status"], "finished" if metrics["status"] == "done" else metrics["reason"], metrics


def _inspect_folder(run_dir: Path, cfg: dict) -> tuple[str, str, Optional[dict]]:
    problem = _cfg_problem(run_dir, cfg)
    if problem:
        return "corrupt", problem, None
    prov_path = run_dir / "provenance.json"
    try:
        stored_prov = read_json(prov_path) if prov_path.exists() else None
    except ValueError as err:
        return "corrupt", f"provenance.json unreadable: {err}", None
    stale = _provenance_diff(stored_prov, provenance(cfg))
    if not (run_dir / "DONE").exists():
        return ("stale", f"unfinished run of other code or settings: {stale}", None) if stale and \
            (run_dir / CHECKPOINT).exists() else ("partial", "no DONE marker", None)
    if not (run_dir / "cfg.json").exists():
        return "corrupt", "DONE without cfg.json", None
    return _inspect_finished(run_dir, cfg, stale)


def inspect_run(run_dir: Path, cfg: dict) -> tuple[str, str, Optional[dict]]:
    """``(status, reason, metrics)`` of :func:`run_status` for the filled ``cfg``; ``metrics`` (validated
    by :func:`check_metrics`) for ``done`` / ``diverged`` and for a finished ``stale`` run, else None."""
    if not run_dir.exists():
        return "new", "no folder", None
    try:
        return _inspect_folder(run_dir, cfg)
    except FileNotFoundError as err:  # moved away by a worker holding the lock: look again under the lock
        return "partial", f"folder changed while reading ({err})", None


def run_status(run_dir, cfg: dict) -> tuple[str, str]:
    """``(status, reason)`` of a run folder for ``cfg``: ``"new"`` (no folder), ``"done"`` / ``"diverged"``
    (a result that passes :func:`check_metrics`, with ``DONE`` and, when done, the checkpoint ``DONE``
    recorded), ``"partial"`` (no ``DONE``: resume), ``"stale"`` (made by other code or other preset /
    attack settings, see :func:`provenance`) or ``"corrupt"`` (must not be read; ``reason`` says why)."""
    status, reason, _ = inspect_run(Path(run_dir), fill_cfg(cfg))
    return status, reason
