"""Tests for cfg["compile"] (nblib.training.compiled): the compiled training step against the eager one on the CPU
(inductor's C++ backend; CUDA graphs need a GPU and are only refused here), the run's hash and its checkpoint."""
import copy

import pytest
import torch

from nblib.models import build
from nblib.runs.folders import config_hash
from nblib.training.adversarial import adversarial_examples, adversarial_loss, adv_settings
from nblib.training.checkpoint import CHECKPOINT, CheckpointError, load_checkpoint
from nblib.training.compiled import COMPILE_MODES, compile_model
from nblib.training.regularizers import make_optimizer
from nblib.training.run_config import check_runnable, fill_cfg
from nblib.training.step import train_step
from nblib.training.train import run_one

pytestmark = pytest.mark.usefixtures("one_thread")

#: Tolerances of the compiled step against the eager step (float32).  Inductor fuses kernels and reorders the
#: reductions of the convolutions' backward, BatchNorm's batch statistics and the loss, so each operation
#: differs from eager in its last bits (float32 eps = 1.2e-7); after three SGD steps the measured differences
#: are about 1e-7 in the losses and at most 2e-6 in any weight or running statistic (relative to that
#: tensor's largest entry).  rtol 1e-4 / atol 1e-5 leave a margin of about 50x and still catch any real change
#: (a wrong BatchNorm mode moves the weights by about 1e-2).
RTOL, ATOL = 1e-4, 1e-5
#: PGD steps along sign(gradient): an input coordinate whose gradient lies within float32 rounding of 0 may step
#: the other way in the compiled graph (measured: 2 of 24,576 coordinates in three PGD-10 attacks of 8 images).
#: At most this fraction of the adversarial coordinates may differ.
MAX_SIGN_FLIPS = 1e-3
#: A whole run on the digits data compares its weights within this absolute tolerance: digit images have
#: constant backgrounds, so max pooling meets exact ties and the gradient jumps between neighbouring weights
#: (measured: weights 1e-7 apart give conv1 gradients 4e-3 apart, in float64 too, at the third step of TINY;
#: the compiled run's weights then differ from the eager run's by 2e-4).
RUN_ATOL = 1e-3

# 72 training images in batches of 32: two full batches and one of 8 (a second graph, dynamic=False)
TINY = dict(model="smallcnn", dataset="digits", train_subset=72, batch_size=32, epochs=1, lr=0.05,
            attack="none", n_eval=16, augment=False)


def _batches(n_steps: int, batch: int = 8):
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(n_steps)]


def _assert_same_state(eager: torch.nn.Module, compiled: torch.nn.Module) -> None:
    a, b = eager.state_dict(), compiled.state_dict()
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=RTOL, atol=ATOL, msg=lambda m, key=key: f"{key}: {m}")


# --------------------------------------------------------------------------- the setting
def test_compile_modes_and_default():
    assert COMPILE_MODES == ("none", "default", "cudagraphs")
    assert fill_cfg({})["compile"] == "none"
    with pytest.raises(ValueError, match="none, default, cudagraphs"):
        fill_cfg(dict(compile="max-autotune"))


def test_cudagraphs_refused_off_cuda_before_training(tmp_path):
    """CUDA graphs on the CPU: refused by fill_cfg (so by check_runnable and run_one before the run folder
    exists), with a message naming the fix."""
    for check in (fill_cfg, check_runnable):
        with pytest.raises(ValueError, match="compile='default'.*compile='none'"):
            check(dict(TINY, compile="cudagraphs"))
    with pytest.raises(ValueError, match="needs device='cuda'"):
        run_one(dict(TINY, compile="cudagraphs"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert fill_cfg(dict(compile="cudagraphs", device="cuda"))["compile"] == "cudagraphs"  # checked, not run


def test_configs_without_compile_keep_their_hash():
    """The hashes of these configs before the key existed (computed at d050510): compile="none", given or not,
    leaves every run folder's name as it was; the other values are part of the hash."""
    before = {
        "429c5924e8ee": {},
        "57c0463df447": dict(model="smallcnn", dataset="digits", train_subset=64, batch_size=32, epochs=2, lr=0.05,
                             attack="none", n_eval=16),
        "dab98ab833e3": dict(model="vgg11", regularizer="svc", reg_strength=1.0, device="cuda", precision="bf16",
                             channels_last=True),
        "fa9ac91da0a5": dict(model="resnet18", adv_mode="pgd", lr=0.1, eval_eps=8 / 255, device="cuda"),
    }
    for digest, cfg in before.items():
        assert config_hash(cfg) == config_hash(dict(cfg, compile="none")) == digest
    cuda = before["fa9ac91da0a5"]
    hashes = {config_hash(dict(cuda, compile=mode)) for mode in COMPILE_MODES}
    assert len(hashes) == 3


def test_checkpoint_written_before_compile_existed_resumes(tmp_path):
    """A checkpoint's config without the key is the config with compile="none" (and not with "default")."""
    cfg = fill_cfg(TINY)
    old = {k: v for k, v in cfg.items() if k != "compile"}
    torch.save({"cfg": old, "model": {}, "regularizer": None}, tmp_path / CHECKPOINT)
    assert load_checkpoint(tmp_path / CHECKPOINT, cfg, torch.device("cpu"))["cfg"] == old
    with pytest.raises(CheckpointError, match="another config"):
        load_checkpoint(tmp_path / CHECKPOINT, fill_cfg(dict(TINY, compile="default")), torch.device("cpu"))


def test_none_is_the_module_itself():
    model = build("smallcnn", num_classes=10)
    assert compile_model(model, "none") is model
    compiled = compile_model(model, "default")  # lazy: nothing compiled until the first call
    assert list(compiled.parameters()) == list(model.parameters())  # the same Parameter objects


# --------------------------------------------------------------------------- compiled == eager (inductor, CPU)
@pytest.mark.slow
def test_compiled_plain_sgd_steps_match_eager():
    """Three plain SGD steps (train-mode BatchNorm, momentum) with compile="default" against eager: the same
    losses and weights / running statistics within RTOL, ATOL (see there for why not bitwise)."""
    torch.manual_seed(0)
    eager = build("smallcnn", num_classes=10)
    model = copy.deepcopy(eager)
    forward = compile_model(model, "default")
    opts = make_optimizer(eager, 0.05), make_optimizer(model, 0.05)
    cfg_e, cfg_c = fill_cfg(dict(compile="none")), fill_cfg(dict(compile="default"))
    for step, (x, y) in enumerate(_batches(3), start=1):
        a = train_step(eager.train(), opts[0], None, cfg_e, x, y, step)
        model.train()
        b = train_step(forward, opts[1], None, cfg_c, x, y, step)
        torch.testing.assert_close(b.loss, a.loss, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(b.logits, a.logits, rtol=RTOL, atol=ATOL)
    _assert_same_state(eager, model)


@pytest.mark.slow
def test_compiled_pgd_at_steps_match_eager():
    """Three PGD-AT steps (PGD-10 in eval mode, then the train-mode loss) with compile="default".

    The oracle is eager code: at each step the eager attack from the same weights and the same random start
    (the global RNG reset to its state before the compiled step) must give the compiled step's adversarial
    batch up to sign flips (MAX_SIGN_FLIPS: coordinates whose gradient is within rounding of 0); then the
    eager model takes its SGD step at the compiled adversarial batch (``adversarial_loss(x_adv=...)``), so that
    losses and weights can be compared within RTOL, ATOL without the flips compounding."""
    torch.manual_seed(0)
    eager = build("smallcnn", num_classes=10)
    model = copy.deepcopy(eager)
    forward = compile_model(model, "default")
    opts = make_optimizer(eager, 0.05), make_optimizer(model, 0.05)
    cfg = fill_cfg(dict(adv_mode="pgd", compile="default"))
    settings = adv_settings(cfg["adv_preset"])
    flips = []
    for step, (x, y) in enumerate(_batches(3), start=1):
        rng = torch.get_rng_state()
        model.train()
        out = train_step(forward, opts[1], None, cfg, x, y, step)
        assert model.training and all(m.training for m in model.modules())  # the attack restored train mode
        torch.set_rng_state(rng)
        eager.train()
        x_ref = adversarial_examples("pgd", eager, x, y, settings)
        flips.append(float((x_ref != out.x_adv).float().mean()))
        assert (out.x_adv - x).abs().max() <= settings["eps"] + 1e-6 and 0 <= out.x_adv.min() <= out.x_adv.max() <= 1
        ref = adversarial_loss("pgd", eager, x, y, x_adv=out.x_adv, return_details=True)
        opts[0].zero_grad(set_to_none=True)
        ref.loss.backward()
        opts[0].step()
        torch.testing.assert_close(out.loss, ref.loss, rtol=RTOL, atol=ATOL)
    assert max(flips) <= MAX_SIGN_FLIPS, flips
    _assert_same_state(eager, model)


@pytest.mark.slow
def test_compiled_run_matches_eager_run_and_its_checkpoint_loads_eagerly(tmp_path):
    """run_one with compile="default" (one epoch of three steps, the last of 8 images: a recompile) against the
    eager run: the metrics record the setting, the checkpoint holds the eager module's keys (no ``_orig_mod.``)
    and loads into an eager model, and its weights are the eager run's within RUN_ATOL (see there)."""
    eager = run_one(TINY, tmp_path / "eager")
    compiled = run_one(dict(TINY, compile="default"), tmp_path / "compiled")
    assert eager["compile"] == "none" and compiled["compile"] == "default"
    assert compiled["global_steps"] == eager["global_steps"] == 3
    a = torch.load(tmp_path / "eager" / CHECKPOINT, weights_only=True)["model"]
    b = torch.load(tmp_path / "compiled" / CHECKPOINT, weights_only=True)["model"]
    assert list(a) == list(b) and not any("_orig_mod" in k for k in b)
    model = build("smallcnn", num_classes=10)
    model.load_state_dict(b)  # strict
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=RUN_ATOL, msg=lambda m, key=key: f"{key}: {m}")
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=RTOL)
    assert compiled["norms_linf"] == pytest.approx(eager["norms_linf"], rel=1e-3)
