"""Run the notebooks of a profile headlessly with papermill.

    python -m nblib.reproduce --profile smoke [--only 01 02] [--device cuda] [--output-root outputs]

Each notebook ``notebooks/NN_name.ipynb`` gets the flat parameters of its section in
``params/<profile>.yaml`` plus ``profile``, ``output_dir`` and ``device``; the executed copy goes to
``outputs/<profile>/executed/``, its figures, tables and metrics JSON under ``outputs/<profile>/``.
A failing notebook stops the run with the notebook's name and the failing cell.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PARAMS = ROOT / "params"
INJECTED = ("profile", "output_dir", "device")


def notebooks(only=None) -> list[Path]:
    """The ordered notebooks, optionally only those whose name starts with one of ``only``."""
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [nb for nb in found if any(nb.stem.startswith(o) for o in only)]
        if not found:
            raise SystemExit(f"no notebook matches --only {' '.join(only)}")
    return found


def load_profile(profile: str) -> dict:
    path = PARAMS / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PARAMS.glob("*.yaml"))
        raise SystemExit(f"unknown profile {profile!r}: no {path}; known profiles: {known}")
    return yaml.safe_load(path.read_text()) or {}


def parameters_for(nb: Path, profile: str, config: dict, output_dir: Path, device: str | None) -> dict:
    """The profile's section for ``nb`` plus the injected names; every name must be a notebook parameter."""
    import papermill

    section = dict(config.get(nb.stem) or {})
    params = {**section, "profile": profile, "output_dir": str(output_dir)}
    if device is not None or "device" not in section:
        params["device"] = device or config.get("device", "cpu")
    declared = set(papermill.inspect_notebook(str(nb)))
    unknown = sorted(set(params) - declared)
    if unknown:
        raise SystemExit(f"{nb.name}: parameters {unknown} from params/{profile}.yaml are not in its parameters cell")
    return params


def run(profile: str, only=None, device: str | None = None, output_root: Path = ROOT / "outputs") -> Path:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    config = load_profile(profile)
    output_dir = (Path(output_root) / profile).resolve()
    executed = output_dir / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    todo = notebooks(only)
    for i, nb in enumerate(todo, 1):
        params = parameters_for(nb, profile, config, output_dir, device)
        print(f"[{i}/{len(todo)}] {nb.stem} ({profile})", flush=True)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(str(nb), str(executed / nb.name), parameters=params, kernel_name="python3",
                                       cwd=str(NOTEBOOKS), progress_bar=sys.stderr.isatty(), log_output=False)
        except PapermillExecutionError as err:
            raise SystemExit(f"notebook {nb.name} failed in cell {err.exec_count} ({err.ename}: {err.evalue}); "
                             f"see {executed / nb.name}") from None
        print(f"    done in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"outputs in {output_dir}", flush=True)
    return output_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke", help="params/<profile>.yaml (default: smoke)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only notebooks whose names start with these")
    parser.add_argument("--device", help="torch device for every notebook (default: the profile's, else cpu)")
    parser.add_argument("--output-root", type=Path, default=ROOT / "outputs", help="default: outputs/")
    args = parser.parse_args(argv)
    run(args.profile, args.only, args.device, args.output_root)


if __name__ == "__main__":
    main()
