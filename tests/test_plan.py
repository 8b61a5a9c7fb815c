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


def test_run_counts_of_the_rehearsal_profile_double_with_its_two_seeds():
    four = ["vgg11", "resnet18", "senet18", "regnetx_200mf"]
    counts = plan.run_counts({nb.stem: p for nb, p in (params_of("rehearsal", "03"), params_of("rehearsal", "04"))})
    assert counts["03_table2"] == dict(models=four, epochs=1, n_eval=4, adv_modes={"plain": 2 * (1 + 4)})
    assert counts["04_adversarial_norms"]["adv_modes"] == {"plain": 2, "pgd": 2, "alp": 2, "trades": 2}


def test_notebook_parameters_are_defaults_then_profile_then_injected():
    nb, p = params_of("smoke", "03")
    assert p["models"] == ["smallcnn"] and p["epochs"] == 6  # from params/smoke.yaml
    assert p["seeds"] == [0] and p["train_subset"] == 0  # params/smoke.yaml, the notebook's default
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
             attack="none", seeds=[0])
    table = plan.plan_notebook("03_table2", p, tmp_path, reproduce.NOTEBOOKS, probe_steps=1)
    assert len(table) == 1 and "cifar10 missing: nominal size" in table.basis[0]
    step = table.train_s[0] / (p["epochs"] * math.ceil(p["train_subset"] / 128))
    assert step > 0 and table.attack_s[0] == 0


def test_reproduce_plan_prints_every_notebook(capsys, monkeypatch, tmp_path):
    hour = {"train": 3600.0, "regularizer": 0.0, "test_pass": 0.0, "norms": 0.0, "checkpoint": 0.0, "attack": 0.0,
            "total": 3600.0, "basis": "x"}
    monkeypatch.setattr(plan, "project_run", lambda *a, **k: hour)
    reproduce.main(["--profile", "smoke", "--plan", "--output-root", str(tmp_path)])  # an empty cache
    out = capsys.readouterr().out
    assert "01_theorem1: no training runs" in out
    assert "03_table2: 9 runs, 0 cached, 9 to train: about 9.00 h" in out
    assert "04_adversarial_norms: 4 runs" in out and "total projected: 13.00 h in sequence on one device" in out
    assert "train 9 h, regularizer 0 h, test pass 0 h, norms 0 h, checkpoint 0 h, attack 0 h" in out


def test_paper_plan_without_a_gpu_estimates_labelled_and_probes_nothing(capsys, monkeypatch, tmp_path):
    """issue 18: ``--plan`` of the paper profile (device cuda) on a machine without CUDA ended in "Found no NVIDIA
    driver"; now it projects from the FLOP-count estimate of nblib.perf.reference, says so with its assumed
    rate, and probes nothing (a77f116 probed, and with --device cpu probed for 10 minutes)."""
    import torch
    from nblib.perf import throughput

    def no_probe(*a, **k):
        raise AssertionError("probed a device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(throughput, "measure_step", no_probe)
    monkeypatch.setattr(throughput, "measure_eval", no_probe)
    tables = reproduce.print_plan("paper", output_root=tmp_path)
    out = capsys.readouterr().out
    assert "03_table2: 68 runs" in out and "04_adversarial_norms: 16 runs" in out and "total projected" in out
    assert "15 TFLOP/s in strict fp32" in out and "no GPU rate of this code has been measured" in out
    for table in tables.values():  # the paper profile's precision: strict fp32
        assert all(b.startswith("estimate (FLOP count at an assumed 15 TFLOP/s in fp32, not measured)")
                   for b in table.basis)
        for term in ("train", "test_pass", "norms", "checkpoint", "attack"):
            assert (table[f"{term}_s"] > 0).all(), term
        regularized = table.regularizer.isin(["svc", "nd_l1", "nd_linf"])
        assert (table.regularizer_s[regularized] > 0).all() and (table.regularizer_s[~regularized] == 0).all()
    assert "device-hours" in out and "attack" in out


def test_forward_flops_match_torch_flop_counter():
    """The reference model's forward FLOPs per image equal torch's own FlopCounterMode (an independent count)
    for a plain, a residual and a grouped-conv model; the paper models' values as the issue gives them."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from nblib.models import build
    from nblib.perf import reference
    for name in ("smallcnn", "vgg11", "regnetx_200mf"):
        model = build(name, num_classes=10).to("meta").eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(2, 3, 32, 32, device="meta"))
        assert reference.forward_flops(name) == pytest.approx(counter.get_total_flops() / 2, rel=1e-9)
    assert reference.forward_flops("vgg11") / 1e9 == pytest.approx(0.31, abs=0.01)
    assert reference.forward_flops("resnet18") / 1e9 == pytest.approx(1.11, abs=0.01)
    assert reference.image_flops("vgg11", "pgd") == 23 * reference.forward_flops("vgg11")
    with pytest.raises(ValueError, match="no assumed rate"):
        reference.estimate(fill_cfg({"device": "cpu"}))
    strict, bf16 = (reference.estimate(fill_cfg({"device": "cuda", "model": "vgg11", "precision": p}))
                    for p in ("fp32", "bf16"))
    assert strict["step_s"] == pytest.approx(3 * bf16["step_s"])  # 15 against 45 TFLOP/s
    assert strict["step_s"] == pytest.approx(128 * 3 * reference.forward_flops("vgg11") / 15e12)
