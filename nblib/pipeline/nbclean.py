"""Keep the committed notebooks free of run outputs.

    python -m nblib.pipeline.nbclean notebooks/*.ipynb     # strip in place, then `jupytext --sync` is not needed
    python -m nblib.pipeline.nbclean --from outputs/smoke/executed notebooks/*.ipynb   # new verdict references

A committed notebook carries no outputs and no execution counts, except the short verdict printed by the
cells marked ``# NBVAL_CHECK_OUTPUT``: nbval compares a fresh run against exactly those (lax mode). Figures,
tables and the full executed notebooks live in ``outputs/<profile>/``, written by ``nblib.pipeline.reproduce``.
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


def adopt_checked_outputs(nb, executed):
    """``nb`` with the outputs of its ``# NBVAL_CHECK_OUTPUT`` cells taken from ``executed`` (the same notebook
    as papermill ran it: the cell with the same source), so nbval's references are those of the latest run."""
    ran = {cell.source: cell.outputs for cell in executed.cells if cell.cell_type == "code"}
    for cell in nb.cells:
        if cell.cell_type == "code" and CHECKED in cell.source:
            if cell.source not in ran:
                raise ValueError("a checked cell of the notebook is not in its executed copy: rerun it first")
            cell.outputs = ran[cell.source]
    return nb


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    source = None
    if args[:1] == ["--from"]:
        source, args = Path(args[1]), args[2:]
    for path in map(Path, args):
        nb = nbformat.read(path, as_version=4)
        if source is not None:
            nb = adopt_checked_outputs(nb, nbformat.read(source / path.name, as_version=4))
        before = path.read_text().rstrip("\n")
        after = nbformat.writes(strip_outputs(nb))
        if after != before:
            path.write_text(after + "\n")
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
