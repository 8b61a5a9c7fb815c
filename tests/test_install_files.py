"""environment.yml and pyproject.toml describe the same environment."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[=<>!~\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = project["dependencies"] + extras["test"] + extras["robustbench"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_specs = {_name(s.split("=")[0] if "==" not in s else s): s for s in conda + pip if not s.startswith("-e")}
    pinned = [r for r in reqs if "==" in r]
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(pinned)
    for req in pinned:
        assert env_specs.get(_name(req)) == req, f"{req} is pinned in pyproject.toml but not in environment.yml"
    missing = {_name(r) for r in reqs} - set(env_specs)
    assert not missing, f"environment.yml lacks {sorted(missing)}"
    assert "-e ." in pip
