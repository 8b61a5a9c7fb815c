"""nblib.pipeline.gpu_check: the GPU session's script, rehearsed on the CPU at tiny sizes (``--dry-run``)."""
import json

import pytest
import torch

from nblib.pipeline import gpu_check, gpu_report

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dry_run_every_step_and_the_report(tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    steps = report["steps"]
    assert set(steps) == {"sync_free_steps", "kill_resume", "svc_clip", "norm_decay", "throughput",
                          "compiled_throughput", "evaluation", "shared_gpu", "projection"}
    assert all(v["status"] == "ok" for v in steps.values()), {k: v.get("error") for k, v in steps.items()}
    assert steps["sync_free_steps"]["result"]["cases"] == 5 * 4  # every regularizer x adversarial mode
    run = steps["kill_resume"]["result"]["smallcnn"]
    assert run["resumed_from_epoch"] == 1 and run["aa_seconds"] > 0  # killed in epoch 2, resumed after epoch 1
    history = json.loads((tmp_path / "runs" / "smallcnn" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    svc = steps["svc_clip"]["result"]["smallcnn"]
    assert svc["clip_s"] == svc["svd_s"] and svc["max_rel_difference"] <= 1e-4  # the two methods agree
    assert {(r["channels_last"], r["mode"]) for r in steps["throughput"]["result"]} == {
        (False, "plain"), (False, "pgd"), (True, "plain"), (True, "pgd")}
    shared = steps["shared_gpu"]["result"]
    assert shared["gain"] == pytest.approx(sum(shared["pair"]) / shared["alone"]) and len(shared["pair"]) == 2
    compiled = steps["compiled_throughput"]["result"]
    assert compiled["skipped"] == [] and {(r["compile"], r["precision"], r["channels_last"], r["mode"])
                                          for r in compiled["rows"]} == {("default", "fp32", False, "plain"),
                                                                          ("default", "fp32", False, "pgd")}
    assert [(p["precision"], p["channels_last"], p["compile"]) for p in steps["projection"]["result"]] == [
        ("fp32", False, "none"), ("fp32", False, "default"), ("fp32", True, "none")]
    for p in steps["projection"]["result"]:
        assert p["rates_of"] == {m: "smallcnn" for m in gpu_check.PAPER_MODELS}
        assert p["total"] == pytest.approx(p["03_table2"] + p["04_adversarial_norms"])
        assert p["total"] == pytest.approx(sum(v for k, v in p["terms"].items() if k != "total"))
        assert all(p["terms"][t] > 0 for t in ("train", "regularizer", "test_pass", "norms", "checkpoint", "attack"))
        assert p["two_per_gpu"] == pytest.approx(p["total"] / shared["gain"])
    md = (tmp_path / "report.md").read_text()
    assert "# gpu-check on cpu (dry run, tiny sizes)" in md and "| kill_resume | ok |" in md
    assert "| fp32 | False | default |" in md  # the compiled rows in both tables
    assert "gpu-check: 9 of 9 steps ok" in capsys.readouterr().out


def test_projection_against_a_hand_count():
    """Made-up rates: 1000 images/s plain, 100 PGD-AT (ALP, TRADES alike), no evaluation, norms, checkpoint or
    AutoAttack cost, a norm-decay step of 10 ms and an SVC clip of 1 s.  The paper profile: Table 2 has 17 runs per
    model (one plain, 16 regularized: 8 norm decay, 4 SVC), 120 epochs of 50,000 images (391 steps of 128); Figure 2
    one plain and three adversarial runs per model.  Two runs per GPU at a measured gain of 1.6."""
    rows = [dict(model="m", precision="fp32", channels_last=cl, compile="none", mode=mode, images_per_s=ips)
            for cl in (False, True) for mode, ips in (("plain", 1000.0), ("pgd", 100.0))]
    evals = {"m": dict(eval_ips=float("inf"), norms_s=0.0, ckpt_s=0.0, aa_forward_s=0.0, aa_grad_s=0.0)}
    (p, _) = gpu_report.projection(rows, evals, [dict(model="m", nd_s=0.01)], {"m": {"clip_s": 1.0}},
                                  {"gain": 1.6}, stand_in="m")
    steps = 120 * 391
    regularizers = 4 * (8 * steps * 0.01 + 4 * (steps // 100) * 1.0)
    assert p["03_table2"] == pytest.approx((4 * 17 * steps * 128 / 1000 + regularizers) / 3600)
    assert p["04_adversarial_norms"] == pytest.approx(4 * steps * 128 * (1 / 1000 + 3 / 100) / 3600)
    assert p["terms"]["regularizer"] == pytest.approx(regularizers / 3600)
    assert p["two_per_gpu"] == pytest.approx(p["total"] / 1.6)


def test_a_failing_step_is_reported_and_fails_the_check(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("cuSOLVER said no")
    monkeypatch.setattr(gpu_check, "svc_clip", broken)
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 1
    steps = json.loads((tmp_path / "report.json").read_text())["steps"]
    assert steps["svc_clip"]["status"] == "failed" and "cuSOLVER said no" in steps["svc_clip"]["error"]
    assert steps["projection"]["status"] == "failed" and "svc_clip" in steps["projection"]["error"]
    assert steps["throughput"]["status"] == "ok"  # the later steps still ran
    assert "**svc_clip failed**: `RuntimeError: cuSOLVER said no`" in (tmp_path / "report.md").read_text()


def test_cuda_without_a_gpu_names_the_dry_run(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--dry-run"):
        gpu_check.main(["--out", str(tmp_path)])


def test_projection_per_compile_setting_measured_for_every_model():
    """A compile setting gets its own projection row when every model has its plain and PGD rates; one skipped
    for lack of time (a model without rows) gets none, and the eager rows are projected as before."""
    def rows(model, compile_mode, plain, pgd):
        return [dict(model=model, precision="bf16", channels_last=True, compile=compile_mode, mode=mode,
                     images_per_s=ips) for mode, ips in (("plain", plain), ("pgd", pgd))]

    models = gpu_check.PAPER_MODELS
    measured = [r for m in models for r in rows(m, "none", 1000.0, 100.0) + rows(m, "cudagraphs", 2000.0, 200.0)]
    measured += rows(models[0], "default", 1500.0, 150.0)  # the budget ran out after the first model
    evals = {m: dict(eval_ips=float("inf"), norms_s=0.0, ckpt_s=0.0, aa_forward_s=0.0, aa_grad_s=0.0) for m in models}
    nd = [dict(model=m, nd_s=0.0) for m in models]
    out = gpu_report.projection(measured, evals, nd, {m: {"clip_s": 0.0} for m in models})
    assert [p["compile"] for p in out] == ["none", "cudagraphs"]
    assert out[1]["total"] == pytest.approx(out[0]["total"] / 2)  # twice the rate: half the hours
