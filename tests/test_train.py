"""Tests for nblib.training.train.run_one on the embedded digits data with the small CNN (CPU)."""
import json
import math
import time

import numpy as np
import pytest
import torch

from nblib.training import run_config
from nblib.training.checkpoint import CHECKPOINT, CheckpointError
from nblib.data import get_dataset
from nblib.models import build
from nblib.results import unpack_outcomes
from nblib.norms import layer_norms
from nblib.training.run_config import DEFAULT_CFG, backend_flags, fill_cfg, float32_flags, scaled_milestones
from nblib.training.train import run_one
from run_results import without_times

# 256 training images, 4 SGD steps of 64 per epoch; no AutoAttack unless a test asks for it
TINY = dict(model="smallcnn", dataset="digits", train_subset=256, batch_size=64, epochs=2, lr=0.05,
            attack="none", n_eval=32)


pytestmark = pytest.mark.usefixtures("one_thread")


def _checkpoint(run_dir):
    return torch.load(run_dir / CHECKPOINT, weights_only=True)




# --------------------------------------------------------------------------- config
def test_fill_cfg_defaults_and_normalisation():
    assert fill_cfg({}) == fill_cfg(DEFAULT_CFG)
    cfg = fill_cfg(dict(lr=1, milestones=(0.5,)))
    assert cfg["lr"] == 1.0 and isinstance(cfg["lr"], float) and cfg["milestones"] == [0.5]
    assert set(cfg) == set(DEFAULT_CFG)
    assert DEFAULT_CFG["batch_size"] == 128 and DEFAULT_CFG["momentum"] == 0.9
    assert scaled_milestones(DEFAULT_CFG["milestones"], 120) == [75, 90, 100]


@pytest.mark.parametrize("bad, match", [
    (dict(learning_rate=0.1), "learning_rate"),
    (dict(lr="0.1"), "lr"),
    (dict(epochs=2.0), "epochs"),
    (dict(model="resnet50"), "resnet18"),
    (dict(regularizer="l2"), "nd_linf"),
    (dict(adv_mode="fgsm"), "trades"),
    (dict(attack="apgd"), "authors"),
    (dict(reg_strength=0.1), "no effect"),
    (dict(regularizer="wd", reg_strength=1e-4, weight_decay=5e-4), "weight_decay"),
    (dict(regularizer="svc"), "clip value"),
    (dict(milestones=[0.9, 0.5]), "milestones"),
    (dict(device="gpu"), "device"),
    (dict(augment=1), "augment"),
    (dict(regularizer="nd_linf"), "no effect"),  # beta = 0: a copy of "none" (the issue)
    (dict(regularizer="nd_l1", reg_strength=0.0), "no effect"),
    (dict(regularizer="wd"), "no effect"),
    (dict(precision="fp16"), "fp32, tf32, bf16"),
    (dict(amp="bf16"), "unknown cfg keys"),  # the old key name: refused, not ignored
    (dict(channels_last=1), "channels_last"),
    (dict(seed=2 ** 16), "smaller seed"),
    (dict(seed=-1), "seed"),
    (dict(seed=2 ** 32), "seed"),
    (dict(reg_beta_scaling="per_model"), "reg_beta_scaling"),
    (dict(extra_eval_eps=[4 / 255, 0.0]), "extra_eval_eps"),
    (dict(extra_eval_eps=[4 / 255], attack="none"), "extra_eval_eps"),
])
def test_bad_cfg_raises(bad, match):
    with pytest.raises(ValueError, match=match):
        fill_cfg(bad)


def test_unused_settings_reset_to_defaults():
    cfg = fill_cfg(dict(regularizer="wd", reg_strength=1e-3, reg_gamma=0.9, reg_clip_every=3, dataset="digits",
                        data_root="/x", adv_preset="authors", attack="none", n_eval=5, eval_eps=0.5))
    for key in ("reg_gamma", "reg_clip_every", "data_root", "adv_preset", "n_eval", "eval_eps"):
        assert cfg[key] == DEFAULT_CFG[key], key
    used = fill_cfg(dict(regularizer="nd_l1", reg_strength=1e-3, reg_gamma=0.9, adv_mode="pgd",
                         adv_preset="authors", n_eval=5))
    assert used["reg_gamma"] == 0.9 and used["adv_preset"] == "authors" and used["n_eval"] == 5


@pytest.mark.parametrize("bad, match", [
    (dict(attack="authors", n_eval=100000), "n_eval"),  # the issue: failed only after all epochs
    (dict(local_lipschitz=True, n_eval=361), "n_eval"),
    (dict(train_subset=5000), "train_subset"),
    (dict(precision="bf16"), "CUDA"),  # bf16 autocast on the CPU: refused before the run folder exists
    (dict(precision="tf32"), "CUDA"),
])
def test_checked_before_training(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        run_one(dict(TINY, **bad), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=match):
        run_config.check_runnable(dict(TINY, **bad))


def test_train_subset_zero_means_all_and_none_is_refused():
    """One name, one default from profile to run: ``train_subset`` 0 trains on every image; None (the old
    spelling of "all") is refused with the fix."""
    assert DEFAULT_CFG["train_subset"] == 0 and fill_cfg({})["train_subset"] == 0
    with pytest.raises(ValueError, match="use 0 for all training images"):
        fill_cfg(dict(train_subset=None))
    with pytest.raises(ValueError, match="train_subset"):
        fill_cfg(dict(train_subset=-1))
    assert run_config.check_runnable(dict(TINY, train_subset=0)) == {"n_train": 1437, "n_test": 360}


def test_missing_data_is_found_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found"):
        run_config.check_runnable(dict(TINY, dataset="cifar10", data_root=str(tmp_path / "nothing")))
    assert run_config.check_runnable(TINY) == {"n_train": 1437, "n_test": 360}


def test_run_settings_resolve_the_names():
    s = run_config.run_settings(dict(TINY, adv_mode="trades", adv_preset="authors", attack="authors"))
    assert s["adv_preset"]["trades_beta"] == 1.0 and s["adv_preset"]["eps"] == 0.031
    assert s["attack"]["attacks"] == ["apgd-ce", "apgd-t"] and s["attack"]["eps"] == DEFAULT_CFG["eval_eps"]
    assert run_config.run_settings(TINY) == {"adv_preset": None, "attack": None}


def test_one_plain_line_per_epoch_without_a_terminal(tmp_path, capfd):
    m = run_one(dict(TINY, epochs=2, train_subset=64), tmp_path)
    err = capfd.readouterr().err
    assert "epoch 1/2 loss" in err and "epoch 2/2 loss" in err and "\r" not in err  # no redrawn bar
    assert m["status"] == "done" and m["settings"] == run_config.run_settings(TINY)


def test_diverging_run_raises_floating_point_error(tmp_path):
    with pytest.raises(FloatingPointError, match="loss became"):
        run_one(dict(TINY, lr=1e9, epochs=1), tmp_path)


def test_run_one_rejects_unknown_key_before_work(tmp_path):
    with pytest.raises(ValueError, match="epoch_count"):
        run_one(dict(TINY, epoch_count=3), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bf16_autocast_refused_on_cpu_before_work(tmp_path):
    with pytest.raises(ValueError, match="precision='fp32'"):
        run_one(dict(TINY, precision="bf16"), tmp_path)
    assert not (tmp_path / CHECKPOINT).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_gpu_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="device='cpu'"):
        run_one(dict(TINY, device="cuda"), tmp_path)


def test_scaled_milestones():
    fr = [75 / 120, 90 / 120, 100 / 120]
    assert scaled_milestones(fr, 120) == [75, 90, 100]
    assert scaled_milestones(fr, 240) == [150, 180, 200]
    assert scaled_milestones(fr, 10) == [6, 8, 8]
    assert scaled_milestones(fr, 4) == [3, 3, 3]
    assert scaled_milestones([], 7) == []


def test_lr_follows_scaled_milestones(tmp_path):
    run_one(dict(TINY, epochs=4, train_subset=64, lr=0.04), tmp_path)
    lrs = [h["lr"] for h in json.loads((tmp_path / "history.json").read_text())]
    # 4 epochs: every milestone lands on epoch index 3 -> three decays at once
    assert lrs == pytest.approx([0.04, 0.04, 0.04, 0.04e-3])


# --------------------------------------------------------------------------- a full run
def test_run_one_metrics_history_and_files(tmp_path):
    t0 = time.perf_counter()
    m = run_one(dict(TINY, attack="authors", local_lipschitz=True, eval_eps=8 / 255, extra_eval_eps=[8 / 255]),
                tmp_path)
    elapsed = time.perf_counter() - t0
    for f in ("checkpoint.pt", "metrics.json", "history.json"):
        assert (tmp_path / f).exists()
    assert json.loads((tmp_path / "metrics.json").read_text()) == m
    keys = {"clean_acc", "robust_acc", "aa_clean_acc", "layer_names", "norms_linf", "norms_l1",
            "linf_norm_product", "log10_linf_norm_product", "lip_mean", "lip_max", "seconds_per_epoch",
            "total_seconds", "train_loss", "train_acc", "epochs_trained", "n_eval", "seeds"}
    assert keys <= set(m)
    assert m["epochs_trained"] == 2 and m["n_train"] == 256 and m["n_eval"] == 32 and m["n_test"] == 360
    assert m["precision"] == {"setting": "fp32", "training_autocast": None, "cuda_float32": None}  # CPU: strict
    assert 0.0 <= m["robust_acc"] <= m["aa_clean_acc"] <= 1.0
    assert m["robust_acc_extra"] == {f"{8 / 255:.8g}": m["robust_acc"]}  # the same attack, seed and points
    assert 0.0 <= m["clean_acc"] <= 1.0 and m["lip_max"] >= m["lip_mean"] > 0
    assert 0 < m["seconds_per_epoch"] and m["total_seconds"] <= elapsed

    # final norms = exact norms of the checkpointed model (independent recomputation)
    model = build("smallcnn")
    model.load_state_dict(_checkpoint(tmp_path)["model"])
    oracle_inf = layer_norms(model, (3, 32, 32), math.inf)
    oracle_1 = layer_norms(model, (3, 32, 32), 1)
    assert m["layer_names"] == list(oracle_inf["name"]) == ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]
    assert m["norms_linf"] == pytest.approx(list(oracle_inf["norm"]), rel=1e-6)
    assert m["norms_l1"] == pytest.approx(list(oracle_1["norm"]), rel=1e-6)
    assert m["linf_norm_product"] == pytest.approx(np.prod(oracle_inf["norm"]), rel=1e-6)
    assert m["log10_linf_norm_product"] == pytest.approx(np.log10(np.prod(oracle_inf["norm"])), rel=1e-6)

    # per-point outcomes: the checkpointed model's own predictions on the test set, and the attacked subset
    test = get_dataset("digits", "test")
    images = test.images.float() / 255 if test.images.dtype == torch.uint8 else test.images
    with torch.no_grad():
        right = (model.eval()(images).argmax(1) == test.targets).numpy()
    assert np.array_equal(unpack_outcomes(m["clean_correct"]), right)
    robust = unpack_outcomes(m["robust_correct"])
    assert robust.size == m["n_eval"] and robust.mean() == pytest.approx(m["robust_acc"])

    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert {"train_loss", "train_acc", "test_acc", "test_loss", "lr", "norms_linf", "norms_l1"} <= set(h)
        assert list(h["norms_linf"]) == m["layer_names"] and list(h["norms_l1"]) == m["layer_names"]
        assert all(v > 0 for v in h["norms_linf"].values())
    assert history[-1]["norms_linf"] == pytest.approx(dict(zip(m["layer_names"], m["norms_linf"])))


def test_same_cfg_same_result(tmp_path):
    a = run_one(dict(TINY, epochs=1), tmp_path / "a")
    b = run_one(dict(TINY, epochs=1), tmp_path / "b")
    assert without_times(a) == without_times(b)
    c = run_one(dict(TINY, epochs=1, seed=1), tmp_path / "c")
    assert c["norms_linf"] != a["norms_linf"]


# --------------------------------------------------------------------------- resume
class Killed(Exception):
    pass


def test_resume_matches_uninterrupted_run(tmp_path):
    # PGD-AT (random starts from the global RNG), l_inf norm decay (momentum state), augmentation (RNG),
    # an lr milestone inside the run: everything a resume has to restore
    cfg = dict(TINY, train_subset=128, batch_size=32, epochs=2, milestones=[0.5], adv_mode="pgd",
               adv_preset="authors", regularizer="nd_linf", reg_strength=0.01)
    full = run_one(cfg, tmp_path / "full")

    # killed after the checkpoint of epoch 1
    assert run_one(cfg, tmp_path / "stop", stop_after_epochs=1) is None
    assert _checkpoint(tmp_path / "stop")["epoch"] == 1
    stop = run_one(cfg, tmp_path / "stop")

    # killed in the middle of epoch 2 (after 2 of its 4 SGD steps)
    def kill(epoch, batch):
        if epoch == 1 and batch == 2:
            raise Killed
    with pytest.raises(Killed):
        run_one(cfg, tmp_path / "mid", step_callback=kill)
    mid = run_one(cfg, tmp_path / "mid")

    assert stop["resumed_from_epoch"] == mid["resumed_from_epoch"] == 1 and full["resumed_from_epoch"] == 0
    ref = _checkpoint(tmp_path / "full")
    for name in ("stop", "mid"):
        ck = _checkpoint(tmp_path / name)
        assert ck["model"].keys() == ref["model"].keys()
        for k, v in ref["model"].items():
            assert torch.equal(ck["model"][k], v), (name, k)
        for k, v in ref["regularizer"]["h"].items():
            assert torch.equal(ck["regularizer"]["h"][k], v)
        for pid, s in ref["optimizer"]["state"].items():
            assert torch.equal(ck["optimizer"]["state"][pid]["momentum_buffer"], s["momentum_buffer"])
        assert torch.equal(ck["rng"]["torch"], ref["rng"]["torch"])
        assert without_times(ck["history"]) == without_times(ref["history"])
    assert without_times(stop) == without_times(full) == without_times(mid)


def test_channels_last_run_matches_default_layout(tmp_path):
    """channels_last changes the memory layout only: same batches, same math, kernels that may sum in another
    order: equal up to rounding, which four SGD steps with norm decay amplify (measured: 3.4e-4 relative)."""
    cfg = dict(TINY, epochs=1, regularizer="nd_linf", reg_strength=0.01)
    a = run_one(cfg, tmp_path / "a")
    b = run_one(dict(cfg, channels_last=True), tmp_path / "b")
    assert b["norms_linf"] == pytest.approx(a["norms_linf"], rel=3e-3)  # measured: 3.4e-4
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=3e-3)
    assert abs(b["clean_acc"] - a["clean_acc"]) <= 2 / 360
    weights = _checkpoint(tmp_path / "b")["model"]
    assert weights["conv1.weight"].is_contiguous(memory_format=torch.channels_last)


def test_finished_checkpoint_only_reevaluates(tmp_path):
    run_one(dict(TINY, epochs=1), tmp_path)
    steps = []
    again = run_one(dict(TINY, epochs=1), tmp_path, step_callback=lambda e, b: steps.append(b))
    assert steps == [] and again["resumed_from_epoch"] == 1


def test_checkpoint_of_another_cfg_or_unreadable_raises(tmp_path):
    run_one(dict(TINY, epochs=2), tmp_path, stop_after_epochs=1)
    with pytest.raises(CheckpointError, match="another config"):
        run_one(dict(TINY, epochs=2, lr=0.01), tmp_path)
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="delete it"):
        run_one(dict(TINY, epochs=2), tmp_path)


# --------------------------------------------------------------------------- regularisation and accuracy
def test_norm_decay_lowers_linf_norms(tmp_path):
    base = dict(TINY, milestones=[])
    plain = run_one(base, tmp_path / "plain")
    nd = run_one(dict(base, regularizer="nd_linf", reg_strength=1.0), tmp_path / "nd")
    for name, a, b in zip(plain["layer_names"], plain["norms_linf"], nd["norms_linf"]):
        assert b < a, name


def test_smallcnn_learns_digits(tmp_path):
    """The full digits training set, 8 epochs, lr 0.05 with the scaled schedule: >= 90 % clean accuracy
    (measured: 99.2 %, about 2 s per epoch on one thread of the 2-core test box)."""
    m = run_one(dict(model="smallcnn", dataset="digits", epochs=8, lr=0.05, attack="none"), tmp_path)
    assert m["n_train"] == 1437 and m["milestone_epochs"] == [5, 6, 7]
    assert m["clean_acc"] >= 0.90


@pytest.mark.parametrize("regularizer", ["none", "wd", "svc", "nd_l1", "nd_linf"])
def test_training_step_reads_nothing_back_to_the_host(regularizer):
    """One training step (``train_step``: loss, backward, regulariser, SGD; SVC clipping at this step) of every
    regulariser and adversarial mode runs on the ``meta`` device, where reading a value back to the host
    (``.item()``, ``int()``, ``bool()``: a GPU sync) raises (issue 18: norm decay synced once per layer)."""
    from nblib.training.regularizers import build_regularizer, make_optimizer
    from nblib.training.step import train_step
    for mode in ("plain", "pgd", "alp", "trades"):
        torch.manual_seed(0)
        model = build("vgg11", num_classes=10)
        strength = {"none": 0.0, "svc": 1.0}.get(regularizer, 1e-2)
        reg = build_regularizer(regularizer, model, (3, 32, 32), strength, clip_every=1)
        model.to("meta")
        cfg = fill_cfg({"adv_mode": mode, "regularizer": regularizer, "reg_strength": strength})
        x, y = torch.rand(2, 3, 32, 32, device="meta"), torch.randint(0, 10, (2,), device="meta")
        out = train_step(model, make_optimizer(model, 0.1), reg, cfg, x, y, global_step=1)
        assert out.loss.is_meta


def test_checkpoint_for_another_device_keeps_rng_states_on_the_cpu(tmp_path):
    """issue 18: a checkpoint read for a GPU run (here the ``meta`` device, which fails as CUDA does) keeps its
    RNG states CPU ByteTensors, so that ``set_rng_state`` accepts them; the weights go to the device.  a77f116
    loaded everything with ``map_location=device``: ``set_rng_state`` raised, and a resumed run on CUDA failed."""
    from nblib.training.checkpoint import load_checkpoint, set_rng_state
    run_one(dict(TINY, epochs=2), tmp_path, stop_after_epochs=1)
    state = load_checkpoint(tmp_path / CHECKPOINT, fill_cfg(dict(TINY, epochs=2)), torch.device("meta"))
    assert state["rng"]["torch"].device.type == "cpu" and state["rng"]["torch"].dtype == torch.uint8
    assert all(t.is_meta for t in state["model"].values())
    set_rng_state(state["rng"])


def test_checkpoint_that_cannot_be_restored_is_a_checkpoint_error(tmp_path):
    """Any failure to restore a checkpoint (here a weight of another shape) is a CheckpointError, which the run
    cache answers by setting the folder aside (a77f116 let the RuntimeError of ``load_state_dict`` through)."""
    cfg = dict(TINY, epochs=2)
    run_one(cfg, tmp_path, stop_after_epochs=1)
    state = _checkpoint(tmp_path)
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(1)
    torch.save(state, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match="(?s)cannot restore.*delete it"):
        run_one(cfg, tmp_path)


def cuda_backend_state():
    return float32_flags(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark


@pytest.mark.parametrize("precision, mode", [("fp32", "ieee"), ("bf16", "ieee"), ("tf32", "tf32")])
def test_backend_flags_set_float32_mode_for_cuda_and_restore_it(precision, mode):
    """torch runs cuDNN float32 convolutions as TF32 by default (issue 18): inside a CUDA run, precision fp32 (and
    bf16 outside its autocast) turns TF32 off for convolutions and matmuls, tf32 turns it on; every flag comes back
    on exit, after an error too.  The flags are torch settings: checked here without a GPU."""
    before = cuda_backend_state()
    with backend_flags(torch.device("cuda"), precision, deterministic=True):
        assert float32_flags() == {"cudnn_conv": mode, "cuda_matmul": mode}
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert cuda_backend_state() == before
    with pytest.raises(KeyError), backend_flags(torch.device("cuda:1"), precision, deterministic=False):
        assert torch.backends.cudnn.benchmark and float32_flags()["cudnn_conv"] == mode
        raise KeyError("a run that fails")
    assert cuda_backend_state() == before
    with backend_flags(torch.device("cpu"), precision, deterministic=True):
        assert cuda_backend_state() == before  # the CPU is strict float32 whatever the flags say
