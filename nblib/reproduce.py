"""Run the notebooks of a profile headlessly with papermill.

    python -m nblib.reproduce --profile smoke [--only 01 02] [--device cuda] [--output-root outputs]
    python -m nblib.reproduce --profile paper --plan     # runs, cached runs, projected time; trains nothing

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


def runs_dir_of(params: dict) -> Path:
    """The sweep cache of a notebook's parameters: ``runs_dir`` relative to the notebooks' folder."""
    return (NOTEBOOKS / params["runs_dir"]).resolve()


def check_data(profile: str, config: dict, todo) -> None:
    """Stop before anything runs when a notebook's CIFAR-10 data is missing or corrupted, naming the step
    that provides it."""
    from nblib.cifar10 import verify_cifar10

    for nb in todo:
        section = config.get(nb.stem) or {}
        if section.get("dataset") != "cifar10":
            continue
        root = NOTEBOOKS / section.get("data_root", "")
        try:
            verify_cifar10(root)
        except FileNotFoundError as err:
            step = ("python3 tasks.py data --fixture" if "fixture" in str(section.get("data_root")) else
                    "python3 tasks.py data")
            raise SystemExit(f"{nb.stem} (params/{profile}.yaml) needs CIFAR-10 in {root.resolve()}: run "
                             f"`{step}` first.\n{err}") from None


def plan(profile: str, only=None, device: str | None = None, output_root: Path = ROOT / "outputs",
         probe_steps: int = 2) -> dict:
    """Print, per notebook of ``profile``, its training runs, how many are cached and the projected time
    (:mod:`nblib.plan`), without training anything; returns ``{notebook: table}``."""
    from nblib.experiments import RUN_CONFIGS
    from nblib.plan import notebook_parameters, plan_notebook

    config = load_profile(profile)
    output_dir = (Path(output_root) / profile).resolve()
    out, total = {}, 0.0
    for nb in notebooks(only):
        params = notebook_parameters(nb, {}, parameters_for(nb, profile, config, output_dir, device))
        if nb.stem not in RUN_CONFIGS:
            print(f"{nb.stem}: no training runs", flush=True)
            continue
        table = plan_notebook(nb.stem, params, runs_dir_of(params), NOTEBOOKS, probe_steps)
        out[nb.stem] = table
        if table.empty:
            print(f"{nb.stem}: no training runs", flush=True)
            continue
        seconds = float((table.train_s + table.attack_s).sum())
        total += seconds
        cached = int((table.status == "done").sum())
        print(f"{nb.stem}: {len(table)} runs, {cached} cached, {len(table) - cached} to train: about "
              f"{seconds / 3600:.2f} h on {params['device']} (training {table.train_s.sum() / 3600:.2f} h, "
              f"AutoAttack {table.attack_s.sum() / 3600:.2f} h; {', '.join(sorted(set(table.basis)))})",
              flush=True)
    print(f"total projected: {total / 3600:.2f} h (runs in sequence on one device)", flush=True)
    return out


def run(profile: str, only=None, device: str | None = None, output_root: Path = ROOT / "outputs") -> Path:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    config = load_profile(profile)
    check_data(profile, config, notebooks(only))
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
    parser.add_argument("--plan", action="store_true",
                        help="list the training runs, how many are cached and the projected time; train nothing")
    parser.add_argument("--probe-steps", type=int, default=2, help="--plan: timed steps per model and mode")
    args = parser.parse_args(argv)
    if args.plan:
        plan(args.profile, args.only, args.device, args.output_root, args.probe_steps)
    else:
        run(args.profile, args.only, args.device, args.output_root)


if __name__ == "__main__":
    main()
