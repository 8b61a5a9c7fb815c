"""Tests for nblib.sweep: config hashing, the run-folder cache (finished / killed / corrupt) and sweeps."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from nblib import sweep, train
from nblib.sweep import config_hash, expand_grid, run_cached, run_dir_for, run_status, run_sweep, slurm_kwargs
from nblib.train import DEFAULT_CFG

TINY = dict(model="smallcnn", dataset="digits", train_subset=64, batch_size=32, epochs=2, lr=0.05,
            attack="none", n_eval=16)

# a valid different value for every key of DEFAULT_CFG (the test below fails when a key is added)
OTHER_VALUE = {
    "model": "vgg11", "dataset": "digits", "data_root": "elsewhere", "augment": False, "train_subset": 100,
    "epochs": 7, "batch_size": 64, "lr": 0.1, "momentum": 0.5, "milestones": [0.5], "lr_decay": 0.2,
    "weight_decay": 5e-4, "regularizer": "nd_l1", "reg_strength": 1e-3, "reg_gamma": 0.9,
    "reg_clip_every": 10, "adv_mode": "trades", "adv_preset": "authors", "seed": 1, "device": "cuda",
    "cudnn_deterministic": True, "amp": "bf16", "channels_last": True, "eval_eps": 8 / 255, "n_eval": 10,
    "attack": "authors", "local_lipschitz": True,
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fake_run_one(monkeypatch):
    """Replace training by a stub that writes what run_one writes and counts its calls."""
    calls = []

    def fake(cfg, run_dir, **_):
        calls.append(config_hash(cfg))
        metrics = {"clean_acc": 0.5 + 0.01 * cfg["seed"], "robust_acc": 0.25, "norms_linf": [1.0, 2.0],
                   "epochs": -1}
        Path(run_dir, "history.json").write_text(json.dumps([{"epoch": 1}]))
        Path(run_dir, "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(train, "run_one", fake)
    return calls


# --------------------------------------------------------------------------- hashing
def test_hash_is_stable():
    h = config_hash(TINY)
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    assert config_hash(dict(reversed(list(TINY.items())))) == h  # key order
    assert config_hash({**DEFAULT_CFG, **TINY}) == h  # defaults filled
    assert config_hash(dict(TINY, lr=0.05, momentum=0.9)) == h
    assert config_hash({}) == config_hash(DEFAULT_CFG)
    assert config_hash(dict(TINY, eval_eps=1)) == config_hash(dict(TINY, eval_eps=1.0))
    code = f"from nblib.sweep import config_hash; print(config_hash({TINY!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == h  # another interpreter, another str-hash seed
    assert run_dir_for("/x", TINY) == Path("/x") / h


def test_hash_sensitive_to_every_key():
    assert set(OTHER_VALUE) == set(DEFAULT_CFG), "give OTHER_VALUE an entry for each new cfg key"
    base = dict(DEFAULT_CFG, dataset="cifar10")
    hashes = {config_hash(base)}
    for key, value in OTHER_VALUE.items():
        cfg = dict(base, **{key: value})
        if key == "regularizer":
            cfg["reg_strength"] = 1e-3
        if key == "reg_strength":
            cfg["regularizer"] = "nd_linf"
        assert cfg != base
        hashes.add(config_hash(cfg))
    assert len(hashes) == len(OTHER_VALUE) + 1


def test_hash_rejects_unknown_keys():
    with pytest.raises(ValueError, match="lrate"):
        config_hash(dict(lrate=0.1))


# --------------------------------------------------------------------------- cache
def test_cache_hit_skips_training(tmp_path, fake_run_one):
    m1 = run_cached(TINY, tmp_path)
    d = run_dir_for(tmp_path, TINY)
    for f in ("cfg.json", "metrics.json", "history.json", "versions.json", "DONE"):
        assert (d / f).exists(), f
    assert json.loads((d / "cfg.json").read_text()) == train.fill_cfg(TINY)
    v = json.loads((d / "versions.json").read_text())
    assert v["torch"] == torch.__version__ and {"cuda", "git_sha", "device_name", "python"} <= set(v)
    assert run_status(d, TINY) == ("done", "finished")
    m2 = run_cached(dict(TINY), tmp_path)
    assert m2 == m1 and len(fake_run_one) == 1


def test_done_less_folder_resumes(tmp_path):
    d = run_dir_for(tmp_path, TINY)
    assert train.run_one(TINY, d, stop_after_epochs=1) is None  # "killed" after epoch 1
    assert run_status(d, TINY)[0] == "partial"
    m = run_cached(TINY, tmp_path)
    assert m["resumed_from_epoch"] == 1 and m["epochs_trained"] == 2
    assert (d / "DONE").exists() and run_status(d, TINY)[0] == "done"


@pytest.mark.parametrize("damage", ["metrics_garbage", "metrics_missing", "history_missing", "cfg_mismatch",
                                    "cfg_garbage"])
def test_corrupt_folder_is_moved_aside_and_rerun(tmp_path, fake_run_one, damage):
    run_cached(TINY, tmp_path)
    d = run_dir_for(tmp_path, TINY)
    if damage == "metrics_garbage":
        (d / "metrics.json").write_text('{"clean_acc": 0.9')  # truncated
    elif damage == "metrics_missing":
        (d / "metrics.json").unlink()
    elif damage == "history_missing":
        (d / "history.json").unlink()
    elif damage == "cfg_mismatch":
        (d / "cfg.json").write_text(json.dumps(dict(train.fill_cfg(TINY), lr=0.5)))
    else:
        (d / "cfg.json").write_text("{nonsense")
    assert run_status(d, TINY)[0] == "corrupt"
    with pytest.warns(UserWarning, match="moved to"):
        m = run_cached(TINY, tmp_path)
    assert len(fake_run_one) == 2 and m["clean_acc"] == 0.5
    assert run_status(d, TINY)[0] == "done"
    aside = list((tmp_path / "_corrupt").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(d.name) and (aside[0] / "REASON").exists()


def test_unreadable_checkpoint_is_moved_aside_and_rerun(tmp_path):
    d = run_dir_for(tmp_path, TINY)
    d.mkdir(parents=True)
    (d / train.CHECKPOINT).write_bytes(b"\x00 truncated")
    with pytest.warns(UserWarning, match="checkpoint unusable"):
        m = run_cached(TINY, tmp_path)
    assert m["resumed_from_epoch"] == 0 and m["epochs_trained"] == 2
    assert run_status(d, TINY)[0] == "done"
    assert len(list((tmp_path / "_corrupt").iterdir())) == 1


# --------------------------------------------------------------------------- grids and sweeps
def test_expand_grid():
    base = {"model": "smallcnn", "lr": 0.1}
    grid = expand_grid(base, regularizer=["wd", "nd_linf"], reg_strength=[1e-2, 1e-3, 1e-4])
    assert len(grid) == 6
    assert grid[0] == {"model": "smallcnn", "lr": 0.1, "regularizer": "wd", "reg_strength": 1e-2}
    assert grid[1]["reg_strength"] == 1e-3 and grid[3]["regularizer"] == "nd_linf"
    assert base == {"model": "smallcnn", "lr": 0.1}
    assert expand_grid(base) == [base]
    assert expand_grid(base, seed=range(3))[2]["seed"] == 2
    assert expand_grid(base, seed=[]) == []
    with pytest.raises(ValueError, match="list"):
        expand_grid(base, model="vgg11")


def test_run_sweep_local(tmp_path, fake_run_one):
    cfgs = expand_grid(TINY, seed=[0, 1, 2]) + [dict(TINY, seed=1)]  # a duplicate
    df = run_sweep(cfgs, tmp_path)
    assert isinstance(df, pd.DataFrame) and len(df) == 4 and len(fake_run_one) == 3
    assert list(df["seed"]) == [0, 1, 2, 1]
    assert list(df["clean_acc"]) == pytest.approx([0.50, 0.51, 0.52, 0.51])
    assert "norms_linf" not in df.columns  # only scalar metrics
    assert (df["epochs"] == 2).all() and (df["metric_epochs"] == -1).all()  # no clash with cfg keys
    assert set(DEFAULT_CFG) <= set(df.columns) and df["milestones"].iloc[0] == tuple(DEFAULT_CFG["milestones"])
    assert list(df["hash"]) == [config_hash(c) for c in cfgs]
    df2 = run_sweep(cfgs, tmp_path)
    assert len(fake_run_one) == 3 and df2.equals(df)
    with pytest.raises(ValueError, match="slurm"):
        run_sweep(cfgs, tmp_path, executor="dask")


def test_run_sweep_worker_per_gpu_path(tmp_path):
    """The one-process-per-GPU path, exercised with CPU configs (workers get CUDA_VISIBLE_DEVICES)."""
    cfgs = expand_grid(dict(TINY, epochs=1, train_subset=32), seed=[0, 1])
    df = run_sweep(cfgs, tmp_path, gpus=[0, 1])
    assert len(df) == 2 and df["epochs_trained"].tolist() == [1, 1]
    for c in cfgs:
        d = run_dir_for(tmp_path, c)
        assert run_status(d, c)[0] == "done"
    assert {json.loads((run_dir_for(tmp_path, c) / "versions.json").read_text())["cuda_visible_devices"]
            for c in cfgs} <= {"0", "1"}


def test_run_sweep_validates_every_cfg_first(tmp_path, fake_run_one):
    with pytest.raises(ValueError, match="lrr"):
        run_sweep([TINY, dict(TINY, lrr=1)], tmp_path)
    assert fake_run_one == []


def test_run_sweep_through_submitit(tmp_path, fake_run_one):
    pytest.importorskip("submitit")
    run_cached(dict(TINY, seed=0), tmp_path)  # already finished: no job for it
    df = run_sweep(expand_grid(TINY, seed=[0, 1]), tmp_path, executor="slurm", submitit_cluster="debug",
                   slurm_kwargs=dict(timeout_min=5))
    assert list(df["clean_acc"]) == pytest.approx([0.50, 0.51]) and len(fake_run_one) == 2
    assert (run_dir_for(tmp_path, dict(TINY, seed=1)) / "DONE").exists()


def test_missing_submitit_names_the_install(tmp_path, monkeypatch, fake_run_one):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ImportError, match="pip install submitit"):
        run_sweep([TINY], tmp_path, executor="slurm")


def test_versions_tolerates_missing_git(monkeypatch):
    def no_git(*a, **k):
        raise FileNotFoundError("git")
    monkeypatch.setattr(sweep.subprocess, "run", no_git)
    v = sweep.versions("cpu")
    assert v["git_sha"] is None and v["torch"] == torch.__version__


def test_slurm_kwargs():
    assert slurm_kwargs("local", "gpu") is None
    assert slurm_kwargs("slurm") == dict(timeout_min=1440, gpus_per_node=1, cpus_per_task=8)
    assert slurm_kwargs("slurm", "gpu", 60)["slurm_partition"] == "gpu"
