"""nblib.runs.grids, nblib.claims.paper_table2, nblib.runs.tables and nblib.experiments.table2 / figure2: the
runs of Table 2 and
Figure 2 from a notebook's parameters, the paper's numbers, the per-run tables, and each experiment's tables
and verdicts from made-up runs."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from nblib.claims import figure2 as judgef2
from nblib.claims import table2 as judge2
from nblib.experiments import figure2, table2
from nblib.runs import grids, tables
from nblib.claims.paper_table2 import PAPER_CLIP_VALUES, PAPER_COEFFICIENTS, PAPER_TABLE2
from nblib.training.run_config import fill_cfg
from nblib.runs.folders import config_hash
from nblib.runs.sweep import expand_grid
from nblib.results import pack_outcomes
from nblib.runs.machine import machine


#: The columns every row of a sweep's result table has (what table2_frame reads besides the config).
RUN_COLUMNS = dict(seed=0, n_test=10_000, metric_n_eval=1024, status="done", stale=False)


def test_table2_grid_is_the_papers():
    base = dict(dataset="cifar10", epochs=120, lr=0.01)
    cfgs = grids.table2_configs(list(PAPER_TABLE2), base, wd=PAPER_COEFFICIENTS, svc=PAPER_CLIP_VALUES,
                                      nd_l1=PAPER_COEFFICIENTS, nd_linf=PAPER_COEFFICIENTS)
    assert len(cfgs) == 4 * 17
    fake = pd.DataFrame([dict(c, clean_acc=0.9, robust_acc=0.5, **RUN_COLUMNS) for c in cfgs])
    cols = list(table2.table2_wide(table2.table2_frame(fake)).columns)
    assert cols == [(k, s) for k, s in PAPER_TABLE2["vgg11"]]  # the paper's column order
    assert len({config_hash(c) for c in cfgs}) == 4 * 17  # every config its own run folder
    for c in cfgs:
        fill_cfg(c)  # valid configs
        assert (c["regularizer"], c["reg_strength"]) in PAPER_TABLE2[c["model"]]
    # every published cell is covered by the grid, and published accuracies are percentages
    for model, cells in PAPER_TABLE2.items():
        assert len(cells) == 17
        for clean, robust in cells.values():
            assert 80 < clean < 100 and (robust is None or 0 < robust < clean)


def test_table2_frame_and_wide_layout():
    results = pd.DataFrame([
        dict(model="vgg11", regularizer="none", reg_strength=0.0, clean_acc=0.9, robust_acc=0.5, **RUN_COLUMNS),
        dict(model="vgg11", regularizer="wd", reg_strength=1e-2, clean_acc=0.92, robust_acc=0.4, **RUN_COLUMNS),
        dict(model="vgg11", regularizer="svc", reg_strength=0.7, clean_acc=0.8, robust_acc=None, **RUN_COLUMNS),
    ])
    frame = table2.table2_frame(results)
    assert list(frame.clean) == pytest.approx([90, 92, 80])
    assert frame.robust.iloc[0] == pytest.approx(50) and math.isnan(frame.robust.iloc[2])
    assert frame.paper_clean.iloc[0] == 90.4 and frame.paper_robust.iloc[1] == 56.3
    assert math.isnan(frame.paper_clean.iloc[2])  # c = 0.7 is not in the paper
    assert list(frame.n_clean) == [10_000] * 3 and list(frame.n_robust) == [1024] * 3
    with pytest.raises(ValueError, match="metric_n_eval"):  # a missing column is an error, not NaN
        table2.table2_frame(results.drop(columns="metric_n_eval"))
    marked = table2.table2_frame(results.assign(status=["done", "diverged", "done"], stale=[False, False, True]))
    assert list(marked.status) == ["done", "diverged", "done"] and list(marked.stale) == [False, False, True]
    wide = table2.table2_wide(frame, with_paper=True)
    assert list(wide.columns) == [("none", 0.0), ("wd", 0.01), ("svc", 0.7)]
    assert wide.loc[("vgg11", "Clean (paper)"), ("wd", 0.01)] == 91.6
    assert wide.loc[("vgg11", "Robust"), ("wd", 0.01)] == pytest.approx(40)
    flat = table2.flat_columns(wide)
    assert list(flat.columns) == ["plain", "weight decay 0.01", "singular value clipping 0.7"]


def test_figure2_configs():
    cfgs = grids.figure2_configs(["resnet18", "vgg11"], dict(lr=0.1, eval_eps=8 / 255))
    assert [(c["model"], c["adv_mode"]) for c in cfgs] == [
        (m, a) for m in ["resnet18", "vgg11"] for a in ["plain", "pgd", "alp", "trades"]]


def _fake_run(tmp_path, h, names, linf, l1, hist=True):
    d = tmp_path / h
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps(dict(layer_names=names, norms_linf=linf, norms_l1=l1)))
    if hist:
        (d / "history.json").write_text(json.dumps([
            dict(epoch=e, lr=0.1, train_loss=1.0, train_acc=0.5, test_acc=0.6,
                 norms_linf=dict(zip(names, [v * e for v in linf])), norms_l1=dict(zip(names, l1)))
            for e in (1, 2)]))
    return dict(model="smallcnn", regularizer="none", reg_strength=0.0, adv_mode="plain", seed=0, hash=h,
                run_dir=str(d))


def test_layer_norm_frame(tmp_path):
    results = pd.DataFrame([_fake_run(tmp_path, "a", ["conv1", "fc"], [10.0, 100.0], [1.0, 2.0])])
    norms = tables.layer_norm_frame(results)
    assert list(norms.layer) == ["conv1", "fc"] and list(norms.depth) == [0, 1]
    assert list(norms.linf) == [10.0, 100.0] and list(norms.l1) == [1.0, 2.0]


def test_missing_run_files_name_the_run(tmp_path):
    results = pd.DataFrame([_fake_run(tmp_path, "b", ["fc"], [1.0], [1.0], hist=False)])
    with pytest.raises(FileNotFoundError, match="history.json.*b"):
        tables.layer_history_frame(results)


def test_extra_robust_frame(tmp_path):
    run = _fake_run(tmp_path, "c", ["fc"], [1.0], [1.0], hist=False)
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    (tmp_path / "c" / "metrics.json").write_text(json.dumps(dict(metrics, n_eval=50,
                                                                 robust_acc_extra={"0.015686275": 0.02})))
    frame = tables.extra_robust_frame(pd.DataFrame([run]))
    assert frame.to_dict("records") == [dict(model="smallcnn", regularizer="none", strength=0.0, seed=0,
                                             eps=0.015686275, robust=2.0, n_robust=50)]


def test_l1_with_batchnorm_frame(tmp_path):
    """Every Conv2d, BatchNorm and Linear layer of the checkpoint; BatchNorm against its dense eval-mode map."""
    import torch

    from nblib.models import build
    from nblib.norms import conv2d_norm

    torch.manual_seed(0)
    net = build("smallcnn", num_classes=10)
    with torch.no_grad():
        net.bn1.weight.normal_(), net.bn1.running_var.uniform_(0.1, 3.0)
    run = _fake_run(tmp_path, "d", ["conv1"], [1.0], [1.0], hist=False)
    torch.save({"model": net.state_dict()}, tmp_path / "d" / "checkpoint.pt")
    frame = tables.l1_with_batchnorm_frame(pd.DataFrame([run]))
    assert list(frame.kind).count("BatchNorm2d") == 4 and len(frame) == 10 and list(frame.depth) == list(range(10))
    net.eval()
    bn = net.bn1
    x = torch.eye(16).reshape(16, 16, 1, 1)
    with torch.no_grad():
        dense = (bn(x) - bn(torch.zeros(1, 16, 1, 1))).reshape(16, 16).T  # column c: the image of e_c
    got = frame.set_index("layer").norm
    assert got["bn1"] == pytest.approx(torch.linalg.matrix_norm(dense, 1).item(), rel=1e-5)
    assert got["conv1"] == pytest.approx(conv2d_norm(net.conv1, (32, 32), 1).item(), rel=1e-6)


def test_layer_history_frame(tmp_path):
    results = pd.DataFrame([_fake_run(tmp_path, "e", ["conv1", "fc"], [10.0, 100.0], [1.0, 2.0])])
    h = tables.layer_history_frame(results)
    assert list(zip(h.epoch, h.layer, h.depth)) == [(1, "conv1", 0), (1, "fc", 1), (2, "conv1", 0), (2, "fc", 1)]
    assert list(h.linf) == [10.0, 100.0, 20.0, 200.0] and list(h.l1) == [1.0, 2.0, 1.0, 2.0]


# ------------------------------------------------------------------ settings -> runs (one name per setting)
SMOKE_T2 = dict(models=["smallcnn"], dataset="digits", data_root="../data", train_subset=0, epochs=6, lr=0.05,
                wd=[0.01], svc=[0.5], nd_l1=[], nd_linf=[0.1], reg_gamma=0.5, reg_beta_scaling="per_layer",
                reg_nd_update="algorithm1", reg_nd_layers="every", reg_svc_linear=True, reg_clip_every=10,
                eval_eps_255=8, extra_eval_eps_255=[4], attack="authors", attack_budget=1.0, n_eval=100, seeds=[0],
                device="cpu", precision="fp32", channels_last=False, cudnn_deterministic=False, compile="none",
                plain_lr=0.0)


def test_config_values_map_only_the_255_units():
    got = grids.config_values(SMOKE_T2, grids.TABLE2_KEYS)
    assert got["eval_eps"] == 8 / 255 and got["extra_eval_eps"] == [4 / 255]
    assert {k: v for k, v in got.items() if k not in grids.UNITS_255} == {
        k: SMOKE_T2[k] for k in grids.TABLE2_KEYS if k not in grids.UNITS_255}
    with pytest.raises(KeyError, match="eval_eps_255"):
        grids.config_values({k: v for k, v in SMOKE_T2.items() if k != "eval_eps_255"}, ["eval_eps"])


def test_table2_run_configs_are_valid_and_distinct():
    cfgs = grids.table2_run_configs(SMOKE_T2)
    assert [(c["regularizer"], c["reg_strength"]) for c in cfgs] == [
        ("none", 0.0), ("wd", 0.01), ("svc", 0.5), ("nd_linf", 0.1)]
    filled = [fill_cfg(c) for c in cfgs]
    assert all(f["reg_clip_every"] == (10 if f["regularizer"] == "svc" else 100) for f in filled)  # default elsewhere
    assert len({config_hash(c) for c in filled}) == 4
    no_attack = grids.table2_run_configs(dict(SMOKE_T2, attack="none"))
    assert all(c["extra_eval_eps"] == [] for c in no_attack)
    authors = grids.table2_run_configs(dict(SMOKE_T2, lr=0.01, plain_lr=0.1))  # the authors' plain baseline
    assert [c["lr"] for c in authors] == [0.1, 0.01, 0.01, 0.01] and authors[0]["regularizer"] == "none"
    assert all(c["lr"] == 0.05 for c in cfgs)  # plain_lr 0: every run at lr (the paper's text)


def test_one_seed_gives_the_run_folders_of_the_former_single_seed():
    """``seeds = [0]`` builds the configs, in order and hash for hash, that ``seed = 0`` built before seeds were a
    grid (the old construction written out here), so the run caches stay valid; two seeds build each config
    twice, side by side, differing only in ``seed``."""
    old_base = dict(grids.config_values(SMOKE_T2, grids.TABLE2_KEYS), seed=0)
    old = []
    for model in SMOKE_T2["models"]:
        old += expand_grid({**old_base, "model": model}, regularizer=["none"], reg_strength=[0.0])
        for kind in ("wd", "svc", "nd_l1", "nd_linf"):
            old += expand_grid({**old_base, "model": model}, regularizer=[kind], reg_strength=list(SMOKE_T2[kind]))
    new = grids.table2_run_configs(SMOKE_T2)
    assert [config_hash(c) for c in new] == [config_hash(c) for c in old]
    f2 = dict(SMOKE_T2, models=["smallcnn", "vgg11"], adv_modes=["plain", "pgd"], adv_preset="standard")
    old_base = {**grids.config_values(f2, grids.FIGURE2_KEYS), "local_lipschitz": True, "seed": 0}
    old = [c for m in f2["models"] for c in expand_grid({**old_base, "model": m}, adv_mode=f2["adv_modes"])]
    assert [config_hash(c) for c in grids.figure2_run_configs(f2)] == [config_hash(c) for c in old]
    two = grids.table2_run_configs(dict(SMOKE_T2, seeds=[0, 1]))
    assert len(two) == 2 * len(new) and [c["seed"] for c in two] == [0, 1] * len(new)
    assert [config_hash(c) for c in two[::2]] == [config_hash(c) for c in new]
    assert len({config_hash(c) for c in two}) == len(two)
    assert [c["seed"] for c in grids.figure2_run_configs(dict(f2, seeds=[0, 1]))] == [0, 1] * 4


@pytest.mark.parametrize("seeds", [[], [0, 0], 0, [0.5], [True]])
def test_seeds_must_be_a_list_of_distinct_ints(seeds):
    with pytest.raises(ValueError, match="seeds must be"):
        grids.table2_run_configs(dict(SMOKE_T2, seeds=seeds))


def test_the_former_seed_parameter_names_the_fix():
    old = {k: v for k, v in SMOKE_T2.items() if k != "seeds"}
    with pytest.raises(KeyError, match=r"seed = 0 became seeds = \[0\]"):
        grids.table2_run_configs(dict(old, seed=0))


# ---------------------------------------------------------------------- experiments on made-up runs
def _made_up_run(tmp_path, h, model="smallcnn", regularizer="none", strength=0.0, adv_mode="plain", clean=0.9,
                 robust=0.5, n_eval=400, scale=1.0, extra=None, lip=1.0, seed=0):
    names = ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]
    linf = [scale * (i + 2.0) for i in range(len(names))]
    d = tmp_path / h
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(dict(layer_names=names, norms_linf=linf, norms_l1=linf, n_eval=n_eval,
                                                    robust_acc_extra=extra or {})))
    (d / "history.json").write_text(json.dumps([dict(epoch=1, norms_linf=dict(zip(names, linf)),
                                                     norms_l1=dict(zip(names, linf)))]))
    return dict(model=model, regularizer=regularizer, reg_strength=strength, adv_mode=adv_mode, seed=seed, hash=h,
                run_dir=str(d), clean_acc=clean, robust_acc=robust, n_test=10_000, metric_n_eval=n_eval,
                lip_mean=lip, lip_max=2 * lip, grad_margin_mean=0.1, log10_linf_norm_product=float(sum(linf)),
                status="done", stale=False,  # per-point outcomes as the sweep's table holds them: nested sets,
                clean_correct=pack_outcomes(np.arange(10_000) < round(10_000 * clean)),  # every difference
                robust_correct=pack_outcomes(np.arange(n_eval) < round(n_eval * robust)))  # one-directional


def _table2_runs(tmp_path, svc_robust):
    runs = [_made_up_run(tmp_path, "p", robust=0.5, extra={str(4 / 255): 0.1}),
            _made_up_run(tmp_path, "w", regularizer="wd", strength=0.01, clean=0.95, robust=0.3, scale=0.5,
                         extra={str(4 / 255): 0.0}),
            _made_up_run(tmp_path, "s", regularizer="svc", strength=0.5, robust=svc_robust, scale=0.5,
                         extra={str(4 / 255): 0.0})]
    return pd.DataFrame(runs)


def test_table2_result_holds_on_runs_that_lose_robustness(tmp_path):
    settings = dict(SMOKE_T2, extra_eval_eps_255=[4], eval_eps_255=1)
    r = table2.table2_result(_table2_runs(tmp_path, svc_robust=0.2), settings)
    outcome = {v.claim: v.outcome for v in r.verdicts}
    assert outcome["norm regularization at its strongest does not improve robust accuracy"] == "holds"
    assert outcome["norm regularization does not improve robust accuracy at any strength"] == "holds"
    assert outcome["weight decay improves clean accuracy at some strength"] == "holds"  # 95 % vs 90 % of 10,000
    assert outcome["weight decay typically improves clean accuracy"] == "holds"  # its one run is above
    assert outcome["smallcnn: higher clean accuracy goes with lower robust accuracy"] in ("holds", "not testable")
    robust = {v.claim: v for v in r.verdicts}["norm regularization at its strongest does not improve robust accuracy"]
    assert "exact McNemar" in robust.reason and "Holm-corrected over 2 comparisons" in robust.reason
    assert "clean_points" not in r.long and "robust_points" in r.table  # outcomes reach the claims, not the CSV
    assert outcome["the strongest weight decay lowers the mean l_inf layer norm"] == "holds"
    assert outcome["regularized models have about 0% robust accuracy at 4/255 (below 5%)"] == "holds"
    assert outcome["regularized models have about 0% robust accuracy at 8/255 (below 5%)"] == "not testable"
    assert list(r.wide.columns) == [("none", 0.0), ("wd", 0.01), ("svc", 0.5)]
    assert set(r.radii.eps_255) == {1.0, 4.0} and (r.long.robust_lo < r.long.robust).all()
    assert r.metrics["n_runs"] == 3 and r.metrics["reading"] == {"reg_beta_scaling": "per_layer",
                                                                 "reg_nd_update": "algorithm1",
                                                                 "reg_nd_layers": "every",
                                                                 "reg_svc_linear": True, "plain_lr": 0.0}
    assert r.metrics["plain_robust"] == {"smallcnn": pytest.approx(50.0)}
    assert r.metrics["machine"]["cpu_capability"] == machine()["cpu_capability"]
    assert len(r.paper_verdicts) == 25  # clean (2 readings) and robust (2 readings) x 5, the trade-off x 5
    assert all("unpaired" in v.reason for v in r.paper_verdicts[:20])  # the published table has no outcomes
    r.save(tmp_path / "out")
    assert (tmp_path / "out" / "metrics" / "03_table2.json").exists()
    saved = table2.table2_frame_from_tables(pd.read_csv(tmp_path / "out" / "tables" / "03_table2_long.csv"),
                                            pd.read_csv(tmp_path / "out" / "tables" / "03_table2_outcomes.csv"))
    again = [*judge2.table2_clean(saved), *judge2.table2_robust(saved)]
    assert len(again) == 12 and [(v.claim, v.outcome, v.reason) for v in again] == \
        [(v.claim, v.outcome, v.reason) for v in r.verdicts[:12]]
    assert (tmp_path / "out" / "tables" / "03_table2.tex").exists()


def test_table2_result_says_does_not_hold_when_a_regularizer_is_more_robust(tmp_path):
    r = table2.table2_result(_table2_runs(tmp_path, svc_robust=0.8), SMOKE_T2)
    outcome = {v.claim: v.outcome for v in r.verdicts}
    assert outcome["the strongest singular value clipping does not improve robust accuracy"] == "does not hold"
    assert outcome["norm regularization at its strongest does not improve robust accuracy"] == "does not hold"


def test_table2_result_does_not_compare_a_stale_run_unpaired(tmp_path):
    """A run kept with reuse_stale from older code has no per-point outcomes: its comparisons are not
    testable (and say why), even where the accuracies alone would differ beyond the intervals."""
    runs = _table2_runs(tmp_path, svc_robust=0.8)
    runs.loc[runs.hash == "s", ["clean_correct", "robust_correct", "stale"]] = [None, None, True]
    r = table2.table2_result(runs, SMOKE_T2)
    v = {v.claim: v for v in r.verdicts}["the strongest singular value clipping does not improve robust accuracy"]
    assert v.outcome == "not testable" and "without per-point outcomes" in v.reason
    assert table2.table2_frame(runs.drop(columns=["clean_correct", "robust_correct"])).robust_points.isna().all()


def _figure2_runs(tmp_path, pgd_scale):
    import torch

    from nblib.models import build

    rows = []
    for mode, scale, robust in (("plain", 1.0, 0.1), ("pgd", pgd_scale, 0.6)):
        rows.append(_made_up_run(tmp_path, mode, adv_mode=mode, robust=robust, scale=scale,
                                 lip=10.0 if mode == "plain" else 2.0))
        torch.manual_seed(0)
        net = build("smallcnn", num_classes=10)
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(scale)
        torch.save({"model": net.state_dict()}, tmp_path / mode / "checkpoint.pt")
    return pd.DataFrame(rows)


def test_figure2_result_holds_with_larger_norms_and_fails_with_smaller(tmp_path):
    settings = dict(models=["smallcnn"], adv_modes=["plain", "pgd"], dataset="digits", eval_eps_255=8,
                    attack="standard", attack_budget=1.0, n_eval=400, epochs=6, layer_set="every", norm_band=1.25)
    r = figure2.figure2_result(_figure2_runs(tmp_path / "a", pgd_scale=2.0), settings)
    outcome = {v.claim: v.outcome for v in r.verdicts}
    assert outcome["smallcnn PGD-AT: l_inf layer norms comparable to or larger than plain"] == "holds"
    assert outcome["smallcnn PGD-AT more robust than plain"] == "holds"
    assert "exact McNemar" in {v.claim: v for v in r.verdicts}["smallcnn PGD-AT more robust than plain"].reason
    assert outcome["smallcnn PGD-AT smaller local Lipschitz estimate than plain"] == "holds"
    assert r.metrics["n_layers"] == 6 and r.metrics["n_layers_with_batchnorm"] == 10
    assert r.metrics["adv_modes"] == ["plain", "pgd"] and r.metrics["eps"] == 8 / 255
    assert r.metrics["machine"]["cpu_capability"] == machine()["cpu_capability"]
    shrunk = figure2.figure2_result(_figure2_runs(tmp_path / "b", pgd_scale=0.5), settings)
    outcome = {v.claim: v.outcome for v in shrunk.verdicts}
    assert outcome["smallcnn PGD-AT: l_inf layer norms comparable to or larger than plain"] == "does not hold"
    wide_band = figure2.figure2_result(_figure2_runs(tmp_path / "c", pgd_scale=0.5), dict(settings, norm_band=2.5))
    outcome = {v.claim: v.outcome for v in wide_band.verdicts}
    assert outcome["smallcnn PGD-AT: l_inf layer norms comparable to or larger than plain"] == "holds"
    shrunk.save(tmp_path / "out")  # the per-point outcomes stay out of the saved table
    saved = pd.read_csv(tmp_path / "out" / "tables" / "04_accuracy_lipschitz.csv")
    assert "robust_acc_points" not in saved  # packed as robust_correct, read back by summary_from_table
    again = judgef2.figure2_more_robust(figure2.summary_from_table(saved))
    assert [(v.claim, v.reason) for v in again] == \
        [(v.claim, v.reason) for v in shrunk.verdicts if "more robust" in v.claim]


def test_figure2_on_the_authors_layer_set():
    """``layer_set="authors"`` drops from Figure 2's tables exactly the convs the authors' code skipped (VGG-11's
    two convs on 2x2 inputs; none of the small CNN's), and says which set each row belongs to."""
    from nblib.models import build
    from nblib.norms import layer_norms
    vgg = layer_norms(build("vgg11", num_classes=10), (3, 32, 32), math.inf)
    frame = pd.concat([pd.DataFrame(dict(model=m, layer=t.name, linf=t.norm)) for m, t in
                       (("vgg11", vgg), ("smallcnn", layer_norms(build("smallcnn", num_classes=10), (3, 32, 32), 1)))])
    every = figure2.layer_set_filter(frame, "every")
    authors = figure2.layer_set_filter(frame, "authors")
    dropped = set(zip(every.model, every.layer)) - set(zip(authors.model, authors.layer))
    small = [r.name for r in vgg.itertuples() if r.kind == "Conv2d" and min(r.input_shape[1:]) < 3]
    assert len(small) == 2 and dropped == {("vgg11", n) for n in small}
    assert set(authors.layer_set) == {"authors"} and set(every.layer_set) == {"every"} and len(every) == len(frame)
    with pytest.raises(ValueError, match="layer_set"):
        figure2.layer_set_filter(frame, "most")


def test_table2_result_with_two_seeds(tmp_path):
    """One row per run with its seed; the paper's layout shows the mean and the spread over the seeds; the
    claims pair the runs by seed; the saved tables give the same verdicts back."""
    runs = pd.concat([_table2_runs(tmp_path / "s0", svc_robust=0.2).assign(seed=0),
                      _table2_runs(tmp_path / "s1", svc_robust=0.2).assign(seed=1, clean_acc=[0.9, 0.93, 0.9])],
                     ignore_index=True)
    r = table2.table2_result(runs, dict(SMOKE_T2, seeds=[0, 1], eval_eps_255=1))
    assert len(r.table) == len(r.long) == 6 and list(r.table.seed) == [0, 0, 0, 1, 1, 1]
    assert set(r.radii.seed) == {0, 1} and set(r.norm_summary.seed) == {0, 1}
    assert r.wide.loc[("smallcnn", "Clean (mean of 2 seeds)"), ("wd", 0.01)] == pytest.approx(94)
    assert r.wide.loc[("smallcnn", "Clean (sd of 2 seeds)"), ("wd", 0.01)] == pytest.approx(np.std([95, 93], ddof=1))
    assert r.robust_ci.loc["smallcnn", ("wd", 0.01)].count(" | ") == 1
    assert r.metrics["n_runs"] == 6 and r.metrics["seeds"] == [0, 1]
    assert r.metrics["plain_clean"] == {"smallcnn": pytest.approx(90)}
    v = {v.claim: v for v in r.verdicts}
    assert v["norm regularization at its strongest does not improve robust accuracy"].outcome == "holds"
    assert "in each of 2 seeds (intersection-union" in v["weight decay improves clean accuracy at some strength"].reason
    assert v["the strongest weight decay lowers the mean l_inf layer norm"].reason == \
        "lower on every model in each of 2 seeds"
    r.save(tmp_path / "out")
    saved = table2.table2_frame_from_tables(pd.read_csv(tmp_path / "out" / "tables" / "03_table2_long.csv"),
                                            pd.read_csv(tmp_path / "out" / "tables" / "03_table2_outcomes.csv"))
    again = [*judge2.table2_clean(saved), *judge2.table2_robust(saved)]
    assert [(x.claim, x.outcome, x.reason) for x in again] == [(x.claim, x.outcome, x.reason) for x in r.verdicts[:12]]


def test_figure2_result_with_two_seeds(tmp_path):
    runs = pd.concat([_figure2_runs(tmp_path / f"s{s}", pgd_scale=2.0).assign(seed=s) for s in (0, 1)],
                     ignore_index=True)
    settings = dict(models=["smallcnn"], adv_modes=["plain", "pgd"], dataset="digits", eval_eps_255=8,
                    attack="standard", attack_budget=1.0, n_eval=400, epochs=6, layer_set="every", seeds=[0, 1],
                    norm_band=1.25)
    r = figure2.figure2_result(runs, settings)
    assert list(r.summary.seed) == [0, 0, 1, 1] and set(r.norms.seed) == set(r.norms_with_batchnorm.seed) == {0, 1}
    assert set(r.metrics["clean_acc"]) == {f"smallcnn/{m}/seed{s}" for m in ("plain", "pgd") for s in (0, 1)}
    assert r.metrics["n_layers"] == 6 and r.metrics["seeds"] == [0, 1]
    v = {v.claim: v for v in r.verdicts}
    assert v["smallcnn PGD-AT seed 1: l_inf layer norms comparable to or larger than plain"].outcome == "holds"
    assert v["smallcnn PGD-AT more robust than plain"].outcome == "holds"
    assert "in each of 2 seeds" in v["smallcnn PGD-AT more robust than plain"].reason
