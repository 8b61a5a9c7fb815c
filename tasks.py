#!/usr/bin/env python3
"""Set up the package's environment and run one of its jobs; needs nothing but Python 3.10+.

    python3 tasks.py reproduce [--profile smoke] [--only 01 02] [--device cuda]
    python3 tasks.py test [pytest args]
    python3 tasks.py data [--root data] [--fixture]
    python3 tasks.py lab [jupyter lab args]      # JupyterLab on the notebooks, with the project's kernel
    python3 tasks.py readme                      # README's results section from outputs/
    python3 tasks.py gpu-check [--dry-run]       # what a first GPU session measures (outputs/gpu-check/)

The first call creates ``.venv`` and installs the package with its pinned dependencies (about three
minutes); later calls reuse it and reinstall only when ``pyproject.toml`` changes.
"""
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("NBLIB_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".nblib-installed"
KERNEL = ["--name", "python3", "--display-name", "Python 3 (norm-robustness)"]  # as in the notebooks' metadata


def ensure_env() -> None:
    """Create the virtual environment and install ``.[test,robustbench]`` (RobustBench's zoo for notebook 06)
    unless pyproject.toml is unchanged."""
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == want and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing norm-robustness and its pinned dependencies (first run: a few minutes)", flush=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-e", f"{ROOT}[test,robustbench]"], check=True)
    subprocess.run([str(PYTHON), "-m", "ipykernel", "install", "--sys-prefix", *KERNEL], check=True,
                   stdout=subprocess.DEVNULL)
    STAMP.write_text(want)


def lab_command(args=(), bin_dir: Path = BIN, root: Path = ROOT) -> tuple[list[str], dict]:
    """``jupyter lab`` of the environment on the repository ``root``, opened on ``notebooks/``, and its
    environment variables.

    A notebook's kernel runs in the notebook's folder, as under papermill (``cwd=notebooks/``), so the
    parameters cell's defaults (``output_dir = "../outputs/smoke"``) mean the same in both. ``JUPYTER_PATH``
    puts the environment's kernel spec first, so a user-level ``python3`` kernel cannot shadow it.
    """
    cmd = [str(bin_dir / "jupyter"), "lab", f"--ServerApp.root_dir={root}", "--LabApp.default_url=/lab/tree/notebooks",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # jupyter refuses to start as root without it (containers)
    env = dict(os.environ, JUPYTER_PATH=os.pathsep.join(
        [str(bin_dir.parent / "share" / "jupyter"), *filter(None, [os.environ.get("JUPYTER_PATH")])]))
    return [*cmd, *args], env


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("reproduce", "test", "setup", "lab", "readme", "data", "gpu-check"):
        print(__doc__)
        return 2
    ensure_env()
    job, rest = argv[0], argv[1:]
    if job == "setup":
        return 0
    if job == "lab":
        cmd, env = lab_command(rest)
        return subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if job == "data":
        return subprocess.run([str(PYTHON), "-m", "nblib.data.cifar10", *rest], cwd=ROOT).returncode
    if job == "readme":
        return subprocess.run([str(PYTHON), "-m", "nblib.pipeline.readme", *rest], cwd=ROOT).returncode
    if job == "gpu-check":
        return subprocess.run([str(PYTHON), "-m", "nblib.pipeline.gpu_check", *rest], cwd=ROOT).returncode
    if job == "reproduce":
        cmd = [str(PYTHON), "-m", "nblib.pipeline.reproduce", *(rest or ["--profile", "smoke"])]
    else:
        cmd = [str(PYTHON), "-m", "pytest", *rest]
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
