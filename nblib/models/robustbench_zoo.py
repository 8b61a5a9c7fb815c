"""RobustBench's CIFAR-10 model zoo (``pip install .[robustbench]``): list its entries, build an entry's
architecture with random weights (offline), or load its published weights.

Import quirks of ``robustbench==1.1.1``, handled here and nowhere else (:func:`robustbench_zoo`):

* its code imports the module ``autoattack`` (AutoAttack's name on GitHub) while its dependency is the PyPI
  package ``pyautoattack``: ``sys.modules["autoattack"]`` is aliased to ``pyautoattack`` before the import;
* it imports ``pkg_resources``, which setuptools >= 81 no longer ships: when absent, a stand-in module with the
  one function it calls (``resource_filename``, used for ImageNet file lists only) is registered.

Weights come only from ``robustbench.utils.load_model``, which downloads them (Google Drive, or the Hugging Face
hub for timm-hosted entries) into ``<model_dir>/<dataset>/<threat model>/<name>.pt``: online only.  Offline and
without that file, :func:`load_entry` raises :class:`MissingWeightsError` naming the file and the command that
fetches it.  Some zoo architectures define modules their ``forward`` never calls; the layer tables list them as
not reached (:func:`nblib.norms.layer_norms`).

The leaderboard's figures (clean and AutoAttack accuracy of each entry, percent) are not in the wheel: they are
shipped in ``robustbench_leaderboard.csv`` beside this module, copied from the ``model_info/cifar10/{Linf,L2}``
files of github.com/RobustBench/robustbench (its header names the commit); :func:`leaderboard` reads that
copy, or a ``model_info`` folder of a RobustBench checkout when given one.
"""
from __future__ import annotations

import importlib.resources
import json
import sys
import types
from pathlib import Path

import pandas as pd
from torch import nn

DATASET = "cifar10"
THREAT_MODELS = ("Linf", "L2")
LEADERBOARD_CSV = Path(__file__).with_name("robustbench_leaderboard.csv")
LEADERBOARD_COLUMNS = ["entry", "threat_model", "architecture", "eps", "clean_acc", "autoattack_acc",
                       "additional_data"]
INSTALL_HINT = "pip install -e '.[robustbench]'  (or: python3 tasks.py test, which installs it)"


class MissingWeightsError(FileNotFoundError):
    """An entry's published weights are not on disk and downloading was not allowed (or failed)."""


def _resource_filename(package: str, resource: str) -> str:
    return str(importlib.resources.files(package.rpartition(".")[0] or package) / resource)


def robustbench_zoo():
    """``(model_dicts, BenchmarkDataset, ThreatModel)`` of ``robustbench.model_zoo``, after the two import
    aliases of the module docstring.  ImportError naming the install command when robustbench is absent."""
    try:
        import pyautoattack
    except ImportError as e:
        raise ImportError(f"RobustBench needs pyautoattack (a dependency of this package): {INSTALL_HINT}") from e
    sys.modules.setdefault("autoattack", pyautoattack)
    try:
        import pkg_resources  # noqa: F401 -- present with setuptools < 81
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = _resource_filename
        sys.modules["pkg_resources"] = shim
    try:
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    except ImportError as e:
        raise ImportError(f"RobustBench's model zoo is an optional extra: {INSTALL_HINT} ({e})") from e
    return model_dicts, BenchmarkDataset, ThreatModel


def _entries(threat_model: str) -> dict:
    if threat_model not in THREAT_MODELS:
        raise ValueError(f"threat_model must be one of {THREAT_MODELS}, got {threat_model!r}")
    model_dicts, dataset, threat = robustbench_zoo()
    return model_dicts[dataset(DATASET)][threat(threat_model)]


def zoo_entries(threat_model: str = "Linf") -> list[str]:
    """Names of RobustBench's CIFAR-10 entries for ``threat_model`` (``"Linf"`` or ``"L2"``), in zoo order
    (``"Standard"`` is the plainly trained WideResNet-28-10)."""
    return list(_entries(threat_model))


def build_entry(name: str, threat_model: str = "Linf") -> nn.Module:
    """The architecture of zoo entry ``name`` with random (initial) weights, in eval mode: offline, no
    download.  KeyError naming the threat model when the entry is unknown; the zoo's own error when the
    architecture cannot be built (e.g. the ``Debenedetti2022Light_XCiT-*`` entries)."""
    entries = _entries(threat_model)
    if name not in entries:
        raise KeyError(f"{name!r} is not a CIFAR-10 {threat_model} entry of RobustBench's zoo")
    return entries[name]["model"]().eval()


def weights_path(name: str, threat_model: str = "Linf", model_dir="models") -> Path:
    """Where ``robustbench.utils.load_model`` keeps entry ``name``'s weights (``<name>.pt``; an ensemble keeps
    ``<name>.pt_m0.pt``, ``<name>.pt_m1.pt``, ...)."""
    return Path(model_dir) / DATASET / threat_model / f"{name}.pt"


def fetch_command(name: str, threat_model: str = "Linf", model_dir="models") -> str:
    """The shell command that downloads entry ``name``'s weights (online)."""
    return (f"python -c \"from nblib.models.robustbench_zoo import robustbench_zoo; robustbench_zoo(); "
            f"from robustbench.utils import load_model; load_model('{name}', model_dir='{model_dir}', "
            f"dataset='{DATASET}', threat_model='{threat_model}')\"")


def load_entry(name: str, threat_model: str = "Linf", model_dir="models", download: bool = False) -> nn.Module:
    """Zoo entry ``name`` with its published weights, in eval mode.

    Reads ``weights_path(...)`` when present; downloads it only with ``download=True`` (online).  Otherwise, or
    when the download fails, :class:`MissingWeightsError` names the missing file and :func:`fetch_command`."""
    path = weights_path(name, threat_model, model_dir)
    present = path.is_file() or Path(f"{path}_m0.pt").is_file()
    if not present and not download:
        raise MissingWeightsError(f"the weights of RobustBench entry {name!r} ({threat_model}) are not at {path}; "
                                  f"fetch them online with:\n  {fetch_command(name, threat_model, model_dir)}\n"
                                  "or run offline on random weights (random_weights: true)")
    robustbench_zoo()
    from robustbench.utils import load_model
    try:
        return load_model(name, model_dir=str(model_dir), dataset=DATASET, threat_model=threat_model).eval()
    except Exception as e:  # noqa: BLE001 -- gdown, requests and timm raise their own types offline
        if present:
            raise
        raise MissingWeightsError(f"could not download the weights of {name!r} ({threat_model}) to {path} "
                                  f"({type(e).__name__}: {e}); fetch them online with:\n  "
                                  f"{fetch_command(name, threat_model, model_dir)}") from e


def leaderboard(model_info_dir=None) -> pd.DataFrame:
    """RobustBench's CIFAR-10 figures, one row per entry and threat model: ``entry``, ``threat_model``
    (``Linf``/``L2``), ``architecture``, ``eps``, ``clean_acc`` and ``autoattack_acc`` (percent), ``source``.

    Without ``model_info_dir``: the copy shipped with the package (:data:`LEADERBOARD_CSV`, source and commit in
    its header).  With it: the JSON files ``<model_info_dir>/cifar10/<threat model>/<entry>.json`` of a
    RobustBench checkout (the ``model_info`` folder), e.g. a newer one."""
    if model_info_dir is None:
        table = pd.read_csv(LEADERBOARD_CSV, comment="#")
        source = LEADERBOARD_CSV.read_text().splitlines()[1].lstrip("# ")
    else:
        rows = []
        for threat in THREAT_MODELS:
            for path in sorted((Path(model_info_dir) / DATASET / threat).glob("*.json")):
                info = json.loads(path.read_text())
                rows.append({"entry": path.stem, "threat_model": threat,
                             **{k: info.get(k) for k in LEADERBOARD_COLUMNS[2:]}})
        if not rows:
            raise FileNotFoundError(f"no {DATASET}/<Linf|L2>/*.json under {model_info_dir}: give RobustBench's "
                                    "model_info folder")
        table, source = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS), str(model_info_dir)
    for col in ("clean_acc", "autoattack_acc"):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    return table.assign(source=source)
