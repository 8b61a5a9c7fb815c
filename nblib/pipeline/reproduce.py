"""Run the notebooks of a profile headlessly with papermill.

    python -m nblib.pipeline.reproduce --profile smoke [--only 01 02] [--device cuda] [--output-root outputs]
    python -m nblib.pipeline.reproduce --profile paper --plan     # runs, cached runs, projected time; trains nothing

Each notebook ``notebooks/NN_name.ipynb`` gets the flat parameters of its section in
``params/<profile>.yaml`` plus ``profile``, ``output_dir`` and ``device``; the executed copy goes to
``outputs/<profile>/executed/``, its figures, tables and metrics JSON under ``outputs/<profile>/``.

The whole profile is checked before anything runs: every top-level key is ``device`` or a notebook, every
key of a section is a parameter of that notebook, and every value has the type of the parameter's default
in the notebook. A notebook's previous outputs (the files under ``outputs/<profile>/`` whose names start
with its number) are deleted before it reruns, so a figure never outlives the run that made it. Progress:
one line per notebook and, when stdout is not a terminal, one line per executed cell with its time; what
the notebooks print reaches the terminal either way. A failing notebook stops the run with the notebook's
name and the failing cell.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import time
from pathlib import Path

import yaml

from nblib.results import is_terminal

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
PARAMS = ROOT / "params"
OUTPUT_KINDS = ("figures", "tables", "metrics")
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
#: Parameters that were renamed: ``{old name: (new name, how to write it, formatted with the old value)}``.
RENAMED = {"seed": ("seeds", "a list of training seeds (one run per seed): write seeds: [{value!r}]")}


class ProfileError(SystemExit):
    """A profile that cannot run: the message names the file, the key and the fix."""


def notebooks(only=None) -> list[Path]:
    """The ordered notebooks, optionally only those whose name starts with one of ``only``."""
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [nb for nb in found if any(nb.stem.startswith(o) for o in only)]
        if not found:
            raise SystemExit(f"no notebook matches --only {' '.join(only)}")
    return found


def notebook_defaults(nb: Path) -> dict:
    """``{name: default}`` of the parameters cell of ``nb`` (papermill's reading of it); a default that
    is not a literal maps to None (its type is not checked)."""
    import papermill

    defaults = {}
    for name, info in papermill.inspect_notebook(str(nb)).items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            defaults[name] = None
    return defaults


def type_mismatch(value, default) -> str | None:
    """Why ``value`` cannot replace ``default`` (None if it can): same type, an int may stand for a float,
    a bool for nothing else; list elements are checked against the default's first element."""
    def kind(v):
        return type(v).__name__

    if default is None:
        return None
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, list):
            return f"a {kind(value)}, but the notebook's default {default!r} is a list"
        for item in value if default else []:
            why = type_mismatch(item, default[0])
            if why:
                return f"a list holding {item!r}, which is {why}"
        return None
    else:
        ok = type(value) is type(default)
    if ok:
        return None
    hint = ""
    if isinstance(value, str) and isinstance(default, (int, float)):
        hint = " (YAML reads 1e-6 as a string: write 1.0e-6)" if re.fullmatch(r"[-+]?\d+e[-+]?\d+", value) else ""
    return f"a {kind(value)}, but the notebook's default {default!r} is a {kind(default)}{hint}"


def profile_path(profile: str, params_dir: Path = PARAMS) -> Path:
    """``params/<profile>.yaml``; ``profile`` must be a plain name (letters, digits, ``_``, ``-``)."""
    if not PROFILE_NAME.fullmatch(profile):
        raise ProfileError(f"profile {profile!r} is not a plain name (letters, digits, '_', '-'; no path): "
                           f"put the file in {params_dir}/ and pass its name without .yaml")
    path = Path(params_dir) / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in Path(params_dir).glob("*.yaml"))
        raise ProfileError(f"unknown profile {profile!r}: no {path}; known profiles: {known}")
    return path


def load_profile(profile: str, params_dir: Path = PARAMS) -> dict:
    """The checked contents of ``params/<profile>.yaml``: ``device`` (a string) and one section per
    notebook of flat ``parameter: value`` entries typed like the notebook's defaults."""
    path = profile_path(profile, params_dir)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ProfileError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise ProfileError(f"{path}: expected a mapping of notebook sections, got a {type(config).__name__}")
    books = {nb.stem: nb for nb in notebooks()}
    for key, section in config.items():
        if key == "device":
            if not isinstance(section, str):
                raise ProfileError(f"{path}: device = {section!r} must be a string such as cpu or cuda")
            continue
        if key not in books:
            raise ProfileError(f"{path}: unknown top-level key {key!r}; expected 'device' or a notebook "
                               f"section: {sorted(books)}")
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ProfileError(f"{path}: section {key!r} must map parameter names to values, "
                               f"got a {type(section).__name__}")
        defaults = notebook_defaults(books[key])
        for name, value in section.items():
            if name in ("profile", "output_dir"):
                raise ProfileError(f"{path}: {key}.{name} is set by nblib.pipeline.reproduce; "
                                  "remove it from the profile")
            if name not in defaults:
                new_name, how = RENAMED.get(name, (None, ""))
                if new_name in defaults:
                    raise ProfileError(f"{path}: {key}.{name} is not a parameter of notebooks/{key}.ipynb: it "
                                       f"became {new_name}, {how.format(value=value)}")
                raise ProfileError(f"{path}: {key}.{name} is not a parameter of notebooks/{key}.ipynb; "
                                   f"its parameters: {sorted(set(defaults) - {'profile', 'output_dir'})}")
            why = type_mismatch(value, defaults[name])
            if why:
                raise ProfileError(f"{path}: {key}.{name} = {value!r} is {why}")
    return config


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


def training_parameters(profile: str, output_root: Path = ROOT / "outputs") -> dict:
    """``{notebook: parameters}`` of the training notebooks (03, 04) of ``profile``, as they would run
    (:func:`nblib.pipeline.plan.notebook_parameters`): the input of :func:`nblib.pipeline.plan.profile_configs`."""
    from nblib.pipeline.plan import notebook_parameters

    config = load_profile(profile)
    return {nb.stem: notebook_parameters(nb, {}, parameters_for(nb, profile, config, Path(output_root) / profile,
                                                                None))
            for nb in notebooks(["03", "04"])}


def runs_dir_of(params: dict) -> Path:
    """The sweep cache of a notebook's parameters (:func:`nblib.runs.grids.runs_root`), as an absolute path."""
    from nblib.runs.grids import runs_root

    return (NOTEBOOKS / runs_root(params)).resolve()


def check_data(profile: str, config: dict, todo) -> None:
    """Stop before anything runs when a notebook's CIFAR-10 data is missing or corrupted, naming the step
    that provides it."""
    from nblib.data.cifar10 import verify_cifar10

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


def print_plan(profile: str, only=None, device: str | None = None, output_root: Path = ROOT / "outputs",
               probe_steps: int = 2) -> dict:
    """Print, per notebook of ``profile``, its training runs, how many are cached and the projected time
    (:mod:`nblib.pipeline.plan`), without training anything; returns ``{notebook: table}``."""
    from nblib.runs.grids import RUN_CONFIGS
    from nblib.pipeline.plan import FINISHED, notebook_parameters, plan_notebook
    from nblib.perf.cost import TERMS, project_hours

    config = load_profile(profile)
    output_dir = (Path(output_root) / profile).resolve()
    out, total, gpu_hours, wall_hours = {}, {t: 0.0 for t in (*TERMS, "total")}, 0.0, 0.0
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
        hours = {t: float(table[f"{t}_s"].sum()) / 3600 for t in (*TERMS, "total")}
        bill = project_hours(hours["total"], params["gpus"])
        total = {t: total[t] + hours[t] for t in total}
        gpu_hours, wall_hours = gpu_hours + bill["gpu_hours"], wall_hours + bill["wall_hours"]
        cached = int(table.status.isin(FINISHED).sum())
        print(f"{nb.stem}: {len(table)} runs, {cached} cached, {len(table) - cached} to train: about "
              f"{hours['total']:.2f} h on {params['device']} ("
              + ", ".join(f"{t.replace('_', ' ')} {hours[t]:.3g} h" for t in TERMS)
              + f"; {', '.join(sorted(set(table.basis)))})", flush=True)
        print(f"  {bill['basis']}: {bill['gpu_hours']:.2f} device-hours, {bill['wall_hours']:.2f} h wall", flush=True)
    print(f"total projected: {total['total']:.2f} h in sequence on one device ("
          + ", ".join(f"{t.replace('_', ' ')} {total[t]:.3g} h" for t in TERMS)
          + f"); with the notebooks' gpus: {gpu_hours:.2f} device-hours, {wall_hours:.2f} h wall", flush=True)
    estimated = sorted({d for t in out.values() if not t.empty for d in t.basis if "estimate" in d})
    if estimated:
        from nblib.perf.reference import ASSUMPTION
        print(f"estimate: {params['device']} is not on this machine: FLOP counts (nblib.perf.reference) at "
              f"{ASSUMPTION[params['device'].split(':')[0]]}", flush=True)
    return out


def clear_outputs(output_dir: Path, nb: Path) -> list[Path]:
    """Delete what a previous run of ``nb`` left in ``output_dir``: its executed copy and every file of
    ``figures/``, ``tables/``, ``metrics/`` named ``NN_*`` (the notebook's number); returns them."""
    prefix = nb.stem.split("_")[0] + "_"
    stale = [p for kind in OUTPUT_KINDS for p in sorted((Path(output_dir) / kind).glob(prefix + "*")) if p.is_file()]
    executed = Path(output_dir) / "executed" / nb.name
    stale += [executed] if executed.exists() else []
    for path in stale:
        path.unlink()
    return stale


def cell_progress_engine():
    """papermill's nbclient engine that prints one plain line per executed code cell: its number, its
    time, the time since the notebook started and the cell's first line (for logs, CI and batch jobs)."""
    from papermill.engines import NBClientEngine

    class CellProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            n_code = sum(c.cell_type == "code" for c in nb_man.nb.cells)
            started, done, t0 = {}, [0], time.perf_counter()
            cell_start, cell_complete = nb_man.cell_start, nb_man.cell_complete

            def start(cell, cell_index=None, **kw):
                started[cell_index] = time.perf_counter()
                return cell_start(cell, cell_index=cell_index, **kw)

            def complete(cell, cell_index=None, **kw):
                result = cell_complete(cell, cell_index=cell_index, **kw)
                if cell.cell_type == "code":
                    done[0] += 1
                    now = time.perf_counter()
                    first = next((line for line in cell.source.splitlines() if line.strip()), "")[:60]
                    print(f"    cell {done[0]}/{n_code} {now - started.get(cell_index, now):6.1f} s "
                          f"(total {now - t0:.0f} s)  {first}", flush=True)
                return result

            nb_man.cell_start, nb_man.cell_complete = start, complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return CellProgressEngine


def kernel_manager_class():
    """nbclient's kernel manager, provisioning CurveZMQ keys when pyzmq has them: the kernel then encrypts its
    local TCP transport instead of printing a plain-text warning on every notebook."""
    import zmq
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class KernelManager(AsyncKernelManager):
        @default("transport_encryption")
        def _transport_encryption_default(self):
            return "auto" if zmq.has("curve") else "disabled"

    return KernelManager


def run(profile: str, only=None, device: str | None = None, output_root: Path = ROOT / "outputs",
        params_dir: Path = PARAMS, cell_progress: bool | None = None) -> Path:
    """Check ``params_dir/<profile>.yaml``, then execute the selected notebooks in order (working folder
    ``notebooks/``, kernel ``python3``). ``cell_progress``: one line per cell (default: when stdout is not
    a terminal; a terminal gets papermill's progress bar)."""
    import papermill
    from papermill.engines import papermill_engines
    from papermill.exceptions import PapermillExecutionError

    config = load_profile(profile, params_dir)
    check_data(profile, config, notebooks(only))
    output_dir = (Path(output_root) / profile).resolve()
    todo = notebooks(only)
    params = {nb: parameters_for(nb, profile, config, output_dir, device) for nb in todo}
    if cell_progress is None:
        cell_progress = not is_terminal(sys.stdout)
    papermill_engines.register("nblib-cells", cell_progress_engine())
    executed = output_dir / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    for i, nb in enumerate(todo, 1):
        clear_outputs(output_dir, nb)
        print(f"[{i}/{len(todo)}] {nb.stem} ({profile})", flush=True)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(str(nb), str(executed / nb.name), parameters=params[nb], kernel_name="python3",
                                       cwd=str(NOTEBOOKS), progress_bar=not cell_progress, log_output=False,
                                       stdout_file=sys.stdout, stderr_file=sys.stderr,
                                       engine_name="nblib-cells" if cell_progress else None,
                                       kernel_manager_class=kernel_manager_class())
        except PapermillExecutionError as err:
            raise SystemExit(f"notebook {nb.name} failed in cell {err.exec_count} ({err.ename}: {err.evalue}); "
                             f"see {executed / nb.name}") from None
        print(f"    done in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"outputs in {output_dir}", flush=True)
    return output_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke", help="name of params/<profile>.yaml (default: smoke)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only notebooks whose names start with these")
    parser.add_argument("--device", help="torch device for every notebook (default: the profile's, else cpu)")
    parser.add_argument("--output-root", type=Path, default=ROOT / "outputs", help="default: outputs/")
    parser.add_argument("--plan", action="store_true",
                        help="list the training runs, how many are cached and the projected time; train nothing")
    parser.add_argument("--probe-steps", type=int, default=2, help="--plan: timed steps per model and mode")
    args = parser.parse_args(argv)
    if args.plan:
        print_plan(args.profile, args.only, args.device, args.output_root, args.probe_steps)
    else:
        run(args.profile, args.only, args.device, args.output_root)


if __name__ == "__main__":
    main()
