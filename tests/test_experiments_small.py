"""nblib.experiments.theorem1, table1 and propositions: ``run`` on tiny settings returns the notebook's tables and
verdicts, ``save`` writes the notebook's files, and a broken input turns a verdict into "fails".

Table 1 is checked on made-up timings (``table1_result``; ``run`` with ``run_table1`` replaced), so the tests
are fast and exact.  Oracles: the models' convs recomputed in float64, numpy row / column sums of the toy
networks' weights, hand-computed ratios of the made-up timings."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from nblib.claims.verdict import FAILS, HOLDS, UNTESTABLE
from nblib.experiments import propositions, table1, theorem1, toys
from nblib.perf import benchmark
from nblib.results import load_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

THEOREM1 = dict(device="cpu", n_random_layers=12, max_input_size=6, seed=0, models=["smallcnn"], tolerance=1e-9)
THEOREM1_METRICS = {"eq3_over_sigma_max", "eq3_over_sigma_median", "frac_closed_form_wrong_outside",
                    "gram_is_upper_bound", "max_err_closed_form_inside", "max_err_exact_random", "max_err_model_convs",
                    "max_err_power", "n_model_convs", "n_model_convs_outside_assumption1", "n_random_layers",
                    "n_random_outside_assumption1", "verdicts"}


def written(output_dir, *tables):
    return all((output_dir / "tables" / f"{t}.{ext}").is_file() for t in tables for ext in ("csv", "md"))


# --------------------------------------------------------------------------- Theorem 1 (notebook 01)
@pytest.fixture(scope="module")
def theorem1_result():
    return theorem1.run(THEOREM1)


def test_theorem1_run_tables_verdicts_and_files(theorem1_result, tmp_path):
    r = theorem1_result
    assert torch.get_default_dtype() == torch.float32  # restored after the float64 run
    assert len(r.random_layers) == 12 and r.random_layers.assumption1.any() and (~r.random_layers.assumption1).any()
    assert {"dense_l1", "dense_linf", "sigma", "l1", "linf", "eq1", "eq2", "eq3", "power", "gram", "err_eq1",
            "err_eq2", "eq3_over_sigma"} <= set(r.random_layers.columns)
    assert len(r.model_layers) == 4 and r.all_convs_checked  # smallcnn: 4 convs
    assert [v.outcome for v in r.verdicts] == [HOLDS] * 4
    assert set(r.metrics) == THEOREM1_METRICS and r.metrics["n_random_layers"] == 12
    assert r.metrics["n_random_outside_assumption1"] == int((~r.random_layers.assumption1).sum())
    assert list(r.random_summary().columns) == ["err_l1", "err_linf", "err_eq1", "err_eq2", "err_power"]
    assert r.model_summary().loc["smallcnn", "convs"] == 4
    r.save(tmp_path)
    assert written(tmp_path, "01_random_layers", "01_model_layers")
    assert load_metrics(tmp_path, "01_theorem1")["gram_is_upper_bound"] == r.metrics["gram_is_upper_bound"]
    assert "convs_in_model" not in pd.read_csv(tmp_path / "tables" / "01_model_layers.csv").columns


def test_theorem1_run_draws_the_models_in_float64(theorem1_result):
    """The notebook's numbers: model weights drawn with float64 as torch's default dtype (not drawn in float32
    and cast, which gives other weights and other norms)."""
    with theorem1.default_dtype(torch.float64):
        in_float64 = theorem1.model_conv_rows(["smallcnn"], seed=0)
    pd.testing.assert_frame_equal(theorem1_result.model_layers, in_float64)
    assert not np.allclose(theorem1_result.model_layers.l1, theorem1.model_conv_rows(["smallcnn"], seed=0).l1)


def test_theorem1_verdict_fails_on_a_wrong_closed_form(monkeypatch):
    real = theorem1.norms.theorem1_l1_kernel
    monkeypatch.setattr(theorem1.norms, "theorem1_l1_kernel", lambda *a, **k: 1.5 * real(*a, **k))
    eq1, eq2, *_ = theorem1.run(THEOREM1).verdicts
    assert eq1.outcome == FAILS and "eq. 1" in eq1.claim and eq2.outcome == HOLDS


def test_theorem1_verdict_fails_on_a_wrong_model_norm(monkeypatch):
    real = theorem1.norms.conv2d_norm
    monkeypatch.setattr(theorem1.norms, "conv2d_norm",
                        lambda conv, hw, p, **k: real(conv, hw, p, **k) * (1.01 if p == math.inf else 1))
    r = theorem1.run(dict(THEOREM1, n_random_layers=2))
    assert r.verdicts[-1].outcome == FAILS and r.metrics["verdicts"][-1]["outcome"] == FAILS


def test_run_names_missing_parameters():
    with pytest.raises(KeyError, match="tolerance"):
        theorem1.run({k: v for k, v in THEOREM1.items() if k != "tolerance"})
    with pytest.raises(KeyError, match="floor_factor"):
        table1.run({})
    with pytest.raises(KeyError, match="pgd_steps"):
        propositions.run({})


# --------------------------------------------------------------------------- Table 1 (notebook 02)
SECONDS = dict(floor=1e-3, l1=2e-3, linf=2.5e-3, gram=1.0, fft=10.0, power=100.0)  # per 100 runs
VALUES = dict(floor=5.0, l1=3.0, linf=4.0, gram=2.2, fft=2.0, power=2.0)  # the norms the methods returned


def made_up_table(seconds=SECONDS, values=VALUES, not_measured=()) -> pd.DataFrame:
    """The columns of run_table1; (method, kernel index) pairs in ``not_measured`` ran out of budget."""
    rows = []
    for m in benchmark.METHODS:
        for i, k in enumerate(benchmark.TABLE1_KERNELS):
            skip = (m, i) in not_measured
            rows.append(dict(kernel=str(k), method=m, sec_per_100=math.nan if skip else seconds[m], n_runs=0 if skip
                             else 100, measured=not skip, value=math.nan if skip else values[m],
                             paper_sec_per_100=benchmark.PAPER_TABLE1[k].get(m, math.nan),
                             note="method time budget spent" if skip else ""))
    return pd.DataFrame(rows)


def test_table1_result_on_made_up_timings(tmp_path):
    r = table1.table1_result(made_up_table(not_measured={("power", 5)}), "cpu", floor_factor=3.0)
    # 40,000x > 4,018x on the measured kernels, yet one is unmeasured: "every kernel" is not testable;
    # 4,000x > 950x and 2.5 <= 3 on every kernel
    assert [v.outcome for v in r.verdicts] == [UNTESTABLE, HOLDS, HOLDS]
    m = r.metrics
    assert m["min_power_over_ours"] == pytest.approx(100 / 2.5e-3)  # against the slower of l1 and l_inf
    assert m["min_fft_over_ours"] == pytest.approx(10 / 2.5e-3)
    assert m["max_ours_over_floor"] == pytest.approx(2.5) and m["fft_over_power_median"] == pytest.approx(1.0)
    assert (m["n_entries"], m["n_measured"], m["not_measured"]) == (36, 35, ["power (5, 5, 512, 256)"])
    assert m["paper_power_over_ours"][0] == pytest.approx(27.4 / 0.00682)  # the paper's smallest: 3x3, 32->128
    assert r.power_le_gram and m["power_le_gram"] is True
    assert r.wide.loc[str(benchmark.TABLE1_KERNELS[0]), "power/linf"] == pytest.approx(40_000)
    assert r.vs_paper.loc["(3, 3, 32, 32)", ("paper (GPU)", "power")] == 26.5
    assert r.vs_paper.loc["(3, 3, 32, 32)", ("ours (cpu)", "l1")] == 2e-3
    r.save(tmp_path)
    assert written(tmp_path, "02_table1_long", "02_table1", "02_table1_vs_paper")
    assert load_metrics(tmp_path, "02_table1")["not_measured"] == m["not_measured"]


def test_table1_verdicts_fail_on_slow_methods_and_power_above_gram():
    slow = dict(SECONDS, linf=0.05, floor=1e-3)  # power / ours = 2,000x < 4,018x; fft / ours 200x; 50x the floor
    r = table1.table1_result(made_up_table(slow, dict(VALUES, power=2.3)), "cpu", floor_factor=3.0)
    assert [v.outcome for v in r.verdicts] == [FAILS] * 3
    assert not r.power_le_gram  # power iteration (a lower bound) above Gram iteration (an upper bound)


def test_table1_run_passes_the_notebook_budgets(monkeypatch):
    seen = {}

    def fake_run_table1(**kwargs):
        seen.update(kwargs)
        return made_up_table()

    monkeypatch.setattr(benchmark, "run_table1", fake_run_table1)
    settings = dict(device="cpu", precision="fp32", runs=7, entry_budget_s=0.5, method_budget_s=3.0,
                    power_tol=1e-5, floor_factor=3.0)
    r = table1.run(settings)
    assert seen == dict(device="cpu", runs=7, budget_s=0.5, method_budget_s=3.0, tol=1e-5, progress=False)
    assert len(r.table) == 36 and r.metrics["device"] == "cpu" and r.metrics["precision"] == "fp32"
    for precision, match in (("tf32", "CUDA"), ("bf16", "fp32 or tf32")):  # refused before any timing
        seen.clear()
        with pytest.raises(ValueError, match=match):
            table1.run(dict(settings, precision=precision))
        assert not seen


# --------------------------------------------------------------------------- Propositions (notebook 05)
PROPOSITIONS = dict(scales=[1.0, 100.0], prop1_depth=3, n_random_inputs=50, eps=0.1, xis=[10.0], n_per_class=2,
                    n_classes=2, grid_points_per_dim=3, pgd_steps=3, pgd_restarts=1, seed=0)


def test_propositions_run_tables_verdicts_and_files(tmp_path):
    r = propositions.run(PROPOSITIONS)
    assert list(r.prop1.columns) == ["scale", "p", "layer", "norm"]
    assert len(r.prop1) == 2 * (3 * 3 + 2)  # per scale: 3 norms x 3 layers, output spread, Lipschitz estimate
    for s in PROPOSITIONS["scales"]:  # l_inf norms: numpy row sums of the network's weights
        net = toys.prop1_network(s, depth=3, seed=0, dtype=torch.float64)
        rows = [np.abs(m.weight.detach().numpy()).sum(1).max() for m in net if isinstance(m, nn.Linear)]
        got = r.prop1[(r.prop1.scale == s) & (r.prop1.p == "linf")].sort_values("layer").norm
        np.testing.assert_allclose(got, rows, rtol=1e-12)
    assert list(r.prop2.columns) == ["xi", "delta", "grid_robust_acc", "pgd_robust_acc", "lipschitz_lower",
                                     "lipschitz_upper_product"]
    assert r.prop2.xi.tolist() == [10.0] and list(r.nets) == [10.0] and r.nets[10.0][1] == r.prop2.delta[0]
    assert r.X.shape == (4, 2) and r.d_min > 2 * PROPOSITIONS["eps"]
    assert [v.outcome for v in r.verdicts] == [HOLDS] * 3
    assert r.metrics["prop1_norm_growth"] == pytest.approx(100.0)
    assert r.prop1_summary().shape == (2, 5)
    r.save(tmp_path)
    assert written(tmp_path, "05_prop1", "05_prop2")
    assert load_metrics(tmp_path, "05_propositions")["prop2_xi"] == [10.0]


def test_propositions_verdicts_fail_on_broken_constructions(monkeypatch):
    real = toys.prop1_network
    monkeypatch.setattr(toys, "prop1_network", lambda s, **k: real(1.0, **k))  # the scale is ignored
    monkeypatch.setattr(toys, "lipschitz_lower_bound", lambda net, X, **k: 1.0)  # below xi = 10
    prop1, theorem2, prop2 = propositions.run(PROPOSITIONS).verdicts
    assert prop1.outcome == FAILS and "grows only" in prop1.reason
    assert theorem2.outcome == HOLDS and prop2.outcome == FAILS
