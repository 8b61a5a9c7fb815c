"""The profiles: the rehearsal differs from the paper profile only in sizes."""
from pathlib import Path

import pytest
import yaml

PARAMS = Path(__file__).resolve().parents[1] / "params"
#: Settings that are sizes (how much is computed), free to differ between the paper profile and its rehearsal.
SIZES = {"device", "n_random_layers", "max_input_size", "runs", "entry_budget_s", "method_budget_s", "data_root",
         "train_subset", "epochs", "svc_every", "attack_budget", "n_eval", "scales", "xis", "grid_points_per_dim",
         "pgd_steps"}
#: Lists of the paper's strengths: the rehearsal takes a subset of them.
STRENGTHS = {"wd", "svc", "nd_l1", "nd_linf"}


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
    if key in STRENGTHS:
        assert rehearsal and set(rehearsal) <= set(value), f"{path}: {rehearsal} is not a subset of the paper's"
    elif key not in SIZES:
        assert rehearsal == value, f"{path}: the rehearsal must use the paper's {key} = {value!r}"


def test_rehearsal_covers_every_model_regularizer_and_mode():
    r = load("rehearsal")
    assert r["03_table2"]["models"] == r["04_adversarial_norms"]["models"] == [
        "vgg11", "resnet18", "senet18", "regnetx_200mf"]
    assert all(r["03_table2"][k] for k in STRENGTHS)
    assert r["03_table2"]["dataset"] == r["04_adversarial_norms"]["dataset"] == "cifar10"
    assert r["03_table2"]["attack"] == r["04_adversarial_norms"]["attack"] == "standard"
