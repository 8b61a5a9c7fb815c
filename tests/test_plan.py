"""nblib.pipeline.plan and ``reproduce --plan``: the runs a profile asks for, the cache, the projection; nothing
trains."""
import json
import math
from pathlib import Path

import pytest

from nblib.pipeline import plan, reproduce
from nblib.runs import folders
from nblib.training.run_config import fill_cfg

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def params_of(profile, nb_prefix):
    config = reproduce.load_profile(profile)
    nb = reproduce.notebooks([nb_prefix])[0]
    return nb, plan.notebook_parameters(nb, {}, reproduce.parameters_for(nb, profile, config, ROOT / "o", None))


def test_run_counts_of_the_paper_profile():
    four = ["vgg11", "resnet18", "senet18", "regnetx_200mf"]
    counts = plan.run_counts({nb.stem: p for nb, p in (params_of("paper", "03"), params_of("paper", "04"))})
    assert counts["03_table2"] == dict(models=four, epochs=120, n_eval=1024, adv_modes={"plain": 17})
    assert counts["04_adversarial_norms"] == dict(models=four, epochs=120, n_eval=1024,
                                                  adv_modes={"plain": 1, "pgd": 1, "alp": 1, "trades": 1})


def test_notebook_parameters_are_defaults_then_profile_then_injected():
    nb, p = params_of("smoke", "03")
    assert p["models"] == ["smallcnn"] and p["epochs"] == 6  # from params/smoke.yaml
    assert p["seed"] == 0 and p["train_subset"] == 0  # the notebook's defaults
    assert p["profile"] == "smoke" and p["device"] == "cpu"  # injected


def test_plan_counts_cached_runs_and_projects_the_rest(tmp_path):
    _, p = params_of("smoke", "04")
    p = dict(p, epochs=2, n_eval=10, models=["smallcnn"], adv_modes=["plain", "pgd"])
    cfgs = [fill_cfg(c) for c in plan.grids.RUN_CONFIGS["04_adversarial_norms"](p)]
    done = folders.run_dir_for(tmp_path, cfgs[0])  # a finished run, as the cache stores it
    done.mkdir(parents=True)
    (done / "cfg.json").write_text(json.dumps(cfgs[0]))
    (done / "history.json").write_text(json.dumps([{"epoch": 1, "global_step": 12, "train_seconds": 2.4},
                                                   {"epoch": 2, "global_step": 24, "train_seconds": 2.4}]))
    table = plan.plan_notebook("04_adversarial_norms", p, tmp_path, reproduce.NOTEBOOKS, probe_steps=1)
    assert list(table["mode"]) == ["plain", "pgd"] and set(table.status) == {"partial", "new"}
    plain, pgd = table.iloc[0], table.iloc[1]
    # the partial run's own epochs: 0.2 s per step; 1437 digits / 128 -> 12 steps per epoch, 2 epochs
    assert plain.basis.startswith("cache (2 epochs)") and plain.train_s == pytest.approx(24 * 0.2)
    assert pgd.basis.startswith("probe (1 steps)") and pgd.train_s > 0
    assert "attack upper bound" in pgd.basis and pgd.attack_s > 0
    assert not (tmp_path / folders.config_hash(cfgs[1])).exists()  # nothing was trained


def test_plan_without_data_uses_the_nominal_size(tmp_path):
    _, p = params_of("rehearsal", "03")
    p = dict(p, data_root=str(tmp_path / "nothing-here"), models=["vgg11"], wd=[], svc=[], nd_l1=[], nd_linf=[],
             attack="none")
    table = plan.plan_notebook("03_table2", p, tmp_path, reproduce.NOTEBOOKS, probe_steps=1)
    assert len(table) == 1 and "cifar10 missing: nominal size" in table.basis[0]
    step = table.train_s[0] / (p["epochs"] * math.ceil(p["train_subset"] / 128))
    assert step > 0 and table.attack_s[0] == 0


def test_reproduce_plan_prints_every_notebook(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(plan, "project_run", lambda *a, **k: {"train_s": 3600.0, "attack_s": 0.0, "basis": "x"})
    reproduce.main(["--profile", "smoke", "--plan", "--output-root", str(tmp_path)])  # an empty cache
    out = capsys.readouterr().out
    assert "01_theorem1: no training runs" in out
    assert "03_table2: 9 runs, 0 cached, 9 to train: about 9.00 h" in out
    assert "04_adversarial_norms: 4 runs" in out and "total projected: 13.00 h" in out


def test_project_hours_takes_the_plans_run_counts_as_they_are():
    """issue 18: ``benchmarks/train_throughput.py`` fed ``run_counts`` (``adv_modes``) to ``project_hours``
    (which read ``modes``): KeyError.  The plan's real output for the paper profile goes in unchanged."""
    from nblib.perf import throughput
    counts = plan.run_counts({nb.stem: p for nb, p in (params_of("paper", "03"), params_of("paper", "04"))})
    rate = dict(ips={"plain": 1000.0, "pgd": 100.0, "alp": 100.0, "trades": 100.0}, eval_ips=5000.0, norms_s=1.0,
                aa_s={nb: 10.0 for nb in counts})
    hours = throughput.project_hours(counts, {m: rate for spec in counts.values() for m in spec["models"]})
    epoch = {mode: throughput.CIFAR_TRAIN / ips + throughput.CIFAR_TEST / 5000.0 + 1.0
             for mode, ips in rate["ips"].items()}
    table2 = 4 * 17 * (120 * epoch["plain"] + 10.0)
    assert hours["03_table2"] == pytest.approx(table2 / 3600)
    assert hours["total"] == pytest.approx(hours["03_table2"] + hours["04_adversarial_norms"])
