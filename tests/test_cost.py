"""nblib.perf.cost: the one cost model of --plan, the throughput benchmark and gpu-check, against hand counts."""
import math
from pathlib import Path

import pytest

from nblib.perf import cost
from nblib.pipeline import plan, reproduce
from nblib.training.run_config import fill_cfg

ROOT = Path(__file__).resolve().parents[1]
RATES = dict(step_s=0.5, nd_s=0.01, clip_s=2.0, eval_ips=100.0, norms_s=3.0, ckpt_s=0.25, aa_s=40.0)


def test_run_seconds_by_hand():
    """10 epochs of 1000 images at batch 128 (8 steps each, 80 in all), 200 test images."""
    base = dict(epochs=10, batch_size=128, attack="standard", extra_eval_eps=[4 / 255, 8 / 255])
    plain = cost.run_seconds(fill_cfg(base), RATES, 1000, 200)
    assert plain == pytest.approx(dict(train=80 * 0.5, regularizer=0.0, test_pass=10 * 200 / 100.0,
                                       norms=10 * 3.0, checkpoint=10 * 0.25, attack=3 * 40.0,
                                       total=40 + 20 + 30 + 2.5 + 120))
    nd = cost.run_seconds(fill_cfg(dict(base, regularizer="nd_linf", reg_strength=1e-3)), RATES, 1000, 200)
    assert nd["regularizer"] == pytest.approx(80 * 0.01)
    svc = cost.run_seconds(fill_cfg(dict(base, regularizer="svc", reg_strength=1.0, reg_clip_every=30)), RATES,
                           1000, 200)
    assert svc["regularizer"] == pytest.approx(2 * 2.0)  # clips after steps 30 and 60 of 80
    bare = cost.run_seconds(fill_cfg(dict(epochs=10, batch_size=128, attack="none")), RATES, 1000, 200)
    assert bare["attack"] == 0.0


def test_project_takes_the_plans_runs_of_the_paper_profile():
    """The paper profile as the notebooks build it goes into the projection unchanged: Table 2 has 17 runs per
    model (plain, 4 weight decay, 4 SVC, 8 norm decay), each attacked at 3 radii (1/255, then 4/255 and 8/255);
    Figure 2 four runs per model at one radius; 120 epochs of 50,000 images (391 steps of 128), 10,000 test
    images."""
    params = reproduce.training_parameters("paper")
    configs = plan.profile_configs(params)
    counts = plan.run_counts(params)
    assert {nb: len(c) for nb, c in configs.items()} == {
        nb: len(spec["models"]) * sum(spec["adv_modes"].values()) for nb, spec in counts.items()}
    bill = cost.project(configs, lambda cfg: RATES)
    steps, epochs = 120 * 391, 120
    per_epoch = 10_000 / 100.0 + 3.0 + 0.25
    table2 = 4 * (17 * (steps * 0.5 + epochs * per_epoch + 3 * 40.0) + 8 * steps * 0.01 + 4 * (steps // 100) * 2.0)
    figure2 = 4 * 4 * (steps * 0.5 + epochs * per_epoch + 40.0)
    assert bill["03_table2"]["total"] == pytest.approx(table2 / 3600)
    assert bill["04_adversarial_norms"]["total"] == pytest.approx(figure2 / 3600)
    assert bill["all"]["attack"] == pytest.approx(4 * (17 * 3 + 4) * 40.0 / 3600)
    assert bill["gpu_hours"] == bill["wall_hours"] == pytest.approx((table2 + figure2) / 3600)


def test_several_runs_per_gpu():
    one = cost.project_hours(10.0)
    assert (one["gpu_hours"], one["wall_hours"]) == (10.0, 10.0)
    four = cost.project_hours(10.0, [0, 1, 2, 3])
    assert four["gpu_hours"] == 10.0 and four["wall_hours"] == 2.5
    unmeasured = cost.project_hours(10.0, [0, 0, 1, 1])
    assert unmeasured["gpu_hours"] == 10.0 and unmeasured["wall_hours"] == 5.0
    assert "not measured" in unmeasured["basis"]
    shared = cost.project_hours(10.0, [0, 0, 1, 1], shared_gain=1.6)
    assert shared["gpu_hours"] == pytest.approx(10 / 1.6) and shared["wall_hours"] == pytest.approx(10 / 3.2)
    with pytest.raises(ValueError, match="shared_gain"):
        cost.project_hours(10.0, [0, 0], shared_gain=0.0)


def test_clip_flops_by_hand():
    """VGG-11's first conv (3 -> 64 on 32 x 32: n = 3, N = 64, 32 x 17 rfft matrices) by hand; a 1x1 conv
    costs one matrix per group."""
    from nblib.perf import reference
    shapes = reference.conv_shapes("vgg11")
    assert shapes[0][:6] == ("conv", 3, 64, 1, 9, (32, 32))
    first = 8 * 32 * 17 * (4 * 64 * 3 ** 2 + 202 * 3 ** 3)
    per_layer = []
    for kind, cin, cout, groups, taps, hw, _ in shapes:
        if kind == "conv":
            n, big = sorted((cin // groups, cout // groups))
            b = groups if taps == 1 else groups * hw[0] * (hw[1] // 2 + 1)
            per_layer.append(8 * b * (4 * big * n * n + 202 * n ** 3))
    assert per_layer[0] == first and reference.clip_flops("vgg11") == pytest.approx(sum(per_layer))
    one_by_one = [s for s in reference.conv_shapes("regnetx_200mf") if s[0] == "conv" and s[4] == 1]
    assert one_by_one, "RegNetX has 1x1 convs"
    e = reference.estimate(fill_cfg({"device": "cuda", "model": "vgg11", "regularizer": "svc", "reg_strength": 1.0}))
    assert set(cost.RATE_KEYS) - {"aa_s"} <= set(e) and all(math.isfinite(e[k]) for k in cost.RATE_KEYS if k in e)
    assert e["clip_s"] == pytest.approx(reference.clip_flops("vgg11") / 15e12)
