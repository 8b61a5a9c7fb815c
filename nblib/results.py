"""Where a notebook's results go: ``<output_dir>/figures``, ``tables``, ``metrics`` (JSON that tests read),
and the one atomic file writer of the package (:func:`write_atomic`, :func:`write_json_atomic`)."""
from __future__ import annotations

import base64
import json
import math
import sys
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

import numpy as np
import pandas as pd

__all__ = ["jsonable", "pack_outcomes", "unpack_outcomes",
           "write_atomic", "write_json_atomic", "read_json", "save_metrics", "load_metrics",
           "save_table", "save_figure"]

#: How :func:`write_json_atomic` stores non-finite floats (JSON has none); :func:`read_json` reads them back.
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _subdir(output_dir, kind: str) -> Path:
    path = Path(output_dir) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def jsonable(value, nonfinite: str = "string"):
    """``value`` with 0-dim tensors / numpy scalars as Python numbers, tuples as lists and NaN / inf as the
    strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (``"string"``: JSON-safe and distinguishable from None,
    "not measured"; :func:`read_json` turns them back into floats) or kept as floats (``"keep"``).  Every
    JSON file of the package (run folders and notebook metrics) uses this one convention."""
    if nonfinite not in ("string", "keep"):
        raise ValueError(f"nonfinite must be 'string' or 'keep', got {nonfinite!r}")
    if isinstance(value, dict):
        return {str(k): jsonable(v, nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, nonfinite) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value) and nonfinite != "keep":
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def pack_outcomes(mask) -> str:
    """Per-point outcomes (booleans, e.g. "classified correctly" on each test image) as the compact text
    ``"<n>:<base64 of the bits, packed little-endian>"`` (10,000 points take about 1.7 kB of JSON), read back
    by :func:`unpack_outcomes`."""
    bits = np.asarray(mask, dtype=bool).ravel()
    return f"{bits.size}:" + base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode("ascii")


def unpack_outcomes(text: str):
    """The boolean numpy array of :func:`pack_outcomes`; ValueError when ``text`` is not such a string."""
    try:
        n, data = text.split(":", 1)
        n = int(n)
        raw = np.frombuffer(base64.b64decode(data.encode("ascii"), validate=True), dtype=np.uint8)
    except (AttributeError, ValueError, TypeError) as err:
        raise ValueError(f"not packed per-point outcomes ('<n>:<base64>'): {str(text)[:40]!r} ({err})") from None
    if n < 0 or raw.size != (n + 7) // 8:
        raise ValueError(f"packed outcomes of {n} points need {(n + 7) // 8} bytes, got {raw.size}")
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool)


def write_atomic(path, data: Union[bytes, str, Callable]) -> Path:
    """Write ``path`` so that readers see the old file or the whole new one, never a part: the content
    (bytes, text, or ``write(binary_file)``) goes to a temporary file with a unique name in the same
    folder (several processes may write the same path at once), is fsynced, then renamed over ``path``
    (``os.replace`` is atomic on POSIX).  The temporary file is removed when writing fails."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path, obj, indent: int = 1) -> Path:
    """:func:`write_atomic` of ``obj`` as JSON (sorted keys; non-finite floats as ``"NaN"`` /
    ``"Infinity"`` / ``"-Infinity"``, so that NaN and None -- "not measured" -- stay apart)."""
    return write_atomic(path, json.dumps(jsonable(obj), indent=indent, sort_keys=True,
                                         allow_nan=False) + "\n")


def _decode_nonfinite(value):
    if isinstance(value, dict):
        return {k: _decode_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_nonfinite(v) for v in value]
    if isinstance(value, str) and value in NONFINITE:
        return NONFINITE[value]
    return value


def read_json(path):
    """The JSON of ``path`` with the non-finite strings of :func:`write_json_atomic` as floats.  Raises
    ValueError naming the file when it is not valid JSON (OSError when it cannot be read)."""
    path = Path(path)
    text = path.read_text()
    try:
        return _decode_nonfinite(json.loads(text))
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}; {len(text)} characters)") from err


def save_metrics(output_dir, name: str, metrics: dict) -> Path:
    """Write ``metrics/<name>.json`` atomically (:func:`write_json_atomic`: NaN and None stay apart)."""
    return write_json_atomic(_subdir(output_dir, "metrics") / f"{name}.json", metrics, indent=2)


def load_metrics(output_dir, name: str) -> dict:
    """The metrics JSON of notebook ``name`` under ``output_dir`` (:func:`read_json`: NaN back as floats)."""
    path = Path(output_dir) / "metrics" / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the notebook {name!r} for this profile first")
    return read_json(path)


def save_table(table: pd.DataFrame, output_dir, name: str, index: bool = False, latex: bool = False,
               float_format: str = "%.1f") -> Path:
    """Write ``tables/<name>.csv``, a markdown copy ``tables/<name>.md`` and, with ``latex``, a LaTeX
    ``tabular`` ``tables/<name>.tex`` (numbers with ``float_format``, missing entries as ``--``)."""
    folder = _subdir(output_dir, "tables")
    write_atomic(folder / f"{name}.csv", table.to_csv(index=index))
    write_atomic(folder / f"{name}.md", table.to_markdown(index=index) + "\n")
    if latex:
        write_atomic(folder / f"{name}.tex", table.to_latex(index=index, float_format=float_format, na_rep="--"))
    return folder / f"{name}.csv"


def is_terminal(stream=None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is an interactive terminal: progress bars there, one flushed
    line per step elsewhere (a log file, CI, a notebook run by papermill).  A stream without ``isatty`` or a
    closed one is not a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


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
