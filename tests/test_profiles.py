"""The profiles: the rehearsal differs from the paper profile only in sizes."""
from pathlib import Path

import pytest
import yaml

PARAMS = Path(__file__).resolve().parents[1] / "params"
#: Settings that are sizes (how much is computed), free to differ between the paper profile and its rehearsal.
SIZES = {"device", "n_random_layers", "max_input_size", "runs", "entry_budget_s", "method_budget_s", "data_root",
         "train_subset", "epochs", "reg_clip_every", "attack_budget", "n_eval", "scales", "xis", "grid_points_per_dim",
         "pgd_steps", "seeds"}
#: Lists of the paper's strengths: the rehearsal takes a subset of them (and of notebook 06's zoo entries).
STRENGTHS = {"wd", "svc", "nd_l1", "nd_linf"}
SUBSETS = STRENGTHS | {"robust_entries"}
#: The rehearsal runs offline: zoo architectures with random weights (notebook 06), no minutes-long l2 intervals.
OFFLINE = {"random_weights", "compute_l2"}


def load(name):
    return yaml.safe_load((PARAMS / f"{name}.yaml").read_text())


def kind(value):
    if isinstance(value, list):
        return ("list", frozenset(type(v) for v in value) if value else None)
    return type(value)


def pairs(config, prefix=""):
    for key, value in config.items():
        if isinstance(value, dict):
            yield from pairs(value, f"{key}.")
        else:
            yield f"{prefix}{key}", key, value


def test_rehearsal_has_the_paper_profiles_keys_and_kinds_of_values():
    paper = {path: value for path, _, value in pairs(load("paper"))}
    rehearsal = {path: value for path, _, value in pairs(load("rehearsal"))}
    assert set(paper) == set(rehearsal)
    for path, value in paper.items():
        a, b = kind(value), kind(rehearsal[path])
        if isinstance(a, tuple) and isinstance(b, tuple) and None in (a[1], b[1]):
            continue  # an empty list matches any list
        assert a == b, f"{path}: {value!r} (paper) and {rehearsal[path]!r} (rehearsal) are of different kinds"


@pytest.mark.parametrize("path,key,value", list(pairs(load("paper"))), ids=lambda v: str(v)[:30])
def test_rehearsal_differs_from_the_paper_only_in_sizes(path, key, value):
    rehearsal = dict((p, v) for p, _, v in pairs(load("rehearsal")))[path]
    if key in SUBSETS:
        assert rehearsal and set(rehearsal) <= set(value), f"{path}: {rehearsal} is not a subset of the paper's"
    elif key not in SIZES | OFFLINE:
        assert rehearsal == value, f"{path}: the rehearsal must use the paper's {key} = {value!r}"


def test_rehearsal_covers_every_model_regularizer_and_mode():
    r = load("rehearsal")
    assert r["03_table2"]["models"] == r["04_adversarial_norms"]["models"] == [
        "vgg11", "resnet18", "senet18", "regnetx_200mf"]
    assert all(r["03_table2"][k] for k in STRENGTHS)
    assert r["03_table2"]["dataset"] == r["04_adversarial_norms"]["dataset"] == "cifar10"
    assert r["03_table2"]["attack"] == r["04_adversarial_norms"]["attack"] == "standard"


def test_paper_profile_strengths_are_those_of_the_papers_table2():
    from nblib.claims.paper_table2 import PAPER_CLIP_VALUES, PAPER_COEFFICIENTS, PAPER_TABLE2

    t2 = load("paper")["03_table2"]
    assert tuple(t2["svc"]) == PAPER_CLIP_VALUES
    assert tuple(t2["wd"]) == tuple(t2["nd_l1"]) == tuple(t2["nd_linf"]) == PAPER_COEFFICIENTS
    published = {(kind, s) for cells in PAPER_TABLE2.values() for kind, s in cells if kind != "none"}
    assert published == {(kind, s) for kind in ("wd", "svc", "nd_l1", "nd_linf") for s in t2[kind]}


def test_profile_keys_that_set_a_run_are_run_config_keys():
    """One name per setting: a training notebook's key is a run-config key, or ``<key>_255`` of one."""
    from nblib.runs.grids import FIGURE2_KEYS, TABLE2_KEYS, UNITS_255

    def names(keys):
        return {f"{k}_255" if k in UNITS_255 else k for k in keys}

    grids = {"models", "adv_modes", "wd", "svc", "nd_l1", "nd_linf", "seeds"}
    sweep_settings = {"executor", "gpus", "runs_dir", "slurm_partition", "slurm_timeout_min"}
    for profile in ("smoke", "rehearsal", "paper"):
        p = load(profile)
        for nb, keys in (("03_table2", TABLE2_KEYS), ("04_adversarial_norms", FIGURE2_KEYS)):
            unknown = set(p[nb]) - names(keys) - grids - sweep_settings
            assert not unknown, f"{profile}.yaml {nb}: {unknown} are not run-config names"


def test_seeds_one_as_the_paper_two_in_the_rehearsal():
    """The paper trained one seed per configuration; the rehearsal runs two, so that the seed-paired verdicts
    run before the paper profile does."""
    for nb in ("03_table2", "04_adversarial_norms"):
        assert load("paper")[nb]["seeds"] == [0] and load("smoke")[nb]["seeds"] == [0]
        assert load("rehearsal")[nb]["seeds"] == [0, 1]
