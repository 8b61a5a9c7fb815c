"""The paper profile's code path, rehearsed at tiny sizes on a CIFAR-format fixture (params/rehearsal.yaml).

Every (model, regularizer) pair of Table 2 and every (model, mode) pair of Figure 2 trains through the sweep
cache, with checkpoints, the paper's lr schedule and eps values and standard AutoAttack (at 1% of its
iterations: the numbers measure nothing, the path is what is checked).
"""
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from nblib.pipeline import reproduce
from nblib.runs import grids, folders
from nblib.data.cifar10 import write_cifar10_fixture
from nblib.pipeline.plan import notebook_parameters
from nblib.claims import OUTCOMES
from nblib.models import build
from nblib.results import load_metrics

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["vgg11", "resnet18", "senet18", "regnetx_200mf"]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """Write the fixture where params/rehearsal.yaml reads it, then run every notebook of the profile."""
    config = yaml.safe_load((ROOT / "params" / "rehearsal.yaml").read_text())
    write_cifar10_fixture(reproduce.NOTEBOOKS / config["03_table2"]["data_root"])
    output_dir = reproduce.run("rehearsal", output_root=tmp_path_factory.mktemp("outputs"))
    return output_dir, config


def runs_of(rehearsal, nb_stem):
    """(cfg, metrics, run folder) of every run of a notebook, found through the configs it asked for."""
    output_dir, config = rehearsal
    nb = reproduce.NOTEBOOKS / f"{nb_stem}.ipynb"
    params = notebook_parameters(nb, {}, reproduce.parameters_for(nb, "rehearsal", config, output_dir, None))
    out = []
    for cfg in grids.RUN_CONFIGS[nb_stem](params):
        folder = folders.run_dir_for(reproduce.runs_dir_of(params), cfg)
        out.append((cfg, json.loads((folder / "metrics.json").read_text()), folder))
    return out


def test_every_model_and_regularizer_ran_the_paper_path(rehearsal):
    runs = runs_of(rehearsal, "03_table2")
    assert {(c["model"], c.get("regularizer", "none")) for c, _, _ in runs} == {
        (m, k) for m in MODELS for k in ("none", "wd", "svc", "nd_l1", "nd_linf")}
    for cfg, m, folder in runs:
        assert (folder / "checkpoint.pt").exists() and (folder / "DONE").exists()
        assert m["data_fixture"] is True  # never mistaken for CIFAR-10
        assert m["eval_eps"] == pytest.approx(1 / 255)
        assert m["settings"]["attack"]["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
        assert m["settings"]["attack"]["budget"] == 0.01 and m["n_eval"] == 4
        assert m["final_lr"] == pytest.approx(0.01 * 0.1 ** 3)  # one epoch: all three decays after it
        assert m["epochs_trained"] == 1 and m["n_train"] == 32
        assert 0 <= m["clean_acc"] <= 1 and (m["robust_acc"] is None or 0 <= m["robust_acc"] <= 1)
        assert all(math.isfinite(v) and v > 0 for v in m["norms_linf"] + m["norms_l1"])
    notes = {c["model"]: m["regularizer_notes"] for c, m, _ in runs if c.get("regularizer") == "svc"}
    assert set(notes["vgg11"]) == {"features.22", "features.25"}  # 2x2 inputs: the crash this profile catches
    assert notes["resnet18"] == {}


def test_every_model_and_adversarial_mode_ran_the_paper_path(rehearsal):
    runs = runs_of(rehearsal, "04_adversarial_norms")
    assert {(c["model"], c["adv_mode"]) for c, _, _ in runs} == {
        (m, a) for m in MODELS for a in ("plain", "pgd", "alp", "trades")}
    for cfg, m, folder in runs:
        assert m["eval_eps"] == pytest.approx(8 / 255) and m["data_fixture"] is True
        assert m["lip_mean"] is not None and m["lip_mean"] >= 0
        state = torch.load(folder / "checkpoint.pt", weights_only=True)
        assert state["epoch"] == 1 and state["cfg"]["adv_preset"] == "standard"


def test_rehearsal_notebooks_wrote_their_outputs(rehearsal):
    """Each notebook's metrics describe the profile's own runs (counted here from the profile and the models,
    not by the code that wrote them) and carry well-formed verdicts."""
    output_dir, config = rehearsal
    for nb in ("01_theorem1", "02_table1", "03_table2", "04_adversarial_norms", "05_propositions"):
        verdicts = load_metrics(output_dir, nb)["verdicts"]
        assert verdicts and all(v["outcome"] in OUTCOMES and v["reason"] for v in verdicts), nb
    convs = sum(isinstance(m, torch.nn.Conv2d) for name in MODELS for m in build(name).modules())
    assert load_metrics(output_dir, "01_theorem1")["n_model_convs"] == convs
    t2, c2 = load_metrics(output_dir, "03_table2"), config["03_table2"]
    assert t2["models"] == MODELS and t2["dataset"] == "cifar10"
    assert len(c2["seeds"]) == 2 and t2["seeds"] == c2["seeds"]  # every configuration once per seed
    assert t2["n_runs"] == len(MODELS) * (1 + sum(len(c2[k]) for k in ("wd", "svc", "nd_l1", "nd_linf"))) * 2
    f2, seeds = load_metrics(output_dir, "04_adversarial_norms"), config["04_adversarial_norms"]["seeds"]
    assert f2["models"] == MODELS and set(f2["clean_acc"]) == {f"{m}/{a}/seed{s}" for m in MODELS for s in seeds
                                                               for a in ("plain", "pgd", "alp", "trades")}
    assert all("in each of 2 seeds (intersection-union" in v["reason"]
               for v in t2["verdicts"] + f2["verdicts"] if "McNemar" in v["reason"])
    assert (output_dir / "tables" / "03_table2.csv").exists()
