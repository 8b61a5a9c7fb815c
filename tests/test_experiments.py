"""nblib.experiments: Table 2 / Figure 2 grids, the paper's numbers, and the per-run norm tables."""
import json
import math

import pandas as pd
import pytest

from nblib import experiments
from nblib.sweep import config_hash
from nblib.run_config import fill_cfg


def test_table2_grid_is_the_papers():
    base = dict(dataset="cifar10", epochs=120, lr=0.01)
    cfgs = experiments.table2_configs(list(experiments.PAPER_TABLE2), base, wd=[1e-2, 1e-3, 1e-4, 1e-5],
                                      svc=[0.5, 1.0, 1.5, 2.0], nd_l1=[1e-2, 1e-3, 1e-4, 1e-5],
                                      nd_linf=[1e-2, 1e-3, 1e-4, 1e-5])
    assert len(cfgs) == 4 * 17
    fake = pd.DataFrame([dict(c, reg_strength=c["reg_strength"], clean_acc=0.9, robust_acc=0.5) for c in cfgs])
    cols = list(experiments.table2_wide(experiments.table2_frame(fake)).columns)
    assert cols == [(k, s) for k, s in experiments.PAPER_TABLE2["vgg11"]]  # the paper's column order
    assert len({config_hash(c) for c in cfgs}) == 4 * 17  # every config its own run folder
    for c in cfgs:
        fill_cfg(c)  # valid configs
        assert (c["regularizer"], c["reg_strength"]) in experiments.PAPER_TABLE2[c["model"]]
    # every published cell is covered by the grid, and published accuracies are percentages
    for model, cells in experiments.PAPER_TABLE2.items():
        assert len(cells) == 17
        for clean, robust in cells.values():
            assert 80 < clean < 100 and (robust is None or 0 < robust < clean)


def test_table2_frame_and_wide_layout():
    results = pd.DataFrame([
        dict(model="vgg11", regularizer="none", reg_strength=0.0, clean_acc=0.9, robust_acc=0.5),
        dict(model="vgg11", regularizer="wd", reg_strength=1e-2, clean_acc=0.92, robust_acc=0.4),
        dict(model="vgg11", regularizer="svc", reg_strength=0.7, clean_acc=0.8, robust_acc=None),
    ])
    frame = experiments.table2_frame(results)
    assert list(frame.clean) == pytest.approx([90, 92, 80])
    assert frame.robust.iloc[0] == pytest.approx(50) and math.isnan(frame.robust.iloc[2])
    assert frame.paper_clean.iloc[0] == 90.4 and frame.paper_robust.iloc[1] == 56.3
    assert math.isnan(frame.paper_clean.iloc[2])  # c = 0.7 is not in the paper
    assert list(frame.status) == ["done"] * 3 and not frame.stale.any()  # defaults without the columns
    marked = experiments.table2_frame(results.assign(status=["done", "diverged", "done"], stale=[False, False, True]))
    assert list(marked.status) == ["done", "diverged", "done"] and list(marked.stale) == [False, False, True]
    wide = experiments.table2_wide(frame, with_paper=True)
    assert list(wide.columns) == [("none", 0.0), ("wd", 0.01), ("svc", 0.7)]
    assert wide.loc[("vgg11", "Clean (paper)"), ("wd", 0.01)] == 91.6
    assert wide.loc[("vgg11", "Robust"), ("wd", 0.01)] == pytest.approx(40)
    flat = experiments.flat_columns(wide)
    assert list(flat.columns) == ["plain", "weight decay 0.01", "singular value clipping 0.7"]


def test_figure2_configs():
    cfgs = experiments.figure2_configs(["resnet18", "vgg11"], dict(lr=0.1, eval_eps=8 / 255))
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
    return dict(model="smallcnn", regularizer="none", reg_strength=0.0, adv_mode="plain", hash=h, run_dir=str(d))


def test_layer_norm_and_history_frames(tmp_path):
    results = pd.DataFrame([_fake_run(tmp_path, "a", ["conv1", "fc"], [10.0, 100.0], [1.0, 2.0])])
    norms = experiments.layer_norm_frame(results)
    assert list(norms.layer) == ["conv1", "fc"] and list(norms.depth) == [0, 1]
    assert list(norms.linf) == [10.0, 100.0] and list(norms.l1) == [1.0, 2.0]
    hist = experiments.history_frame(results)
    assert list(hist.epoch) == [1, 2]
    assert hist.mean_log10_linf.tolist() == pytest.approx([1.5, 1.5 + math.log10(2)])
    assert hist.mean_log10_l1.iloc[0] == pytest.approx(math.log10(2) / 2)


def test_missing_run_files_name_the_run(tmp_path):
    results = pd.DataFrame([_fake_run(tmp_path, "b", ["fc"], [1.0], [1.0], hist=False)])
    with pytest.raises(FileNotFoundError, match="history.json.*b"):
        experiments.history_frame(results)


def test_extra_robust_frame(tmp_path):
    run = _fake_run(tmp_path, "c", ["fc"], [1.0], [1.0], hist=False)
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    (tmp_path / "c" / "metrics.json").write_text(json.dumps(dict(metrics, n_eval=50,
                                                                 robust_acc_extra={"0.015686275": 0.02})))
    frame = experiments.extra_robust_frame(pd.DataFrame([run]))
    assert frame.to_dict("records") == [dict(model="smallcnn", regularizer="none", strength=0.0, eps=0.015686275,
                                             robust=2.0, n_robust=50)]


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
    frame = experiments.l1_with_batchnorm_frame(pd.DataFrame([run]))
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
    h = experiments.layer_history_frame(results)
    assert list(zip(h.epoch, h.layer, h.depth)) == [(1, "conv1", 0), (1, "fc", 1), (2, "conv1", 0), (2, "fc", 1)]
    assert list(h.linf) == [10.0, 100.0, 20.0, 200.0] and list(h.l1) == [1.0, 2.0, 1.0, 2.0]
