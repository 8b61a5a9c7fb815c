"""Notebook 04 end to end (Figure 2): layer norms of plainly and adversarially trained networks.

``run(settings) -> Figure2Result``: layer norms of plain, PGD-AT, ALP and TRADES networks (Figure 2), their
robust accuracy and local Lipschitz estimates.  The runs come from :func:`nblib.runs.grids.figure2_run_configs`
(trained or read back by :func:`nblib.runs.grids.train_runs`); every table is computed from the sweep's result
table alone (:func:`figure2_result`) and the claims are decided by :mod:`nblib.claims.figure2`.  With several
``seeds`` every table keeps one row per run (network) with its ``seed``, and the claims pair the networks by seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nblib.claims import figure2 as judge
from nblib.claims.stats import with_intervals
from nblib.claims.verdict import Verdict, records
from nblib.results import pack_outcomes, save_metrics, save_table
from nblib.runs.machine import machine
from nblib.runs.grids import config_values, figure2_run_configs, train_runs
from nblib.models import build
from nblib.runs.tables import l1_with_batchnorm_frame, layer_norm_frame, point_outcomes
from nblib.training.regularizers import LAYER_SETS, authors_skipped_layers
from nblib.vocabulary import ADV_LABELS

INPUT_SHAPE = (3, 32, 32)


@dataclass
class Figure2Result:
    """Notebook 04's runs, tables and verdicts (accuracies as fractions)."""

    runs: pd.DataFrame          # the sweep's table: one row per run
    summary: pd.DataFrame       # model, adv_mode, clean/robust accuracy (+ Wilson interval), Lipschitz estimates
    norms: pd.DataFrame         # exact l_inf and l1 norms of every Conv2d / Linear layer (the paper's view)
    norms_with_batchnorm: pd.DataFrame  # l1 norms of every Conv2d / Linear / BatchNorm layer (authors' view)
    verdicts: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # outputs/<profile>/metrics/04_adversarial_norms.json

    def save(self, output_dir) -> None:
        """Write the tables (``tables/04_*``) and the metrics JSON."""
        save_table(saved_summary(self.summary), output_dir, "04_accuracy_lipschitz")
        save_table(self.norms, output_dir, "04_layer_norms")
        save_table(self.norms_with_batchnorm, output_dir, "04_layer_norms_l1_with_batchnorm")
        save_metrics(output_dir, "04_adversarial_norms", self.metrics)


def figure2_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run (model, adv_mode, seed): accuracies (fractions) with the Wilson interval of the robust one
    over ``n_eval`` attacked points, mean / largest local Lipschitz estimate, gradient margin, log10 product of the
    layers' l_inf norms, and ``robust_acc_points`` (the per-point robust outcomes of the paired test; None without)."""
    summary = runs[["model", "adv_mode", "seed", "clean_acc", "robust_acc", "lip_mean", "lip_max", "grad_margin_mean",
                    "log10_linf_norm_product"]].assign(n_eval=runs.metric_n_eval,
                                                       robust_acc_points=point_outcomes(runs, "robust_correct"))
    return with_intervals(summary, "robust_acc", "n_eval", percent=False)


def saved_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`figure2_summary` as a table to save: the per-point robust outcomes packed into ``robust_correct``
    (``nblib.results.pack_outcomes``; empty where a run has none); :func:`summary_from_table` reads it back."""
    return summary.drop(columns=["robust_acc_points"]).assign(
        robust_correct=[None if v is None else pack_outcomes(v) for v in summary.robust_acc_points])


def summary_from_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`figure2_summary` again from the saved ``04_accuracy_lipschitz`` table (``pandas.read_csv``)."""
    return table.assign(robust_acc_points=point_outcomes(table, "robust_correct"))


def figure2_claims(summary: pd.DataFrame, norms: pd.DataFrame, with_bn: pd.DataFrame,
                   band: float = judge.BAND) -> list[Verdict]:
    """Figure 2's verdicts: norms comparable or larger in both views (``band``: the comparability band of
    :func:`nblib.claims.figure2.figure2_norms`, a notebook parameter can feed it), more robust, smaller local
    Lipschitz."""
    return [*judge.figure2_norms(norms, "linf", "l_inf", band=band),
            *judge.figure2_norms(with_bn, "norm", "l1-with-BatchNorm", band=band),
            *judge.figure2_more_robust(summary), *judge.figure2_local_lipschitz(summary)]


def figure2_metrics(settings: dict, summary: pd.DataFrame, norms: pd.DataFrame, with_bn: pd.DataFrame,
                    claims) -> dict:
    """The metrics JSON of notebook 04: settings, per-run accuracies and Lipschitz numbers, layer counts,
    verdicts, the machine that computed them (CPU capability, torch build).  Per-run numbers are keyed
    ``model/mode``, with several seeds ``model/mode/seed<s>``."""
    several = summary.seed.nunique() > 1

    def per_run(col):
        return {f"{r.model}/{r.adv_mode}" + (f"/seed{r.seed}" if several else ""): getattr(r, col)
                for r in summary.itertuples()}

    return dict(models=list(settings["models"]), adv_modes=list(settings["adv_modes"]), dataset=settings["dataset"],
                eps=config_values(settings, ["eval_eps"])["eval_eps"], attack=settings["attack"],
                attack_budget=settings["attack_budget"],
                n_eval=settings["n_eval"], epochs=settings["epochs"], seeds=sorted(set(summary.seed)),
                clean_acc=per_run("clean_acc"),
                robust_acc=per_run("robust_acc"), lip_mean=per_run("lip_mean"),
                log10_linf_norm_product=per_run("log10_linf_norm_product"),
                n_layers=int(norms.groupby(["model", "adv_mode", "seed"]).size().min()),
                n_layers_with_batchnorm=int(with_bn.groupby(["model", "adv_mode", "seed"]).size().min()),
                layer_set=settings["layer_set"],
                verdicts=records(claims), machine=machine())


def layer_set_filter(frame: pd.DataFrame, layer_set: str) -> pd.DataFrame:
    """``frame`` (``model``, ``layer`` columns) without the layers the authors' code skipped in Figure 2
    (:func:`nblib.training.regularizers.authors_skipped_layers`) when ``layer_set`` is ``"authors"``; as it is
    for ``"every"``; with the column ``layer_set``."""
    if layer_set not in LAYER_SETS:
        raise ValueError(f"layer_set must be one of {LAYER_SETS} (every layer | the authors' code), got {layer_set!r}")
    if layer_set == "authors":
        skipped = {m: set(authors_skipped_layers(build(m, num_classes=10), INPUT_SHAPE)) for m in set(frame.model)}
        frame = frame[[layer not in skipped[m] for m, layer in zip(frame.model, frame.layer)]]
    return frame.assign(layer_set=layer_set).reset_index(drop=True)


def figure2_result(runs: pd.DataFrame, settings: dict) -> Figure2Result:
    """Every table and verdict of Figure 2 from the sweep's result table ``runs`` (finished run folders), on the
    layers of ``settings["layer_set"]`` (:func:`layer_set_filter`), the norm claims at the comparability band
    ``settings["norm_band"]`` (notebook 04's ``norm_band``; :data:`nblib.claims.figure2.BAND` states its meaning)."""
    summary = figure2_summary(runs)
    norms = layer_set_filter(layer_norm_frame(runs), settings["layer_set"])
    norms["training"] = norms.adv_mode.map(ADV_LABELS)
    norms["log10_linf"] = np.log10(norms.linf)
    with_bn = layer_set_filter(l1_with_batchnorm_frame(runs), settings["layer_set"])
    claims = figure2_claims(summary, norms, with_bn, band=settings["norm_band"])
    return Figure2Result(runs=runs, summary=summary, norms=norms, norms_with_batchnorm=with_bn, verdicts=claims,
                         metrics=figure2_metrics(settings, summary, norms, with_bn, claims))


def run(settings: dict) -> Figure2Result:
    """Notebook 04 end to end: the sweep of :func:`nblib.runs.grids.figure2_run_configs`, then
    :func:`figure2_result`."""
    return figure2_result(train_runs(settings, figure2_run_configs(settings)), settings)
