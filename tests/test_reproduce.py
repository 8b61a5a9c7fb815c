"""nblib.pipeline.reproduce: profiles are checked before anything runs, stale outputs are cleared, progress is
printed."""
import json

import nbformat
import pytest
import yaml

from nblib.pipeline import reproduce
from nblib.pipeline.reproduce import ProfileError, load_profile, type_mismatch

SMOKE = yaml.safe_load((reproduce.PARAMS / "smoke.yaml").read_text())


def write_profile(tmp_path, config, name="bad"):
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config) if not isinstance(config, str) else config)
    return tmp_path / f"{name}.yaml"


@pytest.mark.parametrize("name", ["smoke", "paper"])
def test_committed_profiles_pass_the_checks(name):
    config = load_profile(name)
    assert "01_theorem1" in config


def refused(tmp_path, config, *expected):
    path = write_profile(tmp_path, config)
    with pytest.raises(ProfileError) as err:
        load_profile("bad", params_dir=tmp_path)
    message = str(err.value)
    assert str(path) in message, message
    for text in expected:
        assert text in message, message
    return message


def with_section(notebook, **entries):
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in SMOKE.items()}
    config[notebook] = {**(config.get(notebook) or {}), **entries}
    return config


def test_misspelled_section_is_refused(tmp_path):
    config = {**SMOKE, "01_theorm1": {"seed": 1}}
    refused(tmp_path, config, "'01_theorm1'", "unknown top-level key")


def test_unknown_top_level_key_is_refused(tmp_path):
    refused(tmp_path, {**SMOKE, "devcie": "cuda"}, "'devcie'")


def test_unknown_parameter_is_refused(tmp_path):
    refused(tmp_path, with_section("01_theorem1", n_random_layer=5), "01_theorem1.n_random_layer", "not a parameter")


@pytest.mark.parametrize("nb", ["03_table2", "04_adversarial_norms"])
def test_the_former_seed_is_refused_naming_seeds(tmp_path, nb):
    config = with_section(nb, seed=1)
    del config[nb]["seeds"]
    refused(tmp_path, config, f"{nb}.seed", "became seeds", "write seeds: [1]")


@pytest.mark.parametrize("key, value, words", [
    ("n_random_layers", "many", ["a str", "int"]),
    ("n_random_layers", 1.5, ["a float", "int"]),
    ("n_random_layers", True, ["a bool"]),
    ("models", "vgg11", ["a str", "list"]),
    ("models", ["vgg11", 3], ["holding 3"]),
    ("tolerance", "1e-9", ["write 1.0e-6"]),
])
def test_wrong_type_is_refused_naming_the_key(tmp_path, key, value, words):
    refused(tmp_path, with_section("01_theorem1", **{key: value}), f"01_theorem1.{key}", *words)


def test_int_for_a_float_parameter_is_accepted(tmp_path):
    write_profile(tmp_path, with_section("02_table1", entry_budget_s=2))
    assert load_profile("bad", params_dir=tmp_path)["02_table1"]["entry_budget_s"] == 2


@pytest.mark.parametrize("key", ["profile", "output_dir"])
def test_injected_names_are_refused_in_a_section(tmp_path, key):
    refused(tmp_path, with_section("05_propositions", **{key: "x"}), f"05_propositions.{key}",
            "set by nblib.pipeline.reproduce")


def test_non_string_device_and_non_mapping_section_are_refused(tmp_path):
    refused(tmp_path, {**SMOKE, "device": 0}, "device = 0")
    refused(tmp_path, {**SMOKE, "05_propositions": [1, 2]}, "section '05_propositions'")
    refused(tmp_path, "- a\n- b\n", "mapping")
    refused(tmp_path, "01_theorem1: [unclosed\n", "not valid YAML")


@pytest.mark.parametrize("name", ["../smoke", "params/smoke", "/tmp/smoke", "smoke.yaml", "", ".hidden"])
def test_profile_names_must_be_plain(name):
    with pytest.raises(ProfileError, match="not a plain name"):
        load_profile(name)
    with pytest.raises(ProfileError, match="not a plain name"):
        reproduce.run(name)


def test_unknown_profile_lists_the_known_ones(tmp_path):
    write_profile(tmp_path, SMOKE, name="mine")
    with pytest.raises(ProfileError, match=r"unknown profile 'other'.*\['mine'\]"):
        load_profile("other", params_dir=tmp_path)


@pytest.mark.parametrize("value, default, ok", [
    (1, 1.0, True), (1.0, 1, False), (True, 1, False), (1, True, False), (False, True, True),
    ("a", "b", True), ([1, 2.5], [0.1], True), ([], [0.1], True), ([[1]], [], True), (None, 1, False),
    ({"a": 1}, None, True), (["a"], [1], False),
])
def test_type_mismatch(value, default, ok):
    assert (type_mismatch(value, default) is None) is ok


def test_clear_outputs_deletes_only_that_notebooks_files(tmp_path):
    files = ["figures/01_a.png", "figures/01_a.pdf", "tables/01_t.csv", "metrics/01_theorem1.json",
             "executed/01_theorem1.ipynb", "figures/02_b.png", "metrics/02_table1.json", "figures/notes.txt"]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    removed = reproduce.clear_outputs(tmp_path, reproduce.NOTEBOOKS / "01_theorem1.ipynb")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == sorted(files[:5])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(files[5:])


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    """A notebooks/ folder with one small notebook and a profile for it."""
    books = tmp_path / "notebooks"
    books.mkdir()
    params = nbformat.v4.new_code_cell('profile = "x"  # profile\noutput_dir = "out"  # folder\n'
                                       'device = "cpu"  # device\nn = 2  # how many lines')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# tiny"), params,
        nbformat.v4.new_code_cell("from nblib.results import save_metrics\nimport os"),
        nbformat.v4.new_code_cell('for i in range(n):\n    print(f"tiny line {i}", flush=True)\n'
                                  'save_metrics(output_dir, "01_tiny", dict(n=n, cwd=os.getcwd()))'),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, books / "01_tiny.ipynb")
    monkeypatch.setattr(reproduce, "NOTEBOOKS", books)
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "tiny.yaml").write_text("device: cpu\n01_tiny:\n  n: 3\n")
    return tmp_path


@pytest.mark.slow
def test_run_prints_cells_streams_output_and_clears_stale_files(tiny_project, capfd):
    out = tiny_project / "outputs" / "tiny"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "01_old.png").write_text("stale")
    (out / "figures" / "02_other.png").write_text("kept")
    reproduce.run("tiny", output_root=tiny_project / "outputs", params_dir=tiny_project / "params", cell_progress=True)
    printed, errors = capfd.readouterr()
    assert "[1/1] 01_tiny (tiny)" in printed
    assert "WARNING" not in errors, errors  # the kernel's plain-text transport warning, among others
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("    cell ")] == \
        ["1/4", "2/4", "3/4", "4/4"]  # papermill's injected-parameters cell is one of them
    assert "tiny line 2" in printed
    assert not (out / "figures" / "01_old.png").exists() and (out / "figures" / "02_other.png").exists()
    metrics = json.loads((out / "metrics" / "01_tiny.json").read_text())
    assert metrics == {"n": 3, "cwd": str(tiny_project / "notebooks")}  # same working folder as JupyterLab


def test_a_bad_profile_stops_before_any_notebook_runs(tiny_project, capsys):
    (tiny_project / "params" / "tiny.yaml").write_text("01_tiny:\n  n: many\n")
    with pytest.raises(ProfileError, match="01_tiny.n = 'many'"):
        reproduce.run("tiny", output_root=tiny_project / "outputs", params_dir=tiny_project / "params")
    assert "[1/1]" not in capsys.readouterr().out and not (tiny_project / "outputs").exists()
