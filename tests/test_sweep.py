"""Tests for nblib.runs.folders, nblib.runs.cache and nblib.runs.sweep: config hashing, the run-folder cache
(finished / killed / corrupt / stale / diverged), locking between worker processes, and sweeps."""
import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nblib.training import adversarial, train
from nblib.attacks import autoattack
from nblib.runs import folders
from nblib.training.checkpoint import CHECKPOINT
from nblib.results import pack_outcomes, read_json, unpack_outcomes, write_json_atomic
from nblib.runs.cache import RunLocked, run_cached
from nblib.training.run_config import DEFAULT_CFG, IGNORED_UNLESS, fill_cfg
from nblib.runs.folders import config_hash, run_dir_for, run_status
from nblib.runs.schema import check_metrics
from nblib.runs.sweep import SLURM_TIMEOUT_MIN, expand_grid, run_sweep, slurm_kwargs
from run_results import TIME_KEYS, without_times

TINY = dict(model="smallcnn", dataset="digits", train_subset=64, batch_size=32, epochs=2, lr=0.05,
            attack="none", n_eval=16)

# a valid different value for every key of DEFAULT_CFG (the test below fails when a key is added)
OTHER_VALUE = {
    "model": "vgg11", "dataset": "digits", "data_root": "elsewhere", "augment": False, "train_subset": 100,
    "epochs": 7, "batch_size": 64, "lr": 0.1, "momentum": 0.5, "milestones": [0.5], "lr_decay": 0.2,
    "weight_decay": 5e-4, "regularizer": "nd_l1", "reg_strength": 1e-3, "reg_gamma": 0.9,
    "reg_clip_every": 10, "adv_mode": "trades", "adv_preset": "authors", "seed": 1, "device": "cuda",
    "cudnn_deterministic": True, "precision": "bf16", "channels_last": True, "eval_eps": 8 / 255, "n_eval": 10,
    "attack": "authors", "attack_budget": 0.5, "local_lipschitz": True, "reg_beta_scaling": "total",
    "reg_svc_linear": False, "extra_eval_eps": [4 / 255], "reg_nd_update": "authors",
    "reg_nd_layers": "authors", "compile": "default",
}
# what a key needs beside it to have an effect (nblib.training.run_config.IGNORED_UNLESS)
CONTEXT = {"reg_gamma": dict(regularizer="nd_l1", reg_strength=1e-3),
           "reg_clip_every": dict(regularizer="svc", reg_strength=1.0),
           "adv_preset": dict(adv_mode="pgd"), "cudnn_deterministic": dict(device="cuda"),
           "reg_beta_scaling": dict(regularizer="nd_l1", reg_strength=1e-3),
           "reg_nd_update": dict(regularizer="nd_l1", reg_strength=1e-3),
           "reg_nd_layers": dict(regularizer="nd_l1", reg_strength=1e-3),
           "reg_svc_linear": dict(regularizer="svc", reg_strength=1.0)}
TIME_KEYS = (*TIME_KEYS, "device")
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _without_times(obj):
    return without_times(obj, TIME_KEYS)


def fake_metrics(cfg):
    """Metrics that pass the schema for ``cfg`` (what run_one returns, with made-up numbers)."""
    attacked = cfg["attack"] != "none"
    lip = cfg["local_lipschitz"]
    return {"status": "done", "clean_acc": 0.5 + 0.01 * cfg["seed"], "train_acc": 0.6, "test_loss": 1.0,
            "train_loss": 1.1, "epochs_trained": cfg["epochs"], "n_train": 64, "n_test": 360, "n_params": 10,
            "global_steps": 4, "layer_names": ["a", "b"], "norms_linf": [1.0, 2.0], "norms_l1": [1.0, 3.0],
            "linf_norm_product": 2.0, "robust_acc": 0.25 if attacked else None,
            "aa_clean_acc": 0.5 if attacked else None, "lip_mean": 1.0 if lip else None,
            "lip_max": 2.0 if lip else None, "attack": cfg["attack"], "eval_eps": cfg["eval_eps"], "epochs": -1,
            "clean_correct": pack_outcomes(np.arange(360) < round(360 * (0.5 + 0.01 * cfg["seed"]))),
            "n_eval": 8 if attacked else None,
            "robust_correct": pack_outcomes(np.arange(8) < 2) if attacked else None}


@pytest.fixture
def fake_run_one(monkeypatch):
    """Replace training by a stub that writes what run_one writes and counts its calls."""
    calls = []

    def fake(cfg, run_dir, **_):
        calls.append(config_hash(cfg))
        metrics = fake_metrics(cfg)
        torch.save({"w": torch.arange(3.0)}, Path(run_dir, CHECKPOINT))
        write_json_atomic(Path(run_dir, "history.json"), [{"epoch": 1}])
        write_json_atomic(Path(run_dir, "metrics.json"), metrics)
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
    code = f"from nblib.runs.folders import config_hash; print(config_hash({TINY!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == h  # another interpreter, another str-hash seed
    assert run_dir_for("/x", TINY) == Path("/x") / h


def test_hash_sensitive_to_every_key():
    assert set(OTHER_VALUE) == set(DEFAULT_CFG), "give OTHER_VALUE an entry for each new cfg key"
    base = dict(DEFAULT_CFG, dataset="cifar10")
    hashes = set()
    for key, value in OTHER_VALUE.items():
        context = dict(base, **CONTEXT.get(key, {}))
        cfg = dict(context, **{key: value})
        if key == "regularizer":
            cfg["reg_strength"] = 1e-3
        if key == "reg_strength":
            cfg["regularizer"] = "nd_linf"
        assert cfg != context and config_hash(cfg) != config_hash(context), key
        hashes.add(config_hash(cfg))
    assert len(hashes) == len(OTHER_VALUE)


@pytest.mark.parametrize("cfg, unused", [
    (dict(reg_gamma=0.9), "no norm decay"),
    (dict(regularizer="wd", reg_strength=1e-4, reg_gamma=0.1, reg_clip_every=7), "wd uses neither"),
    (dict(regularizer="nd_linf", reg_strength=1e-3, reg_clip_every=7), "no svc"),
    (dict(regularizer="svc", reg_strength=1.0, reg_gamma=0.2), "no norm decay"),
    (dict(dataset="digits", data_root="/somewhere/else"), "digits are embedded"),
    (dict(adv_preset="authors"), "plain training"),
    (dict(cudnn_deterministic=True), "cpu"),
    (dict(attack="none", eval_eps=8 / 255, n_eval=10, attack_budget=0.1), "nothing evaluated at eps"),
    (dict(milestones=[], lr_decay=0.5), "no milestone"),
    (dict(regularizer="svc", reg_strength=1.0, reg_beta_scaling="total"), "beta scaling is norm decay's"),
    (dict(regularizer="nd_l1", reg_strength=1e-3, reg_svc_linear=False), "Linear clipping is SVC's"),
])
def test_settings_without_effect_hash_alike(cfg, unused):
    """The issue's examples: editing svc_every or nd_gamma in a profile must not retrain the other runs."""
    reference = {k: DEFAULT_CFG[k] for k in cfg if k in IGNORED_UNLESS}
    same = {**cfg, **reference}
    assert config_hash(cfg) == config_hash(same), unused
    assert fill_cfg(cfg) == fill_cfg(same)


def test_hash_rejects_unknown_keys():
    with pytest.raises(ValueError, match="lrate"):
        config_hash(dict(lrate=0.1))


# --------------------------------------------------------------------------- cache
def test_cache_hit_skips_training(tmp_path, fake_run_one):
    m1 = run_cached(TINY, tmp_path)
    d = run_dir_for(tmp_path, TINY)
    for f in ("cfg.json", "metrics.json", "history.json", "versions.json", "provenance.json", "DONE"):
        assert (d / f).exists(), f
    assert read_json(d / "cfg.json") == fill_cfg(TINY)
    v = read_json(d / "versions.json")
    assert v["torch"] == torch.__version__ and {"cuda", "git_sha", "device_name", "python"} <= set(v)
    prov = read_json(d / "provenance.json")
    assert prov == folders.provenance(TINY) and prov["code"] == folders.code_fingerprint()
    done = read_json(d / "DONE")
    assert done["status"] == "done" and done["checkpoint_bytes"] == (d / CHECKPOINT).stat().st_size
    assert run_status(d, TINY) == ("done", "finished")
    m2 = run_cached(dict(TINY), tmp_path)
    assert m2 == m1 and len(fake_run_one) == 1
    assert not list(d.glob("*.tmp")) and not list(d.glob(".*"))  # no temporary file left behind


def test_done_less_folder_resumes(tmp_path):
    d = run_dir_for(tmp_path, TINY)

    def kill(epoch, batch):
        if epoch == 1:
            raise KeyboardInterrupt  # "killed" in epoch 2, after the checkpoint of epoch 1
    with pytest.raises(KeyboardInterrupt):
        run_cached(TINY, tmp_path, step_callback=kill)
    assert run_status(d, TINY)[0] == "partial"
    train.run_one(TINY, tmp_path / "no-provenance", stop_after_epochs=1)  # a folder of unknown code
    assert run_status(tmp_path / "no-provenance", TINY)[0] == "stale"
    m = run_cached(TINY, tmp_path)
    assert m["resumed_from_epoch"] == 1 and m["epochs_trained"] == 2
    assert (d / "DONE").exists() and run_status(d, TINY)[0] == "done"


@pytest.mark.parametrize("damage", ["metrics_torn", "metrics_garbage", "metrics_out_of_range", "metrics_missing",
                                    "history_missing", "cfg_mismatch", "cfg_garbage", "checkpoint_truncated",
                                    "checkpoint_missing", "provenance_garbage"])
def test_corrupt_folder_is_moved_aside_and_rerun(tmp_path, fake_run_one, damage):
    run_cached(TINY, tmp_path)
    d = run_dir_for(tmp_path, TINY)
    good = read_json(d / "metrics.json")
    if damage == "metrics_torn":
        (d / "metrics.json").write_text('{"clean_acc": 0.9')
    elif damage == "metrics_garbage":  # the example: came back as the result
        (d / "metrics.json").write_text('{"clean_acc": "garbage"}')
    elif damage == "metrics_out_of_range":
        write_json_atomic(d / "metrics.json", dict(good, clean_acc=1.5, test_loss=math.nan))
    elif damage == "metrics_missing":
        (d / "metrics.json").unlink()
    elif damage == "history_missing":
        (d / "history.json").unlink()
    elif damage == "cfg_mismatch":
        (d / "cfg.json").write_text(json.dumps(dict(fill_cfg(TINY), lr=0.5)))
    elif damage == "cfg_garbage":
        (d / "cfg.json").write_text("{nonsense")
    elif damage == "checkpoint_truncated":  # the example: accepted next to DONE
        data = (d / CHECKPOINT).read_bytes()
        (d / CHECKPOINT).write_bytes(data[: len(data) // 2])
    elif damage == "checkpoint_missing":
        (d / CHECKPOINT).unlink()
    else:
        (d / "provenance.json").write_text('{"code": ')
    status, reason = run_status(d, TINY)
    assert status == "corrupt", reason
    with pytest.warns(UserWarning, match="moved to"):
        m = run_cached(TINY, tmp_path)
    assert len(fake_run_one) == 2 and m["clean_acc"] == 0.5 and m == good
    assert run_status(d, TINY)[0] == "done"
    aside = list((tmp_path / "_corrupt").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(d.name)
    assert reason in (aside[0] / "REASON").read_text()


def test_check_metrics_schema():
    cfg = fill_cfg(TINY)
    good = fake_metrics(cfg)
    assert check_metrics(good, cfg) == []
    assert check_metrics({"clean_acc": "garbage"}, cfg) == ["status = None is not 'done' or 'diverged'"]
    bad = dict(good, clean_acc="garbage", train_loss=math.inf, epochs_trained=1, norms_l1=[1.0],
               robust_acc=0.5, n_params=True)
    problems = " | ".join(check_metrics(bad, cfg))
    for key in ("clean_acc", "train_loss", "epochs_trained", "norms_l1", "robust_acc", "n_params"):
        assert key in problems
    attacked = fill_cfg(dict(TINY, attack="authors"))
    assert "robust_acc" in " ".join(check_metrics(good, attacked))  # None where an attack was run
    assert check_metrics([good], cfg) == ["metrics is a list, not a dict"]


def test_packed_outcomes_round_trip():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 1000, 10_000):
        mask = rng.random(n) < 0.3
        assert np.array_equal(unpack_outcomes(pack_outcomes(mask)), mask)
    assert len(pack_outcomes(np.ones(10_000, bool))) < 1700  # compact: 10,000 test images in about 1.7 kB
    for bad in ("", "3:", "9:AA==", "x:AA==", None):
        with pytest.raises(ValueError):
            unpack_outcomes(bad)


def test_check_metrics_needs_per_point_outcomes():
    attacked = fill_cfg(dict(TINY, attack="authors"))
    good = fake_metrics(attacked)
    assert check_metrics(good, attacked) == []
    wrong_mean = dict(good, clean_correct=pack_outcomes(np.zeros(360, bool)))   # does not average to clean_acc
    wrong_size = dict(good, robust_correct=pack_outcomes(np.arange(9) < 2))     # not the n_eval attacked points
    assert "clean_correct" in " ".join(check_metrics(wrong_mean, attacked))
    assert "robust_correct" in " ".join(check_metrics(wrong_size, attacked))
    assert "robust_correct" in " ".join(check_metrics(dict(good, robust_correct="garbage"), attacked))


def test_finished_run_without_per_point_outcomes_is_stale(tmp_path, fake_run_one):
    """A run of older code that kept only accuracies cannot take part in a paired test: stale, not read as
    done (and not corrupt: reuse_stale may keep it, marked)."""
    run_cached(TINY, tmp_path)
    d = run_dir_for(tmp_path, TINY)
    metrics = read_json(d / "metrics.json")
    del metrics["clean_correct"], metrics["robust_correct"]
    write_json_atomic(d / "metrics.json", metrics)
    status, reason = run_status(d, TINY)
    assert status == "stale" and "no per-point outcomes" in reason and "clean_correct missing" in reason
    write_json_atomic(d / "metrics.json", dict(metrics, clean_correct="3:AA=="))  # present but wrong: corrupt
    assert run_status(d, TINY)[0] == "corrupt"


def test_unreadable_checkpoint_is_moved_aside_and_rerun(tmp_path):
    d = run_dir_for(tmp_path, TINY)
    d.mkdir(parents=True)
    (d / CHECKPOINT).write_bytes(b"\x00 truncated")
    write_json_atomic(d / "provenance.json", folders.provenance(TINY))
    with pytest.warns(UserWarning, match="checkpoint unusable"):
        m = run_cached(TINY, tmp_path)
    assert m["resumed_from_epoch"] == 0 and m["epochs_trained"] == 2
    assert run_status(d, TINY)[0] == "done"
    assert len(list((tmp_path / "_corrupt").iterdir())) == 1


def test_torn_attack_state_is_quarantined_and_attack_restarts(tmp_path, monkeypatch):
    """A torn autoattack_state.json (the issue: a JSONDecodeError on every later sweep) is moved to
    _corrupt/ with its reason; the attack starts again and gives the uninterrupted result.  Every state
    write goes through the atomic writer, pyautoattack's own included."""
    cfg = dict(TINY, attack="authors", n_eval=8, eval_eps=8 / 255)
    d = run_dir_for(tmp_path, cfg)
    written = []
    real = autoattack.write_atomic
    monkeypatch.setattr(autoattack, "write_atomic", lambda path, data: written.append(Path(path)) or real(path, data))
    first = run_cached(cfg, tmp_path)
    assert d / "autoattack_state.json" in written and first["robust_acc"] is not None
    (d / "DONE").unlink()
    (d / "metrics.json").unlink()
    (d / "autoattack_state.json").write_text('{"_attacks_to_run": ["apgd-ce", "apgd')  # torn write
    with pytest.raises(autoattack.AttackStateError, match="autoattack_state.json"):  # named, not a bare JSON error
        autoattack.autoattack_accuracy(torch.nn.Linear(1, 4), torch.zeros(2, 1), torch.zeros(2), eps=0.1,
                                       version="authors", state_path=d / "autoattack_state.json")
    with pytest.warns(UserWarning, match="unreadable AutoAttack state"):
        again = run_cached(cfg, tmp_path)
    assert again["aa_resumed"] is False
    assert _without_times(again) == _without_times(first)
    (aside,) = (tmp_path / "_corrupt").iterdir()
    assert (aside / "autoattack_state.json").exists() and "unreadable" in (aside / "REASON").read_text()
    assert run_status(d, cfg)[0] == "done"


def test_diverged_run_is_recorded_and_not_retried(tmp_path, monkeypatch, capfd):
    """The issue's lr = 1e9: stored as 'diverged' (NaN metrics, the reason), shown in the table, not rerun."""
    cfg = dict(TINY, lr=1e9)
    calls = []
    real = train.run_one
    monkeypatch.setattr(train, "run_one", lambda *a, **k: calls.append(1) or real(*a, **k))
    df = run_sweep([cfg, TINY], tmp_path)
    assert list(df["status"]) == ["diverged", "done"] and len(calls) == 2
    row = df.iloc[0]
    assert math.isnan(row["clean_acc"]) and math.isnan(row["test_loss"]) and "loss became" in row["reason"]
    d = run_dir_for(tmp_path, cfg)
    assert run_status(d, cfg)[0] == "diverged" and read_json(d / "DONE")["status"] == "diverged"
    stored = json.loads((d / "metrics.json").read_text())  # raw JSON: NaN and "not measured" differ
    assert stored["clean_acc"] == "NaN" and stored["robust_acc"] is None and stored["diverged_epoch"] == 1
    df2 = run_sweep([cfg, TINY], tmp_path)
    assert len(calls) == 2 and list(df2["status"]) == ["diverged", "done"]
    assert "diverged in" in capfd.readouterr().err  # the plain progress line of a log


# --------------------------------------------------------------------------- provenance
def test_changed_preset_is_not_reused(tmp_path, fake_run_one, monkeypatch):
    cfg = dict(TINY, adv_mode="pgd")
    run_cached(cfg, tmp_path)
    assert read_json(run_dir_for(tmp_path, cfg) / "provenance.json")["settings"]["adv_preset"]["steps"] == 10
    monkeypatch.setitem(adversarial.ADV_PRESETS["standard"], "steps", 3)  # same name, other settings
    status, reason = run_status(run_dir_for(tmp_path, cfg), cfg)
    assert status == "stale" and "adv_preset" in reason
    kept = run_sweep([cfg], tmp_path, reuse_stale=True)
    assert len(fake_run_one) == 1 and kept["stale"].tolist() == [True] and "steps" in kept["stale_reason"][0]
    with pytest.warns(UserWarning, match="not from the current code"):
        df = run_sweep([cfg], tmp_path)
    assert len(fake_run_one) == 2 and df["stale"].tolist() == [False]
    assert len(list((tmp_path / "_stale").iterdir())) == 1
    assert read_json(run_dir_for(tmp_path, cfg) / "provenance.json")["settings"]["adv_preset"]["steps"] == 3


def test_changed_code_is_not_reused(tmp_path, fake_run_one, monkeypatch):
    run_cached(TINY, tmp_path)
    d = run_dir_for(tmp_path, TINY)
    monkeypatch.setattr(folders, "code_fingerprint", lambda: "another-code")
    assert run_status(d, TINY)[0] == "stale"
    assert run_cached(TINY, tmp_path, reuse_stale=True)["stale_reason"].startswith("result of other code")
    assert len(fake_run_one) == 1
    with pytest.warns(UserWarning, match="_stale"):
        m = run_cached(TINY, tmp_path)
    assert len(fake_run_one) == 2 and "stale_reason" not in m and run_status(d, TINY)[0] == "done"


def test_folder_of_older_code_is_stale(tmp_path, fake_run_one):
    """A finished folder written before provenance was recorded (no provenance.json, DONE a time stamp,
    no status in metrics.json): rerun by default, kept and marked with reuse_stale."""
    run_cached(TINY, tmp_path)
    d = run_dir_for(tmp_path, TINY)
    (d / "provenance.json").unlink()
    (d / "DONE").write_text("2026-01-01T00:00:00+0000\n")
    metrics = read_json(d / "metrics.json")
    del metrics["status"]
    write_json_atomic(d / "metrics.json", metrics)
    status, reason = run_status(d, TINY)
    assert status == "stale" and "no provenance" in reason
    kept = run_sweep([TINY], tmp_path, reuse_stale=True)
    assert kept["stale"].tolist() == [True] and kept["clean_acc"].tolist() == [0.5] and len(fake_run_one) == 1
    (d / CHECKPOINT).write_bytes(b"torn")
    assert run_status(d, TINY)[0] == "corrupt"  # an old DONE still needs a loadable checkpoint


def test_code_fingerprint_covers_result_code(tmp_path, monkeypatch):
    fp = folders.code_fingerprint()
    assert len(fp) == 16 and fp == folders.code_fingerprint()
    names = {p.relative_to(REPO / "nblib").as_posix() for p in folders.fingerprinted_sources()}
    assert {"training/train.py", "attacks/autoattack.py", "norms/operator_norms.py", "training/regularizers.py",
            "data/datasets.py", "training/adversarial.py", "models/__init__.py"} <= names
    assert not {n.split("/")[0] for n in names} - set(folders.RESULT_PACKAGES)  # runs/, claims/, ... are not
    assert {"runs/sweep.py", "runs/folders.py", "runs/cache.py", "experiments/table2.py"}.isdisjoint(names)
    # copies of the sources (read once per process and folder): the same bytes give the same fingerprint,
    # one more byte in one source another
    sources = folders.fingerprinted_sources()
    for name, extra in (("same", b""), ("edited", b"\n")):
        copy = tmp_path / name / "nblib"
        for f in sources:
            (copy / f.relative_to(REPO / "nblib")).parent.mkdir(parents=True, exist_ok=True)
            tail = extra if f.name == "operator_norms.py" else b""
            (copy / f.relative_to(REPO / "nblib")).write_bytes(f.read_bytes() + tail)
        monkeypatch.setattr(folders, "_REPO", tmp_path / name)
        assert (folders.code_fingerprint() == fp) == (name == "same"), name


def test_folder_of_an_old_hash_is_reported(tmp_path, fake_run_one):
    run_cached(TINY, tmp_path)
    d = run_dir_for(tmp_path, TINY)
    old = d.rename(tmp_path / "0123456789ab")  # as if hashed by an older rule
    assert folders.old_hash_folders(tmp_path) == {d.name: [old]}
    with pytest.warns(UserWarning, match="older config hash.*0123456789ab.*reused"):
        kept = run_sweep([TINY], tmp_path, reuse_stale=True)
    assert kept["stale"].tolist() == [True] and len(fake_run_one) == 1
    with pytest.warns(UserWarning, match="older config hash.*not reused"):
        run_sweep([TINY], tmp_path)
    assert len(fake_run_one) == 2 and old.exists()


# --------------------------------------------------------------------------- locks
def test_locked_run_is_put_off_then_waited_for(tmp_path, fake_run_one, capfd):
    """A sequential sweep moves on past a config another process trains, and waits for it at the end."""
    a, b = dict(TINY, seed=0), dict(TINY, seed=1)
    (tmp_path / "_locks").mkdir()
    fd = os.open(tmp_path / "_locks" / f"{config_hash(a)}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # "another worker" holds a's lock
    write_json_atomic(tmp_path / "_locks" / f"{config_hash(a)}.holder.json",
                      {"host": "otherhost", "pid": 4242, "since": "2026-01-01T00:00:00"})
    with pytest.raises(RunLocked, match="otherhost pid 4242"):
        run_cached(a, tmp_path, wait=False)
    threading.Timer(1.0, os.close, args=(fd,)).start()  # the holder dies after 1 s
    df = run_sweep([a, b], tmp_path)
    assert fake_run_one == [config_hash(b), config_hash(a)]  # b first, then a after the lock came free
    assert "is being trained by host otherhost pid 4242 since 2026-01-01" in capfd.readouterr().err
    assert list(df["status"]) == ["done", "done"]


WORKER = """
import json, os, sys
from nblib.runs import cache, folders, sweep
from nblib.training import train
root, log, out = sys.argv[1], sys.argv[2], sys.argv[3]
cfgs = json.loads(sys.argv[4])
real = train.run_one
def counted(cfg, run_dir, **kw):  # one line per training (O_APPEND: whole lines)
    with open(log, "a") as f:
        f.write(folders.config_hash(cfg) + "\\n")
    return real(cfg, run_dir, **kw)
train.run_one = counted
df = sweep.run_sweep(cfgs, root)
json.dump({h: cache.run_cached(c, root) for h, c in zip(df["hash"], cfgs)}, open(out, "w"))
"""


def _python(code, *args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env, **kw)


@pytest.mark.slow
def test_four_workers_train_each_config_once(tmp_path):
    """Four processes, started together on one root with overlapping config lists (in different orders):
    each config trains once, no process fails, every result equals a sequential run's."""
    cfgs = expand_grid(dict(TINY, epochs=1), seed=[0, 1, 2])
    root, log = tmp_path / "shared", tmp_path / "trainings.log"
    orders = [cfgs, cfgs[::-1], cfgs[1:] + cfgs[:1], [cfgs[2], cfgs[0]]]
    procs = [_python(WORKER, root, log, tmp_path / f"out{i}.json", json.dumps(o), stderr=subprocess.PIPE)
             for i, o in enumerate(orders)]
    errs = [p.communicate(timeout=600)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errs
    trained = log.read_text().split()
    assert sorted(trained) == sorted(config_hash(c) for c in cfgs)  # each config exactly once
    sequential = {config_hash(c): run_cached(c, tmp_path / "sequential") for c in cfgs}
    for i, order in enumerate(orders):
        got = json.loads((tmp_path / f"out{i}.json").read_text())
        assert set(got) == {config_hash(c) for c in order}
        for h, m in got.items():
            assert _without_times(m) == _without_times(sequential[h]), (i, h)
    assert not (root / "_corrupt").exists() and not list(root.rglob("*.tmp"))


KILLED = """
import sys, time, pathlib
from nblib.runs import cache
root, marker, cfg = sys.argv[1], pathlib.Path(sys.argv[2]), eval(sys.argv[3])
def hang(epoch, batch):  # in the middle of the second epoch: tell the test, then hang until killed
    if epoch == 1 and batch == 2:
        marker.write_text("mid-epoch")
        time.sleep(600)
cache.run_cached(cfg, root, step_callback=hang)
"""
WAITER = """
import json, sys
from nblib.runs import cache
root, out, cfg = sys.argv[1], sys.argv[2], eval(sys.argv[3])
json.dump(cache.run_cached(cfg, root), open(out, "w"))
"""


@pytest.mark.slow
def test_waiter_takes_over_a_killed_worker(tmp_path):
    """Worker A is killed (SIGKILL) in the middle of epoch 2 while B waits for the same config: B takes the
    lock over, resumes from A's checkpoint of epoch 1 and ends with the uninterrupted run's result."""
    cfg = dict(TINY, train_subset=128, epochs=2)
    root, marker = tmp_path / "shared", tmp_path / "marker"
    a = _python(KILLED, root, marker, repr(cfg))
    deadline = time.time() + 300
    while not marker.exists():
        assert a.poll() is None and time.time() < deadline, "worker A ended before the middle of epoch 2"
        time.sleep(0.2)
    err_path = tmp_path / "b.err"
    with open(err_path, "w") as err:
        b = _python(WAITER, root, tmp_path / "b.json", repr(cfg), stderr=err)
        while f"pid {a.pid}" not in err_path.read_text():
            assert b.poll() is None and time.time() < deadline, err_path.read_text()
            time.sleep(0.2)
        assert run_status(run_dir_for(root, cfg), cfg)[0] == "partial"  # A's folder is left alone
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        assert b.wait(timeout=300) == 0, err_path.read_text()
    assert "is being trained by host" in err_path.read_text()
    took_over = json.loads((tmp_path / "b.json").read_text())
    assert took_over["resumed_from_epoch"] == 1
    uninterrupted = run_cached(cfg, tmp_path / "alone")
    assert _without_times(took_over) == _without_times(uninterrupted)
    assert run_status(run_dir_for(root, cfg), cfg)[0] == "done" and not (root / "_corrupt").exists()


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
    assert (df["status"] == "done").all() and not df["stale"].any()
    assert set(DEFAULT_CFG) <= set(df.columns) and df["milestones"].iloc[0] == tuple(DEFAULT_CFG["milestones"])
    assert list(df["hash"]) == [config_hash(c) for c in cfgs]
    df2 = run_sweep(cfgs, tmp_path)
    assert len(fake_run_one) == 3 and df2.equals(df)
    with pytest.raises(ValueError, match="slurm"):
        run_sweep(cfgs, tmp_path, executor="dask")


@pytest.mark.slow  # spawns two worker processes (about 25 s on the loaded test box)
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
    monkeypatch.setattr(folders.subprocess, "run", no_git)
    v = folders.versions("cpu")
    assert v["git_sha"] is None and v["torch"] == torch.__version__


def test_slurm_kwargs():
    assert slurm_kwargs("local", "gpu") is None
    assert slurm_kwargs("slurm") == dict(timeout_min=SLURM_TIMEOUT_MIN, gpus_per_node=1, cpus_per_task=8)
    assert slurm_kwargs("slurm", "gpu", 60)["slurm_partition"] == "gpu"


class InProcessPool:
    """A stand-in for ``ProcessPoolExecutor`` that records each worker's ``initargs`` and runs in this process."""
    started: list = []

    def __init__(self, max_workers, mp_context, initializer, initargs):
        InProcessPool.started.append(initargs)

    def submit(self, fn, *args, **kwargs):
        from concurrent.futures import Future
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future

    def shutdown(self, wait=True):
        pass


def test_gpu_workers_map_through_the_parents_visible_devices(tmp_path, monkeypatch, fake_run_one):
    """Inside an allocation with ``CUDA_VISIBLE_DEVICES=4,5`` (2 GPUs seen), ``gpus=[0, 1]`` run on physical
    GPUs 4 and 5 (a77f116 gave the workers "0" and "1"); UUIDs pass through; an index the allocation does not
    hold, or a config naming ``cuda:1`` (each worker sees its GPU as cuda:0), fails before any run."""
    import concurrent.futures
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", InProcessPool)
    InProcessPool.started = []
    cfgs = expand_grid(TINY, seed=[0, 1, 2])
    df = run_sweep(cfgs, tmp_path, gpus=[0, 1])
    assert len(df) == 3 and sorted(InProcessPool.started) == [("4",), ("5",)]
    from nblib.runs.sweep import worker_devices
    assert worker_devices([1, 0, 1]) == ["5", "4", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa, GPU-bbbb")
    assert worker_devices([1]) == ["GPU-bbbb"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    with pytest.raises(ValueError, match="sees 2 GPU"):
        run_sweep(expand_grid(TINY, seed=[3]), tmp_path, gpus=[2])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="sees 2 GPU"):
        worker_devices([0, 2])
    with pytest.raises(ValueError, match="cuda:0"):
        run_sweep([dict(TINY, seed=4, device="cuda:1")], tmp_path, gpus=[0, 1])
    assert len(fake_run_one) == 3


def test_cuda_ordinal_that_this_process_does_not_see_is_refused(monkeypatch):
    """``device="cuda:1"`` with one visible GPU is refused by check_runnable, naming the fix (a77f116 let it
    through to an "invalid device ordinal" in the worker)."""
    from nblib.training.run_config import check_runnable
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_runnable(dict(TINY, device="cuda:0"))
    with pytest.raises(ValueError, match="sees 1 GPU"):
        check_runnable(dict(TINY, device="cuda:1"))
