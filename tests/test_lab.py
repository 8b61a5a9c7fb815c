"""`python3 tasks.py lab` starts JupyterLab on the repository with the project's kernel."""
import sys
from pathlib import Path

import pytest

from labserver import ROOT, running_lab, tasks

NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_lab_command_opens_the_notebooks_of_the_repository():
    cmd, env = tasks.lab_command(["--no-browser"], bin_dir=Path("/venv/bin"))
    assert cmd[:2] == ["/venv/bin/jupyter", "lab"] and cmd[-1] == "--no-browser"
    assert f"--ServerApp.root_dir={ROOT}" in cmd and "--LabApp.default_url=/lab/tree/notebooks" in cmd
    assert env["JUPYTER_PATH"].split(":")[0] == "/venv/share/jupyter"  # the environment's kernel spec first


@pytest.mark.slow
def test_lab_serves_the_notebooks_with_the_projects_kernel(tmp_path):
    with running_lab(ROOT, tmp_path / "lab.log") as lab:
        specs = lab.get("/api/kernelspecs")
        assert specs["default"] == "python3"
        spec = specs["kernelspecs"]["python3"]["spec"]
        assert spec["display_name"] == "Python 3 (norm-robustness)"
        assert Path(spec["argv"][0]).parent == Path(sys.executable).parent  # this environment's Python
        listing = lab.get("/api/contents/notebooks")
        names = {item["name"]: item["type"] for item in listing["content"]}
        assert all(names.get(nb) == "notebook" for nb in NOTEBOOKS), names
        book = lab.get("/api/contents/notebooks/01_theorem1.ipynb")["content"]
        assert book["metadata"]["kernelspec"]["name"] == "python3"
        assert book["metadata"]["jupytext"]["notebook_metadata_filter"] == "kernelspec,-jupytext"  # paired
