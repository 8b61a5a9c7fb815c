"""Where a notebook's results go: ``<output_dir>/figures``, ``tables``, ``metrics`` (JSON that tests read)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd


def _subdir(output_dir, kind: str) -> Path:
    path = Path(output_dir) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def jsonable(value):
    """``value`` with 0-dim tensors / numpy scalars as Python numbers and NaN / inf as None (JSON-safe)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; None reads back as "not measured"
    return value


def save_metrics(output_dir, name: str, metrics: dict) -> Path:
    """Write ``metrics/<name>.json`` (NaN and inf become null)."""
    path = _subdir(output_dir, "metrics") / f"{name}.json"
    path.write_text(json.dumps(jsonable(metrics), indent=2, sort_keys=True) + "\n")
    return path


def load_metrics(output_dir, name: str) -> dict:
    path = Path(output_dir) / "metrics" / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the notebook {name!r} for this profile first")
    return json.loads(path.read_text())


def save_table(table: pd.DataFrame, output_dir, name: str, index: bool = False, latex: bool = False,
               float_format: str = "%.1f") -> Path:
    """Write ``tables/<name>.csv``, a markdown copy ``tables/<name>.md`` and, with ``latex``, a LaTeX
    ``tabular`` ``tables/<name>.tex`` (numbers with ``float_format``, missing entries as ``--``)."""
    folder = _subdir(output_dir, "tables")
    table.to_csv(folder / f"{name}.csv", index=index)
    (folder / f"{name}.md").write_text(table.to_markdown(index=index) + "\n")
    if latex:
        (folder / f"{name}.tex").write_text(table.to_latex(index=index, float_format=float_format, na_rep="--"))
    return folder / f"{name}.csv"


def in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill, nbval), where a figure can be shown inline."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


def save_figure(fig, output_dir, name: str, dpi: int = 150) -> Path:
    """Write ``figures/<name>.png`` and ``.pdf``, show the figure inline when running in a notebook kernel,
    and close it (so the inline backend does not draw it a second time)."""
    import matplotlib.pyplot as plt

    folder = _subdir(output_dir, "figures")
    fig.savefig(folder / f"{name}.png", dpi=dpi, bbox_inches="tight")
    fig.savefig(folder / f"{name}.pdf", bbox_inches="tight")
    if in_notebook_kernel():
        from IPython.display import display

        display(fig)
    plt.close(fig)
    return folder / f"{name}.png"
