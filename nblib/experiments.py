"""The paper's two training experiments end to end: runs, tables and verdicts from a notebook's parameters.

``table2(settings) -> Table2Result`` (notebook 03): norm regularization (weight decay, singular value
clipping, l1 / l_inf norm decay) against plain training, clean and AutoAttack robust accuracy (Table 2),
the exact layer norms each regulariser reaches, and robust accuracy at the larger radii 4/255 and 8/255.
``figure2(settings) -> Figure2Result`` (notebook 04): layer norms of plainly and adversarially trained
(PGD-AT, ALP, TRADES) networks (Figure 2), their robust accuracy and local Lipschitz estimates.

Each runs its sweep (:mod:`nblib.run_configs` builds the runs, :func:`nblib.sweep.run_sweep` trains or reads
them back), then computes every table from the sweep's result table alone (:func:`table2_result`,
:func:`figure2_result`, unit-tested on made-up runs) and decides the claims with :mod:`nblib.table2_verdicts`
and :mod:`nblib.figure2_verdicts`.  ``settings`` is the notebook's parameters (``globals()``) or the same
names in a dict.  Notebooks keep only parameters, calls and plots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nblib import figure2_verdicts, table2_verdicts
from nblib.paper_table2 import PAPER_TABLE2, paper_table2_frame
from nblib.results import save_metrics, save_table
from nblib.run_configs import (ADV_LABELS, METHOD_LABELS, UNITS_255, config_values, figure2_run_configs, runs_root,
                               table2_run_configs)
from nblib.run_tables import (extra_robust_frame, l1_with_batchnorm_frame, layer_history_frame,
                              layer_norm_frame)
from nblib.stats import is_missing, with_intervals
from nblib.sweep import run_sweep, slurm_kwargs
from nblib.verdicts import Verdict, records

#: The larger radii (units of 1/255) at which the paper reports about 0 % robust accuracy for every
#: regularised model.
LARGE_RADII_255 = (4, 8)


def sweep(settings: dict, configs: list[dict]) -> pd.DataFrame:
    """Train (or read back from the cache :func:`nblib.run_configs.runs_root`) the runs ``configs`` with the
    notebook's executor settings (``executor``, ``gpus``, ``slurm_partition``, ``slurm_timeout_min``)."""
    slurm = slurm_kwargs(settings["executor"], settings["slurm_partition"], settings["slurm_timeout_min"])
    return run_sweep(configs, runs_root(settings), executor=settings["executor"], gpus=settings["gpus"] or None,
                     slurm_kwargs=slurm)


# ---------------------------------------------------------------------------------------------- Table 2
def table2_frame(results: pd.DataFrame, clean="clean_acc", robust="robust_acc") -> pd.DataFrame:
    """Long table: model, regularizer, strength, clean and robust accuracy (%), the number of points each
    is measured on (``n_clean``: the test set, ``n_robust``: the attacked subset), the paper's numbers where
    the same (model, regularizer, strength) appears in its Table 2 (NaN otherwise), the run's ``status``
    ("done", or "diverged" with NaN accuracies) and ``stale`` (a result of other code kept with
    ``run_sweep(..., reuse_stale=True)``)."""
    rows = []
    for r in results.itertuples(index=False):
        r = r._asdict()
        paper = PAPER_TABLE2.get(r["model"], {}).get((r["regularizer"], float(r["reg_strength"])), (None, None))
        rows.append(dict(model=r["model"], regularizer=r["regularizer"], strength=float(r["reg_strength"]),
                         clean=100 * r[clean], robust=math.nan if is_missing(r.get(robust)) else 100 * r[robust],
                         n_clean=r.get("n_test", math.nan), n_robust=r.get("metric_n_eval", math.nan),
                         paper_clean=math.nan if paper[0] is None else paper[0],
                         paper_robust=math.nan if paper[1] is None else paper[1],
                         status=r.get("status", "done"), stale=bool(r.get("stale", False))))
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


def robust_ci_wide(long: pd.DataFrame, wide: pd.DataFrame) -> pd.DataFrame:
    """Robust accuracy as ``"acc [lo, hi]"`` (%, 95 % Wilson interval) in the layout of ``wide``."""
    ci = long.assign(ci=[f"{a:.1f} [{lo:.1f}, {hi:.1f}]"
                         for a, lo, hi in zip(long.robust, long.robust_lo, long.robust_hi)])
    out = ci.pivot_table(index="model", columns=["regularizer", "strength"], values="ci", aggfunc="first")
    return out[[c for c in wide.columns if c in out.columns]]


def mean_log_norms(norms: pd.DataFrame) -> pd.DataFrame:
    """Per run (model, regularizer, reg_strength): the mean over layers of ``log10`` of the exact l_inf and l1
    layer norms (``log_linf``, ``log_l1``)."""
    return (norms.assign(log_linf=np.log10(norms.linf), log_l1=np.log10(norms.l1))
            .groupby(["model", "regularizer", "reg_strength"], as_index=False)[["log_linf", "log_l1"]].mean())


def robust_by_radius(frame: pd.DataFrame, extra: pd.DataFrame, eval_eps: float) -> pd.DataFrame:
    """Robust accuracy (%) of every run at the main radius ``eval_eps`` and at the extra radii (``extra``:
    :func:`nblib.run_tables.extra_robust_frame`), with ``eps_255`` (the radius in units of 1/255) and the
    Wilson interval of each accuracy."""
    main = frame.assign(eps=eval_eps)[["model", "regularizer", "strength", "eps", "robust", "n_robust"]]
    radii = pd.concat([main, extra], ignore_index=True)
    radii["eps_255"] = (radii.eps * 255).round(3)
    return with_intervals(radii, "robust", "n_robust")


def table2_claims(frame: pd.DataFrame, norm_summary: pd.DataFrame, radii: pd.DataFrame) -> list[Verdict]:
    """Table 2's verdicts: clean accuracy may improve, robust accuracy does not, the strongest settings lower
    the norms they target, and regularised models have about 0 % robust accuracy at :data:`LARGE_RADII_255`
    (not testable where a radius was not attacked)."""
    regularized = radii[radii.regularizer != "none"]
    return [*table2_verdicts.table2_clean(frame), *table2_verdicts.table2_robust(frame),
            *table2_verdicts.table2_norms_lowered(norm_summary),
            *(table2_verdicts.near_zero_robust(regularized[regularized.eps_255 == e], f"{e}/255")
              for e in LARGE_RADII_255)]


@dataclass
class Table2Result:
    """Notebook 03's runs, tables and verdicts (accuracies in %)."""

    runs: pd.DataFrame            # the sweep's table: one row per run (nblib.sweep.run_sweep)
    table: pd.DataFrame           # long: model, regularizer, strength, clean, robust, n_clean, n_robust, ...
    long: pd.DataFrame            # `table` with 95 % Wilson intervals (clean_lo, clean_hi, robust_lo, robust_hi)
    wide: pd.DataFrame            # the paper's layout (table2_wide)
    robust_ci: pd.DataFrame       # robust accuracy [interval] in the paper's layout
    layer_norms: pd.DataFrame     # final exact layer norms of every run (nblib.run_tables.layer_norm_frame)
    norm_summary: pd.DataFrame    # mean log10 layer norms per run (mean_log_norms)
    layer_history: pd.DataFrame   # per-epoch layer norms (the appendix's curves)
    radii: pd.DataFrame           # robust accuracy at every attacked radius (robust_by_radius)
    verdicts: list = field(default_factory=list)        # Table 2's claims on our runs
    paper_verdicts: list = field(default_factory=list)  # the same claims on the paper's published numbers
    reading: dict = field(default_factory=dict)         # the readings of the method that produced it
    metrics: dict = field(default_factory=dict)         # outputs/<profile>/metrics/03_table2.json

    def save(self, output_dir) -> None:
        """Write the tables (``tables/03_*``, CSV + markdown, LaTeX for Table 2) and the metrics JSON."""
        save_table(self.long.assign(**self.reading), output_dir, "03_table2_long")
        save_table(flat_columns(self.wide).reset_index().assign(**self.reading), output_dir, "03_table2",
                   latex=True)
        save_table(flat_columns(self.robust_ci).reset_index().assign(**self.reading), output_dir,
                   "03_table2_robust_ci")
        save_table(self.norm_summary, output_dir, "03_mean_log10_norms")
        save_table(self.radii.assign(**self.reading), output_dir, "03_robust_by_radius")
        save_metrics(output_dir, "03_table2", self.metrics)


def table2_metrics(settings: dict, frame: pd.DataFrame, claims, paper_claims, reading: dict,
                   with_paper: bool) -> dict:
    radii = config_values(settings, UNITS_255)  # eval_eps, extra_eval_eps from the *_255 parameters
    """The metrics JSON of notebook 03: the settings that shaped the numbers, plain accuracies, verdicts and,
    on CIFAR-10 at 1/255, the mean absolute difference to the paper's numbers."""
    plain = frame[frame.regularizer == "none"].set_index("model")
    metrics = dict(models=list(settings["models"]), dataset=settings["dataset"],
                   eps=radii["eval_eps"], extra_eps=radii["extra_eval_eps"],
                   attack=settings["attack"], attack_budget=settings["attack_budget"], n_eval=settings["n_eval"],
                   epochs=settings["epochs"], n_runs=len(frame), reading=reading,
                   plain_clean=plain.clean.to_dict(), plain_robust=plain.robust.to_dict(),
                   verdicts=records(claims), paper_table2_verdicts=records(paper_claims))
    if with_paper:
        both = frame.dropna(subset=["paper_clean", "paper_robust"])
        metrics.update(mean_abs_diff_clean_vs_paper=float((both.clean - both.paper_clean).abs().mean()),
                       mean_abs_diff_robust_vs_paper=float((both.robust - both.paper_robust).abs().mean()))
    return metrics


def table2_result(runs: pd.DataFrame, settings: dict) -> Table2Result:
    """Every table and verdict of Table 2 from the sweep's result table ``runs`` (finished run folders)."""
    frame = table2_frame(runs)
    eval_eps = config_values(settings, ["eval_eps"])["eval_eps"]
    with_paper = settings["dataset"] == "cifar10" and eval_eps == 1 / 255
    wide = table2_wide(frame, with_paper=with_paper)
    long = with_intervals(with_intervals(frame, "robust", "n_robust"), "clean", "n_clean")
    norms = layer_norm_frame(runs)
    summary = mean_log_norms(norms)
    radii = robust_by_radius(frame, extra_robust_frame(runs), eval_eps)
    claims = table2_claims(frame, summary, radii)
    paper = paper_table2_frame()
    paper_claims = [*table2_verdicts.table2_clean(paper), *table2_verdicts.table2_robust(paper)]
    reading = {k: settings[k] for k in ("reg_beta_scaling", "reg_svc_linear")}
    return Table2Result(runs=runs, table=frame, long=long, wide=wide, robust_ci=robust_ci_wide(long, wide),
                        layer_norms=norms, norm_summary=summary, layer_history=layer_history_frame(runs),
                        radii=radii, verdicts=claims, paper_verdicts=paper_claims, reading=reading,
                        metrics=table2_metrics(settings, frame, claims, paper_claims, reading, with_paper))


def table2(settings: dict) -> Table2Result:
    """Notebook 03 end to end: the sweep of :func:`nblib.run_configs.table2_run_configs`, then
    :func:`table2_result`."""
    return table2_result(sweep(settings, table2_run_configs(settings)), settings)


# --------------------------------------------------------------------------------------------- Figure 2
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
        save_table(self.summary, output_dir, "04_accuracy_lipschitz")
        save_table(self.norms, output_dir, "04_layer_norms")
        save_table(self.norms_with_batchnorm, output_dir, "04_layer_norms_l1_with_batchnorm")
        save_metrics(output_dir, "04_adversarial_norms", self.metrics)


def figure2_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: accuracies (fractions) with the Wilson interval of the robust one over ``n_eval``
    attacked points, mean / largest local Lipschitz estimate, gradient margin, log10 product of the layers'
    l_inf norms."""
    summary = runs[["model", "adv_mode", "clean_acc", "robust_acc", "lip_mean", "lip_max", "grad_margin_mean",
                    "log10_linf_norm_product"]].assign(n_eval=runs.metric_n_eval)
    return with_intervals(summary, "robust_acc", "n_eval", percent=False)


def figure2_claims(summary: pd.DataFrame, norms: pd.DataFrame, with_bn: pd.DataFrame) -> list[Verdict]:
    """Figure 2's verdicts: norms comparable or larger in both views, more robust, smaller local Lipschitz."""
    return [*figure2_verdicts.figure2_norms(norms, "linf", "l_inf"),
            *figure2_verdicts.figure2_norms(with_bn, "norm", "l1-with-BatchNorm"),
            *figure2_verdicts.figure2_more_robust(summary), *figure2_verdicts.figure2_local_lipschitz(summary)]


def figure2_metrics(settings: dict, summary: pd.DataFrame, norms: pd.DataFrame, with_bn: pd.DataFrame,
                    claims) -> dict:
    """The metrics JSON of notebook 04: settings, per-run accuracies and Lipschitz numbers, layer counts,
    verdicts."""
    def per_run(col):
        return {f"{r.model}/{r.adv_mode}": getattr(r, col) for r in summary.itertuples()}

    return dict(models=list(settings["models"]), adv_modes=list(settings["adv_modes"]), dataset=settings["dataset"],
                eps=config_values(settings, ["eval_eps"])["eval_eps"], attack=settings["attack"],
                attack_budget=settings["attack_budget"],
                n_eval=settings["n_eval"], epochs=settings["epochs"], clean_acc=per_run("clean_acc"),
                robust_acc=per_run("robust_acc"), lip_mean=per_run("lip_mean"),
                log10_linf_norm_product=per_run("log10_linf_norm_product"),
                n_layers=int(norms.groupby(["model", "adv_mode"]).size().min()),
                n_layers_with_batchnorm=int(with_bn.groupby(["model", "adv_mode"]).size().min()),
                verdicts=records(claims))


def figure2_result(runs: pd.DataFrame, settings: dict) -> Figure2Result:
    """Every table and verdict of Figure 2 from the sweep's result table ``runs`` (finished run folders)."""
    summary = figure2_summary(runs)
    norms = layer_norm_frame(runs)
    norms["method"] = norms.adv_mode.map(ADV_LABELS)
    norms["log10_linf"] = np.log10(norms.linf)
    with_bn = l1_with_batchnorm_frame(runs)
    claims = figure2_claims(summary, norms, with_bn)
    return Figure2Result(runs=runs, summary=summary, norms=norms, norms_with_batchnorm=with_bn, verdicts=claims,
                         metrics=figure2_metrics(settings, summary, norms, with_bn, claims))


def figure2(settings: dict) -> Figure2Result:
    """Notebook 04 end to end: the sweep of :func:`nblib.run_configs.figure2_run_configs`, then
    :func:`figure2_result`."""
    return figure2_result(sweep(settings, figure2_run_configs(settings)), settings)
