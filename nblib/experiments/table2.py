"""Notebook 03 end to end (Table 2): norm regularization against plain training.

``run(settings) -> Table2Result``: weight decay, singular value clipping and l1 / l_inf norm decay against plain
training, clean and AutoAttack robust accuracy (Table 2), the exact layer norms each regulariser reaches, and
robust accuracy at the larger radii 4/255 and 8/255.  The sweep's runs come from
:func:`nblib.runs.grids.table2_run_configs` (trained or read back by :func:`nblib.runs.grids.train_runs`); every
table is computed from the sweep's result table alone (:func:`table2_result`, unit-tested on made-up runs) and
the claims are decided by :mod:`nblib.claims.table2`.  ``settings`` is the notebook's parameters (``globals()``)
or the same names in a dict.  The notebook keeps only parameters, calls and plots.

With several ``seeds`` every table keeps one row per run, with its ``seed``; the paper's layout
(:func:`table2_wide`) shows each configuration's mean over the seeds and their standard deviation, and the claims
pair the runs by seed (:mod:`nblib.claims.table2`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nblib.claims import table2 as judge
from nblib.claims.paper_table2 import PAPER_TABLE2, paper_table2_frame
from nblib.claims.stats import is_missing, with_intervals
from nblib.claims.comparisons import n_seeds
from nblib.claims.verdict import Verdict, records, require_columns
from nblib.results import pack_outcomes, save_metrics, save_table
from nblib.runs.machine import machine
from nblib.runs.grids import UNITS_255, config_values, table2_run_configs, train_runs
from nblib.runs.tables import extra_robust_frame, layer_history_frame, layer_norm_frame, point_outcomes
from nblib.vocabulary import REGULARIZER_LABELS, strongest_first

#: The columns that name a run of Table 2: its configuration and its training seed.
RUN_COLUMNS = ["model", "regularizer", "strength", "seed"]
#: The per-point outcome columns of :func:`table2_frame` (arrays: kept out of the saved tables).
POINT_COLUMNS = ["clean_points", "robust_points"]
#: The readings of the paper's text against the authors' code that notebook 03 selects; recorded in every table.
READINGS = ("reg_beta_scaling", "reg_nd_update", "reg_nd_layers", "reg_svc_linear", "plain_lr")
#: The larger radii (units of 1/255) at which the paper reports about 0 % robust accuracy for every
#: regularised model.
LARGE_RADII_255 = (4, 8)


def table2_frame(results: pd.DataFrame, clean="clean_acc", robust="robust_acc") -> pd.DataFrame:
    """Long table, one row per run: model, regularizer, strength, seed, clean and robust accuracy (%), the
    number of points each
    is measured on (``n_clean``: the test set, ``n_robust``: the attacked subset), the paper's numbers where
    the same (model, regularizer, strength) appears in its Table 2 (NaN otherwise), the run's ``status``
    ("done", or "diverged" with NaN accuracies), ``stale`` (a result of other code kept with
    ``run_sweep(..., reuse_stale=True)``), and the per-point outcomes the paired tests of the claims use:
    ``clean_points`` (boolean array over the test set) and ``robust_points`` (over the attacked subset), None
    where a run has none (:func:`nblib.runs.tables.point_outcomes`)."""
    require_columns(results, ["model", "regularizer", "reg_strength", "seed", clean, robust, "n_test",
                              "metric_n_eval", "status", "stale"], "table2_frame")
    rows = []
    clean_points, robust_points = point_outcomes(results, "clean_correct"), point_outcomes(results, "robust_correct")
    for r, cp, rp in zip(results.itertuples(index=False), clean_points, robust_points):
        r = r._asdict()
        paper = PAPER_TABLE2.get(r["model"], {}).get((r["regularizer"], float(r["reg_strength"])), (None, None))
        rows.append(dict(model=r["model"], regularizer=r["regularizer"], strength=float(r["reg_strength"]),
                         seed=int(r["seed"]), clean=100 * r[clean],
                         robust=math.nan if is_missing(r[robust]) else 100 * r[robust],
                         n_clean=r["n_test"], n_robust=r["metric_n_eval"],
                         paper_clean=math.nan if paper[0] is None else paper[0],
                         paper_robust=math.nan if paper[1] is None else paper[1],
                         status=r["status"], stale=bool(r["stale"]), clean_points=cp, robust_points=rp))
    return pd.DataFrame(rows)


def saved_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-point outcomes of :func:`table2_frame` as a table to save (``tables/03_table2_outcomes``): model,
    regularizer, strength, seed and the packed ``clean_correct`` / ``robust_correct`` (``nblib.results.pack_outcomes``;
    empty where a run has none), so that the verdicts can be computed again from the saved tables
    (:func:`table2_frame_from_tables`)."""
    def packed(col):
        return [None if v is None else pack_outcomes(v) for v in frame[col]]

    return frame[RUN_COLUMNS].assign(clean_correct=packed("clean_points"), robust_correct=packed("robust_points"))


def table2_frame_from_tables(long: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """:func:`table2_frame` again from the saved ``03_table2_long`` and ``03_table2_outcomes`` tables (read
    back with ``pandas.read_csv``): the long table with ``clean_points`` / ``robust_points`` (matched by
    :data:`RUN_COLUMNS`; by configuration alone for tables of older code without ``seed``)."""
    keys = [c for c in RUN_COLUMNS if c in long and c in outcomes]
    merged = long.merge(outcomes, on=keys, how="left", validate="one_to_one")
    return merged.assign(clean_points=point_outcomes(merged, "clean_correct"),
                         robust_points=point_outcomes(merged, "robust_correct"))


def table2_wide(frame: pd.DataFrame, with_paper: bool = False) -> pd.DataFrame:
    """The paper's layout: rows (model, Clean/Robust), columns (regularizer, strength), each group strongest
    first as in Table 2 (weight decay / beta descending, SVC's c ascending: 0.5, 1.0, 1.5, 2.0).  With ``k > 1``
    seeds the rows are "Clean (mean of k seeds)" / "Robust (mean of k seeds)" and "Clean (sd of k seeds)" /
    "Robust (sd of k seeds)" (sample standard deviation over the seeds)."""
    k = n_seeds(frame)
    mean = "" if k == 1 else f" (mean of {k} seeds)"
    parts = {f"Clean{mean}": "clean", f"Robust{mean}": "robust"}
    if with_paper:
        parts.update({"Clean (paper)": "paper_clean", "Robust (paper)": "paper_robust"})
    order = list(REGULARIZER_LABELS)
    long = frame.melt(id_vars=["model", "regularizer", "strength"], value_vars=list(parts.values()),
                      var_name="acc", value_name="value")
    long["acc"] = long.acc.map({v: k for k, v in parts.items()})
    if k > 1:
        spread = (frame.groupby(["model", "regularizer", "strength"], as_index=False, sort=False)[["clean", "robust"]]
                  .std().melt(id_vars=["model", "regularizer", "strength"], var_name="acc", value_name="value"))
        spread["acc"] = spread.acc.map({"clean": f"Clean (sd of {k} seeds)", "robust": f"Robust (sd of {k} seeds)"})
        long = pd.concat([long, spread], ignore_index=True)
    wide = long.pivot_table(index=["model", "acc"], columns=["regularizer", "strength"], values="value",
                            dropna=False)
    present = set(zip(frame.regularizer, frame.strength))  # dropna=False builds every (kind, strength) pair
    cols = sorted((c for c in wide.columns if c in present),
                  key=lambda c: (order.index(c[0]) if c[0] in order else 99, strongest_first(c[0], c[1])))
    return wide[cols]


def flat_columns(wide: pd.DataFrame) -> pd.DataFrame:
    """:func:`table2_wide` with one-level column names such as ``"weight decay 0.01"`` (for CSV, markdown
    and LaTeX files)."""
    out = wide.copy()
    out.columns = [REGULARIZER_LABELS.get(k, k) if k == "none" else f"{REGULARIZER_LABELS.get(k, k)} {s:g}"
                   for k, s in wide.columns]
    return out


def robust_ci_wide(long: pd.DataFrame, wide: pd.DataFrame) -> pd.DataFrame:
    """Robust accuracy as ``"acc [lo, hi]"`` (%, 95 % Wilson interval) in the layout of ``wide``; with several
    seeds each seed's, in seed order, separated by ``" | "``."""
    ci = long.sort_values("seed", kind="stable")
    ci = ci.assign(ci=[f"{a:.1f} [{lo:.1f}, {hi:.1f}]" for a, lo, hi in zip(ci.robust, ci.robust_lo, ci.robust_hi)])
    out = ci.pivot_table(index="model", columns=["regularizer", "strength"], values="ci", aggfunc=" | ".join)
    return out[[c for c in wide.columns if c in out.columns]]


def mean_log_norms(norms: pd.DataFrame) -> pd.DataFrame:
    """Per run (model, regularizer, reg_strength, seed): the mean over layers of ``log10`` of the exact l_inf and
    l1 layer norms (``log_linf``, ``log_l1``)."""
    return (norms.assign(log_linf=np.log10(norms.linf), log_l1=np.log10(norms.l1))
            .groupby(["model", "regularizer", "reg_strength", "seed"], as_index=False)[["log_linf", "log_l1"]]
            .mean())


def over_seeds(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`mean_log_norms` averaged over the seeds of each configuration (model, regularizer, reg_strength):
    one row per configuration, as the plots draw it."""
    return summary.groupby(["model", "regularizer", "reg_strength"], as_index=False)[["log_linf", "log_l1"]].mean()


def robust_by_radius(frame: pd.DataFrame, extra: pd.DataFrame, eval_eps: float) -> pd.DataFrame:
    """Robust accuracy (%) of every run at the main radius ``eval_eps`` and at the extra radii (``extra``:
    :func:`nblib.runs.tables.extra_robust_frame`), with ``eps_255`` (the radius in units of 1/255) and the
    Wilson interval of each accuracy."""
    main = frame.assign(eps=eval_eps)[["model", "regularizer", "strength", "seed", "eps", "robust", "n_robust"]]
    radii = pd.concat([main, extra], ignore_index=True)
    radii["eps_255"] = (radii.eps * 255).round(3)
    return with_intervals(radii, "robust", "n_robust")


def table2_claims(frame: pd.DataFrame, norm_summary: pd.DataFrame, radii: pd.DataFrame) -> list[Verdict]:
    """Table 2's verdicts: clean accuracy may improve, robust accuracy does not, the trade-off, the strongest
    settings lower
    the norms they target, and regularised models have about 0 % robust accuracy at :data:`LARGE_RADII_255`
    (not testable where a radius was not attacked)."""
    regularized = radii[radii.regularizer != "none"]
    return [*judge.table2_clean(frame), *judge.table2_robust(frame), *judge.table2_tradeoff(frame),
            *judge.table2_norms_lowered(norm_summary),
            *(judge.near_zero_robust(regularized[regularized.eps_255 == e], f"{e}/255")
              for e in LARGE_RADII_255)]


@dataclass
class Table2Result:
    """Notebook 03's runs, tables and verdicts (accuracies in %)."""

    runs: pd.DataFrame            # the sweep's table: one row per run (nblib.runs.sweep.run_sweep)
    table: pd.DataFrame           # long: model, regularizer, strength, clean, robust, n_clean, n_robust, ...
    long: pd.DataFrame            # `table` with 95 % Wilson intervals (clean_lo, clean_hi, robust_lo, robust_hi)
    wide: pd.DataFrame            # the paper's layout (table2_wide)
    robust_ci: pd.DataFrame       # robust accuracy [interval] in the paper's layout
    layer_norms: pd.DataFrame     # final exact layer norms of every run (nblib.runs.tables.layer_norm_frame)
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
        save_table(saved_outcomes(self.table), output_dir, "03_table2_outcomes")
        save_table(self.norm_summary, output_dir, "03_mean_log10_norms")
        save_table(self.radii.assign(**self.reading), output_dir, "03_robust_by_radius")
        save_metrics(output_dir, "03_table2", self.metrics)


def table2_metrics(settings: dict, frame: pd.DataFrame, claims, paper_claims, reading: dict,
                   with_paper: bool) -> dict:
    """The metrics JSON of notebook 03: the settings that shaped the numbers, the seeds, plain accuracies (the
    mean over the seeds), verdicts, the
    machine that computed them (CPU capability, torch build) and, on CIFAR-10 at 1/255, the mean absolute
    difference to the paper's numbers."""
    radii = config_values(settings, UNITS_255)  # eval_eps, extra_eval_eps from the *_255 parameters
    plain = frame[frame.regularizer == "none"].groupby("model", sort=False)  # the mean over the seeds
    metrics = dict(models=list(settings["models"]), dataset=settings["dataset"],
                   eps=radii["eval_eps"], extra_eps=radii["extra_eval_eps"],
                   attack=settings["attack"], attack_budget=settings["attack_budget"], n_eval=settings["n_eval"],
                   epochs=settings["epochs"], n_runs=len(frame), seeds=sorted(set(frame.seed)), reading=reading,
                   plain_clean=plain.clean.mean().to_dict(), plain_robust=plain.robust.mean().to_dict(),
                   verdicts=records(claims), paper_table2_verdicts=records(paper_claims), machine=machine())
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
    long = with_intervals(with_intervals(frame.drop(columns=POINT_COLUMNS), "robust", "n_robust"), "clean",
                          "n_clean")
    norms = layer_norm_frame(runs)
    summary = mean_log_norms(norms)
    radii = robust_by_radius(frame, extra_robust_frame(runs), eval_eps)
    claims = table2_claims(frame, summary, radii)
    paper = paper_table2_frame()
    paper_claims = [*judge.table2_clean(paper), *judge.table2_robust(paper), *judge.table2_tradeoff(paper)]
    reading = {k: settings[k] for k in READINGS}
    return Table2Result(runs=runs, table=frame, long=long, wide=wide, robust_ci=robust_ci_wide(long, wide),
                        layer_norms=norms, norm_summary=summary, layer_history=layer_history_frame(runs),
                        radii=radii, verdicts=claims, paper_verdicts=paper_claims, reading=reading,
                        metrics=table2_metrics(settings, frame, claims, paper_claims, reading, with_paper))


def run(settings: dict) -> Table2Result:
    """Notebook 03 end to end: the sweep of :func:`nblib.runs.grids.table2_run_configs`, then
    :func:`table2_result`."""
    return table2_result(train_runs(settings, table2_run_configs(settings)), settings)
