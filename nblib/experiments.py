"""The paper's two experiments as config grids, and its published numbers to compare with.

Table 2: norm regularization (weight decay, singular value clipping, l1 / l_inf norm decay) on four CIFAR
models, clean and AutoAttack robust accuracy (l_inf, eps = 1/255).  Figure 2: layer norms of plainly and
adversarially trained (PGD-AT, ALP, TRADES) models, robust accuracy at eps = 8/255.
"""
from __future__ import annotations

import math

import pandas as pd

from nblib.sweep import expand_grid

METHOD_LABELS = {"none": "plain", "wd": "weight decay", "svc": "singular value clipping",
                 "nd_l1": "l1 norm decay", "nd_linf": "l_inf norm decay"}
PAPER_MODEL_NAMES = {"vgg11": "vgg", "resnet18": "resnet", "senet18": "senet", "regnetx_200mf": "regnet"}

_S4 = (1e-2, 1e-3, 1e-4, 1e-5)
_C4 = (0.5, 1.0, 1.5, 2.0)


def _row(plain, wd, svc, l1, linf):
    out = {("none", 0.0): plain}
    for kind, strengths, pairs in (("wd", _S4, wd), ("svc", _C4, svc), ("nd_l1", _S4, l1), ("nd_linf", _S4, linf)):
        out.update({(kind, s): p for s, p in zip(strengths, pairs)})
    return out


# Table 2 of the paper: (clean %, robust %) per (regularizer, strength); robust = standard AutoAttack,
# l_inf, eps = 1/255.  RegNet's plain robust accuracy is missing from the text of the paper we ship (None).
PAPER_TABLE2 = {
    "vgg11": _row((90.4, 60.2), [(91.6, 56.3), (91.7, 60.5), (90.1, 60.6), (90.2, 60.3)],
                  [(87.6, 48.8), (89.1, 52.2), (90.0, 54.1), (89.9, 56.7)],
                  [(88.1, 56.5), (91.1, 62.5), (90.6, 61.1), (90.8, 60.1)],
                  [(91.8, 56.9), (91.1, 60.0), (90.8, 60.8), (90.6, 60.1)]),
    "resnet18": _row((93.2, 37.0), [(94.3, 28.2), (94.1, 33.7), (93.1, 33.9), (92.7, 40.9)],
                     [(93.6, 35.2), (94.0, 41.7), (94.2, 43.2), (93.8, 39.8)],
                     [(92.5, 24.5), (93.4, 37.7), (93.5, 38.3), (93.4, 37.5)],
                     [(93.0, 20.0), (93.8, 34.7), (93.1, 38.9), (93.0, 37.6)]),
    "senet18": _row((93.1, 35.7), [(94.2, 23.5), (93.9, 32.8), (93.0, 37.0), (92.4, 34.8)],
                    [(93.8, 30.5), (94.2, 35.6), (93.8, 35.2), (94.2, 37.4)],
                    [(92.3, 33.6), (93.8, 36.0), (93.3, 38.2), (93.3, 36.7)],
                    [(93.0, 28.6), (93.6, 31.0), (92.8, 37.6), (93.2, 37.4)]),
    "regnetx_200mf": _row((91.8, None), [(93.6, 23.7), (94.4, 30.3), (92.3, 30.0), (91.3, 31.0)],
                          [(93.9, 27.7), (93.4, 28.8), (93.0, 29.0), (92.4, 28.8)],
                          [(93.7, 29.2), (92.3, 31.1), (91.6, 28.1), (91.9, 34.3)],
                          [(93.4, 23.2), (92.0, 27.7), (91.8, 27.9), (91.9, 30.6)]),
}


def table2_configs(models, base: dict, wd=(), svc=(), nd_l1=(), nd_linf=()) -> list[dict]:
    """One training config per (model, regularizer, strength), plain runs included, on top of ``base``."""
    cfgs = []
    for model in models:
        cfgs += expand_grid({**base, "model": model}, regularizer=["none"], reg_strength=[0.0])
        for kind, values in (("wd", wd), ("svc", svc), ("nd_l1", nd_l1), ("nd_linf", nd_linf)):
            if len(values):
                cfgs += expand_grid({**base, "model": model}, regularizer=[kind], reg_strength=list(values))
    return cfgs


def table2_run_configs(p: dict) -> list[dict]:
    """The run configs of notebook 03 from its parameters ``p`` (the notebook's names: ``eps_255`` is eps in
    units of 1/255, ``nd_gamma`` the norm-decay gamma, ``svc_every`` SVC's clipping period, ``train_subset``
    0 for the whole training set, ``nd_beta_scaling`` / ``svc_linear`` the readings of norm decay's beta and
    of SVC, ``extra_eps_255`` more attack radii): one per model for plain training and per (regularizer,
    strength)."""
    base = dict(dataset=p["dataset"], data_root=p["data_root"], train_subset=p["train_subset"] or None,
                epochs=p["epochs"], lr=p["lr"], batch_size=p["batch_size"], reg_gamma=p["nd_gamma"],
                reg_clip_every=p["svc_every"], eval_eps=p["eps_255"] / 255, attack=p["attack"],
                attack_budget=p["attack_budget"], n_eval=p["n_eval"], seed=p["seed"], device=p["device"],
                reg_beta_scaling=p["nd_beta_scaling"], reg_svc_linear=p["svc_linear"],
                extra_eval_eps=[e / 255 for e in p["extra_eps_255"]] if p["attack"] != "none" else [])
    return table2_configs(p["models"], base, wd=p["wd"], svc=p["svc"], nd_l1=p["nd_l1"], nd_linf=p["nd_linf"])


def figure2_run_configs(p: dict) -> list[dict]:
    """The run configs of notebook 04 from its parameters ``p`` (names as in :func:`table2_run_configs`):
    one per (model, training mode), all with local Lipschitz estimates."""
    base = dict(dataset=p["dataset"], data_root=p["data_root"], train_subset=p["train_subset"] or None,
                epochs=p["epochs"], lr=p["lr"], batch_size=p["batch_size"], adv_preset=p["adv_preset"],
                eval_eps=p["eps_255"] / 255, attack=p["attack"], attack_budget=p["attack_budget"],
                n_eval=p["n_eval"], local_lipschitz=True, seed=p["seed"], device=p["device"])
    return figure2_configs(p["models"], base, modes=p["modes"])


def runs_root(p: dict) -> str:
    """The sweep cache of a training notebook's parameters ``p``: ``runs_dir``, or ``<output_dir>/runs`` when it
    is empty (the notebooks' default: each profile its own cache); relative to the notebooks' folder."""
    return p["runs_dir"] or f"{p['output_dir']}/runs"


#: The run configs of each notebook that trains, from its parameters.
RUN_CONFIGS = {"03_table2": table2_run_configs, "04_adversarial_norms": figure2_run_configs}


def table2_frame(results: pd.DataFrame, clean="clean_acc", robust="robust_acc") -> pd.DataFrame:
    """Long table: model, regularizer, strength, clean and robust accuracy (%), the number of points each
    is measured on (``n_clean``: the test set, ``n_robust``: the attacked subset; for binomial intervals,
    ``nblib.verdicts``), and the paper's numbers where the same (model, regularizer, strength) appears in
    Table 2 (NaN otherwise), then the run's ``status`` ("done", or "diverged" with NaN accuracies) and
    ``stale`` (a result of other code kept with ``run_sweep(..., reuse_stale=True)``) when ``results`` has
    them."""
    rows = []
    for r in results.itertuples(index=False):
        r = r._asdict()
        paper = PAPER_TABLE2.get(r["model"], {}).get((r["regularizer"], float(r["reg_strength"])), (None, None))
        rows.append(dict(model=r["model"], regularizer=r["regularizer"], strength=float(r["reg_strength"]),
                         clean=100 * r[clean], robust=100 * r[robust] if _present(r.get(robust)) else math.nan,
                         n_clean=r.get("n_test", math.nan), n_robust=r.get("metric_n_eval", math.nan),
                         paper_clean=paper[0] if paper[0] is not None else math.nan,
                         paper_robust=paper[1] if paper[1] is not None else math.nan,
                         status=r.get("status", "done"), stale=bool(r.get("stale", False))))
    return pd.DataFrame(rows)


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def paper_table2_frame(n_clean: int = 10_000, n_robust: int = 1024) -> pd.DataFrame:
    """The paper's Table 2 in :func:`table2_frame`'s layout (its numbers as ``clean`` / ``robust``), with the
    CIFAR-10 test set (``n_clean``) and the authors' attacked subset (``n_robust``, 1024 in their code) as
    the sample sizes: the verdicts of ``nblib.verdicts`` applied to the published numbers."""
    rows = [dict(model=m, regularizer=k, strength=s, clean=c, robust=math.nan if r is None else r,
                 n_clean=n_clean, n_robust=n_robust, paper_clean=c, paper_robust=math.nan if r is None else r)
            for m, cells in PAPER_TABLE2.items() for (k, s), (c, r) in cells.items()]
    return pd.DataFrame(rows)


def table2_wide(frame: pd.DataFrame, with_paper: bool = False) -> pd.DataFrame:
    """The paper's layout: rows (model, Clean/Robust), columns (regularizer, strength), each group strongest
    first as in Table 2 (weight decay / beta descending, SVC's c ascending: 0.5, 1.0, 1.5, 2.0)."""
    parts = {"Clean": "clean", "Robust": "robust"}
    if with_paper:
        parts.update({"Clean (paper)": "paper_clean", "Robust (paper)": "paper_robust"})
    order = list(METHOD_LABELS)
    long = frame.melt(id_vars=["model", "regularizer", "strength"], value_vars=list(parts.values()),
                      var_name="acc", value_name="value")
    long["acc"] = long.acc.map({v: k for k, v in parts.items()})
    wide = long.pivot_table(index=["model", "acc"], columns=["regularizer", "strength"], values="value",
                            dropna=False)
    present = set(zip(frame.regularizer, frame.strength))  # dropna=False builds every (kind, strength) pair
    # the paper's order: strongest first in each group (largest coefficient; smallest clip value c for SVC)
    cols = sorted((c for c in wide.columns if c in present),
                  key=lambda c: (order.index(c[0]) if c[0] in order else 99, c[1] if c[0] == "svc" else -c[1]))
    return wide[cols]


def flat_columns(wide: pd.DataFrame) -> pd.DataFrame:
    """:func:`table2_wide` with one-level column names such as ``"weight decay 0.01"`` (for CSV, markdown
    and LaTeX files)."""
    out = wide.copy()
    out.columns = [METHOD_LABELS.get(k, k) if k == "none" else f"{METHOD_LABELS.get(k, k)} {s:g}"
                   for k, s in wide.columns]
    return out


def figure2_configs(models, base: dict, modes=("plain", "pgd", "alp", "trades")) -> list[dict]:
    """One training config per (model, adversarial training mode) on top of ``base``."""
    return [cfg for model in models for cfg in expand_grid({**base, "model": model}, adv_mode=list(modes))]


def _run_files(results: pd.DataFrame, name: str):
    """Yield ``(row, parsed JSON of run_dir/name)`` for every row of a :func:`nblib.sweep.run_sweep` table."""
    from pathlib import Path

    from nblib.results import read_json

    for row in results.itertuples(index=False):
        path = Path(row.run_dir) / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the run {row.hash} has not finished; rerun the sweep")
        yield row, read_json(path)


def layer_norm_frame(results: pd.DataFrame, keys=("model", "regularizer", "reg_strength", "adv_mode")) -> pd.DataFrame:
    """Long table of the final exact layer norms of every run: the ``keys`` columns of ``results``, then
    ``layer`` (module name), ``depth`` (0-based position among the Conv2d / Linear layers), ``linf`` and
    ``l1`` (operator norms at the layer's input size, Theorem 1 / ``nblib.norms``), read from each run's
    ``metrics.json``."""
    rows = []
    for row, m in _run_files(results, "metrics.json"):
        base = {k: getattr(row, k) for k in keys}
        for depth, (name, linf, l1) in enumerate(zip(m["layer_names"], m["norms_linf"], m["norms_l1"])):
            rows.append({**base, "layer": name, "depth": depth, "linf": linf, "l1": l1})
    return pd.DataFrame(rows)


def history_frame(results: pd.DataFrame, keys=("model", "regularizer", "reg_strength", "adv_mode")) -> pd.DataFrame:
    """Per-epoch records of every run (``history.json``): the ``keys`` columns, ``epoch``, ``lr``, train
    loss/accuracy, test accuracy, and ``mean_log10_linf`` / ``mean_log10_l1``: the mean over layers of
    ``log10`` of the exact layer norms after that epoch (the norm curves of the paper's appendix)."""
    import numpy as np

    rows = []
    for row, hist in _run_files(results, "history.json"):
        base = {k: getattr(row, k) for k in keys}
        for h in hist:
            rows.append({**base, "epoch": h["epoch"], "lr": h["lr"], "train_loss": h["train_loss"],
                         "train_acc": h["train_acc"], "test_acc": h["test_acc"],
                         "mean_log10_linf": float(np.mean(np.log10(list(h["norms_linf"].values())))),
                         "mean_log10_l1": float(np.mean(np.log10(list(h["norms_l1"].values()))))})
    return pd.DataFrame(rows)


def extra_robust_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Long table of the robust accuracies at the extra radii of each run (``cfg["extra_eval_eps"]``, read
    from ``metrics.json``): model, regularizer, strength, ``eps`` (l_inf radius), ``robust`` (%) and
    ``n_robust`` (attacked points).  Empty (with these columns) when no run has extra radii."""
    rows = []
    for row, m in _run_files(results, "metrics.json"):
        for eps, acc in (m.get("robust_acc_extra") or {}).items():
            rows.append(dict(model=row.model, regularizer=row.regularizer, strength=float(row.reg_strength),
                             eps=float(eps), robust=math.nan if acc is None else 100 * acc, n_robust=m["n_eval"]))
    return pd.DataFrame(rows, columns=["model", "regularizer", "strength", "eps", "robust", "n_robust"])


def l1_with_batchnorm_frame(results: pd.DataFrame, input_shape=(3, 32, 32), keys=("model", "adv_mode")) -> pd.DataFrame:
    """The authors' Figure 2 view: the l1 norms of every Conv2d, Linear *and BatchNorm* layer of each run's
    final checkpoint (``nblib.norms.layer_norms(..., include_batchnorm=True)``; a BatchNorm layer in eval
    mode is diagonal, its norm ``max |gamma| / sqrt(var + eps)``).  The paper's text plots l_inf norms of the
    Conv2d / Linear layers (:func:`layer_norm_frame`).  Columns: the ``keys``, ``layer``, ``kind``, ``depth``
    (position in module order) and ``norm``."""
    from pathlib import Path

    import torch

    from nblib.models import build
    from nblib.norms import layer_norms
    from nblib.train import CHECKPOINT

    rows = []
    for row in results.itertuples(index=False):
        path = Path(row.run_dir) / CHECKPOINT
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the run {row.hash} has not finished; rerun the sweep")
        net = build(row.model, num_classes=10)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        net.eval()
        table = layer_norms(net, input_shape, 1, include_batchnorm=True)
        base = {k: getattr(row, k) for k in keys}
        rows += [{**base, "layer": r.name, "kind": r.kind, "depth": d, "norm": r.norm}
                 for d, r in enumerate(table.itertuples(index=False))]
    return pd.DataFrame(rows, columns=[*keys, "layer", "kind", "depth", "norm"])


def layer_history_frame(results: pd.DataFrame, keys=("model", "regularizer", "reg_strength", "adv_mode")) -> pd.DataFrame:
    """Per-epoch exact norms of every layer of every run (``history.json``; the appendix's curves): the
    ``keys`` columns, ``epoch``, ``layer``, ``depth`` (0-based position among the Conv2d / Linear layers),
    ``linf`` and ``l1``."""
    rows = []
    for row, hist in _run_files(results, "history.json"):
        base = {k: getattr(row, k) for k in keys}
        for h in hist:
            for depth, (name, linf) in enumerate(h["norms_linf"].items()):
                rows.append({**base, "epoch": h["epoch"], "layer": name, "depth": depth, "linf": linf,
                             "l1": h["norms_l1"][name]})
    return pd.DataFrame(rows)
