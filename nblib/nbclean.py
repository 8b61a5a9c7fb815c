"""Keep the committed notebooks free of run outputs.

    python -m nblib.nbclean notebooks/*.ipynb     # strip in place, then `jupytext --sync` is not needed

A committed notebook carries no outputs and no execution counts, except the short verdict printed by the
cells marked ``# NBVAL_CHECK_OUTPUT``: nbval compares a fresh run against exactly those (lax mode). Figures,
tables and the full executed notebooks live in ``outputs/<profile>/``, written by ``nblib.reproduce``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

CHECKED = "# NBVAL_CHECK_OUTPUT"


def strip_outputs(nb):
    """``nb`` with every code cell's outputs and execution count removed, except the stdout/stderr
    streams of cells marked ``# NBVAL_CHECK_OUTPUT`` (nbval's reference), which keep an execution count
    (nbval skips a reference cell without one): their number among the code cells, as in a run from the top."""
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for number, cell in enumerate(code, 1):
        keep = CHECKED in cell.source
        cell.execution_count = number if keep else None
        cell.outputs = [o for o in cell.outputs if keep and o.output_type == "stream"]
        for out in cell.outputs:
            out.pop("execution_count", None)
        cell.metadata.pop("execution", None)
    return nb


def main(argv=None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        after = nbformat.writes(strip_outputs(nb))
        if after != before:
            path.write_text(after + "\n")
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
