"""The notebook pipeline: parameters, jupytext pairs, and the smoke profile's metrics JSON.

(The notebooks' own verdict cells are checked by nbval: `pytest --nbval-lax notebooks/`, part of the
default test run.)"""
import ast
import math
import re
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import papermill
import pytest
import yaml

from nblib.perf import benchmark
from nblib.claims import figure2, table2, verdict
from nblib.pipeline import reproduce
from nblib.results import load_metrics

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PROFILES = sorted((ROOT / "params").glob("*.yaml"))


def test_notebooks_exist_in_order():
    stems = [nb.stem for nb in NOTEBOOKS]
    assert stems == ["01_theorem1", "02_table1", "03_table2", "04_adversarial_norms", "05_propositions",
                     "06_robustbench_norms"]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_yaml_key_is_a_notebook_parameter(profile):
    config = yaml.safe_load(profile.read_text())
    sections = {k: v for k, v in config.items() if k != "device"}
    assert set(sections) <= {nb.stem for nb in NOTEBOOKS}, "a section names no notebook"
    for nb in NOTEBOOKS:
        declared = papermill.inspect_notebook(str(nb))
        assert {"profile", "output_dir", "device"} <= set(declared), nb.name
        for key, value in (sections.get(nb.stem) or {}).items():
            assert key in declared, f"{profile.name}: {nb.stem}.{key} is not a parameter"
            assert not isinstance(value, dict), f"{profile.name}: {nb.stem}.{key} must be flat"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shape(nb):
    """One parameters cell of flat literals, a first markdown cell, kernelspec python3, a checked verdict."""
    book = nbformat.read(nb, as_version=4)
    assert book.cells[0].cell_type == "markdown"
    tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines():
        assert "=" in line and "#" in line, f"{nb.name}: parameter line without a comment: {line!r}"
    names = {line.split("=")[0].strip() for line in tagged[0].source.splitlines()}
    unparsed = names - set(papermill.inspect_notebook(str(nb)))
    assert not unparsed, f"{nb.name}: papermill cannot parse the parameter lines of {sorted(unparsed)}"
    assert book.metadata.kernelspec.name == "python3"
    assert any("# NBVAL_CHECK_OUTPUT" in c.source for c in book.cells if c.cell_type == "code")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_jupytext_pair_in_sync(nb):
    twin = nb.with_suffix(".py")
    assert twin.exists(), f"{nb.name} has no py:percent twin"
    a, b = nbformat.read(nb, as_version=4), jupytext.read(twin)
    strip = lambda book: [(c.cell_type, c.source.strip()) for c in book.cells]  # noqa: E731
    assert strip(a) == strip(b), f"{nb.name} and {twin.name} differ: run `jupytext --sync {twin}`"


#: The smoke profile's sweep cache: where the notebooks' default parameters (nbval's runs) train.
SMOKE_RUNS = ROOT / "outputs" / "smoke" / "runs"


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """Run every notebook on the smoke profile once (CPU, embedded data).  Figures, tables and metrics go to a
    temporary folder; the training runs go to ``outputs/smoke/runs``, the cache that nbval's executions of
    the notebooks (default parameters = the smoke profile) read, so the full tier trains each run once.  The
    cache never returns a result of other code (each run's code fingerprint is checked)."""
    params = tmp_path_factory.mktemp("params")
    config = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    for nb in ("03_table2", "04_adversarial_norms"):
        config[nb]["runs_dir"] = str(SMOKE_RUNS)
    (params / "smoke.yaml").write_text(yaml.safe_dump(config))
    return reproduce.run("smoke", output_root=tmp_path_factory.mktemp("outputs"), params_dir=params)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defaults_are_the_smoke_profile(nb):
    """nbval runs the notebooks with their own defaults: they must be the smoke profile's values."""
    section = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text()).get(nb.stem) or {}
    defaults = papermill.inspect_notebook(str(nb))
    for key, value in section.items():
        assert ast.literal_eval(defaults[key]["default"]) == value, f"{nb.stem}.{key}"


def test_smoke_writes_figures_tables_metrics(smoke):
    for nb in NOTEBOOKS:
        assert (smoke / "executed" / nb.name).exists()
        assert (smoke / "metrics" / f"{nb.stem}.json").exists()
    assert (smoke / "figures" / "01_operator_matrix.png").exists()
    assert (smoke / "tables" / "02_table1.csv").exists()
    assert (smoke / "tables" / "03_table2.tex").exists() and (smoke / "tables" / "03_table2.md").exists()
    assert len(list(SMOKE_RUNS.glob("*/DONE"))) >= 9 + 4  # trained into the smoke profile's cache
    for fig in ("01_figure1", "03_norms_vs_strength", "03_norms_during_training", "03_tradeoff", "04_figure2",
                "04_figure2_l1_with_batchnorm", "04_norms_per_layer", "04_local_lipschitz"):
        assert (smoke / "figures" / f"{fig}.png").exists(), fig


def _table(smoke, name) -> pd.DataFrame:
    return pd.read_csv(smoke / "tables" / f"{name}.csv")


def check_verdicts(m: dict, recomputed: list) -> None:
    """The metrics hold well-formed verdicts, and they are the ones ``nblib.claims.verdict`` computes again from the
    notebook's stored tables (whatever the outcomes are: smoke data may contradict the paper)."""
    stored = m["verdicts"]
    assert isinstance(stored, list) and stored
    for v in stored:
        assert {"claim", "outcome", "reason"} <= set(v), v
        assert v["outcome"] in verdict.OUTCOMES and v["claim"] and v["reason"], v
    assert len({v["claim"] for v in stored}) == len(stored), "a claim is judged twice"
    assert [(v["claim"], v["outcome"]) for v in stored] == [(v.claim, v.outcome) for v in recomputed]


def test_smoke_theorem1(smoke):
    m = load_metrics(smoke, "01_theorem1")
    assert m["max_err_exact_random"] == pytest.approx(0, abs=1e-12)
    assert m["max_err_closed_form_inside"] == pytest.approx(0, abs=1e-12)
    assert m["max_err_model_convs"] == pytest.approx(0, abs=1e-12)
    assert m["n_model_convs"] == 8 + 20 + 36 + 44  # every conv of VGG-11, ResNet-18, SENet-18, RegNetX-200MF
    assert m["n_model_convs_outside_assumption1"] >= 2  # at least VGG-11's last two convs (2x2 inputs)
    assert m["frac_closed_form_wrong_outside"] > 0.3
    assert m["max_err_power"] < 1e-6
    assert m["gram_is_upper_bound"] is True
    assert 1 <= m["eq3_over_sigma_median"] < m["eq3_over_sigma_max"]
    tol = 1e-9  # the notebook's tolerance
    check_verdicts(m, [*verdict.theorem1(_table(smoke, "01_random_layers"), tol),
                       verdict.exact_model_norms(_table(smoke, "01_model_layers"), tol)])


def test_smoke_table1(smoke):
    m = load_metrics(smoke, "02_table1")
    assert m["n_measured"] >= 18  # floor, l1, linf on all six kernels at least
    assert m["power_le_gram"] is True
    wide = _table(smoke, "02_table1").set_index("kernel")
    power = verdict.paper_speedup(benchmark.PAPER_TABLE1, "power").min()
    fft = verdict.paper_speedup(benchmark.PAPER_TABLE1, "fft").min()
    assert power == pytest.approx(4018, rel=1e-3) and fft == pytest.approx(950, rel=1e-3)  # the paper's, not ours
    check_verdicts(m, [verdict.table1_speed(wide, "power", power, "power iteration"),
                       verdict.table1_speed(wide, "fft", fft, "the Sedghi FFT"),
                       verdict.table1_floor(wide, 3.0)])


def test_smoke_propositions(smoke):
    m = load_metrics(smoke, "05_propositions")
    assert m["prop1_max_output_spread"] == 0
    assert m["prop1_norm_growth"] == pytest.approx(1e5, rel=1e-6)
    assert m["prop2_grid_robust_acc"] == [1.0, 1.0] and m["prop2_pgd_robust_acc"] == [1.0, 1.0]
    assert all(lo >= xi for lo, xi in zip(m["prop2_lipschitz_lower"], m["prop2_xi"]))
    assert m["prop2_min_interclass_distance"] > 2 * m["prop2_eps"]
    assert not math.isnan(m["prop2_lipschitz_lower"][0])
    check_verdicts(m, [verdict.proposition1(_table(smoke, "05_prop1")),
                       *verdict.proposition2(_table(smoke, "05_prop2"), m["prop2_min_interclass_distance"],
                                              m["prop2_eps"])])


def test_smoke_table2(smoke):
    m = load_metrics(smoke, "03_table2")
    assert m["n_runs"] == 1 + 2 * 4  # plain + two strengths of WD, SVC, l1 ND, l_inf ND
    assert m["plain_clean"]["smallcnn"] >= 90  # the small model learns the digits (issue: >= 90 %)
    assert m["eps"] == pytest.approx(8 / 255) and m["extra_eps"] == pytest.approx([4 / 255])
    assert m["reading"] == {"reg_beta_scaling": "per_layer", "reg_svc_linear": True}
    frame = _table(smoke, "03_table2_long")
    assert set(frame.n_robust) == {100} and set(frame.reg_beta_scaling) == {"per_layer"}
    assert (frame.robust_lo <= frame.robust).all() and (frame.robust <= frame.robust_hi).all()
    summary = _table(smoke, "03_mean_log10_norms")
    radii = _table(smoke, "03_robust_by_radius")
    radii = radii[radii.regularizer != "none"]
    assert set(radii.eps_255) == {4.0, 8.0}
    check_verdicts(m, [*table2.table2_clean(frame), *table2.table2_robust(frame),
                       *table2.table2_norms_lowered(summary),
                       *(table2.near_zero_robust(radii[radii.eps_255 == e], f"{e}/255") for e in (4, 8))])


def test_smoke_adversarial_norms(smoke):
    m = load_metrics(smoke, "04_adversarial_norms")
    assert m["adv_modes"] == ["plain", "pgd", "alp", "trades"] and m["attack"] == "standard"
    assert m["n_layers"] == 6  # smallcnn: 4 convs, 2 linear layers; none skipped
    assert m["n_layers_with_batchnorm"] == 10  # and its 4 BatchNorm layers in the authors' view
    assert m["clean_acc"]["smallcnn/plain"] >= 0.9
    assert set(m["lip_mean"]) == set(m["log10_linf_norm_product"]) == {f"smallcnn/{a}" for a in m["adv_modes"]}
    assert all(0 < lip < math.inf for lip in m["lip_mean"].values())
    summary = _table(smoke, "04_accuracy_lipschitz")
    check_verdicts(m, [*figure2.figure2_norms(_table(smoke, "04_layer_norms"), "linf", "l_inf"),
                       *figure2.figure2_norms(_table(smoke, "04_layer_norms_l1_with_batchnorm"), "norm",
                                                       "l1-with-BatchNorm"),
                       *figure2.figure2_more_robust(summary),
                       *figure2.figure2_local_lipschitz(summary)])


KERNEL_DISPLAY_NAME = "Python 3 (norm-robustness)"  # what tasks.py installs (tasks.ensure_env)


def test_tasks_installs_the_kernel_the_notebooks_name():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tasks", ROOT / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    assert tasks.KERNEL == ["--name", "python3", "--display-name", KERNEL_DISPLAY_NAME]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs_and_no_machine_path(nb):
    """Opening it in JupyterLab marks nothing modified; only nbval's reference verdicts are stored."""
    from nblib.pipeline.nbclean import strip_outputs

    text = nb.read_text()
    book = nbformat.reads(text, as_version=4)
    assert book.metadata.kernelspec.display_name == KERNEL_DISPLAY_NAME, \
        "JupyterLab would rewrite the display name on opening and mark the notebook modified"
    assert nbformat.writes(strip_outputs(nbformat.reads(text, as_version=4))) == nbformat.writes(book), \
        f"{nb.name} carries outputs: run `python -m nblib.pipeline.nbclean {nb.relative_to(ROOT)}`"
    for marker in ("/work/", "/home/", "/root/", "/tmp/", "/Users/", "site-packages", "\\\\"):
        assert marker not in text, f"{nb.name} holds a machine path ({marker})"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_output_file_is_named_after_its_notebook(nb):
    """reproduce.clear_outputs deletes a notebook's files by its number, so each name must start with it."""
    saves = r"save_(?:figure|table|metrics)\((?:.|\n)*?output_dir,\s*\"([^\"]+)\""
    names = re.findall(saves, nb.with_suffix(".py").read_text())
    assert names, nb.name
    assert all(n.startswith(nb.stem[:3]) for n in names), names


@pytest.mark.parametrize("start", ["root", "notebooks"])
def test_a_jupyterlab_save_leaves_the_pair_unchanged(tmp_path, start):
    """A save through jupytext's contents manager (what JupyterLab calls), started from the repository root
    or from notebooks/, rewrites neither file: no jupytext header, pairing found in both cases."""
    import asyncio
    import shutil

    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
    from jupytext.async_contentsmanager import build_async_jupytext_contents_manager_class

    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "notebooks").iterdir() if p.is_file()}
    root, prefix = (tmp_path, "notebooks/") if start == "root" else (tmp_path / "notebooks", "")
    manager = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)(root_dir=str(root))

    async def open_and_save(path):
        model = await manager.get(path)
        await manager.save(dict(type="notebook", format="json", content=model["content"]), path)

    for nb in NOTEBOOKS:
        asyncio.run(open_and_save(prefix + nb.name))
    after = {p.name: p.read_bytes() for p in (tmp_path / "notebooks").iterdir() if p.is_file()}
    changed = sorted(name for name in before if before[name] != after[name])
    assert not changed and set(after) == set(before), f"a save rewrote {changed}"
